"""IDX files, the format of MNIST and Fashion-MNIST, raw or gzip-compressed.

Layout (all integers big-endian)::

    byte 0-1   0x00 0x00                      magic
    byte 2     dtype code                     0x08 uint8, 0x09 int8, 0x0B int16,
                                              0x0C int32, 0x0D float32, 0x0E float64
    byte 3     number of dimensions n
    4 bytes    size of dimension 0 ... n-1
    data       prod(sizes) * itemsize bytes, row-major

A file is gzip-compressed when it starts with the gzip magic ``1f 8b``, whatever its name says.
Everything is checked before use (magic, dtype code, dimensions, exact byte length) and any
fault raises :class:`~spikeforge.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import atomic_write

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | os.PathLike) -> bytes:
    """The content of ``path``, decompressed when it is a gzip file (detected by its magic)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; check the path or download the file.") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, not a data file; pass the file itself.") from None
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror}); check its permissions.") from None
    if not raw:
        raise DataError(f"{path} is empty; delete it and download or copy it again.")
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise DataError(
                f"{path} is a damaged gzip file ({err}); delete it and download it again."
            ) from None
        if not raw:
            raise DataError(f"{path} decompresses to nothing; delete it and download it again.")
    elif path.suffix == ".gz":
        raise DataError(
            f"{path} is named .gz but is not a gzip file; delete it and download it again."
        )
    return raw


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an IDX file into an array of native byte order (see module doc)."""
    if len(raw) < 4:
        raise DataError(f"{name} is too short ({len(raw)} bytes) to be an IDX file; "
                        "replace it with a complete copy.")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0:
        raise DataError(f"{name} is not an IDX file (magic {raw[:4].hex()}, expected 0000xxxx); "
                        "point to the MNIST-format file itself.")
    if code not in IDX_DTYPES:
        raise DataError(f"{name} has unknown IDX dtype code 0x{code:02x}; "
                        "the file is damaged or not in MNIST format.")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{name} has a truncated or empty IDX header ({ndim} dimensions); "
                        "replace it with a complete copy.")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{name} holds {len(raw) - header} data bytes but its header "
                        f"{tuple(shape)} needs {expected}; the file is truncated or damaged, "
                        "download it again.")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a numpy array, validated (see module doc)."""
    return parse_idx(read_bytes(path), str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of ``array`` (dtype one of :data:`IDX_DTYPES`)."""
    array = np.asarray(array)
    for code, dtype in IDX_DTYPES.items():
        if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
            return header + np.ascontiguousarray(array, dtype=dtype).tobytes()
    raise ValueError(f"dtype {array.dtype} has no IDX code")


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    Missing parent folders are made. Written to a temporary name and renamed, so the file is
    either complete or absent.
    """
    path = Path(path)
    data = encode_idx(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    return atomic_write(path, data, durable=False)


def idx_file_names(stem: str) -> list[str]:
    """The usual names of one IDX file: ``train-images-idx3-ubyte`` -> that name,
    ``train-images.idx3-ubyte``, each with and without ``.gz``."""
    names = [stem]
    parts = stem.rsplit("-", 2)
    if len(parts) == 3:
        names.append(f"{parts[0]}.{parts[1]}-{parts[2]}")
    return [n + ext for n in names for ext in (".gz", "")]


def find_idx_file(directories: Iterable[str | os.PathLike], stem: str) -> Path | None:
    """The first existing file named like ``stem`` (see :func:`idx_file_names`) in
    ``directories``, or None."""
    for directory in directories:
        for name in idx_file_names(stem):
            candidate = Path(directory) / name
            if candidate.is_file():
                return candidate
    return None
