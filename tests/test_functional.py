import pytest
import torch

from spikeforge import functional as SF
from spikeforge.layer import SeqToBatch
from spikeforge.neuron import LIF, Leaky

# Output of 4 steps, 2 samples, 3 classes, by hand.
SPIKES = torch.tensor([
    [[1., 0., 0.], [0., 1., 1.]],
    [[1., 0., 1.], [0., 1., 0.]],
    [[0., 0., 0.], [0., 1., 0.]],
    [[1., 1., 0.], [1., 0., 0.]],
])
TARGETS = torch.tensor([0, 2])


def test_mse_rate_by_hand():
    # rates: [.75, .25, .25], [.25, .75, .25]; targets one-hot [1,0,0], [0,0,1]
    sq = [0.0625, 0.0625, 0.0625, 0.0625, 0.5625, 0.5625]
    assert SF.mse_rate(SPIKES, TARGETS).item() == pytest.approx(sum(sq) / 6)


def test_mse_count_by_hand():
    # T=4: on = int(3.2) = 3, off = int(0.8) = 0; counts [3,1,1], [1,3,1]
    sq = [0, 1, 1, 1, 9, 4]
    assert SF.mse_count(SPIKES, TARGETS, 0.8, 0.2).item() == pytest.approx(sum(sq) / 6 / 4)


def test_mse_membrane_by_hand():
    mem = torch.tensor([[[1.0, 0.5]], [[0.0, 0.2]]])  # T=2, B=1, C=2
    # target class 1: [0.2, 1.05]; errors: (.8, -.55), (-.2, -.85)
    want = (0.64 + 0.3025 + 0.04 + 0.7225) / 4
    got = SF.mse_membrane(mem, torch.tensor([1]), on_target=1.05, off_target=0.2)
    assert got.item() == pytest.approx(want)


def test_cross_entropy_losses_by_hand():
    counts = SPIKES.sum(0)
    want = -(torch.log_softmax(counts, -1)[[0, 1], TARGETS]).mean()
    assert SF.ce_count(SPIKES, TARGETS).item() == pytest.approx(want.item())
    per_step = [-(torch.log_softmax(s, -1)[[0, 1], TARGETS]).mean() for s in SPIKES]
    assert SF.ce_rate(SPIKES, TARGETS).item() == pytest.approx(sum(per_step).item() / 4)


def test_accuracy_and_predict_from_counts():
    assert SF.predict(SPIKES).tolist() == [0, 1]
    assert SF.accuracy(SPIKES, TARGETS) == 0.5
    assert SF.firing_rate(SPIKES)[0].tolist() == [0.75, 0.25, 0.25]


def test_loss_shape_errors():
    with pytest.raises(ValueError, match=r"\[T, B, C\]"):
        SF.mse_rate(SPIKES[0], TARGETS)
    with pytest.raises(ValueError, match="targets"):
        SF.mse_count(SPIKES, torch.tensor([0, 1, 2]))


def test_reset_and_detach_reach_every_neuron():
    net = torch.nn.Sequential(SeqToBatch(torch.nn.Linear(3, 3)), LIF(), Leaky(0.5))
    net(torch.rand(2, 4, 3, requires_grad=True))
    assert net[1].v.requires_grad and net[2].v is not None
    SF.detach(net)
    assert not net[1].v.requires_grad
    SF.reset(net)
    assert net[1].v is None and net[2].v is None


def test_seq_to_batch_equals_per_step_application():
    conv = torch.nn.Conv2d(2, 3, 3)
    x = torch.rand(4, 5, 2, 8, 8)
    want = torch.stack([conv(xt) for xt in x])
    torch.testing.assert_close(SeqToBatch(conv)(x), want)


def test_set_backend_reaches_every_neuron_and_refuses_unknown_names():
    model = torch.nn.Sequential(LIF(), torch.nn.Linear(3, 3), torch.nn.Sequential(Leaky(0.5)))
    SF.set_backend(model, "reference")
    assert [m.backend for m in model.modules() if hasattr(m, "backend")] == ["reference"] * 2
    x = torch.rand(2, 1, 3)
    assert model[0].fused_backend(x) == "reference"
    with pytest.raises(ValueError, match="backend must be one of"):
        SF.set_backend(model, "cuda")
