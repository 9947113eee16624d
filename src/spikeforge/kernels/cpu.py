"""CPU backend: the neuron time loops of :mod:`.reference`, fused in compiled C++ (OpenMP).

Forward runs the whole loop once per block of neurons and saves one tensor for backward (the
pre-reset H for IF/LIF, the membrane U for Leaky, which is the output itself); backward runs the
loop in reverse with the carried gradient in registers (DESIGN §3). Spikes are bit-identical to
the reference loop in float32; float16/bfloat16 are computed in float32 and cast back; float64
runs the reference loop (the kernels are single precision).

The library (``cpu_kernels.cpp``, with the shared ``neuron_math.h``) is compiled on first use and
cached, see :mod:`.build`; :mod:`.rleaky` and :mod:`.neuron_pool` have small libraries of their
own, so each recipe compiles only what it runs.
"""

from __future__ import annotations

import ctypes
import math
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from ..surrogate import Surrogate
from . import build, reference

_P = ctypes.c_void_p
_I = ctypes.c_int64
_F = ctypes.c_float
_C = ctypes.c_int

_SIGNATURES = {
    "if_lif_forward": [_P, _I, _P, _P, _P, _P, _I, _I, _C, _F, _F, _F, _C, _C],
    "if_lif_backward": [_P, _P, _I, _P, _I, _P, _P, _I, _I, _C, _F, _F, _F, _C, _C, _C, _F, _F,
                        _C],
    "leaky_forward": [_P, _I, _P, _P, _P, _P, _I, _I, _F, _C, _C],
    "leaky_backward": [_P, _P, _P, _P, _I, _P, _I, _P, _P, _P, _I, _I, _F, _C, _C, _F, _F, _C],
}


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The compiled kernels (built on first call; raises :class:`build.BuildError`)."""
    return build.bind(Path(__file__).with_name("cpu_kernels.cpp"), _SIGNATURES)


def available() -> bool:
    """Whether the library builds and loads on this machine."""
    return build.loads(library)


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _surrogate_args(surrogate: Surrogate) -> tuple[int, float, float]:
    a = float(surrogate.param)
    if surrogate.name == "atan":
        return 0, a / 2, math.pi / 2 * a
    if surrogate.name == "sigmoid":
        return 1, a, 0.0
    if surrogate.name == "fast_sigmoid":
        return 2, a, 0.0
    raise ValueError(f"the cpu backend has no surrogate {surrogate.name!r}")


def _seq_input(x_seq: Tensor) -> tuple[Tensor, int]:
    """``x_seq`` as float32 [T, N] data with a time stride (0 for one step repeated T times)."""
    if x_seq.stride(0) == 0 or x_seq.shape[0] == 1:
        return x_seq[0].float().contiguous(), 0
    return x_seq.float().contiguous(), x_seq[0].numel()


def _seq_grad(g: Tensor | None, like: Tensor) -> tuple[Tensor, int]:
    """An incoming gradient as :func:`_seq_input` data; zeros (stride 0) when there is none."""
    if g is None:
        return torch.zeros(like[0].shape), 0
    return _seq_input(g)


def _f32(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.float().contiguous()


def _mode(tau: float | None, decay_input: bool) -> int:
    return 0 if tau is None else (1 if decay_input else 2)


def _if_lif_forward(x_seq, v, tau, decay_input, v_threshold, v_reset, keep_h):
    x, stride = _seq_input(x_seq)
    v0 = _f32(v.expand(x_seq.shape[1:]))
    shape = (x_seq.shape[0], *x_seq.shape[1:])
    s, vs = torch.empty(shape), torch.empty(shape)
    h = torch.empty(shape) if keep_h else None
    n = v0.numel()
    library().if_lif_forward(
        x.data_ptr(), stride, v0.data_ptr(), s.data_ptr(), vs.data_ptr(), _ptr(h), shape[0], n,
        _mode(tau, decay_input), float(tau or 1.0), float(v_threshold),
        float(v_reset or 0.0), int(v_reset is None), torch.get_num_threads(),
    )
    return s, vs, h


class _IfLif(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq, v, tau, decay_input, v_threshold, v_reset, surrogate, detach_reset):
        s, vs, h = _if_lif_forward(x_seq, v, tau, decay_input, v_threshold, v_reset, True)
        ctx.save_for_backward(h)
        ctx.args = (tau, decay_input, v_threshold, v_reset, surrogate, detach_reset)
        ctx.v_shape, ctx.dtype = v.shape, x_seq.dtype
        ctx.set_materialize_grads(False)
        return s.to(x_seq.dtype), vs.to(x_seq.dtype)

    @staticmethod
    def backward(ctx, g_s, g_v):
        (h,) = ctx.saved_tensors
        tau, decay_input, v_threshold, v_reset, surrogate, detach_reset = ctx.args
        dtype = ctx.dtype
        gx = torch.empty_like(h)
        gv0 = torch.empty(h.shape[1:]) if ctx.needs_input_grad[1] else None
        kind, c1, c2 = _surrogate_args(surrogate)
        (g_s, s_stride), (g_v, v_stride) = _seq_grad(g_s, h), _seq_grad(g_v, h)
        library().if_lif_backward(
            h.data_ptr(), g_s.data_ptr(), s_stride, g_v.data_ptr(), v_stride, gx.data_ptr(),
            _ptr(gv0), h.shape[0], h[0].numel(), _mode(tau, decay_input), float(tau or 1.0),
            float(v_threshold), float(v_reset or 0.0), int(v_reset is None), int(detach_reset),
            kind, c1, c2, torch.get_num_threads(),
        )
        if gv0 is not None:
            gv0 = gv0.sum_to_size(ctx.v_shape).to(dtype)
        return gx.to(dtype), gv0, None, None, None, None, None, None


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


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
    if _needs_grad(x_seq, v):
        return _IfLif.apply(x_seq, v, tau, decay_input, v_threshold, v_reset, surrogate,
                            detach_reset)
    s, vs, _ = _if_lif_forward(x_seq, v, tau, decay_input, v_threshold, v_reset, False)
    return s.to(x_seq.dtype), vs.to(x_seq.dtype)


def _leaky_forward(x_seq, u, beta, threshold, reset_zero):
    x, stride = _seq_input(x_seq)
    shape = x_seq.shape
    u0 = _f32(u.expand(shape[1:]))
    b = _f32(beta.detach().expand(shape[1:]))
    s, us = torch.empty(shape), torch.empty(shape)
    library().leaky_forward(
        x.data_ptr(), stride, u0.data_ptr(), b.data_ptr(), s.data_ptr(), us.data_ptr(),
        shape[0], u0.numel(), float(threshold), int(reset_zero), torch.get_num_threads(),
    )
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
        dtype = ctx.dtype
        gx = torch.empty_like(us)
        gu0 = torch.empty_like(u0) if ctx.needs_input_grad[1] else None
        gbeta = torch.empty_like(b) if ctx.needs_input_grad[2] else None
        kind, c1, c2 = _surrogate_args(surrogate)
        (g_s, s_stride), (g_u, u_stride) = _seq_grad(g_s, us), _seq_grad(g_u, us)
        library().leaky_backward(
            us.data_ptr(), u0.data_ptr(), b.data_ptr(), g_s.data_ptr(), s_stride, g_u.data_ptr(),
            u_stride, gx.data_ptr(), _ptr(gu0), _ptr(gbeta), us.shape[0], u0.numel(),
            float(threshold), int(reset_zero), kind, c1, c2, torch.get_num_threads(),
        )
        u_shape, beta_shape = ctx.shapes
        if gu0 is not None:
            gu0 = gu0.sum_to_size(u_shape).to(dtype)
        if gbeta is not None:
            gbeta = gbeta.sum_to_size(beta_shape).to(dtype)
        return gx.to(dtype), gu0, gbeta, None, None, None


def leaky(
    x_seq: Tensor, u: Tensor, beta: Tensor, threshold: float, reset_zero: bool,
    surrogate: Surrogate,
) -> tuple[Tensor, Tensor]:
    """Multi-step Leaky over ``x_seq`` [T, ...] from ``u`` [...]: returns (S, U) each [T, ...]."""
    if x_seq.dtype == torch.float64:
        return reference.leaky(x_seq, u, beta, threshold, reset_zero, surrogate)
    if _needs_grad(x_seq, u, beta):
        return _Leaky.apply(x_seq, u, beta, threshold, reset_zero, surrogate)
    s, us, _, _ = _leaky_forward(x_seq, u, beta, threshold, reset_zero)
    return s.to(x_seq.dtype), us.to(x_seq.dtype)

