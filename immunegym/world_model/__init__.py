"""The world model: a trajectory-aware Transformer over observed tumor timelines.

Three layers, in the scvi-tools way:

* data registration: :func:`build_timelines` turns a registered AnnData (biopsies, imaging,
  therapy cycles) into padded :class:`Timelines`;
* the torch module: :class:`~.module.WorldModelModule` (axial type x time attention);
* the user-facing model: :class:`WorldModel` (``fit`` / ``predict`` / ``rollout`` /
  ``save`` / ``load``), an ensemble of modules.

``load()`` with no path returns the pretrained default shipped in ``immunegym/pretrained``.
"""

from __future__ import annotations

import os

from immunegym.world_model.model import (
    NOISE_MODES,
    Prediction,
    Rollout,
    WorldModel,
    WorldModelConfig,
)
from immunegym.world_model.module import ModuleConfig
from immunegym.world_model.recipe import DEFAULT_RECIPE, Recipe, run_recipe
from immunegym.world_model.timelines import (
    CYCLE_DAYS,
    STANDARD_CYCLE_DOSE,
    Timelines,
    build_timelines,
    concat_timelines,
    split_patients,
)
from immunegym.world_model.training import TrainConfig


def load(path: str | os.PathLike[str] | None = None, *, device: str = "cpu") -> WorldModel:
    """Load a checkpoint directory; the pretrained default when ``path`` is None."""
    return WorldModel.load(path, device=device)


__all__ = [
    "CYCLE_DAYS",
    "DEFAULT_RECIPE",
    "NOISE_MODES",
    "STANDARD_CYCLE_DOSE",
    "ModuleConfig",
    "Prediction",
    "Recipe",
    "Rollout",
    "Timelines",
    "TrainConfig",
    "WorldModel",
    "WorldModelConfig",
    "build_timelines",
    "concat_timelines",
    "load",
    "run_recipe",
    "split_patients",
]
