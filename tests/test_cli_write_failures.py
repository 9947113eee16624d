"""Writes that fail — a read-only folder, a full disk — end every command with exit status 2
and one sentence naming the path and the cause; what was written before stays as it was and
no temporary file is left behind."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import subprocess
import uuid

import pytest
from test_train_synthetic import one_thread, write_mnist  # noqa: F401 (autouse fixture)

from spikeforge.cli import main

FULL = os.strerror(errno.ENOSPC)  # "No space left on device"


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("mnist"), n_train=64, n_test=32)


@pytest.fixture(scope="module")
def finished_run(mnist_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "fc"
    assert main(["train", "fc-lif", "-T", "2", "-b", "16", "--epochs", "1", "--data-dir",
                 str(mnist_dir), "--out-dir", str(run), "--no-progress"]) == 0
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path):
    return shutil.copytree(finished_run, tmp_path / "run")


def snapshot(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder) -> list[str]:
    """Temporary files or folders of an interrupted write."""
    return [str(p) for p in folder.rglob(".*") if ".tmp" in p.name or p.name.endswith(".old")]


def fails(capsys, argv, *needles: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("spikeforge: error: cannot write ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def _can_write(folder) -> bool:
    probe = folder / f".probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


@contextlib.contextmanager
def read_only(folder):
    """``folder`` made unwritable: by its mode for a normal user; for root (whom modes do not
    stop) by a read-only bind mount of it onto itself."""
    mode = folder.stat().st_mode
    folder.chmod(0o555)
    mounted = False
    try:
        if _can_write(folder):
            mount = subprocess.run(["mount", "--bind", str(folder), str(folder)],
                                   capture_output=True)
            mounted = mount.returncode == 0
            if not mounted or subprocess.run(
                    ["mount", "-o", "remount,bind,ro", str(folder)],
                    capture_output=True).returncode != 0:
                pytest.skip("a read-only folder needs a non-root user, or root allowed to mount")
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
        folder.chmod(mode)


READ_ONLY = ("Read-only file system", "Permission denied")


def cause(err: str) -> str:
    found = [c for c in READ_ONLY if c in err]
    assert found, err
    return found[0]


def test_a_read_only_out_dir(mnist_dir, tmp_path, capsys):
    (tmp_path / "ro").mkdir()
    with read_only(tmp_path / "ro") as ro:
        err = fails(capsys, ["train", "fc-lif", "-T", "2", "--data-dir", str(mnist_dir),
                             "--out-dir", str(ro / "run"), "--no-progress"], f"{ro / 'run'} (")
        cause(err)
    assert list((tmp_path / "ro").iterdir()) == []


def test_resume_of_a_read_only_run_changes_nothing(run_copy, capsys):
    before = snapshot(run_copy)
    with read_only(run_copy):
        err = fails(capsys, ["train", "--resume", str(run_copy), "--epochs", "2",
                             "--no-progress"], str(run_copy))
        cause(err)
    assert snapshot(run_copy) == before and leftovers(run_copy) == []


@pytest.mark.parametrize("argv", [
    ["inspect", "{run}", "--index", "0", "--out-dir", "{ro}/figures"],
    ["inspect", "{run}", "--grid", "4", "--out-dir", "{ro}/figures", "--no-progress"],
    ["plot", "{run}", "--out-dir", "{ro}/figures"],
])
def test_figures_into_a_read_only_folder(argv, finished_run, tmp_path, capsys):
    (tmp_path / "ro").mkdir()
    with read_only(tmp_path / "ro") as ro:
        argv = [a.format(run=finished_run, ro=ro) for a in argv]
        cause(fails(capsys, argv, f"{ro}/figures"))


def test_export_into_a_read_only_folder(finished_run, tmp_path, capsys):
    pytest.importorskip("nir")
    (tmp_path / "ro").mkdir()
    with read_only(tmp_path / "ro") as ro:
        cause(fails(capsys, ["export", str(finished_run), "--nir", str(ro / "net.nir"),
                             "--no-progress"], str(ro / "net.nir")))


def _disk_full_after(limit: int, where: str):
    """A ``write_bytes`` that writes ``limit`` bytes of any file whose path holds ``where``,
    then fails as a full disk does."""
    def write_bytes(path, payload, *, durable=True):
        if where not in str(path):
            return real(path, payload, durable=durable)
        with open(path, "wb") as f:
            f.write(payload[:limit])
        raise OSError(errno.ENOSPC, FULL)

    from spikeforge.fileio import write_bytes as real
    return write_bytes


def test_a_disk_that_fills_while_a_checkpoint_is_written(run_copy, capsys, monkeypatch):
    before = snapshot(run_copy)
    monkeypatch.setattr("spikeforge.train.checkpoint.write_bytes",
                        _disk_full_after(100, ".last.tmp"))
    fails(capsys, ["train", "--resume", str(run_copy), "--epochs", "2", "--no-progress"],
          f"{run_copy / 'last'} ({FULL})", "free space")
    after = snapshot(run_copy)
    assert leftovers(run_copy) == []
    for path in ("last/model.safetensors", "last/state.pt", "metrics.csv", "metrics.jsonl"):
        assert after[path] == before[path]  # the previous checkpoint and metrics
    monkeypatch.undo()
    assert main(["train", "--resume", str(run_copy), "--no-progress"]) == 0  # and it resumes
    assert "resumed after epoch 1" in capsys.readouterr().out


def test_a_disk_that_fills_while_the_first_best_checkpoint_is_written(mnist_dir, tmp_path,
                                                                       capsys, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setattr("spikeforge.train.checkpoint.write_bytes",
                        _disk_full_after(100, ".best.tmp"))
    fails(capsys, ["train", "fc-lif", "-T", "2", "-b", "16", "--epochs", "1", "--data-dir",
                   str(mnist_dir), "--out-dir", str(run), "--no-progress"],
          f"{run / 'best'} ({FULL})")
    assert leftovers(run) == [] and not (run / "best").exists() and not (run / "last").exists()
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # from epoch 1


def test_a_disk_that_fills_while_the_metrics_are_written(run_copy, capsys, monkeypatch):
    before = snapshot(run_copy)
    monkeypatch.setattr("spikeforge.fileio.write_bytes", _disk_full_after(10, ".metrics."))
    fails(capsys, ["train", "--resume", str(run_copy), "--epochs", "2", "--no-progress"],
          f"{run_copy / 'metrics.csv'} ({FULL})")
    assert snapshot(run_copy)["metrics.csv"] == before["metrics.csv"]
    assert leftovers(run_copy) == []


def test_a_new_run_on_a_full_disk_leaves_no_stub(mnist_dir, tmp_path, capsys, monkeypatch):
    """The disk filled while a new run wrote its first metrics: config.json stayed, and the same
    command, space freed, was refused as 'already holds a run'."""
    run = tmp_path / "run"
    argv = ["train", "fc-lif", "-T", "2", "-b", "16", "--epochs", "1", "--data-dir",
            str(mnist_dir), "--out-dir", str(run), "--no-progress"]
    monkeypatch.setattr("spikeforge.fileio.write_bytes", _disk_full_after(10, ".metrics."))
    fails(capsys, argv, f"{run / 'metrics.csv'} ({FULL})")
    assert not run.exists()
    monkeypatch.undo()
    assert main(argv) == 0


def test_a_disk_that_fills_while_a_figure_is_written(finished_run, tmp_path, capsys,
                                                     monkeypatch):
    from matplotlib.figure import Figure

    out = tmp_path / "figures"
    assert main(["plot", str(finished_run), "--out-dir", str(out)]) == 0
    before = snapshot(out)

    def savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, FULL)

    monkeypatch.setattr(Figure, "savefig", savefig)
    fails(capsys, ["plot", str(finished_run), "--out-dir", str(out)], f"{out / 'acc.png'} ({FULL})")
    assert snapshot(out) == before and leftovers(out) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (root allowed to mount only), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("a real full disk needs permission to mount a tmpfs")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_real_full_disk(tiny_disk, mnist_dir, capsys):
    run = tiny_disk / "run"
    assert main(["train", "fc-lif", "-T", "2", "-b", "16", "--epochs", "1", "--data-dir",
                 str(mnist_dir), "--out-dir", str(run), "--no-progress"]) == 0
    free = shutil.disk_usage(tiny_disk).free
    (tiny_disk / "filler").write_bytes(bytes(max(free - 48 * 1024, 0)))  # < one checkpoint
    before = snapshot(run)
    before.pop("config.json")
    fails(capsys, ["train", "--resume", str(run), "--epochs", "2", "--no-progress"],
          f"({FULL})", str(run))
    after = snapshot(run)
    assert leftovers(run) == []
    for path in ("last/model.safetensors", "last/state.pt", "metrics.csv", "metrics.jsonl"):
        assert after[path] == before[path]


def test_an_export_onto_a_full_disk(tiny_disk, finished_run, capsys):
    pytest.importorskip("nir")
    free = shutil.disk_usage(tiny_disk).free
    (tiny_disk / "filler").write_bytes(bytes(max(free - 16 * 1024, 0)))  # < the 70 kB graph
    fails(capsys, ["export", str(finished_run), "--nir", str(tiny_disk / "net.nir"),
                   "--no-progress"], f"cannot write {tiny_disk / 'net.nir'} ({FULL}); free space")
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


def test_a_file_where_an_output_folder_is_needed(finished_run, tmp_path, capsys):
    (tmp_path / "figures").write_text("notes")
    fails(capsys, ["plot", str(finished_run), "--out-dir", str(tmp_path / "figures")],
          f"cannot write {tmp_path / 'figures' / 'acc.png'} (File exists); a file stands where "
          "a folder is needed; move it or choose another path.")
    assert (tmp_path / "figures").read_text() == "notes"


def test_an_overwrite_that_cannot_remove_the_old_run_keeps_it_a_run(run_copy, mnist_dir,
                                                                     capsys, monkeypatch):
    """A file that may not be deleted (``chattr +i``) stopped --overwrite half-way with the
    config gone: the folder held no run any more and a second --overwrite was refused. The
    config now goes last, the error names what could not be removed, and once that is fixed
    --overwrite works."""
    real_rmtree = shutil.rmtree

    def immutable_last(path, *args, **kwargs):
        if os.path.basename(path) == "last":
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(path))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", immutable_last)
    argv = ["train", "fc-lif", "-T", "2", "-b", "16", "--epochs", "1", "--data-dir",
            str(mnist_dir), "--out-dir", str(run_copy), "--overwrite", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"spikeforge: error: cannot write {run_copy / 'last'} (") \
        and err.count("\n") == 1
    assert (run_copy / "config.json").is_file()
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    assert main(argv) == 0
