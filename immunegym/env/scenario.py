"""Scenarios: what an environment id means (patients, episode, actions, noise, reward).

A :class:`Scenario` is plain configuration. The two base ids use the defaults; TOML files in
the top-level ``envs/`` folder register further ids (:mod:`.registration`), and any field can
be overridden as a keyword of ``gym.make``:

.. code-block:: toml

    id = "ImmuneWorld-Melanoma-v0"
    simulator = "world"            # "world" (the learned model) or "sim" (ImmuneSim)

    [patients]
    cancer_types = { melanoma = 1.0 }
    source = "sim"                 # ImmuneSim virtual patients, or a path to an .h5ad cohort
    bank_size = 512

    [episode]
    horizon = 16                   # treatment cycles
    cycle_days = 21

    [actions]
    type = "multidiscrete"         # "multidiscrete", "multibinary" or "menu"

    [observation]
    biopsy_cells = 1000            # 0: noise-free compositions
    imaging_cv = 0.05

    [reward]
    tumor = 1.0
"""

from __future__ import annotations

import math
import numbers
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from immunegym.data.vocab import THERAPIES
from immunegym.sim.pk import RADIO_STANDARD_GY
from immunegym.sim.therapy import MAX_DOSE

ACTION_TYPES: tuple[str, ...] = ("multidiscrete", "multibinary", "menu")
OBSERVATION_TYPES: tuple[str, ...] = ("flat", "dict")
SIMULATORS: tuple[str, ...] = ("world", "sim")

DEFAULT_MENU: tuple[str, ...] = (
    "none", "anti_pd1", "anti_ctla4", "anti_pd1+anti_ctla4", "chemo", "chemo+anti_pd1",
    "radio", "radio+anti_pd1", "targeted", "targeted+anti_pd1",
)
"""Regimens of the ``"menu"`` (Discrete) action type, each at the standard dose."""


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the per-cycle reward.

    ``reward = tumor * (log1p SOD before - log1p SOD after) + survival * alive
    - death * died - progression * progressed - toxicity * cost``.
    """

    tumor: float = 1.0
    survival: float = 0.05
    death: float = 5.0
    progression: float = 1.0
    toxicity: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """Everything an environment id fixes.

    Attributes
    ----------
    cancer_types
        Cancer type -> weight of the patient mix; empty for every calibrated type equally.
    patient_source
        ``"sim"`` (ImmuneSim virtual patients) or a path to an ``.h5ad`` cohort (ImmuneWorld
        only: baseline biopsies of real or generated patients as digital twins).
    bank_size, bank_seed
        Patients drawn once when the env is built; resets pick from them.
    horizon, cycle_days
        Cycles per episode (truncation) and days per cycle.
    terminate_on_progression
        End the episode at RECIST progression (otherwise only death ends it).
    action_type, dose_levels, menu
        Action space: per-therapy dose levels (``dose_levels[0]`` must be 0), on/off at the
        standard dose, or a menu of regimens.
    observation_type
        ``"flat"`` Box or ``"dict"``.
    biopsy_cells, imaging_cv, biopsy_every, scan_every
        Observation noise (cells counted per biopsy, 0 for noise-free; imaging
        coefficient of variation) and schedule (every this many cycles).
    reward
        :class:`RewardWeights`.
    """

    cancer_types: dict[str, float] = field(default_factory=dict)
    patient_source: str = "sim"
    bank_size: int = 512
    bank_seed: int = 0
    horizon: int = 16
    cycle_days: int = 21
    terminate_on_progression: bool = True
    action_type: str = "multidiscrete"
    dose_levels: tuple[float, ...] = (0.0, 0.5, 1.0)
    menu: tuple[str, ...] = DEFAULT_MENU
    observation_type: str = "flat"
    biopsy_cells: int = 1000
    imaging_cv: float = 0.05
    biopsy_every: int = 1
    scan_every: int = 2
    reward: RewardWeights = field(default_factory=RewardWeights)

    def __post_init__(self) -> None:
        def bad(name: str, value: object, expected: str) -> ValueError:
            return ValueError(f"{name}: got {value!r}; expected {expected}")

        def integer(value: object) -> bool:
            return isinstance(value, numbers.Integral) and not isinstance(value, bool)

        if not integer(self.horizon) or not 1 <= self.horizon <= 100:
            raise bad("horizon", self.horizon, "an integer number of cycles in 1..100")
        if not integer(self.cycle_days) or not 7 <= self.cycle_days <= 42:
            raise bad("cycle_days", self.cycle_days, "an integer in 7..42")
        if not integer(self.bank_size) or self.bank_size < 1:
            raise bad("bank_size", self.bank_size, "an integer >= 1")
        if not integer(self.bank_seed):
            raise bad("bank_seed", self.bank_seed, "an integer")
        if not (isinstance(self.patient_source, (str, os.PathLike))
                and str(self.patient_source)):
            raise bad("patient_source", self.patient_source, "'sim' or a path to an .h5ad")
        if not isinstance(self.terminate_on_progression, bool):
            raise bad("terminate_on_progression", self.terminate_on_progression,
                      "true or false")
        if self.action_type not in ACTION_TYPES:
            raise bad("action_type", self.action_type, f"one of {list(ACTION_TYPES)}")
        if self.observation_type not in OBSERVATION_TYPES:
            raise bad("observation_type", self.observation_type,
                      f"one of {list(OBSERVATION_TYPES)}")
        levels = tuple(self.dose_levels)
        if (len(levels) < 2 or levels[0] != 0 or any(not math.isfinite(v) or v < 0 for v in levels)
                or list(levels) != sorted(set(levels))):
            raise bad("dose_levels", levels, "increasing non-negative levels starting at 0")
        # A level applies to every therapy, so the lowest per-therapy maximum bounds it.
        top = min(MAX_DOSE[t] / (RADIO_STANDARD_GY if t == "radio" else 1.0) for t in THERAPIES)
        if levels[-1] > top:
            raise bad("dose_levels", levels, f"levels <= {top:g} x the standard dose (the "
                      "allowed maximum of chemotherapy; see immunegym.sim.therapy.MAX_DOSE)")
        if not self.menu:
            raise bad("menu", self.menu, "at least one regimen")
        for regimen in self.menu:
            parts = [] if regimen == "none" else regimen.split("+")
            unknown = [p for p in parts if p not in THERAPIES]
            if unknown:
                raise bad("menu", regimen, f"therapies from {list(THERAPIES)} joined by '+', "
                          "or 'none'")
        if not integer(self.biopsy_cells) or self.biopsy_cells < 0:
            raise bad("biopsy_cells", self.biopsy_cells, "an integer >= 0 (0: noise-free)")
        if not (math.isfinite(self.imaging_cv) and 0 <= self.imaging_cv <= 1):
            raise bad("imaging_cv", self.imaging_cv, "a number in [0, 1]")
        for name in ("biopsy_every", "scan_every"):
            value = getattr(self, name)
            if not integer(value) or value < 1:
                raise bad(name, value, "an integer >= 1 (cycles)")
        weights = dict(self.cancer_types)
        if any(not (isinstance(w, (int, float)) and w >= 0) for w in weights.values()) or (
                weights and sum(weights.values()) <= 0):
            raise bad("cancer_types", weights, "non-negative weights with a positive sum")
        if not isinstance(self.reward, RewardWeights):
            raise bad("reward", self.reward, "RewardWeights (or a table of its fields)")

    def updated(self, **overrides: Any) -> Scenario:
        """A copy with fields replaced; ``reward`` may be a dict of weights."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown scenario argument(s) {unknown}; expected some of "
                            f"{sorted(known)}")
        if isinstance(overrides.get("reward"), dict):
            overrides["reward"] = _reward(overrides["reward"])
        for name in ("dose_levels", "menu"):
            if name in overrides:
                overrides[name] = tuple(overrides[name])
        return replace(self, **overrides)


