"""Synthetic datasets for the training tests, written in the real file formats.

Static images (MNIST IDX files): class ``k`` is a bright horizontal bar at rows ``2 + 2k`` to
``4 + 2k`` over columns 4-23, at a random intensity, on uniform noise. N-MNIST (``.bin`` files):
class ``k`` fires ON/OFF events in the 3 x 20 band at rows ``2 + 3k``, spread over 20 ms.
Both are learnable by every recipe in one or two short epochs, and far from trivial at chance.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from spikeforge.data import StaticDataset, load_dataset, write_idx


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread for the tiny models of every module that imports this fixture: on a
    shared 2-core machine, OpenMP barriers between two threads cost milliseconds per op (10x
    slower steps), and one thread loses nothing at these sizes. ``SPIKEFORGE_THREADS`` keeps
    commands run in-process (``cli.main``) at one thread too."""
    before, env = torch.get_num_threads(), os.environ.get("SPIKEFORGE_THREADS")
    torch.set_num_threads(1)
    os.environ["SPIKEFORGE_THREADS"] = "1"
    yield
    torch.set_num_threads(before)
    if env is None:
        os.environ.pop("SPIKEFORGE_THREADS", None)
    else:
        os.environ["SPIKEFORGE_THREADS"] = env


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``uint8 [n, 28, 28]`` images and ``uint8 [n]`` labels (see module doc)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = (rng.random((n, 28, 28)) * 90).astype(np.uint8)
    for i, label in enumerate(labels):
        row = 2 + 2 * int(label)
        images[i, row:row + 3, 4:24] = rng.integers(150, 256)
    return images, labels


def synthetic_dataset(n: int, seed: int) -> StaticDataset:
    images, labels = synthetic_images(n, seed)
    return StaticDataset(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))


def write_mnist(folder: Path, n_train: int = 512, n_test: int = 256) -> Path:
    """A synthetic MNIST folder with the four official file names."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = synthetic_images(n, seed)
        write_idx(folder / f"{stem}-images-idx3-ubyte", images)
        write_idx(folder / f"{stem}-labels-idx1-ubyte", labels)
    return folder


def write_nmnist(root: Path, n_train: int = 60, n_test: int = 30) -> Path:
    """A synthetic N-MNIST tree ``Train/<digit>/*.bin`` and ``Test/<digit>/*.bin``."""
    from spikeforge.data.binfmt import make_events, write_events

    for split, n, seed in (("Train", n_train, 3), ("Test", n_test, 4)):
        rng = np.random.default_rng(seed)
        for i in range(n):
            label = i % 10
            count = 1500
            x = rng.integers(7, 27, count)
            y = 2 + 3 * label + rng.integers(0, 3, count)
            t = np.sort(rng.integers(0, 20_000, count))
            p = rng.integers(0, 2, count)
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            write_events(folder / f"{i:05d}.bin", make_events(x, y, t, p))
    return root


def test_synthetic_mnist_reads_back_through_the_data_loader(tmp_path):
    folder = write_mnist(tmp_path, n_train=40, n_test=20)
    train = load_dataset("mnist", "train", data_dir=folder, download=False)
    images, labels = synthetic_images(40, 1)
    assert torch.equal(train.images, torch.from_numpy(images))
    assert torch.equal(train.labels, torch.from_numpy(labels.astype(np.int64)))
    # the bar of class k is the brightest band of rows 2+2k..4+2k
    x, y = train.sample(0)
    rows = x[0, :, 4:24].mean(1)
    assert int(rows.argmax()) in range(2 + 2 * y, 5 + 2 * y)
