"""The Poisson code fused into the first Linear layer equals encoding, then a Linear layer."""

import pytest
import torch
import torch.nn.functional as F

from spikeforge import encoding, functional, models
from spikeforge.kernels import poisson as compiled
from spikeforge.train import build, recipes

pytestmark = pytest.mark.skipif(not compiled.available(),
                                reason="the compiled CPU kernels are not available here")


def _images(b, f, zero=0.8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, f, generator=g)
    x[torch.rand(b, f, generator=g) < zero] = 0
    return x


def _dyadic(o, f, seed=1):
    """Weights k/8: every sum of them is exact in float32, so summation order cannot matter."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-8, 9, (o, f), generator=g) / 8).float()


def _both(x, w, steps, seed=7):
    fused = encoding.poisson_linear(x, w, steps, torch.Generator().manual_seed(seed))
    spikes = encoding.poisson(x, steps, torch.Generator().manual_seed(seed))
    return fused, F.linear(spikes.to(w.dtype), w), spikes


@pytest.mark.parametrize("b,f,o,steps", [(2, 5, 1, 1), (3, 784, 10, 4), (64, 784, 10, 100),
                                         (5, 37, 16, 9), (4, 50, 21, 3), (2, 13, 40, 100)])
def test_forward_draws_the_encoders_spikes(b, f, o, steps):
    x = _images(b, f)
    x[0] = 0                       # a sample with no pixel that can fire
    x[-1, :3] = 1.0                # pixels that always fire
    fused, dense, spikes = _both(x, _dyadic(o, f), steps)
    assert fused.shape == (steps, b, o) and fused.dtype == torch.float32
    assert torch.equal(fused, dense)
    assert not fused[:, 0].any()
    assert spikes[:, -1, :3].all()


def test_pixel_list_equals_the_encoders_thresholds():
    """The compiled one-pass list of firing pixels (feature, threshold, per-sample start) is the
    encoder's (_thresholds), edge values included: p > 1, p too small to ever fire, NaN, < 0."""
    x = _images(5, 33, seed=3)
    x[1, :8] = torch.tensor([1.7, 1.0, 1e-9, -0.25, float("nan"), 0.99999, 2 ** -17, 0.5])
    x[3] = 0                          # a sample with no pixel that can fire
    b, f = x.shape
    feat, q = torch.empty(b * f, dtype=torch.int32), torch.empty(b * f, dtype=torch.int32)
    start = torch.empty(b + 1, dtype=torch.int64)
    compiled.library().poisson_linear_pixels(x.data_ptr(), b, f, feat.data_ptr(), q.data_ptr(),
                                             start.data_ptr())
    idx, q_ref = compiled._thresholds(x)
    k = int(start[-1])
    assert k == idx.numel()
    assert torch.equal(feat[:k], (idx % f).to(torch.int32)) and torch.equal(q[:k], q_ref)
    assert torch.equal(start, torch.searchsorted(idx, torch.arange(b + 1) * f))
    assert start[3] == start[4]


def test_forward_with_float_weights_matches_up_to_summation_order():
    x = _images(16, 784)
    w = torch.randn(10, 784)
    fused, dense, _ = _both(x, w, 50)
    torch.testing.assert_close(fused, dense, rtol=0, atol=2e-5)


@pytest.mark.parametrize("o", [10, 16, 21])
def test_weight_gradient_equals_the_dense_layers(o):
    x = _images(8, 100, zero=0.6)
    w = torch.randn(o, 100, requires_grad=True)
    fused, dense, _ = _both(x, w, 30)
    g = torch.randn_like(fused)
    (grad_fused,) = torch.autograd.grad(fused, w, g)
    (grad_dense,) = torch.autograd.grad(dense, w, g)
    torch.testing.assert_close(grad_fused, grad_dense, rtol=1e-5, atol=1e-5)
    assert grad_fused[:, (x == 0).all(0)].abs().sum() == 0      # never-firing pixels get none


def test_gradient_against_hand_computed_sum():
    """One always-firing pixel: ∂(Σ_t I[t]·c)/∂W[o, f] = T·c[o] for it, 0 for silent pixels."""
    x = torch.tensor([[0.0, 1.0, 0.0]])
    w = torch.zeros(2, 3, requires_grad=True)
    c = torch.tensor([0.5, -2.0])
    (encoding.poisson_linear(x, w, 6) * c).sum().backward()
    assert torch.equal(w.grad, torch.tensor([[0.0, 3.0, 0.0], [0.0, -12.0, 0.0]]))


def test_other_dtypes_take_the_dense_path_with_the_same_spikes():
    x = _images(4, 30)
    w = _dyadic(5, 30).double()
    fused, dense, _ = _both(x, w, 7)
    assert fused.dtype == torch.float64 and torch.equal(fused, dense)


def test_shape_errors_are_named():
    with pytest.raises(ValueError, match=r"\[B, F\]"):
        encoding.poisson_linear(torch.rand(2, 1, 28, 28), torch.zeros(10, 784), 5)
    with pytest.raises(ValueError, match="positive integer"):
        encoding.poisson_linear(torch.rand(2, 4), torch.zeros(3, 4), 0)


def test_fc_lif_on_images_equals_fc_lif_on_the_encoded_spikes():
    net = models.FcLif(steps=20)
    with torch.no_grad():
        net.net[1].module.weight.copy_(_dyadic(10, 784) * 0.25)
    x = _images(6, 784, zero=0.5).view(6, 1, 28, 28)
    fused = net(x, generator=torch.Generator().manual_seed(3))
    functional.reset(net)
    dense = net(encoding.poisson(x, 20, torch.Generator().manual_seed(3)))
    assert fused.shape == (20, 6, 10) and torch.equal(fused, dense) and fused.sum() > 0
    with pytest.raises(ValueError, match="without steps"):
        models.FcLif()(x)


def test_task_runs_fc_lif_fused_and_other_models_on_encoded_input():
    config = recipes.recipe_defaults("fc-lif")
    config.T = 12
    task = build.build_task(config)
    net = build.build_model(config)
    with torch.no_grad():
        net.net[1].module.weight.copy_(_dyadic(10, 784) * 0.25)
    x = _images(3, 784, zero=0.5).view(3, 1, 28, 28)
    out = task.run(net, x, torch.Generator().manual_seed(4))
    functional.reset(net)
    assert torch.equal(out, net.net(task.encode(x, torch.Generator().manual_seed(4))))
    functional.reset(net)
    other = models.FcLif(steps=5)      # steps differing from the task's: encoded by the task
    assert task.run(other, x).shape == (12, 3, 10)
