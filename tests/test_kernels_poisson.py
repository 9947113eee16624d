"""The sparse Poisson encoder: Bernoulli(p) per pixel and step, silent zeros, narrow dtypes."""

import pytest
import torch

from spikeforge import encoding
from spikeforge.kernels import poisson as compiled_poisson

NO_COMPILER = "the compiled Poisson kernels do not build here (they need g++)"


def _compiled(x, steps, generator=None, dtype=None):
    out = encoding._poisson_compiled(x, steps, generator, dtype or x.dtype)
    if out is None:
        pytest.skip(NO_COMPILER)
    return out


def _torch(x, steps, generator=None, dtype=None):
    return encoding._poisson_torch(x, steps, generator, dtype or x.dtype)


PATHS = [pytest.param(_compiled, id="compiled"), pytest.param(_torch, id="torch")]


@pytest.mark.parametrize("encode", PATHS)
def test_rate_within_three_sigma_of_p_and_zero_pixels_silent(encode):
    p = torch.tensor([0.0, 1 / 255, 0.013, 0.1, 0.25, 0.5, 0.77, 0.9, 0.999, 1.0, 0.0, 0.3])
    n = 40000
    spikes = encode(p, n, torch.Generator().manual_seed(1))
    assert spikes.shape == (n, 12) and spikes.dtype == torch.float32
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    rate = spikes.mean(0, dtype=torch.float64)
    sigma = (p.double() * (1 - p.double()) / n).sqrt()
    assert ((rate - p.double()).abs() <= 3 * sigma + 2**-17).all(), rate - p
    assert spikes[:, 0].sum() == 0 and spikes[:, 10].sum() == 0
    assert spikes[:, 9].sum() == n


@pytest.mark.parametrize("encode", PATHS)
def test_draws_are_independent_across_steps_and_neighbouring_pixels(encode):
    """Four neighbouring pixels share one 64-bit draw in the compiled path: no correlation."""
    n = 40000
    p = torch.full((8,), 0.5)
    s = encode(p, n, torch.Generator().manual_seed(2)).double()
    sigma = (0.25 * 0.75 / n) ** 0.5
    for a, b in [(s[:, 0], s[:, 1]), (s[:, 2], s[:, 3]), (s[:, 3], s[:, 4]),
                 (s[:-1, 0], s[1:, 0]), (s[:-1, 5], s[1:, 6])]:
        assert abs((a * b).mean().item() - 0.25) <= 3 * sigma


@pytest.mark.parametrize("encode", PATHS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.bfloat16, torch.float16,
                                   torch.float32, torch.float64, torch.int64])
def test_every_output_dtype_holds_the_same_spikes(encode, dtype):
    x = torch.rand(3, 1, 28, 28)
    x[x < 0.7] = 0
    ref = encode(x, 20, torch.Generator().manual_seed(3))
    out = encode(x, 20, torch.Generator().manual_seed(3), dtype)
    assert out.dtype == dtype and out.shape == (20, 3, 1, 28, 28)
    assert torch.equal(out.float(), ref)
    assert not out[:, x == 0].any()


@pytest.mark.parametrize("encode", PATHS)
def test_same_generator_seed_same_spikes(encode):
    x = torch.rand(2, 50)
    a = encode(x, 7, torch.Generator().manual_seed(5))
    b = encode(x, 7, torch.Generator().manual_seed(5))
    c = encode(x, 7, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(9)
    d = encode(x, 7)
    torch.manual_seed(9)
    assert torch.equal(d, encode(x, 7))


def test_float64_images_give_the_spikes_of_float32_ones_and_of_poisson_linear():
    """A float64 image is drawn by the compiled pass too (as bytes, then converted), so it gets
    the spikes its float32 copy gets, and those poisson_linear adds up."""
    if not compiled_poisson.available():
        pytest.skip(NO_COMPILER)
    x = torch.rand(4, 30, dtype=torch.float64)
    x[x < 0.6] = 0
    s64 = encoding.poisson(x, 9, torch.Generator().manual_seed(8))
    s32 = encoding.poisson(x.float(), 9, torch.Generator().manual_seed(8))
    assert s64.dtype == torch.float64 and torch.equal(s64, s32.double())
    w = (torch.randint(-8, 9, (5, 30), generator=torch.Generator().manual_seed(1)) / 8).float()
    fused = encoding.poisson_linear(x, w, 9, torch.Generator().manual_seed(8))
    assert torch.equal(fused, torch.nn.functional.linear(s32, w))


def test_public_encoder_uses_the_compiled_path_on_cpu():
    if not compiled_poisson.available():
        pytest.skip(NO_COMPILER)
    x = torch.rand(4, 10)
    assert torch.equal(encoding.poisson(x, 5, torch.Generator().manual_seed(4)),
                       _compiled(x, 5, torch.Generator().manual_seed(4)))
    assert encoding.poisson(x, 5, dtype=torch.float64).dtype == torch.float64
