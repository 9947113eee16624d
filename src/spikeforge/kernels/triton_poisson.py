"""The Poisson rate code of :mod:`.poisson` as a Triton kernel: the same spikes on a GPU.

``encode(p, steps, seed, dtype)`` draws exactly what :func:`spikeforge.kernels.poisson.encode`
draws on the CPU for the same seed (``poisson_kernels.cpp``): the K pixels with p > 0 in flat
order, pixel k at step t firing when the 16-bit lane k mod 4 of SplitMix64(seed + (t·⌈K/4⌉ +
k/4 + 1)·φ) is below round(p·2^16). The draw is a pure function of (seed, t, k), so a run
reproduces across devices; one program draws a block of pixels at one step (each 64-bit draw
is computed by its four pixels' lanes, cheaper than sharing it).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .poisson import _thresholds

#: Pixels per program.
BLOCK = 1024


@triton.jit
def _splitmix64(z):
    """SplitMix64's output function (Steele, Lea, Flood 2014), on uint64."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    return z ^ (z >> 31)


@triton.jit(do_not_specialize=["K", "N", "seed"])
def _encode(idx_ptr, q_ptr, out_ptr, K, N, seed, BLOCK: tl.constexpr):
    t = tl.program_id(1)
    k = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = k < K
    words = ((K + 3) // 4).to(tl.uint64)
    counter = t.to(tl.uint64) * words + (k // 4).to(tl.uint64) + 1
    bits = _splitmix64(seed.to(tl.uint64) + counter * 0x9E3779B97F4A7C15)
    r = ((bits >> (16 * (k % 4)).to(tl.uint64)) & 0xFFFF).to(tl.int32)
    q = tl.load(q_ptr + k, mask=mask, other=0)
    pixel = tl.load(idx_ptr + k, mask=mask, other=0)
    spike = tl.where(r < q, 1.0, 0.0)
    tl.store(out_ptr + t.to(tl.int64) * N + pixel, spike.to(out_ptr.dtype.element_ty), mask=mask)


def encode(p: Tensor, steps: int, seed: int, dtype: torch.dtype) -> Tensor:
    """Spikes ``[T, *p.shape]`` in ``dtype`` with P(S=1) = p (16-bit resolution), drawn only
    where p > 0, on ``p``'s device; ``seed`` in [0, 2^63)."""
    idx, q = _thresholds(p)
    out = torch.zeros((steps, *p.shape), dtype=dtype, device=p.device)
    k = idx.numel()
    if k:
        _encode[(triton.cdiv(k, BLOCK), steps)](idx, q, out, k, p.numel(), seed, BLOCK=BLOCK)
    return out
