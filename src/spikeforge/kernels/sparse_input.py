"""Weight gradients of layers whose inputs are mostly zeros: spikes, or black MNIST pixels.

For ``y = X·Wᵀ + b`` (X ``[R, K]``, W ``[N, K]``) the weight gradient is ``∂L/∂W = Gᵀ·X`` with
``G = ∂L/∂y`` ``[R, N]``. When X is binary spikes at a firing rate of a few percent, or an
MNIST image (81 % of its pixels are exactly 0), most of that GEMM multiplies by zero. The
compiled kernel (``sparse_input_kernels.cpp``) adds each row of G into the columns of X's
nonzero entries only: ``nonzeros · N`` multiply-adds instead of ``R · K · N``. The forward pass
stays torch's own ``F.linear``, so outputs and spikes are unchanged; the gradient equals
``Gᵀ·X`` up to float summation order (each entry summed over rows in order, independent of the
thread count).

Measured on rleaky's shapes and a csnn-sized layer (AMD EPYC Zen 5, 2 threads): RLeaky's
128×128 recurrent weight at 12.5 % firing 217 → 102 µs, the 784→128 encoder on MNIST-like
images 135 → 92 µs, a 3136→1024 layer at 10 % firing 16.3 → 6.7 ms. Above
:data:`MAX_DENSITY` nonzeros the kernel declines and torch's GEMM runs (after a one-thread pass
that counts them); below :data:`MIN_OUTPUTS` outputs (a 10-class readout) torch's GEMM is faster
at any density and is used directly. csnn's 3136→1024 layer is not one of these: its inputs,
max-pooled spikes, are 31 % nonzero in a trained net and 55 % in a fresh one.

Under ``create_graph=True`` (double backward) the gradient is torch's differentiable GEMM. An
output gradient that is NaN or infinite where the input is 0 adds nothing here, where the GEMM's
0·NaN would give NaN; elsewhere non-finite values propagate alike.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import build

#: Largest fraction of nonzero inputs for which the kernel runs: its time met torch's GEMM at
#: about 0.5 nonzero for RLeaky's 1152×128 spikes and about 0.3 for a 512×3136 spike input.
MAX_DENSITY = 0.3
#: Fewest outputs N for which the kernel is tried (a row of G shorter than one 16-float vector
#: leaves the kernel slower than the GEMM).
MIN_OUTPUTS = 16

_P, _I, _F, _C = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
_SIGNATURES = {"sparse_input_weight_grad": [_P, _P, _P, _I, _I, _I, _F, _C]}
#: The kernel's return type: 1 when it declined (too many nonzeros), else 0.
_RESTYPE = _C


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The compiled kernel (``sparse_input_kernels.cpp``; raises :class:`build.BuildError`)."""
    lib = build.bind(Path(__file__).with_name("sparse_input_kernels.cpp"), _SIGNATURES)
    lib.sparse_input_weight_grad.restype = _RESTYPE
    return lib


def _applies(g: Tensor, x: Tensor) -> bool:
    return (g.device.type == "cpu" and g.dtype == torch.float32 and x.dtype == torch.float32
            and g.shape[-1] >= MIN_OUTPUTS and g.numel() > 0 and x.numel() > 0
            and build.loads(library))


def weight_grad(g: Tensor, x: Tensor) -> Tensor:
    """``Gᵀ·X`` ``[N, K]`` for ``g`` ``[R, N]`` and ``x`` ``[R, K]``, summed over the nonzero
    entries of ``x`` only when it is sparse enough (see the module docstring), else
    ``g.t() @ x``.

    Raises:
        ValueError: ``g`` and ``x`` are not 2-D with the same number of rows.
    """
    if g.dim() != 2 or x.dim() != 2 or g.shape[0] != x.shape[0]:
        raise ValueError(f"g and x must be [R, N] and [R, K], got {tuple(g.shape)} and "
                         f"{tuple(x.shape)}")
    differentiable = torch.is_grad_enabled() and (g.requires_grad or x.requires_grad)
    if not differentiable and _applies(g, x):
        g, x = g.contiguous(), x.contiguous()
        out = torch.empty(g.shape[1], x.shape[1], dtype=torch.float32)
        declined = library().sparse_input_weight_grad(
            x.data_ptr(), g.data_ptr(), out.data_ptr(), x.shape[0], x.shape[1], g.shape[1],
            MAX_DENSITY, torch.get_num_threads())
        if not declined:
            return out
    return g.t() @ x


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        g2 = g.reshape(-1, g.shape[-1])
        g_x = (g @ weight) if need_x else None
        g_w = weight_grad(g2, x.reshape(-1, x.shape[-1])) if need_w else None
        g_b = g2.sum(0) if ctx.has_bias and need_b else None
        return g_x, g_w, g_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` (x ``[..., K]``, weight ``[N, K]``, bias ``[N]``) whose weight
    gradient skips the zero entries of ``x`` (:func:`weight_grad`) on CPU float32 outside
    autocast; elsewhere plain ``F.linear``."""
    if (x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or torch.is_autocast_enabled("cpu") or not torch.is_grad_enabled()):
        return F.linear(x, weight, bias)
    return _Linear.apply(x, weight, bias)


class SparseInputLinear(nn.Linear):
    """``nn.Linear`` for inputs that are mostly zeros (spikes, MNIST images): the same forward
    pass and parameters, a weight gradient computed from the nonzero inputs (:func:`linear`)."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
