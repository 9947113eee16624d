"""Checkpoints: a crash at any point of a save leaves a complete checkpoint (the old or the new
one), the state loads with weights_only=True, and the two files are tied by SHA-256."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from spikeforge.errors import CheckpointError
from spikeforge.train import checkpoint


def make_model(value: float) -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    model[1].running_mean.fill_(value)
    return model


def saved_value(run_dir, name="last") -> tuple[int, float]:
    folder = checkpoint.locate(run_dir, name)
    state = checkpoint.load_state(folder)
    model = make_model(0.0)
    checkpoint.load_weights(folder, model, "toy")
    assert torch.equal(model[1].running_mean, torch.full((2,), model[0].weight[0, 0].item()))
    return state["epoch"], model[0].weight[0, 0].item()


def test_save_and_load_round_trip(tmp_path):
    opt = torch.optim.SGD(make_model(1.0).parameters(), lr=0.1, momentum=0.9)
    state = {"epoch": 3, "optimizer": opt.state_dict(), "rng": checkpoint.rng_state(),
             "history": [{"epoch": 1, "test_acc": 0.5}], "best_acc": 0.5}
    checkpoint.save(tmp_path, "last", make_model(1.5), state, "toy")
    assert sorted(p.name for p in (tmp_path / "last").iterdir()) == ["model.safetensors",
                                                                     "state.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temporary left
    loaded = torch.load(tmp_path / "last" / "state.pt", weights_only=True)
    assert loaded["history"] == state["history"] and loaded["format"] == checkpoint.FORMAT
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    assert saved_value(tmp_path) == (3, 1.5)


def test_rng_state_round_trip():
    state = checkpoint.rng_state()
    a = torch.rand(5)
    checkpoint.set_rng_state(state)
    assert torch.equal(torch.rand(5), a)


class Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", ["torch.save", "replace#1", "replace#2", "rmtree"])
def test_a_crash_anywhere_in_save_leaves_a_complete_checkpoint(crash_at, tmp_path, monkeypatch):
    checkpoint.save(tmp_path, "last", make_model(1.0), {"epoch": 1}, "toy")
    calls = {"replace": 0}
    real_replace, real_rmtree, real_save = os.replace, checkpoint.shutil.rmtree, torch.save

    def replace(src, dst):
        calls["replace"] += 1
        if crash_at == f"replace#{calls['replace']}":
            raise Crash
        real_replace(src, dst)

    def rmtree(path, *a, **k):
        if crash_at == "rmtree":
            raise Crash
        real_rmtree(path, *a, **k)

    def save(obj, path, *a, **k):
        real_save(obj, path, *a, **k)
        if crash_at == "torch.save":
            raise Crash

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    monkeypatch.setattr(checkpoint.shutil, "rmtree", rmtree)
    monkeypatch.setattr(checkpoint.torch, "save", save)
    with pytest.raises(Crash):
        checkpoint.save(tmp_path, "last", make_model(2.0), {"epoch": 2}, "toy")
    monkeypatch.undo()

    # readable as it is, without any repair: the old checkpoint, or the new one once renamed
    expected = (2, 2.0) if crash_at == "rmtree" else (1, 1.0)
    assert saved_value(tmp_path) == expected
    checkpoint.recover(tmp_path, "last")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert saved_value(tmp_path) == expected
    checkpoint.save(tmp_path, "last", make_model(3.0), {"epoch": 3}, "toy")
    assert saved_value(tmp_path) == (3, 3.0)


def test_locate_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="best does not exist"):
        checkpoint.locate(tmp_path, "best")


def test_weights_of_another_shape_are_refused(tmp_path):
    checkpoint.save(tmp_path, "last", make_model(1.0), {"epoch": 1}, "toy")
    other = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2))
    with pytest.raises(CheckpointError, match="does not fit the toy model"):
        checkpoint.load_weights(tmp_path / "last", other, "toy")


def test_a_file_named_last_is_named_as_a_file(tmp_path):
    from spikeforge.train.trainer import _has_checkpoint

    assert _has_checkpoint(tmp_path) is False
    (tmp_path / "last").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"last is a file, not a checkpoint folder"):
        _has_checkpoint(tmp_path)
