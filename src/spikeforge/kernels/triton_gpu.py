"""GPU backend: the neuron time loops of :mod:`.reference` as Triton kernels (CUDA tensors).

One program owns a block of neurons and runs the whole time loop with the state in registers,
forward and backward (DESIGN §3); forward saves one tensor (H for IF/LIF, U for Leaky). Products
that the reference rounds on their own (β·U before + X) use round-to-nearest intrinsics so the
compiler cannot contract them into an FMA, and division is IEEE (``div_rn``), so spikes match the
reference loop bit for bit in float32. Imported only when the ``triton`` backend is asked for.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..surrogate import Surrogate
from . import reference

try:
    from triton.language.extra import libdevice
except ImportError:  # older Triton
    from triton.language.extra.cuda import libdevice

BLOCK = 1024


def available() -> bool:
    """Whether a CUDA device is present (Triton itself imported with this module)."""
    return torch.cuda.is_available()


@triton.jit
def _surrogate_grad(x, c1, c2, SG: tl.constexpr):
    if SG == 0:
        z = c2 * x
        return (1.0 / (1.0 + z * z)) * c1
    elif SG == 1:
        sg = 1.0 / (1.0 + tl.exp(-(c1 * x)))
        return c1 * sg * (1.0 - sg)
    else:
        d = 1.0 + c1 * tl.abs(x)
        return 1.0 / (d * d)


@triton.jit
def _if_lif_fwd(x_ptr, x_st, v0_ptr, s_ptr, v_ptr, h_ptr, T, N, tau, v_th, v_reset,
                MODE: tl.constexpr, SOFT: tl.constexpr, KEEP_H: tl.constexpr,
                BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    v = tl.load(v0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if SOFT:
        v_r = 0.0
    else:
        v_r = v_reset
    for t in range(T):
        x = tl.load(x_ptr + t * x_st + offs, mask=mask, other=0.0).to(tl.float32)
        if MODE == 0:
            h = v + x
        elif MODE == 1:
            h = v + libdevice.div_rn(x - (v - v_r), tau)
        else:
            h = v - libdevice.div_rn(v - v_r, tau) + x
        s = tl.where(h - v_th >= 0.0, 1.0, 0.0)
        if SOFT:
            v = h - v_th * s
        else:
            v = h * (1.0 - s) + v_reset * s
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
        d = hh - v_th
        s = tl.where(d >= 0.0, 1.0, 0.0)
        g_v = tl.load(gv_ptr + t * gv_st + offs, mask=mask, other=0.0).to(tl.float32) + carry
        g_s = tl.load(gs_ptr + t * gs_st + offs, mask=mask, other=0.0).to(tl.float32)
        if SOFT:
            gh = g_v
            if not DETACH:
                g_s = g_s - g_v * v_th
        else:
            gh = g_v * (1.0 - s)
            if not DETACH:
                g_s = g_s - g_v * hh + g_v * v_reset
        gh = g_s * _surrogate_grad(d, c1, c2, SG) + gh
        if MODE == 0:
            gx = gh
            carry = gh
        else:
            g_tau = libdevice.div_rn(gh, tau)
            if MODE == 1:
                gx = g_tau
            else:
                gx = gh
            carry = gh - g_tau
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
            u = libdevice.mul_rn(beta * (1.0 - r), u) + x
        else:
            u = libdevice.mul_rn(beta, u) + x - r * thr
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
        g = g_u + g_s * _surrogate_grad(u - thr, c1, c2, SG) + carry
        tl.store(gx_ptr + t * N + offs, g, mask=mask)
        if ZERO:
            keep = tl.where(uprev - thr > 0.0, 0.0, 1.0)
        else:
            keep = tl.full([BLOCK], 1.0, tl.float32)
        carry = g * beta * keep
        gb += g * keep * uprev
    tl.store(gu0_ptr + offs, carry, mask=mask)
    tl.store(gbeta_ptr + offs, gb, mask=mask)


def _surrogate_args(surrogate: Surrogate) -> tuple[int, float, float]:
    a = float(surrogate.param)
    kinds = {"atan": (0, a / 2, math.pi / 2 * a), "sigmoid": (1, a, 0.0),
             "fast_sigmoid": (2, a, 0.0)}
    if surrogate.name not in kinds:
        raise ValueError(f"the triton backend has no surrogate {surrogate.name!r}")
    return kinds[surrogate.name]


def _seq(x_seq: Tensor) -> tuple[Tensor, int]:
    """[T, N] data with a time stride (0 for one step repeated over T), in its own dtype."""
    if x_seq.stride(0) == 0 or x_seq.shape[0] == 1:
        return x_seq[0].contiguous(), 0
    return x_seq.contiguous(), x_seq[0].numel()


def _grad_seq(g: Tensor | None, like: Tensor) -> tuple[Tensor, int]:
    return (torch.zeros(like.shape[1:], device=like.device), 0) if g is None else _seq(g)


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, BLOCK),)


def _mode(tau: float | None, decay_input: bool) -> int:
    return 0 if tau is None else (1 if decay_input else 2)


def _if_lif_forward(x_seq, v, tau, decay_input, v_threshold, v_reset, keep_h):
    x, stride = _seq(x_seq)
    v0 = v.expand(x_seq.shape[1:]).float().contiguous()
    s = torch.empty(x_seq.shape, device=x_seq.device, dtype=x_seq.dtype)
    vs = torch.empty_like(s)
    h = torch.empty(x_seq.shape, device=x_seq.device) if keep_h else s  # s: unused placeholder
    n = v0.numel()
    _if_lif_fwd[_grid(n)](x, stride, v0, s, vs, h, x_seq.shape[0], n, float(tau or 1.0),
                          float(v_threshold), float(v_reset or 0.0), MODE=_mode(tau, decay_input),
                          SOFT=v_reset is None, KEEP_H=keep_h, BLOCK=BLOCK)
    return s, vs, h


class _IfLif(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq, v, tau, decay_input, v_threshold, v_reset, surrogate, detach_reset):
        s, vs, h = _if_lif_forward(x_seq, v, tau, decay_input, v_threshold, v_reset, True)
        ctx.save_for_backward(h)
        ctx.args = (tau, decay_input, v_threshold, v_reset, surrogate, detach_reset)
        ctx.v_shape, ctx.dtype = v.shape, x_seq.dtype
        ctx.set_materialize_grads(False)
        return s, vs

    @staticmethod
    def backward(ctx, g_s, g_v):
        (h,) = ctx.saved_tensors
        tau, decay_input, v_threshold, v_reset, surrogate, detach_reset = ctx.args
        gx = torch.empty_like(h)
        gv0 = torch.empty(h.shape[1:], device=h.device)
        (g_s, s_st), (g_v, v_st) = _grad_seq(g_s, h), _grad_seq(g_v, h)
        kind, c1, c2 = _surrogate_args(surrogate)
        n = gv0.numel()
        _if_lif_bwd[_grid(n)](h, g_s, s_st, g_v, v_st, gx, gv0, h.shape[0], n, float(tau or 1.0),
                              float(v_threshold), float(v_reset or 0.0), c1, c2,
                              MODE=_mode(tau, decay_input), SOFT=v_reset is None,
                              DETACH=bool(detach_reset), SG=kind, BLOCK=BLOCK)
        gv0 = gv0.sum_to_size(ctx.v_shape).to(ctx.dtype) if ctx.needs_input_grad[1] else None
        return gx.to(ctx.dtype), gv0, None, None, None, None, None, None


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
    if x_seq.dtype == torch.float64:
        return reference.if_lif(x_seq, v, tau, decay_input, v_threshold, v_reset, surrogate,
                                detach_reset)
    if torch.is_grad_enabled() and (x_seq.requires_grad or v.requires_grad):
        return _IfLif.apply(x_seq, v, tau, decay_input, v_threshold, v_reset, surrogate,
                            detach_reset)
    s, vs, _ = _if_lif_forward(x_seq, v, tau, decay_input, v_threshold, v_reset, False)
    return s, vs


def _leaky_forward(x_seq, u, beta, threshold, reset_zero):
    x, stride = _seq(x_seq)
    u0 = u.expand(x_seq.shape[1:]).float().contiguous()
    b = beta.detach().float().expand(x_seq.shape[1:]).contiguous()
    s = torch.empty(x_seq.shape, device=x_seq.device)
    us = torch.empty_like(s)
    n = u0.numel()
    _leaky_fwd[_grid(n)](x, stride, u0, b, s, us, x_seq.shape[0], n, float(threshold),
                         ZERO=bool(reset_zero), BLOCK=BLOCK)
    return s, us, u0, b


class _Leaky(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq, u, beta, threshold, reset_zero, surrogate):
        s, us, u0, b = _leaky_forward(x_seq, u, beta, threshold, reset_zero)
        ctx.save_for_backward(us, u0, b)
        ctx.args = (threshold, reset_zero, surrogate)
        ctx.shapes, ctx.dtype = (u.shape, beta.shape), x_seq.dtype
        ctx.set_materialize_grads(False)
        return s.to(x_seq.dtype), us.to(x_seq.dtype)

    @staticmethod
    def backward(ctx, g_s, g_u):
        us, u0, b = ctx.saved_tensors
        threshold, reset_zero, surrogate = ctx.args
        gx, gu0, gbeta = torch.empty_like(us), torch.empty_like(u0), torch.empty_like(b)
        (g_s, s_st), (g_u, u_st) = _grad_seq(g_s, us), _grad_seq(g_u, us)
        kind, c1, c2 = _surrogate_args(surrogate)
        n = u0.numel()
        _leaky_bwd[_grid(n)](us, u0, b, g_s, s_st, g_u, u_st, gx, gu0, gbeta, us.shape[0], n,
                             float(threshold), c1, c2, ZERO=bool(reset_zero), SG=kind,
                             BLOCK=BLOCK)
        u_shape, beta_shape = ctx.shapes
        gu0 = gu0.sum_to_size(u_shape).to(ctx.dtype) if ctx.needs_input_grad[1] else None
        gbeta = gbeta.sum_to_size(beta_shape).to(ctx.dtype) if ctx.needs_input_grad[2] else None
        return gx.to(ctx.dtype), gu0, gbeta, None, None, None


def leaky(
    x_seq: Tensor, u: Tensor, beta: Tensor, threshold: float, reset_zero: bool,
    surrogate: Surrogate,
) -> tuple[Tensor, Tensor]:
    """Multi-step Leaky over ``x_seq`` [T, ...] from ``u`` [...]: returns (S, U) each [T, ...]."""
    if x_seq.dtype == torch.float64:
        return reference.leaky(x_seq, u, beta, threshold, reset_zero, surrogate)
    if torch.is_grad_enabled() and (x_seq.requires_grad or u.requires_grad or beta.requires_grad):
        return _Leaky.apply(x_seq, u, beta, threshold, reset_zero, surrogate)
    s, us, _, _ = _leaky_forward(x_seq, u, beta, threshold, reset_zero)
    return s.to(x_seq.dtype), us.to(x_seq.dtype)
