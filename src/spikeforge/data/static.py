"""MNIST and Fashion-MNIST held in memory as uint8 tensors, batched by indexing.

``x = images[idx].float() / 255`` with shape ``[B, 1, 28, 28]``; no per-sample Python, no PIL.
The conversion to float happens on the training device, after the (4x smaller) uint8 transfer.
On a GPU the whole dataset (47 MB for MNIST train) is copied to the device once and batches are
indexed there, so no host-to-device copy happens per batch at all (better than pinned memory).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch

from ..errors import ConfigError, DataError
from .idx import read_idx
from .sampling import batch_indices, num_batches
from .sources import SOURCES, locate_idx

MNIST_CLASSES = [f"{i} - {w}" for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
CLASSES = {"mnist": MNIST_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}
ALIASES = {"mnist": "mnist", "fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist",
           "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist"}


class StaticDataset:
    """Images ``uint8 [N, H, W]`` and labels ``int64 [N]`` in memory.

    ``sample(i)`` gives ``(x float32 [1, H, W] in [0, 1], y int)``; ``batches(...)`` gives
    ``(x float32 [B, 1, H, W], y int64 [B])`` on the requested device, in the order described in
    :mod:`spikeforge.data.sampling`.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, name: str = "custom",
                 classes: Sequence[str] | None = None):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 3:
            raise ValueError("images must be a uint8 tensor of shape [N, H, W]")
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point():
            raise ValueError("labels must be an integer tensor of shape [N]")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64).contiguous()
        self.name = name
        self.classes = list(classes) if classes is not None else list(
            CLASSES.get(name, [str(i) for i in range(10)]))
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"StaticDataset({self.name!r}, {len(self)} images of {tuple(self.images.shape[1:])})"

    def sample(self, i: int) -> tuple[torch.Tensor, int]:
        """Image ``i`` as float32 ``[1, H, W]`` in [0, 1] and its label."""
        return self.images[i].unsqueeze(0).float().div_(255), int(self.labels[i])

    def num_batches(self, batch_size: int, drop_last: bool = False, world_size: int = 1) -> int:
        """Number of batches :meth:`batches` yields on each rank."""
        return num_batches(len(self), batch_size, drop_last, world_size)

    def _tensors_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device.type == "cpu":
            return self.images, self.labels
        if device not in self._on_device:
            self._on_device[device] = (self.images.to(device), self.labels.to(device))
        return self._on_device[device]

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        reuse: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x float32 [B, 1, H, W] in [0, 1], y int64 [B])`` on ``device``. ``reuse``
        is :meth:`NMNIST.batches`'s (a shared batch buffer); these small batches are always
        fresh tensors, so it changes nothing here."""
        device = torch.device(device)
        images, labels = self._tensors_on(device)
        for idx in batch_indices(len(self), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                                 drop_last=drop_last, rank=rank, world_size=world_size,
                                 start_batch=start_batch):
            idx = idx.to(device)
            x = images.index_select(0, idx).unsqueeze(1).float().div_(255)
            yield x, labels.index_select(0, idx)

    def torch_dataset(self) -> torch.utils.data.Dataset:
        """A map-style ``torch.utils.data.Dataset`` view: ``ds[i] = sample(i)``."""
        return _TorchView(self)

    def class_counts(self) -> list[int]:
        """Number of samples of each class ``0 .. len(classes) - 1``."""
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()


class _TorchView(torch.utils.data.Dataset):
    def __init__(self, dataset: StaticDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        return self.dataset.sample(i)


def canonical_name(name: str) -> str:
    """``"MNIST"``, ``"fashion_mnist"``, ... -> ``"mnist"`` / ``"fashion-mnist"``."""
    key = name.strip().lower()
    if key not in ALIASES:
        raise ConfigError(f"unknown dataset {name!r}; choose 'mnist' or 'fashion-mnist'.")
    return ALIASES[key]


def read_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``uint8 [N, H, W]`` and labels ``int64 [N]`` from two IDX files, validated."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != "uint8" or images.ndim != 3:
        raise DataError(f"{images_path} holds {images.dtype} data of shape {images.shape}, not "
                        "uint8 images [N, H, W]; point to the images file.")
    if labels.dtype != "uint8" or labels.ndim != 1:
        raise DataError(f"{labels_path} holds {labels.dtype} data of shape {labels.shape}, not "
                        "uint8 labels [N]; point to the labels file.")
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                        f"{len(labels)} labels; the two files do not belong together.")
    if len(labels) and int(labels.max()) > 9:
        raise DataError(f"{labels_path} has label {int(labels.max())} outside 0-9; it is not "
                        "an MNIST-family labels file.")
    return torch.from_numpy(images), torch.from_numpy(labels.astype("int64"))


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> StaticDataset:
    """MNIST or Fashion-MNIST ``split`` ("train" | "test") from local files or a verified
    download (see :mod:`spikeforge.data.sources` for the search order)."""
    key = canonical_name(name)
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r}; use 'train' or 'test'.")
    images_path, labels_path = locate_idx(SOURCES[key], split, data_dir, download)
    images, labels = read_idx_pair(images_path, labels_path)
    return StaticDataset(images, labels, name=key)
