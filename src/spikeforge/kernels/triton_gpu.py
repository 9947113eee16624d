"""GPU backend: the neuron time loops of :mod:`.reference` as Triton kernels (CUDA tensors).

One program owns a block of neurons and runs the whole time loop with the state in registers,
forward and backward (DESIGN §3); forward saves one tensor (H for IF/LIF, U for Leaky). Every
operation rounds on its own and divisions are IEEE (:mod:`.triton_math`), so spikes and
membranes match the reference loop bit for bit in float32. The autograd
glue is :mod:`.fused`'s, shared with the CPU backend. Imported only when the ``triton`` backend
is asked for.

Under Triton's interpreter (``TRITON_INTERPRET=1`` before this module is imported) the same
kernels run on CPU tensors: that is how the test suite checks them on machines without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..surrogate import Surrogate
from . import fused
from .triton_math import (
    IEEE,
    check_int32_indexing,
    if_lif_backward_step,
    if_lif_forward_step,
    interpreting,
    surrogate_grad,
)

#: The backend's name in :data:`spikeforge.kernels.BACKENDS`.
NAME = "triton"
#: Neurons per program.
BLOCK = 1024


def available() -> bool:
    """Whether the kernels can run: a CUDA device, or Triton's interpreter (on CPU tensors)."""
    return torch.cuda.is_available() or interpreting()


