"""How many synapses each input element of a linear layer drives.

For a layer ``f`` linear in its input (Linear, Conv1d/2d/3d, transposed convolutions, the
per-neuron scale of a one-to-one recurrence), the number of weight taps that input element
``x[i]`` is multiplied by is

    fanout[i] = ∂/∂x[i] Σ_j f_{W=1, b=0}(x)[j]

the gradient of the summed output with every weight set to one and every bias to zero. It counts
exactly the taps that land inside the output: for a Conv2d, ``out_channels / groups`` times the
kernel positions that put ``x[i]`` under an output pixel, so padding (taps on padded zeros are
never counted), stride and dilation are all accounted for, and for a Linear it is
``out_features`` everywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..neuron import OneToOne

#: Layers whose input drives synapses: a spike arriving there is one AC per tap.
SYNAPTIC = (nn.Linear, nn.modules.conv._ConvNd, OneToOne)


def fanout(module: nn.Module, shape: tuple[int, ...]) -> Tensor:
    """Taps driven by each element of one sample ``[*shape]`` of ``module``'s input → float64
    ``[*shape]`` on the CPU (exact integers). ``shape`` excludes the batch axis, e.g.
    ``(C, H, W)`` for a Conv2d, ``(in_features,)`` for a Linear.

    Raises ``TypeError`` for a module that is not one of :data:`SYNAPTIC`.
    """
    if not isinstance(module, SYNAPTIC):
        raise TypeError(f"fanout needs a Linear, convolution or OneToOne, got {type(module)}")
    params = {name: (torch.ones if name == "weight" else torch.zeros)(p.shape, dtype=torch.float64)
              for name, p in module.named_parameters(recurse=False)}
    x = torch.ones((1, *shape), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        out = functional_call(module, params, (x,))
        (grad,) = torch.autograd.grad(out.sum(), x)
    return grad[0]
