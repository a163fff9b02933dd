"""A regimen algebra: phases of therapy sets with doses and schedules, as text and as cycles.

A :class:`RegimenPlan` is a sequence of :class:`Phase` s. Each phase gives a set of therapies
(each at a dose multiple of its standard dose) every ``every_weeks`` weeks, ``doses`` times
(``None``: until the horizon). Text form, parsed by :func:`parse_plan` and printed by ``str``::

    anti_pd1 q3w x35
    anti_pd1+anti_ctla4 q3w x4 -> anti_pd1
    chemo+anti_pd1@0.5 q3w x4 -> anti_pd1 q6w x8
    none x2 -> anti_pd1

``q3w`` is the default schedule and is printed only when another one is used; ``xN`` counts
administrations, so ``q6w x2`` spans four 3-week cycles. Only the last phase may be open
(no ``xN``). Standard regimens have names (:data:`STANDARD_REGIMENS`), and
:data:`STANDARD_OF_CARE` names a guideline regimen per cancer type.

The environments act per cycle, so a plan lays out as an ``(H, R)`` array of dose
multiples per cycle (:meth:`RegimenPlan.cycle_doses`) and back again
(:meth:`RegimenPlan.from_cycle_doses`, which merges repeated cycles into phases).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from immunegym.data.vocab import NO_THERAPY, THERAPIES

CYCLE_WEEKS = 3
"""Weeks per cycle of the environments (21 days)."""

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
"""Named regimens -> their text."""

STANDARD_OF_CARE: dict[str, str] = {
    "melanoma": "nivolumab_ipilimumab",  # NCCN preferred first line (CheckMate 067)
    "nsclc": "chemo_pembrolizumab",  # PD-L1 unselected (KEYNOTE-189/-407)
    "nsclc_pdl1_high": "pembrolizumab",  # PD-L1 >= 50% (KEYNOTE-024)
    "rcc": "nivolumab_ipilimumab",  # intermediate/poor risk (CheckMate 214)
    "urothelial": "pembrolizumab",  # after platinum (KEYNOTE-045)
    "hnscc": "pembrolizumab",  # CPS >= 1 (KEYNOTE-048)
    "crc_msi": "pembrolizumab",  # KEYNOTE-177
    "crc_mss": "platinum_doublet",  # immunotherapy does not work (Le 2015)
    "tnbc": "chemo_pembrolizumab",  # KEYNOTE-355
}
"""Cancer type -> the name of its guideline regimen in :data:`STANDARD_REGIMENS`."""

_ITEM = re.compile(r"^(?P<therapy>[a-z0-9_]+)(?:@(?P<dose>[0-9]*\.?[0-9]+))?$")
_SCHEDULE = re.compile(r"^q(?P<weeks>[0-9]+)w$")
_COUNT = re.compile(r"^x(?P<n>[0-9]+)$")


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
        Administrations in the phase; ``None`` runs to the horizon (last phase only).
    """

    therapies: tuple[tuple[str, float], ...] = ()
    every_weeks: int = CYCLE_WEEKS
    doses: int | None = None

    def __post_init__(self) -> None:
        names = [t for t, _ in self.therapies]
        unknown = [t for t in names if t not in THERAPIES]
        if unknown:
            raise ValueError(f"therapies: unknown therapy {unknown}; expected ids from "
                             f"{list(THERAPIES)}")
        if len(set(names)) != len(names):
            raise ValueError(f"therapies: a therapy appears twice in {names}")
        bad = [d for _, d in self.therapies if not (math.isfinite(d) and d > 0)]
        if bad:
            raise ValueError(f"therapies: dose multiples {bad}; expected numbers > 0")
        ordered = tuple(sorted(self.therapies, key=lambda td: THERAPIES.index(td[0])))
        object.__setattr__(self, "therapies", ordered)
        if not (isinstance(self.every_weeks, int) and self.every_weeks >= 1):
            raise ValueError(f"every_weeks: got {self.every_weeks!r}; expected an integer >= 1")
        if self.doses is not None and not (isinstance(self.doses, int) and self.doses >= 1):
            raise ValueError(f"doses: got {self.doses!r}; expected an integer >= 1 or None")

    @property
    def label(self) -> str:
        """The therapy set as text (``"anti_pd1+anti_ctla4"``, ``"none"``)."""
        if not self.therapies:
            return NO_THERAPY
        # Positional, shortest round-trip digits: parse_plan reads back exactly this dose.
        return "+".join(t if d == 1.0 else f"{t}@{np.format_float_positional(d, trim='-')}"
                        for t, d in self.therapies)

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
        The phases; only the last may be open-ended (``doses=None``).
    """

    phases: tuple[Phase, ...]

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError("phases: a regimen needs at least one phase")
        for i, phase in enumerate(self.phases[:-1]):
            if phase.doses is None:
                raise ValueError(f"phases: phase {i + 1} ({phase}) has no 'xN' count; only "
                                 "the last phase may run to the horizon")

    def __str__(self) -> str:
        return " -> ".join(str(p) for p in self.phases)

    @property
    def therapies(self) -> tuple[str, ...]:
        """Therapies used anywhere in the plan, in :data:`THERAPIES` order."""
        used = {t for p in self.phases for t, _ in p.therapies}
        return tuple(t for t in THERAPIES if t in used)

    def cycle_doses(self, horizon: int, cycle_days: int = 7 * CYCLE_WEEKS) -> np.ndarray:
        """Lay the plan out as ``(horizon, R)`` dose multiples per cycle.

        A phase of ``xN`` every ``qKw`` spans ``N * K`` weeks and gives a dose in its first
        cycle and every ``K`` weeks after; the plan is cut at the horizon, and cycles after
        its last phase are untreated.

        Raises
        ------
        ValueError
            If a schedule is not a whole number of cycles.
        """
        if isinstance(horizon, bool) or not (isinstance(horizon, (int, np.integer))
                                             and horizon >= 1):
            raise ValueError(f"horizon: got {horizon!r}; expected an integer >= 1")
        out = np.zeros((int(horizon), len(THERAPIES)), dtype=np.float32)
        cycle = 0
        for phase in self.phases:
            days = phase.every_weeks * 7
            if days % cycle_days:
                raise ValueError(f"every_weeks: {phase} gives a dose every {days} days, not a "
                                 f"whole number of {cycle_days}-day cycles")
            step = days // cycle_days
            n = phase.doses if phase.doses is not None else math.ceil((horizon - cycle) / step)
            dose = phase.dose_vector()
            for k in range(n):
                if cycle + k * step < horizon:
                    out[cycle + k * step] = dose
            cycle += n * step
            if cycle >= horizon:
                break
        return out

    @classmethod
    def from_cycle_doses(cls, doses: np.ndarray) -> RegimenPlan:
        """The plan of an ``(H, R)`` per-cycle dose array, repeated cycles merged (q3w)."""
        doses = np.asarray(doses, dtype=np.float64)
        if doses.ndim != 2 or doses.shape[1] != len(THERAPIES) or not len(doses):
            raise ValueError(f"doses: shape {doses.shape}; expected (cycles >= 1, "
                             f"{len(THERAPIES)})")
        phases: list[Phase] = []
        start = 0
        for h in range(1, len(doses) + 1):
            if h == len(doses) or not np.array_equal(doses[h], doses[start]):
                # The shortest decimal of the float32 dose (cycle_doses' precision): 0.3
                # stays 0.3, and laying the plan out again gives the same array.
                items = tuple((THERAPIES[r], _float32_decimal(d))
                              for r, d in enumerate(doses[start]) if d > 0)
                phases.append(Phase(items, CYCLE_WEEKS, h - start))
                start = h
        return cls(tuple(phases))


def _float32_decimal(value: float) -> float:
    """The shortest decimal that reads back as ``value`` in float32."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))


