"""Checkpoints: a folder with the weights and the training state, replaced atomically.

Layout of ``<run>/last/`` and ``<run>/best/``::

    model.safetensors   model.state_dict() (parameters and buffers); metadata: format, model,
                        epoch
    state.pt            dict loadable with ``torch.load(weights_only=True)``: format, epoch
                        (completed epochs), optimizer, scheduler, scaler, rng (torch CPU and CUDA
                        generator states), best_acc, history (the metrics rows so far), and
                        weights_sha256 (SHA-256 of model.safetensors, which ties the two files)

Writing (:func:`save`): both files are serialised in memory, written into ``<run>/.<name>.tmp/``
and flushed to disk, then ``<name>`` is renamed to ``.<name>.old``, the new folder renamed to
``<name>``, and the old one removed. A kill at any moment leaves a complete checkpoint under
``<name>`` or, between the two renames, under ``.<name>.old``; :func:`recover` (run before
reading or writing) puts it back. A write that fails (disk full, read-only folder) removes
``.<name>.tmp/``, leaves the previous ``<name>/`` in place and raises
:class:`~spikeforge.errors.WriteError` naming ``<run>/<name>``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from ..errors import CheckpointError
from ..fileio import fsync_dir, write_bytes, writing

FORMAT = "spikeforge-checkpoint-1"
WEIGHTS = "model.safetensors"
STATE = "state.pt"
#: The way on from a damaged checkpoint, for every command that reads one.
OTHER_CHECKPOINT = ("use the run's other checkpoint (eval, predict, inspect, energy, export: "
                    "--checkpoint best or last; train --resume reads last/ only), or train the "
                    "run again with --overwrite")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rng_state() -> dict[str, Any]:
    """The torch CPU generator state and that of every CUDA device (uint8 tensors)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        for i, s in enumerate(cuda):
            torch.cuda.set_rng_state(s, i)


def recover(run_dir: str | os.PathLike, name: str) -> None:
    """Finish or undo a :func:`save` that was interrupted (see module doc)."""
    run_dir = Path(run_dir)
    final, old, tmp = run_dir / name, run_dir / f".{name}.old", run_dir / f".{name}.tmp"
    if not final.exists() and old.is_dir():
        os.replace(old, final)
    for leftover in (old, tmp):
        if leftover.exists():
            shutil.rmtree(leftover)


def locate(run_dir: str | os.PathLike, name: str) -> Path:
    """The folder holding checkpoint ``name`` ("last" | "best"), without changing anything."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / name, run_dir / f".{name}.old"):
        if candidate.is_dir():
            return candidate
    raise CheckpointError(f"{run_dir / name} does not exist, so there is nothing to load: the "
                          "run has not finished an epoch yet (train it with spikeforge train "
                          f"--resume {run_dir}) or this is not a run directory.")


def save(run_dir: str | os.PathLike, name: str, model: nn.Module, state: dict[str, Any],
         model_name: str) -> Path:
    """Write checkpoint ``<run_dir>/<name>/`` atomically; ``state`` must hold ``epoch``.
    Raises :class:`~spikeforge.errors.WriteError` (previous checkpoint kept, nothing left)."""
    run_dir = Path(run_dir)
    final, old, tmp = run_dir / name, run_dir / f".{name}.old", run_dir / f".{name}.tmp"
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = safetensors_bytes(tensors, metadata={"format": FORMAT, "model": model_name,
                                                   "epoch": str(state["epoch"])})
    buffer = io.BytesIO()
    torch.save({**state, "format": FORMAT, "weights_sha256": hashlib.sha256(weights).hexdigest()},
               buffer)
    with writing(final):
        recover(run_dir, name)
        try:
            tmp.mkdir(parents=True)
            write_bytes(tmp / WEIGHTS, weights)
            write_bytes(tmp / STATE, buffer.getvalue())
            fsync_dir(tmp)
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
            fsync_dir(run_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if not final.exists() and old.is_dir():
                os.replace(old, final)
            raise
        if old.exists():
            shutil.rmtree(old)
    return final


#: what training needs of a state to resume from it: key -> (types, in words)
_RESUMABLE = {"epoch": (int, "a whole number"), "best_acc": ((int, float), "a number"),
              "history": (list, "a list of metrics rows"), "rng": (dict, "random states"),
              "optimizer": (dict, "an optimizer state"),
              "scheduler": (dict, "a scheduler state"), "scaler": (dict, "a scaler state")}


def check_resumable(state: dict[str, Any], state_path: str | os.PathLike) -> dict[str, Any]:
    """Raise :class:`CheckpointError` when a loaded state lacks what ``train --resume`` reads
    (its epoch, best accuracy, history, random, optimizer and scaler states); return it."""
    for key, (kinds, words) in _RESUMABLE.items():
        value = state.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise CheckpointError(f"{state_path} is damaged (its {key!r} is not {words}); "
                                  f"{OTHER_CHECKPOINT}.")
    if state["epoch"] < 0 or not all(isinstance(row, dict) for row in state["history"]) \
            or not isinstance(state["rng"].get("torch"), torch.Tensor):
        raise CheckpointError(f"{state_path} is damaged (its epoch, history or random state is "
                              f"malformed); {OTHER_CHECKPOINT}.")
    return state


def _load_failure(err: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words: the code a pickle would run
    (never PyTorch's advice to load it unsafely), else the first sentence of PyTorch's message."""
    text = str(err)
    called = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if called:
        return f"it would run Python code, {called[1]}, which spikeforge never loads"
    if "Weights only load failed" in text:
        return "it holds Python objects other than tensors, which spikeforge never loads"
    lines = text.strip().splitlines()
    first = re.split(r"\.\s", lines[0])[0].rstrip(".") if lines else type(err).__name__
    return first[:120]


def load_state(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """The training state of a checkpoint folder, checked against its weights file."""
    ckpt_dir = Path(ckpt_dir)
    weights, state_path = ckpt_dir / WEIGHTS, ckpt_dir / STATE
    for path in (weights, state_path):
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; {ckpt_dir} is not a complete spikeforge "
                                  "checkpoint (train again or point to another run).")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        raise CheckpointError(f"{state_path} is damaged or not a spikeforge checkpoint "
                              f"({_load_failure(err)}); {OTHER_CHECKPOINT}.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{state_path} is not a spikeforge checkpoint (no "
                              f"'{FORMAT}' marker); point to a run written by spikeforge train.")
    if _sha256(weights) != state.get("weights_sha256"):
        raise CheckpointError(f"{weights} does not match {state_path} (SHA-256 differs): the "
                              f"weights file is damaged or was replaced; {OTHER_CHECKPOINT}.")
    return state


def load_weights(ckpt_dir: str | os.PathLike, model: nn.Module, model_name: str) -> None:
    """Load ``model.safetensors`` into ``model`` (strict: every key, every shape)."""
    weights = Path(ckpt_dir) / WEIGHTS
    try:
        tensors = load_file(weights)
        with safe_open(weights, "pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights} is damaged or not a safetensors file ({err}); use "
                              "another checkpoint.") from None
    if meta.get("format") != FORMAT or meta.get("model") != model_name:
        raise CheckpointError(f"{weights} holds weights of {meta.get('model', 'another program')!r}"
                              f", not a spikeforge {model_name} model; point to the matching run.")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise CheckpointError(f"{weights} does not fit the {model_name} model of this run's "
                              f"config ({first[:160]}); the run directory was mixed up.") from None
