"""The epoch loop on in-memory synthetic data: learning, exact epoch means, rank sharding with a
summing reduce (the DDP hook), divergence, plain progress lines, LoadedRun.forward."""

from __future__ import annotations

import io

import pytest
import torch
from test_train_synthetic import one_thread, synthetic_dataset  # noqa: F401 (autouse fixture)

from spikeforge import functional as SF
from spikeforge.neuron import SpikingNeuron
from spikeforge.train import recipes
from spikeforge.train.build import build_model, build_optimizer, build_task
from spikeforge.train.loop import Diverged, evaluate, train_one_epoch
from spikeforge.train.progress import EpochProgress

DEVICE = torch.device("cpu")


@pytest.fixture
def setup():
    torch.manual_seed(0)
    config = recipes.resolve("fc-lif", None, {"T": 4, "batch_size": 32})
    model = build_model(config)
    return config, model, build_task(config), build_optimizer(config, model.parameters())


def test_training_beats_chance_and_reports_exact_means(setup):
    config, model, task, optimizer = setup
    train, test = synthetic_dataset(320, 1), synthetic_dataset(100, 2)
    for epoch in range(2):
        result = train_one_epoch(model, task, train.batches(32, shuffle=True, epoch=epoch),
                                 optimizer, num_batches=train.num_batches(32), device=DEVICE,
                                 generator=torch.Generator().manual_seed(epoch),
                                 show_progress=False)
        assert result.images == 320
    result = evaluate(model, task, test.batches(32), num_batches=test.num_batches(32),
                      device=DEVICE, generator=torch.Generator().manual_seed(9),
                      show_progress=False)
    assert result.images == 100 and result.acc > 0.5

    # the same numbers by hand: sample-weighted mean loss, fraction of correct predictions
    gen = torch.Generator().manual_seed(9)
    loss_sum, correct = 0.0, 0
    model.eval()
    with torch.no_grad():
        for x, y in test.batches(32):
            spikes = model(task.encode(x, gen))
            SF.reset(model)
            loss_sum += SF.mse_rate(spikes, y).item() * len(y)
            correct += int((spikes.sum(0).argmax(-1) == y).sum())
    assert result.loss == pytest.approx(loss_sum / 100, rel=1e-12)
    assert result.acc == correct / 100


def test_sharded_ranks_with_a_summing_reduce_equal_one_process():
    torch.manual_seed(0)
    config = recipes.resolve("rleaky", None, {"T": 4})  # direct encoding: no random input
    model, task = build_model(config), build_task(config)
    train = synthetic_dataset(256, 1)
    train_one_epoch(model, task, train.batches(32), build_optimizer(config, model.parameters()),
                    num_batches=8, device=DEVICE, show_progress=False)
    test = synthetic_dataset(96, 2)
    whole = evaluate(model, task, test.batches(16), num_batches=6, device=DEVICE,
                     show_progress=False)
    totals = {}

    def keep(t):
        totals["rank 1"] = t.clone()
        return t

    # two ranks of batch 8 see the same 96 samples as one process of batch 16
    evaluate(model, task, test.batches(8, rank=1, world_size=2), num_batches=6, device=DEVICE,
             show_progress=False, reduce=keep)
    merged = evaluate(model, task, test.batches(8, rank=0, world_size=2), num_batches=6,
                      device=DEVICE, show_progress=False,
                      reduce=lambda t: t + totals["rank 1"])
    assert merged.images == 96 and 0.2 < whole.acc < 1
    assert merged.acc == whole.acc
    assert merged.loss == pytest.approx(whole.loss, rel=1e-6)


def test_a_non_finite_loss_raises_diverged(setup):
    _, model, task, optimizer = setup
    task.loss_fn = lambda spikes, y: SF.mse_rate(spikes, y) * float("inf")
    data = synthetic_dataset(64, 1)
    with pytest.raises(Diverged, match="the training loss became inf by batch 1"):
        train_one_epoch(model, task, data.batches(32), optimizer, num_batches=2, device=DEVICE,
                        show_progress=False)


def test_plain_progress_prints_each_tenth_and_the_end():
    stream = io.StringIO()
    with EpochProgress("train 1/3", 25, stream=stream) as progress:
        for done in range(1, 26):
            progress.update(done, 0.5, 0.25, 100.0)
    lines = stream.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == [f"{d}/25" for d in
                                                   (3, 6, 9, 12, 15, 18, 21, 24, 25)]
    assert lines[0] == "train 1/3   3/25  loss 0.5000  acc 0.2500  100 img/s"
    quiet = io.StringIO()
    with EpochProgress("x", 5, enabled=False, stream=quiet) as progress:
        progress.update(5, 0.0, 0.0, 0.0)
    assert quiet.getvalue() == ""


def test_loaded_run_forward_resets_neuron_state(tmp_path):
    from test_train_synthetic import write_mnist

    from spikeforge.train import fit, load_run

    config = recipes.resolve("rleaky", None, {"T": 3, "epochs": 1, "batch_size": 64,
                                              "data_dir": str(write_mnist(tmp_path / "d", 64,
                                                                          32))})
    fit(config, tmp_path / "run", show_progress=False, log=lambda line: None)
    loaded = load_run(tmp_path / "run", "last")
    assert not loaded.model.training
    x, _ = next(loaded.dataset("test").batches(5))
    spikes, membrane = loaded.forward(x)
    assert spikes.shape == membrane.shape == (3, 5, 10)
    assert all(m.v is None for m in loaded.model.modules() if isinstance(m, SpikingNeuron))
    again, _ = loaded.forward(x)
    assert torch.equal(again, spikes)  # no state carried over between calls
