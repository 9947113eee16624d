"""A folder given with ``--data-dir`` is only read: with the files missing it is an error naming
the folder, the files and the download command; holding the other dataset, it says so."""

from __future__ import annotations

import numpy as np
import pytest

from spikeforge.cli import main
from spikeforge.data import load_dataset, sources, write_idx
from spikeforge.data.binfmt import make_events, write_events
from spikeforge.errors import DataError


def _listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Every download attempt fails the test; the default data folder is a fresh one."""
    monkeypatch.setenv("SPIKEFORGE_DATA", str(tmp_path / "default"))

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(sources, "download_file", refuse)
    from spikeforge.data import nmnist

    monkeypatch.setattr(nmnist, "_download", refuse)


@pytest.fixture
def mnist_folder(tmp_path):
    folder = tmp_path / "my-mnist"
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(4, dtype=np.uint8))
    return folder


@pytest.fixture
def nmnist_folder(tmp_path):
    folder = tmp_path / "my-nmnist"
    for split in ("Train", "Test"):
        (folder / split / "3").mkdir(parents=True)
        write_events(folder / split / "3" / "00001.bin", make_events([3], [3], [10], [1]))
    return folder


def _one_line(capsys, argv, *needles: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("spikeforge: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_a_missing_file_names_the_folder_the_files_and_the_download_command(tmp_path,
                                                                            no_network):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "train", data_dir=folder, download=True)
    message = str(info.value)
    assert str(folder) in message and "train-images-idx3-ubyte.gz" in message
    assert f"spikeforge data download mnist --data-dir {folder}" in message
    assert "\n" not in message
    assert _listing(folder) == [] and not (tmp_path / "default").exists()


def test_the_user_folder_is_searched_alone(tmp_path, no_network, mnist_folder):
    """Files in the default folder do not stand in for a --data-dir that lacks them."""
    default = tmp_path / "default" / "mnist"
    default.mkdir(parents=True)
    for f in mnist_folder.iterdir():
        (default / f.name).write_bytes(f.read_bytes())
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError, match="no MNIST test files in"):
        load_dataset("mnist", "test", data_dir=tmp_path / "mine")
    assert len(load_dataset("mnist", "test")) == 4          # without --data-dir: the default


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_an_nmnist_folder_given_for_mnist_is_named_as_such(dataset, nmnist_folder, no_network):
    before = _listing(nmnist_folder)
    with pytest.raises(DataError, match="holds N-MNIST recordings"):
        load_dataset(dataset, "train", data_dir=nmnist_folder, download=True)
    assert _listing(nmnist_folder) == before


def test_nmnist_zips_count_as_nmnist(tmp_path, no_network):
    (tmp_path / "zips").mkdir()
    (tmp_path / "zips" / "train.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match="holds N-MNIST recordings"):
        load_dataset("mnist", "train", data_dir=tmp_path / "zips")


def test_train_nmnist_csnn_on_an_mnist_folder_writes_nothing(mnist_folder, tmp_path, capsys,
                                                              no_network):
    before = _listing(mnist_folder)
    _one_line(capsys, ["train", "nmnist-csnn", "--data-dir", str(mnist_folder), "--out-dir",
                       str(tmp_path / "run")], "holds MNIST-format IDX files", str(mnist_folder))
    assert _listing(mnist_folder) == before                  # no NMNIST/ folder made inside


def test_train_csnn_on_an_nmnist_folder_says_so(nmnist_folder, tmp_path, capsys, no_network):
    before = _listing(nmnist_folder)
    _one_line(capsys, ["train", "csnn", "--data-dir", str(nmnist_folder), "--out-dir",
                       str(tmp_path / "run")], "holds N-MNIST recordings", str(nmnist_folder))
    assert _listing(nmnist_folder) == before


def test_train_on_an_empty_folder_points_to_the_download_command(tmp_path, capsys, no_network):
    (tmp_path / "empty").mkdir()
    _one_line(capsys, ["train", "fc-lif", "--data-dir", str(tmp_path / "empty"), "--out-dir",
                       str(tmp_path / "run")],
              f"spikeforge data download mnist --data-dir {tmp_path / 'empty'}")
    assert _listing(tmp_path / "empty") == []
