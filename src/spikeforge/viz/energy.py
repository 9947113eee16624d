"""The energy report as a figure (``energy.png``): the firing rate of each spiking layer, and the
synaptic operations per sample of each layer with weights (ACs from spikes, MACs from real
values, the dense MACs of the same net as an ANN), on a log scale."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from . import style

OPS = (("acs", "ACs (spikes)", "#1f77b4"), ("macs", "MACs (real input)", "#ff7f0e"),
       ("ann_macs", "ANN MACs (one pass)", "#bbbbbb"))


class EnergyFigure(NamedTuple):
    """A saved ``energy.png``; ``rates`` and ``ops[key]`` the bars drawn."""

    path: Path
    figure: Figure
    rates: BarContainer
    ops: dict[str, BarContainer]


def energy_figure(report, path: str | os.PathLike, title: str = "") -> EnergyFigure:
    """Draw ``report`` (:class:`spikeforge.energy.Report`) to ``path``: left, spikes per neuron
    per step of each spiking layer; right, operations per sample of each synaptic layer."""
    spiking = [layer for layer in report.layers if layer.role == "spiking"]
    synaptic = [layer for layer in report.layers if layer.role != "spiking"]
    fig = style.figure(11.0, 4.2)
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.6])
    rates = left.barh(range(len(spiking)), [layer.rate for layer in spiking],
                      color=style.TRAIN_COLOUR)
    left.set_yticks(range(len(spiking)), [f"{layer.name}\n{layer.kind}" for layer in spiking])
    left.invert_yaxis()
    left.set_xlabel("firing rate (spikes per neuron per step)")
    left.set_title("activity")
    left.grid(True, axis="x", alpha=0.3)
    width = 0.8 / len(OPS)
    y = np.arange(len(synaptic))
    ops = {}
    for k, (key, label, colour) in enumerate(OPS):
        values = [max(getattr(layer, key), 0.0) for layer in synaptic]
        ops[key] = right.barh(y + (k - 1) * width, values, height=width, color=colour,
                              label=label)
    right.set_yticks(y, [f"{layer.name}\n{layer.kind}" for layer in synaptic])
    right.invert_yaxis()
    right.set_xscale("symlog", linthresh=1.0)
    largest = max((getattr(layer, key) for layer in synaptic for key, _, _ in OPS), default=0.0)
    right.set_xlim(0, max(10.0, 3 * largest))
    right.set_xlabel("operations per sample")
    right.set_title("synaptic operations")
    right.legend(loc="lower right", fontsize="small")
    right.grid(True, axis="x", alpha=0.3)
    if title:
        fig.suptitle(title)
    return EnergyFigure(style.save(fig, path), fig, rates, ops)
