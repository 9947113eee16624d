"""Multi-process training with PyTorch DDP, launched by ``torchrun`` or ``--nproc``.

The launcher (torchrun, or :func:`launch` for ``spikeforge train --nproc N``) sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous address) for each process; :func:`setup`
joins the process group (gloo on CPU, NCCL on CUDA) and returns the
:class:`~spikeforge.train.trainer.Dist` that the trainer uses:

- every rank trains on its shard of each epoch's shuffled order (``order[rank::world_size]``),
  so with ``-b B`` per process, N processes step on the same global batches as one process
  with ``-b N·B``; DDP averages the gradients, which is the gradient of that global batch;
- the epoch totals ``[Σ loss·B, correct, B]`` are summed over ranks, so every rank reports the
  metrics of the whole epoch;
- only rank 0 writes the run directory (config, metrics, TensorBoard, checkpoints) and prints.

Checkpoints hold the unwrapped model and rank-independent random streams, so a run written by
N processes resumes with M.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn

from .. import threads, worker
from ..errors import ConfigError, SpikeforgeError
from ..worker import ERROR_FILE_ENV, LAUNCHER_ENV, PEER_LOST
from .trainer import Dist

#: The variables a DDP launcher sets for every worker (torchrun, :func:`launch`, SLURM scripts).
RENDEZVOUS_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: Seconds the other workers get to stop on their own after one failed, before SIGTERM.
GRACE_S = 10.0


def launched_by_torchrun(environ: dict[str, str] | None = None) -> bool:
    """True inside a process that torchrun (or another DDP launcher) started with N > 1.

    Raises :class:`ConfigError` when ``WORLD_SIZE`` is set but is no process count, or is > 1
    without the rest of a usable rendezvous (``RANK`` below it, ``MASTER_ADDR``, a numeric
    ``MASTER_PORT``, ``LOCAL_RANK`` a number if set): stray variables, not a launcher.
    """
    env = os.environ if environ is None else environ
    fix = "unset them, or start the processes with torchrun or spikeforge train --nproc N."
    text = env.get("WORLD_SIZE", "1").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"WORLD_SIZE={text!r} is not a number of processes; {fix}")
    world = int(text)
    if world == 1:
        return False
    missing = [name for name in RENDEZVOUS_ENV if not env.get(name, "").strip()]
    if missing:
        verb = "is" if len(missing) < 2 else "are"
        raise ConfigError(f"WORLD_SIZE={text!r} is set but {', '.join(missing)} {verb} not, so "
                          f"this is no DDP worker; {fix}")
    for name in ("RANK", "MASTER_PORT", "LOCAL_RANK"):
        value = env.get(name, "0").strip()
        if not value.isdigit():
            raise ConfigError(f"{name}={value!r} is not a whole number; {fix}")
    if int(env["RANK"]) >= world:
        raise ConfigError(f"RANK={env['RANK'].strip()} is not below WORLD_SIZE={world}, so no "
                          f"process group can hold it; {fix}")
    return True


def follow_launcher() -> None:
    """In a worker of :func:`launch`, get SIGTERM when the launcher dies, even by SIGKILL (Linux
    ``prctl(PR_SET_PDEATHSIG)``), so no worker outlives it. Raises :class:`ConfigError` when the
    launcher it names is not its parent (gone already, or stray variables)."""
    if not worker.launched() or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    launcher = os.environ[LAUNCHER_ENV]
    if str(os.getppid()) != launcher:  # gone already, or stray variables
        for name in (LAUNCHER_ENV, ERROR_FILE_ENV):
            os.environ.pop(name, None)  # so the sentence below reaches stderr
        raise ConfigError(f"{LAUNCHER_ENV} names process {launcher}, which "
                          "is not this process's parent; unset it and "
                          f"{ERROR_FILE_ENV} (spikeforge train --nproc sets them for its "
                          "workers).")


def _all_reduce_sum(t: Tensor) -> Tensor:
    out = t.clone()
    torch_dist.all_reduce(out, op=torch_dist.ReduceOp.SUM)
    return out


def setup(device: str | None) -> Dist:
    """Join the process group torchrun describes; CUDA ranks take GPU ``LOCAL_RANK``."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (device in (None, "auto") or str(device).startswith("cuda")) \
        and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend)
    return Dist(rank=torch_dist.get_rank(), world_size=torch_dist.get_world_size(),
                reduce=_all_reduce_sum, barrier=torch_dist.barrier, wrap=_wrap)


def _wrap(model: nn.Module) -> nn.Module:
    return nn.parallel.DistributedDataParallel(model)


