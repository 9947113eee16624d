"""Turn a :class:`~spikeforge.train.recipes.TrainConfig` into the objects a run needs:
device, model, optimizer, scheduler, datasets, and the :class:`Task` (encoding, loss, read-out).

The task fixes what one batch means for a recipe::

    x [B, 1, 28, 28] --encode--> poisson [T, B, 1, 28, 28] | image [B, 1, 28, 28] (model repeats
                                 it T times) | N-MNIST frames [T, B, 2, 34, 34] (cropped to T)
    model(input) -> spikes [T, B, 10] (+ membrane [T, B, 10] for Leaky/RLeaky outputs)
    (FcLif takes the images and Poisson-encodes them inside its first layer: Task.run)
    loss(spikes or membrane, y);  class = argmax of spike count, or of mean membrane
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .. import encoding, models
from .. import functional as SF
from ..errors import ConfigError
from .recipes import TrainConfig, no_cache_dir


def resolve_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; refuse a device that is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device name; use auto, cpu or cuda[:N]."
                          ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for CUDA, which this machine does not have; "
                          "use --device cpu.")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name} is not supported; use auto, cpu or cuda[:N].")
    return device


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp``: fp16 on CUDA (with grad scaling), bf16 on CPU."""
    if not config.amp:
        return None
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def build_model(config: TrainConfig) -> nn.Module:
    """The recipe network with the config's model settings, in float32 whatever torch's default
    dtype is."""
    c = config
    kwargs: dict = {}
    if c.model == "fc-lif":
        kwargs = {"tau": c.tau if c.tau is not None else 2.0, "steps": c.T}
    elif c.model == "csnn":
        kwargs = {"channels": c.channels or 64, "steps": c.T, "pool": c.pool or "max"}
    elif c.model == "nmnist-csnn":
        kwargs = {"beta": 0.5 if c.beta is None else c.beta}
    elif c.model == "rleaky":
        kwargs = {"beta": 0.9 if c.beta is None else c.beta, "steps": c.T,
                  "hidden": c.hidden or 128, "recurrence": c.recurrence or "linear"}
    try:  # float32 whatever torch's default dtype is: the data, checkpoints and kernels are
        return models.build(c.model, **kwargs).float()
    except ValueError as err:
        raise ConfigError(f"cannot build model {c.model} from the config: {err}.") from None


def build_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    """Adam (default betas) or SGD with momentum, as the recipe's reference uses; torch's fused
    implementation (one kernel for all parameters, the same update) where the parameters allow."""
    params = list(params)
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if config.opt == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, fused=fused)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer):
    """Cosine annealing over ``epochs`` (stepped once per epoch), or a constant rate."""
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def restore_scheduler(config: TrainConfig, scheduler, state: dict) -> None:
    """Load a checkpoint's scheduler ``state``, then fit it to ``config.epochs``, which
    ``--resume --epochs N`` may have changed: the cosine then runs over the new total, as if
    the run had been started with it. After ``e`` completed epochs each group's rate is the
    closed form of :class:`torch.optim.lr_scheduler.CosineAnnealingLR`,
    ``eta_min + (base_lr − eta_min)·(1 + cos(π·e/epochs))/2`` (the loaded, recursively
    computed rate carries the old total and, at its end, is 0, which no later step can
    leave). Unchanged totals keep the loaded rates bit for bit."""
    scheduler.load_state_dict(state)
    if not isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) or \
            scheduler.T_max == config.epochs:
        return
    scheduler.T_max = config.epochs
    done = scheduler.last_epoch
    rates = [scheduler.eta_min + (base - scheduler.eta_min)
             * (1 + math.cos(math.pi * done / config.epochs)) / 2
             for base in scheduler.base_lrs]
    for group, lr in zip(scheduler.optimizer.param_groups, rates, strict=True):
        group["lr"] = lr
    scheduler._last_lr = rates


