"""Bad input to `spikeforge train|eval|predict`: exit status 2, one sentence on stderr naming the
problem, no traceback, and no file created or changed."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from test_train_synthetic import one_thread, write_mnist  # noqa: F401 (autouse fixture)

from spikeforge import functional as SF
from spikeforge.cli import main
from spikeforge.train import checkpoint
from spikeforge.train.build import build_model
from spikeforge.train.recipes import recipe_defaults


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("mnist"), n_train=128, n_test=64)


@pytest.fixture(scope="module")
def finished_run(mnist_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "fc"
    assert main(["train", "fc-lif", "-T", "2", "--epochs", "1", "--data-dir", str(mnist_dir),
                 "--out-dir", str(run), "--no-progress"]) == 0
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path):
    return shutil.copytree(finished_run, tmp_path / "copy")


def snapshot(folder) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def fails(capsys, argv, *needles: str) -> str:
    """Run the CLI, expect exit 2 and a one-line message containing every needle."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("spikeforge: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("flags, needles", [
    (["nope"], ["unknown recipe 'nope'", "fc-lif"]),
    (["fc-lif", "--dataset", "cifar10"], ["--dataset 'cifar10'", "mnist, fashion-mnist"]),
    (["nmnist-csnn", "--dataset", "mnist"], ["--dataset 'mnist'", "nmnist"]),
    (["fc-lif", "-T", "0"], ["-T must be a positive number, got 0"]),
    (["fc-lif", "-T", "-3"], ["-T must be a positive number, got -3"]),
    (["fc-lif", "-b", "0"], ["--batch-size must be a positive number, got 0"]),
    (["fc-lif", "--lr", "0"], ["--lr must be a positive number, got 0.0"]),
    (["fc-lif", "--lr", "-0.1"], ["--lr must be a positive number, got -0.1"]),
    (["fc-lif", "--lr", "nan"], ["--lr must be a positive number, got nan"]),
    (["fc-lif", "--epochs", "0"], ["--epochs must be a positive number"]),
    (["fc-lif", "--tau", "0.5"], ["--tau must be greater than 1"]),
    (["csnn", "--tau", "3"], ["--tau does not apply to model csnn"]),
    (["fc-lif", "--opt", "rmsprop"], ["--opt must be one of adam, sgd"]),
    (["fc-lif", "--momentum", "1.5"], ["--momentum must lie in [0, 1)"]),
    (["fc-lif", "--device", "cuda:0"] if not torch.cuda.is_available() else
     ["fc-lif", "--device", "tpu"], ["--device"]),
])
def test_bad_settings_are_refused_before_anything_is_written(flags, needles, mnist_dir, tmp_path,
                                                             capsys):
    out = tmp_path / "new-run"
    fails(capsys, ["train", *flags, "--data-dir", str(mnist_dir), "--out-dir", str(out)],
          *needles)
    assert not out.exists()


def test_a_batch_larger_than_the_training_set_is_refused(mnist_dir, tmp_path, capsys):
    out = tmp_path / "run"  # 128 training images; the last, short batch is dropped
    fails(capsys, ["train", "fc-lif", "-b", "129", "--data-dir", str(mnist_dir), "--out-dir",
                   str(out)], "--batch-size 129 is larger than the 128 training images, so not "
                              "one full batch is left to train on; use at most 128.")
    assert not out.exists()


def test_a_relative_data_dir_is_saved_absolute_so_the_run_works_from_anywhere(
        mnist_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(mnist_dir.parent)
    assert main(["train", "fc-lif", "-T", "2", "--epochs", "1", "--data-dir", mnist_dir.name,
                 "--out-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data_dir"] == \
        str(mnist_dir)
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "run", "--no-progress"]) == 0


def test_a_missing_data_dir_is_named(tmp_path, capsys):
    out = tmp_path / "run"
    fails(capsys, ["train", "fc-lif", "--data-dir", str(tmp_path / "nowhere"), "--out-dir",
                   str(out)], f"--data-dir {tmp_path / 'nowhere'} does not exist")
    assert not out.exists()


