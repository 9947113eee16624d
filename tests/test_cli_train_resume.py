"""A run killed with SIGKILL mid-epoch and resumed ends bit for bit where an uninterrupted run
ends: same weights file, same optimizer state, same metrics (timings aside)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_train_synthetic import one_thread, write_mnist  # noqa: F401 (autouse fixture)

from spikeforge.cli import main

TIMING = ("train_img_per_s", "test_img_per_s", "seconds")


def command(data_dir, out_dir, *extra: str) -> list[str]:
    return [sys.executable, "-m", "spikeforge", "train", "fc-lif", "-T", "4", "-b", "16",
            "--epochs", "3", "--data-dir", str(data_dir), "--out-dir", str(out_dir), *extra]


def metrics(run) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_epoch_then_resume_is_bit_exact(tmp_path, capsys):
    data = write_mnist(tmp_path / "mnist", n_train=640, n_test=128)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    victim = subprocess.Popen(command(data, killed), env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    for line in victim.stdout:  # plain progress lines: one per tenth of an epoch
        seen.append(line)
        if line.startswith("train 2/3") and " 40/40 " not in line:
            victim.send_signal(signal.SIGKILL)  # a few batches into epoch 2
            break
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "".join(seen)
    state = torch.load(killed / "last" / "state.pt", weights_only=True)
    assert state["epoch"] == 1
    assert len(metrics(killed)) == 1

    # the uninterrupted run, and the resumed one, in this process (also on one thread)
    assert main(command(data, straight, "--no-progress")[3:]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    assert "resumed after epoch 1" in capsys.readouterr().out

    for name in ("last", "best"):
        wa, wb = (load_file(run / name / "model.safetensors") for run in (killed, straight))
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa)  # bit for bit
        a = torch.load(killed / name / "state.pt", weights_only=True)
        b = torch.load(straight / name / "state.pt", weights_only=True)
        assert a["epoch"] == b["epoch"] and a["best_acc"] == b["best_acc"]
        assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
        for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(),
                          strict=True):
            assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert metrics(killed) == metrics(straight)
    assert [row["epoch"] for row in metrics(killed)] == ["1", "2", "3"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_mid_epoch_exits_130_keeping_the_last_epoch(signum, tmp_path):
    data = write_mnist(tmp_path / "mnist", n_train=640, n_test=128)
    run = tmp_path / "run"
    victim = subprocess.Popen(command(data, run), env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in victim.stdout:
        if line.startswith("train 2/3") and " 40/40 " not in line:
            victim.send_signal(signum)  # a few batches into epoch 2
            break
    victim.stdout.read()
    assert victim.wait(timeout=60) == 130
    assert victim.stderr.read() == (f"spikeforge: interrupted; {run / 'last'} keeps the last "
                                    "finished epoch: continue with spikeforge train --resume "
                                    f"{run}\n")
    assert torch.load(run / "last" / "state.pt", weights_only=True)["epoch"] == 1
    assert len(metrics(run)) == 1
    assert sorted(p.name for p in run.iterdir()) == ["best", "config.json", "last", "metrics.csv",
                                                     "metrics.jsonl", "tensorboard"]
