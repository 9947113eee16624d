"""Recipes: named sets of training defaults, each taken from its reference script or tutorial.

A run's settings are resolved in three layers, later ones winning::

    recipe defaults  <  --config FILE.toml  <  command-line flags

and validated once (:func:`validate`); the result is written to the run's ``config.json``.

References:
    fc-lif           SpikingJelly ``activation_based/examples/lif_fc_mnist.py``
    csnn             SpikingJelly ``activation_based/examples/conv_fashion_mnist.py`` (64 channels)
    nmnist-csnn      snnTorch tutorial 7 (N-MNIST, Tonic frames, 12C5-MP2-32C5-MP2-800FC10)
    rleaky           snnTorch regression tutorial part II (RLeaky, all-to-all feedback)
    rleaky-membrane  the same net trained on its output membrane (``mse_membrane(1.05, 0.2)``)
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import ConfigError

STATIC_DATASETS = ("mnist", "fashion-mnist")
OPTIMIZERS = ("adam", "sgd")
SCHEDULERS = ("none", "cosine")
LOSSES = ("mse_rate", "mse_count", "mse_membrane", "ce_rate", "ce_count")


@dataclass
class TrainConfig:
    """Every setting of a training run (the content of ``config.json``)."""

    recipe: str
    description: str = ""              # what is trained (:func:`describe`)
    model: str = "fc-lif"
    dataset: str = "mnist"
    encoding: str = "poisson"          # poisson | direct | frames (N-MNIST)
    T: int | None = 100                # time steps; N-MNIST: None = every frame, else crop
    loss: str = "mse_rate"
    loss_args: dict[str, float] = field(default_factory=dict)
    readout: str = "spikes"            # class = argmax of spike count, or of mean membrane
    tau: float | None = None           # LIF time constant (fc-lif)
    channels: int | None = None        # conv channels (csnn)
    pool: str | None = None            # csnn pooling: max | avg
    beta: float | None = None          # Leaky/RLeaky decay (nmnist-csnn, rleaky)
    hidden: int | None = None          # RLeaky hidden width
    recurrence: str | None = None      # RLeaky feedback: linear | one_to_one | conv
    batch_size: int = 64
    epochs: int = 100
    opt: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9              # SGD only
    weight_decay: float = 0.0
    scheduler: str = "none"            # none | cosine (annealed to 0 over `epochs`)
    drop_last: bool = True             # drop the short last training batch (as the references)
    augment: bool = False              # N-MNIST: random rotation of training samples
    denoise_us: float = 10000.0        # N-MNIST: Tonic Denoise filter time
    time_window_us: float = 1000.0     # N-MNIST: Tonic ToFrame time window
    seed: int = 0
    device: str = "auto"               # auto = cuda when available, else cpu
    amp: bool = False                  # autocast: bf16 on CPU, fp16 (with grad scaling) on CUDA
    workers: int = 0                   # N-MNIST: processes that build the frame cache
    data_dir: str | None = None
    cache_dir: str | None = None       # N-MNIST: frame cache folder (default $SPIKEFORGE_CACHE)
    download: bool = True
    max_batches: int | None = None     # cap on train and test batches per epoch (smoke runs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Each recipe's defaults; ``description`` names the reference they come from.
RECIPES: dict[str, dict[str, Any]] = {
    "fc-lif": dict(
        description="SpikingJelly lif_fc_mnist",
        model="fc-lif", dataset="mnist", encoding="poisson", T=100, tau=2.0, loss="mse_rate",
        batch_size=64, epochs=100, opt="adam", lr=1e-3,
    ),
    "csnn": dict(
        description="SpikingJelly conv_fashion_mnist",
        model="csnn", dataset="mnist", encoding="direct", T=4, channels=64, pool="max",
        loss="mse_rate", batch_size=128, epochs=64, opt="sgd", lr=0.1, momentum=0.9,
        scheduler="cosine",
    ),
    "nmnist-csnn": dict(
        description="snnTorch tutorial 7",
        model="nmnist-csnn", dataset="nmnist", encoding="frames", T=None, beta=0.5,
        loss="mse_count", loss_args={"correct_rate": 0.8, "incorrect_rate": 0.2},
        batch_size=128, epochs=1, opt="adam", lr=2e-2, augment=True,
    ),
    "rleaky": dict(
        description="snnTorch regression tutorial II",
        model="rleaky", dataset="mnist", encoding="direct", T=10, beta=0.9, hidden=128,
        recurrence="linear", loss="mse_count",
        loss_args={"correct_rate": 0.8, "incorrect_rate": 0.2},
        batch_size=128, epochs=5, opt="adam", lr=1e-3,
    ),
    "rleaky-membrane": dict(
        description="snnTorch regression tutorial II, trained on the output membrane",
        model="rleaky", dataset="mnist", encoding="direct", T=10, beta=0.9, hidden=128,
        recurrence="linear", loss="mse_membrane",
        loss_args={"on_target": 1.05, "off_target": 0.2}, readout="membrane",
        batch_size=128, epochs=5, opt="adam", lr=1e-3,
    ),
}

#: Settings that only concern where and how fast a run executes; they may change on --resume.
RUNTIME_KEYS = ("device", "workers", "data_dir", "cache_dir", "download", "epochs")
#: The settings each model accepts; other model settings must stay None.
MODEL_KEYS = {
    "fc-lif": ("tau",),
    "csnn": ("channels", "pool"),
    "nmnist-csnn": ("beta",),
    "rleaky": ("beta", "hidden", "recurrence"),
}
#: Command-line spelling of each setting, for error messages.
FLAGS = {"T": "-T", "batch_size": "--batch-size", "lr": "--lr", "epochs": "--epochs",
         "momentum": "--momentum", "tau": "--tau", "channels": "--channels", "seed": "--seed",
         "workers": "--workers", "max_batches": "--max-batches", "dataset": "--dataset",
         "device": "--device", "opt": "--opt", "data_dir": "--data-dir", "amp": "--amp",
         "cache_dir": "--cache-dir"}


def flag(key: str) -> str:
    """How a setting is named to the user: its flag, else its config-file key."""
    return FLAGS.get(key, key)


_DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "nmnist": "N-MNIST"}
_FEEDBACK = {"linear": "all-to-all", "one_to_one": "one-to-one", "conv": "convolutional"}


def describe(config: TrainConfig) -> str:
    """One line naming the network, data and loss that ``config`` really trains, with its
    reference in brackets, e.g. ``{Conv3x3(64)-BN-IF-AvgPool2}x2 + 2 FC-IF, direct encoding
    T=4, on MNIST, mse_rate (SpikingJelly conv_fashion_mnist)`` for csnn with ``pool="avg"``."""
    c = config
    if c.model == "fc-lif":
        net = f"Linear(784, 10) + LIF(tau={2.0 if c.tau is None else c.tau:g})"
    elif c.model == "csnn":
        pool = "AvgPool2" if c.pool == "avg" else "MaxPool2"
        net = f"{{Conv3x3({c.channels or 64})-BN-IF-{pool}}}x2 + 2 FC-IF"
    elif c.model == "nmnist-csnn":
        net = f"12C5-MP2-32C5-MP2-800FC10 with Leaky(beta={0.5 if c.beta is None else c.beta:g})"
    else:
        net = (f"784-{c.hidden or 128}-10 RLeaky(beta={0.9 if c.beta is None else c.beta:g}), "
               f"{_FEEDBACK.get(c.recurrence or 'linear', c.recurrence)} feedback")
    if c.encoding == "frames":
        inputs = "event frames" + ("" if c.T is None else f" (the first {c.T})")
    else:
        inputs = f"{c.encoding} encoding T={c.T}".replace("poisson", "Poisson")
    args = ", ".join(f"{v:g}" for v in c.loss_args.values())
    loss = f"{c.loss}({args})" if args else c.loss
    reference = f" ({RECIPES[c.recipe]['description']})" if c.recipe in RECIPES else ""
    return (f"{net}, {inputs}, on {_DATASET_NAMES.get(c.dataset, c.dataset)}, {loss}"
            f"{reference}")


def recipe_names() -> list[str]:
    return list(RECIPES)


def recipe_defaults(name: str) -> TrainConfig:
    """The defaults of recipe ``name`` (raises :class:`ConfigError` for an unknown name)."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)} "
                          "(`spikeforge recipes` lists them with their defaults).")
    config = TrainConfig(recipe=name, **RECIPES[name])
    config.description = describe(config)
    return config


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """The settings of a ``--config`` TOML file (flat ``key = value`` pairs, field names)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError(f"reading {path} needs Python >= 3.11 or the tomli package; "
                              "run pip install tomli.") from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--config {path} does not exist; give the path of a TOML file.") \
            from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"--config {path} is not a readable TOML file ({err}); fix it.") \
            from None


#: a TrainConfig field's type → what its value must be, in words
_KIND_WORDS = (("bool", "true or false"), ("int", "a whole number"), ("float", "a number"),
               ("dict", "a table of numbers"), ("str", "text"))


def _coerce(key: str, value: Any, where: str) -> Any:
    """Check ``value`` against the type of field ``key`` (ints for floats are fine)."""
    kinds = {f.name: f.type for f in fields(TrainConfig)}
    if key not in kinds or key in ("recipe", "description"):
        known = ", ".join(k for k in kinds if k not in ("recipe", "description"))
        raise ConfigError(f"unknown setting {key!r} in {where}; known settings: {known}.")
    kind = kinds[key]
    if value is None:
        if "None" not in kind:
            raise ConfigError(f"{flag(key)} in {where} cannot be empty.")
        return None
    if kind.startswith("bool"):
        ok = isinstance(value, bool)
    elif kind.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind.startswith("float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind.startswith("dict"):
        ok = isinstance(value, dict) and all(isinstance(v, (int, float)) and not
                                             isinstance(v, bool) for v in value.values())
        value = {k: float(v) for k, v in value.items()} if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        words = next(w for prefix, w in _KIND_WORDS if kind.startswith(prefix))
        raise ConfigError(f"{flag(key)} in {where} must be {words}"
                          f"{' (or left out)' if 'None' in kind else ''}, got {value!r}; "
                          "give it such a value.")
    return value


def resolve(recipe: str, file_settings: dict[str, Any] | None = None,
            overrides: dict[str, Any] | None = None, *,
            config_path: str | os.PathLike | None = None) -> TrainConfig:
    """Recipe defaults, then the TOML file's settings, then the flags (``None`` = not given)."""
    config = recipe_defaults(recipe)
    model = (file_settings or {}).get("model", config.model)
    if model != config.model:
        raise ConfigError(f"model {model!r} in --config {config_path} is not the model of recipe "
                          f"{recipe} ({config.model}); choose the recipe instead (spikeforge "
                          "recipes lists them), or drop the setting.")
    for source, where in ((file_settings or {}, f"--config {config_path}"),
                          (overrides or {}, "the command line")):
        for key, value in source.items():
            if where == "the command line" and value is None:
                continue
            setattr(config, key, _coerce(key, value, where))
    validate(config)
    config.description = describe(config)
    return config


