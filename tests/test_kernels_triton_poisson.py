"""The Triton Poisson encoder draws exactly the compiled CPU encoder's spikes for the same seed
(in Triton's interpreter on CPU tensors where there is no GPU, see tests/conftest.py)."""

import pytest
import torch

from spikeforge import encoding
from spikeforge.kernels import build, poisson

pytestmark = pytest.mark.skipif(not build.loads(poisson.library),
                                reason="no compiled CPU kernels here to compare with")


@pytest.fixture(scope="module")
def triton_poisson(triton_device):
    from spikeforge.kernels import triton_poisson

    return triton_poisson


@pytest.mark.parametrize("shape, zero", [((3, 7), 0.5), ((2, 1, 28, 28), 0.81), ((1500,), 0.3),
                                         ((4, 5), 1.0)])
@pytest.mark.parametrize("seed", [0, 1, 12345, 2**62 + 77])
def test_same_spikes_as_the_compiled_encoder(triton_poisson, triton_device, shape, zero, seed):
    g = torch.Generator().manual_seed(len(shape) + seed % 97)
    p = torch.rand(shape, generator=g)
    p[torch.rand(shape, generator=g) < zero] = 0
    p[..., 0] = 1.0 if zero < 1 else 0.0  # p = 1 always fires
    expect = poisson.encode(p, 3, seed, torch.float32)
    got = triton_poisson.encode(p.to(triton_device), 3, seed, torch.float32)
    assert got.shape == (3, *shape) and torch.equal(got.cpu(), expect)
    assert (expect.sum() > 0) == (zero < 1)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bfloat16, torch.float16])
def test_narrow_dtypes(triton_poisson, triton_device, dtype):
    p = torch.rand(2, 300, generator=torch.Generator().manual_seed(0))
    got = triton_poisson.encode(p.to(triton_device), 4, 99, dtype)
    assert got.dtype == dtype
    assert torch.equal(got.cpu(), poisson.encode(p, 4, 99, dtype))


def test_public_encoder_on_a_gpu_draws_the_cpu_spikes(triton_device):
    if triton_device != "cuda":
        pytest.skip("needs a CUDA GPU (the CPU encoder is the compiled one)")
    p = torch.rand(8, 784, generator=torch.Generator().manual_seed(5))
    cpu = encoding.poisson(p, 6, torch.Generator().manual_seed(7))
    gpu = encoding.poisson(p.cuda(), 6, torch.Generator().manual_seed(7))
    assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)
