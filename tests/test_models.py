import copy

import pytest
import torch

from spikeforge import encoding, models
from spikeforge import functional as SF


@pytest.mark.parametrize("name, kwargs, x, shapes", [
    ("fc-lif", {}, torch.rand(5, 2, 1, 28, 28), [(5, 2, 10)]),
    ("csnn", {"channels": 4, "steps": 3}, torch.rand(2, 1, 28, 28), [(3, 2, 10)]),
    ("csnn", {"channels": 4}, torch.rand(3, 2, 1, 28, 28), [(3, 2, 10)]),
    ("nmnist-csnn", {}, torch.rand(6, 2, 2, 34, 34), [(6, 2, 10), (6, 2, 10)]),
    ("rleaky", {"steps": 4}, torch.rand(2, 1, 28, 28), [(4, 2, 10), (4, 2, 10)]),
    ("rleaky", {"steps": 4, "recurrence": "one_to_one"}, torch.rand(2, 1, 28, 28),
     [(4, 2, 10), (4, 2, 10)]),
    ("rleaky", {"steps": 4, "recurrence": "conv"}, torch.rand(2, 1, 28, 28),
     [(4, 2, 10), (4, 2, 10)]),
])
def test_output_shapes(name, kwargs, x, shapes):
    out = models.build(name, **kwargs)(x)
    out = out if isinstance(out, tuple) else (out,)
    assert [tuple(o.shape) for o in out] == shapes


def test_reference_layer_shapes():
    fc = models.build("fc-lif")
    assert [tuple(p.shape) for p in fc.parameters()] == [(10, 784)]
    csnn = models.build("csnn")
    shapes = [tuple(p.shape) for n, p in csnn.named_parameters() if "weight" in n]
    assert shapes == [(64, 1, 3, 3), (64,), (64, 64, 3, 3), (64,), (1024, 3136), (10, 1024)]
    nm = models.build("nmnist-csnn")
    shapes = [tuple(p.shape) for n, p in nm.named_parameters() if "weight" in n]
    assert shapes == [(12, 2, 5, 5), (32, 12, 5, 5), (10, 800)]
    rl = models.build("rleaky")
    shapes = [tuple(p.shape) for n, p in rl.named_parameters() if "weight" in n]
    assert shapes == [(128, 784), (128, 128), (10, 128), (10, 10)]


def test_csnn_static_input_equals_repeated_sequence():
    torch.manual_seed(0)
    net = models.build("csnn", channels=4, steps=3).eval()
    x = torch.rand(2, 1, 28, 28)
    static = net(x)
    SF.reset(net)
    torch.testing.assert_close(static, net(encoding.direct(x, 3)))


def test_csnn_static_input_trains_its_batchnorm_as_the_repeated_sequence():
    # the stem runs once on B images but stands for T·B: its running variance (unbiased) must
    # use T·B·H·W samples, as SpikingJelly's multi-step net does (was B·H·W: 4e-4 apart)
    torch.manual_seed(0)
    static = models.build("csnn", channels=4, steps=3).train()
    sequence = copy.deepcopy(static)
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(static(x), sequence(encoding.direct(x, 3)))
    for a, b in zip(static.modules(), sequence.modules(), strict=True):
        if isinstance(a, torch.nn.BatchNorm2d):
            torch.testing.assert_close(a.running_var, b.running_var, rtol=1e-6, atol=0)
            torch.testing.assert_close(a.running_mean, b.running_mean, rtol=1e-6, atol=1e-8)


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        models.build("vgg")


def _separable(n=400, seed=0):
    """Ten classes, each a fixed random bright patch pattern plus noise, 28x28 in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(10, 1, 28, 28, generator=g) > 0.8).float()
    y = torch.randint(0, 10, (n,), generator=g)
    noise = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    return (protos[y] * 0.9 + noise).clamp(0, 1), y


def _train(net, forward, loss_fn, lr, epochs):
    torch.manual_seed(0)
    x, y = _separable()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        for i in range(0, 320, 32):
            out = forward(net, x[i:i + 32])
            loss = loss_fn(out, y[i:i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
            SF.reset(net)
    with torch.no_grad():
        out = forward(net, x[320:])
        SF.reset(net)
    spikes = out[0] if isinstance(out, tuple) else out
    return SF.accuracy(spikes, y[320:])


def test_fc_lif_learns_a_separable_task():
    torch.manual_seed(0)
    acc = _train(models.build("fc-lif"),
                 lambda n, x: n(encoding.poisson(x, 20)), SF.mse_rate, 1e-2, 3)
    assert acc >= 0.9


def test_rleaky_learns_a_separable_task():
    torch.manual_seed(0)
    acc = _train(models.build("rleaky", steps=10), lambda n, x: n(x),
                 lambda out, y: SF.mse_count(out[0], y), 2e-3, 4)
    assert acc >= 0.9
