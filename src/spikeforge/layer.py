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


def channels_last(x: Tensor) -> Tensor:
    """``x`` [.., C, H, W] with its channels innermost in memory (the same values), the layout
    oneDNN's CPU convolutions are fastest in and return. A single channel is already stored so;
    only its strides change, for a convolution to see it."""
    if x.shape[-3] > 1:
        return x.movedim(-3, -1).contiguous().movedim(-1, -3)
    x = x.contiguous()
    stride = list(x.stride())
    stride[-3] = 1
    return x.as_strided(x.shape, stride)


def seq(*modules: nn.Module) -> nn.Sequential:
    """A multi-step ``nn.Sequential``: stateless layers wrapped in :class:`SeqToBatch`,
    spiking neurons (which already take ``[T, B, ...]``) left as they are."""
    from .neuron import SpikingNeuron

    return nn.Sequential(
        *(m if isinstance(m, (SpikingNeuron, SeqToBatch)) else SeqToBatch(m) for m in modules)
    )
