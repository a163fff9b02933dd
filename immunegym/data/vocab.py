"""Controlled vocabularies of the data layer: therapies and response labels.

Therapy ids are shared with ImmuneSim and the environments; lab spellings ("PD1",
"nivolumab", "Combo") are normalized by the package's one regimen grammar
(:mod:`immunegym.regimen_grammar`, re-exported here) so trajectories carry one vocabulary.
"""

from __future__ import annotations

import math
import re

from immunegym.regimen_grammar import (  # noqa: F401  (re-exported vocabulary)
    ALIASES,
    NO_THERAPY,
    THERAPIES,
    parse_plan,
    regimen_error,
)
from immunegym.validation import ValidationError


def parse_regimen(value: object, field: str = "therapy") -> tuple[str, ...] | None:
    """The therapies of a regimen label, in the package's one regimen grammar.

    Labels are read by :func:`immunegym.regimen_grammar.parse_plan` (the same words,
    names, schedules and errors as :func:`immunegym.sim.run_trial` and
    :func:`immunegym.planning.parse_plan`); the result is the set of therapies the regimen
    uses anywhere.

    Parameters
    ----------
    value
        E.g. ``"anti_pd1+anti_ctla4"``, ``"PD1"``, ``"Combo"``, ``"none"``,
        ``"anti_pd1+anti_ctla4 q3w x4 -> anti_pd1"``. Missing values (``None``/NaN/empty)
        mean "not recorded".
    field
        Name of the column, used in error messages.

    Returns
    -------
    tuple of str or None
        Therapy ids in :data:`THERAPIES` order (empty for untreated), ``None`` if missing.

    Raises
    ------
    ValidationError
        If the label is not in the grammar; the message names the field and value, shows
        the grammar and the known names.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    if not isinstance(value, str):
        raise regimen_error(field, value, "a regimen label must be text")
    return parse_plan(value, field).therapies


def format_regimen(therapies: tuple[str, ...]) -> str:
    """The canonical text of a regimen: ids joined by '+', or ``"none"``."""
    if isinstance(therapies, str) or any(t not in THERAPIES for t in therapies):
        raise ValidationError(f"therapies: got {therapies!r}; expected a tuple of therapy "
                              f"ids from {list(THERAPIES)}")
    return "+".join(therapies) if therapies else NO_THERAPY


_RESPONDER = {"r", "responder", "response", "cr", "pr", "crpr", "prcr", "yes", "1", "true"}
_NON_RESPONDER = {"nr", "nonresponder", "non_responder", "sd", "pd", "sdpd", "no", "0",
                  "false", "progression", "stable"}


def parse_response(value: object, field: str = "response") -> float:
    """Map a response label to 1.0 (responder), 0.0 (non-responder) or NaN (missing).

    Responders follow the RECIST convention used across ICB studies: CR/PR respond, SD/PD
    do not.

    Raises
    ------
    ValidationError
        If the value is not a recognised response label.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    if isinstance(value, bool):
        return float(value)
    key = re.sub(r"[^a-z0-9_]", "", str(value).strip().lower().replace("-", "_"))
    if key in ("", "na", "nan", "ne", "unknown"):
        return math.nan
    if key in _RESPONDER:
        return 1.0
    if key.replace("_", "") in _NON_RESPONDER or key in _NON_RESPONDER:
        return 0.0
    raise ValidationError(
        f"{field}: value {value!r} is not a response label; expected R/NR, "
        "responder/non-responder, RECIST CR/PR/SD/PD (or CRPR), or a boolean"
    )
