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

from immunegym.regimen_grammar import (  # noqa: F401  (MAX_DOSE re-exported)
    MAX_DOSE,
    NO_THERAPY,
    RADIO_STANDARD_GY,
    THERAPIES,
    RegimenPlan,
    parse_plan,
    regimen_error,
)
from immunegym.sim.toxicity import IRAE_RULES
from immunegym.validation import ValidationError, bad, integer, number

MAX_DAYS = 3650
"""Longest horizon a regimen is laid out over, and :meth:`ImmuneSim.run` accepts (10 years)."""

RADIO_FRACTION_DAYS = 3
"""A radiotherapy administration: one fraction on each of 3 consecutive days (SBRT)."""
TARGETED_CYCLE_DAYS = 21
"""A targeted-therapy administration: one dose every day of a 21-day cycle."""


def check_dose(therapy: str, dose: float, field: str = "dose") -> float:
    """``dose`` as a float, or a clear error if it is negative, not finite or above
    :data:`MAX_DOSE`."""
    if (isinstance(dose, bool) or not isinstance(dose, (int, float, np.integer, np.floating))
            or not math.isfinite(dose)):
        raise ValidationError(f"{field}: got {dose!r} for {therapy}; expected a finite number")
    if dose < 0:
        raise ValidationError(f"{field}: got {dose} for {therapy}; expected a non-negative "
                              "dose")
    if dose > MAX_DOSE[therapy]:
        unit = "Gy per fraction" if therapy == "radio" else "x the standard dose"
        raise ValidationError(f"{field}: got {dose} for {therapy}; expected at most the "
                              f"allowed maximum of {MAX_DOSE[therapy]} {unit}")
    return float(dose)


MAX_SCHEDULE_DOSES = 100_000
"""Most doses of one repeating schedule (the standard targeted schedule: daily, open)."""

