"""Turn static images (values in [0, 1]) into spike trains ``[T, B, ...]``.

poisson: S[t] ~ Bernoulli(x) independently per pixel and step (rate coding); x outside [0, 1]
         (e.g. images normalised by a mean and std) is clamped, with one warning per process
         naming the range seen.
direct:  X[t] = x for every t (the image fed as a current, a view, no copy).
latency: one spike per pixel at t = round((1 − x)·(T − 1)); pixels with x ≤ threshold stay silent.
"""

from __future__ import annotations

import warnings
from types import ModuleType

import torch
from torch import Tensor

from .errors import SpikeforgeWarning


def _check_steps(steps: int) -> int:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"T (steps) must be a positive integer, got {steps}")
    return int(steps)


_range_warned = False  # one warning per process: a training loop sees the same data every batch


def _check_unit_range(x: Tensor) -> None:
    """Warn (once per process) when ``x`` holds values outside [0, 1]: the encoder reads them as
    probabilities clamped to [0, 1]. One ``aminmax`` over the batch, skipped after the warning."""
    global _range_warned
    if _range_warned or x.numel() == 0 or x.dtype == torch.bool:
        return
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if lo >= 0 and hi <= 1:
        return
    _range_warned = True
    warnings.warn(f"the Poisson encoder got inputs in [{lo:.4g}, {hi:.4g}], outside [0, 1]; they "
                  "are clamped to [0, 1] as spike probabilities (feed pixel/255, not images "
                  "normalised by a mean and std).", SpikeforgeWarning, stacklevel=3)


def poisson(x: Tensor, steps: int, generator: torch.Generator | None = None,
            dtype: torch.dtype | None = None) -> Tensor:
    """Rate code: ``[B, ...]`` in [0, 1] → spikes ``[T, B, ...]`` with P(S=1) = x.

    Random numbers are drawn only for pixels with x > 0 (the others never fire), as 16-bit
    uniforms r with S = [r < round(x·2^16)], so P(S=1) is within 2^-17 of x, x ≥ 1 always fires
    and x ≤ 0 never (values outside [0, 1] warn once, see :func:`_check_unit_range`);
    independent per pixel and step. On the CPU one compiled pass writes the spikes straight into
    ``dtype`` (default: x's), seeded from ``generator`` (or torch's global generator); on a CUDA
    device with Triton installed one Triton kernel draws the same spikes for the same seed
    (:mod:`spikeforge.kernels.triton_poisson`); elsewhere an equivalent draw (other numbers) runs
    as torch ops on ``x``'s device.
    """
    steps = _check_steps(steps)
    _check_unit_range(x)
    dtype = dtype or x.dtype
    if x.device.type == "cpu":
        out = _poisson_compiled(x, steps, generator, dtype)
        if out is not None:
            return out
    if x.device.type == "cuda" and _triton() is not None:
        return _triton().encode(x, steps, seed(generator), dtype)
    return _poisson_torch(x, steps, generator, dtype)


def seed(generator: torch.Generator | None) -> int:
    """A 63-bit seed for the counter-based draws, taken from ``generator`` (or torch's global
    CPU generator), on the generator's device."""
    device = "cpu" if generator is None else generator.device
    return torch.empty((), dtype=torch.int64, device=device).random_(generator=generator).item()


def _triton() -> ModuleType | None:
    """:mod:`spikeforge.kernels.triton_poisson`, or None where Triton does not import."""
    try:
        from .kernels import triton_poisson
    except ImportError:
        return None
    return triton_poisson


def _compiled() -> ModuleType | None:
    from .kernels import poisson as compiled

    return compiled if compiled.available() else None


def _poisson_compiled(x: Tensor, steps: int, generator: torch.Generator | None,
                      dtype: torch.dtype) -> Tensor | None:
    compiled = _compiled()
    if compiled is None:
        return None
    return compiled.encode(x, steps, seed(generator), dtype)


def _poisson_torch(x: Tensor, steps: int, generator: torch.Generator | None,
                   dtype: torch.dtype) -> Tensor:
    flat = x.detach().reshape(-1)
    idx = (flat > 0).nonzero().squeeze(1)
    q = (flat[idx].float().clamp(max=1.0) * 65536.0 + 0.5).to(torch.int32)
    r = torch.randint(0, 65536, (steps, idx.numel()), generator=generator, device=x.device,
                      dtype=torch.int32)
    out = torch.zeros((steps, flat.numel()), dtype=dtype, device=x.device)
    out[:, idx] = (r < q).to(dtype)
    return out.view(steps, *x.shape)


def poisson_linear(x: Tensor, weight: Tensor, steps: int,
                   generator: torch.Generator | None = None) -> Tensor:
    """``F.linear(poisson(x, steps, generator), weight)``: images ``[B, F]`` in [0, 1] and
    weights ``[O, F]`` → input currents ``[T, B, O]``, with the same spikes as :func:`poisson`
    draws from the same generator state.

    On the CPU (float32 weights, no float64) the draws feed the Linear directly
    (:func:`spikeforge.kernels.poisson.linear`): only nonzero pixels are read, and the spike
    matrix is never built; elsewhere this is the two steps above. Differentiable w.r.t.
    ``weight``.
    """
    steps = _check_steps(steps)
    _check_unit_range(x)
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"x must be [B, F] and weight [O, F], got {tuple(x.shape)} and "
                         f"{tuple(weight.shape)}")
    compiled = (_compiled() if x.device.type == "cpu" and weight.device.type == "cpu"
                and weight.dtype == torch.float32 else None)
    if compiled is None:
        spikes = poisson(x, steps, generator, dtype=torch.uint8)
        return torch.nn.functional.linear(spikes.to(weight.dtype), weight)
    return compiled.linear(x, weight, steps, seed(generator))


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
