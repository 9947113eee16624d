"""fc-lif on the real MNIST: one epoch of the reference recipe reaches >= 88% test accuracy.

Uses ``../shared/data/mnist`` next to the repository (skipped when absent). About 2-3 minutes on
two CPU cores, so it is marked slow; the recorded run is in docs/results/fc-lif/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spikeforge.cli import main

MNIST = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "mnist"


@pytest.mark.slow
@pytest.mark.skipif(not (MNIST / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason=f"real MNIST not found in {MNIST}")
def test_fc_lif_one_epoch_on_real_mnist(tmp_path, capsys):
    run = tmp_path / "fc-lif"
    assert main(["train", "fc-lif", "--epochs", "1", "--data-dir", str(MNIST), "--out-dir",
                 str(run), "--no-download", "--no-progress"]) == 0
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert row["test_acc"] >= 0.88, row
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] == row["test_acc"]
