"""Datasets: MNIST and Fashion-MNIST in memory, N-MNIST through Tonic, a saccade simulator.

``load_dataset("mnist" | "fashion-mnist", split, data_dir, download) -> StaticDataset``;
``spikeforge.data.nmnist.NMNIST`` for N-MNIST (needs the ``nmnist`` extra, Tonic). Modules:
``idx`` (MNIST-format files), ``sources`` (local folders, verified downloads), ``sampling``
(batch order, shards, resume), ``static``, ``binfmt`` (N-MNIST ``.bin`` events), ``saccade``
(MNIST -> N-MNIST-style recordings), ``framecache`` and ``rotation`` (N-MNIST cache, augmentation).
"""

from .idx import read_idx, write_idx
from .static import StaticDataset, load_dataset

__all__ = ["StaticDataset", "load_dataset", "read_idx", "write_idx"]
