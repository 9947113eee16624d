"""DDP through torchrun on CPU (gloo, 127.0.0.1): 2 processes × B/2 follow 1 process × B."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_train_synthetic import write_mnist

from spikeforge.train.distributed import strip_nproc


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "MASTER_ADDR": "127.0.0.1"}


def _train(data, out, batch, *extra: str) -> subprocess.CompletedProcess:
    # rleaky is direct-encoded and has no BatchNorm: no per-rank randomness or statistics, so the
    # two layouts compute the same global-batch gradient up to float rounding. SGD keeps that
    # rounding small; Adam divides by sqrt(v) and turns the sign of a ~1e-12 gradient into a full
    # step, after which spiking nets diverge like any chaotic system.
    cmd = [sys.executable, "-m", "spikeforge", "train", "rleaky", "-T", "4", "-b", str(batch),
           "--opt", "sgd", "--lr", "0.05", "--momentum", "0.9", "--epochs", "2",
           "--data-dir", str(data), "--out-dir", str(out), "--no-progress", *extra]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)


def _rows(run) -> list[dict[str, float]]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    data = write_mnist(tmp / "mnist", n_train=384, n_test=128)
    two = _train(data, tmp / "two", 16, "--nproc", "2")
    one = _train(data, tmp / "one", 32)
    assert two.returncode == 0, two.stderr[-3000:]
    assert one.returncode == 0, one.stderr[-3000:]
    return tmp, data, two, one


def test_two_processes_follow_one_process_with_the_same_global_batch(runs):
    tmp, _, _, _ = runs
    two, one = _rows(tmp / "two"), _rows(tmp / "one")
    assert len(two) == len(one) == 2
    for a, b in zip(two, one, strict=True):
        for key in ("train_loss", "test_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=1 / 384)
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1 / 128)
    assert two[-1]["test_acc"] > 0.5  # it learned
    wa = load_file(tmp / "two" / "last" / "model.safetensors")
    wb = load_file(tmp / "one" / "last" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_only_rank_zero_writes_and_prints(runs):
    tmp, _, two, _ = runs
    assert sorted(p.name for p in tmp.iterdir()) == ["mnist", "one", "two"]
    run = tmp / "two"
    assert len(list((run / "tensorboard").iterdir())) == 1
    assert len(_rows(run)) == 2
    assert two.stdout.count("epoch 2/2") == 1


def test_each_worker_records_the_thread_count_the_launcher_gave_it(runs):
    # the launcher passes the user's OMP_NUM_THREADS=1 on as SPIKEFORGE_THREADS
    config = json.loads((runs[0] / "two" / "config.json").read_text())
    assert (config["threads"], config["threads_policy"]) == (1, "from SPIKEFORGE_THREADS")


def test_a_two_process_checkpoint_resumes_with_one_process(runs):
    tmp, data, _, _ = runs
    resumed = subprocess.run(
        [sys.executable, "-m", "spikeforge", "train", "--resume", str(tmp / "two"), "--epochs",
         "3", "--no-progress"], env=_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed after epoch 2" in resumed.stdout
    rows = _rows(tmp / "two")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[2]["train_acc"] > 0.1


def test_strip_nproc_keeps_every_other_flag():
    assert strip_nproc(["train", "fc-lif", "--nproc", "2", "-b", "8"]) == \
        ["train", "fc-lif", "-b", "8"]
    assert strip_nproc(["train", "--nproc=4", "--amp"]) == ["train", "--amp"]
