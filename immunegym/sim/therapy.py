"""Therapies, their standard schedules, and regimens as per-day dose calendars.

A :class:`TherapySchedule` says when one therapy is given (every ``interval_days`` for
``n_doses`` doses from ``start_day``, or on explicit ``days`` with per-dose ``doses``), at what
dose (a multiple of the standard dose; Gy per fraction for radiotherapy), and what a grade
>= 3 immune-related adverse event does to it (``on_irae``: continue, hold or stop). A
:class:`Regimen` is a set of schedules; :func:`parse_regimen` turns ``"anti_pd1+anti_ctla4"``
into the standard schedules of its therapies, and :func:`dose_calendar` lays a regimen out as
an ``(n_days, n_therapies)`` array that the step function reads one day at a time.

Standard schedules (SCIENCE.md): pembrolizumab 200 mg q3w up to 35 cycles; ipilimumab 3 mg/kg
q3w x4; platinum doublet chemotherapy q3w x4; stereotactic radiotherapy 8 Gy x 3 on
consecutive days; targeted therapy (oral) daily until progression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from immunegym.data.vocab import NO_THERAPY, THERAPIES
from immunegym.sim.toxicity import IRAE_RULES

MAX_DOSE: dict[str, float] = {
    # Pembrolizumab 10 mg/kg (~750 mg, KEYNOTE-002/-010) is 3.75 x 200 mg.
    "anti_pd1": 4.0,
    # Ipilimumab 10 mg/kg (CA184-169, adjuvant EORTC 18071) is 3.3 x 3 mg/kg.
    "anti_ctla4": 3.5,
    # Cytotoxic doses are limited by the marrow: no regimen goes beyond ~1.5 x standard.
    "chemo": 1.5,
    # Gy per fraction: single-fraction radiosurgery reaches ~24 Gy.
    "radio": 24.0,
    # Oral targeted therapy: dose escalation beyond 2 x is not given.
    "targeted": 2.0,
}
"""Largest dose per administration (a multiple of the standard dose; Gy for radiotherapy).
Higher doses are an input error: beyond the standard dose, checkpoint occupancy is saturated
and only toxicity rises."""


def check_dose(therapy: str, dose: float, field: str = "dose") -> float:
    """``dose`` as a float, or a clear error if it is negative, not finite or above
    :data:`MAX_DOSE`."""
    if isinstance(dose, bool) or not isinstance(dose, (int, float)) or not math.isfinite(dose):
        raise ValueError(f"{field}: expected a finite number for {therapy}, got {dose!r}")
    if dose < 0:
        raise ValueError(f"{field}: expected a non-negative dose for {therapy}, got {dose}")
    if dose > MAX_DOSE[therapy]:
        unit = "Gy per fraction" if therapy == "radio" else "x the standard dose"
        raise ValueError(f"{field}: {dose} for {therapy} is above the allowed maximum of "
                         f"{MAX_DOSE[therapy]} {unit}")
    return float(dose)


@dataclass(frozen=True)
class TherapySchedule:
    """When and how much of one therapy is given.

    Attributes
    ----------
    therapy
        A therapy id from :data:`immunegym.data.vocab.THERAPIES`.
    interval_days
        Days between doses of a repeating schedule.
    n_doses
        Maximum number of doses of a repeating schedule.
    dose
        Dose as a multiple of the standard dose (Gy per fraction for ``radio``).
    start_day
        Day of the first dose (day 0 is the baseline scan).
    days
        Explicit dose days for a custom schedule; overrides the repeating pattern.
    doses
        Per-dose amounts for ``days`` (defaults to ``dose`` for each).
    on_irae
        What a grade 3 immune-related adverse event does: ``"continue"``, ``"hold"`` (pause
        the protocol's ``irae_hold_days``, then resume) or ``"stop"`` (permanent
        discontinuation). Grade 4 and recurrent grade 3 events always stop checkpoint
        inhibitors (:mod:`immunegym.sim.toxicity`).
    """

    therapy: str
    interval_days: int = 21
    n_doses: int = 1
    dose: float = 1.0
    start_day: int = 0
    days: tuple[int, ...] | None = None
    doses: tuple[float, ...] | None = None
    on_irae: str = "continue"

    def __post_init__(self) -> None:
        if self.therapy not in THERAPIES:
            raise ValueError(
                f"therapy: unknown id {self.therapy!r}; expected one of {list(THERAPIES)}"
            )
        if self.on_irae not in IRAE_RULES:
            raise ValueError(f"on_irae: got {self.on_irae!r}; expected one of {IRAE_RULES}")
        check_dose(self.therapy, self.dose)
        if self.interval_days < 1:
            raise ValueError(f"interval_days: expected >= 1, got {self.interval_days}")
        if self.n_doses < 0:
            raise ValueError(f"n_doses: expected >= 0, got {self.n_doses}")
        if self.start_day < 0:
            raise ValueError(f"start_day: expected >= 0, got {self.start_day}")
        if self.days is not None:
            if any(d < 0 for d in self.days):
                raise ValueError(f"days: expected non-negative days, got {self.days}")
            if self.doses is not None and len(self.doses) != len(self.days):
                raise ValueError(
                    f"doses: expected one dose per day ({len(self.days)}), got {len(self.doses)}"
                )
        if self.doses is not None:
            if self.days is None:
                raise ValueError("doses: per-dose amounts need explicit days")
            for amount in self.doses:
                check_dose(self.therapy, amount, "doses")

    def dose_days(self) -> list[tuple[int, float]]:
        """(day, dose) pairs of this schedule, in order."""
        if self.days is not None:
            amounts = self.doses if self.doses is not None else (self.dose,) * len(self.days)
            return sorted(zip(self.days, amounts, strict=True))
        return [(self.start_day + k * self.interval_days, self.dose) for k in range(self.n_doses)]

    def scaled(self, dose: float) -> TherapySchedule:
        """The same schedule at another dose multiple."""
        return replace(self, dose=float(dose))


STANDARD_SCHEDULES: dict[str, TherapySchedule] = {
    # Pembrolizumab 200 mg q3w for up to 35 cycles; grade 3 irAE: hold, then resume.
    "anti_pd1": TherapySchedule("anti_pd1", interval_days=21, n_doses=35, on_irae="hold"),
    # Ipilimumab 3 mg/kg q3w x4; grade 3 irAE: hold (ASCO 2021; grade 4 stops).
    "anti_ctla4": TherapySchedule("anti_ctla4", interval_days=21, n_doses=4, on_irae="hold"),
    # Platinum doublet q3w x4 (KEYNOTE-024 control arm: 4-6 cycles).
    "chemo": TherapySchedule("chemo", interval_days=21, n_doses=4),
    # Stereotactic body radiotherapy 8 Gy x 3 to one lesion.
    "radio": TherapySchedule("radio", dose=8.0, days=(0, 1, 2)),
    # Oral targeted therapy, daily until progression.
    "targeted": TherapySchedule("targeted", interval_days=1, n_doses=100_000),
}


@dataclass(frozen=True)
class Regimen:
    """A set of therapy schedules given together.

    Attributes
    ----------
    schedules
        One schedule per therapy (a therapy appears at most once).
    name
        Display name; the canonical ``"a+b"`` text for standard regimens.
    """

    schedules: tuple[TherapySchedule, ...] = ()
    name: str = NO_THERAPY

    def __post_init__(self) -> None:
        seen = [s.therapy for s in self.schedules]
        dupes = sorted({t for t in seen if seen.count(t) > 1})
        if dupes:
            raise ValueError(f"schedules: therapy {dupes} appears more than once in a regimen")

    @property
    def therapies(self) -> tuple[str, ...]:
        """Therapy ids in :data:`THERAPIES` order."""
        given = {s.therapy for s in self.schedules}
        return tuple(t for t in THERAPIES if t in given)

    def irae_rules(self) -> np.ndarray:
        """Per-therapy irAE rule codes (index into :data:`IRAE_RULES`) in THERAPIES order."""
        rules = np.zeros(len(THERAPIES), dtype=np.int64)
        for s in self.schedules:
            rules[THERAPIES.index(s.therapy)] = IRAE_RULES.index(s.on_irae)
        return rules

    def __str__(self) -> str:
        return self.name


def parse_regimen(regimen: str | Regimen, *, dose: float = 1.0) -> Regimen:
    """The standard-schedule regimen of ``"anti_pd1+anti_ctla4"``-style text.

    Parameters
    ----------
    regimen
        Therapy ids joined by ``"+"``, or ``"none"`` (untreated). A :class:`Regimen` is
        returned unchanged.
    dose
        Dose multiple applied to every therapy (radiotherapy: multiple of 8 Gy).

    Raises
    ------
    ValueError
        If a component is not a therapy id (the message lists the valid ids), or the dose
        is negative.
    """
    if isinstance(regimen, Regimen):
        return regimen
    if not isinstance(regimen, str) or not regimen.strip():
        raise ValueError(
            f"regimen: expected therapy ids joined by '+' or {NO_THERAPY!r}, got {regimen!r}"
        )
    if not (math.isfinite(dose) and dose >= 0):
        raise ValueError(f"dose: expected a non-negative number, got {dose}")
    text = regimen.strip()
    if text == NO_THERAPY:
        return Regimen((), NO_THERAPY)
    parts = [p.strip() for p in text.split("+")]
    twice = sorted({p for p in parts if parts.count(p) > 1})
    if twice:
        raise ValueError(f"regimen: {regimen!r} names {twice} more than once; each therapy "
                         f"appears once, from {list(THERAPIES)}")
    unknown = [p for p in parts if p not in THERAPIES]
    if unknown:
        raise ValueError(
            f"regimen: {regimen!r} contains unknown therapy {unknown}; expected ids from "
            f"{list(THERAPIES)} joined by '+', or {NO_THERAPY!r}"
        )
    schedules = []
    for therapy in THERAPIES:
        if therapy in parts:
            base = STANDARD_SCHEDULES[therapy]
            schedules.append(base.scaled(base.dose * dose))
    ordered = "+".join(s.therapy for s in schedules)
    return Regimen(tuple(schedules), ordered)


def dose_calendar(regimen: str | Regimen, n_days: int, *, strict: bool = True) -> np.ndarray:
    """Lay a regimen out as daily doses.

    Repeating schedules are cut at the horizon ("up to 35 cycles"); explicit dose ``days``
    past the horizon are an error when ``strict``, since the caller asked for a dose the
    simulation would silently never give.

    Parameters
    ----------
    regimen
        A :class:`Regimen` or regimen text.
    n_days
        Horizon in days (the calendar covers days ``0 .. n_days - 1``).
    strict
        Raise if a custom schedule names a day at or past the horizon.

    Returns
    -------
    numpy.ndarray
        ``(n_days, len(THERAPIES))`` float32 doses.
    """
    if n_days < 1:
        raise ValueError(f"n_days: expected >= 1, got {n_days}")
    regimen = parse_regimen(regimen)
    calendar = np.zeros((n_days, len(THERAPIES)), dtype=np.float32)
    for schedule in regimen.schedules:
        column = THERAPIES.index(schedule.therapy)
        pairs = schedule.dose_days()
        if strict and schedule.days is not None and pairs and pairs[-1][0] >= n_days:
            raise ValueError(
                f"days: schedule of {schedule.therapy} gives a dose on day {pairs[-1][0]}, "
                f"past the horizon of {n_days} days (last day {n_days - 1})"
            )
        if strict and schedule.days is None and schedule.n_doses and schedule.start_day >= n_days:
            raise ValueError(
                f"start_day: schedule of {schedule.therapy} starts on day "
                f"{schedule.start_day}, past the horizon of {n_days} days"
            )
        for day, amount in pairs:
            if day < n_days:
                calendar[day, column] += amount
    return calendar
