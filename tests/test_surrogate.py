import math

import pytest
import torch

from spikeforge import surrogate
from spikeforge.surrogate import ATan, FastSigmoid, Sigmoid

X = torch.tensor([-2.0, -0.5, -0.1, 0.0, 0.1, 0.5, 2.0], dtype=torch.float64)


def _grad(sg, x, strict=False):
    x = x.clone().requires_grad_(True)
    sg(x, strict=strict).sum().backward()
    return x.grad


def test_forward_is_heaviside_with_both_conventions():
    assert ATan()(X).tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert ATan()(X, strict=True).tolist() == [0, 0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("alpha", [2.0, 5.0])
def test_atan_gradient_closed_form(alpha):
    want = [alpha / 2 / (1 + (math.pi / 2 * alpha * v) ** 2) for v in X.tolist()]
    assert _grad(ATan(alpha), X).tolist() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("alpha", [4.0, 1.5])
def test_sigmoid_gradient_closed_form(alpha):
    def s(v):
        return 1 / (1 + math.exp(-alpha * v))

    want = [alpha * s(v) * (1 - s(v)) for v in X.tolist()]
    assert _grad(Sigmoid(alpha), X).tolist() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("slope", [25.0, 3.0])
def test_fast_sigmoid_gradient_closed_form(slope):
    want = [1 / (1 + slope * abs(v)) ** 2 for v in X.tolist()]
    assert _grad(FastSigmoid(slope), X, strict=True).tolist() == pytest.approx(want, rel=1e-12)


def test_lookup_by_name_and_bad_names():
    assert surrogate.get("atan") == ATan(2.0)
    assert surrogate.get("superspike", 10.0) == FastSigmoid(10.0)
    with pytest.raises(ValueError, match="unknown surrogate 'relu'"):
        surrogate.get("relu")
    with pytest.raises(ValueError, match="alpha"):
        ATan(0.0)
