"""A grid of test samples with their true and predicted labels; wrong ones framed in red."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from . import style
from .arrays import to_numpy


class PredictionGrid(NamedTuple):
    """``axes[k]`` shows sample ``k``; ``wrong`` lists the k whose prediction is not the label."""

    path: Path
    figure: Figure
    axes: list[Axes]
    wrong: list[int]


def prediction_grid(images, labels: Sequence[int], predictions: Sequence[int],
                    path: str | os.PathLike, classes: Sequence[str] | None = None,
                    columns: int = 5, title: str = "Test predictions") -> PredictionGrid:
    """Images ``[N, H, W]`` / ``[N, 1, H, W]`` (grey, [0, 1]) or ``[N, H, W, 3]`` (RGB), one panel
    each titled with its label and prediction; a wrong prediction gets a red title and frame."""
    arr = to_numpy(images, "images", (3, 4))
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 4 and arr.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W], [N, 1, H, W] or [N, H, W, 3], "
                         f"got shape {arr.shape}")
    labels, predictions = np.asarray(labels).ravel(), np.asarray(predictions).ravel()
    n = len(arr)
    if len(labels) != n or len(predictions) != n:
        raise ValueError(f"{n} images but {len(labels)} labels and {len(predictions)} predictions")
    count = len(classes) if classes is not None else int(max(labels.max(), predictions.max())) + 1
    names = style.class_names(classes, count)
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    fig = style.figure(1.5 * columns + 0.3, 1.75 * rows + 0.5)
    axes = list(fig.subplots(rows, columns, squeeze=False).ravel())
    wrong = []
    for k, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.set_axis_off()
            continue
        ax.imshow(arr[k], cmap="gray" if arr.ndim == 3 else None, vmin=0.0, vmax=1.0,
                  interpolation="nearest")
        y, p = int(labels[k]), int(predictions[k])
        ok = y == p
        if not ok:
            wrong.append(k)
        ax.set_title(f"true {names[y]}\npred {names[p]}", fontsize=8,
                     color="black" if ok else style.WRONG_COLOUR,
                     fontweight="normal" if ok else "bold")
        for spine in ax.spines.values():
            spine.set_color("0.6" if ok else style.WRONG_COLOUR)
            spine.set_linewidth(0.8 if ok else 3.0)
    fig.suptitle(f"{title}: {n - len(wrong)}/{n} correct (wrong ones in red)")
    return PredictionGrid(style.save(fig, path), fig, axes[:n], wrong)
