"""The N-MNIST .bin format: bytes by hand, overflow records, agreement with Tonic's reader."""

import numpy as np
import pytest

from spikeforge.data.binfmt import (
    EVENT_DTYPE,
    decode_events,
    encode_events,
    make_events,
    read_events,
    write_events,
)
from spikeforge.errors import DataError


def test_one_event_by_hand():
    raw = encode_events(make_events([5], [7], [0x12345], [1]))
    assert raw == bytes([5, 7, 0x80 | 0x01, 0x23, 0x45])
    raw = encode_events(make_events([33], [0], [2**23 - 1], [0]))
    assert raw == bytes([33, 0, 0x7F, 0xFF, 0xFF])


def test_overflow_record_adds_2_pow_13_to_later_events():
    raw = bytes([1, 2, 0x00, 0x00, 100,     # t = 100
                 49, 240, 0, 0, 0,          # overflow record
                 3, 4, 0x80, 0x00, 5])      # stored 5 -> 5 + 8192, ON
    events = decode_events(raw)
    assert events.dtype == EVENT_DTYPE
    assert events.tolist() == [(1, 2, 100, 0), (3, 4, 8197, 1)]


def test_round_trip_with_overflow_records(tmp_path):
    rng = np.random.default_rng(0)
    n = 2000
    t = np.sort(rng.integers(0, 2**25, n))
    events = make_events(rng.integers(0, 34, n), rng.integers(0, 34, n), t, rng.integers(0, 2, n))
    path = write_events(tmp_path / "a.bin", events)
    raw = path.read_bytes()
    markers = len(raw) // 5 - n
    assert markers == -(-(t.max() - (2**23 - 1)) // 2**13)  # as few as needed
    assert np.frombuffer(raw, np.uint8).reshape(-1, 5)[:, 1].tolist().count(240) == markers
    back = read_events(path)
    assert back.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(back, events)


def test_tonic_reads_our_files_the_same(tmp_path):
    tonic_io = pytest.importorskip("tonic.io")
    rng = np.random.default_rng(1)
    n = 500
    t = np.sort(np.concatenate([rng.integers(0, 300_000, n - 50), rng.integers(2**23, 2**24, 50)]))
    events = make_events(rng.integers(0, 34, n), rng.integers(0, 34, n), t, rng.integers(0, 2, n))
    path = write_events(tmp_path / "a.bin", events)
    theirs = tonic_io.read_mnist_file(str(path), dtype=EVENT_DTYPE)
    np.testing.assert_array_equal(theirs, events)
    np.testing.assert_array_equal(read_events(path), theirs)


def test_empty_and_damaged(tmp_path):
    assert encode_events(make_events([], [], [], [])) == b""
    assert len(decode_events(b"")) == 0
    path = tmp_path / "cut.bin"
    path.write_bytes(bytes(12))
    with pytest.raises(DataError, match="12 bytes, not a multiple of 5") as info:
        read_events(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match="cannot be read"):
        read_events(tmp_path / "absent.bin")


def test_encode_rejects_what_the_format_cannot_hold():
    with pytest.raises(ValueError, match="sorted"):
        encode_events(make_events([0, 0], [0, 0], [5, 4], [0, 0]))
    with pytest.raises(ValueError, match=r"y in \[0, 239\]"):
        encode_events(make_events([0], [240], [0], [0]))
    with pytest.raises(ValueError, match="polarity"):
        encode_events(make_events([0], [0], [0], [2]))
