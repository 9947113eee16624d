"""Stateful spiking neurons, multi-step first: ``forward`` takes ``[T, B, ...]``.

IF and LIF follow SpikingJelly (fire on H − V_th ≥ 0), Leaky and RLeaky follow snnTorch (fire on
U − thr > 0, reset from the previous membrane, detached); the equations are in
:mod:`spikeforge.kernels.reference`. State (``v``, and ``spikes`` for RLeaky) lives in plain
attributes, never in ``state_dict()``; :func:`spikeforge.functional.reset` clears it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from . import kernels
from .kernels import reference
from .kernels.rleaky import rleaky as fused_rleaky
from .surrogate import ATan, Surrogate


def _check_float(name: str, value: float, *, low: float | None = None,
                 low_inclusive: bool = True) -> float:
    value = float(value)
    if value != value:
        raise ValueError(f"{name} must be a number, got NaN")
    if low is not None and (value < low or (not low_inclusive and value == low)):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {op} {low}, got {value}")
    return value


class SpikingNeuron(nn.Module):
    """Shared machinery: state, reset/detach, membrane recording, step vs. multi-step.

    With ``record=True`` every forward appends its membrane ``[T, ...]`` to ``v_seq`` and its
    spikes to ``s_seq`` (both detached), until :meth:`reset_state`; outputs are unchanged.
    """

    def __init__(self, surrogate: Surrogate | None, backend: str, record: bool) -> None:
        super().__init__()
        if surrogate is None:
            surrogate = ATan()
        if not isinstance(surrogate, Surrogate):
            raise ValueError(
                f"surrogate must be a spikeforge.surrogate.Surrogate, got {surrogate!r}"
            )
        kernels.get_backend(backend)
        self.surrogate = surrogate
        self.backend = backend
        self.record = record
        self.v: Tensor | None = None
        self.v_seq: Tensor | None = None
        self.s_seq: Tensor | None = None

    def reset_state(self) -> None:
        """Back to the initial state (membrane at rest, no recorded trace)."""
        self.v = None
        self.v_seq = None
        self.s_seq = None

    def detach_state(self) -> None:
        """Cut the graph through the state, for truncated BPTT."""
        if self.v is not None:
            self.v = self.v.detach()

    def carried(self, shape: torch.Size) -> Tensor | None:
        """The membrane ``v`` left by the last call if it has ``shape``, else None: the
        neurons start at rest."""
        return self.v if self.v is not None and self.v.shape == shape else None

    def _initial(self, x: Tensor, value: float = 0.0) -> Tensor:
        v = self.carried(x.shape[1:])
        if v is None:
            return torch.full(x.shape[1:], value, dtype=x.dtype, device=x.device)
        return v.to(dtype=x.dtype)

    def _check_seq(self, x_seq: Tensor) -> None:
        if not isinstance(x_seq, Tensor) or not x_seq.is_floating_point():
            raise ValueError("x_seq must be a floating-point tensor shaped [T, B, ...]")
        if x_seq.dim() < 2:
            raise ValueError(
                f"x_seq must have rank >= 2 ([T, B, ...]), got shape {tuple(x_seq.shape)}; "
                "use step() for a single time step"
            )

    def _record(self, spikes: Tensor, membrane: Tensor) -> None:
        if not self.record:
            return
        s, v = spikes.detach(), membrane.detach()
        self.s_seq = s if self.s_seq is None else torch.cat([self.s_seq, s])
        self.v_seq = v if self.v_seq is None else torch.cat([self.v_seq, v])

    def _kernel(self, x: Tensor):
        return kernels.get_backend(self.backend, x.device.type)

    def fused_backend(self, x: Tensor) -> str:
        """The backend this neuron's loop runs on for ``x``: ``"reference"``, ``"cpu"`` or
        ``"triton"`` (``"auto"`` resolved for ``x``'s device); layers fused with the neuron
        (:mod:`spikeforge.kernels`) follow it."""
        return self._kernel(x).NAME

    def step(self, x: Tensor):
        """One time step on ``x`` [B, ...]; same result as ``forward`` on a length-1 sequence."""
        if not isinstance(x, Tensor) or x.dim() < 1:
            raise ValueError("x must be a tensor of rank >= 1 ([B, ...]) for step()")
        out = self.forward(x.unsqueeze(0))
        if isinstance(out, tuple):
            return tuple(o[0] for o in out)
        return out[0]


class LIF(SpikingNeuron):
    """Leaky integrate-and-fire, SpikingJelly convention.

    decay_input:    H = V + (X − (V − V_r)) / τ
    no decay_input: H = V − (V − V_r) / τ + X
    S = Θ(H − V_th); hard reset V = H·(1 − S) + V_reset·S, soft (v_reset=None) V = H − V_th·S.
    Input ``[T, B, ...]`` → spikes ``[T, B, ...]``.
    """

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate: Surrogate | None = None,
        detach_reset: bool = False,
        backend: str = "auto",
        record: bool = False,
    ) -> None:
        super().__init__(surrogate, backend, record)
        self.tau = self._check_tau(tau, decay_input)
        self.decay_input = bool(decay_input)
        self.v_threshold = _check_float("v_threshold", v_threshold)
        self.v_reset = None if v_reset is None else _check_float("v_reset", v_reset)
        if self.v_reset is not None and self.v_reset >= self.v_threshold:
            raise ValueError(
                f"v_reset ({self.v_reset}) must be below v_threshold ({self.v_threshold})"
            )
        self.detach_reset = bool(detach_reset)

    @staticmethod
    def _check_tau(tau: float | None, decay_input: bool) -> float | None:
        return _check_float("tau", tau, low=1.0, low_inclusive=not decay_input)

    def forward(self, x_seq: Tensor) -> Tensor:
        self._check_seq(x_seq)
        v0 = self._initial(x_seq, 0.0 if self.v_reset is None else self.v_reset)
        spikes, volts = self._kernel(x_seq).if_lif(
            x_seq, v0, self.tau, self.decay_input, self.v_threshold, self.v_reset,
            self.surrogate, self.detach_reset,
        )
        self.v = volts[-1]
        self._record(spikes, volts)
        return spikes

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, decay_input={self.decay_input}, v_threshold={self.v_threshold}, "
                f"v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
                f"surrogate={self.surrogate}")


class IF(LIF):
    """Integrate-and-fire, SpikingJelly convention: H = V + X, then fire and reset as LIF."""

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate: Surrogate | None = None,
        detach_reset: bool = False,
        backend: str = "auto",
        record: bool = False,
    ) -> None:
        super().__init__(2.0, True, v_threshold, v_reset, surrogate, detach_reset, backend,
                         record)
        self.tau = None

    def extra_repr(self) -> str:
        return (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, "
                f"detach_reset={self.detach_reset}, surrogate={self.surrogate}")


Reset = Literal["subtract", "zero"]
Output = Literal["spikes", "both"]


class _SnnTorchNeuron(SpikingNeuron):
    """β, threshold, reset mechanism and output choice shared by Leaky and RLeaky."""

    def __init__(self, beta: float | Tensor, threshold: float, learn_beta: bool, reset: Reset,
                 output: Output, surrogate: Surrogate | None, backend: str,
                 record: bool) -> None:
        super().__init__(surrogate, backend, record)
        beta_t = torch.as_tensor(beta, dtype=torch.float32)
        if torch.isnan(beta_t).any() or (beta_t < 0).any() or (beta_t > 1).any():
            raise ValueError(f"beta must lie in [0, 1], got {beta}")
        if learn_beta:
            self.beta = nn.Parameter(beta_t.clone())
        else:
            self.register_buffer("beta", beta_t.clone())
        self.threshold = _check_float("threshold", threshold, low=0.0, low_inclusive=False)
        if reset not in ("subtract", "zero"):
            raise ValueError(f"reset must be 'subtract' or 'zero', got {reset!r}")
        if output not in ("spikes", "both"):
            raise ValueError(f"output must be 'spikes' or 'both', got {output!r}")
        self.reset = reset
        self.output = output

    def _beta(self, x: Tensor, float32_loop: bool = False) -> Tensor:
        """β clamped to [0, 1] in ``x``'s dtype, or float32 for a half-precision ``x`` whose loop
        runs in float32 (``float32_loop``): snnTorch's float32 β promotes a bf16/fp16 membrane to
        float32, so β = 0.9 must not become bf16's 0.8984."""
        beta = self.beta.clamp(0, 1)
        if float32_loop and x.dtype in (torch.float16, torch.bfloat16):
            return beta.float()
        return beta.to(dtype=x.dtype)

    def _out(self, spikes: Tensor, mems: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        self._record(spikes, mems)
        return (spikes, mems) if self.output == "both" else spikes


class Leaky(_SnnTorchNeuron):
    """First-order leaky neuron, snnTorch convention (reset from U[t−1], detached):

    R = Θ(U[t−1] − thr);  subtract: U[t] = β·U[t−1] + X[t] − R·thr;
    zero: U[t] = β·(1 − R)·U[t−1] + X[t];  S[t] = Θ(U[t] − thr) (fires on > 0).
    Input ``[T, B, ...]`` → spikes, or (spikes, membrane) with ``output="both"``.
    """

    def __init__(
        self,
        beta: float | Tensor,
        threshold: float = 1.0,
        learn_beta: bool = False,
        reset: Reset = "subtract",
        output: Output = "spikes",
        surrogate: Surrogate | None = None,
        backend: str = "auto",
        record: bool = False,
    ) -> None:
        super().__init__(beta, threshold, learn_beta, reset, output, surrogate, backend, record)

    def forward(self, x_seq: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        self._check_seq(x_seq)
        u0 = self._initial(x_seq)
        kernel = self._kernel(x_seq)  # the fused backends run half precision in float32
        beta = self._beta(x_seq, float32_loop=kernel.NAME != "reference")
        spikes, mems = kernel.leaky(
            x_seq, u0, beta, self.threshold, self.reset == "zero", self.surrogate
        )
        self.v = mems[-1]
        return self._out(spikes, mems)

    def extra_repr(self) -> str:
        return (f"beta={self.beta.tolist()}, threshold={self.threshold}, reset={self.reset}, "
                f"output={self.output}, surrogate={self.surrogate}")


class OneToOne(nn.Module):
    """Per-neuron recurrent scale: V(S) = w ⊙ S, w of shape [n]."""

    def __init__(self, features: int, init: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((features,), float(init)))

    def forward(self, s: Tensor) -> Tensor:
        return self.weight * s


class RLeaky(_SnnTorchNeuron):
    """Recurrent leaky neuron, snnTorch convention; feedback V(S[t−1]) from the layer's last spikes:

    subtract: U[t] = β·U[t−1] + X[t] + V(S[t−1]) − R·thr
    zero:     U[t] = (1 − R)·(β·U[t−1] + X[t] + V(S[t−1]))
    with R = Θ(U[t−1] − thr) detached and S[t] = Θ(U[t] − thr).

    ``recurrence``: ``"linear"`` (all-to-all ``Linear(n, n)``, input ``[T, B, n]``),
    ``"one_to_one"`` (learnable scale per neuron, ``[T, B, n]``) or ``"conv"`` (``Conv2d(c, c, k)``
    with same padding, input ``[T, B, c, H, W]``).
    """

    def __init__(
        self,
        beta: float | Tensor,
        features: int,
        recurrence: Literal["linear", "one_to_one", "conv"] = "linear",
        kernel_size: int = 3,
        threshold: float = 1.0,
        learn_beta: bool = False,
        learn_recurrent: bool = True,
        reset: Reset = "subtract",
        output: Output = "spikes",
        surrogate: Surrogate | None = None,
        backend: str = "auto",
        record: bool = False,
    ) -> None:
        super().__init__(beta, threshold, learn_beta, reset, output, surrogate, backend, record)
        if int(features) < 1:
            raise ValueError(f"features must be >= 1, got {features}")
        self.features = int(features)
        self.recurrence = recurrence
        if recurrence == "linear":
            self.recurrent: nn.Module = nn.Linear(features, features)
        elif recurrence == "one_to_one":
            self.recurrent = OneToOne(features)
        elif recurrence == "conv":
            if kernel_size < 1 or kernel_size % 2 == 0:
                raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
            self.recurrent = nn.Conv2d(features, features, kernel_size, padding=kernel_size // 2)
        else:
            raise ValueError(
                f"recurrence must be 'linear', 'one_to_one' or 'conv', got {recurrence!r}"
            )
        for p in self.recurrent.parameters():
            p.requires_grad_(learn_recurrent)
        self.spikes: Tensor | None = None

    def reset_state(self) -> None:
        super().reset_state()
        self.spikes = None

    def detach_state(self) -> None:
        super().detach_state()
        if self.spikes is not None:
            self.spikes = self.spikes.detach()

    def forward(self, x_seq: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        self._check_seq(x_seq)
        feature_dim = 2 if self.recurrence == "conv" else x_seq.dim() - 1
        want = 5 if self.recurrence == "conv" else None
        if (want is not None and x_seq.dim() != want) or x_seq.shape[feature_dim] != self.features:
            layout = "[T, B, C, H, W]" if self.recurrence == "conv" else "[T, B, ..., n]"
            raise ValueError(
                f"x_seq must be {layout} with {self.features} features, got {tuple(x_seq.shape)}"
            )
        u = self._initial(x_seq)
        fresh = self.spikes is None or self.spikes.shape != u.shape
        beta = self._beta(x_seq)
        if self.backend != "reference" and self.recurrence != "conv":
            bias = self.recurrent.bias if self.recurrence == "linear" else None
            spikes_seq, mems_seq = fused_rleaky(
                x_seq, u, None if fresh else self.spikes, beta, self.recurrent.weight, bias,
                self.recurrence, self.threshold, self.reset == "zero", self.surrogate,
                self.backend != "triton",
            )
            self.v, self.spikes = mems_seq[-1], spikes_seq[-1]
            return self._out(spikes_seq, mems_seq)
        s = torch.zeros_like(u) if fresh else self.spikes
        spikes, mems = [], []
        for t in range(x_seq.shape[0]):
            s, u = reference.rleaky_step(x_seq[t], self.recurrent(s), u, beta, self.threshold,
                                         self.reset == "zero", self.surrogate)
            spikes.append(s)
            mems.append(u)
        self.v, self.spikes = u, s
        return self._out(torch.stack(spikes), torch.stack(mems))

    def extra_repr(self) -> str:
        return (f"beta={self.beta.tolist()}, features={self.features}, "
                f"recurrence={self.recurrence}, threshold={self.threshold}, reset={self.reset}, "
                f"output={self.output}")
