"""Session setup: without a CUDA device, Triton kernels run in Triton's interpreter.

Triton decides whether to interpret when a kernel is decorated (``@triton.jit``, when
``spikeforge.kernels.triton_gpu`` is first imported), so the variable is set here, before any
test module is imported. The interpreter runs the kernels on CPU tensors with numpy, so the
``triton`` backend is checked against the reference loops on any machine with triton installed;
with a GPU the kernels compile and run on it instead (``TRITON_INTERPRET=1`` forces the
interpreter there too). No other test uses Triton, so the setting changes nothing else.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def triton_device() -> str:
    """The device the ``triton`` backend runs on here: ``"cuda"``, or ``"cpu"`` under the
    interpreter; skips the test where triton is not installed."""
    from spikeforge import kernels

    try:
        kernels.get_backend("triton", "cuda")
    except kernels.BackendUnavailable as err:
        pytest.skip(f"{err} (pip install triton)")
    from spikeforge.kernels.triton_math import interpreting

    return "cpu" if interpreting() else "cuda"
