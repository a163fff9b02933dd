"""A regimen algebra: phases of therapy sets with doses and schedules, as text and as cycles.

A :class:`RegimenPlan` is a sequence of :class:`Phase` s. Each phase gives a set of therapies
(each at a dose multiple of its standard dose) every ``every_weeks`` weeks, ``doses`` times.
Text form, parsed by :func:`parse_plan` and printed by ``str``::

    anti_pd1 q3w x35
    anti_pd1+anti_ctla4 q3w x4 -> anti_pd1
    chemo+anti_pd1@0.5 q3w x4 -> anti_pd1 q6w x8
    none x2 -> anti_pd1

The grammar is the package's one regimen grammar, :mod:`immunegym.regimen_grammar` (read
its docstring for every rule): ``q3w`` is the default schedule and is printed only when
another one is used; ``xN`` counts administrations, so ``q6w x2`` spans four 3-week cycles;
only the last phase may leave out ``xN``, and then each therapy gets its standard course
(anti_pd1 x35, anti_ctla4 x4, chemo x4, radio x1, targeted to the horizon). Standard
regimens have names (:data:`STANDARD_REGIMENS`), and :data:`STANDARD_OF_CARE` names a
guideline regimen per cancer type.

The environments act per cycle, so a plan lays out as an ``(H, R)`` array of dose
multiples per cycle (:meth:`RegimenPlan.cycle_doses`) and back again
(:meth:`RegimenPlan.from_cycle_doses`, which merges repeated cycles into phases).
:func:`describe_plan` writes such an array as a protocol would (``"anti_pd1+anti_ctla4 q3w
x4 -> anti_pd1 q3w x4"``): regular courses every 1-4 cycles become one phase, every phase
states its schedule and count, and untreated cycles at the end are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from immunegym.regimen_grammar import (
    CYCLE_WEEKS,
    MAX_COUNT,
    MAX_DOSE_MULTIPLE,
    NO_THERAPY,
    STANDARD_COURSE,
    STANDARD_REGIMENS,
    THERAPIES,
    Phase,
    RegimenPlan,
    parse_plan,
    parse_therapy_set,
)
from immunegym.validation import ValidationError, bad, choice, integer

__all__ = [
    "CYCLE_WEEKS",
    "STANDARD_COURSE",
    "STANDARD_OF_CARE",
    "STANDARD_REGIMENS",
    "Phase",
    "RegimenPlan",
    "describe_plan",
    "parse_plan",
    "parse_therapy_set",
    "standard_of_care",
]

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


def standard_of_care(cancer_type: str) -> RegimenPlan:
    """The guideline regimen of a cancer type (:data:`STANDARD_OF_CARE`)."""
    try:
        choice("cancer_type", cancer_type, sorted(STANDARD_OF_CARE))
    except ValidationError as err:
        raise ValidationError(f"{err} (there is no standard of care for other types)") from None
    return parse_plan(STANDARD_OF_CARE[cancer_type])


MAX_SCHEDULE_CYCLES = 4
"""Longest schedule :func:`describe_plan` looks for: a dose every 4 cycles (q12w)."""


def _therapy_names(therapies: object, n_columns: int) -> tuple[str, ...]:
    """``therapies`` as distinct therapy ids, one per dose column."""
    if isinstance(therapies, str) or not isinstance(therapies, Sequence):
        raise bad("therapies", therapies, f"a sequence of therapy ids from {list(THERAPIES)}")
    names = tuple(therapies)
    unknown = [t for t in names if t not in THERAPIES]
    if unknown or len(set(names)) != len(names) or len(names) != n_columns:
        raise bad("therapies", list(names), f"{n_columns} distinct therapy ids from "
                  f"{list(THERAPIES)}, one per dose column")
    return names


def _shortest_decimal(value: float) -> float:
    """The shortest decimal that reads back as ``value`` in float32 (0.5, not 0.5000001)."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))


