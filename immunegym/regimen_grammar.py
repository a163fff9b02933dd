"""The one regimen grammar of immunegym: text -> therapies, doses and schedules.

Every place that reads a regimen or a therapy label uses this module: the simulator
(:func:`immunegym.sim.run_trial`, :class:`immunegym.sim.CohortSpec`,
:func:`immunegym.sim.therapy.parse_regimen`), the data layer
(:func:`immunegym.data.vocab.parse_regimen`, the ``obs`` therapy column), the environments'
regimen menus (:func:`parse_therapy_set`) and planning
(:func:`immunegym.planning.parse_plan`). It imports nothing heavier than numpy, so any layer
may import it.

Grammar
-------
A regimen is one or more *phases* joined by ``->``, given one after the other::

    regimen := phase [ "->" phase ]...
    phase   := set [ "qNw" ] [ "xN" ]
    set     := item [ "+" item ]...  |  "none"
    item    := therapy [ "@" dose ]

* ``therapy`` is a therapy id (:data:`THERAPIES`: ``anti_pd1``, ``anti_ctla4``, ``chemo``,
  ``radio``, ``targeted``) or a known name for one or several of them (:data:`ALIASES`,
  case and punctuation ignored: ``PD1``, ``nivolumab``, ``Combo``, ``platinum_doublet``,
  ``nivolumab_ipilimumab``, ...). Lab spellings may also join items with ``&``, ``,`` or
  ``and``.
* ``@dose`` is a multiple of the standard dose (default 1; radiotherapy: of 8 Gy per
  fraction), above 0 and at most :data:`MAX_DOSE_MULTIPLE`.
* ``qNw`` gives one administration every N weeks (default ``q3w``, one 21-day cycle).
* ``xN`` is the number of administrations in the phase. Every phase but the last needs one.
* A whole text that is a standard regimen's name (:data:`STANDARD_REGIMENS`) is that
  regimen.

One meaning per word
--------------------
A phase without ``xN`` gives each of its therapies its **standard course**
(:data:`STANDARD_COURSE`, the trials' schedules): anti-PD-1 up to 35 administrations
(pembrolizumab 200 mg q3w for two years, KEYNOTE-006/-024), anti-CTLA-4 4 (ipilimumab
3 mg/kg q3w x4, CheckMate 067), **chemo 4 cycles** (platinum doublet q3w x4, the
KEYNOTE-024 control arm and the KEYNOTE-189/-407 induction: cumulative marrow toxicity
limits it to 4-6 cycles, it is not given until progression), radio one course (SBRT
8 Gy x 3 on consecutive days, PEMBRO-RT), and targeted therapy daily until the horizon
(BRAF/MEK inhibitors are taken until progression); ``none`` runs to the horizon. So
``"chemo"`` is ``"chemo q3w x4"`` everywhere, and ``"chemo+anti_pd1"`` is
``"chemo+anti_pd1 x4 -> anti_pd1 x31"`` (KEYNOTE-189), ``"anti_pd1+anti_ctla4"`` is
``"anti_pd1+anti_ctla4 x4 -> anti_pd1 x31"`` (CheckMate 067): the standard regimens of
:data:`STANDARD_REGIMENS` are exactly the bare sets of their therapies. To give a drug every
cycle to the horizon, write the count: ``"chemo x100"``.

A *therapy set* (what is given in one cycle: an environment's menu entry, a sample's
``obs`` therapy label) uses the same words; :func:`parse_therapy_set` reads one.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass

import numpy as np

from immunegym.validation import ValidationError, _show, integer

__all__ = [
    "ALIASES",
    "CYCLE_WEEKS",
    "GRAMMAR",
    "MAX_COUNT",
    "MAX_DOSE",
    "MAX_DOSE_MULTIPLE",
    "MAX_EVERY_WEEKS",
    "NO_THERAPY",
    "RADIO_STANDARD_GY",
    "STANDARD_COURSE",
    "STANDARD_REGIMENS",
    "THERAPIES",
    "Phase",
    "RegimenPlan",
    "parse_plan",
    "parse_therapy_set",
    "regimen_error",
]

THERAPIES: tuple[str, ...] = ("anti_pd1", "anti_ctla4", "chemo", "radio", "targeted")
"""Therapy ids, in the order of the multi-hot therapy vectors."""

NO_THERAPY = "none"

CYCLE_WEEKS = 3
"""Weeks per cycle of the environments (21 days); the default schedule ``q3w``."""

RADIO_STANDARD_GY = 8.0
"""Gy per fraction of one standard radiotherapy dose (SBRT 8 Gy x 3)."""

STANDARD_COURSE: dict[str, int | None] = {
    "anti_pd1": 35,  # pembrolizumab q3w up to 35 cycles (2 years)
    "anti_ctla4": 4,  # ipilimumab q3w x4
    "chemo": 4,  # platinum doublet q3w x4
    "radio": 1,  # one SBRT course (8 Gy x 3 consecutive days)
    "targeted": None,  # daily until progression (the horizon)
}
"""Administrations a therapy gets in a phase without ``xN`` (``None``: to the horizon)."""

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

MAX_DOSE_MULTIPLE: dict[str, float] = {
    t: MAX_DOSE[t] / (RADIO_STANDARD_GY if t == "radio" else 1.0) for t in THERAPIES}
""":data:`MAX_DOSE` as a multiple of the standard dose (radiotherapy: of 8 Gy)."""

MAX_COUNT = 1000
"""Most administrations ``xN`` in one phase (35 years of 3-week cycles)."""
MAX_EVERY_WEEKS = 520
"""Longest schedule ``qNw`` (10 years)."""
MAX_PHASES = 100
"""Most phases in one regimen."""
MAX_TEXT = 4000
"""Longest regimen text read (characters)."""
MAX_HORIZON_CYCLES = 10**6
"""Largest horizon :meth:`RegimenPlan.cycle_doses` lays out (20 MB of doses)."""

STANDARD_REGIMENS: dict[str, str] = {
    # Pembrolizumab 200 mg q3w up to 35 cycles (KEYNOTE-006/-024/-045/-048/-177).
    "pembrolizumab": "anti_pd1 q3w x35",
    # Nivolumab + ipilimumab x4, then nivolumab (CheckMate 067 melanoma, 214 RCC).
    "nivolumab_ipilimumab": "anti_pd1+anti_ctla4 q3w x4 -> anti_pd1 q3w x31",
    # Ipilimumab 3 mg/kg q3w x4 (CheckMate 067 control arm).
    "ipilimumab": "anti_ctla4 q3w x4",
    # Platinum doublet x4 (KEYNOTE-024 control arm).
    "platinum_doublet": "chemo q3w x4",
    # Platinum doublet + pembrolizumab x4, then pembrolizumab (KEYNOTE-189/-407/-355).
    "chemo_pembrolizumab": "chemo+anti_pd1 q3w x4 -> anti_pd1 q3w x31",
    # SBRT to one lesion, then pembrolizumab (PEMBRO-RT).
    "sbrt_pembrolizumab": "radio+anti_pd1 x1 -> anti_pd1 q3w x34",
    # Oral targeted therapy (e.g. BRAF/MEK inhibitors) every day, counted per cycle.
    "targeted": "targeted q3w",
    "observation": "none",
}
"""Named standard regimens -> their text. Each equals the bare set of its therapies."""


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


_PD1, _CTLA4 = ("anti_pd1",), ("anti_ctla4",)
ALIASES: dict[str, tuple[str, ...]] = {
    # Therapy ids themselves (case and punctuation ignored: "Anti-PD1").
    **{_key(t): (t,) for t in THERAPIES},
    "none": (), "untreated": (), "naive": (), "observation": (),
    # Lab spellings and drug names.
    "pd1": _PD1, "pdl1": _PD1, "antipdl1": _PD1, "pembrolizumab": _PD1,
    "nivolumab": _PD1, "atezolizumab": _PD1, "durvalumab": _PD1, "cemiplimab": _PD1,
    "ctla4": _CTLA4, "ipilimumab": _CTLA4, "tremelimumab": _CTLA4,
    "combo": ("anti_pd1", "anti_ctla4"), "pd1ctla4": ("anti_pd1", "anti_ctla4"),
    "chemotherapy": ("chemo",), "platinumdoublet": ("chemo",),
    "radiotherapy": ("radio",), "radiation": ("radio",), "rt": ("radio",), "sbrt": ("radio",),
    "braf": ("targeted",), "mek": ("targeted",), "brafi": ("targeted",), "tki": ("targeted",),
    # Standard regimen names as therapy sets (their bare sets are the named regimens).
    "nivolumabipilimumab": ("anti_pd1", "anti_ctla4"),
    "chemopembrolizumab": ("chemo", "anti_pd1"),
    "sbrtpembrolizumab": ("radio", "anti_pd1"),
}
"""Normalized name (lower case, letters and digits only) -> the therapies it stands for."""

GRAMMAR = ("phases joined by '->', each 'therapy[+therapy...][@dose] [qNw] [xN]' (therapies "
           f"{', '.join(THERAPIES)} or {NO_THERAPY!r}; names such as 'pembrolizumab', "
           "'PD1', 'Combo'; standard regimens "
           f"{', '.join(repr(n) for n in STANDARD_REGIMENS)}; '@dose' a multiple of the "
           "standard dose; 'qNw' every N weeks, default q3w; 'xN' administrations, needed "
           "on every phase but the last; without 'xN' each therapy gets its standard "
           "course: anti_pd1 x35, anti_ctla4 x4, chemo x4, radio x1, targeted and none to "
           "the horizon), e.g. 'anti_pd1+anti_ctla4 q3w x4 -> anti_pd1'")
"""The grammar, as every regimen error message states it."""

_SEPARATORS = re.compile(r"\s*[+&,]\s*|\s+and\s+", re.IGNORECASE)
_DOSE = re.compile(r"^[0-9]*\.?[0-9]+$")
_SCHEDULE = re.compile(r"^q(?P<weeks>[0-9]+)w$", re.IGNORECASE)
_COUNT = re.compile(r"^x(?P<n>[0-9]+)$", re.IGNORECASE)


def regimen_error(field: str, value: object, problem: str) -> ValidationError:
    """The one regimen error: ``<field>: got <value>; expected <grammar> (<problem>)``."""
    return ValidationError(f"{field}: got {_show(value)}; expected {GRAMMAR}. Problem: "
                           f"{problem}")


def _check_multiple(therapy: str, dose: float) -> str | None:
    """Why ``dose`` is not a valid multiple for ``therapy`` (``None`` when it is)."""
    if isinstance(dose, bool) or not isinstance(dose, (int, float, np.floating, np.integer)):
        return f"the dose multiple of {therapy} is {dose!r}, not a number"
    if not (math.isfinite(dose) and dose > 0):
        return f"dose multiples must be finite and > 0; {therapy} has {dose!r}"
    top = MAX_DOSE_MULTIPLE[therapy]
    if dose > top:
        return (f"the dose multiple {dose:g} of {therapy} is above the allowed maximum of "
                f"{top:g} x the standard dose")
    return None


@dataclass(frozen=True)
class Phase:
    """A set of therapies given together on one schedule.

    Attributes
    ----------
    therapies
        ``(therapy, dose multiple)`` pairs in :data:`THERAPIES` order; empty for no therapy.
    every_weeks
        Weeks between administrations (a multiple of the 3-week cycle to run in the envs).
    doses
        Administrations in the phase; ``None`` gives each therapy its standard course
        (:data:`STANDARD_COURSE`; targeted therapy and no therapy run to the horizon). Only
        the last phase may leave it out.
    """

    therapies: tuple[tuple[str, float], ...] = ()
    every_weeks: int = CYCLE_WEEKS
    doses: int | None = None

    def __post_init__(self) -> None:
        try:
            items = tuple((t, d) for t, d in self.therapies)
        except (TypeError, ValueError):
            raise ValidationError(f"therapies: got {_show(self.therapies)}; expected "
                                  "(therapy, dose multiple) pairs") from None
        names = [t for t, _ in items]
        unknown = [t for t in names if t not in THERAPIES]
        if unknown:
            raise ValidationError(f"therapies: unknown therapy {unknown}; expected ids from "
                                  f"{list(THERAPIES)}")
        if len(set(names)) != len(names):
            raise ValidationError(f"therapies: a therapy appears twice in {names}")
        for therapy, dose in items:
            problem = _check_multiple(therapy, dose)
            if problem:
                raise ValidationError(f"therapies: {problem}")
        items = tuple((t, float(d)) for t, d in items)
        ordered = tuple(sorted(items, key=lambda td: THERAPIES.index(td[0])))
        object.__setattr__(self, "therapies", ordered)
        integer("every_weeks", self.every_weeks, low=1, high=MAX_EVERY_WEEKS)
        if self.doses is not None:
            integer("doses", self.doses, low=1, high=MAX_COUNT, hint="or None")

    @property
    def label(self) -> str:
        """The therapy set as text (``"anti_pd1+anti_ctla4"``, ``"none"``)."""
        if not self.therapies:
            return NO_THERAPY
        # Positional, shortest round-trip digits: parse_plan reads back exactly this dose.
        return "+".join(t if d == 1.0 else f"{t}@{np.format_float_positional(d, trim='-')}"
                        for t, d in self.therapies)

    def course(self, therapy: str) -> int | None:
        """Administrations of ``therapy`` in this phase (``None``: to the horizon)."""
        return self.doses if self.doses is not None else STANDARD_COURSE[therapy]

    def dose_vector(self) -> np.ndarray:
        """``(R,)`` dose multiples of one administration."""
        v = np.zeros(len(THERAPIES), dtype=np.float32)
        for therapy, dose in self.therapies:
            v[THERAPIES.index(therapy)] = dose
        return v

    def __str__(self) -> str:
        text = self.label
        if self.every_weeks != CYCLE_WEEKS:
            text += f" q{self.every_weeks}w"
        if self.doses is not None:
            text += f" x{self.doses}"
        return text


@dataclass(frozen=True)
class RegimenPlan:
    """Phases given one after the other.

    Attributes
    ----------
    phases
        The phases; only the last may leave out its count (``doses=None``).
    """

    phases: tuple[Phase, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.phases, (tuple, list)) or not self.phases:
            raise ValidationError(f"phases: got {_show(self.phases)}; a regimen needs at "
                                  "least one phase")
        object.__setattr__(self, "phases", tuple(self.phases))
        if len(self.phases) > MAX_PHASES:
            raise ValidationError(f"phases: got {len(self.phases)} phases; expected at most "
                                  f"{MAX_PHASES}")
        for i, phase in enumerate(self.phases):
            if not isinstance(phase, Phase):
                raise ValidationError(f"phases: got {_show(phase)}; expected Phase objects")
            if phase.doses is None and i < len(self.phases) - 1:
                raise ValidationError(
                    f"phases: phase {i + 1} ({phase}) has no 'xN' count; only the last phase "
                    "may leave it out")

    def __str__(self) -> str:
        return " -> ".join(str(p) for p in self.phases)

    @property
    def therapies(self) -> tuple[str, ...]:
        """Therapies used anywhere in the plan, in :data:`THERAPIES` order."""
        used = {t for p in self.phases for t, _ in p.therapies}
        return tuple(t for t in THERAPIES if t in used)

    @property
    def is_standard(self) -> bool:
        """One phase, every 3 weeks, no count: the standard courses of its therapies."""
        phase = self.phases[0]
        return len(self.phases) == 1 and phase.doses is None and phase.every_weeks == CYCLE_WEEKS

    def administrations(self, horizon_days: int) -> dict[str, list[tuple[int, float]]]:
        """``therapy -> [(day, dose multiple), ...]`` of every administration before
        ``horizon_days`` (day 0 is the first dose), phase after phase."""
        horizon_days = integer("horizon_days", horizon_days, low=1,
                               high=MAX_HORIZON_CYCLES)
        out: dict[str, list[tuple[int, float]]] = {t: [] for t in self.therapies}
        start = 0
        for phase in self.phases:
            interval = phase.every_weeks * 7
            room = max(0, math.ceil((horizon_days - start) / interval))
            for therapy, dose in phase.therapies:
                n = phase.course(therapy)
                n = room if n is None else min(n, room)
                out[therapy].extend((start + k * interval, dose) for k in range(n))
            if phase.doses is None:
                break
            start += phase.doses * interval
            if start >= horizon_days:
                break
        return out

    def cycle_doses(self, horizon: int, cycle_days: int = 7 * CYCLE_WEEKS) -> np.ndarray:
        """Lay the plan out as ``(horizon, R)`` dose multiples per cycle.

        A phase of ``xN`` every ``qKw`` spans ``N * K`` weeks and gives a dose in its first
        cycle and every ``K`` weeks after; a last phase without ``xN`` gives each therapy its
        standard course (:data:`STANDARD_COURSE`); the plan is cut at the horizon, and
        cycles after its last phase are untreated.

        Raises
        ------
        ValidationError
            If the horizon is not a positive integer, or a schedule is not a whole number of
            cycles.
        """
        horizon = integer("horizon", horizon, low=1, high=MAX_HORIZON_CYCLES)
        cycle_days = integer("cycle_days", cycle_days, low=1, high=3650)
        out = np.zeros((horizon, len(THERAPIES)), dtype=np.float32)
        cycle = 0
        for phase in self.phases:
            days = phase.every_weeks * 7
            if days % cycle_days:
                raise ValidationError(
                    f"every_weeks: {phase} gives a dose every {days} days, not a whole number "
                    f"of {cycle_days}-day cycles")
            step = days // cycle_days
            room = max(0, math.ceil((horizon - cycle) / step))
            for therapy, dose in phase.therapies:
                n = phase.course(therapy)
                n = room if n is None else min(n, room)
                out[cycle: cycle + n * step: step, THERAPIES.index(therapy)] = dose
            if phase.doses is None:
                break
            cycle += phase.doses * step
            if cycle >= horizon:
                break
        return out

    @classmethod
    def from_cycle_doses(cls, doses: np.ndarray) -> RegimenPlan:
        """The plan of an ``(H, R)`` per-cycle dose array, repeated cycles merged (q3w)."""
        doses = np.asarray(doses, dtype=np.float64)
        if doses.ndim != 2 or doses.shape[1] != len(THERAPIES) or not len(doses):
            raise ValidationError(f"doses: shape {doses.shape}; expected (cycles >= 1, "
                                  f"{len(THERAPIES)})")
        if not np.isfinite(doses).all() or (doses < 0).any():
            raise ValidationError("doses: got negative or non-finite values; expected finite "
                                  "dose multiples >= 0")
        phases: list[Phase] = []
        start = 0
        for h in range(1, len(doses) + 1):
            if h == len(doses) or not np.array_equal(doses[h], doses[start]):
                # The shortest decimal of the float32 dose (cycle_doses' precision): 0.3
                # stays 0.3, and laying the plan out again gives the same array.
                items = tuple((THERAPIES[r], _float32_decimal(d))
                              for r, d in enumerate(doses[start]) if d > 0)
                count = h - start
                while count > 0:  # runs longer than MAX_COUNT are split
                    phases.append(Phase(items, CYCLE_WEEKS, min(count, MAX_COUNT)))
                    count -= MAX_COUNT
                start = h
        return cls(tuple(phases))


def _float32_decimal(value: float) -> float:
    """The shortest decimal that reads back as ``value`` in float32."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))