def parse_plan(text: str | RegimenPlan) -> RegimenPlan:
    """A plan from its text or a standard regimen's name (a plan is returned unchanged).

    Raises
    ------
    ValueError
        Naming the token that is wrong and the grammar expected.
    """
    if isinstance(text, RegimenPlan):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"regimen: got {text!r}; expected text such as 'anti_pd1 q3w x35' "
                         f"or a name from {sorted(STANDARD_REGIMENS)}")
    name = text.strip()
    if name in STANDARD_REGIMENS:
        name = STANDARD_REGIMENS[name]
    return RegimenPlan(tuple(_parse_phase(part.strip(), text) for part in name.split("->")))


def _parse_phase(part: str, text: str) -> Phase:
    tokens = part.split()
    if not tokens:
        raise ValueError(f"regimen: {text!r} has an empty phase; expected "
                         "'therapy[+therapy][@dose] [qNw] [xN]' between '->'")
    items: list[tuple[str, float]] = []
    if tokens[0] != NO_THERAPY:
        for item in tokens[0].split("+"):
            match = _ITEM.match(item)
            if not match or match["therapy"] not in THERAPIES:
                raise ValueError(f"regimen: {item!r} in {text!r} is not a therapy; expected "
                                 f"ids from {list(THERAPIES)}, optionally '@dose' (e.g. "
                                 f"'anti_pd1@0.5'), or {NO_THERAPY!r}")
            items.append((match["therapy"], float(match["dose"] or 1.0)))
    every, count = None, None
    for token in tokens[1:]:
        if (m := _SCHEDULE.match(token)) and every is None:
            every = int(m["weeks"])
        elif (m := _COUNT.match(token)) and count is None:
            count = int(m["n"])
        else:
            raise ValueError(f"regimen: unexpected {token!r} in {part!r}; expected at most one "
                             "schedule 'qNw' (weeks) and one count 'xN' (administrations)")
    return Phase(tuple(items), CYCLE_WEEKS if every is None else every, count)


def standard_of_care(cancer_type: str) -> RegimenPlan:
    """The guideline regimen of a cancer type (:data:`STANDARD_OF_CARE`)."""
    if cancer_type not in STANDARD_OF_CARE:
        raise ValueError(f"cancer_type: no standard of care for {cancer_type!r}; expected one "
                         f"of {sorted(STANDARD_OF_CARE)}")
    return parse_plan(STANDARD_OF_CARE[cancer_type])
