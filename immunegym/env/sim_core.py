"""ImmuneSim-v0's batched simulator: the mechanistic ground truth stepped one cycle at a time.

A cycle's dose levels become a daily calendar (antibodies and chemotherapy on day 0,
radiotherapy 8 Gy x level on days 0-2, targeted therapy every day) and ImmuneSim's pure
daily step (:meth:`immunegym.sim.dynamics.Dynamics.step`) runs ``cycle_days`` times for
every row at once. irAEs and tumor-related death come from ImmuneSim's own pharmacology and
burden hazard.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch

from immunegym.data.vocab import THERAPIES
from immunegym.sim import ImmuneSim
from immunegym.sim.outcomes import sum_of_diameters
from immunegym.sim.state import Patients, SimState
from immunegym.sim.therapy import STANDARD_SCHEDULES

_RADIO = THERAPIES.index("radio")
_TARGETED = THERAPIES.index("targeted")
_RADIO_DAYS = len(STANDARD_SCHEDULES["radio"].days or ())
_RADIO_GY = STANDARD_SCHEDULES["radio"].dose


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
    """

    def __init__(self, sim: ImmuneSim, bank_patients: Patients, bank_state: SimState, n: int,
                 cycle_days: int) -> None:
        self.sim = sim
        self.device = sim.device
        self.n, self.cycle_days = n, cycle_days
        self.bank_patients, self.bank_state = bank_patients, bank_state
        first = torch.zeros(n, dtype=torch.long, device=self.device)
        self.patients = bank_patients.index(first)
        self.state = bank_state.index(first)
        # Standard irAE rules (anti-PD-1 hold, anti-CTLA-4 stop), as the env's action mask.
        self.rules = torch.tensor([1, 2, 0, 0, 0], dtype=torch.long, device=self.device)

    def memory_bytes(self) -> int:
        trees = (self.patients, self.state)
        return sum(getattr(t, f.name).numel() * getattr(t, f.name).element_size()
                   for t in trees for f in fields(t))

    def reset_rows(self, rows: torch.Tensor, bank_rows: torch.Tensor) -> None:
        """Start ``rows`` at day 0 of bank patients ``bank_rows``."""
        self.patients = _put(self.patients, rows, self.bank_patients.index(bank_rows))
        self.state = _put(self.state, rows, self.bank_state.index(bank_rows))

    @torch.no_grad()
    def step(self, dose: torch.Tensor, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance every row one cycle under dose levels ``(n, R)``.

        Returns the true composition ``(n, K)``, true sum of diameters ``(n,)`` in mm, and
        ``(n,)`` bools: died this cycle, first grade >= 3 irAE this cycle.
        """
        dynamics = self.sim.dynamics
        alive0, irae0 = self.state.alive.clone(), self.state.irae.clone()
        day0 = dose.clone()
        day0[:, _RADIO] = dose[:, _RADIO] * _RADIO_GY
        radio_only = torch.zeros_like(dose)
        radio_only[:, _RADIO] = dose[:, _RADIO] * _RADIO_GY
        targeted_only = torch.zeros_like(dose)
        targeted_only[:, _TARGETED] = dose[:, _TARGETED]
        state = self.state
        for d in range(self.cycle_days):
            if d == 0:
                today = day0
            elif d < _RADIO_DAYS:
                today = radio_only + targeted_only
            else:
                today = targeted_only
            state = dynamics.step(state, self.patients, today, generator, self.rules)
        self.state = state
        sod = sum_of_diameters(state.tumor, self.sim.params.rates)
        return (state.composition(), sod, alive0 & ~state.alive, state.irae & ~irae0)


def _put(tree, rows: torch.Tensor, values):
    """``tree`` with ``rows`` replaced by ``values`` (new tensors; the bank is untouched)."""
    out = {}
    for f in fields(tree):
        t = getattr(tree, f.name).clone()
        t[rows] = getattr(values, f.name)
        out[f.name] = t
    return replace(tree, **out)
