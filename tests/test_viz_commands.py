"""``spikeforge plot`` and ``spikeforge inspect`` on tiny runs trained here (synthetic MNIST and
N-MNIST in the real file formats): every figure is written, valid and not blank, the recording
behind it is the model's real output, and bad input exits 2 with one sentence."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from spikeforge import viz
from spikeforge.cli import main
from spikeforge.data import write_idx
from spikeforge.neuron import SpikingNeuron
from spikeforge.train.run import load_run
from spikeforge.viz.recording import record

T = 8


def bar_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class k: a bright bar at rows 2+2k..4+2k on dim noise (learnable in one short epoch)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 + 2 * k:5 + 2 * k, 4:24] = 230
    return images, labels


def bar_events(label: int, rng: np.random.Generator) -> np.ndarray:
    """Class k: ON/OFF events in rows 2+3k..4+3k, columns 7..26, over 12 ms."""
    from spikeforge.data.binfmt import make_events

    n = 400
    t = np.sort(rng.integers(0, 12_000, n))
    return make_events(rng.integers(7, 27, n), 2 + 3 * label + rng.integers(0, 3, n), t,
                       rng.integers(0, 2, n))


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("viz-mnist")
    for stem, n, seed in (("train", 256, 1), ("t10k", 40, 2)):
        images, labels = bar_images(n, seed)
        write_idx(root / "data" / f"{stem}-images-idx3-ubyte", images)
        write_idx(root / "data" / f"{stem}-labels-idx1-ubyte", labels)
    run = root / "run"
    assert main(["train", "fc-lif", "--epochs", "2", "-T", str(T), "-b", "32", "--lr", "0.01",
                 "--data-dir", str(root / "data"), "--out-dir", str(run), "--device", "cpu",
                 "--no-progress", "--no-download"]) == 0
    return run


@pytest.fixture(scope="module")
def nmnist_run(tmp_path_factory):
    from spikeforge.data.binfmt import write_events

    pytest.importorskip("tonic")
    root = tmp_path_factory.mktemp("viz-nmnist")
    for split, n, seed in (("Train", 20, 3), ("Test", 10, 4)):
        rng = np.random.default_rng(seed)
        for i in range(n):
            folder = root / "data" / split / str(i % 10)
            folder.mkdir(parents=True, exist_ok=True)
            write_events(folder / f"{i:05d}.bin", bar_events(i % 10, rng))
    run = root / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPIKEFORGE_CACHE", str(root / "cache"))
        assert main(["train", "nmnist-csnn", "--epochs", "1", "-b", "10", "--data-dir",
                     str(root / "data"), "--out-dir", str(run), "--device", "cpu",
                     "--no-progress", "--no-download"]) == 0
    yield run, root / "cache"


def check_png(path, size: tuple[int, int] | None = None) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG"
        if size is not None:
            assert img.size == size
        assert 300 <= img.size[0] <= 1200 and 150 <= img.size[1] <= 900
        assert np.asarray(img.convert("L"), dtype=float).std() > 8, f"{path} is blank"


def test_plot_writes_accuracy_and_loss_curves(mnist_run, capsys):
    assert main(["plot", str(mnist_run)]) == 0
    for name in ("acc.png", "loss.png"):
        check_png(mnist_run / "figures" / name, (640, 400))
    assert "(2 epochs)" in capsys.readouterr().out


def test_inspect_index_writes_every_figure_and_prints_what_predict_prints(mnist_run, capsys):
    assert main(["predict", str(mnist_run), "--index", "3"]) == 0
    predicted = capsys.readouterr().out.splitlines()
    assert main(["inspect", str(mnist_run), "--index", "3", "--gif-stride", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[:2] == predicted[:2]
    assert printed[0].startswith("Firing rate: [[")
    figures = mnist_run / "figures"
    for name in ("input.png", "output_v_heatmap.png", "output_spikes.png", "layer_rates.png"):
        check_png(figures / name)
    assert not (figures / "event_grid.png").exists()
    with Image.open(figures / "spike_count.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == math.ceil(T / 3)


def test_recording_is_the_model_output_and_feeds_the_figures(mnist_run, tmp_path):
    loaded = load_run(mnist_run)
    x, _ = loaded.dataset("test").sample(5)
    rec = record(loaded, x.unsqueeze(0))
    spikes, _ = loaded.forward(x.unsqueeze(0), loaded.generator())
    assert torch.equal(rec.spikes, spikes)
    assert [t.label for t in rec.layers] == ["net.2 LIF [10]"]
    out = rec.output
    assert torch.equal(out.s, spikes) and out.v.shape == (T, 1, 10) and out.threshold == 1.0
    # hard reset to 0: the recorded membrane is 0 exactly where a spike was fired
    assert torch.all(out.v[out.s.bool()] == 0)
    heat = viz.membrane_heatmap(out.v[:, 0], tmp_path / "v.png")
    np.testing.assert_array_equal(np.asarray(heat.image.get_array()), out.v[:, 0].numpy().T)
    raster = viz.spike_raster(out.s[:, 0], tmp_path / "s.png")
    assert len(raster.marks.get_offsets()) == int(out.s.sum())
    assert out.rate(0) == pytest.approx(float(spikes.mean()))
    neurons = [m for m in loaded.model.modules() if isinstance(m, SpikingNeuron)]
    assert all(not m.record and m.v is None and m.v_seq is None for m in neurons)


def test_inspect_grid_marks_predictions(mnist_run, capsys):
    assert main(["inspect", str(mnist_run), "--grid", "10", "--start", "4"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    loaded = load_run(mnist_run)
    test_set = loaded.dataset("test")
    right = sum(int(record(loaded, test_set.sample(i)[0].unsqueeze(0), traces=False)
                    .predictions[0]) == test_set.sample(i)[1] for i in range(4, 14))
    assert line == f"{right}/10 correct"
    check_png(mnist_run / "figures" / "predictions.png", (780, 400))
    assert main(["inspect", str(mnist_run), "--grid", "5", "--spread"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("/5 correct")


def test_grid_samples_consecutive_or_spread():
    from argparse import Namespace

    from spikeforge.commands.inspect import _grid_indices

    assert _grid_indices(Namespace(spread=False, grid=3, start=7), 40) == (
        [7, 8, 9], "Test samples 7-9")
    assert _grid_indices(Namespace(spread=True, grid=5, start=7), 40) == (
        [0, 10, 20, 29, 39], "5 test samples spread over all 40")     # round(k * 39 / 4)
    assert _grid_indices(Namespace(spread=True, grid=1, start=0), 40)[0] == [0]


def test_inspect_nmnist_writes_event_grid_and_gif(nmnist_run, capsys, monkeypatch):
    run, cache = nmnist_run
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(cache))
    assert main(["inspect", str(run), "--index", "2", "--gif-stride", "4"]) == 0
    assert "Predicted class:" in capsys.readouterr().out
    loaded = load_run(run)
    frames, _ = loaded.dataset("test").sample(2)
    figures = run / "figures"
    for name in ("input.png", "event_grid.png", "output_v_heatmap.png", "output_spikes.png",
                 "layer_rates.png"):
        check_png(figures / name)
    with Image.open(figures / "spike_count.gif") as gif:
        assert gif.n_frames == math.ceil(frames.shape[0] / 4)
    rec = record(loaded, frames.unsqueeze(1))
    assert [t.kind for t in rec.layers] == ["Leaky"] * 3
    assert torch.equal(rec.output.v, rec.membrane)
    assert main(["inspect", str(run), "--grid", "10"]) == 0
    check_png(figures / "predictions.png")


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spikeforge: error: ")
    return err[0]


def test_bad_input_exits_2_with_one_sentence(mnist_run, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(mnist_run / "config.json", bare / "config.json")
    assert main(["inspect", str(bare), "--index", "0"]) == 2
    assert "best does not exist" in one_error_line(capsys)
    assert main(["plot", str(bare)]) == 2
    assert "no completed epoch" in one_error_line(capsys)
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "does not exist" in one_error_line(capsys)
    assert main(["inspect", str(mnist_run), "--index", "40"]) == 2
    assert "--index 40 is out of range; the test set has 40 samples" in one_error_line(capsys)
    assert main(["inspect", str(mnist_run), "--grid", "10", "--start", "35"]) == 2
    assert "(samples 35 to 44) is out of range; the test set has 40" in one_error_line(capsys)
    assert main(["inspect", str(mnist_run), "--grid", "0"]) == 2
    assert "--grid 0 must be at least 1" in one_error_line(capsys)
    assert main(["inspect", str(mnist_run), "--index", "0", "--gif-stride", "0"]) == 2
    assert "--gif-stride 0 must be at least 1" in one_error_line(capsys)
    assert not os.path.exists(bare / "figures")


@pytest.mark.parametrize("line, cause", [
    ('{"epoch": 1, "train_los', "Unterminated string starting at: line 1 column 14 (char 13)"),
    ("[1, 2]", "line 1 is not a metrics row: an object of numbers with a whole epoch"),
    ('{"epoch": "x", "test_acc": 0.5}', "line 1 is not a metrics row: an object of numbers with "
                                        "a whole epoch"),
])
def test_plot_of_damaged_metrics_is_one_sentence(line, cause, mnist_run, tmp_path, capsys):
    run = shutil.copytree(mnist_run, tmp_path / "run")
    (run / "metrics.jsonl").write_text(line + "\n")
    capsys.readouterr()
    assert main(["plot", str(run), "--out-dir", str(tmp_path / "figures")]) == 2
    assert capsys.readouterr().err == (f"spikeforge: error: {run / 'metrics.jsonl'} is damaged "
                                       f"({cause}); the curves cannot be drawn.\n")
    assert not (tmp_path / "figures").exists()
