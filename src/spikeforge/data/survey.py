"""What a data folder holds: MNIST-format files and N-MNIST trees, with counts and checksums.

``survey(folder)`` returns a plain dict (JSON-ready)::

    {"folder": ..., "idx": [{"path", "kind", "shape", "sha256", "known", "per_class"?}
                            or {"path", "error"}],
     "nmnist": {"Train": {"folder", "recordings", "per_class", "bytes", "empty",
                          "sha256"?}, ...},
     "simulation": <simulation.json of a simulated tree, when present>}

An IDX file's ``sha256`` is that of its decompressed content, ``known`` names the official file
it matches (or None). An N-MNIST split's ``sha256`` digests every ``<digit>/<name>.bin``
path and content in loader order, so two copies of a tree compare by one value.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import DataError
from .binfmt import decode_events
from .idx import read_idx
from .nmnist import check_sensor, find_split_dir, list_split
from .sources import KNOWN_SHA256, sha256_of_content


def _idx_files(folder: Path) -> list[Path]:
    found = []
    for depth in ("*", "*/*", "*/*/*"):
        found += [p for p in folder.glob(depth) if "-ubyte" in p.name and p.is_file()]
    return sorted(found)


def _describe_idx(path: Path) -> dict:
    try:
        array = read_idx(path)
    except DataError as err:
        return {"path": str(path), "error": str(err)}
    if array.ndim == 1 and array.dtype.kind == "u" and array.size and array.max() > 9:
        return {"path": str(path), "error": f"{path} has label {int(array.max())} outside 0-9; "
                                            "it is not an MNIST-family labels file."}
    sha = sha256_of_content(path)
    entry = {"path": str(path), "kind": "labels" if array.ndim == 1 else "images",
             "shape": list(array.shape), "dtype": str(array.dtype), "sha256": sha,
             "known": KNOWN_SHA256.get(sha)}
    if array.ndim == 1 and array.dtype.kind == "u":
        entry["per_class"] = [int((array == c).sum()) for c in range(10)]
    return entry


def _describe_split(split_dir: Path, checksums: bool) -> dict:
    """Counts (and digest) of one N-MNIST split; DataError naming the first damaged recording
    (a size not a multiple of 5 bytes; with ``checksums``, also events outside 34x34)."""
    files, labels = list_split(split_dir)
    for f in files:
        if os.path.getsize(f) % 5:
            raise DataError(f"{f} has {os.path.getsize(f)} bytes, not a multiple of 5; it is "
                            "truncated or not an N-MNIST .bin file, copy it again.")
    sizes = [os.path.getsize(f) for f in files]
    entry = {"folder": str(split_dir), "recordings": len(files),
             "per_class": [int((labels == c).sum()) for c in range(10)],
             "bytes": sum(sizes), "empty": sizes.count(0)}
    if checksums:
        digest = hashlib.sha256()
        for f in files:
            digest.update(f"{f.parent.name}/{f.name}\0".encode())
            raw = f.read_bytes()
            check_sensor(decode_events(raw, str(f)), str(f))
            digest.update(hashlib.sha256(raw).digest())
        entry["sha256"] = digest.hexdigest()
    return entry


def survey(folder: str | os.PathLike, checksums: bool = True) -> dict:
    """Describe ``folder`` (see module doc); DataError when it holds nothing usable."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; pass the folder that holds the data files.")
    report: dict = {"folder": str(folder), "idx": [_describe_idx(p) for p in _idx_files(folder)],
                    "nmnist": {}}
    for split in ("Train", "Test"):
        split_dir = find_split_dir(folder, split == "Train")
        if split_dir is not None:
            try:
                report["nmnist"][split] = _describe_split(split_dir, checksums)
            except DataError as err:
                report["nmnist"][split] = {"folder": str(split_dir), "error": str(err)}
    sim = folder / "simulation.json"
    if sim.is_file():
        try:
            report["simulation"] = json.loads(sim.read_text())
        except (OSError, ValueError):
            report["simulation"] = {"error": f"{sim} is not valid JSON"}
    if not report["idx"] and not report["nmnist"]:
        raise DataError(f"{folder} holds no MNIST-format (*-ubyte) files and no N-MNIST "
                        "Train/Test folders; point to the folder that holds them.")
    return report
