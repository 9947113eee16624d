"""``fit``: a whole training run, top to bottom — data, model, epochs, logs, checkpoints.

Every epoch ``e`` (0-based) trains on the data shuffled with ``(seed, e)``, Poisson-encodes
with a generator seeded from ``(seed, TRAIN_STREAM, e, rank)``, steps the scheduler, evaluates
on the test split (Poisson stream ``(seed, TEST_STREAM, rank)``, the same every epoch), then
writes ``best/`` (when the test accuracy improved), ``last/``, the metrics files and the
TensorBoard scalars. With ``max_batches``, each row says on how many test images (of how
many) the test accuracy was measured. Every random stream is a function of the seed and the
epoch, and the checkpoint holds the model, optimizer, scheduler, grad scaler and torch RNG
states, so a run resumed from ``last/`` continues exactly as the uninterrupted run would have.

Resuming (``resume=True``) loads ``last/``; a run folder that holds its ``config.json`` but no
checkpoint yet (stopped during its first epoch) starts from epoch 1 with that config. A
changed ``epochs`` stretches the cosine schedule to the new total (:func:`restore_scheduler`);
fewer epochs than ``last/`` holds are refused.
Every write to the run directory raises :class:`~spikeforge.errors.WriteError` naming the path
when it fails; what was written before (checkpoints, metrics) stays as it was.

Distributed hooks (:class:`Dist`, filled in by DDP): ``rank``/``world_size`` pick each rank's
shard of every epoch, ``reduce`` sums the epoch totals over ranks, ``wrap`` wraps the model for
training (checkpoints hold the unwrapped one), and only rank 0 writes to the run directory.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import threads
from ..errors import CheckpointError, ConfigError, SpikeforgeError
from ..fileio import writing
from . import checkpoint
from .build import (
    TEST_STREAM,
    TRAIN_STREAM,
    amp_dtype,
    build_model,
    build_optimizer,
    build_scheduler,
    build_task,
    load_data,
    resolve_device,
    restore_scheduler,
    stream_seed,
)
from .loop import Diverged, evaluate, train_one_epoch
from .recipes import RUNTIME_KEYS, TrainConfig, describe, flag, validate
from .run import (
    METRICS,
    NOT_SCALARS,
    check_out_dir,
    clear_run,
    discard_stale_files,
    read_config,
    write_config,
    write_metrics,
)
from .runlock import RunLock


@dataclass
class Dist:
    """Where this process sits in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    reduce: Callable[[Tensor], Tensor] = lambda t: t
    barrier: Callable[[], object] = lambda: None
    wrap: Callable[[nn.Module], nn.Module] = lambda model: model

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resume_config(run_dir: Path, overrides: dict) -> TrainConfig:
    """The saved config of ``run_dir`` with the runtime flags (device, epochs, ...) applied;
    any other flag that differs from the saved run is refused (:data:`RUNTIME_KEYS`)."""
    saved, _ = read_config(run_dir)
    for key, value in overrides.items():
        if value is None or getattr(saved, key) == value:
            continue
        if key not in RUNTIME_KEYS:
            raise ConfigError(f"{flag(key)} {value} differs from the resumed run's "
                              f"{getattr(saved, key)}; --resume continues {run_dir} with its own "
                              f"settings (only {', '.join(flag(k) for k in RUNTIME_KEYS)} may "
                              "change).")
        setattr(saved, key, value)
    validate(saved)
    saved.description = describe(saved)
    return saved


def _batches(dataset, config: TrainConfig, device, dist: Dist, *, train: bool, epoch: int):
    # each batch is done with before the next is drawn, so N-MNIST may reuse one buffer
    kwargs = dict(shuffle=train, seed=config.seed, epoch=epoch,
                  drop_last=config.drop_last and train, device=device, rank=dist.rank,
                  world_size=dist.world_size, reuse=True)
    total = dataset.num_batches(config.batch_size, kwargs["drop_last"], dist.world_size)
    if config.max_batches is not None:
        total = min(total, config.max_batches)
    return itertools.islice(dataset.batches(config.batch_size, **kwargs), total), total


def _generator(config: TrainConfig, device: torch.device, *keys: int) -> torch.Generator | None:
    if config.encoding != "poisson":
        return None
    return torch.Generator(device).manual_seed(stream_seed(config.seed, *keys))


