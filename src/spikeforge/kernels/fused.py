"""The host side every fused neuron backend shares: argument codes and the autograd glue.

A backend (:mod:`.cpu`, :mod:`.triton_gpu`) supplies only its four launchers in a
:class:`Loops`; the autograd Functions here save one tensor per call (the pre-reset H for
IF/LIF, the membrane U for Leaky), pass incoming gradients as ``[T, N]`` data with a time stride
(0 for a gradient that is absent or repeated over T), reduce the initial-state and β gradients to
their broadcast shapes and cast back to the input dtype. float64 runs the reference loop (the
kernels are single precision); without a graph to build, only the forward launcher runs.

Codes shared by the kernels (C++ and Triton):
    mode       0 IF (H = V + X), 1 LIF with decay_input, 2 LIF without (DESIGN §3)
    surrogate  (kind, c1, c2): ATan (0, α/2, π/2·α), Sigmoid (1, α, 0), FastSigmoid (2, k, 0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from ..surrogate import Surrogate
from . import reference


def surrogate_args(surrogate: Surrogate) -> tuple[int, float, float]:
    """The kernels' (kind, c1, c2) for ``surrogate``; ValueError for one they do not have."""
    a = float(surrogate.param)
    kinds = {"atan": (0, a / 2, math.pi / 2 * a), "sigmoid": (1, a, 0.0),
             "fast_sigmoid": (2, a, 0.0)}
    if surrogate.name not in kinds:
        raise ValueError(f"the fused kernels have no surrogate {surrogate.name!r}")
    return kinds[surrogate.name]


def mode(tau: float | None, decay_input: bool) -> int:
    """The kernels' IF/LIF mode code (module docstring)."""
    return 0 if tau is None else (1 if decay_input else 2)


def seq(x_seq: Tensor) -> tuple[Tensor, int]:
    """``x_seq`` [T, ...] as contiguous [T, N] data (its own dtype) and the element stride of one
    step: 0 for one step repeated over T (a direct-encoded input), read once."""
    if x_seq.stride(0) == 0 or x_seq.shape[0] == 1:
        return x_seq[0].contiguous(), 0
    return x_seq.contiguous(), x_seq[0].numel()


def grad_seq(g: Tensor | None, like: Tensor) -> tuple[Tensor, int]:
    """An incoming gradient as :func:`seq` data; one step of zeros (stride 0) when absent."""
    if g is None:
        return torch.zeros(like.shape[1:], device=like.device, dtype=torch.float32), 0
    return seq(g)


class Loops(NamedTuple):
    """One backend's launchers. Inputs are float32 except ``x`` and the incoming gradients
    ``gs``/``gv``/``gu`` (their own dtype); outputs are float32 or ``x``'s dtype (the glue casts).

    if_lif_forward(x, x_stride, v0, shape, tau, decay_input, v_th, v_reset, keep_h)
                   → (S, V, H | None)
    if_lif_backward(h, gs, gs_stride, gv, gv_stride, want_gv0, tau, decay_input, v_th, v_reset,
                    detach_reset, surrogate) → (∂L/∂X [T, N], ∂L/∂V0 [N] | None)
    leaky_forward(x, x_stride, u0, beta, shape, threshold, reset_zero) → (S, U)
    leaky_backward(u, u0, beta, gs, gs_stride, gu, gu_stride, want_gu0, want_gbeta, threshold,
                   reset_zero, surrogate) → (∂L/∂X, ∂L/∂U0 | None, ∂L/∂β | None)

    ``x`` is [T, N] data (or one step, stride 0), v0/u0/beta [N] expanded to the neurons,
    ``shape`` the [T, ...] shape of the outputs.
    """

    if_lif_forward: Callable
    if_lif_backward: Callable
    leaky_forward: Callable
    leaky_backward: Callable


def _if_lif_forward(loops, x_seq, v, tau, decay_input, v_threshold, v_reset, keep_h):
    x, stride = seq(x_seq)
    v0 = v.expand(x_seq.shape[1:]).float().contiguous()
    s, vs, h = loops.if_lif_forward(x, stride, v0, x_seq.shape, tau, decay_input,
                                    float(v_threshold), v_reset, keep_h)
    return s.to(x_seq.dtype), vs.to(x_seq.dtype), h


