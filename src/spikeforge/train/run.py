"""The run directory: what ``spikeforge train`` writes, and :func:`load_run` to read it back.

Layout (DESIGN §6)::

    <run>/config.json      every resolved setting (TrainConfig fields) + format and versions
    <run>/metrics.csv      one row per completed epoch, columns METRICS
    <run>/metrics.jsonl    the same rows as JSON objects
    <run>/tensorboard/     TensorBoard scalars (loss/*, acc/*, img_per_s/*, lr), step = epoch
    <run>/last/            checkpoint after the last completed epoch (see checkpoint.py)
    <run>/best/            checkpoint of the epoch with the highest test accuracy

Accuracies are fractions in [0, 1]; img/s are measured over each epoch's own steps.
``test_images`` is the number of test images the epoch's test loss and accuracy were measured
on, ``test_set_images`` the size of the test split: fewer with ``--max-batches`` (a subset).
Rows of runs written before these two columns existed leave them empty (null).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import __version__, threads
from .. import functional as SF
from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_write, discard_stale, writing
from . import checkpoint
from .build import TEST_STREAM, Task, build_model, build_task, load_data, stream_seed
from .recipes import TrainConfig, from_dict

RUN_FORMAT = "spikeforge-run-1"
CONFIG = "config.json"
METRICS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "train_img_per_s",
           "test_img_per_s", "lr", "seconds", "test_images", "test_set_images")
#: The columns that are not TensorBoard scalars (the step, and the test set's extent).
NOT_SCALARS = ("epoch", "test_images", "test_set_images")
META_KEYS = ("format", "spikeforge_version", "torch_version", "threads", "threads_policy")


def discard_stale_files(run_dir: Path) -> None:
    """Remove what a run killed with SIGKILL while writing its config or metrics left behind
    (the checkpoints' own leftovers are recovered by :func:`checkpoint.save`)."""
    for name in (CONFIG, "metrics.csv", "metrics.jsonl"):
        discard_stale(run_dir / name)


def write_config(run_dir: Path, config: TrainConfig) -> None:
    """``config.json``: the settings, the versions, and the thread count the run starts with
    (``threads``) with where it came from (``threads_policy``, see :mod:`spikeforge.threads`)."""
    policy = threads.current()
    data = {"format": RUN_FORMAT, "spikeforge_version": __version__,
            "torch_version": torch.__version__, "threads": torch.get_num_threads(),
            "threads_policy": policy.describe() if policy else "torch default",
            **config.to_dict()}
    atomic_write(run_dir / CONFIG, json.dumps(data, indent=2) + "\n")


def read_config(run_dir: str | os.PathLike) -> tuple[TrainConfig, dict[str, Any]]:
    """The run's config (validated) and the raw ``config.json`` dict."""
    path = Path(run_dir) / CONFIG
    if not Path(run_dir).is_dir():
        what = "is a file, not a folder" if Path(run_dir).exists() else "does not exist"
        raise CheckpointError(f"{run_dir} {what}; give a run directory written by "
                              "`spikeforge train`.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir} holds no {CONFIG}; it is not a spikeforge run "
                              "directory.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is damaged ({err}); repair it (it is plain JSON; another "
                              "run's config.json shows every key) or train the run again with "
                              "--overwrite.") from None
    if not isinstance(raw, dict) or raw.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{path} is not a spikeforge run config (no format "
                              f"'{RUN_FORMAT}'); point to a run written by `spikeforge train`.")
    try:
        config = from_dict({k: v for k, v in raw.items() if k not in META_KEYS}, str(path))
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    return config, raw


def write_metrics(run_dir: Path, history: list[dict[str, float]]) -> None:
    """Rewrite metrics.csv and metrics.jsonl from the full history (one row per epoch)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k) for k in METRICS})
    atomic_write(run_dir / "metrics.csv", buffer.getvalue())
    atomic_write(run_dir / "metrics.jsonl",
                 "".join(json.dumps({k: row.get(k) for k in METRICS}) + "\n" for row in history))


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """The rows of ``metrics.jsonl`` (empty when the run has none yet). Raises ValueError for
    a line that is not JSON, or not an object of numbers with a whole ``epoch``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not (isinstance(row, dict) and type(row.get("epoch")) is int and all(
                value is None or type(value) in (int, float) for value in row.values())):
            raise ValueError(f"line {number} is not a metrics row: an object of numbers with "
                             "a whole epoch")
        rows.append(row)
    return rows


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse an ``--out-dir`` that holds another run (unless ``overwrite``) or other files."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"--out-dir {out_dir} is a file; give a folder for the run.")
    if not any(out_dir.iterdir()):
        return
    if not (out_dir / CONFIG).exists():
        raise ConfigError(f"--out-dir {out_dir} is not empty and holds no spikeforge run; "
                          "choose a new or empty folder.")
    if not overwrite:
        raise ConfigError(f"--out-dir {out_dir} already holds a run; continue it with "
                          f"--resume {out_dir}, replace it with --overwrite, or choose another "
                          "--out-dir.")


def clear_run(out_dir: Path) -> None:
    """Remove everything in a run directory (``--overwrite``), its ``config.json`` last: if a
    removal fails (a file that may not be deleted), the folder still holds a run, which the
    error names, and ``--overwrite`` can be given again once that is fixed."""
    with writing(out_dir):
        entries = sorted(out_dir.iterdir(), key=lambda entry: entry.name == CONFIG)
    for entry in entries:
        with writing(entry):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


@dataclass
class LoadedRun:
    """A trained run read back from its directory; ``model`` is in eval mode on ``device``."""

    run_dir: Path
    config: dict[str, Any]
    recipe: str
    model: nn.Module
    task: Task
    train_config: TrainConfig
    checkpoint: str
    epoch: int
    device: torch.device

    def dataset(self, split: str = "test", data_dir: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None):
        """This run's dataset (StaticDataset or NMNIST), from ``data_dir`` or the config's;
        N-MNIST frames cached in ``cache_dir`` or the config's."""
        return load_data(self.train_config, split, data_dir, cache_dir)

    def generator(self, rank: int = 0) -> torch.Generator | None:
        """The random stream test-time Poisson encoding uses (the same as during training)."""
        if self.task.encoding != "poisson":
            return None
        return torch.Generator(self.device).manual_seed(
            stream_seed(self.train_config.seed, TEST_STREAM, rank))

    @torch.no_grad()
    def forward(self, x: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """Raw batch (images [B, 1, 28, 28] in [0, 1], or frames [T, B, 2, 34, 34]) →
        (spikes [T, B, 10], membrane [T, B, 10] or None); neuron state is reset afterwards."""
        x = x.to(self.device, torch.float32)
        try:
            return self.task.outputs(self.task.run(self.model, x, generator))
        finally:
            SF.reset(self.model)


def load_run(run_dir: str | os.PathLike, which: str = "best",
             device: str | torch.device = "cpu") -> LoadedRun:
    """Read a run directory back: config, model with the ``which`` checkpoint's weights."""
    if which not in ("best", "last"):
        raise ConfigError(f"checkpoint must be 'best' or 'last', got {which!r}.")
    run_dir = Path(run_dir)
    config, raw = read_config(run_dir)
    ckpt = checkpoint.locate(run_dir, which)
    state = checkpoint.load_state(ckpt)
    device = torch.device(device)
    model = build_model(config)
    checkpoint.load_weights(ckpt, model, config.model)
    model.to(device).eval()
    return LoadedRun(run_dir=run_dir, config=raw, recipe=config.recipe, model=model,
                     task=build_task(config), train_config=config, checkpoint=which,
                     epoch=int(state["epoch"]), device=device)