def teardown() -> None:
    """Leave the process group (no-op when none was joined)."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def worker_env(nproc: int, threads_flag: int | None = None,
               environ: dict[str, str] | None = None) -> tuple[dict[str, str], str | None]:
    """The environment of each of ``nproc`` workers and a one-sentence warning (or None).

    The available CPUs are split between the workers (2 CPUs, ``--nproc 2``: 1 thread each);
    a count the user fixed (``--threads``, ``SPIKEFORGE_THREADS``, ``OMP_NUM_THREADS``) is
    passed on as ``SPIKEFORGE_THREADS``. ``OMP_NUM_THREADS`` is always set. Raises
    :class:`ConfigError` for ``nproc`` < 1, or, without CUDA, more processes than CPUs (each
    holds a whole copy of the model and the data).
    """
    if nproc < 1:
        raise ConfigError(f"--nproc must be a positive integer, got {nproc}.")
    env = dict(threads.user_environ() if environ is None else environ)
    policy = threads.resolve(threads_flag, env, processes=nproc)
    if nproc > policy.cpus and not torch.cuda.is_available():
        raise ConfigError(f"--nproc {nproc} starts more processes than the {policy.cpus} CPUs "
                          "this process may use, each with its own copy of the model and the "
                          f"data; use --nproc {policy.cpus} or fewer.")
    if policy.fixed:
        env[threads.ENV] = str(policy.threads)
    env["OMP_NUM_THREADS"] = str(policy.threads)
    return env, threads.oversubscription(policy, nproc)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(nproc: int, argv: Sequence[str], threads_flag: int | None = None) -> int:
    """``spikeforge train --nproc N ...``: run ``spikeforge <argv>`` in N worker processes on this
    machine, the DDP rendezvous at 127.0.0.1 (as ``torchrun --standalone``), each worker with its
    share of the CPUs (:func:`worker_env`); return their exit status.

    SIGINT, SIGTERM and SIGHUP reach the workers as SIGTERM (a second one as SIGKILL), Ctrl-Z
    (SIGTSTP) stops them with the launcher and SIGCONT continues them; a worker
    that fails makes the others stop (SIGTERM after :data:`GRACE_S` s); the first rank's error
    sentence is raised here as a :class:`SpikeforgeError`, once. Returns 130 after an interrupt.
    """
    env, warning = worker_env(nproc, threads_flag)
    if warning:
        print(f"spikeforge: warning: {warning}", file=sys.stderr, flush=True)
    env.update({"WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                LAUNCHER_ENV: str(os.getpid())})
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        _signal_all(procs, signal.SIGTERM if len(received) == 1 else signal.SIGKILL)

    def suspend(signum, frame):  # Ctrl-Z: the workers (in their own sessions) stop too
        _signal_all(procs, signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)

    def resume(signum, frame):
        _signal_all(procs, signal.SIGCONT)

    with tempfile.TemporaryDirectory(prefix="spikeforge-nproc-") as tmp:
        errors = [Path(tmp) / f"rank{rank}.err" for rank in range(nproc)]
        procs: list[subprocess.Popen] = []
        handlers = {signal.SIGINT: forward, signal.SIGTERM: forward}
        for name, handler in (("SIGHUP", forward), ("SIGTSTP", suspend), ("SIGCONT", resume)):
            if hasattr(signal, name):  # POSIX
                handlers[getattr(signal, name)] = handler
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        try:
            for rank in range(nproc):
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "spikeforge", *argv], start_new_session=True,
                    env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank),
                         ERROR_FILE_ENV: str(errors[rank])}))
            codes, stopped = _wait(procs)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        messages = [path.read_text().strip() for path in errors if path.exists()]
    return outcome(codes, stopped, bool(received), [m for m in messages if m])


def outcome(codes: list[int], stopped: set[int], interrupted: bool, messages: list[str]) -> int:
    """The launcher's exit status from its workers' ``codes`` (``stopped``: the ranks it
    terminated itself after another failed; ``messages``: their error sentences by rank).
    Raises :class:`SpikeforgeError` with the first sentence, or for a worker killed by a
    signal; returns 130 after an interrupt, else the first failing worker's own status."""
    if messages:
        raise SpikeforgeError(messages[0])
    if interrupted:
        return 130
    own = [(rank, code) for rank, code in enumerate(codes)
           if code not in (0, PEER_LOST) and rank not in stopped]
    if not own:
        if all(code == 0 for code in codes):
            return 0
        raise SpikeforgeError("the training processes lost their connection to each other; "
                              "continue the run with --resume.")
    rank, code = own[0]
    if code in (130, -signal.SIGTERM, -signal.SIGINT):  # stopped from outside, not by us
        return 130
    if code < 0:
        name = signal.Signals(-code).name
        cause = " (out of memory?)" if -code == signal.SIGKILL else ""
        raise SpikeforgeError(f"training process {rank} was killed by {name}{cause}; continue "
                              "the run with --resume" + (", with fewer --nproc or a smaller "
                                                          "batch." if cause else "."))
    return code


def _signal_all(procs: list[subprocess.Popen], sig: int) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)


def _wait(procs: list[subprocess.Popen]) -> tuple[list[int], set[int]]:
    """Wait for every worker; once one has failed, SIGTERM the rest after :data:`GRACE_S` s.
    Returns the exit statuses and the ranks stopped here that way."""
    failed_at, stopped = None, set()
    while True:
        codes = [proc.poll() for proc in procs]
        if all(code is not None for code in codes):
            return codes, stopped
        if failed_at is None and any(code not in (None, 0) for code in codes):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > GRACE_S:
            for rank, proc in enumerate(procs):
                if proc.poll() is None:
                    proc.terminate()
                    stopped.add(rank)
            failed_at = math.inf
        time.sleep(0.1)