class _IfLif(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loops, x_seq, v, tau, decay_input, v_threshold, v_reset, surrogate,
                detach_reset):
        s, vs, h = _if_lif_forward(loops, x_seq, v, tau, decay_input, v_threshold, v_reset, True)
        ctx.save_for_backward(h)
        ctx.args = (loops, tau, decay_input, v_threshold, v_reset, surrogate, detach_reset)
        ctx.v_shape, ctx.dtype = v.shape, x_seq.dtype
        ctx.set_materialize_grads(False)
        return s, vs

    @staticmethod
    def backward(ctx, g_s, g_v):
        (h,) = ctx.saved_tensors
        loops, tau, decay_input, v_threshold, v_reset, surrogate, detach_reset = ctx.args
        (g_s, s_stride), (g_v, v_stride) = grad_seq(g_s, h), grad_seq(g_v, h)
        gx, gv0 = loops.if_lif_backward(h, g_s, s_stride, g_v, v_stride,
                                        ctx.needs_input_grad[2], tau, decay_input,
                                        float(v_threshold), v_reset, bool(detach_reset),
                                        surrogate)
        if gv0 is not None:
            gv0 = gv0.sum_to_size(ctx.v_shape).to(ctx.dtype)
        return None, gx.to(ctx.dtype), gv0, None, None, None, None, None, None


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def if_lif(loops: Loops, x_seq: Tensor, v: Tensor, tau: float | None, decay_input: bool,
           v_threshold: float, v_reset: float | None, surrogate: Surrogate,
           detach_reset: bool) -> tuple[Tensor, Tensor]:
    """Multi-step IF/LIF with ``loops``: ``x_seq`` [T, ...], ``v`` [...] → (S, V) [T, ...]."""
    if x_seq.dtype == torch.float64:
        return reference.if_lif(x_seq, v, tau, decay_input, v_threshold, v_reset, surrogate,
                                detach_reset)
    if _needs_grad(x_seq, v):
        return _IfLif.apply(loops, x_seq, v, tau, decay_input, v_threshold, v_reset, surrogate,
                            detach_reset)
    s, vs, _ = _if_lif_forward(loops, x_seq, v, tau, decay_input, v_threshold, v_reset, False)
    return s, vs


def _leaky_forward(loops, x_seq, u, beta, threshold, reset_zero):
    x, stride = seq(x_seq)
    u0 = u.expand(x_seq.shape[1:]).float().contiguous()
    b = beta.detach().expand(x_seq.shape[1:]).float().contiguous()
    s, us = loops.leaky_forward(x, stride, u0, b, x_seq.shape, float(threshold), bool(reset_zero))
    return s, us, u0, b


class _Leaky(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loops, x_seq, u, beta, threshold, reset_zero, surrogate):
        s, us, u0, b = _leaky_forward(loops, x_seq, u, beta, threshold, reset_zero)
        ctx.save_for_backward(us, u0, b)
        ctx.args = (loops, threshold, reset_zero, surrogate)
        ctx.shapes, ctx.dtype, ctx.beta_dtype = (u.shape, beta.shape), x_seq.dtype, beta.dtype
        ctx.set_materialize_grads(False)
        return s.to(x_seq.dtype), us.to(x_seq.dtype)

    @staticmethod
    def backward(ctx, g_s, g_u):
        us, u0, b = ctx.saved_tensors
        loops, threshold, reset_zero, surrogate = ctx.args
        (g_s, s_stride), (g_u, u_stride) = grad_seq(g_s, us), grad_seq(g_u, us)
        need = ctx.needs_input_grad
        gx, gu0, gbeta = loops.leaky_backward(us, u0, b, g_s, s_stride, g_u, u_stride, need[2],
                                              need[3], float(threshold), bool(reset_zero),
                                              surrogate)
        u_shape, beta_shape = ctx.shapes
        if gu0 is not None:
            gu0 = gu0.sum_to_size(u_shape).to(ctx.dtype)
        if gbeta is not None:
            gbeta = gbeta.sum_to_size(beta_shape).to(ctx.beta_dtype)
        return None, gx.to(ctx.dtype), gu0, gbeta, None, None, None


def leaky(loops: Loops, x_seq: Tensor, u: Tensor, beta: Tensor, threshold: float,
          reset_zero: bool, surrogate: Surrogate) -> tuple[Tensor, Tensor]:
    """Multi-step Leaky with ``loops``: ``x_seq`` [T, ...], ``u`` [...], ``beta`` broadcastable
    → (S, U) [T, ...]."""
    if x_seq.dtype == torch.float64:
        return reference.leaky(x_seq, u, beta, threshold, reset_zero, surrogate)
    if _needs_grad(x_seq, u, beta):
        return _Leaky.apply(loops, x_seq, u, beta, threshold, reset_zero, surrogate)
    s, us, _, _ = _leaky_forward(loops, x_seq, u, beta, threshold, reset_zero)
    return s.to(x_seq.dtype), us.to(x_seq.dtype)
