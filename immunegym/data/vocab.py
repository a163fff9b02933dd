"""Controlled vocabularies of the data layer: therapies and response labels.

Therapy ids are shared with ImmuneSim and the environments; lab spellings ("PD1",
"nivolumab", "Combo") are normalized here so trajectories carry one vocabulary.
"""

from __future__ import annotations

import math
import re

THERAPIES: tuple[str, ...] = ("anti_pd1", "anti_ctla4", "chemo", "radio", "targeted")
"""Therapy ids, in the order of the multi-hot therapy vectors."""

NO_THERAPY = "none"

_THERAPY_ALIASES: dict[str, tuple[str, ...]] = {
    "pd1": ("anti_pd1",), "antipd1": ("anti_pd1",), "pdl1": ("anti_pd1",),
    "antipdl1": ("anti_pd1",), "pembrolizumab": ("anti_pd1",), "nivolumab": ("anti_pd1",),
    "atezolizumab": ("anti_pd1",), "durvalumab": ("anti_pd1",), "cemiplimab": ("anti_pd1",),
    "ctla4": ("anti_ctla4",), "antictla4": ("anti_ctla4",),
    "ipilimumab": ("anti_ctla4",), "tremelimumab": ("anti_ctla4",),
    "combo": ("anti_pd1", "anti_ctla4"), "pd1ctla4": ("anti_pd1", "anti_ctla4"),
    "chemo": ("chemo",), "chemotherapy": ("chemo",),
    "radio": ("radio",), "radiotherapy": ("radio",), "radiation": ("radio",), "rt": ("radio",),
    "targeted": ("targeted",), "braf": ("targeted",), "mek": ("targeted",),
    "brafi": ("targeted",), "tki": ("targeted",),
    "none": (), "untreated": (), "naive": (),
}


def parse_regimen(value: object, field: str = "therapy") -> tuple[str, ...] | None:
    """Normalize a regimen label to a sorted tuple of therapy ids.

    Parameters
    ----------
    value
        E.g. ``"anti_pd1+anti_ctla4"``, ``"PD1"``, ``"Combo"``, ``"none"``. Missing values
        (``None``/NaN/empty) mean "not recorded".
    field
        Name of the column, used in error messages.

    Returns
    -------
    tuple of str or None
        Therapy ids in :data:`THERAPIES` order (empty for untreated), ``None`` if missing.

    Raises
    ------
    ValueError
        If a component is not a known therapy; the message names the field and value.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    if not text:
        return None
    found: set[str] = set()
    for part in re.split(r"\s*[+&,]\s*|\s+and\s+", text):
        key = re.sub(r"[^a-z0-9]", "", part.lower())
        if key not in _THERAPY_ALIASES:
            raise ValueError(
                f"{field}: value {value!r} contains {part!r}, which is not a known therapy; "
                f"expected therapy ids {list(THERAPIES)} joined by '+', or {NO_THERAPY!r}"
            )
        found.update(_THERAPY_ALIASES[key])
    return tuple(t for t in THERAPIES if t in found)


def format_regimen(therapies: tuple[str, ...]) -> str:
    """The canonical text of a regimen: ids joined by '+', or ``"none"``."""
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
    ValueError
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
    raise ValueError(
        f"{field}: value {value!r} is not a response label; expected R/NR, "
        "responder/non-responder, RECIST CR/PR/SD/PD (or CRPR), or a boolean"
    )
