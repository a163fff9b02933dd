"""What an agent is to the evaluation: a :class:`Policy`, and plan-following policies.

A policy is told when its episodes start (:class:`EpisodeStart`: only what a clinic knows,
the diagnosis and the baseline biopsy and scan) and then picks every row's action each
cycle from the observation and the info. Planners and guideline regimens decide a per-cycle
dose plan up front; :class:`PlanFollower` turns such plans into the env's actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from immunegym.env.scenario import Scenario
from immunegym.validation import ValidationError, bad


@dataclass
class EpisodeStart:
    """What a policy may know when its episodes start (one entry per env row).

    Attributes
    ----------
    cancer_type, patient_id
        ``(n,)`` strings: the diagnosis and the patient's id.
    composition
        ``(n, K)`` the baseline biopsy's fractions over the fine types.
    sod_mm
        ``(n,)`` the baseline scan's sum of target-lesion diameters (mm).
    scenario
        The scenario the episodes run under (horizon, actions, reward).
    """

    cancer_type: np.ndarray
    patient_id: np.ndarray
    composition: np.ndarray
    sod_mm: np.ndarray
    scenario: Scenario


@runtime_checkable
class Policy(Protocol):
    """An agent the evaluation can run: ``start`` once, then ``act`` every cycle."""

    name: str

    def start(self, episodes: EpisodeStart) -> None:
        """New episodes begin for every row (plan here if the policy plans)."""

    def act(self, obs: Any, infos: dict[str, np.ndarray]) -> np.ndarray:
        """Actions of every row (the env's batched action space)."""


def dose_levels_to_actions(doses: np.ndarray, scenario: Scenario) -> np.ndarray:
    """``(..., R)`` dose multiples -> MultiDiscrete level indices (the nearest level).

    Raises
    ------
    ValueError
        If the scenario's action type is not ``"multidiscrete"``, or a dose is further than
        0.01 from every level (the plan asks for a dose the env cannot give).
    """
    if not isinstance(scenario, Scenario):
        raise bad("scenario", scenario, "a Scenario")
    if scenario.action_type != "multidiscrete":
        raise ValidationError(f"action_type: plans act through 'multidiscrete' dose levels, got "
                         f"{scenario.action_type!r}")
    levels = np.asarray(scenario.dose_levels, dtype=np.float64)
    doses = np.asarray(doses, dtype=np.float64)
    if not np.isfinite(doses).all():
        raise bad("doses", "<plans with NaN or infinite doses>", "finite dose multiples")
    gap = np.abs(doses[..., None] - levels)
    index = gap.argmin(-1)
    if np.any(gap.min(-1) > 0.01):
        off = np.unique(doses[gap.min(-1) > 0.01])[:3]
        raise ValidationError(f"doses: {off.tolist()} are not dose levels of the scenario "
                         f"{list(scenario.dose_levels)}")
    return index.astype(np.int64)


class PlanFollower:
    """Gives each row the dose of its plan for the row's current cycle.

    Subclasses return ``(n, H, R)`` dose multiples from :meth:`make_plans`, called once per
    baseline (a second :meth:`start` with the same patients and observations reuses the
    plans); cycles past the plan get no therapy. The env withholds what its rules forbid.
    """

    name = "plan"

    def __init__(self) -> None:
        self.plans: np.ndarray | None = None
        self.scenario: Scenario | None = None
        self._planned_for = b""

    def start(self, episodes: EpisodeStart) -> None:
        if not isinstance(episodes, EpisodeStart):
            raise bad("episodes", episodes, "an EpisodeStart (what the clinic knows at the "
                      "start: cancer type, baseline biopsy and scan)")
        self.scenario = episodes.scenario
        # Judging runs the same patients in two simulators: plan once per baseline.
        key = (episodes.patient_id.tobytes() + episodes.composition.tobytes()
               + episodes.sod_mm.tobytes())
        if self.plans is None or key != self._planned_for:
            self.plans = self.make_plans(episodes)
            self._planned_for = key
        n, h = len(episodes.cancer_type), episodes.scenario.horizon
        if self.plans.shape[:2] != (n, h):
            raise ValidationError(f"plans: shape {self.plans.shape}; expected ({n}, {h}, R)")

    def make_plans(self, episodes: EpisodeStart) -> np.ndarray:
        """``(n, H, R)`` dose multiples per row and cycle."""
        raise NotImplementedError

    def act(self, obs: Any, infos: dict[str, np.ndarray]) -> np.ndarray:
        if self.plans is None or self.scenario is None:
            raise RuntimeError("act() before start(): the policy has no plans yet")
        cycle = np.asarray(infos["cycle"])
        h = self.plans.shape[1]
        doses = self.plans[np.arange(len(cycle)), np.minimum(cycle, h - 1)]
        doses = np.where((cycle < h)[:, None], doses, 0.0)
        return dose_levels_to_actions(doses, self.scenario)
