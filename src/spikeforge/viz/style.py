"""Shared look of every figure: size, DPI, colours, and saving without pyplot.

Figures are plain :class:`matplotlib.figure.Figure` objects on an Agg canvas (no pyplot, no GUI
backend, nothing global is switched), laid out with the constrained layout so labels are never
clipped. A figure of ``(w, h)`` inches is saved as exactly ``round(w·DPI) × round(h·DPI)`` pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..fileio import replacing

DPI = 100
ON_COLOUR = (0.85, 0.15, 0.10)       # ON events (brightness up): red
OFF_COLOUR = (0.10, 0.35, 0.90)      # OFF events (brightness down): blue
WRONG_COLOUR = "#d62728"
RIGHT_COLOUR = "#2ca02c"
TRAIN_COLOUR = "#1f77b4"
TEST_COLOUR = "#ff7f0e"
HIGHLIGHT_COLOUR = "#e6550d"    # the predicted / leading output neuron
MEMBRANE_CMAP = "viridis"            # membrane of one sign
SIGNED_CMAP = "RdBu_r"               # membrane of both signs, centred on 0


def figure(width: float, height: float) -> Figure:
    """A new ``width × height`` inch figure with constrained layout on an Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def pixel_size(fig: Figure) -> tuple[int, int]:
    """``(width, height)`` in pixels of ``fig`` once saved by :func:`save`."""
    w, h = fig.get_size_inches()
    return round(w * DPI), round(h * DPI)


def save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` (PNG by extension, parents created) at :data:`DPI`, replacing
    any old file at once (:func:`spikeforge.fileio.replacing`; raises
    :class:`~spikeforge.errors.WriteError` when it cannot be written)."""
    path = Path(path)
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=DPI, facecolor="white")
    return path


def class_names(classes: Sequence[str] | None, n: int) -> list[str]:
    """Short tick labels for ``n`` classes: ``"7 - seven"`` → ``"7"``; indices when unnamed."""
    if classes is None:
        return [str(k) for k in range(n)]
    if len(classes) != n:
        raise ValueError(f"{len(classes)} class names for {n} classes")
    return [str(c).split(" - ")[0] for c in classes]
