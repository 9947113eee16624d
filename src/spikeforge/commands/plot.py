"""``spikeforge plot RUN_DIR``: accuracy and loss curves per epoch → ``RUN_DIR/figures/``.

Reads the run's ``metrics.jsonl`` (one row per completed epoch) and writes ``acc.png`` (train
and test accuracy, %) and ``loss.png`` (train and test loss); ``--out-dir`` puts them elsewhere.
"""

from __future__ import annotations

import argparse

HELP = "accuracy and loss curves of a run (acc.png, loss.png in RUN_DIR/figures)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run directory written by spikeforge train")
    parser.add_argument("--out-dir", help="folder for the figures (default: RUN_DIR/figures)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import CheckpointError
    from ..train.run import read_config, read_metrics
    from ..viz import accuracy_curves, loss_curves

    config, _ = read_config(args.run_dir)
    try:
        rows = read_metrics(args.run_dir)
    except ValueError as err:
        raise CheckpointError(f"{Path(args.run_dir) / 'metrics.jsonl'} is damaged ({err}); "
                              "the curves cannot be drawn.") from None
    if not rows:
        raise CheckpointError(f"{args.run_dir} has no completed epoch in metrics.jsonl yet; "
                              "plot it after the first epoch ends.")
    out = Path(args.out_dir) if args.out_dir else Path(args.run_dir) / "figures"
    name = f"{config.recipe} on {config.dataset}"
    acc = accuracy_curves(rows, out / "acc.png", title=f"Accuracy, {name}")
    loss = loss_curves(rows, out / "loss.png", title=f"Loss, {name}", loss_name=config.loss)
    epochs = "1 epoch" if len(rows) == 1 else f"{len(rows)} epochs"
    print(f"wrote {acc.path} and {loss.path} ({epochs})")
    return 0
