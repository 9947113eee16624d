"""The weight gradient summed from a layer's nonzero inputs equals Gᵀ·X (kernels/sparse_input)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikeforge.kernels import build, sparse_input
from spikeforge.kernels.sparse_input import SparseInputLinear, weight_grad

pytestmark = pytest.mark.skipif(not build.loads(sparse_input.library),
                                reason="the kernel cannot be compiled here (no C++ compiler)")


def _spikes(rows, features, rate, seed, values=False):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(rows, features, generator=g) < rate).float()
    return x * torch.rand(rows, features, generator=g) if values else x


def test_hand_computed_gradient():
    # x has nonzeros at (0, 1) = 1 and (1, 0) = 2; G's rows are 1…16 and 100…115
    x = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    g = torch.stack([torch.arange(1.0, 17.0), torch.arange(100.0, 116.0), torch.ones(16),
                     torch.ones(16)])
    dw = weight_grad(g, x)
    expected = torch.zeros(16, 3)
    expected[:, 0] = 2 * torch.arange(100.0, 116.0)
    expected[:, 1] = torch.arange(1.0, 17.0)
    assert torch.equal(dw, expected)


@pytest.mark.parametrize("rows,features,outputs,rate,values", [
    (1152, 128, 128, 0.125, False),   # RLeaky's recurrent weight
    (128, 784, 128, 0.19, True),      # the rleaky encoder on MNIST-like pixels
    (37, 53, 29, 0.2, True),          # odd sizes: a partial vector and a partial tile
    (1, 5, 16, 0.2, False),
    (64, 600, 300, 0.05, False),
])
def test_equals_the_dense_product(rows, features, outputs, rate, values):
    x = _spikes(rows, features, rate, seed=rows, values=values)
    g = torch.randn(rows, outputs, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(weight_grad(g, x), g.t() @ x, rtol=1e-5, atol=1e-5)


def test_same_result_on_every_thread_count():
    x, g = _spikes(256, 300, 0.1, seed=3), torch.randn(256, 256)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = weight_grad(g, x)
        torch.set_num_threads(max(2, before))
        several = weight_grad(g, x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, several)


def test_dense_inputs_and_narrow_outputs_take_the_gemm():
    dense = _spikes(64, 100, 0.9, seed=4)
    g = torch.randn(64, 32)
    assert torch.equal(weight_grad(g, dense), g.t() @ dense)
    narrow = torch.randn(64, sparse_input.MIN_OUTPUTS - 1)
    sparse = _spikes(64, 100, 0.05, seed=5)
    assert torch.equal(weight_grad(narrow, sparse), narrow.t() @ sparse)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\[R, N\] and \[R, K\]"):
        weight_grad(torch.zeros(3, 16), torch.zeros(4, 5))


def test_layer_forward_is_nn_linear_and_gradients_match():
    torch.manual_seed(0)
    ref = nn.Linear(200, 64)
    ours = SparseInputLinear(200, 64)
    ours.load_state_dict(ref.state_dict())
    x = _spikes(3 * 40, 200, 0.1, seed=6).reshape(3, 40, 200).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = ours(x), ref(x_ref)
    assert torch.equal(y, y_ref)
    c = torch.randn(y.shape, generator=torch.Generator().manual_seed(7))
    (y * c).sum().backward()
    (y_ref * c).sum().backward()
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-6, atol=1e-6)


def test_weight_gradient_against_finite_differences():
    torch.manual_seed(1)
    layer = SparseInputLinear(50, 20, bias=False)
    x = _spikes(30, 50, 0.2, seed=8, values=True)
    c = torch.randn(30, 20)

    def loss() -> torch.Tensor:
        return (layer(x) * c).sum()

    loss().backward()
    h = 1e-2
    with torch.no_grad():
        for i, j in [(0, 0), (3, 7), (19, 49), (10, 25)]:
            w = layer.weight[i, j].item()
            layer.weight[i, j] = w + h
            up = loss().item()
            layer.weight[i, j] = w - h
            down = loss().item()
            layer.weight[i, j] = w
            assert layer.weight.grad[i, j].item() == pytest.approx((up - down) / (2 * h),
                                                                   rel=1e-3, abs=1e-3)


def test_other_dtypes_and_no_grad_take_plain_linear():
    layer = SparseInputLinear(30, 20).double()
    x = _spikes(8, 30, 0.2, seed=9).double().requires_grad_()
    assert torch.autograd.gradcheck(layer, (x,))
    with torch.no_grad():
        assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))


def test_float32_gradient_when_the_default_dtype_is_float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        x, g = _spikes(64, 100, 0.1, seed=10), torch.randn(64, 32, dtype=torch.float32)
        dw = weight_grad(g, x)
    finally:
        torch.set_default_dtype(before)
    assert dw.dtype == torch.float32
    torch.testing.assert_close(dw, g.t() @ x, rtol=1e-5, atol=1e-5)


def test_double_backward_matches_nn_linear():
    torch.manual_seed(2)
    ref = nn.Linear(60, 20)
    ours = SparseInputLinear(60, 20)
    ours.load_state_dict(ref.state_dict())
    x = _spikes(12, 60, 0.2, seed=11)
    grads = []
    for layer in (ours, ref):
        (g_w,) = torch.autograd.grad(layer(x).pow(2).sum(), layer.weight, create_graph=True)
        g_w.pow(2).sum().backward()
        grads.append(layer.weight.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-5)
