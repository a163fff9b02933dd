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
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from immunegym.data.vocab import THERAPIES
from immunegym.regimen_grammar import parse_therapy_set
from immunegym.sim.pk import RADIO_STANDARD_GY
from immunegym.sim.therapy import MAX_DOSE
from immunegym.validation import (
    ValidationError,
    bad,
    boolean,
    choice,
    did_you_mean,
    existing_file,
    integer,
    known_keys,
    number,
    seed,
)

ACTION_TYPES: tuple[str, ...] = ("multidiscrete", "multibinary", "menu")
OBSERVATION_TYPES: tuple[str, ...] = ("flat", "dict")
SIMULATORS: tuple[str, ...] = ("world", "sim")

DEFAULT_MENU: tuple[str, ...] = (
    "none", "anti_pd1", "anti_ctla4", "anti_pd1+anti_ctla4", "chemo", "chemo+anti_pd1",
    "radio", "radio+anti_pd1", "targeted", "targeted+anti_pd1",
)
"""Regimens of the ``"menu"`` (Discrete) action type, each at the standard dose."""

MAX_HORIZON = 100
"""Most cycles an episode may last (about six years of 3-week cycles)."""
MAX_BANK_SIZE = 2**20
"""Most ImmuneSim patients a bank may hold (drawing one costs ~4 KB and ~0.2 ms)."""
MAX_BIOPSY_CELLS = 10**6
"""Most cells counted per biopsy (counts stay exact in float32)."""
MAX_DOSE_LEVELS = 32
"""Most dose levels per therapy (the action mask holds ``5 x levels`` per env)."""
MAX_MENU = 256
"""Most regimens of a ``"menu"`` action space."""


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the per-cycle reward (finite numbers).

    ``reward = tumor * (log1p SOD before - log1p SOD after) + survival * alive
    - death * died - progression * progressed - toxicity * cost``.
    """

    tumor: float = 1.0
    survival: float = 0.05
    death: float = 5.0
    progression: float = 1.0
    toxicity: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, number(f"reward.{f.name}", getattr(self, f.name)))


@dataclass(frozen=True)
class Scenario:
    """Everything an environment id fixes.

    Every field is checked when a scenario is built (:class:`~immunegym.validation.ValidationError`
    naming the field, the value and what is accepted); numpy scalars are normalized to
    Python ones.

    Attributes
    ----------
    cancer_types
        Cancer type -> weight (finite, >= 0, positive sum) of the patient mix; empty for
        every calibrated type equally.
    patient_source
        ``"sim"`` (ImmuneSim virtual patients) or a path to an ``.h5ad`` cohort (ImmuneWorld
        only: baseline biopsies of real or generated patients as digital twins). The file is
        checked (exists, is HDF5) when the environment is built.
    bank_size, bank_seed
        Patients drawn once when the env is built (``1..2**20``; the memory is estimated
        first, see :data:`MAX_BANK_SIZE`) and the seed that draws them (``0..2**63-1``);
        resets pick from them.
    horizon, cycle_days
        Cycles per episode (truncation, ``1..100``) and days per cycle (``7..42``).
    terminate_on_progression
        End the episode at RECIST progression (otherwise only death ends it).
    action_type, dose_levels, menu
        Action space: per-therapy dose levels (increasing, ``dose_levels[0]`` must be 0, at
        most 32 levels up to 1.5 x the standard dose), on/off at the standard dose, or a
        menu of distinct regimens (``"anti_pd1+chemo"``, ``"none"``; at most 256).
    observation_type
        ``"flat"`` Box or ``"dict"``.
    biopsy_cells, imaging_cv, biopsy_every, scan_every
        Observation noise (cells counted per biopsy, ``0..10**6``, 0 for noise-free; imaging
        coefficient of variation in ``[0, 1]``) and schedule (every this many cycles,
        ``1..100``).
    reward
        :class:`RewardWeights` (or a mapping of its fields).
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
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)  # normalize in a frozen dataclass

        put("horizon", integer("horizon", self.horizon, low=1, high=MAX_HORIZON,
                               hint="cycles"))
        put("cycle_days", integer("cycle_days", self.cycle_days, low=7, high=42))
        put("bank_size", integer("bank_size", self.bank_size, low=1, high=MAX_BANK_SIZE))
        put("bank_seed", seed("bank_seed", self.bank_seed))
        source = self.patient_source
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        if not isinstance(source, str) or not source.strip():
            raise bad("patient_source", self.patient_source, "'sim' or a path to an .h5ad")
        put("patient_source", source)
        put("terminate_on_progression",
            boolean("terminate_on_progression", self.terminate_on_progression))
        put("action_type", choice("action_type", self.action_type, ACTION_TYPES))
        put("observation_type", choice("observation_type", self.observation_type,
                                       OBSERVATION_TYPES))
        put("dose_levels", _dose_levels(self.dose_levels))
        put("menu", _menu(self.menu))
        put("biopsy_cells", integer("biopsy_cells", self.biopsy_cells, low=0,
                                    high=MAX_BIOPSY_CELLS, hint="0: noise-free"))
        put("imaging_cv", number("imaging_cv", self.imaging_cv, low=0.0, high=1.0))
        for name in ("biopsy_every", "scan_every"):
            put(name, integer(name, getattr(self, name), low=1, high=MAX_HORIZON,
                              hint="cycles"))
        put("cancer_types", _cancer_types(self.cancer_types))
        if isinstance(self.reward, Mapping):
            put("reward", _reward(self.reward))
        elif not isinstance(self.reward, RewardWeights):
            raise bad("reward", self.reward, "RewardWeights (or a table of its fields)")

    def updated(self, **overrides: Any) -> Scenario:
        """A copy with fields replaced; ``reward`` may be a dict of weights.

        Raises
        ------
        ValidationError
            For an unknown field (with the nearest known one) or an invalid value.
        """
        known_keys("scenario", overrides, [f.name for f in fields(self)])
        return replace(self, **overrides)


