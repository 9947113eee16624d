"""Sparse Conv2d → MaxPool2d(2) for event frames and spike maps, computed from the nonzeros.

N-MNIST frames are 1–2 % nonzero and the spike maps between layers are binary, so a dense
convolution spends most of its work on zeros and writes a full-resolution output that only the
pooling reads. Here every pooling window's four convolution outputs are summed in registers
from the window's nonzero inputs only and pooled at once, keeping the winner (first maximum
wins, as torch; NaN propagates); inputs sparser than the pooling windows (events) are scattered
into the convolution outputs instead. Backward uses that only the winner of a window has a gradient:

    dL/dx[c, i, j]     = Σ_{o, p}  g[o, p] · W[o, c, i − y_p + pad, j − x_p + pad]
    dL/dW[o, c, a, b]  = Σ_{n, p}  g[n, o, p] · x[n, c, y_p + a − pad, x_p + b − pad]
    dL/dbias[o]        = Σ_{n, p}  g[n, o, p]

with g the pooled gradient and (y_p, x_p) the winning position of window p for channel o; the
input gradient is a scatter from the pooled gradients, the weight gradient a gather at the
nonzero inputs.

- :func:`conv_pool`: one Conv-MaxPool layer, channels-last output (``[T, B, H, W, C]``) so
  layers chained through elementwise neurons need no transposes.
- :func:`hidden_blocks`: N-MNIST's whole hidden net (Conv-MaxPool-Leaky twice, then the Linear)
  as one pass per sample, so only the Linear's output, the second layer's membrane and winners
  and the first layer's membrane every :data:`SEGMENT` steps reach memory; backward recomputes
  the first layer (from its few events) segment by segment.

The kernels (``sparse_kernels.cpp``, portable vectors of simd16.h) are compiled on first use, see
:mod:`.build`. Results equal the dense layers up to float summation order (the Leaky steps
bit-identical to the CPU neuron kernel); both functions return None where the kernels do not
apply, so callers fall back to their dense layers.
"""


from __future__ import annotations

import ctypes
import math
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..surrogate import Surrogate
from . import build

#: Every buffer the kernels read or write (whatever torch's default dtype is).
F32 = torch.float32

#: Use the sparse path only below this fraction of nonzero inputs (estimated on a few steps).
MAX_DENSITY = 0.25
#: Largest kernel size the compiled input gradient is instantiated for.
MAX_KERNEL = 7
#: Widest padded input row the kernels take (one 64-bit mask per row).
MAX_WIDTH = 64
#: Time steps between the first layer's membranes the fused block keeps for its backward (which
#: recomputes the steps in between from the few events): memory T/SEGMENT of that membrane, at
#: one more layer-1 pass. The second layer's membrane and winners are kept at every step.
SEGMENT = 16
#: Time steps sampled to estimate the density of the input.
DENSITY_SAMPLES = 16
#: The fused block's backward splits the batch into this many runs of samples, each with its own
#: gradient sums, handed to whichever thread is free: balanced, and the same sums at any
#: thread count.
GROUPS = 32

