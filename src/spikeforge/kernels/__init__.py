"""Multi-step neuron kernels: one call runs a neuron's whole time loop.

Every backend implements the same two functions with the signatures of
:mod:`spikeforge.kernels.reference` and returns (spikes, membrane), each ``[T, ...]``:

    if_lif(x_seq, v, tau, decay_input, v_threshold, v_reset, surrogate, detach_reset)
    leaky(x_seq, u, beta, threshold, reset_zero, surrogate)

Backends: ``"reference"`` (the plain autograd loop, the test oracle), ``"cpu"`` (compiled C++
with OpenMP, :mod:`.cpu`), ``"triton"`` (CUDA GPUs, :mod:`.triton_gpu`, imported only when
asked for; on CPU tensors where Triton's interpreter is on, ``TRITON_INTERPRET=1``, as in the
tests). ``"auto"`` picks ``cpu`` for CPU tensors and ``triton`` for CUDA tensors, and falls
back to ``reference`` with a warning when the fused backend cannot be built or imported.

Beside the neuron loops: :mod:`.rleaky` (RLeaky as one autograd node, any device),
:mod:`.neuron_pool` (IF/LIF and the 2×2 max pool after it as one kernel; C++ or Triton,
:mod:`.triton_pool`), :mod:`.sparse` (N-MNIST's Conv-MaxPool-Leaky blocks computed from the
nonzero events and spikes), and :mod:`.poisson` (the compiled Poisson encoder behind
:func:`spikeforge.encoding.poisson`, alone or fused into a first Linear layer). :mod:`.fused`
holds the autograd glue the cpu and triton backends share, :mod:`.triton_math` the device
functions of the Triton kernels. A layer fused with a neuron follows that neuron's backend
(:meth:`spikeforge.neuron.SpikingNeuron.fused_backend`).

Speed on a GPU (the ``triton`` backend), path by path; FLOPs and bytes for the recipes' default
batches, since no GPU timing has been taken yet (``benchmarks/gpu_check.py`` takes them):

- Neuron loops and IF-MaxPool: Triton. They are elementwise and memory-bound, so one pass over
  time with the state in registers moves the least data: LIF reads X and writes S, V and H once;
  csnn's first IF-MaxPool (T=4, B=128, 64×28×28 neurons) writes H and a quarter-size pooled
  output and winner byte instead of S and V at full size plus torch's pool reading S back.
- Poisson-Linear (fc-lif): the spikes as a tensor (:mod:`.triton_poisson`, the CPU encoder's
  draws) and one dense GEMM. The fused CPU kernel saves CPU FLOPs by skipping the 81 % zero
  pixels; on a GPU the whole GEMM (T·B = 6,400 rows × 784 × 10 outputs, 0.1 GFLOP, 20 MB of
  float spikes) is a few microseconds of memory traffic, while a scatter from the nonzero pixels
  would add every spike of a sample into the same 10 outputs (atomic contention) for no saving
  worth a kernel.
- N-MNIST's sparse pass: cuDNN's dense convolutions. Dense, one step of nmnist-csnn (T=300,
  B=128) is ≈ 0.13 TFLOP forward (conv1 0.04, conv2 0.09), ≈ 0.4 TFLOP with backward: about
  6 ms at an H200's 67 TFLOPS of plain float32 (less in TF32, cuDNN's default). The CPU pass
  wins by skipping the 98.5 % zero inputs, but on a GPU that skip is an irregular gather or
  atomic scatter per event into 12×5×5 outputs, which loses the tensor cores' regular tiles;
  the Leaky loops around the convolutions (Triton) are memory-bound either way.
- RLeaky: the tensor-operation loop of :mod:`.rleaky` (one autograd node, a cuBLAS GEMM for
  the feedback each step, a few elementwise kernels); the time steps depend on each other
  through the GEMM, so a whole-loop kernel does not apply.
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
