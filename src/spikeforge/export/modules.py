"""Layers that NIR graphs need and torch lacks: an elementwise scale and a recurrent neuron."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..neuron import SpikingNeuron


class Scale(nn.Module):
    """NIR ``Scale``: y = x ⊙ s, with ``s`` shaped like one sample."""

    def __init__(self, scale: Tensor) -> None:
        super().__init__()
        self.scale = nn.Parameter(scale.clone())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class Recurrent(SpikingNeuron):
    """A neuron fed back through ``recurrent`` one step late, the discrete reading of a NIR
    subgraph input → neuron ⇄ W → output:

        S[t] = neuron(X[t] + W(S[t−1])),  S[−1] = 0

    Input and output ``[T, B, ...]``; ``neuron`` keeps its membrane, this keeps S[t−1].
    """

    def __init__(self, neuron: SpikingNeuron, recurrent: nn.Module) -> None:
        super().__init__(neuron.surrogate, neuron.backend, False)
        self.neuron = neuron
        self.recurrent = recurrent
        self.spikes: Tensor | None = None

    def reset_state(self) -> None:
        super().reset_state()
        self.spikes = None

    def detach_state(self) -> None:
        super().detach_state()
        if self.spikes is not None:
            self.spikes = self.spikes.detach()

    def forward(self, x_seq: Tensor) -> Tensor:
        self._check_seq(x_seq)
        s = self.spikes
        if s is None or s.shape != x_seq.shape[1:]:
            s = torch.zeros_like(x_seq[0])
        out = []
        for t in range(x_seq.shape[0]):
            s = self.neuron.step(x_seq[t] + self.recurrent(s))
            out.append(s)
        self.spikes = s
        return torch.stack(out)
