"""The input the network saw: a grey image, or N-MNIST event frames summed over time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from . import style
from .arrays import to_numpy
from .events import polarity_legend, polarity_rgb


class Picture(NamedTuple):
    """``image.get_array()`` is the drawn image: grey ``[H, W]`` or RGB ``[H, W, 3]``."""

    path: Path
    figure: Figure
    image: AxesImage


def grey_image(x) -> np.ndarray:
    """``[H, W]`` or ``[1, H, W]`` → ``[H, W]``."""
    x = to_numpy(x, "image", (2, 3))
    if x.ndim == 3:
        if x.shape[0] != 1:
            raise ValueError(f"image must be [H, W] or [1, H, W], got shape {x.shape}")
        x = x[0]
    return x


def input_image(x, path: str | os.PathLike, title: str = "Input") -> Picture:
    """A static image ``[H, W]`` / ``[1, H, W]`` in [0, 1] with an intensity colour bar, or event
    frames ``[T, 2, H, W]`` summed over T with ON in red and OFF in blue."""
    arr = to_numpy(x, "x", (2, 3, 4))
    fig = style.figure(4.2, 3.6)
    ax = fig.add_subplot()
    if arr.ndim == 4:
        if arr.shape[1] != 2:
            raise ValueError(f"frames must be [T, 2, H, W], got shape {arr.shape}")
        image = ax.imshow(polarity_rgb(arr.sum(0)), interpolation="nearest")
        ax.set_title(f"{title}: {int(arr.sum())} events in {arr.shape[0]} frames")
        polarity_legend(fig)
    else:
        image = ax.imshow(grey_image(arr), cmap="gray", vmin=0.0, vmax=1.0,
                          interpolation="nearest")
        fig.colorbar(image, ax=ax, pad=0.02).set_label("pixel intensity")
        ax.set_title(title)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    return Picture(style.save(fig, path), fig, image)