def fit(config: TrainConfig, out_dir: str | Path, *, resume: bool = False,
        overwrite: bool = False, dist: Dist | None = None, show_progress: bool = True,
        log: Callable[[str], None] = print) -> list[dict[str, float]]:
    """Train ``config`` into ``out_dir`` (new, or resumed from its ``last/``); return the
    metrics rows of every completed epoch. Rank 0 holds ``out_dir``'s :class:`RunLock`
    throughout: another ``train`` of the folder is refused (:class:`ConfigError`)."""
    if resume and overwrite:
        raise ConfigError("--overwrite cannot be combined with --resume; choose one.")
    dist = dist or Dist()
    out_dir = Path(out_dir)
    with RunLock(out_dir) as lock:
        created: list[Path] = []  # the folders made here, deepest first
        if dist.is_main:
            if not resume:
                # made and locked before anything checks or clears it: two new trainings of
                # one folder cannot both find it missing and then write it in turn
                created = _missing_folders(out_dir)
                with writing(out_dir):
                    out_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        try:
            return _fit(config, lock, resume=resume, overwrite=overwrite, dist=dist,
                        show_progress=show_progress, log=log)
        except BaseException:
            if lock.held:  # a failed start leaves none of the folders it made while empty
                for folder in created:
                    try:
                        folder.rmdir()
                    except OSError:
                        break
            raise


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and not path.is_symlink() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _fit(config: TrainConfig, lock: RunLock, *, resume: bool, overwrite: bool, dist: Dist,
         show_progress: bool, log: Callable[[str], None]) -> list[dict[str, float]]:
    out_dir = lock.run_dir
    device = resolve_device(config.device)
    state = None
    if resume:
        if dist.is_main:
            with writing(out_dir):
                for name in ("last", "best"):
                    checkpoint.recover(out_dir, name)
        dist.barrier()
        if _has_checkpoint(out_dir):
            last = checkpoint.locate(out_dir, "last")
            state = checkpoint.check_resumable(checkpoint.load_state(last),
                                               last / checkpoint.STATE)
            if config.epochs < state["epoch"]:
                raise ConfigError(f"--epochs {config.epochs} is fewer than the {state['epoch']} "
                                  f"epochs {out_dir} has finished; resume it with --epochs "
                                  f"{state['epoch']} or more.")
    else:
        check_out_dir(out_dir, overwrite)
        dist.barrier()
    train_set = load_data(config, "train")
    test_set = load_data(config, "test")
    if train_set.num_batches(config.batch_size, config.drop_last, dist.world_size) == 0:
        most = len(train_set) // dist.world_size
        raise ConfigError(f"--batch-size {config.batch_size} is larger than the {most} training "
                          f"images{' per process' if dist.world_size > 1 else ''}, so not one "
                          f"full batch is left to train on; use at most {most}.")

    torch.manual_seed(config.seed)
    task = build_task(config)
    net = build_model(config).to(device)  # what checkpoints hold; `model` is what trains
    optimizer = build_optimizer(config, net.parameters())
    scheduler = build_scheduler(config, optimizer)
    autocast = amp_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast is torch.float16)
    history: list[dict[str, float]] = []
    best_acc, done = -1.0, 0  # done = completed epochs, the epoch last/ holds
    if state is not None:
        checkpoint.load_weights(checkpoint.locate(out_dir, "last"), net, config.model)
        try:
            optimizer.load_state_dict(state["optimizer"])
            restore_scheduler(config, scheduler, state["scheduler"])
            if state["scaler"]:  # empty when saved without fp16 (CPU, or no --amp): start fresh
                scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{out_dir}/last/state.pt does not fit this run's optimizer "
                                  f"({err}); the checkpoint is damaged.") from None
        checkpoint.set_rng_state(state["rng"])
        history, best_acc, done = state["history"], state["best_acc"], state["epoch"]
    model = dist.wrap(net)
    threads.adapt(force=True)  # config.json records the count the first batch runs with

    writer = None
    if dist.is_main and overwrite:  # the folder exists: fit made it, or it held the old run
        clear_run(out_dir)
    log_every = 20 if device.type == "cuda" else 1  # a host sync per progress update
    test_size = len(test_set)
    shown = show_progress and dist.is_main
    try:
        if dist.is_main:
            writer = _start_run(out_dir, config, history, done, resume, state is None, log)
        for epoch in range(done, config.epochs):
            tick = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            batches, total = _batches(train_set, config, device, dist, train=True, epoch=epoch)
            try:
                train = train_one_epoch(
                    model, task, batches, optimizer, num_batches=total, device=device,
                    title=f"train {epoch + 1}/{config.epochs}", amp_dtype=autocast,
                    scaler=scaler if scaler.is_enabled() else None,
                    generator=_generator(config, device, TRAIN_STREAM, epoch, dist.rank),
                    reduce=dist.reduce, show_progress=shown, log_every=log_every)
                if not math.isfinite(train.loss):  # another rank diverged
                    raise Diverged(f"the training loss became {train.loss}")
            except Diverged as err:
                kept = f"{out_dir}/last still holds epoch {done}" if done else \
                    "no checkpoint was written"
                raise Diverged(f"{err} in epoch {epoch + 1}; training stopped and {kept}; lower "
                               "--lr (or drop --amp) and train again.") from None
            scheduler.step()
            batches, total = _batches(test_set, config, device, dist, train=False, epoch=epoch)
            test = evaluate(model, task, batches, num_batches=total, device=device,
                            title=f"test  {epoch + 1}/{config.epochs}", amp_dtype=autocast,
                            generator=_generator(config, device, TEST_STREAM, dist.rank),
                            reduce=dist.reduce, show_progress=shown, log_every=log_every)
            row = {"epoch": epoch + 1, "train_loss": train.loss, "train_acc": train.acc,
                   "test_loss": test.loss, "test_acc": test.acc,
                   "train_img_per_s": train.img_per_s, "test_img_per_s": test.img_per_s,
                   "lr": lr, "seconds": time.perf_counter() - tick,
                   "test_images": test.images, "test_set_images": test_size}
            history.append(row)
            improved = test.acc > best_acc
            best_acc, done = max(best_acc, test.acc), epoch + 1
            if not dist.is_main:
                continue
            # best/ before last/: a kill in between resumes from the older last/, redoes this
            # epoch identically and writes best/ again
            state = {"epoch": done, "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                     "rng": checkpoint.rng_state(), "best_acc": best_acc, "history": history}
            if improved:
                checkpoint.save(out_dir, "best", net, state, config.model)
            checkpoint.save(out_dir, "last", net, state, config.model)
            write_metrics(out_dir, history)
            writer.add(row, done)
            subset = f" on {test.images} of {test_size} images" if test.images < test_size \
                else ""
            log(f"epoch {done}/{config.epochs}  train loss {train.loss:.4f} acc {train.acc:.4f}  "
                f"test loss {test.loss:.4f} acc {test.acc:.4f}{subset}  "
                f"{train.img_per_s:.0f} img/s  lr {lr:.3g}  {row['seconds']:.1f} s"
                + ("  (best)" if improved else ""))
    except BaseException as err:
        if writer is not None:
            writer.close(raise_errors=False)  # the first error is the one to report
        if dist.is_main and not resume and not done and not isinstance(err, KeyboardInterrupt):
            # a new run that failed (a full disk, bad data met in epoch 1, divergence) before it
            # finished an epoch leaves no stub, so the same command can be given again once
            # that is fixed; an interrupted one keeps its config, as its hint says
            with contextlib.suppress(SpikeforgeError, OSError):
                clear_run(out_dir)
        raise
    if writer is not None:
        writer.close()
    return history


def _start_run(out_dir: Path, config: TrainConfig, history: list[dict[str, float]], done: int,
               resume: bool, fresh: bool, log: Callable[[str], None]) -> _Scalars:
    """Write the run's config and metrics so far, open its TensorBoard scalars and say what
    runs (rank 0)."""
    discard_stale_files(out_dir)
    write_config(out_dir, config)
    write_metrics(out_dir, history)
    writer = _Scalars(out_dir / "tensorboard", purge_step=done + 1 if done else None)
    log(f"{config.recipe}: {describe(config)}")
    if resume and fresh:
        log(f"run directory: {out_dir} (no checkpoint yet: starting it from epoch 1 with its "
            "saved config)")
    else:
        log(f"run directory: {out_dir}" + (f" (resumed after epoch {done})" if resume else ""))
    policy = threads.current()
    if policy is not None:
        log(f"threads: {torch.get_num_threads()} ({policy.describe()})")
    if done >= config.epochs:
        log(f"{out_dir} already finished {done} of {config.epochs} epochs; nothing to do "
            "(raise --epochs to train longer).")
    return writer


def _has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds ``last/``; a run with neither ``last/`` nor ``best/`` has not
    finished an epoch and starts afresh. ``best/`` alone means ``last/`` was lost: refused."""
    if (run_dir / "last").is_dir():
        return True
    if (run_dir / "last").exists():
        raise CheckpointError(f"{run_dir / 'last'} is a file, not a checkpoint folder; move it "
                              "away to resume the run, or train it again with --overwrite.")
    if (run_dir / "best").is_dir():
        raise CheckpointError(f"{run_dir / 'last'} does not exist although {run_dir / 'best'} "
                              "does, so the run cannot continue where it stopped; evaluate "
                              f"best/ with spikeforge eval {run_dir}, or train it again with "
                              "--overwrite.")
    return False


class _Scalars:
    """The run's TensorBoard writer; a failed write raises
    :class:`~spikeforge.errors.WriteError` naming the folder."""

    def __init__(self, folder: Path, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = folder
        with writing(folder):
            self._writer = SummaryWriter(str(folder), purge_step=purge_step)

    def add(self, row: dict[str, float], step: int) -> None:
        """One scalar per metric (``train_loss`` → ``loss/train``) at ``step``, flushed."""
        with writing(self.folder):
            for key in METRICS:
                if key not in NOT_SCALARS:
                    self._writer.add_scalar(_tb_tag(key), row[key], step)
            self._writer.flush()

    def close(self, raise_errors: bool = True) -> None:
        try:
            with writing(self.folder):
                self._writer.close()
        except Exception:
            if raise_errors:
                raise


def _tb_tag(key: str) -> str:
    """``train_loss`` → ``loss/train``, ``test_img_per_s`` → ``img_per_s/test``."""
    split, _, name = key.partition("_")
    return f"{name}/{split}" if split in ("train", "test") else key
