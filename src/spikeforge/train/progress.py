"""Per-epoch progress: a rich progress bar on a terminal, plain lines otherwise.

Plain mode (stdout is a pipe or a file) prints one line at every tenth of the epoch::

    train 1/100   94/938  loss 0.0412  acc 0.8711  1523 img/s
"""

from __future__ import annotations

import math
import sys
from typing import TextIO


class EpochProgress:
    """``with EpochProgress(title, total) as p: p.update(done, loss, acc, img_per_s)``."""

    def __init__(self, title: str, total: int, *, enabled: bool = True,
                 stream: TextIO | None = None) -> None:
        self.title = title
        self.total = total
        self.enabled = enabled and total > 0
        self.stream = stream or sys.stdout
        self._bar = None
        self._next_line = 0

    def __enter__(self) -> EpochProgress:
        if not self.enabled:
            return self
        from rich.console import Console

        console = Console(file=self.stream)
        if console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                                 transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.title, total=self.total, stats="")
        else:
            self._step = max(1, math.ceil(self.total / 10))
            self._next_line = self._step
        return self

    def update(self, done: int, loss: float, acc: float, img_per_s: float) -> None:
        if not self.enabled:
            return
        stats = f"loss {loss:.4f}  acc {acc:.4f}  {img_per_s:.0f} img/s"
        if self._bar is not None:
            self._bar.update(self._task, completed=done, stats=stats)
        elif done >= self._next_line or done == self.total:
            width = len(str(self.total))
            print(f"{self.title}  {done:>{width}}/{self.total}  {stats}", file=self.stream,
                  flush=True)
            self._next_line = (done // self._step + 1) * self._step

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