_DAY_HINT = f"days since treatment start, at most {MAX_DAYS - 1} (10 years)"


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
    cut_at_horizon
        Doses at or past the horizon are dropped instead of refused by
        :func:`dose_calendar` (a plan's "up to N doses", laid out by :func:`parse_regimen`).
    """

    therapy: str
    interval_days: int = 21
    n_doses: int = 1
    dose: float = 1.0
    start_day: int = 0
    days: tuple[int, ...] | None = None
    doses: tuple[float, ...] | None = None
    on_irae: str = "continue"
    cut_at_horizon: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.therapy, str) or self.therapy not in THERAPIES:
            raise ValidationError(f"therapy: unknown id {self.therapy!r}; expected one of "
                                  f"{list(THERAPIES)}")
        if not isinstance(self.on_irae, str) or self.on_irae not in IRAE_RULES:
            raise bad("on_irae", self.on_irae, f"one of {list(IRAE_RULES)}")
        check_dose(self.therapy, self.dose)
        integer("interval_days", self.interval_days, low=1, high=MAX_DAYS)
        integer("n_doses", self.n_doses, low=0, high=MAX_SCHEDULE_DOSES)
        integer("start_day", self.start_day, low=0, high=MAX_DAYS, hint=_DAY_HINT)
        if self.days is not None:
            if isinstance(self.days, (str, bytes)) or not hasattr(self.days, "__len__"):
                raise bad("days", self.days, "a tuple of dose days")
            if len(self.days) > MAX_SCHEDULE_DOSES:
                raise bad("days", f"<{len(self.days)} days>",
                          f"at most {MAX_SCHEDULE_DOSES} dose days")
            object.__setattr__(self, "days", tuple(
                integer("days", d, low=0, high=MAX_DAYS - 1, hint=_DAY_HINT)
                for d in self.days))
            if self.doses is not None:
                if isinstance(self.doses, (str, bytes)) or not hasattr(self.doses, "__len__"):
                    raise bad("doses", self.doses, "a tuple of per-day doses")
                if len(self.doses) != len(self.days):
                    raise ValidationError(f"doses: got {len(self.doses)} doses; expected one "
                                          f"per day ({len(self.days)})")
        if self.doses is not None:
            if self.days is None:
                raise ValidationError("doses: per-dose amounts need explicit days")
            object.__setattr__(self, "doses", tuple(check_dose(self.therapy, amount, "doses")
                                                    for amount in self.doses))
        if not isinstance(self.cut_at_horizon, bool):
            raise bad("cut_at_horizon", self.cut_at_horizon, "True or False")

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
    "radio": TherapySchedule("radio", dose=RADIO_STANDARD_GY,
                             days=tuple(range(RADIO_FRACTION_DAYS))),
    # Oral targeted therapy, daily until progression.
    "targeted": TherapySchedule("targeted", interval_days=1, n_doses=MAX_SCHEDULE_DOSES),
}
"""The standard course of each therapy: what a bare therapy id means (the grammar's
:data:`~immunegym.regimen_grammar.STANDARD_COURSE`, laid out in days)."""


@dataclass(frozen=True)
class Regimen:
    """A set of therapy schedules given together.

    Attributes
    ----------
    schedules
        One schedule per therapy (a therapy appears at most once).
    name
        Display name; the canonical text of the regimen for parsed regimens.
    """

    schedules: tuple[TherapySchedule, ...] = ()
    name: str = NO_THERAPY

    def __post_init__(self) -> None:
        if isinstance(self.schedules, TherapySchedule) or not isinstance(
                self.schedules, (tuple, list)):
            raise bad("schedules", self.schedules, "a tuple of TherapySchedule")
        object.__setattr__(self, "schedules", tuple(self.schedules))
        for s in self.schedules:
            if not isinstance(s, TherapySchedule):
                raise bad("schedules", s, "TherapySchedule objects")
        if not isinstance(self.name, str):
            raise bad("name", self.name, "text")
        seen = [s.therapy for s in self.schedules]
        dupes = sorted({t for t in seen if seen.count(t) > 1})
        if dupes:
            raise ValidationError(f"schedules: therapy {dupes} appears more than once in a "
                                  "regimen")

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

    def __repr__(self) -> str:
        return f"Regimen({self.name!r}, therapies={list(self.therapies)})"


def _schedule_from_pairs(therapy: str, pairs: list[tuple[int, float]]) -> TherapySchedule:
    """One schedule giving ``(day, amount)`` pairs (repeating when they are regular)."""
    base = STANDARD_SCHEDULES[therapy]
    days = [d for d, _ in pairs]
    amounts = [a for _, a in pairs]
    steps = {b - a for a, b in zip(days, days[1:], strict=False)}
    if len(set(amounts)) == 1 and len(steps) <= 1 and min(steps, default=1) >= 1:
        return replace(base, interval_days=steps.pop() if steps else base.interval_days,
                       n_doses=len(days), dose=amounts[0], start_day=days[0], days=None,
                       doses=None, cut_at_horizon=True)
    return replace(base, n_doses=len(days), dose=max(amounts), start_day=days[0],
                   days=tuple(days), doses=tuple(amounts), cut_at_horizon=True)


def plan_to_regimen(plan: RegimenPlan, dose: float = 1.0) -> Regimen:
    """The day-by-day :class:`Regimen` of a grammar plan, over :data:`MAX_DAYS`.

    An administration of anti-PD-1, anti-CTLA-4 or chemotherapy is one dose on its day;
    of radiotherapy, ``8 Gy x dose`` on each of 3 consecutive days; of targeted therapy, a
    daily dose for a 21-day cycle (or until the next administration, if sooner): the same
    layout as the environments' cycles. Each therapy keeps its standard irAE rule. A plan
    that is one bare therapy set (``"anti_pd1+anti_ctla4"``) gives exactly
    :data:`STANDARD_SCHEDULES`.
    """
    if plan.is_standard:
        schedules = tuple(STANDARD_SCHEDULES[t].scaled(STANDARD_SCHEDULES[t].dose * d * dose)
                          for t, d in plan.phases[0].therapies)
        return Regimen(schedules, "+".join(t for t, _ in plan.phases[0].therapies)
                       or NO_THERAPY)
    pairs: dict[str, list[tuple[int, float]]] = {}
    for therapy, given in plan.administrations(MAX_DAYS).items():
        out: list[tuple[int, float]] = []
        for k, (day, multiple) in enumerate(given):
            amount = multiple * dose
            if therapy == "radio":
                out.extend((day + f, amount * RADIO_STANDARD_GY)
                           for f in range(RADIO_FRACTION_DAYS))
            elif therapy == "targeted":
                following = given[k + 1][0] if k + 1 < len(given) else MAX_DAYS
                length = min(TARGETED_CYCLE_DAYS, following - day)
                out.extend((day + f, amount) for f in range(length))
            else:
                out.append((day, amount))
        out = [(d, a) for d, a in out if d < MAX_DAYS]
        if out:
            pairs[therapy] = out
    schedules = tuple(_schedule_from_pairs(t, pairs[t]) for t in THERAPIES if t in pairs)
    return Regimen(schedules, str(plan))


def parse_regimen(regimen: object, *, dose: float = 1.0, field: str = "regimen") -> Regimen:
    """The :class:`Regimen` of regimen text in the package's one grammar.

    Parameters
    ----------
    regimen
        Text in :mod:`immunegym.regimen_grammar` (``"anti_pd1"``,
        ``"anti_pd1+anti_ctla4 q3w x4 -> anti_pd1"``, ``"nivolumab_ipilimumab"``,
        ``"none"``), a :class:`~immunegym.regimen_grammar.RegimenPlan`, or a
        :class:`Regimen` (returned unchanged). A bare therapy set gives each therapy its
        standard course (:data:`STANDARD_SCHEDULES`: chemo q3w x4, anti-CTLA-4 x4,
        anti-PD-1 up to 35 doses, SBRT 8 Gy x 3, targeted daily).
    dose
        Dose multiple applied to every therapy (radiotherapy: multiple of 8 Gy).
    field
        The argument's name, for the error message.

    Raises
    ------
    ValidationError
        The grammar's one regimen error (the grammar, the known names, and what is wrong),
        or a negative dose.
    """
    if isinstance(regimen, Regimen):
        return regimen
    dose = number("dose", dose, low=0)
    return plan_to_regimen(parse_plan(regimen, field), dose)


def dose_calendar(regimen: str | Regimen, n_days: int, *, strict: bool = True) -> np.ndarray:
    """Lay a regimen out as daily doses.

    Repeating schedules are cut at the horizon ("up to 35 cycles"); explicit dose ``days``
    past the horizon are an error when ``strict``, since the caller asked for a dose the
    simulation would silently never give (schedules laid out from a plan, marked
    ``cut_at_horizon``, are cut instead).

    Parameters
    ----------
    regimen
        A :class:`Regimen` or regimen text.
    n_days
        Horizon in days (the calendar covers days ``0 .. n_days - 1``), at most
        :data:`MAX_DAYS`.
    strict
        Raise if a custom schedule names a day at or past the horizon.

    Returns
    -------
    numpy.ndarray
        ``(n_days, len(THERAPIES))`` float32 doses.
    """
    n_days = integer("n_days", n_days, low=1, high=MAX_DAYS, hint=_DAY_HINT)
    regimen = parse_regimen(regimen)
    calendar = np.zeros((n_days, len(THERAPIES)), dtype=np.float32)
    for schedule in regimen.schedules:
        column = THERAPIES.index(schedule.therapy)
        check = strict and not schedule.cut_at_horizon
        if schedule.days is None:
            if check and schedule.n_doses and schedule.start_day >= n_days:
                raise ValidationError(
                    f"start_day: schedule of {schedule.therapy} starts on day "
                    f"{schedule.start_day}, past the horizon of {n_days} days")
            # Repeating schedule: a strided slice, cut at the horizon.
            stop = schedule.start_day + schedule.n_doses * schedule.interval_days
            calendar[schedule.start_day:min(stop, n_days):schedule.interval_days,
                     column] += schedule.dose
            continue
        pairs = schedule.dose_days()
        if check and pairs and pairs[-1][0] >= n_days:
            raise ValidationError(
                f"days: schedule of {schedule.therapy} gives a dose on day {pairs[-1][0]}, "
                f"past the horizon of {n_days} days (last day {n_days - 1})"
            )
        for day, amount in pairs:
            if day < n_days:
                calendar[day, column] += amount
    return calendar
