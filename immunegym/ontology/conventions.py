"""Published label conventions whose labels are codes rather than words.

Most labs write cell-type names that the rule-based harmonizer reads directly. Some publish
cluster codes ("G1".."G11") whose meaning lives in the paper; a convention translates those
codes into the paper's own words before harmonization, so the rules still do the mapping.
"""

from __future__ import annotations

from collections.abc import Mapping

from immunegym.validation import choice

# Sade-Feldman et al., Cell 2018 (GSE120575), Figure 1: the 11 CD45+ clusters.
SADE_FELDMAN_2018: dict[str, str] = {
    "G1": "B cells",
    "G2": "Plasma cells",
    "G3": "Monocytes/Macrophages",
    "G4": "Dendritic cells",
    "G5": "Lymphocytes",
    "G6": "Exhausted CD8+ T cells",
    "G7": "Regulatory T cells",
    "G8": "Cytotoxicity Lymphocytes",
    "G9": "Exhausted/HS CD8+ T cells",
    "G10": "Memory T cells",
    "G11": "Lymphocytes exhausted/Cell cycle",
}

CONVENTIONS: dict[str, Mapping[str, str]] = {"sade_feldman_2018": SADE_FELDMAN_2018}


def get_convention(name: str) -> Mapping[str, str]:
    """The code -> name table of a published convention.

    Raises
    ------
    ValidationError
        If ``name`` is not a known convention; the message lists the known ones.
    """
    return CONVENTIONS[choice("convention", name, sorted(CONVENTIONS))]