def _parse_set(text: str, whole: object, field: str) -> tuple[tuple[str, float], ...]:
    """``(therapy, dose)`` pairs of one therapy set (``"anti_pd1+chemo@0.5"``)."""
    found: dict[str, float] = {}
    parts = _SEPARATORS.split(text)
    for item in parts:
        name, _, dose_text = item.partition("@")
        key = _key(name)
        if not key or key not in ALIASES:
            near = difflib.get_close_matches(key or name, list(ALIASES), n=1)
            if near:
                near_name = next((t for t in (*THERAPIES, *STANDARD_REGIMENS)
                                  if _key(t) == near[0]), near[0])
                tip = f" (did you mean {near_name!r}?)"
            else:
                tip = ""
            raise regimen_error(field, whole, f"{item!r} is not a therapy{tip}")
        therapies = ALIASES[key]
        if not therapies:
            if len(parts) > 1 or dose_text:
                raise regimen_error(field, whole, f"{item!r} is not a therapy and cannot be "
                                    "combined with therapies or given a dose")
            return ()
        dose = 1.0
        if "@" in item:
            if not _DOSE.match(dose_text):
                raise regimen_error(field, whole, f"{item!r} has a bad '@dose'; expected a "
                                    "number > 0 after '@', e.g. 'anti_pd1@0.5'")
            dose = float(dose_text)
        for therapy in therapies:
            if therapy in found:
                raise regimen_error(field, whole, f"{therapy!r} appears twice in {text!r}")
            problem = _check_multiple(therapy, dose)
            if problem:
                raise regimen_error(field, whole, problem)
            found[therapy] = dose
    return tuple((t, found[t]) for t in THERAPIES if t in found)


