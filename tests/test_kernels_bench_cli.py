"""`spikeforge bench RECIPE`: the recipe's own training step on random data of the right shape."""

import json

import pytest
import torch

from spikeforge import cli
from spikeforge.commands import bench


@pytest.mark.parametrize("batch_flag", ["--batch-size", "-b"])
def test_bench_reports_throughput_and_memory_as_json(capsys, batch_flag):
    assert cli.main(["bench", "rleaky", "-T", "3", batch_flag, "4", "--iters", "1",
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


def test_random_images_have_the_recipe_shape_and_sparsity():
    images, labels = bench.random_batch(64)
    assert images.shape == (64, 1, 28, 28) and labels.shape == (64,)
    assert abs((images == 0).float().mean().item() - bench.ZERO_PIXELS) < 0.02


@pytest.mark.parametrize("argv, message", [
    (["bench", "vgg"], "unknown recipe"),
    (["bench", "rleaky", "--iters", "0"], "--iters"),
])
def test_bad_arguments_exit_2_with_one_sentence(capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    pytest.importorskip("tonic")
    from test_train_synthetic import write_mnist

    return write_mnist(tmp_path_factory.mktemp("mnist"), n_train=4, n_test=4)


def test_nmnist_batch_is_the_framed_simulate_nmnist_test_recordings(tiny_mnist, tmp_path):
    from spikeforge.data.binfmt import read_events
    from spikeforge.data.nmnist import transform_events
    from spikeforge.data.simulate import write_nmnist_tree
    from spikeforge.data.static import load_dataset

    frames, labels = bench.nmnist_batch(3, 120, tiny_mnist, download=False)
    assert frames.shape == (120, 3, 2, 34, 34) and frames.dtype == torch.float32
    write_nmnist_tree(tiny_mnist, tmp_path / "sim", limit=3)
    mnist = load_dataset("mnist", "test", data_dir=tiny_mnist, download=False)
    assert labels.tolist() == mnist.labels[:3].tolist()
    for b, label in enumerate(labels.tolist()):
        events = read_events(tmp_path / "sim" / "Test" / str(label) / f"{b + 1:05d}.bin")
        expected = torch.from_numpy(transform_events(events, 10000.0, 1000.0)[:120]).float()
        torch.testing.assert_close(frames[:len(expected), b], expected, rtol=0, atol=0)
        assert frames[len(expected):, b].sum() == 0
    assert frames.sum() > 100


def test_nmnist_bench_runs_the_trained_net_and_reports_each_layers_rate(tiny_mnist):
    w = bench.workload("nmnist-csnn", batch=2, steps=100, data_dir=tiny_mnist)
    rates = w.rates()
    assert len(rates) == 3  # two hidden Leaky layers and the output layer
    assert rates[0] > 0.005 and rates[1] > 0.005  # a fresh net is silent on these events
    before = {k: v.clone() for k, v in w.model.state_dict().items()}
    w.train()
    w.restore()
    for key, value in w.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert w.rates() == rates


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_bench_on_a_missing_gpu_exits_2_naming_the_flag(capsys):
    assert cli.main(["bench", "rleaky", "--device", "cuda", "--iters", "1"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "Traceback" not in err
