"""The ``spikeforge`` command: one subcommand per module in :mod:`spikeforge.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``, and imports heavy dependencies inside ``run``. Errors a user can cause
print one sentence on stderr and exit with 2, never a traceback: a
:class:`~spikeforge.errors.SpikeforgeError`, a bad command line (argparse's messages, turned
into a sentence that points to ``--help``), and an :class:`OSError` that no command caught
(a file or folder that cannot be read or written: named, with the cause).
A module with ``THREADS = True`` computes with torch: it gets ``--threads N``, and runs under
the thread policy of :mod:`spikeforge.threads` (applied before torch is imported).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys
import warnings
from collections.abc import Sequence

from . import __version__, commands, memory, threads, worker
from .errors import SpikeforgeError, SpikeforgeWarning
from .fileio import describe


class UsageError(SpikeforgeError):
    """The command line does not parse (unknown flag, missing or malformed value)."""


#: argparse's wording → ours (the flag named first, then what is wrong with the value)
_REWORDS = (
    (re.compile(r"argument (\S+?)(?:/\S+)?: invalid (int|float) value: (.+)"),
     lambda m: f"{m[1]} {m[3]} is not {'a whole number' if m[2] == 'int' else 'a number'}"),
    (re.compile(r"argument (\S+?)(?:/\S+)?: invalid choice: (\S+) \(choose from (.+)\)"),
     lambda m: f"{m[1]} {m[2]} is not one of {m[3]}"),
    (re.compile(r"argument (\S+?)(?:/\S+)?: expected one argument"),
     lambda m: f"{m[1]} needs a value"),
    (re.compile(r"argument (\S+?)(?:/\S+)?: (.+)"), lambda m: f"{m[1]}: {m[2]}"),
)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one sentence (a :class:`UsageError`) instead of the
    usage block and exit: ``--lr abc`` → ``--lr 'abc' is not a number; see spikeforge train
    --help.``"""

    def error(self, message: str):
        for pattern, reword in _REWORDS:
            match = pattern.fullmatch(message)
            if match:
                message = reword(match)
                break
        raise UsageError(f"{message}; see {self.prog} --help.")


_show_python_warning = warnings.showwarning


def _command_modules() -> dict[str, object]:
    found = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"{commands.__name__}.{info.name}")
            found[getattr(module, "NAME", info.name.replace("_", "-"))] = module
    return found


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = Parser(
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


def _refuse_empty_values(argv: Sequence[str]) -> None:
    """Raise :class:`UsageError` for an empty value (``--out-dir ""``, ``--config=``, an empty
    run directory): no setting of spikeforge takes one, and a falsy path would silently mean
    the default (``runs/RECIPE``, no config, the current folder)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--") and arg.endswith("="):
            raise UsageError(f"{arg[:-1]} is given an empty value; give one or leave the flag "
                             "out.")
        if arg == "":
            before = argv[i - 1] if i else ""
            if before.startswith("-") and "=" not in before:
                raise UsageError(f"{before} is given an empty value; give one or leave the "
                                 "flag out.")
            raise UsageError("an argument is empty (\"\"); give a path or value there.")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A :class:`SpikeforgeWarning` as one line on stderr; other warnings as Python shows them."""
    if issubclass(category, SpikeforgeWarning):
        print(f"spikeforge: warning: {message}", file=sys.stderr, flush=True)
    else:
        _show_python_warning(message, category, filename, lineno, file, line)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv``, run the command, map user errors to exit status 2."""
    warnings.showwarning = _show_warning
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            where = " ".join(["spikeforge"] + [name for name in (
                getattr(args, "command", None), getattr(args, "data_command", None)) if name])
            raise UsageError(f"{where} does not take {' '.join(unknown)}; see {where} --help.")
        args.argv = list(sys.argv[1:] if argv is None else argv)
        _refuse_empty_values(args.argv)
        if getattr(args, "_run", None) is None:
            parser.print_help()
            return 0
        if not args._threads:
            return int(args._run(args) or 0)
        memory.keep_freed_memory()
        policy = threads.resolve(args.threads)
        warning = threads.oversubscription(policy)
        if (warning and not threads.under_torchrun()
                and getattr(args, "nproc", None) is None):  # --nproc: its launcher warns
            warnings.warn(SpikeforgeWarning(warning), stacklevel=1)
        with threads.applied(policy):
            return int(args._run(args) or 0)
    except SpikeforgeError as err:
        _error(str(err))
        return 2
    except KeyboardInterrupt:
        if not worker.launched():  # the launcher says it, once
            print("spikeforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (``| head``) went away: stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:  # a file no command expected to fail: named, with the cause
        _error(describe(err, verb="use"))
        return 2
    except (MemoryError, RuntimeError) as err:
        if worker.is_peer_lost(err):  # another worker failed: its status is the one to report
            return worker.PEER_LOST
        if not isinstance(err, MemoryError) and not _OUT_OF_MEMORY.search(str(err)):
            raise
        _error(out_of_memory(err))
        return 2


def _error(sentence: str) -> None:
    """Tell the user ``sentence`` on stderr, or, in a ``--nproc`` worker, its launcher."""
    if not worker.report(sentence):
        print(f"spikeforge: error: {sentence}", file=sys.stderr)


#: PyTorch's words for a failed allocation: CPU (``DefaultCPUAllocator: can't allocate
#: memory``) and CUDA (``torch.OutOfMemoryError``: ``CUDA out of memory``)
_OUT_OF_MEMORY = re.compile(r"can't allocate memory|out of memory", re.IGNORECASE)


def out_of_memory(err: BaseException) -> str:
    """One sentence for an allocation that failed: how much was asked for (when PyTorch says)
    and the settings that set the size (a huge -T, --batch-size, --channels or hidden)."""
    asked = re.search(r"allocate (\d+) bytes|Tried to allocate ([\d.]+ \w+)", str(err))
    size = ""
    if asked and asked[1]:
        size = f" (it asked for {int(asked[1]) / 2**30:.3g} GiB)"
    elif asked:
        size = f" (it asked for {asked[2]})"
    return (f"the machine ran out of memory{size}; lower --batch-size or -T (or the model's "
            "size: --channels, hidden), or run where more memory is free.")
