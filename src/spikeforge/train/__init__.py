"""Training: recipes (defaults), the epoch loop, atomic checkpoints, the run directory.

``fit(config, out_dir)`` runs a whole training; ``load_run(run_dir)`` reads a finished (or
running) one back for evaluation, prediction, figures and export.
"""

from .recipes import RECIPES, TrainConfig, recipe_defaults, resolve
from .run import LoadedRun, load_run
from .trainer import fit

__all__ = ["RECIPES", "LoadedRun", "TrainConfig", "fit", "load_run", "recipe_defaults",
           "resolve"]