def _normalize(part: str) -> str:
    # Spaces around separators and '@' are not token breaks: "nivolumab + ipilimumab".
    part = re.sub(r"\s+and\s+", "+", part.strip(), flags=re.IGNORECASE)
    return re.sub(r"\s*([+&,@])\s*", r"\1", part)


def _parse_phase(part: str, whole: object, field: str) -> Phase:
    tokens = _normalize(part).split()
    if not tokens:
        raise regimen_error(field, whole, "an empty phase between '->'")
    items = _parse_set(tokens[0], whole, field)
    every, count = None, None
    for token in tokens[1:]:
        if (m := _SCHEDULE.match(token)) and every is None:
            every = int(m["weeks"])
            if not 1 <= every <= MAX_EVERY_WEEKS:
                raise regimen_error(field, whole, f"{token!r}: every_weeks must be in "
                                    f"1..{MAX_EVERY_WEEKS}")
        elif (m := _COUNT.match(token)) and count is None:
            count = int(m["n"])
            if not 1 <= count <= MAX_COUNT:
                raise regimen_error(field, whole, f"{token!r}: the number of doses must be "
                                    f"in 1..{MAX_COUNT}")
        else:
            raise regimen_error(field, whole, f"unexpected {token!r} in {part.strip()!r}; "
                                "at most one schedule 'qNw' (weeks) and one count 'xN' "
                                "(administrations) may follow the therapies")
    return Phase(items, CYCLE_WEEKS if every is None else every, count)


