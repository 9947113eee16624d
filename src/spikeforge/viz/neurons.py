"""What the neurons did: membrane heatmap, spike raster, mean firing rate per layer.

Inputs are one sample's recordings, time first: membrane ``v [T, N]`` and spikes ``s [T, N]``
(as a neuron's ``v_seq[:, b]`` / ``s_seq[:, b]`` after a recorded forward), and for the layer
figure a mapping ``layer name → mean firing rate`` (spikes per neuron per time step, in [0, 1]).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.colorbar import Colorbar
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator

from . import style
from .arrays import to_numpy


class Heatmap(NamedTuple):
    """``image.get_array()`` is the membrane transposed: ``[N neurons, T steps]``."""

    path: Path
    figure: Figure
    image: AxesImage
    colorbar: Colorbar


class Raster(NamedTuple):
    """``marks.get_offsets()``: one ``(t, neuron)`` row per spike; ``counts [N]`` per neuron,
    each written as a number beside its bar (``count_labels[k]``)."""

    path: Path
    figure: Figure
    marks: PathCollection
    counts: np.ndarray
    count_labels: list[Text]


class LayerRates(NamedTuple):
    """One bar per layer, in the order given; ``rates`` are the bar lengths."""

    path: Path
    figure: Figure
    bars: BarContainer
    rates: np.ndarray


def _axes(ax, n: int) -> None:
    ax.set_xlabel("time step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("neuron index")
    if n <= 20:
        ax.set_yticks(range(n))
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def membrane_heatmap(v, path: str | os.PathLike, title: str = "Output layer membrane voltage",
                     threshold: float | None = None) -> Heatmap:
    """Membrane ``v [T, N]`` as an image, neurons (rows) × time steps (columns), colour bar in
    voltage units; ``threshold`` is marked on the colour bar. Voltages of both signs get a
    diverging map centred on 0 (blue below, red above), otherwise viridis."""
    v = to_numpy(v, "v", 2)
    steps, n = v.shape
    fig = style.figure(7.2, 1.6 + 0.22 * min(n, 20))
    ax = fig.add_subplot()
    if v.min() < 0 < v.max():
        limit = float(np.abs(v).max())
        colours = {"cmap": style.SIGNED_CMAP, "vmin": -limit, "vmax": limit}
    else:
        colours = {"cmap": style.MEMBRANE_CMAP}
    image = ax.imshow(v.T, aspect="auto", origin="lower", interpolation="nearest",
                      extent=(-0.5, steps - 0.5, -0.5, n - 0.5), **colours)
    _axes(ax, n)
    ax.set_title(title)
    colorbar = fig.colorbar(image, ax=ax, pad=0.01)
    colorbar.set_label("membrane voltage V")
    if threshold is not None and v.min() <= threshold <= v.max():
        colorbar.ax.axhline(threshold, color="black", linewidth=2)
        colorbar.set_label(f"membrane voltage V (black line: threshold {threshold:g})")
    return Heatmap(style.save(fig, path), fig, image, colorbar)


def spike_raster(s, path: str | os.PathLike, title: str = "Output layer spikes",
                 highlight: int | None = None) -> Raster:
    """Spikes ``s [T, N]`` (0/1) as a raster, one mark per spike at (time step, neuron), with the
    spike count of each neuron beside it as a bar and as a number (whole-number ticks); neuron
    ``highlight`` (e.g. the prediction) in colour."""
    s = to_numpy(s, "s", 2)
    steps, n = s.shape
    t, idx = np.nonzero(s)
    counts = s.sum(0)
    fig = style.figure(7.2, 1.6 + 0.22 * min(n, 20))
    ax, side = fig.subplots(1, 2, sharey=True, width_ratios=(5, 1))
    colours = np.where(idx == highlight, style.HIGHLIGHT_COLOUR, "black") if highlight is not None \
        else "black"
    marks = ax.scatter(t, idx, marker="|", s=60 if n <= 20 else 12, c=colours, linewidths=1.2)
    ax.set_xlim(-0.5, steps - 0.5)
    ax.set_ylim(-0.5, n - 0.5)
    _axes(ax, n)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.2)
    bar_colours = [style.HIGHLIGHT_COLOUR if k == highlight else "0.4" for k in range(n)]
    side.barh(range(n), counts, color=bar_colours, height=0.7)
    top = max(float(counts.max()), 1.0)
    side.set_xlim(0, top * 1.45)  # room for the number after the longest bar
    labels = [side.text(float(c) + top * 0.05, k, f"{int(c)}", va="center",
                        fontsize=8 if n <= 20 else 5) for k, c in enumerate(counts)]
    if len(t) == 0:
        ax.text(0.5, 0.5, "no spikes", transform=ax.transAxes, ha="center", va="center",
                color="0.4")
    side.set_xlabel("spikes")
    side.set_title("count")
    side.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
    return Raster(style.save(fig, path), fig, marks, counts, labels)


def layer_rates(rates: Mapping[str, float], path: str | os.PathLike,
                title: str = "Mean firing rate per spiking layer") -> LayerRates:
    """One horizontal bar per layer (first layer on top) with its rate printed beside it."""
    if not rates:
        raise ValueError("rates is empty: the model has no spiking layer")
    names = list(rates)
    values = np.asarray([float(rates[k]) for k in names])
    fig = style.figure(6.4, 1.4 + 0.45 * len(names))
    ax = fig.add_subplot()
    bars = ax.barh(range(len(names)), values, color=style.TRAIN_COLOUR, height=0.6)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    top = max(float(values.max()), 1e-3)
    ax.set_xlim(0, top * 1.25)
    for k, value in enumerate(values):
        ax.text(value + top * 0.02, k, f"{value:.3g}", va="center", fontsize=8)
    ax.set_xlabel("firing rate (spikes per neuron per time step)")
    ax.set_title(title)
    return LayerRates(style.save(fig, path), fig, bars, values)