def _positive(config: TrainConfig, key: str, *, allow_none: bool = False) -> None:
    value = getattr(config, key)
    if value is None and allow_none:
        return
    if value is None or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{flag(key)} must be a positive number, got {value}.")


def validate(config: TrainConfig) -> TrainConfig:
    """Raise :class:`ConfigError` naming the first invalid setting; return ``config``."""
    c = config
    if c.model not in MODEL_KEYS:
        raise ConfigError(f"model {c.model!r} is unknown; use one of {', '.join(MODEL_KEYS)}.")
    if c.model == "nmnist-csnn":
        if c.dataset != "nmnist":
            raise ConfigError(f"--dataset {c.dataset!r} does not fit recipe {c.recipe} "
                              "(2x34x34 event frames); use --dataset nmnist.")
    elif c.cache_dir is not None:
        raise no_cache_dir(c.dataset)
    elif c.dataset not in STATIC_DATASETS:
        raise ConfigError(f"--dataset {c.dataset!r} is unknown for recipe {c.recipe}; use one of "
                          f"{', '.join(STATIC_DATASETS)}.")
    for key in ("T", "batch_size", "epochs", "lr"):
        _positive(c, key, allow_none=key == "T" and c.encoding == "frames")
    for key in ("max_batches", "channels", "hidden", "tau"):
        _positive(c, key, allow_none=True)
    if c.tau is not None and c.tau <= 1.0:
        raise ConfigError(f"--tau must be greater than 1 (the LIF decay is 1/tau), got {c.tau}.")
    if not (c.momentum >= 0 and c.momentum < 1):
        raise ConfigError(f"--momentum must lie in [0, 1), got {c.momentum}.")
    if not c.weight_decay >= 0:
        raise ConfigError(f"weight_decay must be >= 0, got {c.weight_decay}.")
    if c.beta is not None and not 0 <= c.beta <= 1:
        raise ConfigError(f"beta must lie in [0, 1], got {c.beta}.")
    for key, allowed in (("opt", OPTIMIZERS), ("scheduler", SCHEDULERS), ("loss", LOSSES),
                         ("readout", ("spikes", "membrane")),
                         ("encoding", ("poisson", "direct", "frames"))):
        if getattr(c, key) not in allowed:
            raise ConfigError(f"{flag(key)} must be one of {', '.join(allowed)}, "
                              f"got {getattr(c, key)!r}.")
    if (c.encoding == "frames") != (c.dataset == "nmnist"):
        raise ConfigError(f"encoding {c.encoding!r} does not fit dataset {c.dataset!r}; frames "
                          "go with nmnist, poisson/direct with static images.")
    for key in ("tau", "channels", "pool", "beta", "hidden", "recurrence"):
        if getattr(c, key) is not None and key not in MODEL_KEYS[c.model]:
            raise ConfigError(f"{flag(key)} does not apply to model {c.model}; it takes "
                              f"{', '.join(flag(k) for k in MODEL_KEYS[c.model])}.")
    if c.seed < 0 or c.seed >= 2**31:
        raise ConfigError(f"--seed must lie in [0, 2**31), got {c.seed}.")
    if c.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {c.workers}.")
    if c.readout == "membrane" and c.model not in ("rleaky", "nmnist-csnn"):
        raise ConfigError(f"readout 'membrane' needs a model with a membrane output "
                          f"(rleaky, nmnist-csnn), not {c.model}.")
    if c.loss == "mse_membrane" and c.model not in ("rleaky", "nmnist-csnn"):
        raise ConfigError(f"loss mse_membrane needs a model with a membrane output "
                          f"(rleaky, nmnist-csnn), not {c.model}.")
    return c