def parse_plan(text: object, field: str = "regimen") -> RegimenPlan:
    """A plan from regimen text or a standard regimen's name (a plan is returned unchanged).

    Parameters
    ----------
    text
        Regimen text in the grammar of this module, a name of :data:`STANDARD_REGIMENS`,
        or a :class:`RegimenPlan`.
    field
        The argument's name, for the error message.

    Raises
    ------
    ValidationError
        The one regimen error (:func:`regimen_error`): the grammar, the known names, and
        what is wrong.
    """
    if isinstance(text, RegimenPlan):
        return text
    if not isinstance(text, str) or not text.strip():
        raise regimen_error(field, text, "the regimen must be non-empty text")
    if len(text) > MAX_TEXT:
        raise regimen_error(field, text, f"the text is longer than {MAX_TEXT} characters")
    name = text.strip()
    if name in STANDARD_REGIMENS:
        name = STANDARD_REGIMENS[name]
    parts = name.split("->")
    if len(parts) > MAX_PHASES:
        raise regimen_error(field, text, f"more than {MAX_PHASES} phases")
    phases = tuple(_parse_phase(part, text, field) for part in parts)
    for i, phase in enumerate(phases[:-1]):
        if phase.doses is None:
            raise regimen_error(field, text, f"phase {i + 1} ({str(phase)!r}) has no count "
                                "'xN'; only the last phase may leave it out")
    return RegimenPlan(phases)


def parse_therapy_set(text: object, field: str = "regimen") -> tuple[str, ...]:
    """The therapies of a therapy set (one cycle's treatment; a menu entry, an obs label).

    The words are the grammar's (``"anti_pd1+chemo"``, ``"PD1"``, ``"Combo"``,
    ``"none"``); schedules, counts, doses and phases are refused, since a set has none.

    Returns
    -------
    tuple of str
        Therapy ids in :data:`THERAPIES` order (empty for ``"none"``).
    """
    # A name (a drug, a lab spelling or a standard regimen such as "pembrolizumab" or
    # "nivolumab_ipilimumab") stands for its therapies; its schedule is not part of a set.
    if isinstance(text, str) and _key(text) in ALIASES:
        named = set(ALIASES[_key(text)])
        return tuple(t for t in THERAPIES if t in named)
    plan = parse_plan(text, field)
    phase = plan.phases[0]
    if (len(plan.phases) > 1 or phase.doses is not None or phase.every_weeks != CYCLE_WEEKS
            or any(d != 1.0 for _, d in phase.therapies)):
        raise regimen_error(field, text, "a therapy set has no phases, schedule, count or "
                            "dose: only therapies joined by '+', or 'none'")
    return plan.therapies
