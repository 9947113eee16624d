"""IDX files: exact round trips and one clear error per kind of damage."""

import gzip
import struct

import numpy as np
import pytest

from spikeforge.data.idx import find_idx_file, idx_file_names, read_idx, write_idx
from spikeforge.data.static import read_idx_pair
from spikeforge.errors import DataError


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_every_dtype(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = write_idx(tmp_path / f"x-idx3-ubyte{suffix}", array)
    back = read_idx(path)
    assert back.shape == (3, 4, 5) and back.dtype.kind == array.dtype.kind
    np.testing.assert_array_equal(back, array)


def test_header_bytes_by_hand(tmp_path):
    labels = np.array([7, 2, 1], dtype=np.uint8)
    path = write_idx(tmp_path / "labels-idx1-ubyte", labels)
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])
    images = np.arange(6, dtype=np.uint8).reshape(1, 2, 3)
    raw = write_idx(tmp_path / "images-idx3-ubyte", images).read_bytes()
    assert raw[:16] == struct.pack(">HBBIII", 0, 8, 3, 1, 2, 3)
    assert raw[16:] == bytes(range(6))


def test_gzip_detected_by_content_not_name(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    raw = (tmp_path / "a-idx1-ubyte")
    write_idx(raw, array)
    hidden = tmp_path / "b-idx1-ubyte"  # gzip data without .gz in the name
    hidden.write_bytes(gzip.compress(raw.read_bytes()))
    np.testing.assert_array_equal(read_idx(hidden), array)


def _good(tmp_path):
    return write_idx(tmp_path / "good-idx3-ubyte", np.zeros((4, 28, 28), np.uint8)).read_bytes()


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-1], "truncated"),
    (lambda raw: raw + b"\x00", "truncated or damaged"),
    (lambda raw: b"\x08\x03" + raw[2:], "not an IDX file"),
    (lambda raw: raw[:2] + b"\x07" + raw[3:], "unknown IDX dtype code 0x07"),
    (lambda raw: raw[:3], "too short"),
    (lambda raw: raw[:10], "truncated or empty IDX header"),
    (lambda raw: b"", "is empty"),
])
def test_damaged_files_raise_one_clear_error(tmp_path, damage, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(damage(_good(tmp_path)))
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_non_gzip_named_gz(tmp_path):
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(_good(tmp_path))
    with pytest.raises(DataError, match="named .gz but is not a gzip file") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_good(tmp_path))[:-20])
    with pytest.raises(DataError, match="damaged gzip file") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nothing")
    with pytest.raises(DataError, match="is a directory"):
        read_idx(tmp_path)


def test_image_and_label_counts_must_agree(tmp_path):
    images = write_idx(tmp_path / "i-idx3-ubyte", np.zeros((5, 28, 28), np.uint8))
    labels = write_idx(tmp_path / "l-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="5 images but .* 4 labels"):
        read_idx_pair(images, labels)


def test_swapped_or_foreign_files(tmp_path):
    images = write_idx(tmp_path / "i-idx3-ubyte", np.zeros((5, 28, 28), np.uint8))
    labels = write_idx(tmp_path / "l-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="not uint8 images"):
        read_idx_pair(labels, images)
    bad_labels = write_idx(tmp_path / "b-idx1-ubyte", np.full(5, 12, np.uint8))
    with pytest.raises(DataError, match="label 12 outside 0-9"):
        read_idx_pair(images, bad_labels)
    floats = write_idx(tmp_path / "f-idx3-ubyte", np.zeros((5, 28, 28), np.float32))
    with pytest.raises(DataError, match="float32 data"):
        read_idx_pair(floats, labels)


def test_usual_file_names(tmp_path):
    assert idx_file_names("train-images-idx3-ubyte") == [
        "train-images-idx3-ubyte.gz", "train-images-idx3-ubyte",
        "train-images.idx3-ubyte.gz", "train-images.idx3-ubyte"]
    write_idx(tmp_path / "train-images.idx3-ubyte", np.zeros((1, 2, 2), np.uint8))
    assert find_idx_file([tmp_path / "absent", tmp_path], "train-images-idx3-ubyte") == (
        tmp_path / "train-images.idx3-ubyte")
    assert find_idx_file([tmp_path], "t10k-images-idx3-ubyte") is None
