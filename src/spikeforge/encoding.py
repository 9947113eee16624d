"""Turn static images (values in [0, 1]) into spike trains ``[T, B, ...]``.

poisson: S[t] ~ Bernoulli(x) independently per pixel and step (rate coding).
direct:  X[t] = x for every t (the image fed as a current, a view, no copy).
latency: one spike per pixel at t = round((1 − x)·(T − 1)); pixels with x ≤ threshold stay silent.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_steps(steps: int) -> int:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"T (steps) must be a positive integer, got {steps}")
    return int(steps)


def poisson(x: Tensor, steps: int, generator: torch.Generator | None = None,
            dtype: torch.dtype | None = None) -> Tensor:
    """Rate code: ``[B, ...]`` in [0, 1] → spikes ``[T, B, ...]`` with P(S=1) = x."""
    steps = _check_steps(steps)
    rand = torch.rand((steps, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return (rand < x).to(dtype or x.dtype)


def direct(x: Tensor, steps: int) -> Tensor:
    """Direct code: ``[B, ...]`` → ``[T, B, ...]``, the same image at every step (expanded view)."""
    steps = _check_steps(steps)
    return x.unsqueeze(0).expand(steps, *x.shape)


def latency(x: Tensor, steps: int, threshold: float = 0.0) -> Tensor:
    """Time-to-first-spike code: brighter pixels fire earlier, each pixel at most once."""
    steps = _check_steps(steps)
    t_fire = ((1 - x.clamp(0, 1)) * (steps - 1)).round().long()
    t = torch.arange(steps, device=x.device).view(-1, *([1] * x.dim()))
    return ((t == t_fire) & (x > threshold)).to(x.dtype)


ENCODERS = {"poisson": poisson, "direct": direct, "latency": latency}
