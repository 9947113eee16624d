"""The N-MNIST / N-Caltech101 ``.bin`` event format (ATIS sensor, Orchard et al. 2015).

Each event is 5 bytes::

    byte 0   x                    (8 bits)
    byte 1   y                    (8 bits)
    byte 2   p << 7 | t[22:16]    (polarity bit 7: 1 = ON, 0 = OFF; timestamp bits 22-16)
    byte 3   t[15:8]
    byte 4   t[7:0]               (timestamp in microseconds, 23 bits, big-endian)

A record with ``y == 240`` is not an event but a timestamp overflow marker: every event after it
has ``2**13`` microseconds added to its stored timestamp (the convention of Garrick Orchard's
``eventvision.read_dataset`` and ``tonic.io.read_mnist_file``; in the original ATIS stream the
marker's x address is 305, of which the 8-bit x byte keeps ``305 & 0xFF = 49``). The real
N-MNIST recordings last ~0.3 s and never need one; :func:`encode_events` writes as few markers
as needed for timestamps of ``2**23`` us (8.4 s) and beyond.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import atomic_write

#: Event dtype of ``tonic.datasets.NMNIST`` (x, y, t, p as int64), used for every event array.
EVENT_DTYPE = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
OVERFLOW_Y = 240
OVERFLOW_X = 305 & 0xFF
OVERFLOW_STEP = 2**13
TIMESTAMP_BITS = 23
MAX_STORED_T = 2**TIMESTAMP_BITS - 1


def make_events(x, y, t, p) -> np.ndarray:
    """A structured event array (:data:`EVENT_DTYPE`) from four equally long sequences."""
    events = np.empty(len(t), dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    return events


def decode_events(raw: bytes | np.ndarray, name: str = "<bytes>") -> np.ndarray:
    """Events from the bytes of a ``.bin`` file, overflow markers applied and removed."""
    data = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, bytes | bytearray) else raw
    if data.size % 5:
        raise DataError(f"{name} has {data.size} bytes, not a multiple of 5; it is truncated or "
                        "not an N-MNIST .bin file, copy it again.")
    rec = data.reshape(-1, 5).astype(np.int64)
    t = (rec[:, 2] & 0x7F) << 16 | rec[:, 3] << 8 | rec[:, 4]
    overflow = rec[:, 1] == OVERFLOW_Y
    if overflow.any():
        t = t + np.cumsum(overflow) * OVERFLOW_STEP
        keep = ~overflow
        rec, t = rec[keep], t[keep]
    return make_events(rec[:, 0], rec[:, 1], t, rec[:, 2] >> 7)


def read_events(path: str | os.PathLike) -> np.ndarray:
    """Events of one ``.bin`` file as a structured array with fields x, y, t (us), p."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror}); check that it exists and is "
                        "readable.") from None
    return decode_events(raw, str(path))


def encode_events(events: np.ndarray) -> bytes:
    """The ``.bin`` bytes of ``events`` (sorted by t, t >= 0, x and y < 240, p in {0, 1}).

    Timestamps above ``2**23 - 1`` are stored as ``t - k * 2**13`` after ``k`` overflow markers,
    with ``k`` the smallest count that makes every stored value fit in 23 bits.
    """
    x, y, t, p = (np.asarray(events[f], dtype=np.int64) for f in ("x", "y", "t", "p"))
    if len(t) and (t.min() < 0 or np.any(np.diff(t) < 0)):
        raise ValueError("timestamps must be non-negative and sorted")
    if len(t) and (x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() >= OVERFLOW_Y):
        raise ValueError("x must be in [0, 255] and y in [0, 239]")
    if len(t) and not np.isin(p, (0, 1)).all():
        raise ValueError("polarity must be 0 or 1")
    markers = np.maximum(0, -(-(t - MAX_STORED_T) // OVERFLOW_STEP))
    total = len(t) + int(markers[-1]) if len(t) else 0
    rec = np.zeros((total, 5), dtype=np.uint8)
    pos = np.arange(len(t)) + markers  # row of each event after the markers before it
    stored = t - markers * OVERFLOW_STEP
    rec[pos, 0] = x
    rec[pos, 1] = y
    rec[pos, 2] = p << 7 | stored >> 16
    rec[pos, 3] = (stored >> 8) & 0xFF
    rec[pos, 4] = stored & 0xFF
    is_event = np.zeros(total, dtype=bool)
    is_event[pos] = True
    rec[~is_event, 0] = OVERFLOW_X
    rec[~is_event, 1] = OVERFLOW_Y
    return rec.tobytes()


def write_events(path: str | os.PathLike, events: np.ndarray) -> Path:
    """Write ``events`` as a ``.bin`` file (temporary name, then rename: complete or absent)."""
    return atomic_write(path, encode_events(events), durable=False)
