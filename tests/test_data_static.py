"""In-memory MNIST-family datasets: values, batch order, shards, resume, and the real files."""

from pathlib import Path

import numpy as np
import pytest
import torch

from spikeforge.data import StaticDataset, load_dataset, write_idx
from spikeforge.data.sampling import batch_indices, epoch_seed
from spikeforge.errors import ConfigError

MNIST_DIR = Path("/work/shared/data/mnist")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _synthetic(n=23):
    images = torch.arange(n * 28 * 28).reshape(n, 28, 28).remainder(256).to(torch.uint8)
    return StaticDataset(images, torch.arange(n) % 10)


def test_sample_and_batch_values():
    ds = _synthetic()
    x, y = ds.sample(5)
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 5
    assert torch.equal(x[0], ds.images[5].float() / 255)
    xb, yb = next(ds.batches(4))
    assert xb.shape == (4, 1, 28, 28) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert torch.equal(xb[:, 0], ds.images[:4].float() / 255)
    assert yb.tolist() == [0, 1, 2, 3]
    assert float(xb.min()) >= 0 and float(xb.max()) == 1.0  # 255 -> 1.0 exactly


def test_shuffle_order_is_randperm_of_seed_and_epoch():
    ds = _synthetic()
    got = torch.cat([y for _, y in ds.batches(5, shuffle=True, seed=3, epoch=2)])
    expected = torch.randperm(23, generator=torch.Generator().manual_seed(3 * 2**32 + 2))
    assert torch.equal(got, ds.labels[expected])
    again = torch.cat([y for _, y in ds.batches(5, shuffle=True, seed=3, epoch=2)])
    other = torch.cat([y for _, y in ds.batches(5, shuffle=True, seed=3, epoch=3)])
    assert torch.equal(got, again) and not torch.equal(got, other)
    assert epoch_seed(3, 2) == 3 * 2**32 + 2


def test_drop_last_and_batch_counts():
    ds = _synthetic()
    assert [len(y) for _, y in ds.batches(5)] == [5, 5, 5, 5, 3]
    assert [len(y) for _, y in ds.batches(5, drop_last=True)] == [5, 5, 5, 5]
    assert ds.num_batches(5) == 5 and ds.num_batches(5, drop_last=True) == 4


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_shards_are_equal_and_cover_the_epoch(world_size, drop_last):
    n, bs = 23, 4
    shards = [batch_indices(n, bs, shuffle=True, seed=1, epoch=0, drop_last=drop_last,
                            rank=r, world_size=world_size) for r in range(world_size)]
    counts = {len(s) for s in shards}
    assert counts == {_synthetic(n).num_batches(bs, drop_last, world_size)}
    taken = torch.cat([torch.cat(s) for s in shards])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(1, 0)))
    if drop_last:  # tail of the order dropped to a multiple of world_size, no repeats
        per_rank = n // world_size
        kept = order[: per_rank * world_size]
        assert len(set(taken.tolist())) == len(taken)
        assert set(taken.tolist()) <= set(kept.tolist())
    else:  # every sample at least once, padded by repeating the start of the order
        assert set(taken.tolist()) == set(range(n))
        total = -(-n // world_size) * world_size
        assert len(taken) == total
    # rank r takes positions r, r + world_size, ... of the epoch order
    assert torch.equal(torch.cat(shards[0])[:3], order[: 3 * world_size: world_size])


def test_start_batch_resumes_mid_epoch():
    ds = _synthetic()
    full = list(ds.batches(4, shuffle=True, seed=7, epoch=1))
    resumed = list(ds.batches(4, shuffle=True, seed=7, epoch=1, start_batch=3))
    assert len(resumed) == len(full) - 3
    for (xa, ya), (xb, yb) in zip(full[3:], resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert list(ds.batches(4, start_batch=99)) == []


def test_torch_dataset_view_matches_sample():
    ds = _synthetic()
    view = ds.torch_dataset()
    assert isinstance(view, torch.utils.data.Dataset) and len(view) == 23
    loader = torch.utils.data.DataLoader(view, batch_size=6)
    x, y = next(iter(loader))
    assert torch.equal(x, next(ds.batches(6))[0]) and y.tolist() == list(range(6))
    with pytest.raises(IndexError):
        view[23]


def test_constructor_checks_and_classes():
    with pytest.raises(ValueError, match="uint8"):
        StaticDataset(torch.zeros(2, 28, 28), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        StaticDataset(torch.zeros(2, 28, 28, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    assert _synthetic().classes == [str(i) for i in range(10)]
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'"):
        load_dataset("cifar", data_dir="/nonexistent", download=False)


def test_loads_from_data_dir_any_name(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "MNIST" / "raw" / "t10k-images.idx3-ubyte", images)
    write_idx(tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte.gz", np.arange(7, dtype=np.uint8))
    ds = load_dataset("MNIST", "test", data_dir=tmp_path, download=False)
    assert ds.name == "mnist" and ds.classes[3] == "3 - three"
    assert torch.equal(ds.images, torch.from_numpy(images))
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == list(range(7))


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="real MNIST not available")
def test_real_mnist_counts():
    test = load_dataset("mnist", "test", data_dir=MNIST_DIR, download=False)
    train = load_dataset("mnist", "train", data_dir=MNIST_DIR, download=False)
    assert len(train) == 60000 and len(test) == 10000
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == torch.uint8
    assert test.class_counts() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train.class_counts() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    batches = list(test.batches(128))
    assert len(batches) == 79 and batches[-1][0].shape == (16, 1, 28, 28)


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_DATA", str(tmp_path))
    test = load_dataset("fashion-mnist", "test", download=False)
    assert len(test) == 10000 and test.class_counts() == [1000] * 10
    assert test.classes[9] == "Ankle boot" and test.labels[:3].tolist() == [9, 2, 1]
