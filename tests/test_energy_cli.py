"""``spikeforge energy`` on a tiny fc-lif run trained here (synthetic MNIST in the IDX format):
the table, energy.json and figures/energy.png are written, the JSON holds the counts, the
accuracy equals ``spikeforge eval`` on the same batches (the same Poisson spikes), and a bad
--costs file or a run without a checkpoint exits 2 with one sentence."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from spikeforge.cli import main
from spikeforge.data import read_idx, write_idx

T = 8


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("energy")
    rng = np.random.default_rng(0)
    for stem, n in (("train", 128), ("t10k", 40)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        if stem == "t10k":  # stored class by class, as the N-MNIST test set is
            labels = np.sort(labels)
        images = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 + 2 * k:5 + 2 * k, 4:24] = 230
        write_idx(root / "data" / f"{stem}-images-idx3-ubyte", images)
        write_idx(root / "data" / f"{stem}-labels-idx1-ubyte", labels)
    run = root / "run"
    assert main(["train", "fc-lif", "--epochs", "1", "-T", str(T), "-b", "32", "--lr", "0.01",
                 "--data-dir", str(root / "data"), "--out-dir", str(run), "--device", "cpu",
                 "--no-progress", "--no-download"]) == 0
    return run


def test_energy_writes_report_and_figure(run_dir, capsys):
    capsys.readouterr()
    assert main(["energy", str(run_dir), "-b", "10", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run_dir / "energy.json").read_text())
    assert printed == saved
    assert saved["samples"] == 40 and saved["recipe"] == "fc-lif" and saved["T"] == T
    assert saved["selection"] == "whole test set" and saved["test_set_samples"] == 40
    linear, neuron = saved["layers"]
    assert (linear["name"], linear["role"], neuron["name"], neuron["role"]) == (
        "net.1", "synaptic", "net.2", "spiking")
    assert linear["macs"] == 0 and linear["ann_macs"] == 7840
    assert saved["total"]["acs"] == linear["acs"] > 0
    assert saved["total"]["energy_pj"] == pytest.approx(0.9 * linear["acs"])
    assert neuron["rate"] == pytest.approx(neuron["spikes"] / (10 * T))
    assert saved["costs"]["e_mac_pj"] == 4.6 and "Horowitz" in saved["costs"]["source"]
    assert "Poisson-Linear" in saved["fast_path"]
    image = Image.open(run_dir / "figures" / "energy.png")
    assert image.format == "PNG" and image.size == (1100, 420)
    assert len(np.unique(np.asarray(image.convert("L")))) > 2

    assert main(["eval", str(run_dir), "-b", "10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] == saved["accuracy"]


def test_a_part_of_the_test_set_is_drawn_across_it(run_dir, tmp_path, capsys):
    """The test set is stored class by class; its first 2 batches of 10 hold 3-5 classes."""
    capsys.readouterr()
    assert main(["energy", str(run_dir), "--batches", "2", "-b", "10", "--json",
                 "--out-dir", str(tmp_path)]) == 0
    saved = json.loads(capsys.readouterr().out)
    labels = read_idx(run_dir.parent / "data" / "t10k-labels-idx1-ubyte")
    first = np.unique(labels[:20])
    assert saved["samples"] == 20 and saved["selection"] == "shuffled, seed 0"
    assert saved["classes_counted"] > len(first)


def test_energy_table(run_dir, tmp_path, capsys):
    capsys.readouterr()
    assert main(["energy", str(run_dir), "--batches", "1", "-b", "10",
                 "--out-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "Linear 784→10" in out and "LIF [10]" in out and "total" in out
    assert "E_MAC 4.6 pJ, E_AC 0.9 pJ" in out
    assert "per sample, over 10 samples of 8 time steps (10 of the 40 test samples" in out
    assert (tmp_path / "out" / "energy.json").exists()
    assert (tmp_path / "out" / "figures" / "energy.png").exists()


def test_bad_costs_file_exits_2(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("e_mac_pj = 4.6\n")
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["energy", str(run_dir), "--costs", str(bad), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikeforge: error: --costs") and "e_ac_pj" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_run_without_checkpoint_exits_2(run_dir, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "config.json", bare / "config.json")
    capsys.readouterr()
    assert main(["energy", str(bare)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikeforge: error:") and len(err.splitlines()) == 1
    assert not (bare / "energy.json").exists()


def test_unwritable_out_dir_exits_2(run_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    capsys.readouterr()
    assert main(["energy", str(run_dir), "--batches", "1", "-b", "10",
                 "--out-dir", str(blocker)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--out-dir" in err and len(err.splitlines()) == 1  # refused before measuring
    assert blocker.read_text() == "not a folder"


def test_energy_shows_progress_on_stderr_unless_told_not_to(run_dir, tmp_path, capsys):
    capsys.readouterr()
    argv = ["energy", str(run_dir), "--batches", "2", "-b", "10", "--json", "--out-dir",
            str(tmp_path)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == "energy  1/2  batches\nenergy  2/2  batches\n"  # not a terminal: plain lines
    assert json.loads(out)["samples"] == 20  # stdout stays JSON
    assert main([*argv, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_a_disk_that_fills_while_the_figure_is_written_keeps_the_old_report(
        run_dir, tmp_path, capsys, monkeypatch):
    import errno
    import os

    from matplotlib.figure import Figure

    out = tmp_path / "out"
    argv = ["energy", str(run_dir), "--batches", "1", "-b", "10", "--no-progress",
            "--out-dir", str(out)]
    assert main(argv) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", savefig)
    capsys.readouterr()
    assert main([*argv[:3], "2", *argv[4:]]) == 2
    err = capsys.readouterr().err.strip()
    assert os.strerror(errno.ENOSPC) in err and len(err.splitlines()) == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
