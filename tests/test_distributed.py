"""DDP through ``--nproc`` on CPU (gloo, 127.0.0.1): 2 processes × B/2 follow 1 process × B;
the launcher reports a worker's error once and stops its workers with it."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_synthetic import write_mnist

from spikeforge import cli, worker
from spikeforge.errors import ConfigError, SpikeforgeError
from spikeforge.train import distributed
from spikeforge.train.distributed import launched_by_torchrun, outcome
from spikeforge.worker import LAUNCHER_ENV, PEER_LOST


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


def test_a_user_error_in_the_workers_is_one_sentence_from_the_launcher(runs):
    tmp, data, _, _ = runs
    run = tmp / "two"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    failed = _train(data, run, 16, "--nproc", "2")  # both ranks refuse the folder
    assert failed.returncode == 2
    assert failed.stderr.splitlines() == [
        f"spikeforge: error: --out-dir {run} already holds a run; continue it with --resume "
        f"{run}, replace it with --overwrite, or choose another --out-dir."]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def _workers_of(launcher: int) -> list[int]:
    """The processes whose environment names ``launcher`` as their --nproc launcher."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"{LAUNCHER_ENV}={launcher}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; the launcher's "
                    "SIGKILL guard (PR_SET_PDEATHSIG) is Linux-only")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_the_launcher_stops_every_worker(sig, runs, tmp_path):
    """SIGTERM reaches the workers (the run stops as on Ctrl-C, one line says how to go on);
    after SIGKILL, which the launcher cannot catch, the workers stop by themselves. Both
    ways, the run resumes."""
    _, data, _, _ = runs
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "spikeforge", "train", "rleaky", "-T", "4", "-b", "16",
           "--epochs", "1000", "--data-dir", str(data), "--out-dir", str(out), "--no-progress",
           "--nproc", "2"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:
        if line.startswith("epoch 2/"):
            break
    workers = _workers_of(proc.pid)
    assert len(workers) == 2
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while _workers_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _workers_of(proc.pid) == []
    if sig == signal.SIGTERM:
        assert proc.returncode == 130
        assert err.splitlines() == [
            f"spikeforge: interrupted; {out / 'last'} keeps the last finished epoch: continue "
            f"with spikeforge train --resume {out}"]
    resumed = subprocess.run([sys.executable, "-m", "spikeforge", "train", "--resume", str(out),
                              "--epochs", "4", "--no-progress"], env=_env(), capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [row["epoch"] for row in _rows(out)][-1] == 4


@pytest.mark.parametrize("environ, message", [
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE='2' is set but RANK, MASTER_ADDR, MASTER_PORT are not"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1"},
     "WORLD_SIZE='2' is set but MASTER_PORT is not"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not a number of processes"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0' is not a number of processes"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "abc"},
     "MASTER_PORT='abc' is not a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "x", "MASTER_ADDR": "h", "MASTER_PORT": "1"},
     "RANK='x' is not a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1", "LOCAL_RANK": "z"},
     "LOCAL_RANK='z' is not a whole number"),
    # a rank the group cannot hold waited silently for the 30-minute rendezvous timeout
    ({"WORLD_SIZE": "2", "RANK": "5", "MASTER_ADDR": "h", "MASTER_PORT": "1"},
     "RANK=5 is not below WORLD_SIZE=2"),
])
def test_stray_or_broken_rendezvous_variables_are_refused(environ, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message) + ".*; unset them, or start "
                       "the processes with torchrun or spikeforge train --nproc N\\.$"):
        launched_by_torchrun(environ)


def test_a_whole_rendezvous_or_none_is_a_launcher_or_not():
    assert launched_by_torchrun({}) is False
    assert launched_by_torchrun({"WORLD_SIZE": "1"}) is False
    assert launched_by_torchrun({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "h",
                                 "MASTER_PORT": "1"}) is True


