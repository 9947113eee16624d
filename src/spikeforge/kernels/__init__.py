"""Multi-step neuron kernels: one call runs a neuron's whole time loop.

Every backend implements the same two functions with the signatures of
:mod:`spikeforge.kernels.reference` and returns (spikes, membrane), each ``[T, ...]``:

    if_lif(x_seq, v, tau, decay_input, v_threshold, v_reset, surrogate, detach_reset)
    leaky(x_seq, u, beta, threshold, reset_zero, surrogate)

``backend="reference"`` is the plain autograd loop (the test oracle); ``"auto"`` picks the
fastest backend available for the tensor's device.
"""

from __future__ import annotations

from types import ModuleType

from . import reference

BACKENDS = ("auto", "reference")


def get_backend(name: str, device_type: str = "cpu") -> ModuleType:
    """The kernel module for ``name`` on a device of type ``device_type``."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    return reference
