"""``spikeforge export RUN_DIR --nir FILE``: files written, refusals, the report."""

import dataclasses
import json

import pytest
import torch

nir = pytest.importorskip("nir")

from spikeforge.cli import main  # noqa: E402
from spikeforge.export import from_nir  # noqa: E402
from spikeforge.train import checkpoint  # noqa: E402
from spikeforge.train.build import build_model  # noqa: E402
from spikeforge.train.recipes import recipe_defaults  # noqa: E402
from spikeforge.train.run import write_config  # noqa: E402


def _run_dir(tmp_path, recipe, **settings):
    """A run directory as `spikeforge train` leaves it: config.json and a best/ checkpoint."""
    config = dataclasses.replace(recipe_defaults(recipe), **settings)
    torch.manual_seed(0)
    model = build_model(config)
    run_dir = tmp_path / recipe
    run_dir.mkdir()
    write_config(run_dir, config)
    checkpoint.save(run_dir, "best", model, {"epoch": 3}, config.model)
    return run_dir, model


def test_export_writes_the_graph_and_its_report(tmp_path, capsys):
    run_dir, model = _run_dir(tmp_path, "fc-lif")
    out = tmp_path / "out" / "fc_lif.nir"
    assert main(["export", str(run_dir), "--nir", str(out), "--dt", "1e-3"]) == 0
    report = json.loads((tmp_path / "out" / "fc_lif.nir.report.json").read_text())
    assert report["exact"] and report["dt"] == 1e-3 and report["approximations"] == []
    assert "epoch 3" in report["notes"][0]
    graph = nir.read(out)
    assert graph.metadata["dt"] == 1e-3
    assert torch.equal(torch.from_numpy(graph.nodes["net_1"].weight),
                       model.net[1].module.weight.detach())
    x = (torch.rand(20, 2, 1, 28, 28) < 0.5).float()
    assert torch.equal(from_nir(out)(x), model(x))
    assert "exact" in capsys.readouterr().out


def test_export_takes_the_checkpoint_flag_of_the_other_commands(tmp_path):
    run_dir, model = _run_dir(tmp_path, "fc-lif")
    checkpoint.save(run_dir, "last", model, {"epoch": 5}, "fc-lif")
    for flag in ("--checkpoint", "--which"):
        out = tmp_path / f"{flag[2:]}.nir"
        assert main(["export", str(run_dir), "--nir", str(out), flag, "last"]) == 0
        report = json.loads(out.with_name(out.name + ".report.json").read_text())
        assert report["notes"][0] == f"exported from {run_dir} (fc-lif, last checkpoint, epoch 5)"


def test_an_input_shape_the_network_cannot_take_is_one_sentence(tmp_path, capsys):
    run_dir, _ = _run_dir(tmp_path, "fc-lif")
    out = tmp_path / "x.nir"
    assert main(["export", str(run_dir), "--nir", str(out), "--input-shape", "3,32,32",
                 "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"spikeforge: error: --input-shape 3,32,32 does not fit the network of {run_dir} (mat1 "
        "and mat2 shapes cannot be multiplied (1x3072 and 784x10)); leave it out to use the "
        "shape it was trained on, 1,28,28.\n")
    assert not out.exists() and list(tmp_path.glob("*.nir*")) == []


def test_export_refuses_max_pooling_with_exit_status_2(tmp_path, capsys):
    run_dir, _ = _run_dir(tmp_path, "csnn", channels=4)
    out = tmp_path / "csnn.nir"
    assert main(["export", str(run_dir), "--nir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'body.1'" in err and "max pooling" in err and "--approximate" in err
    assert "Traceback" not in err and not out.exists()


def test_export_approximate_lists_each_change(tmp_path):
    run_dir, _ = _run_dir(tmp_path, "rleaky", hidden=16)
    out = tmp_path / "rleaky.nir"
    assert main(["export", str(run_dir), "--nir", str(out), "--approximate"]) == 0
    report = json.loads((tmp_path / "rleaky.nir.report.json").read_text())
    assert not report["exact"]
    assert [(a["layer"], a["kind"]) for a in report["approximations"]] == [
        ("hidden", "recurrent-reset"), ("output", "recurrent-reset"),
        ("output", "membrane-output")]
    assert isinstance(nir.read(out).nodes["hidden"], nir.NIRGraph)


def test_export_flags_are_checked(tmp_path, capsys):
    run_dir, _ = _run_dir(tmp_path, "fc-lif")
    assert main(["export", str(run_dir), "--nir", str(tmp_path / "a.nir"), "--dt", "0"]) == 2
    assert "--dt" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--nir", str(tmp_path / "a.nir"),
                 "--input-shape", "1,x"]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), "--nir", str(tmp_path / "a.nir")]) == 2
    assert "does not exist" in capsys.readouterr().err