def _dose_levels(value: Any) -> tuple[float, ...]:
    expected = (f"a list of 2..{MAX_DOSE_LEVELS} increasing finite levels starting at 0 "
                "(standard doses)")
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise bad("dose_levels", value, expected)
    levels = tuple(value)
    if not 2 <= len(levels) <= MAX_DOSE_LEVELS or any(
            not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v)
            for v in levels):
        raise bad("dose_levels", levels, expected)
    levels = tuple(float(v) for v in levels)
    if levels[0] != 0 or any(b <= a for a, b in zip(levels, levels[1:], strict=False)):
        raise bad("dose_levels", levels, "increasing non-negative levels starting at 0")
    # A level applies to every therapy, so the lowest per-therapy maximum bounds it.
    top = min(MAX_DOSE[t] / (RADIO_STANDARD_GY if t == "radio" else 1.0) for t in THERAPIES)
    if levels[-1] > top:
        raise bad("dose_levels", levels, f"levels <= {top:g} x the standard dose (the "
                  "allowed maximum of chemotherapy; see immunegym.sim.therapy.MAX_DOSE)")
    return levels


def _menu(value: Any) -> tuple[str, ...]:
    expected = (f"a list of 1..{MAX_MENU} distinct therapy sets (therapies from "
                f"{list(THERAPIES)} joined by '+', or 'none')")
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise bad("menu", value, expected)
    menu = tuple(value)
    if not 1 <= len(menu) <= MAX_MENU:
        raise bad("menu", menu, expected)
    seen: dict[frozenset[str], str] = {}
    for regimen in menu:
        if not isinstance(regimen, str):
            raise bad("menu", regimen, expected)
        therapies = menu_therapies(regimen)
        if therapies in seen:
            raise bad("menu", menu, f"distinct regimens ({seen[therapies]!r} and "
                      f"{regimen!r} give the same therapies)")
        seen[therapies] = regimen
    return menu


