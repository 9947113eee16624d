"""`spikeforge train|eval|predict|recipes` end to end on small synthetic data (real file formats).

Every recipe trains two short epochs and must write every artifact of a run directory (config,
metrics CSV/JSONL, TensorBoard scalars, safetensors + weights-only state in last/ and best/) and
beat chance on the synthetic task; eval must reproduce the recorded test metrics exactly.
"""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train_synthetic import one_thread, write_mnist, write_nmnist  # noqa: F401 (autouse fixture)

from spikeforge.cli import main
from spikeforge.train import load_run
from spikeforge.train.run import METRICS

RECIPE_ARGS = {
    "fc-lif": ["-T", "8", "-b", "32"],
    # the reference SGD(0.1) + cosine needs many epochs; Adam learns this task in two short ones
    "csnn": ["-T", "2", "--channels", "8", "-b", "16", "--max-batches", "16", "--opt", "adam",
             "--lr", "1e-2"],
    "rleaky": ["-T", "4", "-b", "32"],
    "rleaky-membrane": ["-T", "4", "-b", "32"],
    "nmnist-csnn": ["-T", "8", "-b", "8"],
}


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("mnist"), n_train=256, n_test=128)


@pytest.fixture(scope="module")
def nmnist_dir(tmp_path_factory):
    pytest.importorskip("tonic")
    return write_nmnist(tmp_path_factory.mktemp("nmnist"), n_train=40, n_test=20)


@pytest.fixture(scope="module")
def fc_run(mnist_dir, tmp_path_factory):
    """A finished two-epoch fc-lif run (T = 8)."""
    run = tmp_path_factory.mktemp("fc") / "run"
    assert train("fc-lif", mnist_dir, run, "--no-progress") == 0
    return run


def train(recipe: str, data_dir, out_dir, *extra: str) -> int:
    return main(["train", recipe, *RECIPE_ARGS[recipe], "--epochs", "2", "--data-dir",
                 str(data_dir), "--out-dir", str(out_dir), "--no-download", *extra])


def read_csv(path) -> list[dict[str, float]]:
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.parametrize("recipe", list(RECIPE_ARGS))
def test_every_recipe_trains_and_writes_every_artifact(recipe, mnist_dir, nmnist_dir, tmp_path,
                                                       monkeypatch, capsys):
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(tmp_path / "cache"))
    data = nmnist_dir if recipe == "nmnist-csnn" else mnist_dir
    run = tmp_path / "run"
    assert train(recipe, data, run) == 0
    out = capsys.readouterr().out
    assert "epoch 2/2" in out

    config = json.loads((run / "config.json").read_text())
    assert config["recipe"] == recipe and config["epochs"] == 2
    assert config["data_dir"] == str(data) and config["format"] == "spikeforge-run-1"

    rows = read_csv(run / "metrics.csv")
    assert list(rows[0]) == list(METRICS)
    assert [r["epoch"] for r in rows] == [1, 2]
    jsonl = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert jsonl == rows  # same numbers, CSV round-trips floats exactly
    for r in rows:
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["test_acc"] <= 1
        assert r["train_img_per_s"] > 0 and r["test_img_per_s"] > 0 and r["seconds"] > 0
    assert max(r["test_acc"] for r in rows) > 0.3  # chance is 0.1

    scalars = tensorboard_scalars(run / "tensorboard")
    assert scalars["acc/test"] == [(1, pytest.approx(rows[0]["test_acc"])),
                                   (2, pytest.approx(rows[1]["test_acc"]))]
    assert {"loss/train", "loss/test", "acc/train", "img_per_s/train", "lr"} <= set(scalars)

    best_epoch = max(rows, key=lambda r: r["test_acc"])["epoch"]
    for name, epoch in (("last", 2), ("best", best_epoch)):
        state = torch.load(run / name / "state.pt", weights_only=True)
        assert state["epoch"] == epoch
        assert {"optimizer", "scheduler", "scaler", "rng", "history"} <= set(state)
        weights = load_file(run / name / "model.safetensors")
        loaded = load_run(run, name)
        assert loaded.epoch == epoch and loaded.recipe == recipe
        for key, value in loaded.model.state_dict().items():
            assert torch.equal(value, weights[key])


def test_eval_reproduces_the_recorded_test_metrics(fc_run, capsys):
    run = fc_run
    rows = read_csv(run / "metrics.csv")
    capsys.readouterr()
    for which in ("best", "last"):
        assert main(["eval", str(run), "--checkpoint", which, "--json", "--device", "cpu"]) == 0
        result = json.loads(capsys.readouterr().out)
        row = rows[result["epoch"] - 1]
        # same weights, same Poisson stream, same batches: the very same numbers
        assert result["test_acc"] == row["test_acc"] and result["test_loss"] == row["test_loss"]
        assert result["images"] == 128
    assert result["epoch"] == 2


