"""One training step of each recipe on the ``triton`` backend (the ``--device cuda`` code path:
Triton neuron and IF-MaxPool kernels, Triton Poisson spikes → dense GEMM for fc-lif, dense
convolutions for nmnist-csnn, the tensor-op RLeaky loop) against the same step on the CPU
backend (compiled kernels, fused Poisson-Linear, sparse N-MNIST pass): the same spikes and loss,
the same gradients and updated weights within float summation order. Without a GPU the Triton
kernels run in the interpreter on CPU tensors (tests/conftest.py), so batches are tiny, T short
and csnn narrow.
"""

import pytest
import torch

from spikeforge import functional as SF
from spikeforge.commands.bench import random_batch
from spikeforge.kernels import cpu, neuron_pool, poisson, rleaky, sparse
from spikeforge.train import build, recipes

#: recipe → settings that keep the interpreted step small (everything else is the recipe's).
SMALL = {
    "fc-lif": {"T": 4},
    "csnn": {"T": 2, "channels": 4},
    "nmnist-csnn": {"T": 3},
    "rleaky": {"T": 3},
    "rleaky-membrane": {"T": 3},
}

#: Initial weights times this: a fresh net is silent on a 2-sample random batch at short T.
WEIGHT_SCALE = 8.0


def _refuse_cpu_kernels(monkeypatch):
    """Make every compiled CPU kernel (neuron, pool, RLeaky, sparse, Poisson) fail if called."""
    def refuse():
        raise AssertionError("a compiled CPU kernel ran on the triton backend")

    for module in (cpu, neuron_pool, poisson, rleaky, sparse):
        monkeypatch.setattr(module, "library", refuse)


def _step(config, backend, device, state, x, y):
    """(loss, spikes, {name: grad}, {name: updated weight}) after one optimizer step."""
    model = build.build_model(config)
    model.load_state_dict(state)
    model.to(device)
    SF.set_backend(model, backend)
    optimizer = build.build_optimizer(config, model.parameters())
    task = build.build_task(config)
    generator = torch.Generator().manual_seed(1)
    spikes, membrane = task.outputs(task.run(model, x.to(device), generator))
    loss = task.loss(spikes, membrane, y.to(device))
    loss.backward()
    grads = {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters()}
    optimizer.step()
    weights = {n: p.detach().cpu().clone() for n, p in model.named_parameters()}
    return loss.item(), spikes.detach().cpu(), grads, weights


@pytest.mark.parametrize("recipe", list(SMALL))
def test_training_step_on_triton_equals_the_cpu_backend(triton_device, recipe):
    config = recipes.recipe_defaults(recipe)
    for key, value in {"batch_size": 2, **SMALL[recipe]}.items():
        setattr(config, key, value)
    config = recipes.validate(config)
    torch.manual_seed(0)
    model = build.build_model(config)
    with torch.no_grad():  # strong enough for a random batch to reach the output layer
        for layer in model.modules():
            if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
                layer.weight.mul_(WEIGHT_SCALE)
    state = model.state_dict()
    x, y = random_batch(config.batch_size)
    if recipe == "nmnist-csnn":  # 20 %-dense event frames [T, B, 2, 34, 34]
        shape = (config.T, config.batch_size, 2, 34, 34)
        x = (torch.rand(shape, generator=torch.Generator().manual_seed(2)) < 0.2).float()
    loss_cpu, spikes_cpu, grads_cpu, weights_cpu = _step(config, "auto", "cpu", state, x, y)
    with pytest.MonkeyPatch.context() as monkeypatch:
        _refuse_cpu_kernels(monkeypatch)
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # float32 convolutions
        loss_tr, spikes_tr, grads_tr, weights_tr = _step(config, "triton", triton_device, state,
                                                         x, y)
    assert spikes_cpu.sum() > 0, "the output layer must fire for the step to test anything"
    assert torch.equal(spikes_tr, spikes_cpu)
    assert loss_tr == pytest.approx(loss_cpu, rel=1e-6, abs=1e-7)
    assert grads_cpu.keys() == grads_tr.keys()
    for name, g in grads_cpu.items():
        scale = max(g.abs().max().item(), 1e-6)
        torch.testing.assert_close(grads_tr[name], g, rtol=1e-5, atol=1e-5 * scale, msg=name)
    assert any(g.abs().max() > 0 for g in grads_cpu.values())
    for name, w in weights_cpu.items():
        # Adam's first step is lr·g/(|g| + ε): a gradient at float-noise level (summed in another
        # order on a GPU) may move its weight anywhere within ±lr, the others move alike
        g = grads_cpu[name]
        settled = g.abs() > 1e-3 * g.abs().max()
        torch.testing.assert_close(weights_tr[name][settled], w[settled], rtol=1e-5, atol=1e-6,
                                   msg=name)
        assert (weights_tr[name] - w).abs().max() <= 2 * config.lr, name
