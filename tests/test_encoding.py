import pytest
import torch

from spikeforge import encoding


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