#: Settings added to :class:`TrainConfig` after runs were first saved: a ``config.json`` written
#: before them lacks them and ran as their default does (``cache_dir`` None: the default cache).
ADDED_LATER = ("cache_dir",)


def no_cache_dir(dataset: str) -> ConfigError:
    """The refusal of ``--cache-dir`` for a dataset without a frame cache (MNIST, Fashion-MNIST)."""
    return ConfigError(f"--cache-dir is where N-MNIST's event frames are cached; {dataset} needs "
                       "none, so leave --cache-dir out.")


def from_dict(data: dict[str, Any], where: str) -> TrainConfig:
    """A :class:`TrainConfig` from a saved ``config.json`` dict (validated); the settings of
    :data:`ADDED_LATER` may be missing (an older run)."""
    names = {f.name for f in fields(TrainConfig)}
    if not isinstance(data, dict) or "recipe" not in data or not set(data) <= names:
        raise ConfigError(f"{where} is not a spikeforge training config; point to a run "
                          "directory written by `spikeforge train`.")
    missing = sorted(names - set(data) - {"description", *ADDED_LATER})
    if missing:
        raise ConfigError(f"{where} lacks the setting{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(missing)}, which the run was trained with; the file is "
                          "damaged, restore it from a copy.")
    if data["recipe"] not in RECIPES:
        raise ConfigError(f"{where} names recipe {data['recipe']!r}, which is not one of "
                          f"{', '.join(RECIPES)}; point to a run written by `spikeforge train`.")
    base = TrainConfig(recipe=data["recipe"])
    for key, value in data.items():
        if key not in ("recipe", "description"):
            setattr(base, key, _coerce(key, value, where))
    base.description = str(data.get("description", ""))
    return validate(base)
