"""Run stateless torch layers over time by folding T into the batch.

``SeqToBatch(m)(x_seq)``: ``[T, B, ...]`` → reshape ``[T·B, ...]`` → ``m`` → ``[T, B, ...']``.
One call of ``m`` for the whole sequence; BatchNorm sees statistics over T·B, as in the
reference multi-step networks.
"""

from __future__ import annotations

from torch import Tensor, nn


class SeqToBatch(nn.Module):
    """Apply a stateless ``module`` to every time step of ``[T, B, ...]`` in one call."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x_seq: Tensor) -> Tensor:
        if x_seq.dim() < 2:
            raise ValueError(f"x_seq must be [T, B, ...], got shape {tuple(x_seq.shape)}")
        t, b = x_seq.shape[:2]
        y = self.module(x_seq.reshape(t * b, *x_seq.shape[2:]))
        return y.reshape(t, b, *y.shape[1:])


def seq(*modules: nn.Module) -> nn.Sequential:
    """A multi-step ``nn.Sequential``: stateless layers wrapped in :class:`SeqToBatch`,
    spiking neurons (which already take ``[T, B, ...]``) left as they are."""
    from .neuron import SpikingNeuron

    return nn.Sequential(
        *(m if isinstance(m, (SpikingNeuron, SeqToBatch)) else SeqToBatch(m) for m in modules)
    )
