"""The world model: a latent state-space model over observed tumor timelines.

Three layers, in the scvi-tools way:

* data registration: :func:`build_timelines` turns a registered AnnData (biopsies, imaging,
  therapy cycles) into padded :class:`Timelines`; :func:`simulate_counts_cohort` makes
  synthetic training cohorts (counts only) with the hidden truth on their grid;
* the torch module: :class:`~.latent.LatentWorldModule` (GRU filter and smoother, per-drug
  dynamics, a lab-aware observation model);
* the user-facing model: :class:`WorldModel` (``fit`` / ``filter`` / ``predict`` /
  ``rollout`` / ``smooth`` / ``save`` / ``load``), an ensemble of modules.

``load()`` with no path returns the pretrained default shipped in ``immunegym/pretrained``.
"""

from __future__ import annotations

import os

from immunegym.world_model.fitting import TrainConfig
from immunegym.world_model.latent import LatentConfig
from immunegym.world_model.model import (
    NOISE_MODES,
    Prediction,
    Rollout,
    Smoothed,
    WorldModel,
    WorldModelConfig,
)
from immunegym.world_model.recipe import DEFAULT_RECIPE, Recipe, run_recipe
from immunegym.world_model.synthetic import GridTruth, grid_truth, simulate_counts_cohort
from immunegym.world_model.timelines import (
    CYCLE_DAYS,
    STANDARD_CYCLE_DOSE,
    Timelines,
    build_timelines,
    concat_timelines,
    split_patients,
)


def load(path: str | os.PathLike[str] | None = None, *, device: str = "cpu") -> WorldModel:
    """Load a checkpoint directory; the pretrained default when ``path`` is None.

    ``device`` is ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``. The checkpoint is
    checked before use (config keys and types, the cell-type order, every tensor's shape and
    finiteness); a bad one raises :class:`~immunegym.validation.ValidationError` naming the
    file and key. Nothing is unpickled.
    """
    return WorldModel.load(path, device=device)


__all__ = [
    "CYCLE_DAYS",
    "DEFAULT_RECIPE",
    "NOISE_MODES",
    "STANDARD_CYCLE_DOSE",
    "GridTruth",
    "LatentConfig",
    "Prediction",
    "Recipe",
    "Rollout",
    "Smoothed",
    "Timelines",
    "TrainConfig",
    "WorldModel",
    "WorldModelConfig",
    "build_timelines",
    "concat_timelines",
    "grid_truth",
    "load",
    "run_recipe",
    "simulate_counts_cohort",
    "split_patients",
]