_P, _I, _C = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_SIGNATURES = {
    "scp_forward": [_P, _I, _I, _I, _I, _C, _P, _P, _I, _I, _I, _I, _P, _P, _C],
    "scp_backward": [_P, _I, _I, _I, _I, _C, _P, _P, _I, _I, _I, _I, _P, _P, _P, _I, _P, _C],
    "block_forward": [_P, _I, _I, _I, _I, _I, _P, _P, _I, _I, _I, _I, _P, _P, _I, _I, _I, _I, _P,
                      _P, _I, _I, _P, _P, _P, _I, _P, _P, _P, _P, _P, _P, _C],
    "block_backward": [_P, _I, _I, _I, _I, _I, _P, _P, _I, _I, _I, _I, _P, _P, _P, _I, _I, _I, _I,
                       _I, _P, _I, _I, _P, _I, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P,
                       _P, _I, _C],
}


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The compiled sparse kernels, or None where they cannot be built here."""
    try:
        return build.bind(Path(__file__).with_name("sparse_kernels.cpp"), _SIGNATURES)
    except build.BuildError:
        return None


def _pad16(n: int) -> int:
    return -(-n // 16) * 16


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _forward_weights(weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """The weight as [C, K+2, K+2, OP] (output channels last, zero border) and the bias [OP]."""
    o, c, k, _ = weight.shape
    op = _pad16(o)
    wext = torch.zeros(c, k + 2, k + 2, op, dtype=F32)
    wext[:, 1:-1, 1:-1, :o] = weight.detach().permute(1, 2, 3, 0)
    bp = torch.zeros(op, dtype=F32)
    if bias is not None:
        bp[:o] = bias.detach()
    return wext, bp


class _ConvPool(torch.autograd.Function):
    """``max_pool2d(conv2d(x, weight, bias, padding=pad), 2)`` as [N, PH, PW, O]; ``x`` is
    [N, C, H, W] (``channels_last`` False) or [N, H, W, C], float32, contiguous. The winners of
    the pooling windows are kept for backward unless ``keep`` is False (no gradient needed)."""

    @staticmethod
    def forward(ctx, x, weight, bias, pad, channels_last, keep):
        if channels_last:
            n, h, w, c = x.shape
        else:
            n, c, h, w = x.shape
        o, _, k, _ = weight.shape
        wext, bp = _forward_weights(weight, bias)
        ph, pw = (h + 2 * pad - k + 1) // 2, (w + 2 * pad - k + 1) // 2
        out = torch.empty(n, ph, pw, o, dtype=F32)
        arg = torch.empty(n, ph, pw, _pad16(o), dtype=torch.uint8) if keep else None
        library().scp_forward(x.data_ptr(), n, c, h, w, int(channels_last), wext.data_ptr(),
                              bp.data_ptr(), o, _pad16(o), k, pad, out.data_ptr(), _ptr(arg),
                              torch.get_num_threads())
        if keep:
            ctx.save_for_backward(x, weight, bias, arg)
        ctx.meta = (pad, channels_last)
        return out

    @staticmethod
    def backward(ctx, g):
        x, weight, bias, arg = ctx.saved_tensors
        pad, channels_last = ctx.meta
        need_x, need_w = ctx.needs_input_grad[:2]
        if channels_last:
            n, h, w, c = x.shape
        else:
            n, c, h, w = x.shape
        o, _, k, _ = weight.shape
        op, rp = _pad16(o), _pad16(k * c)
        threads = torch.get_num_threads()
        gw_parts = torch.zeros(threads, c, k + 2, k + 2, op, dtype=F32) if need_w else None
        gb_parts = torch.zeros(threads, op, dtype=F32)
        wrow = gx = None
        if need_x:
            wrow = torch.zeros(o, k, rp, dtype=F32)
            wrow[..., :k * c] = weight.detach().permute(0, 2, 3, 1).reshape(o, k, k * c)
            gx = torch.empty(n, h, w, c, dtype=F32)
        g = g.float().contiguous()
        library().scp_backward(x.data_ptr(), n, c, h, w, int(channels_last), arg.data_ptr(),
                               g.data_ptr(), o, op, k, pad, _ptr(gw_parts), gb_parts.data_ptr(),
                               _ptr(wrow), rp, _ptr(gx), threads)
        gw = None
        if need_w:
            gw = gw_parts.sum(0)[:, 1:-1, 1:-1, :o].permute(3, 0, 1, 2).contiguous()
        gb = gb_parts.sum(0)[:o] if bias is not None and ctx.needs_input_grad[2] else None
        if gx is not None and not channels_last:
            gx = gx.permute(0, 3, 1, 2)
        return gx, gw, gb, None, None, None


def _fits(conv: nn.Module, pool: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(pool, nn.MaxPool2d)
            and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)
            and conv.padding[0] == conv.padding[1] and conv.kernel_size[0] == conv.kernel_size[1]
            and conv.kernel_size[0] <= MAX_KERNEL
            and pool.kernel_size in (2, (2, 2)) and pool.stride in (2, (2, 2))
            and pool.padding in (0, (0, 0)) and pool.dilation in (1, (1, 1))
            and not pool.ceil_mode and not pool.return_indices)


def _sparse_enough(x_seq: Tensor, max_density: float) -> bool:
    """Whether at most ``max_density`` of the inputs are nonzero, on up to
    :data:`DENSITY_SAMPLES` evenly spaced time steps."""
    step = max(1, x_seq.shape[0] // DENSITY_SAMPLES)
    sample = x_seq[::step].detach()
    return torch.count_nonzero(sample).item() <= max_density * sample.numel()


def _applies(x_seq: Tensor, conv: nn.Module, pool: nn.Module, channels_last: bool) -> bool:
    return (x_seq.device.type == "cpu" and x_seq.dtype == torch.float32 and x_seq.dim() == 5
            and not torch.is_autocast_enabled("cpu") and _fits(conv, pool)
            and conv.weight.dtype == torch.float32 and conv.weight.device.type == "cpu"
            and x_seq.shape[-1 if channels_last else 2] == conv.in_channels
            and x_seq.shape[-2 if channels_last else -1] + 2 * conv.padding[0] <= MAX_WIDTH
            and x_seq.shape[0] * x_seq.shape[1] > 0)


def conv_pool(x_seq: Tensor, conv: nn.Module, pool: nn.Module, channels_last: bool = False,
              max_density: float = MAX_DENSITY) -> Tensor | None:
    """``pool(conv(x))`` over ``x_seq`` ([T, B, C, H, W], or [T, B, H, W, C] with
    ``channels_last``) → channels-last [T, B, H', W', O], differentiable w.r.t. the input, the
    weight and the bias; or None when the sparse kernels do not apply (not CPU float32, autocast
    on, more than ``max_density`` of the inputs nonzero, other layer settings, or no compiled
    kernels). ``max_density=1`` skips the density estimate (binary spike maps with many output
    channels: the kernels cost about what the dense layers cost even on dense input)."""
    if not _applies(x_seq, conv, pool, channels_last):
        return None
    if (max_density < 1 and not _sparse_enough(x_seq, max_density)) or library() is None:
        return None
    t, b = x_seq.shape[:2]
    x = x_seq.reshape(t * b, *x_seq.shape[2:]).contiguous()
    params = [p for p in (conv.weight, conv.bias) if p is not None]
    keep = torch.is_grad_enabled() and any(p.requires_grad for p in (x, *params))
    out = _ConvPool.apply(x, conv.weight, conv.bias, conv.padding[0], channels_last, keep)
    return out.reshape(t, b, *out.shape[1:])


class LeakyArgs(NamedTuple):
    """A Leaky layer (snnTorch) for the fused pass: membrane ``u0`` before the first step
    (channels-last; None, or another shape, for rest), β, threshold, reset to zero (else
    subtract), surrogate."""

    u0: Tensor | None
    beta: float
    threshold: float
    reset_zero: bool
    surrogate: Surrogate


def _linear_weights(w3: Tensor, shape2: tuple[int, int, int]) -> Tensor:
    """The Linear weight [O3, C2·H2·W2] (flattened NCHW) with its inputs in channels-last order
    [O3, H2·W2·C2]."""
    c, h, w = shape2
    return w3.detach().view(-1, c, h, w).permute(0, 2, 3, 1).reshape(w3.shape[0], -1)


class _Block(torch.autograd.Function):
    """Conv-MaxPool → Leaky → Conv-MaxPool → Leaky → Linear in one pass (``block_forward``):
    frames [T, B, C, H, W] → (X3 [T, B, O3], U1[T − 1], U2[T − 1]), membranes channels-last;
    what backward needs is kept only with ``keep``."""

    @staticmethod
    def forward(ctx, frames, w1, b1, w2, b2, w3, b3, u01, u02, leaky, pads, keep):
        t, b, c, h, w = frames.shape
        (o1, _, k1, _), (o2, _, k2, _), o3 = w1.shape, w2.shape, w3.shape[0]
        pad1, pad2 = pads
        op2 = _pad16(o2)
        wext1, bp1 = _forward_weights(w1, b1)
        wext2, bp2 = _forward_weights(w2, b2)
        op3 = _pad16(o3)
        w3t = torch.zeros(w3.shape[1], op3, dtype=F32)
        w3t[:, :o3] = _linear_weights(w3, (o2, *u02.shape[1:3])).t()
        bp3 = torch.zeros(op3, dtype=F32)
        if b3 is not None:
            bp3[:o3] = b3.detach()
        ck1 = u2seq = win2 = None
        if keep:
            ck1 = torch.empty(-(-t // SEGMENT), *u01.shape, dtype=F32)
            u2seq = torch.empty(b, t + 1, *u02.shape[1:], dtype=F32)
            win2 = torch.empty(b, t, u02.shape[1], u02.shape[2], op2, dtype=torch.uint8)
        u_last1, u_last2 = torch.empty(u01.shape, dtype=F32), torch.empty(u02.shape, dtype=F32)
        x3 = torch.empty(t, b, o3, dtype=F32)
        library().block_forward(
            frames.data_ptr(), t, b, c, h, w, wext1.data_ptr(), bp1.data_ptr(), o1, _pad16(o1),
            k1, pad1, wext2.data_ptr(), bp2.data_ptr(), o2, op2, k2, pad2, w3t.data_ptr(),
            bp3.data_ptr(), o3, op3, leaky.data_ptr(), u01.data_ptr(), u02.data_ptr(), SEGMENT,
            _ptr(ck1), _ptr(u2seq), _ptr(win2), u_last1.data_ptr(), u_last2.data_ptr(),
            x3.data_ptr(), torch.get_num_threads())
        ctx.save_for_backward(frames, w1, b1, w2, b2, w3, b3, ck1, u2seq, win2, leaky)
        ctx.pads = pads
        return x3, u_last1, u_last2

    @staticmethod
    def backward(ctx, gx3, g_last1, g_last2):
        frames, w1, b1, w2, b2, w3, b3, ck1, u2seq, win2, leaky = ctx.saved_tensors
        pad1, pad2 = ctx.pads
        t, b, c, h, w = frames.shape
        (o1, _, k1, _), (o2, _, k2, _), o3 = w1.shape, w2.shape, w3.shape[0]
        op1, op2, op3, rp2 = _pad16(o1), _pad16(o2), _pad16(o3), _pad16(k2 * o1)
        shape2 = (o2, *u2seq.shape[2:4])
        wext1, bp1 = _forward_weights(w1, b1)
        wext2, bp2 = _forward_weights(w2, b2)
        wrow2 = torch.zeros(o2, k2, rp2, dtype=F32)
        wrow2[..., :k2 * o1] = w2.detach().permute(0, 2, 3, 1).reshape(o2, k2, k2 * o1)
        w3cl = _linear_weights(w3, shape2).contiguous()
        groups = min(b, GROUPS)
        gw1 = torch.zeros(groups, c, k1 + 2, k1 + 2, op1, dtype=F32)
        gw2 = torch.zeros(groups, o1, k2 + 2, k2 + 2, op2, dtype=F32)
        gw3 = torch.zeros(groups, w3.shape[1], op3, dtype=F32)
        gb1, gb2, gb3 = (torch.zeros(groups, op, dtype=F32) for op in (op1, op2, op3))
        gu01 = torch.empty(ck1.shape[1:], dtype=F32) if ctx.needs_input_grad[7] else None
        gu02 = torch.empty(b, *u2seq.shape[2:], dtype=F32) if ctx.needs_input_grad[8] else None
        gx3 = torch.zeros(t, b, o3, dtype=F32) if gx3 is None else gx3.float().contiguous()
        g_last1, g_last2 = (None if g is None else g.float().contiguous()
                            for g in (g_last1, g_last2))
        library().block_backward(
            frames.data_ptr(), t, b, c, h, w, wext1.data_ptr(), bp1.data_ptr(), o1, op1, k1, pad1,
            wext2.data_ptr(), bp2.data_ptr(), wrow2.data_ptr(), rp2, o2, op2, k2, pad2,
            w3cl.data_ptr(), o3, op3, leaky.data_ptr(), SEGMENT, ck1.data_ptr(), u2seq.data_ptr(),
            win2.data_ptr(), gx3.data_ptr(), _ptr(g_last1), _ptr(g_last2), gw1.data_ptr(),
            gb1.data_ptr(), gw2.data_ptr(), gb2.data_ptr(), gw3.data_ptr(), gb3.data_ptr(),
            _ptr(gu01), _ptr(gu02), groups, torch.get_num_threads())

        def conv_weight(parts, o):
            return parts.sum(0)[:, 1:-1, 1:-1, :o].permute(3, 0, 1, 2).contiguous()

        gw3 = gw3.sum(0)[:, :o3].t().reshape(o3, shape2[1], shape2[2], o2)
        return (None, conv_weight(gw1, o1), gb1.sum(0)[:o1] if b1 is not None else None,
                conv_weight(gw2, o2), gb2.sum(0)[:o2] if b2 is not None else None,
                gw3.permute(0, 3, 1, 2).reshape(w3.shape), gb3.sum(0)[:o3] if b3 is not None
                else None, gu01, gu02, None, None, None)


def _leaky_floats(a: LeakyArgs) -> list[float]:
    alpha = float(a.surrogate.param)
    return [float(a.beta), float(a.threshold), float(a.reset_zero), alpha / 2,
            math.pi / 2 * alpha]


def hidden_blocks(frames: Tensor, conv1: nn.Module, pool1: nn.Module, leaky1: LeakyArgs,
                  conv2: nn.Module, pool2: nn.Module, leaky2: LeakyArgs, linear: nn.Module,
                  ) -> tuple[Tensor, Tensor, Tensor] | None:
    """Conv1 → MaxPool2 → Leaky → Conv2 → MaxPool2 → Leaky → Flatten → Linear over sparse event
    ``frames`` [T, B, C, H, W] as one pass per sample that keeps only the Linear's output and,
    when a gradient is needed, the second layer's membrane and winners and the first layer's
    membrane every :data:`SEGMENT` steps (backward recomputes the first layer): returns
    (X3 [T, B, O3], U1[T − 1] [B, H1, W1, O1], U2[T − 1] [B, H2, W2, O2]), membranes
    channels-last, differentiable w.r.t. the six layer parameters and both initial membranes;
    or None where that does not apply (see :func:`conv_pool`; also a surrogate other than ATan),
    so callers run the layers one by one. The Leaky steps follow the CPU neuron kernel's
    operation order: identical spikes."""
    out1 = conv1.out_channels if isinstance(conv1, nn.Conv2d) else None
    if (any(getattr(a.surrogate, "name", None) != "atan" for a in (leaky1, leaky2))
            or not isinstance(conv2, nn.Conv2d) or conv2.in_channels != out1
            or conv2.weight.dtype != torch.float32 or conv2.weight.device.type != "cpu"
            or not _fits(conv2, pool2) or frames.requires_grad or frames.dim() != 5
            or not isinstance(linear, nn.Linear) or linear.weight.dtype != torch.float32
            or linear.weight.device.type != "cpu"):
        return None
    k1, pad1 = conv1.kernel_size[0], conv1.padding[0]
    k2, pad2 = conv2.kernel_size[0], conv2.padding[0]
    size1 = [(n + 2 * pad1 - k1 + 1) // 2 for n in frames.shape[-2:]]
    size2 = [(n + 2 * pad2 - k2 + 1) // 2 for n in size1]
    if (size1[1] + 2 * pad2 > MAX_WIDTH or min(size2) < 1
            or linear.in_features != conv2.out_channels * size2[0] * size2[1]):
        return None
    if not _applies(frames, conv1, pool1, False) or not _sparse_enough(frames, MAX_DENSITY):
        return None
    if library() is None:
        return None
    b = frames.shape[1]
    u01, u02 = (a.u0.float().contiguous() if a.u0 is not None and a.u0.shape == (b, *size, o)
                else torch.zeros(b, *size, o, dtype=F32)
                for a, size, o in ((leaky1, size1, out1), (leaky2, size2, conv2.out_channels)))
    leaky = torch.tensor(_leaky_floats(leaky1) + _leaky_floats(leaky2), dtype=F32)
    params = [p for m in (conv1, conv2, linear) for p in (m.weight, m.bias) if p is not None]
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in (*params, u01, u02))
    return _Block.apply(frames.contiguous(), conv1.weight, conv1.bias, conv2.weight, conv2.bias,
                        linear.weight, linear.bias, u01, u02, leaky, (pad1, pad2), keep)
