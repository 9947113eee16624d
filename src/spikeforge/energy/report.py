"""The energy and activity report of a spiking network: :func:`report` and :class:`Report`.

All figures are per sample (averaged over the samples counted): firing rates in spikes per
neuron per time step, operations as counts, energies in picojoules with
``E = e_mac_pj · MACs + e_ac_pj · ACs`` (:mod:`.costs`). What is counted and how:
:mod:`.counting`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .. import functional as SF
from .costs import COSTS_45NM, Costs
from .counting import Counter, NeuronTally, SynapseTally, display_name
from .paths import counting_forward, fast_path


@dataclass(frozen=True)
class Layer:
    """One row of the report, per sample.

    ``role``: ``"spiking"`` (a neuron layer: ``neurons``, ``steps`` (mean time steps per
    sample), ``spikes``, ``rate``, ``silent``, ``dead``),
    ``"synaptic"`` (weights fed by the layer before) or ``"recurrent"`` (a neuron layer's
    feedback weights): ``acs``, ``macs``, ``ann_macs``, ``energy_pj``.
    ``rate``: spikes per neuron per step; ``silent``: mean fraction of neurons that do not fire
    in any step of a sample; ``dead``: fraction of neurons that fired for none of the samples.
    """

    name: str
    kind: str
    role: str
    neurons: int = 0
    steps: float = 0.0
    spikes: float = 0.0
    rate: float | None = None
    silent: float | None = None
    dead: float | None = None
    acs: float = 0.0
    macs: float = 0.0
    ann_macs: float = 0.0
    energy_pj: float = 0.0


@dataclass
class Report:
    """Per-sample activity, operations and energy of a network over ``samples`` samples.

    ``layers`` in the order they ran; ``accuracy`` (fraction) over the same samples when labels
    were given; ``fast_path`` what the model's fused kernels compute (None: no fused kernels).
    """

    samples: int
    layers: list[Layer]
    costs: Costs
    accuracy: float | None = None
    fast_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def acs(self) -> float:
        return sum(layer.acs for layer in self.layers)

    @property
    def macs(self) -> float:
        return sum(layer.macs for layer in self.layers)

    @property
    def ann_macs(self) -> float:
        """Dense MACs of the same layers run once as an ANN (no T, no recurrence)."""
        return sum(layer.ann_macs for layer in self.layers)

    @property
    def energy_pj(self) -> float:
        return self.costs.energy_pj(self.macs, self.acs)

    @property
    def ann_energy_pj(self) -> float:
        return self.costs.energy_pj(self.ann_macs, 0.0)

    @property
    def steps(self) -> float:
        """Mean time steps per sample (of the longest-running spiking layer)."""
        return max((layer.steps for layer in self.layers), default=0.0)

    @property
    def rate(self) -> float:
        """Spikes per neuron per step over every spiking layer."""
        spiking = [layer for layer in self.layers if layer.role == "spiking"]
        neuron_steps = sum(layer.neurons * layer.steps for layer in spiking)
        return sum(layer.spikes for layer in spiking) / neuron_steps if neuron_steps else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready values (what ``energy.json`` holds)."""
        return {**self.extra, "samples": self.samples, "steps": self.steps,
                "accuracy": self.accuracy,
                "costs": self.costs.to_dict(), "fast_path": self.fast_path,
                "units": {"rate": "spikes per neuron per step", "ops": "per sample",
                          "energy": "pJ per sample"},
                "total": {"rate": self.rate, "acs": self.acs, "macs": self.macs,
                          "ann_macs": self.ann_macs, "energy_pj": self.energy_pj,
                          "ann_energy_pj": self.ann_energy_pj},
                "layers": [asdict(layer) for layer in self.layers]}


def _neuron_row(t: NeuronTally) -> Layer:
    n = t.samples
    dead = 1.0 - float(t.fired.double().mean()) if t.fired is not None else None
    return Layer(display_name(t.name), t.kind, "spiking", neurons=t.neurons,
                 steps=t.neuron_steps / (t.neurons * n), spikes=t.spikes / n,
                 rate=t.spikes / t.neuron_steps, silent=t.silent / n,
                 dead=dead)


def _synapse_row(t: SynapseTally, samples: int, costs: Costs) -> Layer:
    acs, macs = t.acs / samples, t.macs / samples
    return Layer(display_name(t.name), t.kind, "recurrent" if t.recurrent else "synaptic",
                 acs=acs, macs=macs, ann_macs=t.ann_macs, energy_pj=costs.energy_pj(macs, acs))


def _split(batch: Any) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, (tuple, list)):
        return batch[0], batch[1] if len(batch) > 1 else None
    return batch, None


def _spike_count_class(out: Any) -> Tensor:
    return SF.predict(out[0] if isinstance(out, tuple) else out)


def report(model: nn.Module, batches: Iterable[Tensor | tuple[Tensor, Tensor]],
           costs: Costs = COSTS_45NM, generator: torch.Generator | None = None,
           predict: Callable[[Any], Tensor] = _spike_count_class) -> Report:
    """Run ``model`` on ``batches`` and report, per sample, each layer's firing rate and silent
    neurons, synaptic operations (ACs from spikes, MACs from real values), the dense MACs of
    the same net as an ANN, and the energy with ``costs`` (default: 45 nm, Horowitz 2014).

    ``batches``: model inputs (``[T, B, ...]`` or ``[B, ...]``, as the model takes them;
    images for an ``FcLif``, encoded with ``generator``), or ``(input, labels [B])`` pairs, which
    add the accuracy of ``predict(model output) -> classes [B]`` (default: the most spikes).
    The model is put in eval mode and left there. Raises ``ValueError`` for no batches, or a
    model whose layers cannot be counted (see :class:`.counting.Counter`).
    """
    model.eval()
    counter, correct, labelled = Counter(model), 0, 0
    with counter:
        for batch in batches:
            x, y = _split(batch)
            out = counter.run(lambda x=x: counting_forward(model, x, generator))
            if y is not None:
                correct += int((predict(out).cpu() == y.cpu()).sum())
                labelled += y.numel()
    if counter.samples == 0:
        raise ValueError("no batches to count")
    layers = []
    for name in counter.order:
        if name in counter.synapses:
            layers.append(_synapse_row(counter.synapses[name], counter.samples, costs))
        if name in counter.neurons:
            layers.append(_neuron_row(counter.neurons[name]))
            feedback = counter.synapses.get(f"{name}.recurrent")
            if feedback is not None:
                layers.append(_synapse_row(feedback, counter.samples, costs))
    return Report(counter.samples, layers, costs,
                  correct / labelled if labelled else None, fast_path(model))
