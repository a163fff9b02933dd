"""Clinical rules both simulators share: toxicity, treatment holds, dose caps, death, biopsies.

The rules mirror ImmuneSim's standard schedules (:mod:`immunegym.sim.therapy`): a grade >= 3
immune-related adverse event (irAE) holds anti-PD-1 for 42 days and stops anti-CTLA-4 for
good; ipilimumab is capped at 4 doses, chemotherapy at 6 cycles, radiotherapy at 2 courses.
ImmuneSim draws irAEs from its own pharmacology; the world model has none, so ImmuneWorld
draws them from ImmuneSim's hazards at full receptor occupancy in the cycles an antibody is
given, and tumor-related death from ImmuneSim's burden hazard applied to the predicted sum
of diameters. Every draw comes from the generator passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from immunegym.data.vocab import THERAPIES
from immunegym.sim.outcomes import RecistTracker

PD1, CTLA4, CHEMO, RADIO, TARGETED = range(len(THERAPIES))

MAX_COURSES: dict[str, float] = {"anti_ctla4": 4, "chemo": 6, "radio": 2}
"""Most cycles a therapy may be given in one episode (ipilimumab x4, platinum 4-6 cycles)."""

IRAE_HOLD_DAYS = 42
"""anti-PD-1 is held this long after a grade >= 3 irAE (ImmuneSim's ``irae_hold_days``)."""


@dataclass
class ClinicalState:
    """Per-patient treatment record of ``n`` episodes (tensors, mutated in place).

    Attributes
    ----------
    cycle
        ``(n,)`` long, cycles completed.
    alive, irae, progressed
        ``(n,)`` bool: alive; a grade >= 3 irAE has occurred; RECIST progression seen.
    hold_until
        ``(n, R)`` long, a therapy may not be given before this cycle.
    stopped
        ``(n, R)`` bool, permanently discontinued.
    courses
        ``(n, R)`` cycles each therapy was given.
    exposure
        ``(n, R)`` cumulative dose intensity (standard cycles).
    last_given
        ``(n, R)`` dose levels given in the last cycle.
    irae_susceptibility
        ``(n,)`` multiplier of the irAE hazard (the patient's).
    """

    cycle: torch.Tensor
    alive: torch.Tensor
    irae: torch.Tensor
    progressed: torch.Tensor
    hold_until: torch.Tensor
    stopped: torch.Tensor
    courses: torch.Tensor
    exposure: torch.Tensor
    last_given: torch.Tensor
    irae_susceptibility: torch.Tensor

    @classmethod
    def zeros(cls, n: int, device: torch.device | str) -> ClinicalState:
        r = len(THERAPIES)
        long = {"dtype": torch.long, "device": device}
        boolean = {"dtype": torch.bool, "device": device}
        return cls(torch.zeros(n, **long), torch.ones(n, **boolean), torch.zeros(n, **boolean),
                   torch.zeros(n, **boolean), torch.zeros(n, r, **long),
                   torch.zeros(n, r, **boolean), torch.zeros(n, r, device=device),
                   torch.zeros(n, r, device=device), torch.zeros(n, r, device=device),
                   torch.ones(n, device=device))

    def reset_rows(self, rows: torch.Tensor, irae_susceptibility: torch.Tensor) -> None:
        """Start new episodes in ``rows``."""
        fresh = ClinicalState.zeros(len(rows), self.cycle.device)
        fresh.irae_susceptibility = irae_susceptibility
        for f in fields(self):
            getattr(self, f.name)[rows] = getattr(fresh, f.name)

    def allowed(self) -> torch.Tensor:
        """``(n, R)`` bool: therapies that may be given this cycle."""
        caps = torch.tensor([MAX_COURSES.get(t, math.inf) for t in THERAPIES],
                            device=self.cycle.device)
        return (self.alive[:, None] & ~self.stopped & (self.cycle[:, None] >= self.hold_until)
                & (self.courses < caps))

    def record_cycle(self, given: torch.Tensor, irae_event: torch.Tensor, died: torch.Tensor,
                     cycle_days: int) -> None:
        """Book one cycle: doses given, irAE rules (hold anti-PD-1, stop anti-CTLA-4), death."""
        self.courses += (given > 0).float()
        self.exposure += given
        self.last_given = given.clone()
        hold = math.ceil(IRAE_HOLD_DAYS / cycle_days)
        self.hold_until[:, PD1] = torch.where(irae_event, self.cycle + 1 + hold,
                                              self.hold_until[:, PD1])
        self.stopped[:, CTLA4] |= irae_event
        self.irae |= irae_event
        self.alive &= ~died
        self.cycle += 1


def other_adverse_events(given: torch.Tensor, ae_per_cycle: dict[str, float],
                         generator: torch.Generator) -> torch.Tensor:
    """``(n,)`` non-immune grade >= 3 adverse events this cycle (0, 1, ...).

    A dose level ``x`` of a therapy with per-standard-cycle probability ``p`` gives an event
    with probability ``1 - (1 - p)^x``.
    """
    p = torch.tensor([ae_per_cycle.get(t, 0.0) for t in THERAPIES], device=given.device)
    prob = 1 - torch.pow(1 - p, given)
    u = torch.rand(given.shape, generator=generator, device=given.device)
    return (u < prob).float().sum(-1)


def model_irae(given: torch.Tensor, susceptibility: torch.Tensor, already: torch.Tensor,
               rates: dict[str, float], cycle_days: int,
               generator: torch.Generator) -> torch.Tensor:
    """``(n,)`` bool: a first grade >= 3 irAE this cycle, for simulators without pharmacology.

    ImmuneSim's daily hazard ``s (h_pd1 o_pd1 + h_ctla4 o_ctla4 + i h_ctla4 o_pd1 o_ctla4)``
    with occupancy ``o`` = the dose level (capped at 1) in cycles the antibody is given.
    """
    o_pd1 = given[:, PD1].clamp(max=1.0)
    o_ctla4 = given[:, CTLA4].clamp(max=1.0)
    daily = susceptibility * (rates["irae_hazard_pd1"] * o_pd1
                              + rates["irae_hazard_ctla4"] * o_ctla4
                              + rates["irae_interaction"] * rates["irae_hazard_ctla4"]
                              * o_pd1 * o_ctla4)
    u = torch.rand(daily.shape, generator=generator, device=given.device)
    return (u < -torch.expm1(-daily * cycle_days)) & ~already


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
