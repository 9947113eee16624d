"""Event-camera figures: ON/OFF event frames over time, and the output spike count as a GIF.

Frames follow Tonic's ``ToFrame`` layout, ``[T, 2, H, W]`` event counts with channel = polarity
(0 = OFF, 1 = ON), row = y, column = x. A frame is drawn on black with ON events in red and OFF
events in blue, each channel scaled by ``min(count / c, 1)`` where ``c`` is the 99th percentile of
the figure's non-zero counts (so a single event stays visible next to a hot pixel).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.animation import PillowWriter
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Patch

from ..fileio import replacing
from . import style
from .arrays import to_numpy


class EventGrid(NamedTuple):
    """``counts [K, 2, H, W]``: the events summed in each panel's time slice."""

    path: Path
    figure: Figure
    counts: np.ndarray
    images: list[AxesImage]
    bounds: list[tuple[int, int]]


class SpikeCountAnimation(NamedTuple):
    """Frame ``k`` shows ``counts[k]`` = output spikes summed over steps ``0 .. times[k]``."""

    path: Path
    times: np.ndarray
    counts: np.ndarray


def events_to_frames(events: np.ndarray, bins: int,
                     sensor_size: tuple[int, int] = (34, 34)) -> np.ndarray:
    """Structured events (fields x, y, t, p) → counts ``[bins, 2, H, W]`` (``sensor_size`` is
    (W, H)) over ``bins`` equal slices of ``[t_min, t_max]``; polarity ``p > 0`` is ON."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    width, height = sensor_size
    frames = np.zeros((bins, 2, height, width), dtype=np.int64)
    if len(events) == 0:
        return frames
    t = events["t"].astype(np.float64)
    span = t.max() - t.min()
    index = np.zeros(len(t), dtype=np.int64) if span == 0 else \
        np.minimum(((t - t.min()) / span * bins).astype(np.int64), bins - 1)
    np.add.at(frames, (index, (events["p"] > 0).astype(np.int64), events["y"], events["x"]), 1)
    return frames


def _scale(counts: np.ndarray) -> float:
    nonzero = counts[counts > 0]
    return max(float(np.percentile(nonzero, 99)), 1.0) if nonzero.size else 1.0


def polarity_rgb(counts: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Counts ``[2, H, W]`` (OFF, ON) → RGB ``[H, W, 3]`` in [0, 1]: black, ON red, OFF blue."""
    counts = to_numpy(counts, "counts", 3)
    if counts.shape[0] != 2:
        raise ValueError(f"counts must be [2, H, W] (OFF, ON), got shape {counts.shape}")
    scale = _scale(counts) if scale is None else scale
    off, on = np.minimum(counts / scale, 1.0)
    rgb = on[..., None] * np.asarray(style.ON_COLOUR) + off[..., None] * np.asarray(
        style.OFF_COLOUR)
    return np.clip(rgb, 0.0, 1.0)


def polarity_legend(fig: Figure) -> None:
    """ON/OFF colour key below the figure's panels."""
    fig.legend(handles=[Patch(color=style.ON_COLOUR, label="ON events"),
                        Patch(color=style.OFF_COLOUR, label="OFF events")],
               loc="outside lower center", ncol=2, frameon=False)


def event_grid(frames, path: str | os.PathLike, panels: int = 10, columns: int = 5,
               time_window_us: float | None = None,
               title: str = "Event frames over time") -> EventGrid:
    """Frames ``[T, 2, H, W]`` summed over ``panels`` consecutive slices of time (``T`` split as
    evenly as possible), drawn in a grid; with ``time_window_us`` the panels are labelled in ms."""
    frames = to_numpy(frames, "frames", 4)
    steps = frames.shape[0]
    if frames.shape[1] != 2:
        raise ValueError(f"frames must be [T, 2, H, W], got shape {frames.shape}")
    panels = max(1, min(panels, steps))
    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    chunks = np.array_split(np.arange(steps), panels)
    counts = np.stack([frames[c].sum(0) for c in chunks])
    bounds = [(int(c[0]), int(c[-1]) + 1) for c in chunks]
    scale = _scale(counts)
    fig = style.figure(1.6 * columns + 0.4, 1.75 * rows + 0.9)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    images = []
    for k, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= panels:
            ax.set_axis_off()
            continue
        images.append(ax.imshow(polarity_rgb(counts[k], scale), interpolation="nearest"))
        start, stop = bounds[k]
        if time_window_us is None:
            ax.set_title(f"steps {start}-{stop - 1}", fontsize=8)
        else:
            ax.set_title(f"{start * time_window_us / 1e3:g}-{stop * time_window_us / 1e3:g} ms",
                         fontsize=8)
    fig.suptitle(f"{title} ({steps} frames, {int(frames.sum())} events)")
    polarity_legend(fig)
    return EventGrid(style.save(fig, path), fig, counts, images, bounds)


def frame_times(steps: int, stride: int) -> np.ndarray:
    """Last step shown by each GIF frame: ``stride-1, 2·stride-1, ...``, always ending at
    ``steps-1``; ``ceil(steps / stride)`` frames."""
    if steps < 1 or stride < 1:
        raise ValueError(f"steps and stride must be >= 1, got {steps}, {stride}")
    return np.minimum(np.arange(1, math.ceil(steps / stride) + 1) * stride, steps) - 1


def spike_count_gif(spikes, path: str | os.PathLike, stride: int = 1, fps: float = 10.0,
                    classes: Sequence[str] | None = None, label: int | None = None,
                    title: str = "Cumulative output spikes") -> SpikeCountAnimation:
    """Spikes ``[T, C]`` → animated bar chart of each output neuron's spike count so far, one
    frame per ``stride`` steps (see :func:`frame_times`), written by Pillow."""
    spikes = to_numpy(spikes, "spikes", 2)
    steps, n = spikes.shape
    times = frame_times(steps, stride)
    counts = np.cumsum(spikes, axis=0)[times]
    names = style.class_names(classes, n)
    fig = style.figure(6.0, 3.6)
    ax = fig.add_subplot()
    bars = ax.bar(range(n), counts[0], color="0.55")
    ax.set_xticks(range(n), names, fontsize=8 if max(len(s) for s in names) < 4 else 6)
    ax.set_ylim(0, max(float(counts[-1].max()), 1.0) * 1.1)
    ax.set_xlabel("output neuron (class)")
    ax.set_ylabel("spike count")
    if label is not None:
        ax.get_xticklabels()[label].set_fontweight("bold")
    writer = PillowWriter(fps=fps)
    path = Path(path)
    with replacing(path) as tmp, writer.saving(fig, tmp, style.DPI):
        for t, row in zip(times, counts, strict=True):
            leader = int(row.argmax()) if row.max() > 0 else -1
            for k, bar in enumerate(bars):
                bar.set_height(row[k])
                bar.set_color(style.HIGHLIGHT_COLOUR if k == leader else "0.55")
            ax.set_title(f"{title}: step {t + 1} of {steps}"
                         + (f" (label {names[label]})" if label is not None else ""))
            writer.grab_frame()
    return SpikeCountAnimation(path, times, counts)
