"""Progress of long operations: a rich progress bar on a terminal, plain lines otherwise.

Plain mode (the stream is a pipe or a file) prints one line at every tenth of the work::

    train 1/100   94/938  loss 0.0412  acc 0.8711  1523 img/s
    eval   16/79  loss 0.0213  acc 0.9805  2210 img/s
    prepare Train  2048/60000 recordings

Training writes its progress on stdout (beside the per-epoch lines); every other command
(eval, data prepare-nmnist and simulate-nmnist, export) on stderr, so that what they print on
stdout (``--json`` reports) stays clean.
"""

from __future__ import annotations

import math
import sys
from typing import TextIO


class Progress:
    """``with Progress(title, total) as p: p.update(done, stats)`` for ``total`` units of work
    (batches, recordings, steps); ``stream`` defaults to stdout; nothing is shown when
    ``enabled`` is false or ``total`` is 0."""

    def __init__(self, title: str, total: int, *, enabled: bool = True,
                 stream: TextIO | None = None, unit: str = "") -> None:
        self.title = title
        self.total = total
        self.unit = unit
        self.enabled = enabled and total > 0
        self.stream = stream or sys.stdout
        self._bar = None
        self._next_line = 0

    def __enter__(self) -> Progress:
        if not self.enabled:
            return self
        from rich.console import Console

        console = Console(file=self.stream)
        if console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.title, total=self.total, stats=self.unit)
        else:
            self._step = max(1, math.ceil(self.total / 10))
            self._next_line = self._step
        return self

    def update(self, done: int, stats: str = "") -> None:
        """``done`` of ``total`` units are finished; ``stats`` follows the count."""
        if not self.enabled:
            return
        stats = " ".join(s for s in (self.unit, stats) if s)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, stats=stats)
        elif done >= self._next_line or done == self.total:
            width = len(str(self.total))
            print(f"{self.title}  {done:>{width}}/{self.total}  {stats}".rstrip(),
                  file=self.stream, flush=True)
            self._next_line = (done // self._step + 1) * self._step

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


class EpochProgress(Progress):
    """A pass over batches: ``p.update(done, loss, acc, img_per_s)``."""

    def update(self, done: int, loss: float, acc: float, img_per_s: float) -> None:
        super().update(done, f"loss {loss:.4f}  acc {acc:.4f}  {img_per_s:.0f} img/s")
