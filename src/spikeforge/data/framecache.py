"""On-disk cache of one sample's event frames, stored sparse and compressed.

Frames ``[T, 2, 34, 34]`` (event counts, int16 as ``tonic.transforms.ToFrame`` makes them) are
mostly zero, so a cache entry keeps only the non-zero cells: their flat indices into the
``T * 2 * 34 * 34`` array and their counts. File layout (little-endian)::

    8 bytes   magic b"SFFRAME1"
    8 bytes   int64  size of the source file (bytes)
    8 bytes   int64  mtime of the source file (ns)
    4 bytes   uint32 T (number of frames)
    4 bytes   uint32 nnz (number of non-zero cells)
    rest      zlib( uint32 delta-encoded flat indices [nnz] ++ int16 counts [nnz] )

An entry is valid only for the source file of the same size and mtime; a missing, damaged or
stale entry is rebuilt. Entries are written to a temporary name and renamed, so concurrent
writers and interrupted runs never leave a half-written entry.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..fileio import atomic_write

MAGIC = b"SFFRAME1"
HEADER = struct.Struct("<8sqqII")


class SparseFrames(NamedTuple):
    """Non-zero cells of frames ``[length, *frame_shape]``: flat indices (int64) and counts."""

    length: int
    index: np.ndarray
    count: np.ndarray


def sparsify(frames: np.ndarray) -> SparseFrames:
    """:class:`SparseFrames` of a dense ``[T, ...]`` array of counts."""
    flat = frames.reshape(-1)
    index = np.flatnonzero(flat)
    return SparseFrames(len(frames), index, flat[index].astype(np.int16))


def densify(sparse: SparseFrames, frame_shape: tuple[int, ...]) -> np.ndarray:
    """The dense ``[T, *frame_shape]`` int16 array of ``sparse``."""
    out = np.zeros(sparse.length * int(np.prod(frame_shape)), dtype=np.int16)
    out[sparse.index] = sparse.count
    return out.reshape(sparse.length, *frame_shape)


def encode(sparse: SparseFrames, source_stat: os.stat_result) -> bytes:
    """Bytes of a cache entry (see module doc)."""
    deltas = np.diff(sparse.index, prepend=0).astype("<u4")
    payload = zlib.compress(deltas.tobytes() + sparse.count.astype("<i2").tobytes(), 1)
    header = HEADER.pack(MAGIC, source_stat.st_size, source_stat.st_mtime_ns, sparse.length,
                         len(sparse.index))
    return header + payload


def decode(data: bytes, source_stat: os.stat_result | None = None) -> SparseFrames | None:
    """The frames in ``data``, or None when damaged or (given ``source_stat``) stale."""
    if len(data) < HEADER.size:
        return None
    magic, size, mtime_ns, length, nnz = HEADER.unpack_from(data)
    if magic != MAGIC:
        return None
    if source_stat is not None and (size, mtime_ns) != (source_stat.st_size,
                                                        source_stat.st_mtime_ns):
        return None
    try:
        payload = zlib.decompress(data[HEADER.size:])
    except zlib.error:
        return None
    if len(payload) != 6 * nnz:
        return None
    index = np.cumsum(np.frombuffer(payload, dtype="<u4", count=nnz), dtype=np.int64)
    count = np.frombuffer(payload, dtype="<i2", offset=4 * nnz, count=nnz)
    return SparseFrames(length, index, count)


def load(path: str | os.PathLike, source_stat: os.stat_result | None = None
         ) -> SparseFrames | None:
    """The entry at ``path``, or None when absent, damaged or stale."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return decode(data, source_stat)


def save(path: str | os.PathLike, data: bytes) -> None:
    """Write entry bytes to ``path`` atomically (temporary name, then rename)."""
    atomic_write(path, data, durable=False)
