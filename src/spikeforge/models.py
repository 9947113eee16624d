"""The recipe networks, with the layer shapes of their reference tutorials.

Inputs and outputs (T steps, B samples):
    FcLif        Poisson spikes [T, B, 1, 28, 28], or images [B, 1, 28, 28] it encodes itself
                 → spikes [T, B, 10]
    CSNN         image [B, 1, 28, 28] (fed at every step) or [T, B, 1, 28, 28] → spikes [T, B, 10]
    NmnistCSNN   event frames [T, B, 2, 34, 34] → (spikes, membrane) [T, B, 10] each
    RLeakyNet    image [B, 1, 28, 28] (fed at every step) or [T, B, ...] → (spikes, membrane)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .batchnorm import RepeatedBatchNorm2d
from .encoding import poisson_linear, seed
from .kernels import sparse
from .kernels.neuron_pool import lif_pool
from .kernels.sparse_input import SparseInputLinear
from .layer import SeqToBatch, channels_last, seq
from .neuron import IF, LIF, Leaky, RLeaky
from .surrogate import ATan


class FcLif(nn.Module):
    """Flatten → Linear(784, 10, no bias) → LIF(τ): SpikingJelly's single-layer MNIST net.

    Input: spikes ``[T, B, 1, 28, 28]``, or images ``[B, 1, 28, 28]`` in [0, 1] that it
    Poisson-encodes for ``steps`` steps itself, with the draws fed straight into the Linear
    (:func:`spikeforge.encoding.poisson_linear`): the same spikes as
    ``encoding.poisson(x, steps, generator)`` and the same output up to float summation order,
    without building the ``[T, B, 784]`` spike tensor. On the ``triton`` backend (a GPU) the
    same spikes are drawn into a tensor by a Triton kernel and fed to one dense GEMM instead.
    """

    def __init__(self, tau: float = 2.0, in_features: int = 784, classes: int = 10,
                 steps: int | None = None) -> None:
        super().__init__()
        self.steps = steps
        self.net = seq(nn.Flatten(), nn.Linear(in_features, classes, bias=False),
                       LIF(tau=tau, surrogate=ATan()))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() != 4:
            return self.net(x)
        if self.steps is None:
            raise ValueError("FcLif was built without steps, so it takes spikes [T, B, ...], "
                             f"not images of shape {tuple(x.shape)}")
        weight = self.net[1].module.weight
        if self.net[2].fused_backend(x) == "triton":
            # a GPU: the same spikes as one tensor, then one dense GEMM (kernels package: Speed)
            from .kernels import triton_poisson

            spikes = triton_poisson.encode(x.flatten(1), self.steps, seed(generator),
                                           weight.dtype)
            return self.net[2](F.linear(spikes, weight))
        return self.net[2](poisson_linear(x.flatten(1), weight, self.steps, generator))


class CSNN(nn.Module):
    """{Conv3x3(C)-BN-IF-MaxPool2}×2 → Linear(C·7·7, C·4·4)-IF → Linear(C·4·4, 10)-IF.

    SpikingJelly's convolutional MNIST/Fashion-MNIST net, no conv/linear bias. A static image is
    the same input at every step, so the first Conv-BN runs once and is broadcast over T. Each
    IF-MaxPool pair runs as one kernel on the CPU (:func:`spikeforge.kernels.neuron_pool.lif_pool`,
    the same spikes), so the full-resolution spikes are never stored. The first BN counts the T
    copies in its running variance (:class:`~spikeforge.batchnorm.RepeatedBatchNorm2d`). On the
    CPU the activations are channels-last up to the Flatten (oneDNN's convolutions and batch
    norms are 1.2–3× faster so than on [B, C, H, W] rows); the Linear layers see the usual C·H·W
    order.
    ``pool="avg"`` swaps both max pools for 2×2 average pools (exportable to NIR exactly).
    """

    def __init__(self, channels: int = 64, steps: int = 4, classes: int = 10,
                 pool: Literal["max", "avg"] = "max") -> None:
        super().__init__()
        if channels < 1 or steps < 1:
            raise ValueError(f"channels and steps must be >= 1, got {channels}, {steps}")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        pool_cls = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
        c = channels
        self.steps = steps
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1, bias=False),
                                  RepeatedBatchNorm2d(c))
        self.body = seq(
            IF(surrogate=ATan()), pool_cls(2),
            nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
            IF(surrogate=ATan()), pool_cls(2),
            nn.Flatten(), nn.Linear(c * 7 * 7, c * 4 * 4, bias=False), IF(surrogate=ATan()),
            nn.Linear(c * 4 * 4, classes, bias=False), IF(surrogate=ATan()),
        )

    def forward(self, x: Tensor) -> Tensor:
        layout = channels_last if x.device.type == "cpu" else nn.Identity()
        if x.dim() == 4:  # BN's running variance as over the T copies
            h, steps = self.stem[1](self.stem[0](layout(x)), self.steps), self.steps
        else:  # the time steps as batch, channels-last after the reshape
            h, steps = self.stem(layout(x.flatten(0, 1))).unflatten(0, x.shape[:2]), None
        body = self.body
        h = lif_pool(body[0], body[1].module, h, steps)
        h = lif_pool(body[4], body[5].module, body[3](body[2](h)))
        return body[6:](h)


class NmnistCSNN(nn.Module):
    """12C5-MP2-32C5-MP2-800FC10 with Leaky(β) neurons: snnTorch's N-MNIST tutorial net.

    On sparse CPU frames both Conv-MaxPool blocks run from the nonzero inputs only (events, then
    binary spikes), fused with their Leaky neurons and the Linear into one pass per sample
    (:func:`spikeforge.kernels.sparse.hidden_blocks`; layer by layer with
    :func:`~spikeforge.kernels.sparse.conv_pool` where the fused pass does not apply), with the
    activations channels-last ([T, B, H, W, C]) so no layer transposes; equal to the dense
    layers up to float rounding. The neurons' state ``v`` and recorded traces keep the
    ``[.., C, H, W]`` layout. On the ``triton`` backend (a GPU) the layers run dense (cuDNN
    convolutions, Triton Leaky loops).
    """

    def __init__(self, beta: float = 0.5, classes: int = 10) -> None:
        super().__init__()
        self.net = seq(
            nn.Conv2d(2, 12, 5), nn.MaxPool2d(2), Leaky(beta, surrogate=ATan()),
            nn.Conv2d(12, 32, 5), nn.MaxPool2d(2), Leaky(beta, surrogate=ATan()),
            nn.Flatten(), nn.Linear(32 * 5 * 5, classes),
            Leaky(beta, surrogate=ATan(), output="both"),
        )

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        net = self.net
        if net[2].fused_backend(frames) == "triton":  # a GPU: cuDNN's dense convolutions
            return net(frames)
        x = self._fused(frames) if frames.dim() == 5 else None
        if x is not None:
            return net[8](x)
        h = sparse.conv_pool(frames, net[0].module, net[1].module)
        if h is None:
            return net(frames)
        s = self._leaky_channels_last(net[2], h)
        h = sparse.conv_pool(s, net[3].module, net[4].module, channels_last=True, max_density=1)
        if h is None:
            return net[3:](s.permute(0, 1, 4, 2, 3))
        s = self._leaky_channels_last(net[5], h)
        t, b, height, width, channels = s.shape
        fc = net[7].module
        weight = fc.weight.view(-1, channels, height, width).permute(0, 2, 3, 1)
        return net[8](F.linear(s.reshape(t, b, -1), weight.reshape(fc.weight.shape), fc.bias))

    def _fused(self, frames: Tensor) -> Tensor | None:
        """Both Conv-MaxPool-Leaky blocks and the Linear in one pass
        (:func:`spikeforge.kernels.sparse.hidden_blocks`) → [T, B, 10], or None where that does
        not apply (see there; also a recording, learnable-β, per-channel-β or non-fused-backend
        hidden neuron)."""
        net = self.net
        args = []
        for neuron in (net[2], net[5]):
            if (neuron.record or neuron.beta.numel() != 1 or neuron.beta.requires_grad
                    or neuron.backend not in ("auto", "cpu")):
                return None
            u0 = neuron.v.permute(0, 2, 3, 1) if neuron.v is not None and neuron.v.dim() == 4 \
                else None
            args.append(sparse.LeakyArgs(u0, neuron.beta.clamp(0, 1).item(), neuron.threshold,
                                         neuron.reset == "zero", neuron.surrogate))
        out = sparse.hidden_blocks(frames, net[0].module, net[1].module, args[0], net[3].module,
                                   net[4].module, args[1], net[7].module)
        if out is None:
            return None
        x, net[2].v, net[5].v = out[0], out[1].permute(0, 3, 1, 2), out[2].permute(0, 3, 1, 2)
        return x

    @staticmethod
    def _leaky_channels_last(neuron: Leaky, x: Tensor) -> Tensor:
        """``neuron`` (elementwise) over channels-last ``x`` [T, B, H, W, C] without a transpose;
        its state ``v`` stays [B, C, H, W] (a view); per-channel β or recording permute."""
        if neuron.record or neuron.beta.numel() > 1:
            return neuron(x.permute(0, 1, 4, 2, 3)).permute(0, 1, 3, 4, 2)
        if neuron.v is not None and neuron.v.dim() == 4:
            neuron.v = neuron.v.permute(0, 2, 3, 1)
        spikes = neuron(x)
        neuron.v = neuron.v.permute(0, 3, 1, 2)
        return spikes


class RLeakyNet(nn.Module):
    """784 → 128 RLeaky(β) → 10 RLeaky(β): snnTorch's recurrent regression-as-classification net.

    ``recurrence``: ``"linear"`` (all-to-all), ``"one_to_one"``, or ``"conv"`` (Conv3x3(8) →
    MaxPool2 → convolutional RLeaky → Linear(8·14·14, 10) → RLeaky). The 784 → 128 encoder's
    weight gradient skips the black pixels
    (:class:`~spikeforge.kernels.sparse_input.SparseInputLinear`).
    """

    def __init__(self, beta: float = 0.9, steps: int = 10,
                 recurrence: Literal["linear", "one_to_one", "conv"] = "linear",
                 hidden: int = 128, classes: int = 10) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps = steps
        if recurrence == "conv":
            channels = 8
            self.encoder: nn.Module = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1),
                                                    nn.MaxPool2d(2))
            self.hidden = RLeaky(beta, channels, recurrence="conv", surrogate=ATan())
            self.readout = SeqToBatch(nn.Sequential(nn.Flatten(),
                                                    nn.Linear(channels * 14 * 14, classes)))
        else:
            self.encoder = nn.Sequential(nn.Flatten(), SparseInputLinear(784, hidden))
            self.hidden = RLeaky(beta, hidden, recurrence=recurrence, surrogate=ATan())
            self.readout = SeqToBatch(nn.Linear(hidden, classes))
        self.output = RLeaky(beta, classes, recurrence="one_to_one" if recurrence == "one_to_one"
                             else "linear", surrogate=ATan(), output="both")

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() == 4:
            h = self.encoder(x)
            h = h.unsqueeze(0).expand(self.steps, *h.shape)
        else:
            h = SeqToBatch(self.encoder)(x)
        return self.output(self.readout(self.hidden(h)))


MODELS: dict[str, type[nn.Module]] = {
    "fc-lif": FcLif,
    "csnn": CSNN,
    "nmnist-csnn": NmnistCSNN,
    "rleaky": RLeakyNet,
}


def build(name: str, **kwargs) -> nn.Module:
    """A recipe network by name (``fc-lif``, ``csnn``, ``nmnist-csnn``, ``rleaky``)."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
    return cls(**kwargs)
