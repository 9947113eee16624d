"""``spikeforge export RUN_DIR --nir FILE.nir``: a trained run to NIR, with a report beside it."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from ..errors import ConfigError

HELP = "export a trained run to NIR (neuromorphic hardware / other frameworks)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by train")
    parser.add_argument("--nir", metavar="FILE", required=True,
                        help="NIR file to write; FILE.report.json is written beside it")
    parser.add_argument("--approximate", action="store_true",
                        help="write the nearest NIR node where there is no exact one (max "
                             "pooling, subtract/soft reset, RLeaky) and list each change in "
                             "the report, instead of refusing")
    parser.add_argument("--checkpoint", "--which", dest="which", choices=("best", "last"),
                        default="best", help="checkpoint to export (default: best), as in eval")
    parser.add_argument("--dt", type=float, default=None,
                        help="seconds per network step written into the time constants "
                             "(default: 1e-4, as snnTorch and SpikingJelly assume)")
    parser.add_argument("--input-shape", metavar="C,H,W", default=None,
                        help="one input sample without T and B (default: from the recipe)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress on stderr (the step being done)")


def _input_shape(model, text: str | None) -> tuple[int, ...]:
    from ..models import CSNN, FcLif, NmnistCSNN, RLeakyNet

    if text is not None:
        try:
            shape = tuple(int(s) for s in text.split(","))
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            raise ConfigError(f"--input-shape {text!r} is not a list of positive sizes; "
                              "write it like 1,28,28")
        return shape
    if isinstance(model, NmnistCSNN):
        return (2, 34, 34)
    if isinstance(model, (CSNN, RLeakyNet)):
        return (1, 28, 28)
    if isinstance(model, FcLif):
        n = model.net[1].module.in_features
        return (1, 28, 28) if n == 784 else (n,)
    raise ConfigError(f"cannot tell the input shape of a {type(model).__name__}; pass "
                      "--input-shape, e.g. 1,28,28")


def run(args: argparse.Namespace) -> int:
    try:
        import nir

        from ..export import DEFAULT_DT, to_nir
    except ImportError:
        raise ConfigError("spikeforge export needs the NIR package; install it with "
                          "pip install 'spikeforge[nir]'") from None
    dt = DEFAULT_DT if args.dt is None else args.dt
    if not (0 < dt < float("inf")):
        raise ConfigError(f"--dt {args.dt} must be a positive number of seconds, e.g. 1e-4")
    from ..fileio import atomic_write
    from ..train.progress import Progress
    from ..train.run import load_run

    path = Path(args.nir)
    with Progress("export", 3, enabled=not args.no_progress, stream=sys.stderr) as progress:
        loaded = load_run(args.run_dir, which=args.which)
        model = loaded.model.eval()
        progress.update(1, f"loaded {args.which}/ of {loaded.run_dir}")
        shape = _input_shape(model, args.input_shape)
        try:
            graph, report = to_nir(model, shape, dt=dt, approximate=args.approximate)
        except RuntimeError as err:  # the forward pass that traces the shapes
            if args.input_shape is None:
                raise
            trained = ",".join(str(n) for n in _input_shape(model, None))
            raise ConfigError(f"--input-shape {args.input_shape} does not fit the network of "
                              f"{loaded.run_dir} ({str(err).splitlines()[0]}); leave it out to "
                              f"use the shape it was trained on, {trained}.") from None
        report.notes.insert(0, f"exported from {loaded.run_dir} ({loaded.recipe}, {args.which} "
                               f"checkpoint, epoch {loaded.epoch})")
        progress.update(2, "converted to NIR")
        encoded = io.BytesIO()  # HDF5 built in memory: a failed write is then ours to undo
        nir.write(encoded, graph)
        atomic_write(path, encoded.getvalue())
        report_path = report.write(path.with_name(f"{path.name}.report.json"))
        progress.update(3, f"wrote {path.name}")
    print(report)
    print(f"wrote {path} and {report_path}")
    return 0
