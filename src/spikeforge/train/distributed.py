"""Multi-process training with PyTorch DDP, launched by ``torchrun``.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous address) for each
process; :func:`setup` joins the process group (gloo on CPU, NCCL on CUDA) and returns the
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

import os
import subprocess
import sys
from collections.abc import Sequence

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn

from .. import threads
from ..errors import ConfigError
from .trainer import Dist


def launched_by_torchrun() -> bool:
    """True inside a process that torchrun (or another DDP launcher) started with N > 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


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
    passed on as ``SPIKEFORGE_THREADS``. ``OMP_NUM_THREADS`` is always set, so torchrun does
    not replace it with 1.
    """
    env = dict(threads.user_environ() if environ is None else environ)
    policy = threads.resolve(threads_flag, env, processes=nproc)
    if policy.fixed:
        env[threads.ENV] = str(policy.threads)
    env["OMP_NUM_THREADS"] = str(policy.threads)
    warning = None
    if nproc * policy.threads > policy.cpus:
        warning = (f"--nproc {nproc} runs {nproc * policy.threads} threads on the "
                   f"{policy.cpus} CPUs this process may use, so they will wait for each other; "
                   f"use --nproc {max(1, policy.cpus // policy.threads)} or fewer.")
    return env, warning


def launch(nproc: int, argv: Sequence[str], threads_flag: int | None = None) -> int:
    """``spikeforge train --nproc N ...``: run ``torchrun --standalone`` with N processes on this
    machine, each running ``spikeforge <argv>`` with its share of the CPUs (:func:`worker_env`);
    returns torchrun's exit status."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be a positive integer, got {nproc}.")
    env, warning = worker_env(nproc, threads_flag)
    if warning:
        print(f"spikeforge: warning: {warning}", file=sys.stderr, flush=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "spikeforge", *argv]
    return subprocess.call(command, env=env)


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out
