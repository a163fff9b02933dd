"""ImmuneSim-v0's batched simulator: the mechanistic ground truth stepped one cycle at a time.

A cycle's dose levels become the daily schedule of :func:`~.clinical.daily_doses`
(antibodies and chemotherapy on day 0, radiotherapy 8 Gy x level on days 0-2, targeted
therapy every day) and ImmuneSim's pure daily step
(:meth:`immunegym.sim.dynamics.Dynamics.step`) runs ``cycle_days`` times for every row at
once. Toxicity, the protocol rules (holds, delays, reductions, stops) and death come from
ImmuneSim's own model inside that step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from immunegym.env.clinical import (
    RADIO,
    STANDARD_IRAE_RULES,
    cycle_levels,
    daily_doses,
    lapse_pending,
)
from immunegym.sim import ImmuneSim
from immunegym.sim.outcomes import sum_of_diameters
from immunegym.sim.state import Patients, SimState
from immunegym.sim.toxicity import DEFAULT_RULES, ProtocolRules


@dataclass
class CycleOutcome:
    """What one cycle did to every row (tensors ``(n,)`` unless noted)."""

    composition: torch.Tensor  # (n, K) true composition
    sod_mm: torch.Tensor       # true sum of diameters of every lesion
    target_sod_mm: torch.Tensor  # without the irradiated lesion (the RECIST target sum)
    given: torch.Tensor        # (n, R) dose levels actually given
    new_lesion: torch.Tensor   # a radiotherapy course treated a new lesion


class SimCore:
    """Batched ImmuneSim of ``n`` rows.

    Parameters
    ----------
    sim
        The simulator (parameters and device; its generator is not used: every draw comes
        from the generator passed to :meth:`step`).
    bank_patients, bank_state
        The patient bank's hidden parameters and day-0 states; rows copy from them.
    n
        Rows.
    cycle_days
        Days per step.
    rules
        The protocol rules.
    """

    def __init__(self, sim: ImmuneSim, bank_patients: Patients, bank_state: SimState, n: int,
                 cycle_days: int, rules: ProtocolRules = DEFAULT_RULES) -> None:
        self.sim = sim
        self.device = sim.device
        self.n, self.cycle_days, self.rules = n, cycle_days, rules
        self.bank_patients, self.bank_state = bank_patients, bank_state
        first = torch.zeros(n, dtype=torch.long, device=self.device)
        self.patients = bank_patients.index(first)
        self.state = bank_state.index(first)
        self.irae_rules = torch.as_tensor(STANDARD_IRAE_RULES, device=self.device)

    def memory_bytes(self) -> int:
        return self.patients.nbytes() + self.state.nbytes()

    def reset_rows(self, rows: torch.Tensor, bank_rows: torch.Tensor) -> None:
        """Start ``rows`` at day 0 of bank patients ``bank_rows``."""
        self.patients = self.patients.put(rows, self.bank_patients.index(bank_rows))
        self.state = self.state.put(rows, self.bank_state.index(bank_rows))

    @torch.no_grad()
    def step(self, levels: torch.Tensor, generator: torch.Generator) -> CycleOutcome:
        """Advance every row one cycle under dose ``levels`` (``(n, R)``); doses still
        delayed from the last cycle lapse (:func:`~.clinical.lapse_pending`)."""
        dynamics = self.sim.dynamics
        state = replace(self.state, tox=lapse_pending(self.state.tox))
        new_lesion = torch.zeros(self.n, dtype=torch.bool, device=self.device)
        given = torch.zeros_like(levels)
        for d in range(self.cycle_days):
            new_course = dynamics.new_course(state)
            state = dynamics.step(state, self.patients, daily_doses(levels, d), generator,
                                  self.irae_rules, rules=self.rules)
            new_lesion |= new_course & (state.given[:, RADIO] > 0)
            given += state.given
        self.state = state
        rates = self.sim.params.rates
        return CycleOutcome(state.composition(), sum_of_diameters(state.tumor, rates),
                            sum_of_diameters(state.target_tumor, rates),
                            cycle_levels(given, self.cycle_days), new_lesion)
