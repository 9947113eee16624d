"""One training epoch and one evaluation pass, nothing else (no files, no flags).

Per batch ``(x, y)``: ``out = task.run(model, x)`` (``model(task.encode(x))``),
``loss = task.loss(out, y)``, backward, step, ``functional.reset(model)``. Sums over the
epoch, kept on the device as float64 ``[loss·B, correct, B]``, are passed through ``reduce``
(identity on one process, an all-reduce sum under DDP) before the means are taken, so every
rank returns the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TextIO

import torch
from torch import Tensor, nn

from .. import functional as SF
from .. import threads
from ..errors import SpikeforgeError
from .build import Task
from .progress import EpochProgress


class Diverged(SpikeforgeError):
    """The loss stopped being a finite number."""


@dataclass
class EpochResult:
    """Mean loss, accuracy (fraction) and throughput of one pass over the data."""

    loss: float
    acc: float
    images: int
    seconds: float

    @property
    def img_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _identity(t: Tensor) -> Tensor:
    return t


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def _outputs(task: Task, model: nn.Module, x: Tensor, generator, device, amp_dtype):
    with _autocast(device, amp_dtype):
        spikes, membrane = task.outputs(task.run(model, x, generator))
    return spikes.float(), None if membrane is None else membrane.float()


def _report(progress: EpochProgress, batch: int, totals: Tensor, start: float) -> float:
    """Show the running loss, accuracy and img/s after ``batch``; return the loss sum."""
    loss_sum, correct, count = totals.tolist()
    progress.update(batch, loss_sum / count, correct / count,
                    count / max(time.perf_counter() - start, 1e-9))
    return loss_sum


def _result(totals: Tensor, seconds: float, reduce: Callable[[Tensor], Tensor]) -> EpochResult:
    loss_sum, correct, count = reduce(totals).tolist()
    count = max(count, 1.0)
    return EpochResult(loss=loss_sum / count, acc=correct / count, images=int(count),
                       seconds=seconds)


def train_one_epoch(
    model: nn.Module,
    task: Task,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    num_batches: int,
    device: torch.device,
    title: str = "train",
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    generator: torch.Generator | None = None,
    reduce: Callable[[Tensor], Tensor] = _identity,
    show_progress: bool = True,
    log_every: int = 1,
) -> EpochResult:
    """Train over ``batches``; raise :class:`Diverged` as soon as the loss is not finite."""
    model.train()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    _sync(device)
    start = time.perf_counter()
    with EpochProgress(title, num_batches, enabled=show_progress) as progress:
        for i, (x, y) in enumerate(batches, 1):
            threads.adapt()
            spikes, membrane = _outputs(task, model, x, generator, device, amp_dtype)
            loss = task.loss(spikes, membrane, y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            SF.reset(model)
            with torch.no_grad():
                totals[0] += loss.detach() * len(y)
                totals[1] += (task.predict(spikes, membrane) == y).sum()
                totals[2] += len(y)
            if i % log_every == 0 or i == num_batches:
                loss_sum = _report(progress, i, totals, start)
                if not math.isfinite(loss_sum):
                    raise Diverged(f"the training loss became {loss_sum} by batch {i}")
    _sync(device)
    return _result(totals, time.perf_counter() - start, reduce)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: Task,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    num_batches: int,
    device: torch.device,
    title: str = "test",
    amp_dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    reduce: Callable[[Tensor], Tensor] = _identity,
    show_progress: bool = True,
    log_every: int = 1,
    stream: TextIO | None = None,
) -> EpochResult:
    """Mean loss and accuracy of ``model`` (put in eval mode) over ``batches``; progress goes
    to ``stream`` (default stdout)."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    _sync(device)
    start = time.perf_counter()
    with EpochProgress(title, num_batches, enabled=show_progress, stream=stream) as progress:
        for i, (x, y) in enumerate(batches, 1):
            threads.adapt()
            spikes, membrane = _outputs(task, model, x, generator, device, amp_dtype)
            SF.reset(model)
            totals[0] += task.loss(spikes, membrane, y).double() * len(y)
            totals[1] += (task.predict(spikes, membrane) == y).sum()
            totals[2] += len(y)
            if i % log_every == 0 or i == num_batches:
                _report(progress, i, totals, start)
    _sync(device)
    return _result(totals, time.perf_counter() - start, reduce)
