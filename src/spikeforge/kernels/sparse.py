"""Sparse first block for event data: Conv2d → MaxPool2d(2) computed from the nonzero inputs.

N-MNIST frames are 1–2 % nonzero, so a dense first convolution spends almost all of its work on
zeros and writes a full-resolution output that only the pooling reads. :func:`conv_pool` scatters
the convolution from the nonzeros into a per-sample buffer and pools it at once (CPU kernel
``sparse_conv_pool`` of :mod:`.cpu`); the result equals the dense computation up to float
summation order. It applies only where that is exact in meaning and pays off, and returns None
otherwise, so callers fall back to their dense layers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: Use the sparse path only below this fraction of nonzero inputs.
MAX_DENSITY = 0.1


def _fits(conv: nn.Module, pool: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(pool, nn.MaxPool2d)
            and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)
            and conv.padding[0] == conv.padding[1] and conv.kernel_size[0] == conv.kernel_size[1]
            and pool.kernel_size in (2, (2, 2)) and pool.stride in (2, (2, 2))
            and pool.padding in (0, (0, 0)) and pool.dilation in (1, (1, 1))
            and not pool.ceil_mode and not pool.return_indices)


def conv_pool(x_seq: Tensor, conv: nn.Module, pool: nn.Module) -> Tensor | None:
    """``pool(conv(x))`` over ``x_seq`` [T, B, C, H, W] → [T, B, O, H', W'], or None when the
    sparse kernel does not apply (not CPU float32, input needing a gradient, autocast on, dense
    input, other layer settings, or no compiled kernels)."""
    if (x_seq.device.type != "cpu" or x_seq.dtype != torch.float32 or x_seq.dim() != 5
            or x_seq.requires_grad or torch.is_autocast_enabled("cpu") or not _fits(conv, pool)
            or conv.weight.dtype != torch.float32):
        return None
    if torch.count_nonzero(x_seq).item() > MAX_DENSITY * x_seq.numel():
        return None
    from . import get_backend

    backend = get_backend("auto", "cpu")
    if not hasattr(backend, "sparse_conv_pool"):
        return None
    t, b = x_seq.shape[:2]
    out = backend.sparse_conv_pool(x_seq.reshape(t * b, *x_seq.shape[2:]), conv.weight,
                                   conv.bias, conv.padding[0])
    return out.reshape(t, b, *out.shape[1:])
