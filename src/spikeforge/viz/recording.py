"""Run a loaded model once with every spiking layer recording, and keep what each layer did.

``record(loaded, x)`` does what :meth:`spikeforge.train.run.LoadedRun.forward` does (the
recipe's encoding, the same test-time random stream) but reads each neuron's ``v_seq`` /
``s_seq`` before the state is reset. The output layer is the last spiking module in
``model.modules()`` order, which for every recipe is the one producing the output spikes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .. import functional as SF
from ..neuron import SpikingNeuron


@dataclass
class LayerTrace:
    """One spiking layer's recording: membrane and spikes ``[T, B, ...]``."""

    name: str
    kind: str
    v: Tensor
    s: Tensor
    threshold: float | None = None

    @property
    def label(self) -> str:
        """``name kind [shape]``, e.g. ``net.2 LIF [10]``."""
        return f"{self.name} {self.kind} [{'x'.join(str(d) for d in self.s.shape[2:])}]"

    def rate(self, sample: int | None = None) -> float:
        """Mean firing rate (spikes per neuron per step), of one sample or of the whole batch."""
        s = self.s if sample is None else self.s[:, sample]
        return float(s.float().mean())


@dataclass
class Recording:
    """Output ``spikes`` / ``membrane`` ``[T, B, C]`` (membrane None if the model gives none),
    predictions ``[B]`` and the trace of every spiking layer in forward order."""

    spikes: Tensor
    membrane: Tensor | None
    predictions: Tensor
    layers: list[LayerTrace]

    @property
    def output(self) -> LayerTrace:
        return self.layers[-1]


def record(loaded, x: Tensor, generator: torch.Generator | None = None,
           traces: bool = True) -> Recording:
    """Forward the raw batch ``x`` (as for ``LoadedRun.forward``) with recording switched on
    (``traces=False``: output only, ``layers`` empty); ``generator`` defaults to the run's
    test-time stream, so a Poisson input matches ``spikeforge predict``."""
    model, task = loaded.model, loaded.task
    if generator is None:
        generator = loaded.generator()
    neurons = [(name, m) for name, m in model.named_modules() if isinstance(m, SpikingNeuron)]
    was = [m.record for _, m in neurons]
    SF.reset(model)
    for _, m in neurons:
        m.record = traces
    try:
        with torch.no_grad():
            out = model(task.encode(x.to(loaded.device, torch.float32), generator))
            spikes, membrane = task.outputs(out)
        layers = [LayerTrace(name, type(m).__name__, m.v_seq.cpu(), m.s_seq.cpu(),
                             getattr(m, "v_threshold", getattr(m, "threshold", None)))
                  for name, m in neurons] if traces else []
    finally:
        for (_, m), flag in zip(neurons, was, strict=True):
            m.record = flag
        SF.reset(model)
    predictions = task.predict(spikes, membrane).cpu()
    return Recording(spikes.cpu(), None if membrane is None else membrane.cpu(), predictions,
                     layers)
