"""`spikeforge bench RECIPE`: the recipe's own training step on random data of the right shape."""

import json

import pytest
import torch

from spikeforge import cli
from spikeforge.commands import bench


def test_bench_reports_throughput_and_memory_as_json(capsys):
    assert cli.main(["bench", "rleaky", "-T", "3", "--batch-size", "4", "--iters", "1",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recipe"] == "rleaky" and out["batch"] == 4 and out["T"] == 3
    assert out["train_img_s"] > 0 and out["eval_img_s"] > 0 and out["peak_rss_mib"] > 0
    assert out["first_step_s"] > 0


def test_workload_trains_the_recipe_model():
    w = bench.workload("fc-lif", batch=8, steps=5)
    before = [p.detach().clone() for p in w.model.parameters()]
    loss = w.train()
    assert loss > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, w.model.parameters(), strict=True))


def test_random_batches_have_the_recipe_shapes_and_sparsity():
    images, labels = bench.random_batch("poisson", 64, 100)
    assert images.shape == (64, 1, 28, 28) and labels.shape == (64,)
    assert abs((images == 0).float().mean().item() - bench.ZERO_PIXELS) < 0.02
    frames, _ = bench.random_batch("frames", 8, 50)
    assert frames.shape == (50, 8, 2, 34, 34)
    assert abs(frames.mean().item() - bench.EVENT_DENSITY) < 0.002


@pytest.mark.parametrize("argv, message", [
    (["bench", "vgg"], "unknown recipe"),
    (["bench", "rleaky", "--iters", "0"], "--iters"),
])
def test_bad_arguments_exit_2_with_one_sentence(capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_nmnist_benchmark_net_is_scaled_to_fire_at_the_stated_rates():
    """Random events leave a fresh net silent; the benchmark scales it to a trained net's rate."""
    from spikeforge import models

    torch.manual_seed(0)
    net = models.NmnistCSNN()
    frames, _ = bench.random_batch("frames", 8, 40)
    rates = bench.fire_at(net, frames, (0.10, 0.25), steps=40)
    assert rates[0] == pytest.approx(0.10, abs=0.02)
    assert rates[1] == pytest.approx(0.25, abs=0.04)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_bench_on_a_missing_gpu_exits_2_naming_the_flag(capsys):
    assert cli.main(["bench", "rleaky", "--device", "cuda", "--iters", "1"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "Traceback" not in err
