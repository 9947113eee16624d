"""CPU backend: the neuron time loops of :mod:`.reference`, fused in compiled C++ (OpenMP).

Forward runs the whole loop once per block of neurons and saves one tensor for backward (the
pre-reset H for IF/LIF, the membrane U for Leaky, which is the output itself); backward runs the
loop in reverse with the carried gradient in registers (DESIGN §3). Spikes are bit-identical to
the reference loop in float32; float16/bfloat16 are computed in float32 and cast back; float64
runs the reference loop (the kernels are single precision). The autograd glue is
:mod:`.fused`'s, shared with the Triton backend; this module only launches the loops.

The library (``cpu_kernels.cpp``, with the shared ``neuron_math.h``) is compiled on first use and
cached, see :mod:`.build`; :mod:`.rleaky` and :mod:`.neuron_pool` have small libraries of their
own, so each recipe compiles only what it runs.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from ..surrogate import Surrogate
from . import build, fused

#: The backend's name in :data:`spikeforge.kernels.BACKENDS`.
NAME = "cpu"

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


def _if_lif_forward(x, stride, v0, shape, tau, decay_input, v_threshold, v_reset, keep_h):
    x = x.float().contiguous()
    s, vs = torch.empty(shape, dtype=torch.float32), torch.empty(shape, dtype=torch.float32)
    h = torch.empty(shape, dtype=torch.float32) if keep_h else None
    library().if_lif_forward(
        x.data_ptr(), stride, v0.data_ptr(), s.data_ptr(), vs.data_ptr(), _ptr(h), shape[0],
        v0.numel(), fused.mode(tau, decay_input), float(tau or 1.0), v_threshold,
        float(v_reset or 0.0), int(v_reset is None), torch.get_num_threads(),
    )
    return s, vs, h


def _if_lif_backward(h, g_s, s_stride, g_v, v_stride, want_gv0, tau, decay_input, v_threshold,
                     v_reset, detach_reset, surrogate):
    gx = torch.empty_like(h)
    gv0 = torch.empty(h.shape[1:], dtype=torch.float32) if want_gv0 else None
    g_s, g_v = g_s.float().contiguous(), g_v.float().contiguous()
    library().if_lif_backward(
        h.data_ptr(), g_s.data_ptr(), s_stride, g_v.data_ptr(), v_stride, gx.data_ptr(),
        _ptr(gv0), h.shape[0], h[0].numel(), fused.mode(tau, decay_input), float(tau or 1.0),
        v_threshold, float(v_reset or 0.0), int(v_reset is None), int(detach_reset),
        *fused.surrogate_args(surrogate), torch.get_num_threads(),
    )
    return gx, gv0


def _leaky_forward(x, stride, u0, beta, shape, threshold, reset_zero):
    x = x.float().contiguous()
    s, us = torch.empty(shape, dtype=torch.float32), torch.empty(shape, dtype=torch.float32)
    library().leaky_forward(
        x.data_ptr(), stride, u0.data_ptr(), beta.data_ptr(), s.data_ptr(), us.data_ptr(),
        shape[0], u0.numel(), threshold, int(reset_zero), torch.get_num_threads(),
    )
    return s, us


def _leaky_backward(us, u0, beta, g_s, s_stride, g_u, u_stride, want_gu0, want_gbeta,
                    threshold, reset_zero, surrogate):
    gx = torch.empty_like(us)
    gu0 = torch.empty_like(u0) if want_gu0 else None
    gbeta = torch.empty_like(beta) if want_gbeta else None
    g_s, g_u = g_s.float().contiguous(), g_u.float().contiguous()
    library().leaky_backward(
        us.data_ptr(), u0.data_ptr(), beta.data_ptr(), g_s.data_ptr(), s_stride, g_u.data_ptr(),
        u_stride, gx.data_ptr(), _ptr(gu0), _ptr(gbeta), us.shape[0], u0.numel(), threshold,
        int(reset_zero), *fused.surrogate_args(surrogate), torch.get_num_threads(),
    )
    return gx, gu0, gbeta


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
