"""Clinical rules both simulators share: the cycle's dose schedule, course caps, toxicity,
treatment holds, delays, reductions, discontinuation, death, biopsies.

Toxicity is ImmuneSim's own model (:mod:`immunegym.sim.toxicity`: Friberg neutrophils,
graded irAEs, other grade >= 3 events, toxicity load, the protocol rules). In ImmuneSim-v0
it runs inside ImmuneSim's daily step; in ImmuneWorld-v0 the world model has no
pharmacology, so :class:`ToxicityCore` runs the same model from the doses given (toxicity
depends on drug exposure and the patient, not on the tumor). Either way a cycle's dose
levels become the same daily schedule (:func:`daily_doses`), the same rules decide what is
actually given, and the same events hold, delay, reduce, stop or kill.

Course caps are the env's own: ipilimumab at most 4 doses, chemotherapy 6 cycles,
radiotherapy 2 courses. Every draw comes from the generator passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from immunegym.data.vocab import THERAPIES
from immunegym.sim.outcomes import RecistTracker
from immunegym.sim.pk import RADIO_STANDARD_GY, Pharmacokinetics
from immunegym.sim.therapy import STANDARD_SCHEDULES
from immunegym.sim.toxicity import (
    DEFAULT_RULES,
    IRAE_RULES,
    ProtocolRules,
    Toxicity,
    ToxPatients,
    ToxState,
    typical_tox_patients,
)
from immunegym.sim.tree import TensorTree

PD1, CTLA4, CHEMO, RADIO, TARGETED = range(len(THERAPIES))

MAX_COURSES: dict[str, float] = {"anti_ctla4": 4, "chemo": 6, "radio": 2}
"""Most cycles a therapy may be given in one episode (ipilimumab x4, platinum 4-6 cycles)."""

RADIO_FRACTIONS = len(STANDARD_SCHEDULES["radio"].days or ())
"""A radiotherapy course: 8 Gy on each of the first three days of the cycle."""

STANDARD_IRAE_RULES = np.array([IRAE_RULES.index(STANDARD_SCHEDULES[t].on_irae)
                                for t in THERAPIES])
"""What a grade 3 irAE does to each therapy under the standard schedules (hold)."""


def daily_doses(levels: torch.Tensor, day: int) -> torch.Tensor:
    """Doses scheduled on day ``day`` of a cycle of dose ``levels`` (``(n, R)``).

    Antibodies and chemotherapy on day 0; radiotherapy ``8 Gy x level`` on days 0-2;
    targeted therapy every day.
    """
    today = torch.zeros_like(levels)
    if day == 0:
        today[:, [PD1, CTLA4, CHEMO]] = levels[:, [PD1, CTLA4, CHEMO]]
    if day < RADIO_FRACTIONS:
        today[:, RADIO] = levels[:, RADIO] * RADIO_STANDARD_GY
    today[:, TARGETED] = levels[:, TARGETED]
    return today


def cycle_levels(given_sum: torch.Tensor, cycle_days: int) -> torch.Tensor:
    """Dose levels actually given in a cycle from the sum of its daily given doses."""
    levels = given_sum.clone()
    levels[:, RADIO] = given_sum[:, RADIO] / (RADIO_STANDARD_GY * RADIO_FRACTIONS)
    levels[:, TARGETED] = given_sum[:, TARGETED] / cycle_days
    return levels


def lapse_pending(tox: ToxState) -> ToxState:
    """``tox`` without doses still waiting from an earlier cycle.

    The env's action is the cycle's order: a chemotherapy dose delayed for neutrophils and
    not given by the end of its cycle lapses, and is given again only if the next cycle
    orders it (once: a new cycle replaces a missed one). Without this a dose the agent no
    longer asked for would be given, above the requested level.
    """
    return replace(tox, pending=torch.zeros_like(tox.pending))


def open_therapies(tox: ToxState, alive: torch.Tensor, day: torch.Tensor) -> torch.Tensor:
    """``(n, R)`` bool: alive, not stopped, and not on hold on ``day``."""
    return alive[:, None] & ~tox.stopped & (day[:, None] >= tox.hold_until)


@dataclass
class ClinicalState:
    """Per-patient course record of ``n`` episodes (tensors, mutated in place).

    Attributes
    ----------
    cycle
        ``(n,)`` long, cycles completed.
    alive, progressed
        ``(n,)`` bool: alive; RECIST progression seen.
    lesion_excluded
        ``(n,)`` bool: a lesion was irradiated and left the RECIST target sum.
    courses
        ``(n, R)`` cycles each therapy was given.
    exposure
        ``(n, R)`` cumulative dose intensity (standard cycles).
    last_given
        ``(n, R)`` dose levels given in the last cycle.
    """

    cycle: torch.Tensor
    alive: torch.Tensor
    progressed: torch.Tensor
    lesion_excluded: torch.Tensor
    courses: torch.Tensor
    exposure: torch.Tensor
    last_given: torch.Tensor

    @classmethod
    def zeros(cls, n: int, device: torch.device | str) -> ClinicalState:
        r = len(THERAPIES)
        boolean = {"dtype": torch.bool, "device": device}
        return cls(torch.zeros(n, dtype=torch.long, device=device),
                   torch.ones(n, **boolean), torch.zeros(n, **boolean),
                   torch.zeros(n, **boolean), torch.zeros(n, r, device=device),
                   torch.zeros(n, r, device=device), torch.zeros(n, r, device=device))

    def reset_rows(self, rows: torch.Tensor) -> None:
        """Start new episodes in ``rows``."""
        fresh = ClinicalState.zeros(len(rows), self.cycle.device)
        for f in fields(self):
            getattr(self, f.name)[rows] = getattr(fresh, f.name)

    def within_caps(self) -> torch.Tensor:
        """``(n, R)`` bool: the course caps allow the therapy this cycle."""
        caps = torch.tensor([MAX_COURSES.get(t, math.inf) for t in THERAPIES],
                            device=self.cycle.device)
        return self.alive[:, None] & (self.courses < caps)

    def record_cycle(self, given: torch.Tensor, died: torch.Tensor) -> None:
        """Book one cycle: doses given and death."""
        self.courses += (given > 0).float()
        self.exposure += given
        self.last_given = given.clone()
        self.alive &= ~died
        self.cycle += 1


@dataclass(frozen=True)
class DrugState(TensorTree):
    """Drug amounts on board of ``n`` patients (as in ImmuneSim's state)."""

    antibody: torch.Tensor
    chemo: torch.Tensor
    targeted: torch.Tensor


class ToxicityCore:
    """ImmuneSim's pharmacokinetics and toxicity model for ``n`` rows, without a tumor.

    ImmuneWorld-v0 steps it with the dose levels of each cycle: the same daily schedule and
    protocol rules as ImmuneSim decide what is given, and the same events follow.

    Parameters
    ----------
    rates
        ImmuneSim's rates.
    n
        Rows.
    cycle_days
        Days per cycle.
    device
        Torch device.
    rules
        The protocol rules.
    """

    def __init__(self, rates: dict[str, float], n: int, cycle_days: int,
                 device: torch.device | str = "cpu",
                 rules: ProtocolRules = DEFAULT_RULES) -> None:
        self.device = torch.device(device)
        self.n, self.cycle_days, self.rules = n, cycle_days, rules
        self.pk = Pharmacokinetics(rates, self.device)
        self.toxicity = Toxicity(rates, self.device)
        self.patients = typical_tox_patients(rates, n, self.device)
        self.tox = ToxState.start(self.patients)
        self.drugs = DrugState(torch.zeros(n, 2, 2, device=self.device),
                               torch.zeros(n, device=self.device),
                               torch.zeros(n, device=self.device))
        self.day = torch.zeros(n, dtype=torch.long, device=self.device)
        self.irae_rules = torch.as_tensor(STANDARD_IRAE_RULES, device=self.device)

    def memory_bytes(self) -> int:
        return self.tox.nbytes() + self.drugs.nbytes() + self.patients.nbytes()

    def reset_rows(self, rows: torch.Tensor, patients: ToxPatients) -> None:
        """Start ``rows`` untreated, with these patients' toxicity parameters."""
        self.patients = self.patients.put(rows, patients)
        self.tox = self.tox.put(rows, ToxState.start(patients))
        zeros = DrugState(torch.zeros(len(rows), 2, 2, device=self.device),
                          torch.zeros(len(rows), device=self.device),
                          torch.zeros(len(rows), device=self.device))
        self.drugs = self.drugs.put(rows, zeros)
        self.day[rows] = 0

    @torch.no_grad()
    def step(self, levels: torch.Tensor, alive: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
        """One cycle of dose ``levels`` for rows alive at its start; returns the levels
        actually given (``(n, R)``). Doses still delayed from the last cycle lapse
        (:func:`lapse_pending`)."""
        given_sum = torch.zeros_like(levels)
        rules_t = self.irae_rules.expand(self.n, -1)
        self.tox = lapse_pending(self.tox)
        living = alive.clone()
        for d in range(self.cycle_days):
            tox, given = self.toxicity.administer(self.tox, daily_doses(levels, d), self.day,
                                                  living, self.rules)
            drugs = self.drugs
            antibody, chemo, targeted = self.pk.dose(drugs.antibody, drugs.chemo,
                                                     drugs.targeted, given)
            exposure = self.pk.exposure(antibody, chemo, targeted)
            self.tox = self.toxicity.step(tox, self.patients, exposure, given, self.day,
                                          living, rules_t, self.rules, generator)
            self.drugs = DrugState(*self.pk.decay(antibody, chemo, targeted))
            living = living & (self.tox.death_cause == 0)
            given_sum += given
            self.day = self.day + 1
        return cycle_levels(given_sum, self.cycle_days)


def tumor_cells_from_sod(sod_mm: torch.Tensor, rates: dict[str, float]) -> torch.Tensor:
    """Invert ImmuneSim's imaging law ``SOD = c (cells / 1e9)^(1/3)``."""
    return 1e9 * (sod_mm.clamp_min(0) / rates["sod_per_cube_root_gcells"]).pow(3)


def model_death(sod_mm: torch.Tensor, rates: dict[str, float], cycle_days: int,
                generator: torch.Generator) -> torch.Tensor:
    """``(n,)`` bool: tumor-related death within a cycle at burden ``sod_mm``.

    ImmuneSim's hazard ``h (cells / lethal)^2`` per day, held over the cycle.
    """
    burden = tumor_cells_from_sod(sod_mm, rates) / rates["lethal_burden"]
    hazard = rates["death_hazard_at_lethal"] * burden.square() * cycle_days
    u = torch.rand(sod_mm.shape, generator=generator, device=sod_mm.device)
    return u < -torch.expm1(-hazard)


def biopsy(composition: torch.Tensor, cells: int, generator: torch.Generator) -> torch.Tensor:
    """Fractions of ``cells`` cells drawn from ``composition`` (exact multinomial by
    conditional binomials); the composition itself when ``cells == 0``."""
    if cells == 0:
        return composition.clone()
    remaining = torch.full(composition.shape[:-1], float(cells), device=composition.device)
    mass = torch.ones_like(remaining)
    counts = torch.zeros_like(composition)
    for k in range(composition.shape[-1] - 1):
        p = (composition[..., k] / mass.clamp_min(1e-12)).clamp(0.0, 1.0)
        draw = torch.binomial(remaining, p, generator=generator)
        counts[..., k] = draw
        remaining = remaining - draw
        mass = mass - composition[..., k]
    counts[..., -1] = remaining
    return counts / float(cells)


def measure(sod_mm: torch.Tensor, cv: float, generator: torch.Generator) -> torch.Tensor:
    """A radiologist's reading: log-normal noise of coefficient ``cv`` (ImmuneSim's law)."""
    if cv == 0:
        return sod_mm.clone()
    noise = torch.randn(sod_mm.shape, generator=generator, device=sod_mm.device)
    return sod_mm * torch.exp(cv * noise)


def reset_tracker_rows(tracker: RecistTracker, rows: torch.Tensor, baseline: torch.Tensor) -> None:
    """Restart RECIST assessment in ``rows`` from a baseline scan."""
    fresh = RecistTracker.start(baseline)
    for f in fields(tracker):
        getattr(tracker, f.name)[rows] = getattr(fresh, f.name)