def test_an_empty_data_dir_without_download_says_what_to_put_there(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    fails(capsys, ["train", "fc-lif", "--data-dir", str(tmp_path / "empty"), "--no-download",
                   "--out-dir", str(tmp_path / "run")], "train-images-idx3-ubyte.gz")
    assert not (tmp_path / "run").exists()


def test_a_config_file_is_layered_and_checked(mnist_dir, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 0.1\n")
    fails(capsys, ["train", "fc-lif", "--config", str(bad), "--out-dir", str(tmp_path / "r")],
          "unknown setting 'learning_rate'", str(bad))
    bad.write_text("lr = 'fast'\n")
    fails(capsys, ["train", "fc-lif", "--config", str(bad), "--out-dir", str(tmp_path / "r")],
          "--lr in --config", "must be a number, got 'fast'; give it such a value.")
    bad.write_text("lr = [\n")
    fails(capsys, ["train", "fc-lif", "--config", str(bad)], "is not a readable TOML file")
    fails(capsys, ["train", "fc-lif", "--config", str(tmp_path / "none.toml")],
          "does not exist")
    assert not (tmp_path / "r").exists()


def test_a_config_file_naming_another_model_is_refused(tmp_path, capsys):
    other = tmp_path / "other.toml"
    other.write_text('model = "fc-lif"\n')
    fails(capsys, ["train", "csnn", "--config", str(other), "--out-dir", str(tmp_path / "r")],
          f"model 'fc-lif' in --config {other} is not the model of recipe csnn (csnn); choose "
          "the recipe instead (spikeforge recipes lists them), or drop the setting.")
    assert not (tmp_path / "r").exists()


def test_a_config_file_that_is_not_utf8_text_is_named(tmp_path, capsys):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00lr = 1\n")  # e.g. saved as UTF-16, or not a text file
    fails(capsys, ["train", "fc-lif", "--config", str(binary), "--out-dir", str(tmp_path / "r")],
          f"--config {binary} is not a readable TOML file", "can't decode byte 0xff")
    assert not (tmp_path / "r").exists()


def test_an_out_dir_holding_another_run_is_refused(finished_run, mnist_dir, capsys):
    before = snapshot(finished_run)
    fails(capsys, ["train", "fc-lif", "-T", "2", "--data-dir", str(mnist_dir), "--out-dir",
                   str(finished_run)], "already holds a run", "--resume", "--overwrite")
    assert snapshot(finished_run) == before


def test_an_out_dir_with_foreign_files_is_refused_even_with_overwrite(tmp_path, mnist_dir,
                                                                      capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    for extra in ([], ["--overwrite"]):
        fails(capsys, ["train", "fc-lif", "--data-dir", str(mnist_dir), "--out-dir",
                       str(tmp_path / "mine"), *extra], "holds no spikeforge run")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_overwrite_replaces_the_run(run_copy, mnist_dir, capsys):
    (run_copy / "figure.png").write_bytes(b"old")
    assert main(["train", "fc-lif", "-T", "3", "--epochs", "1", "--data-dir", str(mnist_dir),
                 "--out-dir", str(run_copy), "--overwrite", "--no-progress"]) == 0
    assert json.loads((run_copy / "config.json").read_text())["T"] == 3
    assert not (run_copy / "figure.png").exists()
    assert len((run_copy / "metrics.csv").read_text().splitlines()) == 2


def test_resume_removes_the_temporary_files_of_a_run_killed_mid_write(run_copy, capsys):
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # the killed writer: its pid names no process any more
    left = [run_copy / f".{name}.{child.pid}.tmp{suffix}" for name, suffix in
            (("config", ".json"), ("metrics", ".csv"), ("metrics", ".jsonl"))]
    for path in left:
        path.write_text("half")
    assert main(["train", "--resume", str(run_copy), "--epochs", "2", "--no-progress"]) == 0
    assert not any(path.exists() for path in left)
    assert sorted(p.name for p in run_copy.iterdir()) == [
        "best", "config.json", "last", "metrics.csv", "metrics.jsonl", "tensorboard"]


def test_resume_refuses_changed_settings(run_copy, capsys):
    before = snapshot(run_copy)
    fails(capsys, ["train", "--resume", str(run_copy), "--lr", "0.5"],
          "--lr 0.5 differs from the resumed run's 0.001")
    fails(capsys, ["train", "csnn", "--resume", str(run_copy)], "recipe csnn differs")
    fails(capsys, ["train", "--resume", str(run_copy), "--out-dir", "elsewhere"],
          "--out-dir and --resume")
    assert snapshot(run_copy) == before


def test_resume_of_a_finished_run_with_more_epochs_continues(run_copy, capsys):
    assert main(["train", "--resume", str(run_copy), "--no-progress"]) == 0
    assert "already finished 1 of 1 epochs" in capsys.readouterr().out
    assert main(["train", "--resume", str(run_copy), "--epochs", "2", "--no-progress"]) == 0
    assert torch.load(run_copy / "last" / "state.pt", weights_only=True)["epoch"] == 2
    assert json.loads((run_copy / "config.json").read_text())["epochs"] == 2


def _truncate(path):
    path.write_bytes(path.read_bytes()[:50])


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _foreign_state(path):
    torch.save({"model": {"w": torch.zeros(3)}, "epoch": 4}, path)


def _pickled_function(path):
    torch.save({"epoch": 1, "hook": shutil.rmtree}, path)  # a global: refused by weights_only


def _other_models_weights(path):
    run_dir = path.parent.parent
    state = torch.load(path.parent / "state.pt", weights_only=True)
    csnn = build_model(recipe_defaults("csnn"))
    checkpoint.save(run_dir, "last", csnn, state, "csnn")


def _foreign_config(path):
    (path.parent.parent / "config.json").write_text(json.dumps({"lr": 0.1, "layers": 3}))


def _lost_setting(path):
    config = path.parent.parent / "config.json"
    data = json.loads(config.read_text())
    del data["T"]  # would silently have become the recipe's T = 100
    config.write_text(json.dumps(data))


def _unknown_recipe(path):
    config = path.parent.parent / "config.json"
    config.write_text(config.read_text().replace('"recipe": "fc-lif"', '"recipe": "fc-lif2"'))


def _no_last(path):
    shutil.rmtree(path.parent)


@pytest.mark.parametrize("damage, target, needles", [
    (_truncate, "model.safetensors", ["does not match", "SHA-256"]),
    (_flip_last_byte, "model.safetensors", ["damaged or was replaced"]),
    (_truncate, "state.pt", ["state.pt is damaged or not a spikeforge checkpoint ("
                             "PytorchStreamReader failed reading zip archive: failed finding "
                             "central directory); use the run's other checkpoint (eval, "
                             "predict, inspect, energy, export: --checkpoint best or last; "
                             "train --resume reads last/ only), or train the run again with "
                             "--overwrite."]),
    (_foreign_state, "state.pt", ["is not a spikeforge checkpoint"]),
    (_pickled_function, "state.pt", ["state.pt is damaged or not a spikeforge checkpoint (it would "
                                     "run Python code, shutil.rmtree, which spikeforge never "
                                     "loads); use the run's other checkpoint"]),
    (_other_models_weights, "state.pt", ["holds weights of 'csnn'", "fc-lif"]),
    (_foreign_config, "state.pt", ["is not a spikeforge run config"]),
    (_lost_setting, "state.pt", ["config.json lacks the setting T, which the run was trained "
                                 "with; the file is damaged, restore it from a copy."]),
    (_unknown_recipe, "state.pt", ["config.json names recipe 'fc-lif2', which is not one of "
                                   "fc-lif, csnn,"]),
    (_no_last, "state.pt", ["last does not exist"]),
])
def test_a_damaged_or_foreign_checkpoint_is_named_and_left_alone(damage, target, needles,
                                                                 run_copy, capsys):
    damage(run_copy / "last" / target)
    before = snapshot(run_copy)
    for argv in (["train", "--resume", str(run_copy), "--epochs", "2"],
                 ["eval", str(run_copy), "--checkpoint", "last"],
                 ["predict", str(run_copy), "--index", "0", "--checkpoint", "last"]):
        fails(capsys, argv, *needles)
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("key, value, words", [
    ("epoch", "1", "its 'epoch' is not a whole number"),
    ("best_acc", None, "its 'best_acc' is not a number"),
    ("history", "rows", "its 'history' is not a list of metrics rows"),
    ("rng", [1], "its 'rng' is not random states"),
    ("optimizer", "adam", "its 'optimizer' is not an optimizer state"),
    ("scheduler", 3, "its 'scheduler' is not a scheduler state"),
    ("history", ["row"], "its epoch, history or random state is malformed"),
])
def test_resume_of_a_state_with_a_malformed_field_is_refused(key, value, words, run_copy,
                                                              capsys):
    path = run_copy / "last" / "state.pt"
    state = torch.load(path, weights_only=True)
    state[key] = value  # the weights' SHA-256 still matches: only the state is malformed
    torch.save(state, path)
    before = snapshot(run_copy)
    fails(capsys, ["train", "--resume", str(run_copy), "--epochs", "2"],
          f"{path} is damaged ({words}); use the run's other checkpoint")
    assert snapshot(run_copy) == before


def test_eval_and_predict_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    fails(capsys, ["eval", str(tmp_path)], "holds no config.json")
    fails(capsys, ["predict", str(tmp_path / "missing"), "--index", "0"], "does not exist")


def test_a_file_given_as_the_run_directory_is_called_a_file(finished_run, capsys):
    config = finished_run / "config.json"
    for argv in (["train", "--resume", str(config)], ["eval", str(config)],
                 ["predict", str(config), "--index", "0"], ["plot", str(config)],
                 ["export", str(config), "--nir", str(finished_run / "x.nir")]):
        fails(capsys, argv, f"{config} is a file, not a folder; give a run directory written "
                            "by `spikeforge train`.")
    assert not (finished_run / "x.nir").exists()


def test_predict_refuses_a_bad_index_or_image(finished_run, tmp_path, capsys):
    fails(capsys, ["predict", str(finished_run), "--index", "64"], "--index 64 is out of range",
          "0 to 63")
    fails(capsys, ["predict", str(finished_run), "--image", str(tmp_path / "x.png")],
          "does not exist")
    (tmp_path / "x.png").write_text("not an image")
    fails(capsys, ["predict", str(finished_run), "--image", str(tmp_path / "x.png")],
          "is not a readable image")


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_epoch(mnist_dir, tmp_path, capsys,
                                                                  monkeypatch):
    calls = {"train": 0}
    real = SF.LOSSES["mse_rate"]

    def poisoned(spikes, targets):
        loss = real(spikes, targets)
        if spikes.requires_grad:
            calls["train"] += 1
            if calls["train"] > 3:  # epoch 1 has 2 batches of 64; poison epoch 2's 2nd batch
                return loss * float("nan")
        return loss

    monkeypatch.setitem(SF.LOSSES, "mse_rate", poisoned)
    run = tmp_path / "run"
    fails(capsys, ["train", "fc-lif", "-T", "2", "--epochs", "3", "--data-dir", str(mnist_dir),
                   "--out-dir", str(run), "--no-progress"],
          "loss became nan by batch 2", "epoch 2", "last still holds epoch 1")
    state = torch.load(run / "last" / "state.pt", weights_only=True)
    assert state["epoch"] == 1
    assert len((run / "metrics.csv").read_text().splitlines()) == 2  # header + epoch 1
    model = build_model(recipe_defaults("fc-lif"))
    checkpoint.load_weights(run / "last", model, "fc-lif")
    assert all(torch.isfinite(p).all() for p in model.parameters())