def load_data(config: TrainConfig, split: str, data_dir: str | os.PathLike | None = None,
              cache_dir: str | os.PathLike | None = None):
    """The dataset of ``split`` ("train" | "test"): a StaticDataset or an NMNIST (its frame cache
    in ``cache_dir``, else the config's, else ``$SPIKEFORGE_CACHE``)."""
    root = data_dir if data_dir is not None else config.data_dir
    if root is not None and not Path(root).expanduser().is_dir():
        raise ConfigError(f"--data-dir {root} does not exist or is not a folder; give the folder "
                          "that holds the dataset files.")
    if cache_dir is not None and config.dataset != "nmnist":
        raise no_cache_dir(config.dataset)
    if config.dataset == "nmnist":
        from ..data.nmnist import NMNIST, usable_cache_dir
        from ..data.sources import default_data_root

        cache = cache_dir if cache_dir is not None else config.cache_dir
        return NMNIST(root if root is not None else default_data_root() / "nmnist",
                      train=split == "train", denoise_us=config.denoise_us,
                      time_window_us=config.time_window_us,
                      augment=config.augment and split == "train",
                      download=config.download and root is None,  # never into the user's folder
                      workers=config.workers,
                      cache_dir=None if cache is None else usable_cache_dir(cache))
    from ..data import load_dataset

    return load_dataset(config.dataset, split=split, data_dir=root, download=config.download)


def stream_seed(*keys: int) -> int:
    """A 63-bit generator seed from a tuple of non-negative ints (numpy SeedSequence)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(2, np.uint64)[0] >> np.uint64(1))


#: Second key of the seed of each random stream (first key: the run's seed).
TRAIN_STREAM, TEST_STREAM = 0, 1


@dataclass
class Task:
    """What one batch means for a recipe: encode it, read the output, score it."""

    encoding: str
    steps: int | None
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    loss_on: str          # "spikes" | "membrane"
    readout: str          # "spikes" | "membrane"

    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Raw batch → model input (see module doc)."""
        if self.encoding == "poisson":
            return encoding.poisson(x, self.steps, generator=generator)
        if self.encoding == "frames" and self.steps is not None:
            return x[: self.steps]
        return x

    def run(self, model: nn.Module, x: Tensor, generator: torch.Generator | None = None):
        """``model(encode(x))``; a model that Poisson-encodes images itself (``FcLif``, fused
        into its first layer, the same spikes) is given the images and the generator instead."""
        inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        if (self.encoding == "poisson" and isinstance(inner, models.FcLif)
                and inner.steps == self.steps):
            return model(x, generator=generator)
        return model(self.encode(x, generator))

    @staticmethod
    def outputs(out) -> tuple[Tensor, Tensor | None]:
        """Model output → (spikes [T, B, C], membrane [T, B, C] or None)."""
        if isinstance(out, tuple):
            return out[0], out[1]
        return out, None

    def loss(self, spikes: Tensor, membrane: Tensor | None, y: Tensor) -> Tensor:
        return self.loss_fn(membrane if self.loss_on == "membrane" else spikes, y)

    def predict(self, spikes: Tensor, membrane: Tensor | None) -> Tensor:
        """Predicted class ``[B]``."""
        if self.readout == "membrane":
            return membrane.mean(0).argmax(-1)
        return SF.predict(spikes)


def build_task(config: TrainConfig) -> Task:
    try:
        loss_fn = partial(SF.LOSSES[config.loss], **config.loss_args)
        loss_fn(torch.zeros(1, 1, 10), torch.zeros(1, dtype=torch.int64))
    except TypeError as err:
        raise ConfigError(f"loss_args {config.loss_args} do not fit loss {config.loss}: {err}."
                          ) from None
    return Task(encoding=config.encoding, steps=config.T, loss_fn=loss_fn,
                loss_on="membrane" if config.loss == "mse_membrane" else "spikes",
                readout=config.readout)
