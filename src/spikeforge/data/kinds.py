"""Which dataset a folder holds: MNIST-format IDX files or an N-MNIST tree.

Used only to say what went wrong when a folder of one kind is given where the other is expected
(``--data-dir`` with MNIST's files for nmnist-csnn, or with N-MNIST for csnn); nothing here
reads, extracts or writes anything.

    N-MNIST tree:  <folder>[/NMNIST]/{Train,Test,train,test}/<digit>/...  or  train.zip / test.zip
    IDX files:     train-images-idx3-ubyte[.gz], t10k-images-idx3-ubyte[.gz] (any usual name),
                   in the folder or in its mnist / MNIST/raw / FashionMNIST/raw-style sub-folders
"""

from __future__ import annotations

import os
from pathlib import Path

from .idx import find_idx_file

NMNIST_ARCHIVES = ("train.zip", "test.zip")
IDX_SUBDIRS = ("", "mnist", "MNIST", "MNIST/raw", "fashion-mnist", "fashion_mnist",
               "FashionMNIST", "FashionMNIST/raw")
IDX_STEMS = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-labels-idx1-ubyte")


def find_split_dir(root: str | os.PathLike, train: bool) -> Path | None:
    """The existing ``Train``/``Test`` folder (with digit sub-folders) under ``root`` or
    ``root/NMNIST``, or None; nothing is extracted or downloaded."""
    root = Path(root).expanduser()
    split = "Train" if train else "Test"
    for base in (root, root / "NMNIST"):
        for name in (split, split.lower()):
            candidate = base / name
            if candidate.is_dir() and any((candidate / str(d)).is_dir() for d in range(10)):
                return candidate
    return None


def holds_nmnist(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds an N-MNIST split tree or the official archives."""
    folder = Path(folder).expanduser()
    if find_split_dir(folder, True) or find_split_dir(folder, False):
        return True
    return any((base / name).is_file() for base in (folder, folder / "NMNIST")
               for name in NMNIST_ARCHIVES)


def holds_idx(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` (or a usual sub-folder) holds any MNIST-format dataset file."""
    folder = Path(folder).expanduser()
    dirs = [folder / sub for sub in IDX_SUBDIRS]
    return any(find_idx_file(dirs, stem) is not None for stem in IDX_STEMS)
