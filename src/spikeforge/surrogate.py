"""The spike function: Heaviside forward, a smooth surrogate derivative backward.

Forward, with the firing convention of the neuron that calls it:

    S = Θ(x),  Θ(x) = 1 if x ≥ 0 else 0   (inclusive, SpikingJelly IF/LIF)
               Θ(x) = 1 if x > 0 else 0   (strict, snnTorch Leaky/RLeaky)

Backward replaces dΘ/dx by a surrogate:

    ATan(α=2):          (α/2) / (1 + (π/2·α·x)²)
    Sigmoid(α=4):       α·σ(αx)·(1 − σ(αx))
    FastSigmoid(k=25):  1 / (1 + k·|x|)²          (SuperSpike)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class Surrogate:
    """A surrogate gradient: ``derivative(x)`` is the closed form used in backward.

    ``surrogate(x)`` returns Θ(x) (inclusive) with that derivative in backward;
    ``surrogate(x, strict=True)`` fires on x > 0.
    """

    name: str = ""

    @property
    def param(self) -> float:
        raise NotImplementedError

    def derivative(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor, strict: bool = False) -> Tensor:
        return _SpikeFunction.apply(x, self, strict)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.param})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.param == other.param  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.param))


class ATan(Surrogate):
    """dΘ/dx ≈ (α/2) / (1 + (π/2·α·x)²); the default of both reference frameworks."""

    name = "atan"

    def __init__(self, alpha: float = 2.0) -> None:
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    @property
    def param(self) -> float:
        return self.alpha

    def derivative(self, x: Tensor) -> Tensor:
        return (self.alpha / 2) / (1 + (math.pi / 2 * self.alpha * x) ** 2)


class Sigmoid(Surrogate):
    """dΘ/dx ≈ α·σ(αx)·(1 − σ(αx))."""

    name = "sigmoid"

    def __init__(self, alpha: float = 4.0) -> None:
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    @property
    def param(self) -> float:
        return self.alpha

    def derivative(self, x: Tensor) -> Tensor:
        sg = torch.sigmoid(self.alpha * x)
        return self.alpha * sg * (1 - sg)


class FastSigmoid(Surrogate):
    """SuperSpike: dΘ/dx ≈ 1 / (1 + k·|x|)²."""

    name = "fast_sigmoid"

    def __init__(self, slope: float = 25.0) -> None:
        if not slope > 0:
            raise ValueError(f"slope must be > 0, got {slope}")
        self.slope = float(slope)

    @property
    def param(self) -> float:
        return self.slope

    def derivative(self, x: Tensor) -> Tensor:
        return 1 / (1 + self.slope * x.abs()) ** 2


SURROGATES: dict[str, type[Surrogate]] = {
    "atan": ATan,
    "sigmoid": Sigmoid,
    "fast_sigmoid": FastSigmoid,
    "superspike": FastSigmoid,
}


def get(name: str, param: float | None = None) -> Surrogate:
    """Surrogate by config name (``atan``, ``sigmoid``, ``fast_sigmoid``/``superspike``)."""
    try:
        cls = SURROGATES[name.lower()]
    except KeyError:
        known = ", ".join(sorted(SURROGATES))
        raise ValueError(f"unknown surrogate {name!r}; choose one of {known}") from None
    return cls() if param is None else cls(param)


def heaviside(x: Tensor, strict: bool = False) -> Tensor:
    """Θ(x) in the dtype of x, without gradient."""
    return (x > 0).to(x.dtype) if strict else (x >= 0).to(x.dtype)


class _SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, surrogate: Surrogate, strict: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return heaviside(x, strict)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.derivative(x), None, None
