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
"""

from __future__ import annotations

from immunegym.regimen_grammar import (
    CYCLE_WEEKS,
    STANDARD_COURSE,
    STANDARD_REGIMENS,
    Phase,
    RegimenPlan,
    parse_plan,
    parse_therapy_set,
)
from immunegym.validation import ValidationError, choice

__all__ = [
    "CYCLE_WEEKS",
    "STANDARD_COURSE",
    "STANDARD_OF_CARE",
    "STANDARD_REGIMENS",
    "Phase",
    "RegimenPlan",
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
