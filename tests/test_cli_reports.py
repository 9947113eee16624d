"""What the commands say while and after they work: progress on stderr for eval, export and the
N-MNIST data commands; a best accuracy measured on a ``--max-batches`` subset says so (summary
and metrics.jsonl); counts in words ("1 epoch")."""

from __future__ import annotations

import json
import re

import pytest
from test_train_synthetic import one_thread, write_mnist, write_nmnist  # noqa: F401 (autouse)

from spikeforge.cli import main
from spikeforge.train.run import read_metrics


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("mnist"), n_train=64, n_test=50)


@pytest.fixture(scope="module")
def subset_run(mnist_dir, tmp_path_factory):
    """One epoch of fc-lif whose test pass covers 3 batches of 10 of the 50 test images."""
    run = tmp_path_factory.mktemp("runs") / "fc"
    assert main(["train", "fc-lif", "-T", "2", "-b", "10", "--epochs", "1", "--max-batches",
                 "3", "--data-dir", str(mnist_dir), "--out-dir", str(run), "--no-progress"]) == 0
    return run


def test_a_subset_test_accuracy_says_so_in_the_summary_and_the_metrics(mnist_dir, tmp_path,
                                                                       capsys):
    run = tmp_path / "run"
    assert main(["train", "fc-lif", "-T", "2", "-b", "10", "--epochs", "1", "--max-batches",
                 "3", "--data-dir", str(mnist_dir), "--out-dir", str(run), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (row,) = read_metrics(run)
    assert (row["test_images"], row["test_set_images"]) == (30, 50)
    assert re.fullmatch(rf"epoch 1/1 .* acc {row['test_acc']:.4f} on 30 of 50 images .*",
                        lines[-2])
    assert lines[-1].startswith(f"best test accuracy {row['test_acc']:.4f} at epoch 1, "
                                "measured on 30 of the 50 test images (--max-batches)")
    assert f"spikeforge eval {run}" in lines[-1]

    full = tmp_path / "full"
    assert main(["train", "fc-lif", "-T", "2", "-b", "10", "--epochs", "1", "--data-dir",
                 str(mnist_dir), "--out-dir", str(full), "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (row,) = read_metrics(full)
    assert (row["test_images"], row["test_set_images"]) == (50, 50)
    assert " of 50 images" not in lines[-2] and "measured on" not in lines[-1]


def test_eval_shows_progress_on_stderr_and_keeps_stdout_clean(subset_run, capsys):
    assert main(["eval", str(subset_run), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["images"] == 50
    # 5 batches: a line per tenth (here per batch), each with the running accuracy
    assert [line.split("loss")[0].split() for line in err.splitlines()] == \
        [["eval", f"{i}/5"] for i in range(1, 6)]
    assert main(["eval", str(subset_run), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "test set, 50 images: accuracy" in out
    assert main(["eval", str(subset_run), "--no-progress", "--max-batches", "2"]) == 0
    assert "test set, 20 of its 50 images (--max-batches): accuracy" in capsys.readouterr().out


def test_plot_counts_one_epoch_in_words(subset_run, tmp_path, capsys):
    assert main(["plot", str(subset_run), "--out-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("(1 epoch)")


def test_export_shows_its_steps_on_stderr(subset_run, tmp_path, capsys):
    pytest.importorskip("nir")
    out = tmp_path / "net.nir"
    assert main(["export", str(subset_run), "--nir", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split()[:2] for line in err] == [["export", "1/3"], ["export", "2/3"],
                                                   ["export", "3/3"]]
    assert err[0].endswith(f"loaded best/ of {subset_run}") and err[-1].endswith("wrote net.nir")


def test_simulate_and_prepare_show_progress_per_split(mnist_dir, tmp_path, capsys):
    pytest.importorskip("tonic")
    tree = tmp_path / "nmnist"
    assert main(["data", "simulate-nmnist", "--mnist-dir", str(mnist_dir), "--out", str(tree),
                 "--limit", "3"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "simulate Train  3/3  recordings", "simulate Test  3/3  recordings"]
    write_nmnist(tmp_path / "events", n_train=12, n_test=5)
    assert main(["data", "prepare-nmnist", str(tmp_path / "events"), "--cache-dir",
                 str(tmp_path / "cache")]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "prepare Train  12/12  recordings", "prepare Test  5/5  recordings"]
    assert main(["data", "prepare-nmnist", str(tmp_path / "events"), "--cache-dir",
                 str(tmp_path / "cache"), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_inspect_grid_shows_progress_on_stderr(subset_run, tmp_path, capsys):
    assert main(["inspect", str(subset_run), "--grid", "4", "--out-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"classify  {i}/4  samples" for i in range(1, 5)]
    assert "correct" in out