def _reward(table: dict[str, Any]) -> RewardWeights:
    known = {f.name for f in fields(RewardWeights)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"reward: unknown weight(s) {unknown}; expected some of {sorted(known)}")
    values = {}
    for key, value in table.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"reward.{key}: got {value!r}; expected a finite number")
        values[key] = float(value)
    return RewardWeights(**values)


_SECTIONS: dict[str, dict[str, str]] = {
    "patients": {"cancer_types": "cancer_types", "source": "patient_source",
                 "bank_size": "bank_size", "bank_seed": "bank_seed"},
    "episode": {"horizon": "horizon", "cycle_days": "cycle_days",
                "terminate_on_progression": "terminate_on_progression"},
    "actions": {"type": "action_type", "dose_levels": "dose_levels", "menu": "menu"},
    "observation": {"type": "observation_type", "biopsy_cells": "biopsy_cells",
                    "imaging_cv": "imaging_cv", "biopsy_every": "biopsy_every",
                    "scan_every": "scan_every"},
}


@dataclass(frozen=True)
class ScenarioFile:
    """A scenario read from TOML: the id it registers, its simulator and its settings."""

    id: str
    simulator: str
    scenario: Scenario
    path: Path


def load_scenario_file(path: str | Path) -> ScenarioFile:
    """Read and validate one ``envs/*.toml`` scenario.

    Raises
    ------
    ValueError
        Naming the file, section and key of anything unknown or invalid.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err})") from None
    env_id = data.pop("id", None)
    if not isinstance(env_id, str) or not env_id.endswith(tuple(f"-v{i}" for i in range(10))):
        raise ValueError(f"{path}: id: got {env_id!r}; expected a gym id like 'Name-v0'")
    simulator = data.pop("simulator", "world")
    if simulator not in SIMULATORS:
        raise ValueError(f"{path}: simulator: got {simulator!r}; expected one of "
                         f"{list(SIMULATORS)}")
    settings: dict[str, Any] = {}
    for section, table in data.items():
        if section == "reward":
            try:
                settings["reward"] = _reward(table)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
            continue
        if section not in _SECTIONS or not isinstance(table, dict):
            raise ValueError(f"{path}: unknown section [{section}]; expected some of "
                             f"{sorted([*_SECTIONS, 'reward'])}")
        for key, value in table.items():
            if key not in _SECTIONS[section]:
                raise ValueError(f"{path}: [{section}] {key}: unknown key; expected some of "
                                 f"{sorted(_SECTIONS[section])}")
            settings[_SECTIONS[section][key]] = value
    try:
        scenario = Scenario().updated(**settings)
    except (ValueError, TypeError) as err:
        # Name the section and key the user wrote, not the field they map to.
        where = {field_: f"[{section}] {key}" for section, table in _SECTIONS.items()
                 for key, field_ in table.items()}
        field_name = str(err).split(":", 1)[0].split("[", 1)[0]
        prefix = f"{where[field_name]} -> " if field_name in where else ""
        raise ValueError(f"{path}: {prefix}{err}") from None
    return ScenarioFile(env_id, simulator, scenario, path)
