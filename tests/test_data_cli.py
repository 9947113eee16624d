"""``spikeforge data ...``: reports, simulated N-MNIST from the real MNIST, one-line errors."""

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from spikeforge.cli import main
from spikeforge.data import write_idx

MNIST_DIR = Path("/work/shared/data/mnist")


def _tiny_mnist(folder, n=12):
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)
    return folder


def test_info_reports_idx_files(tmp_path, capsys):
    _tiny_mnist(tmp_path)
    assert main(["data", "info", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    labels = [e for e in report["idx"] if e["kind"] == "labels"]
    assert len(report["idx"]) == 4 and len(labels) == 2
    assert labels[0]["per_class"] == [2, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    assert all(e["known"] is None for e in report["idx"])  # not the official files
    assert main(["data", "info", str(tmp_path)]) == 0
    assert "images 12x28x28 uint8" in capsys.readouterr().out


def test_info_flags_a_damaged_file_and_an_empty_folder(tmp_path, capsys):
    _tiny_mnist(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(struct.pack(">HBBIII", 0, 8, 3, 2, 28, 28) + bytes(20)))
    for extra in ([], ["--json"]):  # the damaged file fails the command; the others are surveyed
        assert main(["data", "info", str(tmp_path), *extra]) == 2
        out, err = capsys.readouterr()
        assert out.count("sha256") == 3  # the three sound files
        assert err.startswith("spikeforge: error: 1 of the entries surveyed") and \
            err.count("\n") == 1 and f"damaged ({'with an' if extra else 'marked ERROR'}" in err
        assert str(bad) in err and "Traceback" not in err
    assert main(["data", "info", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert f"{bad}: ERROR {bad} holds 20 data bytes but its header (2, 28, 28) needs 1568" in out
    (tmp_path / "empty").mkdir()
    assert main(["data", "info", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spikeforge: error: ") and err.count("\n") == 1
    assert "holds no MNIST-format" in err and "Traceback" not in err


def test_info_flags_labels_outside_0_to_9_as_training_does(tmp_path, capsys):
    _tiny_mnist(tmp_path)
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(bad, np.array([1, 200] + [0] * 10, dtype=np.uint8))
    assert main(["data", "info", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert f"{bad}: ERROR {bad} has label 200 outside 0-9; it is not an MNIST-family labels " \
        "file." in out and out.count("sha256") == 3
    assert err.startswith("spikeforge: error: 1 of the entries surveyed") and str(bad) in err


@pytest.mark.parametrize("damage, needle", [
    (lambda f: f.write_bytes(f.read_bytes()[:-2]), "has 8 bytes, not a multiple of 5"),
    (lambda f: f.write_bytes(bytes([40, 3, 0, 0, 10]) + f.read_bytes()),
     "has events outside the 34x34 N-MNIST sensor"),
])
def test_info_flags_a_damaged_nmnist_recording_as_training_does(damage, needle, tmp_path,
                                                                 capsys):
    from spikeforge.data.binfmt import make_events, write_events

    for split in ("Train", "Test"):
        (tmp_path / split / "3").mkdir(parents=True)
        write_events(tmp_path / split / "3" / "00001.bin", make_events([3, 4], [3, 5],
                                                                       [10, 20], [1, 0]))
    bad = tmp_path / "Test" / "3" / "00001.bin"
    damage(bad)
    assert main(["data", "info", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert f"N-MNIST Test {tmp_path / 'Test'}: ERROR {bad} {needle}" in out
    assert f"N-MNIST Train {tmp_path / 'Train'}: 1 recordings, 10 bytes" in out
    assert err.startswith("spikeforge: error: 1 of the entries surveyed") and \
        err.count("\n") == 1 and str(tmp_path / "Test") in err


def test_simulate_from_damaged_mnist_fails_cleanly(tmp_path, capsys):
    mnist = _tiny_mnist(tmp_path / "mnist")
    images = mnist / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-30])
    out = tmp_path / "out"
    code = main(["data", "simulate-nmnist", "--mnist-dir", str(mnist), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(images) in err
    assert not out.exists() or not any(out.rglob("*.bin"))
    assert main(["data", "simulate-nmnist", "--mnist-dir", str(mnist), "--out", str(out),
                 "--limit", "0"]) == 2


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="real MNIST not available")
@pytest.mark.parametrize("argv, needle", [
    (["simulate-nmnist", "--seed", "-1"], "--seed must be >= 0, got -1."),
    (["simulate-nmnist", "--workers", "-2"], "--workers must be >= 0, got -2."),
    (["prepare-nmnist", "--workers", "-2"], "--workers must be >= 0, got -2."),
])
def test_negative_seed_or_workers_are_refused_before_anything_is_written(argv, needle, tmp_path,
                                                                        capsys):
    mnist = _tiny_mnist(tmp_path / "mnist")
    out = tmp_path / "nm"
    where = ["--mnist-dir", str(mnist), "--out", str(out)] if argv[0] == "simulate-nmnist" \
        else [str(out), "--cache-dir", str(tmp_path / "cache")]
    if argv[0] == "prepare-nmnist":
        assert main(["data", "simulate-nmnist", "--mnist-dir", str(mnist), "--out", str(out),
                     "--limit", "2", "--no-progress"]) == 0
    before = sorted(p.name for p in tmp_path.rglob("*"))
    capsys.readouterr()
    assert main(["data", argv[0], *where, *argv[1:]]) == 2
    assert capsys.readouterr().err == f"spikeforge: error: {needle}\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_simulate_real_mnist_parsed_by_tonic(tmp_path, capsys):
    tonic = pytest.importorskip("tonic")
    from spikeforge.data.binfmt import read_events
    from spikeforge.data.nmnist import NMNIST

    out = tmp_path / "nmnist"
    args = ["data", "simulate-nmnist", "--mnist-dir", str(MNIST_DIR), "--out", str(out),
            "--limit", "4"]
    assert main(args) == 0
    files = sorted(out.rglob("*.bin"))
    # MNIST train starts 5, 0, 4, 1; test starts 7, 2, 1, 0 (files named by 1-based index)
    assert [f.relative_to(out).as_posix() for f in files] == [
        "Test/0/00004.bin", "Test/1/00003.bin", "Test/2/00002.bin", "Test/7/00001.bin",
        "Train/0/00002.bin", "Train/1/00004.bin", "Train/4/00003.bin", "Train/5/00001.bin"]
    for f in files:
        theirs = tonic.io.read_mnist_file(str(f), dtype=tonic.datasets.NMNIST.dtype)
        assert 1000 < len(theirs) < 12000
        np.testing.assert_array_equal(theirs, read_events(f))
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert main(args) == 0  # a second run keeps what is there
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    summary = json.loads((out / "simulation.json").read_text())
    assert summary["splits"]["Test"] == {"recordings": 4,
                                         "per_class": [1, 1, 1, 0, 0, 0, 0, 1, 0, 0]}
    capsys.readouterr()
    assert main(["data", "info", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["nmnist"]["Train"]["per_class"] == [1, 1, 0, 0, 1, 1, 0, 0, 0, 0]
    assert len(report["nmnist"]["Train"]["sha256"]) == 64
    cache = tmp_path / "cache"
    assert main(["data", "prepare-nmnist", str(out), "--cache-dir", str(cache)]) == 0
    assert len(list(cache.rglob("*.frames"))) == 8
    x, y = next(NMNIST(out, train=False, cache_dir=cache).batches(4))
    assert x.shape[1:] == (4, 2, 34, 34) and y.tolist() == [0, 1, 2, 7]


def test_prepare_nmnist_says_once_per_split_how_many_recordings_are_empty(tmp_path, capsys):
    from spikeforge.data.binfmt import make_events, write_events

    for split in ("Train", "Test"):
        folder = tmp_path / "nm" / split / "5"
        folder.mkdir(parents=True)
        (folder / "00001.bin").write_bytes(b"")
        write_events(folder / "00002.bin", make_events([3], [3], [10], [1]))
    assert main(["data", "prepare-nmnist", str(tmp_path / "nm"), "--cache-dir",
                 str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "warning" in line] == [
        f"spikeforge: warning: 1 of 2 recordings in {tmp_path / 'nm' / split} are empty (0 bytes)"
        " and are read as blank samples without events; replace them with the original files or"
        " delete them." for split in ("Train", "Test")]


def test_train_says_once_per_split_how_many_recordings_are_empty(tmp_path, capsys, monkeypatch):
    pytest.importorskip("tonic")
    from test_train_synthetic import write_nmnist

    monkeypatch.setenv("SPIKEFORGE_CACHE", str(tmp_path / "cache"))
    root = write_nmnist(tmp_path / "nm", n_train=8, n_test=4)
    for split in ("Train", "Test"):
        (root / split / "0" / "99999.bin").write_bytes(b"")
    assert main(["train", "nmnist-csnn", "-T", "4", "-b", "4", "--epochs", "1",
                 "--max-batches", "1", "--data-dir", str(root), "--out-dir",
                 str(tmp_path / "run"), "--no-progress"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warned == [f"spikeforge: warning: 1 of {n} recordings in {root / split} are empty "
                      "(0 bytes) and are read as blank samples without events; replace them with "
                      "the original files or delete them."
                      for split, n in (("Train", 9), ("Test", 5))]


def test_info_counts_the_empty_recordings_of_each_split(tmp_path, capsys):
    from spikeforge.data.binfmt import make_events, write_events

    for split in ("Train", "Test"):
        (tmp_path / split / "4").mkdir(parents=True)
        write_events(tmp_path / split / "4" / "00001.bin", make_events([3], [3], [10], [1]))
    (tmp_path / "Train" / "4" / "00002.bin").write_bytes(b"")
    (tmp_path / "Train" / "4" / "00003.bin").write_bytes(b"")
    assert main(["data", "info", str(tmp_path), "--no-checksums"]) == 0
    out = capsys.readouterr().out
    assert f"N-MNIST Train {tmp_path / 'Train'}: 3 recordings (2 empty, read as blank samples), " \
        "5 bytes\n" in out
    assert f"N-MNIST Test {tmp_path / 'Test'}: 1 recordings, 5 bytes\n" in out
    assert main(["data", "info", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["nmnist"]
    assert (report["Train"]["empty"], report["Test"]["empty"]) == (2, 0)


def test_simulate_adds_to_its_own_tree_but_never_mixes_into_another(tmp_path, capsys):
    mnist = _tiny_mnist(tmp_path / "mnist")
    out = tmp_path / "nm"
    sim = ["data", "simulate-nmnist", "--mnist-dir", str(mnist), "--out", str(out),
           "--no-progress"]
    assert main([*sim, "--limit", "2"]) == 0
    assert main([*sim, "--limit", "4"]) == 0  # the same simulation, continued
    assert len(list(out.glob("Train/*/*.bin"))) == 4
    assert main([*sim, "--limit", "3"]) == 0  # a smaller limit: the tree keeps its 4, and says so
    summary = json.loads((out / "simulation.json").read_text())
    assert summary["splits"]["Train"] == {"recordings": 4,
                                          "per_class": [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]}
    (out / "Train" / "3" / "00004.bin").unlink()  # a gap: only what is there counts
    assert main([*sim, "--limit", "2"]) == 0
    assert json.loads((out / "simulation.json").read_text())["splits"]["Train"]["recordings"] == 3
    assert main([*sim, "--limit", "4"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*sim, "--seed", "1"]) == 2
    assert capsys.readouterr().err == (
        f"spikeforge: error: --out {out} already holds N-MNIST recordings of another source (the "
        "real N-MNIST, or a simulation with another seed than 1 or config); choose an empty "
        "folder, so they are not mixed.\n")
    (out / "simulation.json").unlink()  # as the real N-MNIST: recordings, no simulation.json
    del before[out / "simulation.json"]
    assert main(sim) == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_worker_processes_are_capped_at_the_cpus_this_process_may_use():
    from spikeforge.data.workers import LazyPool
    from spikeforge.threads import available_cpus

    with LazyPool(10_000) as pool:
        assert pool.workers == available_cpus()
    assert LazyPool(None).workers == 0