def test_a_worker_hands_its_error_to_the_launcher_and_stays_quiet(tmp_path, monkeypatch, capsys):
    error_file = tmp_path / "rank1.err"
    monkeypatch.setenv(worker.ERROR_FILE_ENV, str(error_file))
    monkeypatch.setattr(os, "getppid", lambda: 4242)  # the launcher, as follow_launcher checks
    monkeypatch.setenv(worker.LAUNCHER_ENV, "4242")
    monkeypatch.setattr(distributed.ctypes, "CDLL", lambda *a, **k: None)  # no prctl on pytest
    assert cli.main(["train", "no-such-recipe"]) == 2
    assert capsys.readouterr().err == ""
    assert error_file.read_text().startswith("unknown recipe 'no-such-recipe'")


@pytest.mark.parametrize("codes, stopped, interrupted, expected", [
    ([0, 0], set(), False, 0),
    ([2, PEER_LOST], set(), False, "no sentence"),
    ([1, PEER_LOST], set(), False, 1),  # a bug: the worker printed its traceback itself
    ([PEER_LOST, 1], set(), False, 1),
    # a worker killed while the other was still starting: the other is stopped by the launcher,
    # and that SIGTERM is no interrupt of the user's
    ([-signal.SIGKILL, -signal.SIGTERM], {1}, False,
     "training process 0 was killed by SIGKILL (out of memory?); continue the run with --resume, "
     "with fewer --nproc or a smaller batch."),
    ([PEER_LOST, -signal.SIGSEGV], set(), False,
     "training process 1 was killed by SIGSEGV; continue the run with --resume."),
    ([-signal.SIGTERM, -signal.SIGTERM], set(), False, 130),  # kill -TERM of the workers
    ([0, 130], set(), True, 130),
    ([PEER_LOST, PEER_LOST], set(), False, "the training processes lost their connection"),
])
def test_the_launchers_status_names_the_worker_that_failed(codes, stopped, interrupted,
                                                           expected):
    messages = ["--data-dir x is empty; give the folder."] if expected == "no sentence" else []
    if expected == "no sentence":
        with pytest.raises(SpikeforgeError, match=r"^--data-dir x is empty"):
            outcome(codes, stopped, interrupted, messages)
    elif isinstance(expected, str):
        with pytest.raises(SpikeforgeError, match="^" + re.escape(expected)):
            outcome(codes, stopped, interrupted, messages)
    else:
        assert outcome(codes, stopped, interrupted, messages) == expected


def test_nproc_one_trains_in_this_process(runs, tmp_path, capsys):
    """A worker of `--nproc 1` once saw WORLD_SIZE=1, took itself for no worker and launched
    again: 17 nested processes in 20 s."""
    _, data, _, _ = runs
    argv = ["train", "rleaky", "-T", "2", "-b", "32", "--epochs", "1", "--max-batches", "2",
            "--data-dir", str(data), "--out-dir", str(tmp_path / "run"), "--no-progress",
            "--nproc", "1"]
    assert cli.main(argv) == 0
    assert "epoch 1/1" in capsys.readouterr().out


def test_stray_worker_variables_alone_change_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(worker.LAUNCHER_ENV, "1")
    assert not worker.launched()
    assert cli.main(["train", "no-such-recipe"]) == 2
    assert capsys.readouterr().err.startswith("spikeforge: error: unknown recipe")
    monkeypatch.delenv(worker.LAUNCHER_ENV)
    monkeypatch.setenv(worker.ERROR_FILE_ENV, str(tmp_path / "err"))
    assert cli.main(["train", "no-such-recipe"]) == 2
    assert capsys.readouterr().err.startswith("spikeforge: error: unknown recipe")
    assert not (tmp_path / "err").exists()


def test_only_a_lost_peer_counts_as_one(monkeypatch):
    gone = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed "
                        "by peer [127.0.0.1]:1234")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert worker.is_peer_lost(gone)
    assert not worker.is_peer_lost(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process has no peers to lose
    assert not worker.is_peer_lost(gone)
