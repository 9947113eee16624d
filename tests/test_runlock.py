"""One writer per run directory (``train/runlock.py``)."""

from __future__ import annotations

import sys

import pytest
from test_train_synthetic import write_mnist

from spikeforge import cli
from spikeforge.errors import ConfigError
from spikeforge.train.runlock import RunLock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows: nothing "
                                "is locked there")


def test_a_second_lock_on_a_locked_run_is_refused_until_released(tmp_path):
    with RunLock(tmp_path) as first:
        first.acquire()
        second = RunLock(tmp_path)
        with pytest.raises(ConfigError, match=rf"^{tmp_path} is being written by another "
                           r"spikeforge train right now; wait for it to finish \(or stop it\), "
                           r"then try again\.$"):
            second.acquire()
    second.acquire()  # released with the block
    second.release()


def test_a_missing_folder_is_not_locked_until_it_exists(tmp_path):
    lock = RunLock(tmp_path / "new")
    lock.acquire()
    (tmp_path / "new").mkdir()
    lock.acquire()
    with pytest.raises(ConfigError):
        RunLock(tmp_path / "new").acquire()
    lock.release()


def test_train_refuses_a_run_another_train_is_writing(tmp_path, capsys):
    """`train --resume` and `train --overwrite` of a run being written leave it untouched."""
    data = write_mnist(tmp_path / "mnist", n_train=64, n_test=32)
    run = tmp_path / "run"
    base = ["--data-dir", str(data), "--no-progress", "-b", "32", "-T", "2"]
    assert cli.main(["train", "rleaky", "--epochs", "1", "--out-dir", str(run), *base]) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    with RunLock(run) as held:  # as a training process in its epoch loop holds it
        held.acquire()
        for argv in (["train", "--resume", str(run), "--epochs", "2", "--no-progress"],
                     ["train", "rleaky", "--epochs", "1", "--out-dir", str(run), "--overwrite",
                      *base]):
            assert cli.main(argv) == 2
            assert capsys.readouterr().err == (f"spikeforge: error: {run} is being written by "
                                               "another spikeforge train right now; wait for "
                                               "it to finish (or stop it), then try again.\n")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert cli.main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0


def test_a_new_run_locks_its_folder_before_checking_it(tmp_path, capsys, monkeypatch):
    """Two new trainings of one missing folder both passed the check and then wrote it in turn
    (with --overwrite the second one cleared the first's run): the folder is now made and
    locked first, so the second is refused before it checks, clears or writes anything."""
    data = write_mnist(tmp_path / "mnist", n_train=64, n_test=32)
    run = tmp_path / "run"
    from spikeforge.train import trainer

    seen = []

    def check_while_another_waits(out_dir, overwrite):
        seen.append(out_dir)
        with pytest.raises(ConfigError, match="is being written by another spikeforge train"):
            RunLock(out_dir).acquire()  # the second training, arriving now
        return check(out_dir, overwrite)

    check = trainer.check_out_dir
    monkeypatch.setattr(trainer, "check_out_dir", check_while_another_waits)
    argv = ["train", "rleaky", "--epochs", "1", "--out-dir", str(run), "--data-dir", str(data),
            "--no-progress", "-b", "32", "-T", "2"]
    assert cli.main(argv) == 0
    assert seen == [run]


def test_a_new_run_that_fails_to_start_leaves_no_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    run = tmp_path / "parent" / "run"
    assert cli.main(["train", "rleaky", "--out-dir", str(run), "--data-dir", str(empty),
                     "--no-download", "--no-progress"]) == 2
    assert "spikeforge: error:" in capsys.readouterr().err
    assert not (tmp_path / "parent").exists()  # nor the parent it made for it


def test_a_new_run_that_fails_in_its_first_epoch_leaves_no_stub(tmp_path, capsys, monkeypatch):
    """Bad data met while training (an N-MNIST recording decoded in epoch 1) left config.json,
    metrics and TensorBoard behind, and the same command, data fixed, was refused as 'already
    holds a run'."""
    from spikeforge.errors import DataError
    from spikeforge.train import trainer

    data = write_mnist(tmp_path / "mnist", n_train=64, n_test=32)
    run = tmp_path / "runs" / "run"

    def damaged(*args, **kwargs):
        raise DataError("Train/5/00001.bin is truncated; copy it again.")

    good = trainer.train_one_epoch
    monkeypatch.setattr(trainer, "train_one_epoch", damaged)
    argv = ["train", "rleaky", "--epochs", "1", "--out-dir", str(run), "--data-dir", str(data),
            "--no-progress", "-b", "32", "-T", "2"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == \
        "spikeforge: error: Train/5/00001.bin is truncated; copy it again.\n"
    assert not (tmp_path / "runs").exists()
    monkeypatch.setattr(trainer, "train_one_epoch", good)
    assert cli.main(argv) == 0
