"""An IF/LIF neuron followed by 2×2 max pooling, as one CPU kernel (``lif_pool_*`` in
``neuron_pool_kernels.cpp``):

    lif_pool(neuron, pool, x)  =  pool(neuron(x))     [T, B, C, H, W] → [T, B, C, H/2, W/2]

The neuron runs its whole time loop per plane of H×W neurons and pools each step's spikes at
once, so the full-resolution spikes and membranes are never written: forward keeps the pre-reset
membrane H (for the surrogate gradient) and a byte per window naming its winner (the first
maximum, as torch picks it); backward routes each pooled gradient to that winner and runs the
neuron's backward loop. Spikes, the pooled output and the final membrane equal the separate
layers' exactly; gradients agree up to float summation order. A time-invariant input (a static
image's first block, ``steps`` given with ``x`` [B, C, H, W]) is read once, and its gradient is
summed over time inside the kernel.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

from ..neuron import LIF
from ..surrogate import Surrogate
from . import build
from .cpu import _mode, _surrogate_args


def _fits(neuron: nn.Module, pool: nn.Module, x: Tensor) -> bool:
    return (isinstance(neuron, LIF) and not neuron.record and neuron.backend in ("auto", "cpu")
            and neuron.surrogate.name == "atan"
            and isinstance(pool, nn.MaxPool2d) and pool.kernel_size in (2, (2, 2))
            and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0))
            and pool.dilation in (1, (1, 1)) and not pool.ceil_mode and not pool.return_indices
            and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu"))


_P, _I, _F, _C = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
_SIGNATURES = {
    "lif_pool_forward": [_P, _I, _P, _P, _P, _P, _P, _I, _I, _I, _I, _C, _F, _F, _F, _C, _C],
    "lif_pool_backward": [_P, _P, _P, _P, _P, _C, _P, _I, _I, _I, _I, _C, _F, _F, _F, _C, _C,
                          _F, _F, _C],
}


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The compiled kernels (``neuron_pool_kernels.cpp``; raises :class:`build.BuildError`)."""
    return build.bind(Path(__file__).with_name("neuron_pool_kernels.cpp"), _SIGNATURES)


class _LifPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, v0, steps, tau, decay_input, v_threshold, v_reset, surrogate,
                detach_reset, lib):
        static = x.dim() == 4
        x = x.contiguous()
        shape = x.shape if static else x.shape[1:]
        b, c, h, w = shape
        p = b * c
        keep = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        out = torch.empty(steps, b, c, h // 2, w // 2)
        arg = torch.empty(out.shape, dtype=torch.uint8) if keep else None
        hs = torch.empty(steps, *shape) if keep else None
        v_last = torch.empty(shape)
        ctx.v_shape = v0.shape
        v0 = v0.expand(shape).contiguous()
        lib.lif_pool_forward(
            x.data_ptr(), 0 if static else p * h * w, v0.data_ptr(), out.data_ptr(),
            None if arg is None else arg.data_ptr(), None if hs is None else hs.data_ptr(),
            v_last.data_ptr(), steps, p, h, w, _mode(tau, decay_input), float(tau or 1.0),
            float(v_threshold), float(v_reset or 0.0), int(v_reset is None),
            torch.get_num_threads())
        if keep:
            ctx.save_for_backward(hs, arg)
        ctx.args = (static, tau, decay_input, v_threshold, v_reset, surrogate, detach_reset, lib)
        ctx.set_materialize_grads(False)
        return out, v_last

    @staticmethod
    def backward(ctx, g_out, g_v):
        hs, arg = ctx.saved_tensors
        static, tau, decay_input, v_threshold, v_reset, surrogate, detach_reset, lib = ctx.args
        steps, shape = hs.shape[0], hs.shape[1:]
        b, c, h, w = shape
        g_out = torch.zeros(arg.shape) if g_out is None else g_out.float().contiguous()
        g_v = None if g_v is None else g_v.float().contiguous()
        gx = torch.empty(shape if static else hs.shape)
        gv0 = torch.empty(shape) if ctx.needs_input_grad[1] else None
        lib.lif_pool_backward(
            hs.data_ptr(), arg.data_ptr(), g_out.data_ptr(),
            None if g_v is None else g_v.data_ptr(), gx.data_ptr(), int(static),
            None if gv0 is None else gv0.data_ptr(), steps, b * c, h, w, _mode(tau, decay_input),
            float(tau or 1.0), float(v_threshold), float(v_reset or 0.0), int(v_reset is None),
            int(detach_reset), *_surrogate_args(surrogate)[1:], torch.get_num_threads())
        if gv0 is not None:
            gv0 = gv0.sum_to_size(ctx.v_shape)
        return gx, gv0, None, None, None, None, None, None, None, None


def lif_pool(neuron: nn.Module, pool: nn.Module, x: Tensor, steps: int | None = None) -> Tensor:
    """``pool(neuron(x_seq))`` → ``[T, B, C, H/2, W/2]``, fused where it applies.

    ``x``: ``[T, B, C, H, W]``, or ``[B, C, H, W]`` with ``steps`` (the same input at every
    step). Fused for an IF/LIF neuron (ATan surrogate, not recording) and ``MaxPool2d(2)`` on
    CPU float32 data; otherwise the two layers run as they are. The neuron's state is updated
    either way.
    """
    lib = (library() if _fits(neuron, pool, x) and x.dim() == (4 if steps else 5)
           and build.loads(library) else None)
    if lib is None:
        x_seq = x.unsqueeze(0).expand(steps, *x.shape) if steps else x
        y = neuron(x_seq)
        t, b = y.shape[:2]
        pooled = pool(y.reshape(t * b, *y.shape[2:]))
        return pooled.reshape(t, b, *pooled.shape[1:])
    steps = steps or x.shape[0]
    shape = x.shape if steps and x.dim() == 4 else x.shape[1:]
    v0 = neuron._initial(x.new_empty((1, *shape)) if x.dim() == 4 else x,
                         0.0 if neuron.v_reset is None else neuron.v_reset)
    surrogate: Surrogate = neuron.surrogate
    out, neuron.v = _LifPool.apply(x, v0, steps, neuron.tau, neuron.decay_input,
                                   neuron.v_threshold, neuron.v_reset, surrogate,
                                   neuron.detach_reset, lib)
    return out