@triton.jit
def _if_lif_fwd(x_ptr, x_st, v0_ptr, s_ptr, v_ptr, h_ptr, T, N, tau, v_th, v_reset,
                MODE: tl.constexpr, SOFT: tl.constexpr, KEEP_H: tl.constexpr,
                BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    v = tl.load(v0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    for t in range(T):
        x = tl.load(x_ptr + t * x_st + offs, mask=mask, other=0.0).to(tl.float32)
        h, s, v = if_lif_forward_step(v, x, tau, v_th, v_reset, MODE, SOFT)
        tl.store(s_ptr + t * N + offs, s.to(s_ptr.dtype.element_ty), mask=mask)
        tl.store(v_ptr + t * N + offs, v.to(v_ptr.dtype.element_ty), mask=mask)
        if KEEP_H:
            tl.store(h_ptr + t * N + offs, h, mask=mask)


@triton.jit
def _if_lif_bwd(h_ptr, gs_ptr, gs_st, gv_ptr, gv_st, gx_ptr, gv0_ptr, T, N, tau, v_th, v_reset,
                c1, c2, MODE: tl.constexpr, SOFT: tl.constexpr, DETACH: tl.constexpr,
                SG: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    carry = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(T):
        t = T - 1 - i
        hh = tl.load(h_ptr + t * N + offs, mask=mask, other=0.0)
        g_v = tl.load(gv_ptr + t * gv_st + offs, mask=mask, other=0.0).to(tl.float32) + carry
        g_s = tl.load(gs_ptr + t * gs_st + offs, mask=mask, other=0.0).to(tl.float32)
        gx, carry = if_lif_backward_step(hh, g_s, g_v, tau, v_th, v_reset, c1, c2, MODE, SOFT,
                                         DETACH, SG)
        tl.store(gx_ptr + t * N + offs, gx, mask=mask)
    tl.store(gv0_ptr + offs, carry, mask=mask)


@triton.jit
def _leaky_fwd(x_ptr, x_st, u0_ptr, beta_ptr, s_ptr, u_ptr, T, N, thr, ZERO: tl.constexpr,
               BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    u = tl.load(u0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    beta = tl.load(beta_ptr + offs, mask=mask, other=0.0)
    for t in range(T):
        x = tl.load(x_ptr + t * x_st + offs, mask=mask, other=0.0).to(tl.float32)
        r = tl.where(u - thr > 0.0, 1.0, 0.0)
        if ZERO:
            u = beta * (1.0 - r) * u + x
        else:
            u = beta * u + x - r * thr
        s = tl.where(u - thr > 0.0, 1.0, 0.0)
        tl.store(s_ptr + t * N + offs, s, mask=mask)
        tl.store(u_ptr + t * N + offs, u, mask=mask)


@triton.jit
def _leaky_bwd(u_ptr, u0_ptr, beta_ptr, gs_ptr, gs_st, gu_ptr, gu_st, gx_ptr, gu0_ptr,
               gbeta_ptr, T, N, thr, c1, c2, ZERO: tl.constexpr, SG: tl.constexpr,
               BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    beta = tl.load(beta_ptr + offs, mask=mask, other=0.0)
    carry = tl.zeros([BLOCK], dtype=tl.float32)
    gb = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(T):
        t = T - 1 - i
        u = tl.load(u_ptr + t * N + offs, mask=mask, other=0.0)
        if t > 0:
            uprev = tl.load(u_ptr + (t - 1) * N + offs, mask=mask, other=0.0)
        else:
            uprev = tl.load(u0_ptr + offs, mask=mask, other=0.0)
        g_s = tl.load(gs_ptr + t * gs_st + offs, mask=mask, other=0.0).to(tl.float32)
        g_u = tl.load(gu_ptr + t * gu_st + offs, mask=mask, other=0.0).to(tl.float32)
        g = g_u + g_s * surrogate_grad(u - thr, c1, c2, SG) + carry
        tl.store(gx_ptr + t * N + offs, g, mask=mask)
        if ZERO:
            keep = tl.where(uprev - thr > 0.0, 0.0, 1.0)
        else:
            keep = tl.full([BLOCK], 1.0, tl.float32)
        carry = g * beta * keep
        gb += g * keep * uprev
    tl.store(gu0_ptr + offs, carry, mask=mask)
    tl.store(gbeta_ptr + offs, gb, mask=mask)


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, BLOCK),)


def _if_lif_forward(x, stride, v0, shape, tau, decay_input, v_threshold, v_reset, keep_h):
    check_int32_indexing(shape.numel())
    s = torch.empty(shape, device=x.device, dtype=x.dtype)
    vs = torch.empty_like(s)
    h = torch.empty(shape, device=x.device, dtype=torch.float32) if keep_h else None
    n = v0.numel()
    _if_lif_fwd[_grid(n)](x, stride, v0, s, vs, s if h is None else h, shape[0], n,
                          float(tau or 1.0), v_threshold, float(v_reset or 0.0),
                          MODE=fused.mode(tau, decay_input), SOFT=v_reset is None,
                          KEEP_H=keep_h, BLOCK=BLOCK, **IEEE)
    return s, vs, h


def _if_lif_backward(h, g_s, s_stride, g_v, v_stride, want_gv0, tau, decay_input, v_threshold,
                     v_reset, detach_reset, surrogate):
    gx = torch.empty_like(h)
    gv0 = torch.empty(h.shape[1:], device=h.device, dtype=torch.float32)
    kind, c1, c2 = fused.surrogate_args(surrogate)
    n = gv0.numel()
    _if_lif_bwd[_grid(n)](h, g_s, s_stride, g_v, v_stride, gx, gv0, h.shape[0], n,
                          float(tau or 1.0), v_threshold, float(v_reset or 0.0), c1, c2,
                          MODE=fused.mode(tau, decay_input), SOFT=v_reset is None,
                          DETACH=detach_reset, SG=kind, BLOCK=BLOCK, **IEEE)
    return gx, gv0 if want_gv0 else None


def _leaky_forward(x, stride, u0, beta, shape, threshold, reset_zero):
    check_int32_indexing(shape.numel())
    s = torch.empty(shape, device=x.device, dtype=torch.float32)
    us = torch.empty_like(s)
    n = u0.numel()
    _leaky_fwd[_grid(n)](x, stride, u0, beta, s, us, shape[0], n, threshold, ZERO=reset_zero,
                         BLOCK=BLOCK, **IEEE)
    return s, us


def _leaky_backward(us, u0, beta, g_s, s_stride, g_u, u_stride, want_gu0, want_gbeta,
                    threshold, reset_zero, surrogate):
    gx, gu0, gbeta = torch.empty_like(us), torch.empty_like(u0), torch.empty_like(beta)
    kind, c1, c2 = fused.surrogate_args(surrogate)
    n = u0.numel()
    _leaky_bwd[_grid(n)](us, u0, beta, g_s, s_stride, g_u, u_stride, gx, gu0, gbeta, us.shape[0],
                         n, threshold, c1, c2, ZERO=reset_zero, SG=kind, BLOCK=BLOCK, **IEEE)
    return gx, gu0 if want_gu0 else None, gbeta if want_gbeta else None


LOOPS = fused.Loops(_if_lif_forward, _if_lif_backward, _leaky_forward, _leaky_backward)


def if_lif(
    x_seq: Tensor,
    v: Tensor,
    tau: float | None,
    decay_input: bool,
    v_threshold: float,
    v_reset: float | None,
    surrogate: Surrogate,
    detach_reset: bool,
) -> tuple[Tensor, Tensor]:
    """Multi-step IF/LIF over ``x_seq`` [T, ...] from ``v`` [...]: returns (S, V) each [T, ...]."""
    return fused.if_lif(LOOPS, x_seq, v, tau, decay_input, v_threshold, v_reset, surrogate,
                        detach_reset)


def leaky(
    x_seq: Tensor, u: Tensor, beta: Tensor, threshold: float, reset_zero: bool,
    surrogate: Surrogate,
) -> tuple[Tensor, Tensor]:
    """Multi-step Leaky over ``x_seq`` [T, ...] from ``u`` [...]: returns (S, U) each [T, ...]."""
    return fused.leaky(LOOPS, x_seq, u, beta, threshold, reset_zero, surrogate)
