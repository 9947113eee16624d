"""``spikeforge energy RUN_DIR``: firing rates, synaptic operations and estimated energy per layer.

Runs the run's ``best/`` (or ``last/``) network on the test split, encoded exactly as
``spikeforge eval`` encodes it (the same Poisson stream), and reports per sample: each spiking
layer's firing rate and silent neurons, each synaptic layer's ACs (from spikes) and MACs (from
real values), the dense MACs of the same net as an ANN, and the energy E = E_MAC·MACs +
E_AC·ACs (:mod:`spikeforge.energy`). ``--batches N`` counts N batches drawn across the test
set by a shuffle with seed 0 (the N-MNIST test set is stored class by class, so its first
batches are all of digit 0); the whole set is counted in order. Prints a table (``--json``: the JSON
instead) and writes ``energy.json`` and ``figures/energy.png`` into the run directory
(``--out-dir``: elsewhere).
"""

from __future__ import annotations

import argparse

HELP = "firing rates, synaptic operations (ACs, MACs) and estimated energy per layer of a run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run directory written by spikeforge train")
    parser.add_argument("--batches", type=int, metavar="N",
                        help="count N test batches only, drawn across the test set by a fixed "
                             "shuffle (default: the whole test set, in order)")
    parser.add_argument("-b", "--batch-size", type=int, default=32,
                        help="test batch size (default 32; the counts do not depend on it)")
    parser.add_argument("--costs", default="45nm", metavar="45nm|FILE.toml",
                        help="energy per MAC and AC: 45nm (Horowitz, ISSCC 2014: 4.6 and 0.9 pJ) "
                             "or a TOML file with e_mac_pj and e_ac_pj")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best",
                        help="which checkpoint to count (default best)")
    parser.add_argument("--data-dir", help="dataset folder (default: the run's)")
    parser.add_argument("--cache-dir", help="N-MNIST frame cache folder (default: the run's)")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, cuda:N")
    parser.add_argument("--out-dir", help="folder for energy.json and figures/energy.png "
                                          "(default: RUN_DIR)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress on stderr while the test set is counted")


def run(args: argparse.Namespace) -> int:
    import itertools
    import json
    import os
    import sys
    from collections.abc import Iterator
    from pathlib import Path

    import torch

    from ..energy import load_costs, report
    from ..energy.table import print_report
    from ..errors import ConfigError
    from ..fileio import atomic_write
    from ..train.build import resolve_device
    from ..train.progress import Progress
    from ..train.run import load_run, read_metrics
    from ..viz.energy import energy_figure

    for name in ("batch_size", "batches"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}.")
    costs = load_costs(args.costs)
    loaded = load_run(args.run_dir, args.checkpoint, resolve_device(args.device))
    test_set = loaded.dataset("test", args.data_dir, args.cache_dir)
    total = test_set.num_batches(args.batch_size)
    subset = args.batches is not None and args.batches < total
    if subset:
        total = args.batches
    task, generator = loaded.task, loaded.generator()
    out = Path(args.out_dir) if args.out_dir else loaded.run_dir

    def unwritable(reason: object) -> ConfigError:
        return ConfigError(f"cannot write the report into {out} ({reason}); give a writable "
                           "folder with --out-dir.")

    try:  # before the measurement, which a folder that cannot take the report would waste
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise unwritable(err.strerror or err) from None
    if not os.access(out, os.W_OK):
        raise unwritable("not writable")

    classes: set[int] = set()

    def batches(progress: Progress) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        chosen = itertools.islice(test_set.batches(args.batch_size, device=loaded.device,
                                                   shuffle=subset, seed=0), total)
        for done, (x, y) in enumerate(chosen, 1):
            classes.update(y.tolist())
            yield task.encode(x.to(loaded.device, torch.float32), generator), y
            progress.update(done)  # the batch just yielded has been counted

    with Progress("energy", total, enabled=not args.no_progress, stream=sys.stderr,
                  unit="batches") as progress:
        result = report(loaded.model, batches(progress), costs,
                        predict=lambda out: task.predict(*task.outputs(out)))
    try:
        rows = {int(row["epoch"]): row for row in read_metrics(loaded.run_dir)}
    except (ValueError, KeyError, TypeError):
        rows = {}     # a damaged metrics.jsonl costs the run's accuracy, not the report
    config = loaded.train_config
    result.extra = {"run_dir": str(loaded.run_dir), "recipe": loaded.recipe,
                    "model": config.model, "dataset": config.dataset, "T": config.T,
                    "checkpoint": args.checkpoint, "epoch": loaded.epoch,
                    "test_acc": rows.get(loaded.epoch, {}).get("test_acc"),
                    "test_set_samples": len(test_set),
                    "selection": "shuffled, seed 0" if subset else "whole test set",
                    "classes_counted": len(classes)}
    text = json.dumps(result.to_dict(), indent=2)
    title = f"{loaded.recipe} on {config.dataset}, {args.checkpoint}/ (epoch {loaded.epoch})"
    try:  # into the folder checked above
        # the figure first: a disk that fills there leaves the previous energy.json standing,
        # not a new report beside an old figure
        figure = energy_figure(result, out / "figures" / "energy.png", title=title)
        atomic_write(out / "energy.json", text + "\n")
    except OSError as err:
        raise unwritable(err.strerror or err) from None
    if args.json:
        print(text)
    else:
        print_report(result, title=title)
        print(f"wrote {out / 'energy.json'} and {figure.path}")
    return 0
