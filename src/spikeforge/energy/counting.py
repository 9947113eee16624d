"""Count what a spiking network does during forward passes: the spikes of every spiking layer
and the synaptic operations of every layer with weights.

:class:`Counter` hooks a model (any ``nn.Module`` built from Linear/Conv layers, pooling and
:class:`~spikeforge.neuron.SpikingNeuron` modules, e.g. a :func:`spikeforge.layer.seq`) and
switches neuron recording on. For every call of a synaptic layer (:data:`.fanout.SYNAPTIC`) it
reads the layer's input ``x`` ``[N, ...]`` (N = B, or T·B when the layer runs at every step)
and counts, with ``fanout`` the taps each input element drives (:func:`.fanout.fanout`):

- spikes: ``x`` holds non-negative integers (binary spikes, or N-MNIST event counts):
  ``ACs += Σ x · fanout``, one accumulate per spike and synapse it reaches;
- average-pooled spikes (the output of an AvgPool of spikes, unchanged up to the layer):
  counted as the spikes they average, ``ACs += Σ (x · k) · fanout`` with k the pool's
  divisor: the pool folded into the weights (w/k), as event-driven hardware runs it;
- real values (a direct-encoded image): ``MACs += N · Σ fanout``, the dense layer, zeros and all
  (an input that holds only non-negative integers, e.g. a binary image, counts as spikes).
  A layer that runs once for all T steps (csnn's first Conv, rleaky's encoder) sees N = B and
  is counted once, as the model computes it;
- the ANN it would be: ``Σ fanout`` MACs per sample, one pass, no T (recurrent weights none).

A recurrent neuron (an attribute ``recurrent``: RLeaky's ``Linear(n, n)``, one-to-one scale or
Conv2d) feeds its spikes S[t−1] back through those weights: ``ACs += Σ_{t<T−1} S[t] · fanout``
(S[−1] = 0 after a reset). Biases, BatchNorm (foldable into the weights) and the neurons' own
state updates are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .. import functional as SF
from ..neuron import SpikingNeuron
from .fanout import SYNAPTIC, fanout

#: Average pools (and their number of spatial axes) whose pooled spikes are unfolded.
_AVG_POOL_DIMS = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}



@dataclass
class SynapseTally:
    """Operations of one synaptic layer, summed over every sample seen."""

    name: str
    kind: str
    recurrent: bool = False
    acs: float = 0.0
    macs: float = 0.0
    ann_macs: float = 0.0       # per sample, one pass
    calls: int = 0


@dataclass
class NeuronTally:
    """Spikes of one spiking layer, summed over every sample seen."""

    name: str
    kind: str
    neurons: int = 0
    spikes: float = 0.0
    neuron_steps: float = 0.0
    silent: float = 0.0          # Σ over samples of the fraction of neurons silent for all T
    samples: int = 0
    fired: Tensor | None = field(default=None, repr=False)   # bool [neurons]: fired on any sample


def display_name(name: str) -> str:
    """``body.2.module`` → ``body.2``: the :class:`~spikeforge.layer.SeqToBatch` wrapper dropped."""
    return ".".join(part for part in name.split(".") if part != "module") or "(model)"


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return f"Linear {module.in_features}→{module.out_features}"
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = "×".join(str(k) for k in module.kernel_size)
        return f"{type(module).__name__} {module.in_channels}→{module.out_channels} {kernel}"
    return type(module).__name__


def _is_counts(x: Tensor) -> bool:
    """Whether every element of ``x`` is a non-negative integer (spikes or event counts)."""
    if not x.is_floating_point():
        return bool((x >= 0).all())
    return bool(((x >= 0) & (x == x.floor())).all())


def _divisor(pool: nn.Module) -> float:
    """What an average pool divides its window sum by (no padding): the window's size, or
    ``divisor_override``."""
    if getattr(pool, "divisor_override", None):
        return float(pool.divisor_override)
    dims = _AVG_POOL_DIMS[type(pool)]
    size = pool.kernel_size
    return float(math.prod((size,) * dims if isinstance(size, int) else size))


class Counter:
    """Hooks ``model`` while used as a context manager; :meth:`run` one forward pass per batch.

    ``synapses`` and ``neurons`` hold the tallies by module name, ``order`` the names in the
    order the layers first ran, ``samples`` the number of samples counted.

    Raises ``ValueError`` from :meth:`run` when a synaptic layer of the model never ran through
    its module (a fused kernel that reads its weights directly would go uncounted) or the model
    has no spiking layer.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.samples = 0
        self.order: list[str] = []
        self.synapses: dict[str, SynapseTally] = {}
        self.neurons: dict[str, NeuronTally] = {}
        self._neurons = [(n, m) for n, m in model.named_modules() if isinstance(m, SpikingNeuron)]
        inside = tuple(f"{n}." for n, _ in self._neurons)
        self._synaptic = [(n, m) for n, m in model.named_modules()
                          if isinstance(m, SYNAPTIC) and not n.startswith(inside)]
        self._pools = [(n, m) for n, m in model.named_modules()
                       if type(m) in _AVG_POOL_DIMS and not n.startswith(inside)]
        self._fans: dict[tuple[str, tuple[int, ...]], Tensor] = {}
        self._handles: list[Any] = []
        self._records: list[bool] = []
        self._pooled: tuple[Tensor, float] | None = None
        self._ran: set[str] = set()
        self._computing_fanout = False

    def __enter__(self) -> Counter:
        for name, m in self._synaptic:
            self._handles.append(m.register_forward_pre_hook(self._synapse_hook(name)))
        for name, m in self._neurons:
            self._handles.append(m.register_forward_pre_hook(self._seen_hook(name)))
        for _, m in self._pools:
            self._handles.append(m.register_forward_hook(self._pool_hook))
        self._records = [m.record for _, m in self._neurons]
        for _, m in self._neurons:
            m.record = True
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for (_, m), flag in zip(self._neurons, self._records, strict=True):
            m.record = flag
        SF.reset(self.model)

    def run(self, forward: Callable[[], Any]) -> Any:
        """Call ``forward()`` (one batch through the model, no grad) with the neurons reset
        before, tally its spikes, reset them again; returns what ``forward`` returned."""
        SF.reset(self.model)
        self._pooled = None
        try:
            with torch.no_grad():
                out = forward()
            self._collect()
        finally:
            SF.reset(self.model)
        missed = [display_name(n) for n, _ in self._synaptic if n not in self._ran]
        if missed:
            raise ValueError(f"layers {', '.join(missed)} did not run through their modules (a "
                             "fused kernel read their weights); run the model's layer-by-layer "
                             "path to count them")
        return out

    def _seen(self, name: str) -> None:
        if name not in self.order:
            self.order.append(name)

    def _seen_hook(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            self._seen(name)
        return hook

    def _pool_hook(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        self._pooled = (output, _divisor(module)) if _is_counts(args[0]) else None

    def _synapse_hook(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if self._computing_fanout:
                return
            self._ran.add(name)
            self._seen(name)
            self._count(name, module, args[0], recurrent=False)
        return hook

    def _spikes_of(self, x: Tensor) -> Tensor | None:
        """``x`` as spike counts, or None when it holds real values (see the module doc)."""
        if _is_counts(x):
            return x
        if self._pooled is not None:
            pooled, divisor = self._pooled
            if pooled.numel() == x.numel() and torch.equal(pooled.reshape(-1), x.reshape(-1)):
                counts = x.double() * divisor
                rounded = counts.round()
                if bool(((counts - rounded).abs() <= 1e-3).all()):
                    return rounded
        return None

    def _count(self, name: str, module: nn.Module, x: Tensor, recurrent: bool) -> None:
        if isinstance(module, nn.modules.conv._ConvNd):
            batched = x.dim() == len(module.kernel_size) + 2
            shape = tuple(x.shape[1:]) if batched else tuple(x.shape)
        else:
            shape = (x.shape[-1],)
        rows = x.numel() // max(1, math.prod(shape))
        key = (name, shape)
        if key not in self._fans:
            self._computing_fanout = True     # fanout() calls the module: not a real call
            try:
                self._fans[key] = fanout(module, shape)
            finally:
                self._computing_fanout = False
        fan = self._fans[key]
        tally = self.synapses.get(name)
        if tally is None:
            kind = ("recurrent " if recurrent else "") + _kind(module)
            tally = self.synapses[name] = SynapseTally(name, kind, recurrent)
        tally.calls += 1
        if not recurrent:
            tally.ann_macs = float(fan.sum())
        spikes = self._spikes_of(x)
        if spikes is None:
            tally.macs += rows * float(fan.sum())
        else:
            per_element = spikes.reshape(rows, *shape).sum(0, dtype=torch.float64).cpu()
            tally.acs += float((per_element * fan).sum())

    def _collect(self) -> None:
        """Tally each neuron's recorded spikes ``s_seq`` [T, B, ...] (and its feedback)."""
        batch = None
        for name, m in self._neurons:
            s = m.s_seq
            if s is None:
                continue
            steps, b = s.shape[:2]
            batch = b if batch is None else batch
            counts = s.reshape(steps, b, -1).sum(0, dtype=torch.float64)
            tally = self.neurons.get(name)
            if tally is None:
                kind = f"{type(m).__name__} [{'×'.join(str(d) for d in s.shape[2:])}]"
                tally = self.neurons[name] = NeuronTally(name, kind, counts.shape[1])
            tally.spikes += float(counts.sum())
            tally.neuron_steps += steps * counts.numel()
            tally.silent += float((counts == 0).double().mean(1).sum())
            tally.samples += b
            fired = (counts > 0).any(0).cpu()
            tally.fired = fired if tally.fired is None else tally.fired | fired
            recurrent = getattr(m, "recurrent", None)
            if isinstance(recurrent, SYNAPTIC) and steps > 1:
                self._count(f"{name}.recurrent", recurrent, s[:-1].reshape(-1, *s.shape[2:]),
                            recurrent=True)
        if batch is None:
            raise ValueError("the model has no spiking layer that ran (no SpikingNeuron "
                             "recorded spikes); there is nothing to count")
        self.samples += batch
