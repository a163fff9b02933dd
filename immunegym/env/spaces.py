"""Action and observation spaces, and the conversions between them and dose tensors.

Actions (``Scenario.action_type``):

* ``"multidiscrete"``: ``MultiDiscrete([L] * 5)``, a dose level index per therapy in
  :data:`~immunegym.data.vocab.THERAPIES` order; level ``i`` is ``dose_levels[i]`` standard
  cycles (0, 0.5, 1 by default);
* ``"multibinary"``: ``MultiBinary(5)``, each therapy on (standard dose) or off;
* ``"menu"``: ``Discrete(M)``, a regimen from ``Scenario.menu`` at the standard dose.

The action mask has the action's own shape: ``(5, L)`` for multidiscrete (level 0 is always
allowed), ``(5,)`` for multibinary, ``(M,)`` for the menu (a regimen is allowed when all
its therapies are).

Observations (:data:`OBSERVATION_FIELDS`, concatenated in this order for the flat Box).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from immunegym.data.vocab import THERAPIES
from immunegym.env.scenario import Scenario, menu_therapies
from immunegym.ontology import FINE_TYPES
from immunegym.validation import bad

N_THERAPIES = len(THERAPIES)
MAX_LOG_SOD = 8.0
"""``log1p`` sum of diameters is clipped here (~3 m; ImmuneSim's capacity is ~225 mm)."""
PROGRAM_BOUND = 10.0


def observation_fields(n_types: int, n_programs: int, max_exposure: float
                       ) -> dict[str, tuple[int, float, float]]:
    """Field -> (size, low, high) of the observation, in flat order."""
    return {
        "composition": (n_types, 0.0, 1.0),
        "programs": (n_programs, -PROGRAM_BOUND, PROGRAM_BOUND),
        "programs_observed": (1, 0.0, 1.0),
        "burden": (1, 0.0, MAX_LOG_SOD),
        "burden_change": (1, -MAX_LOG_SOD, MAX_LOG_SOD),
        "time": (1, 0.0, 1.0),
        "biopsy_age": (1, 0.0, 1.0),
        "last_therapy": (N_THERAPIES, 0.0, max_exposure),
        "exposure": (N_THERAPIES, 0.0, max_exposure),
        "irae": (1, 0.0, 1.0),
    }


OBSERVATION_DOC = """\
composition (20)       fractions over the fine cell types at the last biopsy (sum 1)
programs (8)           composition-weighted program scores at the last biopsy that
                       measured them (0 if none)
programs_observed (1)  1 if programs were measured
burden (1)             log1p sum of target-lesion diameters (mm) at the last scan
burden_change (1)      burden minus baseline burden
time (1)               cycles elapsed / horizon
biopsy_age (1)         cycles since the last biopsy / horizon
last_therapy (5)       dose levels given last cycle (THERAPIES order)
exposure (5)           cumulative dose, standard cycles
irae (1)               1 after a grade >= 3 immune-related adverse event"""


class ObservationCodec:
    """Builds the (flat or dict) observation space and fills it from tensors."""

    def __init__(self, scenario: Scenario, n_programs: int = 8) -> None:
        max_exposure = float(max(scenario.dose_levels) * scenario.horizon)
        self.fields = observation_fields(len(FINE_TYPES), n_programs, max_exposure)
        self.flat = scenario.observation_type == "flat"
        lows = np.concatenate([np.full(n, lo, np.float32) for n, lo, _ in self.fields.values()])
        highs = np.concatenate([np.full(n, hi, np.float32)
                                for n, _, hi in self.fields.values()])
        self.low, self.high = lows, highs
        if self.flat:
            self.space: spaces.Space = spaces.Box(lows, highs, dtype=np.float32)
        else:
            self.space = spaces.Dict({
                name: spaces.Box(lo, hi, shape=(n,), dtype=np.float32)
                for name, (n, lo, hi) in self.fields.items()})
        self.slices: dict[str, slice] = {}
        start = 0
        for name, (n, _, _) in self.fields.items():
            self.slices[name] = slice(start, start + n)
            start += n
        self.size = start

    def encode(self, parts: dict[str, torch.Tensor]) -> np.ndarray | dict[str, np.ndarray]:
        """``(n, size)`` float32 (or a dict of ``(n, field)``), clipped into the space."""
        flat = torch.cat([parts[name].reshape(parts[name].shape[0], -1).float()
                          for name in self.fields], dim=1).cpu().numpy()
        flat = np.clip(np.nan_to_num(flat, nan=0.0), self.low, self.high).astype(np.float32)
        if self.flat:
            return flat
        return {name: flat[:, s] for name, s in self.slices.items()}


class _OneLine:
    """A value whose ``repr`` fits on one line (numpy breaks long arrays over lines)."""

    def __init__(self, value: Any) -> None:
        self.value = value  # shown only when an action is refused: no cost per step

    def __repr__(self) -> str:
        return " ".join(repr(self.value).split())


class ActionCodec:
    """The action space, validation of actions, dose levels and action masks."""

    def __init__(self, scenario: Scenario) -> None:
        self.kind = scenario.action_type
        self.levels = np.asarray(scenario.dose_levels, dtype=np.float32)
        self.menu = scenario.menu
        if self.kind == "multidiscrete":
            self.space: spaces.Space = spaces.MultiDiscrete([len(self.levels)] * N_THERAPIES)
            self.shape: tuple[int, ...] = (N_THERAPIES,)
        elif self.kind == "multibinary":
            self.space = spaces.MultiBinary(N_THERAPIES)
            self.shape = (N_THERAPIES,)
        else:
            self.space = spaces.Discrete(len(self.menu))
            self.shape = ()
        self.menu_doses = np.zeros((len(self.menu), N_THERAPIES), dtype=np.float32)
        for i, regimen in enumerate(self.menu):
            for therapy in menu_therapies(regimen):
                self.menu_doses[i, THERAPIES.index(therapy)] = 1.0

    def doses(self, actions: Any, n: int, *, single: bool = False) -> np.ndarray:
        """Validate ``n`` actions and return ``(n, 5)`` dose levels (standard cycles).

        ``single``: one action of the space's own shape (a single env); otherwise ``(n,
        *shape)`` (a vector env; with ``n == 1`` the unbatched shape is also accepted).

        Raises
        ------
        ValidationError
            Naming the action and the space: not an array of integers, wrong shape, NaN,
            non-integer, or out of range. Nothing is changed by a refused action.
        """
        space = f"{self.space}" if single else f"{n} actions of {self.space}"
        shape = self.shape if single else (n, *self.shape)
        shown = _OneLine(actions)
        try:
            a = np.asarray(actions)
        except (ValueError, TypeError):
            raise bad("action", shown, f"an array of shape {shape} for {space}") from None
        accepted = [shape] if single else [shape] + ([self.shape] if n == 1 else [])
        if a.shape not in accepted:
            raise bad("action", shown, f"shape {shape} for {space} (got shape {a.shape})")
        a = a.reshape((n, *self.shape))
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a)):
                raise bad("action", shown, f"integers of {space} (it contains NaN or "
                          "infinity)")
            if not np.all(a == np.round(a)):
                raise bad("action", shown, f"integers of {space} (non-integer values "
                          f"{a[a != np.round(a)][:3].tolist()})")
        elif a.dtype.kind not in "iub":
            raise bad("action", shown, f"integers of {space} (got dtype {a.dtype})")
        high = {"multidiscrete": len(self.levels), "multibinary": 2}.get(self.kind,
                                                                          len(self.menu))
        if a.size and (a.min() < 0 or a.max() >= high):
            out = a[(a < 0) | (a >= high)][:3].tolist()
            raise bad("action", shown, f"integers in 0..{high - 1} of {space} (values "
                      f"{out} out of range)")
        a = a.astype(np.int64)
        if self.kind == "multidiscrete":
            return self.levels[a]
        if self.kind == "multibinary":
            return a.astype(np.float32)
        return self.menu_doses[a]

    def mask(self, allowed: np.ndarray) -> np.ndarray:
        """Action mask from ``(n, 5)`` allowed therapies, in the action's shape per row."""
        if self.kind == "multidiscrete":
            m = np.repeat(allowed[:, :, None], len(self.levels), axis=2)
            m[:, :, 0] = True
            return m
        if self.kind == "multibinary":
            return allowed.copy()
        needs = self.menu_doses > 0  # (M, 5)
        return ~np.any(needs[None] & ~allowed[:, None, :], axis=-1)
