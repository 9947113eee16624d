"""An IF/LIF neuron followed by 2×2 max pooling, as one kernel:

    lif_pool(neuron, pool, x)  =  pool(neuron(x))     [T, B, C, H, W] → [T, B, C, H/2, W/2]

The neuron runs its whole time loop per plane of H×W neurons and pools each step's spikes at
once, so the full-resolution spikes and membranes are never written: forward keeps a byte per
window naming its winner (the first maximum, as torch picks it); backward routes each pooled
gradient to that winner and runs the neuron's backward loop. The pre-reset membrane H that the
surrogate gradient needs is, on the CPU, recomputed in backward by replaying the plane's forward
loop from the input (kept for it, so an in-place change of the input before backward is an
error, as for any layer that saves its input) in a per-thread buffer: csnn's first block would
otherwise write and read back a [T, B, 64, 28, 28] tensor (103 MB at B=128, T=4), freshly mapped
by the allocator at every step. The Triton kernels keep H. Spikes, the pooled output and the final
membrane equal the separate layers' exactly; gradients agree up to float summation order. A
time-invariant input (a static image's first block, ``steps`` given with ``x`` [B, C, H, W]) is
read once, and its gradient is summed over time inside the kernel.

On the CPU a channels-last input (``[T, B, H, W, C]`` in memory, as oneDNN's convolutions give
it) runs a kernel of its own that keeps that layout for the spikes, the membrane and every
gradient: each window's four neurons are four vectors of channels, pooled without a branch per
window, and no winner bytes are kept (backward finds the winners from the replayed membranes).
Neurons at rest start from a value, not from a tensor written for it.

The kernel follows the neuron's backend (:meth:`~spikeforge.neuron.SpikingNeuron.fused_backend`):
compiled C++ on the CPU (``lif_pool_*`` in ``neuron_pool_kernels.cpp``, ATan surrogate, float32),
Triton on a GPU (:mod:`.triton_pool`, every surrogate; half-precision inputs are computed in
float32). This module holds the autograd glue both share.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from ..layer import channels_last
from ..neuron import LIF
from . import build
from .fused import mode, surrogate_args


def _pool_2x2(pool: nn.Module) -> bool:
    return (isinstance(pool, nn.MaxPool2d) and pool.kernel_size in (2, (2, 2))
            and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0))
            and pool.dilation in (1, (1, 1)) and not pool.ceil_mode and not pool.return_indices)


def _launchers(neuron: nn.Module, pool: nn.Module, x: Tensor):
    """The fused kernels' (forward, backward) for this neuron, pool and input, or None where
    the separate layers run (another neuron or pool, a recording neuron, the reference backend,
    the CPU kernel's limits)."""
    if not (isinstance(neuron, LIF) and not neuron.record and _pool_2x2(pool)):
        return None
    backend = neuron.fused_backend(x)
    if backend == "triton":
        from . import triton_pool

        return triton_pool
    if (backend == "cpu" and neuron.surrogate.name == "atan" and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and build.loads(library)):
        return _CPU
    return None


_P, _I, _F, _C = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
#: The kernels' arithmetic and buffers (whatever torch's default dtype is).
F32 = torch.float32
_SIGNATURES = {
    "lif_pool_forward": [_P, _I, _P, _P, _P, _P, _I, _I, _I, _I, _C, _F, _F, _F, _C, _C],
    "lif_pool_backward": [_P, _I, _P, _P, _P, _P, _P, _C, _P, _I, _I, _I, _I, _C, _F, _F, _F,
                          _C, _C, _F, _F, _C],
    "lif_pool_cl_forward": [_P, _I, _P, _F, _P, _P, _I, _I, _I, _I, _I, _C, _F, _F, _F, _C,
                            _C],
    "lif_pool_cl_backward": [_P, _I, _P, _F, _P, _P, _P, _C, _P, _I, _I, _I, _I, _I, _C, _F, _F,
                             _F, _C, _C, _F, _F, _C],
}


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The compiled kernels (``neuron_pool_kernels.cpp``; raises :class:`build.BuildError`)."""
    return build.bind(Path(__file__).with_name("neuron_pool_kernels.cpp"), _SIGNATURES)


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _cpu_forward(x, x_stride, v0, out, arg, v_last, steps, p, h, w, tau, decay_input,
                 v_threshold, v_reset):
    library().lif_pool_forward(
        x.data_ptr(), x_stride, v0.data_ptr(), out.data_ptr(), _ptr(arg), v_last.data_ptr(),
        steps, p, h, w, mode(tau, decay_input), float(tau or 1.0), float(v_threshold),
        float(v_reset or 0.0), int(v_reset is None), torch.get_num_threads())


def _cpu_backward(x, x_stride, v0, arg, g_out, g_v, gx, static, gv0, steps, p, h, w, tau,
                  decay_input, v_threshold, v_reset, detach_reset, surrogate):
    library().lif_pool_backward(
        x.data_ptr(), x_stride, v0.data_ptr(), arg.data_ptr(), g_out.data_ptr(), _ptr(g_v),
        gx.data_ptr(), int(static), _ptr(gv0), steps, p, h, w, mode(tau, decay_input),
        float(tau or 1.0), float(v_threshold), float(v_reset or 0.0), int(v_reset is None),
        int(detach_reset), *surrogate_args(surrogate)[1:], torch.get_num_threads())


_CPU = SimpleNamespace(forward=_cpu_forward, backward=_cpu_backward)


class _LifPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, v0, steps, tau, decay_input, v_threshold, v_reset, surrogate,
                detach_reset, kernels):
        static = x.dim() == 4
        dtype, dev = x.dtype, x.device
        x = x.contiguous()
        shape = x.shape if static else x.shape[1:]
        b, c, h, w = shape
        p = b * c
        keep = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        replay = kernels is _CPU  # backward recomputes H from x and v0 (module docstring)
        out = torch.empty(steps, b, c, h // 2, w // 2, dtype=F32, device=dev)
        arg = torch.empty(out.shape, dtype=torch.uint8, device=dev) if keep else None
        v_last = torch.empty(shape, dtype=F32, device=dev)
        ctx.v_shape = v0.shape
        v0 = v0.expand(shape).float().contiguous()
        x_stride = 0 if static else p * h * w
        if replay:
            kernels.forward(x, x_stride, v0, out, arg, v_last, steps, p, h, w, tau, decay_input,
                            v_threshold, v_reset)
            if keep:
                ctx.save_for_backward(x, v0, arg)
        else:
            hs = torch.empty(steps, *shape, dtype=F32, device=dev) if keep else None
            kernels.forward(x, x_stride, v0, out, arg, hs, v_last, steps, p, h, w, tau,
                            decay_input, v_threshold, v_reset)
            if keep:
                ctx.save_for_backward(hs, arg)
        ctx.geometry = (steps, shape, x_stride)
        ctx.args = (static, dtype, tau, decay_input, v_threshold, v_reset, surrogate,
                    detach_reset, kernels)
        ctx.set_materialize_grads(False)
        return out.to(dtype), v_last.to(dtype)

    @staticmethod
    def backward(ctx, g_out, g_v):
        *saved, arg = ctx.saved_tensors
        static, dtype, tau, decay_input, v_threshold, v_reset, surrogate, detach_reset, \
            kernels = ctx.args
        steps, shape, x_stride = ctx.geometry
        b, c, h, w = shape
        dev = arg.device
        g_out = (torch.zeros(arg.shape, dtype=F32, device=dev) if g_out is None
                 else g_out.float().contiguous())
        g_v = None if g_v is None else g_v.float().contiguous()
        gx = torch.empty(shape if static else (steps, *shape), dtype=F32, device=dev)
        gv0 = torch.empty(shape, dtype=F32, device=dev)
        geometry = (steps, b * c, h, w, tau, decay_input, v_threshold, v_reset, detach_reset,
                    surrogate)
        if kernels is _CPU:
            x, v0 = saved
            kernels.backward(x, x_stride, v0, arg, g_out, g_v, gx, static, gv0, *geometry)
        else:
            kernels.backward(saved[0], arg, g_out, g_v, gx, static, gv0, *geometry)
        gv0 = gv0.sum_to_size(ctx.v_shape).to(dtype) if ctx.needs_input_grad[1] else None
        return gx.to(dtype), gv0, None, None, None, None, None, None, None, None


def _is_channels_last(x: Tensor) -> bool:
    """``x`` ([.., C, H, W]) holds its channels innermost in memory (and C, H·W > 1)."""
    return x.movedim(-3, -1).is_contiguous() and not x.is_contiguous()


def _innermost(t: Tensor) -> Tensor:
    """[.., C, H, W] → its values as a contiguous [.., H, W, C] tensor (a view if they are)."""
    return t.movedim(-3, -1).contiguous()


class _LifPoolChannelsLast(torch.autograd.Function):
    """:class:`_LifPool` on the CPU for channels-last tensors (``lif_pool_cl_*``): the input,
    the pooled spikes, the membrane and every gradient stay channels-last, so the convolutions
    around the block run in the layout oneDNN is fastest in with no reordering between them.
    ``v0`` None: the neurons start at rest (``v_rest``), with no tensor written for it."""

    @staticmethod
    def forward(ctx, x, v0, v_rest, steps, tau, decay_input, v_threshold, v_reset, surrogate,
                detach_reset):
        static = x.dim() == 4
        dtype = x.dtype
        b, c, h, w = x.shape if static else x.shape[1:]
        x_cl = _innermost(x)
        v0_cl = None if v0 is None else _innermost(v0.expand(b, c, h, w).float())
        out = torch.empty(steps, b, h // 2, w // 2, c, dtype=F32)
        v_last = torch.empty(b, h, w, c, dtype=F32)
        library().lif_pool_cl_forward(
            x_cl.data_ptr(), 0 if static else b * h * w * c, _ptr(v0_cl), v_rest, out.data_ptr(),
            v_last.data_ptr(), steps, b, h, w, c, mode(tau, decay_input), float(tau or 1.0),
            float(v_threshold), float(v_reset or 0.0), int(v_reset is None),
            torch.get_num_threads())
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            ctx.save_for_backward(x_cl, v0_cl)
        ctx.v_shape = None if v0 is None else v0.shape
        ctx.args = (static, dtype, (b, h, w, c), steps, v_rest, tau, decay_input, v_threshold,
                    v_reset, surrogate, detach_reset)
        ctx.set_materialize_grads(False)
        return out.movedim(-1, -3).to(dtype), v_last.movedim(-1, -3).to(dtype)

    @staticmethod
    def backward(ctx, g_out, g_v):
        x_cl, v0_cl = ctx.saved_tensors
        static, dtype, shape, steps, v_rest, tau, decay_input, v_threshold, v_reset, surrogate, \
            detach_reset = ctx.args
        b, h, w, c = shape
        g_out = (torch.zeros(steps, b, h // 2, w // 2, c, dtype=F32) if g_out is None
                 else _innermost(g_out.float()))
        g_v = None if g_v is None else _innermost(g_v.float())
        gx = torch.empty(x_cl.shape, dtype=F32)
        gv0 = torch.empty(shape, dtype=F32) if ctx.needs_input_grad[1] else None
        library().lif_pool_cl_backward(
            x_cl.data_ptr(), 0 if static else b * h * w * c, _ptr(v0_cl), v_rest,
            g_out.data_ptr(), _ptr(g_v), gx.data_ptr(), int(static), _ptr(gv0), steps, b, h, w,
            c, mode(tau, decay_input), float(tau or 1.0), float(v_threshold),
            float(v_reset or 0.0), int(v_reset is None), int(detach_reset),
            *surrogate_args(surrogate)[1:], torch.get_num_threads())
        if gv0 is not None:
            gv0 = gv0.movedim(-1, -3).sum_to_size(ctx.v_shape).to(dtype)
        return (gx.movedim(-1, -3).to(dtype), gv0, None, None, None, None, None, None, None,
                None)


def lif_pool(neuron: nn.Module, pool: nn.Module, x: Tensor, steps: int | None = None) -> Tensor:
    """``pool(neuron(x_seq))`` → ``[T, B, C, H/2, W/2]``, fused where it applies.

    ``x``: ``[T, B, C, H, W]``, or ``[B, C, H, W]`` with ``steps`` (the same input at every
    step). Fused for an IF/LIF neuron (not recording) and ``MaxPool2d(2)`` on the neuron's
    ``cpu`` backend (ATan surrogate, float32) or ``triton`` backend; otherwise the two layers run
    as they are. The neuron's state is updated either way. On the CPU a channels-last ``x``
    (channels innermost in memory) gives channels-last spikes and membrane, and gradient.
    """
    kernels = _launchers(neuron, pool, x) if x.dim() == (4 if steps else 5) else None
    if kernels is None:
        x_seq = x.unsqueeze(0).expand(steps, *x.shape) if steps else x
        y = neuron(x_seq)
        t, b = y.shape[:2]
        pooled = pool(y.reshape(t * b, *y.shape[2:]))
        pooled = pooled.reshape(t, b, *pooled.shape[1:])
        # the layers in the input's layout, so the next ones run as after the fused kernel
        return channels_last(pooled) if _is_channels_last(x) else pooled
    steps = steps or x.shape[0]
    shape = x.shape if x.dim() == 4 else x.shape[1:]
    v_rest = 0.0 if neuron.v_reset is None else neuron.v_reset
    if kernels is _CPU and _is_channels_last(x):
        out, neuron.v = _LifPoolChannelsLast.apply(
            x, neuron.carried(shape), v_rest, steps, neuron.tau, neuron.decay_input,
            neuron.v_threshold, neuron.v_reset, neuron.surrogate, neuron.detach_reset)
        return out
    v0 = neuron._initial(x.new_empty((1, *shape)) if x.dim() == 4 else x, v_rest)
    out, neuron.v = _LifPool.apply(x, v0, steps, neuron.tau, neuron.decay_input,
                                   neuron.v_threshold, neuron.v_reset, neuron.surrogate,
                                   neuron.detach_reset, kernels)
    return out