def test_predict_prints_reference_format_firing_rates(fc_run, capsys):
    run = fc_run
    assert main(["predict", str(run), "--index", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    match = re.fullmatch(r"Firing rate: \[\[([0-9. \n]+)\]\]", lines[0])
    assert match, lines
    rates = np.array(match.group(1).split(), dtype=float)
    assert rates.shape == (10,) and np.all((rates >= 0) & (rates <= 1))
    assert np.allclose(rates * 8, np.round(rates * 8), atol=1e-3)  # counts / T with T = 8

    loaded = load_run(run)
    x, label = loaded.dataset("test").sample(5)
    spikes, membrane = loaded.forward(x.unsqueeze(0), loaded.generator())
    assert membrane is None
    assert np.allclose(rates, spikes.mean(0)[0].numpy(), atol=1e-4)
    predicted = int(spikes.sum(0).argmax())
    assert lines[1] == f"Predicted class: {predicted} ({predicted} - " + \
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][
            predicted] + f"); label: {label} ({label} - " + \
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][label] \
        + ")"


def test_predict_reads_an_image_file(fc_run, tmp_path, capsys):
    from PIL import Image

    run = fc_run
    loaded = load_run(run)
    x, _ = loaded.dataset("test").sample(3)
    pixels = (x[0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(255 - pixels).save(tmp_path / "digit.png")  # dark digit on white
    capsys.readouterr()
    assert main(["predict", str(run), "--image", str(tmp_path / "digit.png"), "--invert"]) == 0
    out = capsys.readouterr().out.splitlines()
    spikes, _ = loaded.forward(x.unsqueeze(0), loaded.generator())
    assert out[1] == f"Predicted class: {int(spikes.sum(0).argmax())}"
    expected = np.array2string(spikes.mean(0).numpy(), precision=4, suppress_small=True)
    assert out[0] == f"Firing rate: {expected}"


def test_amp_trains_in_bfloat16_on_cpu_and_eval_reproduces_it(mnist_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert train("rleaky-membrane", mnist_dir, run, "--amp", "--no-progress") == 0
    rows = read_csv(run / "metrics.csv")
    assert load_run(run).config["amp"] is True and max(r["test_acc"] for r in rows) > 0.3
    capsys.readouterr()
    assert main(["eval", str(run), "--checkpoint", "last", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["test_acc"], result["test_loss"]) == (rows[1]["test_acc"],
                                                         rows[1]["test_loss"])


def test_max_batches_caps_train_and_test(mnist_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "fc-lif", "-T", "2", "-b", "10", "--epochs", "1", "--max-batches", "3",
                 "--data-dir", str(mnist_dir), "--out-dir", str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    # plain progress lines (stdout is not a terminal): one per tenth, the last at 3 of 3 batches
    assert [ln.split("loss")[0].split() for ln in lines if ln.startswith(("train ", "test "))] \
        == [["train", "1/1", f"{i}/3"] for i in (1, 2, 3)] + \
        [["test", "1/1", f"{i}/3"] for i in (1, 2, 3)]
    assert load_run(run).config["max_batches"] == 3
    assert main(["eval", str(run), "--max-batches", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 20


def test_recipes_lists_every_recipe_with_its_reference_defaults(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in RECIPE_ARGS:
        assert re.search(rf"^{name}: ", out, re.M)
    assert main(["recipes", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    fc, cs, nm, rl, rm = (table[k] for k in ("fc-lif", "csnn", "nmnist-csnn", "rleaky",
                                              "rleaky-membrane"))
    assert (fc["T"], fc["tau"], fc["batch_size"], fc["lr"], fc["epochs"], fc["opt"],
            fc["loss"], fc["encoding"]) == (100, 2.0, 64, 1e-3, 100, "adam", "mse_rate",
                                            "poisson")
    assert (cs["T"], cs["channels"], cs["batch_size"], cs["opt"], cs["lr"], cs["momentum"],
            cs["scheduler"], cs["epochs"], cs["encoding"]) == (4, 64, 128, "sgd", 0.1, 0.9,
                                                                "cosine", 64, "direct")
    assert (nm["beta"], nm["batch_size"], nm["opt"], nm["lr"], nm["loss"], nm["loss_args"]) == \
        (0.5, 128, "adam", 2e-2, "mse_count", {"correct_rate": 0.8, "incorrect_rate": 0.2})
    assert (rl["T"], rl["recurrence"], rl["batch_size"], rl["lr"], rl["loss"]) == \
        (10, "linear", 128, 1e-3, "mse_count")
    assert (rm["loss"], rm["loss_args"], rm["readout"]) == \
        ("mse_membrane", {"on_target": 1.05, "off_target": 0.2}, "membrane")


def test_nmnist_frames_are_cached_where_cache_dir_says(nmnist_dir, tmp_path, monkeypatch,
                                                       capsys):
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(tmp_path / "default-cache"))
    cache, run = tmp_path / "frames", tmp_path / "run"
    assert main(["train", "nmnist-csnn", *RECIPE_ARGS["nmnist-csnn"], "--epochs", "1",
                 "--max-batches", "2", "--data-dir", str(nmnist_dir), "--out-dir", str(run),
                 "--no-download", "--no-progress", "--cache-dir", str(cache)]) == 0
    assert any(cache.rglob("*.frames")) and not (tmp_path / "default-cache").exists()
    assert json.loads((run / "config.json").read_text())["cache_dir"] == str(cache)
    moved = tmp_path / "moved"
    cache.rename(moved)
    capsys.readouterr()
    assert main(["eval", str(run), "--cache-dir", str(moved), "--json", "--device", "cpu",
                 "--max-batches", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 8
    assert not cache.exists()        # the frames were read from --cache-dir, not rebuilt


def test_cache_dir_is_refused_for_static_datasets(mnist_dir, fc_run, tmp_path, capsys):
    capsys.readouterr()
    assert train("fc-lif", mnist_dir, tmp_path / "run", "--cache-dir", str(tmp_path)) == 2
    assert "--cache-dir is where N-MNIST's event frames are cached" in capsys.readouterr().err
    assert main(["eval", str(fc_run), "--cache-dir", str(tmp_path)]) == 2
    assert "leave --cache-dir out" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["file", "file/below"])
def test_a_cache_dir_that_cannot_be_a_folder_is_refused_before_anything_is_written(
        bad, nmnist_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(tmp_path / "default-cache"))
    (tmp_path / "file").write_text("not a folder")
    run = tmp_path / "run"
    args = [*RECIPE_ARGS["nmnist-csnn"], "--epochs", "1", "--max-batches", "1", "--data-dir",
            str(nmnist_dir), "--no-download", "--no-progress"]
    capsys.readouterr()
    assert main(["train", "nmnist-csnn", *args, "--out-dir", str(run), "--cache-dir",
                 str(tmp_path / bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spikeforge: error: --cache-dir ") and err.count("\n") == 1, err
    assert not run.exists()
    assert main(["train", "nmnist-csnn", *args, "--out-dir", str(run)]) == 0
    config = (run / "config.json").read_text()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--cache-dir",
                 str(tmp_path / bad)]) == 2
    assert "--cache-dir" in capsys.readouterr().err
    assert (run / "config.json").read_text() == config     # the failed resume changed nothing
    for command in (["eval"], ["predict", "--index", "0"], ["energy"]):
        assert main([*command, str(run), "--cache-dir", str(tmp_path / bad)]) == 2, command
        assert "--cache-dir" in capsys.readouterr().err


def test_a_relative_cache_dir_in_a_config_file_is_kept_absolute(nmnist_dir, tmp_path,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text('cache_dir = "frames"\n')
    assert main(["train", "nmnist-csnn", *RECIPE_ARGS["nmnist-csnn"], "--epochs", "1",
                 "--max-batches", "1", "--data-dir", str(nmnist_dir), "--no-download",
                 "--no-progress", "--config", "run.toml", "--out-dir", "run"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["cache_dir"]
    assert saved == str(tmp_path / "frames") and any((tmp_path / "frames").rglob("*.frames"))


def test_a_run_saved_before_cache_dir_existed_still_loads_and_resumes(mnist_dir, tmp_path,
                                                                      capsys):
    run = tmp_path / "run"
    assert train("fc-lif", mnist_dir, run, "--no-progress") == 0
    config = json.loads((run / "config.json").read_text())
    del config["cache_dir"]          # as every config.json written before the setting existed
    (run / "config.json").write_text(json.dumps(config, indent=2))
    capsys.readouterr()
    assert main(["eval", str(run), "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["epoch"] == 2
    assert load_run(run, "last").train_config.cache_dir is None
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    assert [r["epoch"] for r in read_csv(run / "metrics.csv")] == [1, 2, 3]


@pytest.mark.parametrize("default", [torch.float64, torch.bfloat16], ids=str)
def test_training_and_loading_a_run_under_another_default_dtype(default, mnist_dir, fc_run,
                                                                 tmp_path):
    """The recipes build float32 networks whatever torch's default dtype is: under a float64
    or bfloat16 default, training failed (float32 data, float64 weights) and a loaded run
    failed or had its float32 weights rounded to bfloat16."""
    x = torch.rand(4, 1, 28, 28)
    expect = load_run(fc_run).forward(x, torch.Generator().manual_seed(0))[0]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        assert train("rleaky", mnist_dir, tmp_path / "rleaky", "--no-progress") == 0
        loaded = load_run(fc_run)
        assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
        assert torch.equal(loaded.forward(x, torch.Generator().manual_seed(0))[0], expect)
    finally:
        torch.set_default_dtype(previous)
    assert len(read_csv(tmp_path / "rleaky" / "metrics.csv")) == 2
