"""The ``spikeforge`` command: one subcommand per module in :mod:`spikeforge.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``, and imports heavy dependencies inside ``run``. A module with
``THREADS = True`` computes with torch: it gets ``--threads N``, and runs under the thread policy
of :mod:`spikeforge.threads` (applied before torch is imported). Errors a user can cause
(:class:`~spikeforge.errors.SpikeforgeError`) print one sentence on stderr and exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from . import __version__, commands, threads
from .errors import SpikeforgeError


def _command_modules() -> dict[str, object]:
    found = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"{commands.__name__}.{info.name}")
            found[getattr(module, "NAME", info.name.replace("_", "-"))] = module
    return found


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="spikeforge",
        description="Train spiking neural networks on MNIST, Fashion-MNIST and N-MNIST.",
    )
    parser.add_argument("--version", action="version", version=f"spikeforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _command_modules().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        if getattr(module, "THREADS", False):
            p.add_argument("--threads", type=int, metavar="N",
                           help=f"threads for torch and the kernels (default: ${threads.ENV}, "
                                "else the CPUs this process may use, fewer while other "
                                "processes keep them busy)")
        p.set_defaults(_run=module.run, _threads=getattr(module, "THREADS", False))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv``, run the command, map user errors to exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    try:
        if not args._threads:
            return int(args._run(args) or 0)
        with threads.applied(threads.resolve(args.threads)):
            return int(args._run(args) or 0)
    except SpikeforgeError as err:
        print(f"spikeforge: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spikeforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (``| head``) went away: stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
