"""Multi-step neuron kernels: one call runs a neuron's whole time loop.

Every backend implements the same two functions with the signatures of
:mod:`spikeforge.kernels.reference` and returns (spikes, membrane), each ``[T, ...]``:

    if_lif(x_seq, v, tau, decay_input, v_threshold, v_reset, surrogate, detach_reset)
    leaky(x_seq, u, beta, threshold, reset_zero, surrogate)

Backends: ``"reference"`` (the plain autograd loop, the test oracle), ``"cpu"`` (compiled C++
with OpenMP, :mod:`.cpu`), ``"triton"`` (CUDA GPUs, :mod:`.triton_gpu`, imported only when
asked for). ``"auto"`` picks ``cpu`` for CPU tensors and ``triton`` for CUDA tensors, and falls
back to ``reference`` with a warning when the fused backend cannot be built or imported.

Beside the neuron loops: :mod:`.rleaky` (RLeaky as one autograd node, any device),
:mod:`.neuron_pool` (IF/LIF and the 2×2 max pool after it as one kernel), :mod:`.sparse`
(N-MNIST's Conv-MaxPool-Leaky blocks computed from the nonzero events and spikes), and
:mod:`.poisson` (the compiled Poisson encoder behind :func:`spikeforge.encoding.poisson`, alone
or fused into a first Linear layer).
"""

from __future__ import annotations

import importlib
import warnings
from functools import cache
from types import ModuleType

from . import reference

BACKENDS = ("auto", "reference", "cpu", "triton")
_MODULES = {"cpu": ".cpu", "triton": ".triton_gpu"}


class BackendUnavailable(RuntimeError):
    """A fused backend was asked for by name but cannot run here."""


@cache
def _load(name: str) -> ModuleType:
    try:
        module = importlib.import_module(_MODULES[name], __name__)
        if not module.available():
            raise BackendUnavailable(f"the {name} kernels cannot run on this machine")
    except BackendUnavailable:
        raise
    except Exception as err:  # a missing compiler, triton or GPU: reported, not fatal for auto
        raise BackendUnavailable(f"the {name} kernels cannot run on this machine: {err}") from err
    return module


@cache
def _auto(device_type: str) -> ModuleType:
    name = "triton" if device_type == "cuda" else ("cpu" if device_type == "cpu" else None)
    if name is None:
        return reference
    try:
        return _load(name)
    except BackendUnavailable as err:
        warnings.warn(f"{err}; using the reference loop (slower, same results)", stacklevel=3)
        return reference


def get_backend(name: str, device_type: str = "cpu") -> ModuleType:
    """The kernel module for ``name`` on a device of type ``device_type``.

    ``"auto"`` chooses the fused backend of the device; ``"cpu"``/``"triton"`` raise
    :class:`BackendUnavailable` when they cannot run, instead of falling back.
    """
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "reference":
        return reference
    if name == "auto":
        return _auto(device_type)
    return _load(name)
