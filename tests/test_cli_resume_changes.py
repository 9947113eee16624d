"""`spikeforge train --resume RUN` with flags: each setting that may change is honoured as a
run started with it would have it (the cosine schedule over the new ``--epochs``), every other
one is refused in one sentence; a run folder with a config but no checkpoint resumes from
epoch 1."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_train_synthetic import one_thread, write_mnist  # noqa: F401 (autouse fixture)

from spikeforge.cli import main
from spikeforge.train.build import build_optimizer, build_scheduler, restore_scheduler
from spikeforge.train.recipes import recipe_defaults, resolve
from spikeforge.train.run import read_metrics, write_config

CSNN = ["--channels", "4", "-T", "2", "-b", "16", "--max-batches", "3", "--no-progress"]


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("mnist"), n_train=96, n_test=48)


@pytest.fixture(scope="module")
def csnn_one_epoch(mnist_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "csnn"
    assert main(["train", "csnn", *CSNN, "--epochs", "1", "--data-dir", str(mnist_dir),
                 "--out-dir", str(run)]) == 0
    return run


def fails(capsys, argv, *needles: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("spikeforge: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_resume_with_more_epochs_follows_the_cosine_of_the_new_total(csnn_one_epoch, mnist_dir,
                                                                     tmp_path, capsys):
    run = shutil.copytree(csnn_one_epoch, tmp_path / "resumed")
    assert [r["lr"] for r in read_metrics(run)] == [0.1]
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    resumed = [r["lr"] for r in read_metrics(run)]
    assert resumed == [0.1, pytest.approx(0.05, abs=1e-12)]  # 0.1·(1 + cos(π/2))/2, not 0.0
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    straight = tmp_path / "straight"
    assert main(["train", "csnn", *CSNN, "--epochs", "2", "--data-dir", str(mnist_dir),
                 "--out-dir", str(straight)]) == 0
    assert "{Conv3x3(4)-BN-IF-MaxPool2}x2" in capsys.readouterr().out
    assert [r["lr"] for r in read_metrics(straight)] == pytest.approx(resumed, abs=1e-12)
    state = torch.load(run / "last" / "state.pt", weights_only=True)
    assert state["scheduler"]["T_max"] == 2
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    fails(capsys, ["train", "--resume", str(run), "--epochs", "1"],
          f"--epochs 1 is fewer than the 2 epochs {run} has finished", "--epochs 2 or more")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_the_readmes_64_to_80_epoch_example_continues_on_a_cosine_over_80():
    config = recipe_defaults("csnn")
    net = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(config, net.parameters())
    scheduler = build_scheduler(config, optimizer)
    for _ in range(64):
        optimizer.step()
        scheduler.step()
    saved = scheduler.state_dict()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # end of the 64

    unchanged = build_scheduler(config, build_optimizer(config, net.parameters()))
    restore_scheduler(config, unchanged, saved)
    assert unchanged.get_last_lr() == scheduler.get_last_lr()  # bit for bit when epochs stay

    config.epochs = 80
    optimizer = build_optimizer(config, net.parameters())
    scheduler = build_scheduler(config, optimizer)
    restore_scheduler(config, scheduler, saved)
    for epoch in range(64, 80):  # epochs 65..80 run at the 80-epoch cosine's rates
        assert optimizer.param_groups[0]["lr"] == pytest.approx(
            0.1 * (1 + math.cos(math.pi * epoch / 80)) / 2, rel=1e-9, abs=1e-15)
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("flags, needle", [
    (["--lr", "0.5"], "--lr 0.5 differs from the resumed run's 0.1"),
    (["-b", "32"], "--batch-size 32 differs from the resumed run's 16"),
    (["--momentum", "0.5"], "--momentum 0.5 differs"),
    (["--opt", "adam"], "--opt adam differs"),
    (["-T", "3"], "-T 3 differs"),
    (["--seed", "1"], "--seed 1 differs"),
    (["--max-batches", "2"], "--max-batches 2 differs"),
    (["--channels", "8"], "--channels 8 differs"),
    (["--amp"], "--amp True differs from the resumed run's False"),
    (["--dataset", "fashion-mnist"], "--dataset fashion-mnist differs"),
])
def test_resume_refuses_every_setting_that_would_change_the_run(flags, needle, csnn_one_epoch,
                                                                capsys):
    before = {p: p.read_bytes() for p in csnn_one_epoch.rglob("*") if p.is_file()}
    fails(capsys, ["train", "--resume", str(csnn_one_epoch), *flags], needle,
          "only --device, --workers, --data-dir, --cache-dir, download, --epochs may change")
    assert {p: p.read_bytes() for p in csnn_one_epoch.rglob("*") if p.is_file()} == before


def test_a_run_folder_with_only_its_config_resumes_from_epoch_one(mnist_dir, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    config = resolve("fc-lif", None, {"T": 2, "epochs": 1, "data_dir": str(mnist_dir)})
    write_config(run, config)  # what a run killed in its first epoch leaves
    fails(capsys, ["eval", str(run)], f"{run / 'best'} does not exist",
          f"spikeforge train --resume {run}")
    fails(capsys, ["train", "fc-lif", "--out-dir", str(run)], f"continue it with --resume {run}")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "no checkpoint yet: starting it from epoch 1 with its saved config" in out
    assert [r["epoch"] for r in read_metrics(run)] == [1]
    assert torch.load(run / "last" / "state.pt", weights_only=True)["epoch"] == 1
    assert main(["eval", str(run), "--no-progress"]) == 0


def test_a_run_that_lost_last_but_kept_best_is_refused_with_the_ways_out(csnn_one_epoch,
                                                                         tmp_path, capsys):
    run = shutil.copytree(csnn_one_epoch, tmp_path / "run")
    shutil.rmtree(run / "last")
    fails(capsys, ["train", "--resume", str(run)], "last does not exist although",
          f"spikeforge eval {run}", "--overwrite")
    assert not (run / "last").exists()


def _write_legacy_checkpoint(folder) -> None:
    """Rewrite a checkpoint as spikeforge 0.1.0 wrote it: safetensors' save_file and
    torch.save to the path, history rows without test_images/test_set_images."""
    weights, state_path = folder / "model.safetensors", folder / "state.pt"
    tensors = load_file(weights)
    with safe_open(weights, "pt") as handle:
        meta = handle.metadata()
    state = torch.load(state_path, weights_only=True)
    new = ("test_images", "test_set_images")
    state["history"] = [{k: v for k, v in row.items() if k not in new}
                        for row in state["history"]]
    save_file(tensors, weights, metadata=meta)
    state["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    torch.save(state, state_path)


def test_a_run_written_by_the_previous_version_resumes(csnn_one_epoch, tmp_path, capsys):
    run = shutil.copytree(csnn_one_epoch, tmp_path / "old")
    for name in ("last", "best"):
        _write_legacy_checkpoint(run / name)
    for name in ("metrics.csv", "metrics.jsonl"):
        (run / name).unlink()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    rows = read_metrics(run)
    assert [r["lr"] for r in rows] == [0.1, pytest.approx(0.05, abs=1e-12)]
    assert rows[0]["test_images"] is None and rows[1]["test_images"] == 48
    assert (run / "metrics.csv").read_text().splitlines()[1].endswith(",,")
