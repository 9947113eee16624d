import warnings

import pytest
import torch

from spikeforge import encoding
from spikeforge.errors import SpikeforgeWarning


def test_poisson_rate_matches_probability_and_zero_never_fires():
    p = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    g = torch.Generator().manual_seed(0)
    n = 20000
    spikes = encoding.poisson(p, n, generator=g)
    assert spikes.shape == (n, 5)
    rate = spikes.mean(0)
    sigma = (p * (1 - p) / n).sqrt()
    assert ((rate - p).abs() <= 3 * sigma + 1e-12).all()
    assert spikes[:, 0].sum() == 0 and spikes[:, 4].sum() == n


def test_direct_repeats_without_copy():
    x = torch.rand(2, 3)
    d = encoding.direct(x, 4)
    assert d.shape == (4, 2, 3) and torch.equal(d[3], x)
    assert d.data_ptr() == x.data_ptr()


def test_latency_one_spike_brighter_earlier():
    x = torch.tensor([1.0, 0.5, 0.0])
    s = encoding.latency(x, 5)
    assert s.sum(0).tolist() == [1, 1, 0]
    assert s[:, 0].argmax().item() == 0 and s[:, 1].argmax().item() == 2


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match="T"):
        encoding.poisson(torch.rand(3), steps)


@pytest.fixture
def fresh_range_warning(monkeypatch):
    """The Poisson range warning as in a new process (it is given once per process)."""
    monkeypatch.setattr(encoding, "_range_warned", False)


@pytest.mark.parametrize("encode", [
    lambda x, g: encoding.poisson(x, 20, generator=g),
    lambda x, g: encoding.poisson_linear(x, torch.ones(3, 6), 20, generator=g),
    lambda x, g: encoding.poisson_linear(x.double(), torch.ones(3, 6, dtype=torch.float64), 20,
                                         generator=g),
], ids=["poisson", "poisson_linear", "poisson_linear_float64"])
def test_inputs_outside_0_1_warn_once_naming_the_range_then_are_clamped(encode,
                                                                         fresh_range_warning):
    normalised = (torch.tensor([[0.0, 0.2, 0.5, 0.9, 1.0, 0.0]]) - 0.1307) / 0.3081
    with pytest.warns(SpikeforgeWarning, match=r"inputs in \[-0\.4242, 2\.821\], outside \[0, 1\]"):
        got = encode(normalised, torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # once: the second call is silent
        again = encode(normalised, torch.Generator().manual_seed(3))
        want = encode(normalised.clamp(0, 1), torch.Generator().manual_seed(3))
    assert torch.equal(got, again) and torch.equal(got, want)


def test_inputs_inside_0_1_give_no_warning(fresh_range_warning):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoding.poisson(torch.tensor([0.0, 0.5, 1.0]), 5)
        encoding.poisson_linear(torch.rand(2, 6), torch.ones(3, 6), 5)
    assert encoding._range_warned is False
