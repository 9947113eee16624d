"""Training curves from a run's metrics rows (``metrics.jsonl``: one dict per epoch).

``accuracy_curves``: train and test accuracy (%) per epoch → ``acc.png``;
``loss_curves``: train and test loss per epoch → ``loss.png``. A missing or NaN value (a run
without a test pass) leaves a gap instead of failing. The epoch axis has whole-number ticks and
reaches half an epoch past the first and last rows, so a run of one epoch shows its points at
epoch 1 (markers large enough to see alone), not on a fractional axis.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from . import style


class Curves(NamedTuple):
    """A saved curve figure; ``lines["train"|"test"]`` hold the plotted (epoch, value) data."""

    path: Path
    figure: Figure
    lines: dict[str, Line2D]


def _column(rows: Sequence[Mapping[str, float]], key: str, scale: float = 1.0) -> np.ndarray:
    values = []
    for row in rows:
        value = row.get(key)
        values.append(math.nan if value is None else float(value) * scale)
    return np.asarray(values, dtype=np.float64)


def _curves(rows: Sequence[Mapping[str, float]], path: str | os.PathLike, key: str, scale: float,
            ylabel: str, title: str) -> Curves:
    if not rows:
        raise ValueError("no metrics rows to plot")
    epochs = _column(rows, "epoch")
    fig = style.figure(6.4, 4.0)
    ax = fig.add_subplot()
    lines = {}
    markersize = 8 if len(rows) < 3 else 4
    for split, colour in (("train", style.TRAIN_COLOUR), ("test", style.TEST_COLOUR)):
        values = _column(rows, f"{split}_{key}", scale)
        if np.isnan(values).all():
            continue
        (lines[split],) = ax.plot(epochs, values, marker="o", markersize=markersize,
                                  color=colour, label=split)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_xlim(float(np.nanmin(epochs)) - 0.5, float(np.nanmax(epochs)) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(True, alpha=0.3)
    if lines:
        ax.legend()
    return Curves(style.save(fig, path), fig, lines)


def accuracy_curves(rows: Sequence[Mapping[str, float]], path: str | os.PathLike,
                    title: str = "Accuracy") -> Curves:
    """Train/test accuracy (fractions in the rows, plotted in %) against epoch."""
    best = _column(rows, "test_acc", 100.0)
    if len(best) and not np.isnan(best).all():
        epoch = int(_column(rows, "epoch")[int(np.nanargmax(best))])
        title = f"{title} (best test {np.nanmax(best):.2f}% at epoch {epoch})"
    return _curves(rows, path, "acc", 100.0, "accuracy (%)", title)


def loss_curves(rows: Sequence[Mapping[str, float]], path: str | os.PathLike,
                title: str = "Loss", loss_name: str | None = None) -> Curves:
    """Train/test loss against epoch; ``loss_name`` (e.g. ``mse_rate``) labels the y axis."""
    ylabel = f"loss ({loss_name})" if loss_name else "loss"
    return _curves(rows, path, "loss", 1.0, ylabel, title)