def describe_plan(doses: object, therapies: Sequence[str] = THERAPIES,
                  cycle_days: int = 7 * CYCLE_WEEKS) -> str:
    """Per-cycle doses as protocol text: ``"anti_pd1+anti_ctla4 q3w x4 -> anti_pd1 q3w x13"``.

    Cycles are read from the first: a run of cycles giving the same doses every ``k``
    cycles (untreated between) becomes one phase ``set qNw xN`` (``k`` of 1 to
    :data:`MAX_SCHEDULE_CYCLES`; the longest run wins, the shortest schedule on ties), an
    untreated gap becomes ``none xN``, and untreated cycles after the last dose are left
    out. Every phase states its schedule and count, so the text lays out exactly again:
    ``parse_plan(describe_plan(d)).cycle_doses(len(d), cycle_days)`` equals ``d`` (as
    float32). A plan without any dose is ``"none"``.

    Parameters
    ----------
    doses
        ``(H, R)`` dose multiples per cycle (``>= 0``; a therapy's at most
        :data:`~immunegym.regimen_grammar.MAX_DOSE_MULTIPLE`).
    therapies
        The therapy id of each of the ``R`` columns (default: all therapies in order).
    cycle_days
        Days per cycle, a multiple of 7 (``qNw`` counts weeks).

    Returns
    -------
    str
        Regimen text in the grammar of :mod:`immunegym.regimen_grammar`.

    Raises
    ------
    ValidationError
        Naming ``doses``, ``therapies`` or ``cycle_days`` when one is malformed.
    """
    try:
        d = np.asarray(doses, dtype=np.float32)
    except (TypeError, ValueError):
        raise bad("doses", doses, "(cycles, therapies) dose multiples") from None
    if d.ndim != 2 or not d.shape[0] or not d.shape[1]:
        raise bad("doses", f"<shape {d.shape}>", "a (cycles >= 1, therapies >= 1) array of "
                  "dose multiples")
    if not np.isfinite(d).all() or (d < 0).any():
        raise bad("doses", "<negative or non-finite doses>", "finite dose multiples >= 0")
    names = _therapy_names(therapies, d.shape[1])
    cycle_days = integer("cycle_days", cycle_days, low=7, high=3650)
    if cycle_days % 7:
        raise bad("cycle_days", cycle_days, "a whole number of weeks (a multiple of 7 days): "
                  "schedules 'qNw' count weeks")
    for r, therapy in enumerate(names):
        top = float(d[:, r].max())
        if top > MAX_DOSE_MULTIPLE[therapy]:
            raise bad("doses", f"<{therapy} at {top:g} x the standard dose>", "dose "
                      f"multiples of {therapy} at most {MAX_DOSE_MULTIPLE[therapy]:g}")
    n_cycles, weeks = len(d), cycle_days // 7
    parts: list[str] = []
    i = 0
    while i < n_cycles:
        v = d[i]
        if not v.any():
            j = i
            while j < n_cycles and not d[j].any():
                j += 1
            if j == n_cycles:
                break  # untreated to the end: the plan stops
            parts.extend(_phase_text(NO_THERAPY, weeks, j - i))
            i = j
            continue
        step, count = 1, 1
        while i + count < n_cycles and np.array_equal(d[i + count], v):
            count += 1
        span = count
        for k in range(2, MAX_SCHEDULE_CYCLES + 1):
            n, pos = 0, i
            while (pos < n_cycles and np.array_equal(d[pos], v)
                   and not d[pos + 1: min(pos + k, n_cycles)].any()):
                n, pos = n + 1, pos + k
            covered = min(n * k, n_cycles - i)
            if n >= 2 and covered > span:
                step, count, span = k, n, covered
        items = tuple((names[r], _shortest_decimal(x)) for r, x in enumerate(v) if x > 0)
        parts.extend(_phase_text(Phase(items).label, weeks * step, count))
        i += span
    return " -> ".join(parts) if parts else NO_THERAPY


def _phase_text(label: str, every_weeks: int, count: int) -> list[str]:
    """``label qNw xN`` (``none`` states its schedule only when it is not q3w), split into
    phases of at most :data:`~immunegym.regimen_grammar.MAX_COUNT` administrations."""
    schedule = ("" if label == NO_THERAPY and every_weeks == CYCLE_WEEKS
                else f" q{every_weeks}w")
    out = []
    while count > 0:
        out.append(f"{label}{schedule} x{min(count, MAX_COUNT)}")
        count -= MAX_COUNT
    return out