def menu_therapies(regimen: str) -> frozenset[str]:
    """The therapies of one menu regimen, read by the package's one regimen grammar
    (:func:`immunegym.regimen_grammar.parse_therapy_set`: ``"anti_pd1+chemo"``, ``"PD1"``,
    ``"Combo"``, ``"none"``; no schedules, counts or doses)."""
    return frozenset(parse_therapy_set(regimen, field="menu"))


def _cancer_types(value: Any) -> dict[str, float]:
    expected = "a mapping of cancer type -> non-negative weight with a positive sum"
    if not isinstance(value, Mapping):
        raise bad("cancer_types", value, expected)
    weights: dict[str, float] = {}
    for key, weight in value.items():
        if not isinstance(key, str) or not key:
            raise bad("cancer_types", dict(value), expected)
        weights[key] = number(f"cancer_types[{key!r}]", weight, low=0.0)
    if weights and sum(weights.values()) <= 0:
        raise bad("cancer_types", weights, expected)
    return weights


def _reward(table: Any) -> RewardWeights:
    """:class:`RewardWeights` from a mapping of some of its fields."""
    if not isinstance(table, Mapping):
        raise bad("reward", table, "a table of weights "
                  f"{sorted(f.name for f in fields(RewardWeights))}")
    known_keys("reward", table, [f.name for f in fields(RewardWeights)])
    return RewardWeights(**table)


_GYM_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.:/-]*-v[0-9]+$")

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


def load_scenario_file(path: str | os.PathLike[str]) -> ScenarioFile:
    """Read and validate one ``envs/*.toml`` scenario.

    Raises
    ------
    ValidationError
        Naming the file, section and key of anything unknown or invalid (a missing or
        unreadable file, invalid TOML, an unknown section or key, a wrong type or value).
    """
    path = existing_file("path", path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValidationError(f"{path}: not a UTF-8 text file; expected a TOML scenario") \
            from None
    except tomllib.TOMLDecodeError as err:
        raise ValidationError(f"{path}: not valid TOML ({err})") from None
    env_id = data.pop("id", None)
    if not isinstance(env_id, str) or not _GYM_ID.match(env_id):
        raise ValidationError(f"{path}: id: got {env_id!r}; expected a gym id like "
                              "'Name-v0'")
    simulator = data.pop("simulator", "world")
    if simulator not in SIMULATORS:
        raise ValidationError(f"{path}: simulator: got {simulator!r}; expected one of "
                              f"{list(SIMULATORS)}")
    settings: dict[str, Any] = {}
    for section, table in data.items():
        if section not in (*_SECTIONS, "reward"):
            raise ValidationError(f"{path}: unknown section [{section}]; expected some of "
                                  f"{sorted([*_SECTIONS, 'reward'])} (and the keys id, "
                                  "simulator)")
        if not isinstance(table, dict):
            raise ValidationError(f"{path}: [{section}]: got {table!r}; expected a table "
                                  f"[{section}] of keys")
        if section == "reward":
            settings["reward"] = table
            continue
        for key, value in table.items():
            if key not in _SECTIONS[section]:
                tip = did_you_mean(key, _SECTIONS[section])
                raise ValidationError(f"{path}: [{section}] {key}: unknown key; expected "
                                      f"some of {sorted(_SECTIONS[section])}{tip}")
            settings[_SECTIONS[section][key]] = value
    try:
        scenario = Scenario().updated(**settings)
    except ValidationError as err:
        # Name the section and key the user wrote, not the field they map to.
        where = {field_: f"[{section}] {key}" for section, table in _SECTIONS.items()
                 for key, field_ in table.items()}
        field_name = re.split(r"[:\[.]", str(err), maxsplit=1)[0]
        prefix = f"{where[field_name]} -> " if field_name in where else ""
        raise ValidationError(f"{path}: {prefix}{err}") from None
    return ScenarioFile(env_id, simulator, scenario, path)
