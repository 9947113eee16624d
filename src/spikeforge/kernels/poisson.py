"""Compiled Poisson rate code (``poisson_kernels.cpp``): the spike trains, or the first Linear
layer fed straight from the draws.

    encode(p, steps, seed, dtype)     S [T, *p.shape], P(S = 1) = p, drawn only where p > 0
    linear(p, weight, steps, seed)    I [T, B, O] = S @ Wᵀ with S = encode(p, steps, seed),
                                      differentiable w.r.t. ``weight``; S is never stored whole

Both draw the same spikes for the same seed (counter-based SplitMix64 keyed by step and pixel),
so ``linear`` equals ``encode`` followed by a Linear layer up to float summation order. The
fused form reads only the ~19 % of MNIST pixels that are nonzero and keeps the spikes as one
byte per (pixel, step) of those pixels for the backward pass, instead of a dense ``[T·B, 784]``
float matrix passed through two GEMMs.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from . import build

_P = ctypes.c_void_p
_I = ctypes.c_int64
_C = ctypes.c_int

_SIGNATURES = {
    "poisson_encode": [_P, _P, _I, _I, _I, ctypes.c_uint64, _P, _C, ctypes.c_uint32, _C],
    "poisson_linear_forward": [_P, _P, _P, _I, _I, _I, ctypes.c_uint64, _P, _I, _I, _P, _P, _C],
    "poisson_linear_backward": [_P, _P, _I, _I, _P, _P, _I, _I, _I, _P, _C],
    "poisson_linear_pixels": [_P, _I, _I, _P, _P, _P],
}

#: SIMD width (floats) the output axis is padded to.
LANES = 16


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The compiled kernels (built on first call; raises :class:`build.BuildError`)."""
    return build.bind(Path(__file__).with_name("poisson_kernels.cpp"), _SIGNATURES)


def available() -> bool:
    """Whether the library builds and loads on this machine."""
    return build.loads(library)


def _thresholds(p: Tensor) -> tuple[Tensor, Tensor]:
    """(flat indices of the pixels with p > 0, their thresholds round(p·2^16) as int32); p > 1
    is clamped to 1 (:mod:`spikeforge.encoding` warns once about values outside [0, 1])."""
    flat = p.detach().reshape(-1).float()
    idx = (flat > 0).nonzero().squeeze(1)
    q = (flat[idx].clamp(max=1.0) * 65536.0 + 0.5).to(torch.int32)
    return idx, q


def encode(p: Tensor, steps: int, seed: int, dtype: torch.dtype) -> Tensor:
    """Spikes ``[T, *p.shape]`` of ``dtype`` with P(S=1) = p (16-bit resolution), drawn only
    where p > 0. Written straight in 1-, 2- and 4-byte dtypes; others (float64, int64, complex)
    get the same spikes drawn as bytes and converted."""
    size = torch.empty((), dtype=dtype).element_size()
    if size not in (1, 2, 4) or dtype.is_complex:
        return encode(p, steps, seed, torch.uint8).to(dtype)
    idx, q = _thresholds(p)
    out = torch.empty((steps, *p.shape), dtype=dtype)
    one = torch.ones((), dtype=dtype).view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[size])
    library().poisson_encode(idx.data_ptr(), q.data_ptr(), idx.numel(), steps, p.numel(), seed,
                             out.data_ptr(), size, int(one.item()) & 0xFFFFFFFF,
                             torch.get_num_threads())
    return out


class _PoissonLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p, weight, steps, seed):
        b, f = p.shape
        o = weight.shape[0]
        op = -(-o // LANES) * LANES
        # the pixels that can fire and their thresholds, as _thresholds gives them, in one pass
        feat = torch.empty(b * f, dtype=torch.int32)
        q = torch.empty(b * f, dtype=torch.int32)
        start = torch.empty(b + 1, dtype=torch.int64)
        pixels = p.detach().float().contiguous()
        library().poisson_linear_pixels(pixels.data_ptr(), b, f, feat.data_ptr(), q.data_ptr(),
                                        start.data_ptr())
        k = int(start[-1])
        feat, q = feat[:k], q[:k]
        wt = torch.zeros(f, op, dtype=torch.float32)
        wt[:, :o] = weight.detach().t()
        out = torch.empty(steps, b, o, dtype=torch.float32)
        keep = ctx.needs_input_grad[1]
        spk = torch.empty(k, steps, dtype=torch.uint8) if keep else None
        library().poisson_linear_forward(
            feat.data_ptr(), q.data_ptr(), start.data_ptr(), b, k, steps, seed,
            wt.data_ptr(), o, op, out.data_ptr(), None if spk is None else spk.data_ptr(),
            torch.get_num_threads())
        if keep:
            ctx.save_for_backward(feat, start, spk)
            ctx.dims = (f, o, op)
        return out

    @staticmethod
    def backward(ctx, g):
        feat, start, spk = ctx.saved_tensors
        f, o, op = ctx.dims
        steps, b = g.shape[:2]
        threads = torch.get_num_threads()
        parts = torch.zeros(threads, f, op, dtype=torch.float32)
        g = g.float().contiguous()
        library().poisson_linear_backward(feat.data_ptr(), start.data_ptr(), b, steps,
                                          spk.data_ptr(), g.data_ptr(), o, op, f,
                                          parts.data_ptr(), threads)
        return None, parts.sum(0)[:, :o].t().contiguous(), None, None


def linear(p: Tensor, weight: Tensor, steps: int, seed: int) -> Tensor:
    """``I[t] = S[t] @ weightᵀ`` for the Poisson spikes ``S = encode(p, steps, seed)``.

    p: ``[B, F]`` probabilities (float, CPU); weight: ``[O, F]`` float32 → I ``[T, B, O]``
    float32. Gradient w.r.t. ``weight`` only (sampling has none w.r.t. ``p``).
    """
    return _PoissonLinear.apply(p, weight, steps, seed)
