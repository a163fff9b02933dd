"""The observation model: what a lab delivers from one biopsy of a simulated tumor.

The mechanistic simulator tracks a hidden cell composition (fractions over the 20 fine
types of :data:`immunegym.ontology.FINE_TYPES`) and a few per-biopsy signals (IFN-gamma
tone, proliferation, TGF-beta). Nobody observes those directly. A lab takes a biopsy,
sequences some cells and hands back a table of cells with its own labels and counts over
a panel of marker genes. This module simulates that hand-over in four steps:

1. **Sampling** (:func:`sample_biopsy`). A biopsy hits one site of a heterogeneous tumor:
   its proportions are a Dirichlet draw around the true composition (``concentration``
   sets how much sites differ), then a multinomial picks ``n_cells`` cells.
2. **Expression** (:func:`simulate_cells`). Each fine type has a relative expression
   profile over :data:`MARKER_PANEL` (:data:`TYPE_PROFILES`). Signals multiply selected
   genes in selected types (:data:`STATE_PROGRAMS`), a per-lab batch effect multiplies
   every gene (:func:`sample_batch_effect`), and the result is renormalized. Each cell
   draws a log-normal library size; counts are negative binomial (gamma-Poisson) around
   ``library * profile`` with the lab's inverse dispersion.
3. **Labelling.** Each lab has its own vocabulary (:class:`LabConvention`): several fine
   types may share one label (a coarse lab cannot tell them apart) and one type may be
   split over several labels at random (a lab that clusters finer or differently).
4. **Misannotation.** A small fraction of cells receive the label of another cell type
   present in the same biopsy, as happens when clusters are annotated by hand.

Every lab vocabulary in :data:`LABS` is readable by
:func:`immunegym.ontology.harmonize_labels`: each label maps to the fine type it came
from, or to a common ancestor when the label merges types. All randomness comes from the
``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from immunegym.data.programs import DEFAULT_PROGRAMS
from immunegym.ontology import FINE_TYPES
from immunegym.validation import ValidationError, bad, integer, memory_budget, number

__all__ = [
    "IGNORED_SIGNALS",
    "LABS",
    "MARKER_PANEL",
    "STATE_PROGRAMS",
    "TYPE_PROFILES",
    "LabConvention",
    "StateProgram",
    "expression_profiles",
    "sample_batch_effect",
    "sample_biopsy",
    "simulate_cells",
]

_N_TYPES = len(FINE_TYPES)
MAX_CELLS = 10**7
"""Most cells one biopsy draw takes (real biopsies give hundreds to thousands)."""
_TYPE_INDEX = {t: i for i, t in enumerate(FINE_TYPES)}

# ---------------------------------------------------------------------------- gene panel
# Grouped by what the genes report; order is the column order of every counts matrix.
_PANEL_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("housekeeping", ("ACTB", "GAPDH", "B2M")),
    ("antigen presentation", ("HLA-A", "HLA-B", "TAP1", "HLA-DRA", "CD74")),
    ("interferon response", ("STAT1", "ISG15", "IFIT1", "IFIT3", "MX1", "IFI6", "GBP1",
                             "CXCL9", "CXCL10", "CD274", "IDO1")),
    ("proliferation", ("MKI67", "TOP2A", "MCM2", "TYMS", "STMN1", "TUBB")),
    ("epithelial tumor", ("EPCAM", "KRT8", "KRT18", "KRT19", "CDH1")),
    ("immune", ("PTPRC", "TYROBP")),
    ("T cell", ("CD3D", "CD3E", "CD2", "CD8A", "CD8B", "CD4")),
    ("naive, memory, progenitor", ("IL7R", "CCR7", "SELL", "TCF7", "LEF1", "SLAMF6",
                                   "CXCR5", "ZNF683")),
    ("cytotoxicity", ("GZMA", "GZMB", "GZMH", "GZMK", "PRF1", "NKG7", "GNLY", "IFNG",
                      "CX3CR1", "KLRG1", "FGFBP2")),
    ("exhaustion", ("PDCD1", "HAVCR2", "TOX", "LAG3", "TIGIT", "CXCL13", "ENTPD1", "LAYN",
                    "CTLA4")),
    ("CD4 helper, Treg", ("CD40LG", "ICOS", "FOXP3", "IL2RA", "RTKN2", "IKZF2", "TNFRSF9")),
    ("NK", ("NCAM1", "KLRD1", "KLRF1", "FCGR3A")),
    ("B cell", ("CD19", "MS4A1", "CD79A", "CD79B", "IGHM")),
    ("plasma cell", ("JCHAIN", "MZB1", "SDC1", "XBP1", "IGHG1", "IGKC")),
    ("dendritic cell", ("CLEC9A", "XCR1", "BATF3", "IRF8", "CD1C", "FCER1A", "CLEC10A",
                        "LAMP3", "LILRA4")),
    ("monocyte", ("CD14", "LYZ", "VCAN", "FCN1", "S100A8", "S100A9", "CSF1R", "ITGAM",
                  "CD33")),
    ("macrophage", ("CD68", "C1QA", "C1QC", "IL1B", "TNF", "NOS2", "CD80", "CD163", "MRC1",
                    "SPP1", "APOE", "TREM2", "FOLR2", "LYVE1")),
    ("MDSC, neutrophil", ("ARG1", "CSF3R", "FCGR3B", "CXCR2", "CXCL8", "G0S2")),
    ("mast cell", ("TPSAB1", "TPSB2", "CPA3", "KIT", "MS4A2")),
    ("fibroblast", ("COL1A1", "COL1A2", "COL3A1", "DCN", "LUM", "FAP", "ACTA2", "PDGFRB",
                    "TAGLN", "POSTN", "TGFB1")),
    ("endothelial", ("PECAM1", "VWF", "CDH5", "KDR", "PLVAP", "ENG")),
)

MARKER_PANEL: tuple[str, ...] = tuple(g for _, genes in _PANEL_GROUPS for g in genes)
"""Gene symbols measured per cell: canonical markers of every fine type, the genes of
every :data:`immunegym.data.programs.DEFAULT_PROGRAMS` program, state genes and
housekeeping genes."""

_GENE_INDEX = {g: j for j, g in enumerate(MARKER_PANEL)}

# ---------------------------------------------------------------------------- profiles
# Relative expression in arbitrary units: ~10 is a strong marker, ~3 moderate, ~1 low.
# Genes a type does not list sit at _BACKGROUND (ambient RNA, leaky expression).
_BACKGROUND = 0.05

# Expressed by every cell; a type's own table overrides these values.
_SHARED: dict[str, float] = {
    "ACTB": 30.0, "GAPDH": 15.0, "B2M": 20.0, "HLA-A": 6.0, "HLA-B": 6.0, "TAP1": 1.0,
    "STAT1": 1.0, "ISG15": 1.0, "IFI6": 1.0, "IFIT1": 0.5, "IFIT3": 0.5, "MX1": 0.5,
    "TUBB": 2.0, "STMN1": 1.0,
}
_IMMUNE: dict[str, float] = {"PTPRC": 6.0}
_T_CELL: dict[str, float] = {**_IMMUNE, "CD3D": 8.0, "CD3E": 8.0, "CD2": 5.0}
_CD8: dict[str, float] = {**_T_CELL, "CD8A": 8.0, "CD8B": 6.0}
_CD4: dict[str, float] = {**_T_CELL, "CD4": 6.0}
_MHC_II: dict[str, float] = {"CD74": 15.0, "HLA-DRA": 12.0}

_PROFILE_TABLE: dict[str, dict[str, float]] = {
    "malignant": {
        "B2M": 10.0, "HLA-A": 3.0, "HLA-B": 3.0,  # tumors down-regulate class I
        "EPCAM": 8.0, "KRT8": 10.0, "KRT18": 10.0, "KRT19": 6.0, "CDH1": 4.0,
        "MKI67": 1.5, "TOP2A": 1.5, "MCM2": 2.0, "TYMS": 2.0, "STMN1": 4.0, "TUBB": 4.0,
        "CD274": 0.5, "TGFB1": 1.0,
    },
    "cd8_memory": {
        **_CD8, "IL7R": 6.0, "CCR7": 4.0, "SELL": 4.0, "TCF7": 4.0, "LEF1": 3.0,
        "GZMK": 4.0, "GZMA": 2.0, "ZNF683": 1.5,
    },
    "cd8_effector": {
        **_CD8, "GZMB": 8.0, "PRF1": 6.0, "NKG7": 8.0, "GNLY": 6.0, "GZMA": 6.0,
        "GZMH": 6.0, "GZMK": 3.0, "CX3CR1": 4.0, "KLRG1": 4.0, "FGFBP2": 4.0, "IFNG": 2.0,
        "KLRD1": 2.0,
    },
    "cd8_tpex": {
        **_CD8, "TCF7": 5.0, "SLAMF6": 5.0, "IL7R": 3.0, "CXCR5": 3.0, "CCR7": 1.5,
        "SELL": 1.0, "PDCD1": 3.0, "TOX": 3.0, "TIGIT": 2.0, "LAG3": 1.0, "GZMK": 3.0,
        "CXCL13": 0.5, "HAVCR2": 0.3, "GZMB": 1.0, "MKI67": 0.5,
    },
    "cd8_tex": {
        **_CD8, "PDCD1": 8.0, "HAVCR2": 8.0, "TOX": 6.0, "LAG3": 8.0, "TIGIT": 6.0,
        "CXCL13": 8.0, "ENTPD1": 6.0, "LAYN": 4.0, "CTLA4": 4.0, "GZMB": 6.0, "PRF1": 3.0,
        "NKG7": 5.0, "IFNG": 3.0, "MKI67": 1.0, "TOP2A": 1.0,
        "TCF7": 0.1, "IL7R": 0.2, "SLAMF6": 0.3,  # the progenitor program is lost
    },
    "cd4_helper": {
        **_CD4, "IL7R": 6.0, "CD40LG": 4.0, "ICOS": 3.0, "CCR7": 3.0, "SELL": 2.0,
        "TCF7": 3.0, "LEF1": 2.0, "CXCR5": 1.0, "CXCL13": 1.0, "GZMK": 1.0, "IFNG": 1.0,
        "TNF": 1.0,
    },
    "treg": {
        **_CD4, "FOXP3": 8.0, "IL2RA": 6.0, "CTLA4": 6.0, "RTKN2": 4.0, "IKZF2": 4.0,
        "TIGIT": 4.0, "TNFRSF9": 3.0, "ICOS": 4.0, "ENTPD1": 2.0, "LAYN": 1.0, "IL7R": 1.0,
    },
    "nk": {
        **_IMMUNE, "NCAM1": 4.0, "KLRD1": 8.0, "KLRF1": 6.0, "FCGR3A": 6.0, "GNLY": 10.0,
        "NKG7": 10.0, "PRF1": 6.0, "GZMB": 6.0, "GZMA": 4.0, "TYROBP": 6.0,
        "CD2": 2.0,
    },
    "b_cell": {
        **_IMMUNE, **_MHC_II, "HLA-DRA": 10.0, "CD19": 5.0, "MS4A1": 8.0, "CD79A": 8.0,
        "CD79B": 6.0, "IGHM": 6.0,
    },
    "plasma_cell": {
        **_IMMUNE, "PTPRC": 2.0, "JCHAIN": 15.0, "MZB1": 10.0, "SDC1": 4.0, "XBP1": 8.0,
        "IGHG1": 20.0, "IGKC": 20.0, "CD79A": 3.0, "CD74": 2.0,
    },
    "cdc1": {
        **_IMMUNE, **_MHC_II, "CLEC9A": 8.0, "XCR1": 6.0, "BATF3": 4.0, "IRF8": 6.0,
        "IDO1": 3.0, "CCR7": 0.5,
    },
    "dc_other": {
        **_IMMUNE, **_MHC_II, "CD1C": 8.0, "FCER1A": 6.0, "CLEC10A": 5.0, "LAMP3": 3.0,
        "CCR7": 3.0, "LILRA4": 2.0, "IRF8": 2.0,
    },
    "monocyte": {
        **_IMMUNE, "CD74": 8.0, "HLA-DRA": 6.0, "CD14": 10.0, "LYZ": 12.0, "VCAN": 6.0,
        "FCN1": 8.0, "S100A8": 8.0, "S100A9": 10.0, "CSF1R": 3.0, "FCGR3A": 2.0,
        "CD68": 3.0, "ITGAM": 3.0, "TYROBP": 5.0, "CD33": 3.0,
    },
    "macrophage_m1": {
        **_IMMUNE, **_MHC_II, "CD68": 10.0, "CXCL9": 4.0, "CXCL10": 4.0, "IL1B": 6.0,
        "TNF": 4.0, "NOS2": 1.0, "CD80": 2.0, "STAT1": 2.0, "GBP1": 2.0,
        "ISG15": 2.0, "CD274": 1.0, "IDO1": 1.0, "C1QA": 4.0, "C1QC": 4.0, "TYROBP": 6.0,
        "CSF1R": 4.0, "LYZ": 6.0, "APOE": 2.0, "CD163": 1.0,
    },
    "macrophage_m2": {
        **_IMMUNE, "CD74": 10.0, "HLA-DRA": 6.0, "CD68": 10.0, "CD163": 8.0, "MRC1": 8.0,
        "SPP1": 8.0, "APOE": 10.0, "TREM2": 6.0, "FOLR2": 5.0, "LYVE1": 3.0, "C1QA": 8.0,
        "C1QC": 8.0, "CSF1R": 6.0, "TGFB1": 2.0, "TYROBP": 6.0, "LYZ": 4.0,
        "CD14": 3.0,
    },
    "mdsc": {
        **_IMMUNE, "S100A8": 12.0, "S100A9": 12.0, "ARG1": 4.0, "CD33": 5.0, "ITGAM": 5.0,
        "LYZ": 6.0, "CD14": 2.0, "CSF3R": 3.0, "IL1B": 2.0, "VCAN": 3.0,
        "FCN1": 3.0, "CXCR2": 2.0, "TGFB1": 2.0, "TYROBP": 4.0,
        "HLA-DRA": 0.5, "CD74": 1.0,  # HLA-DR low is how MDSCs are defined
    },
    "neutrophil": {
        **_IMMUNE, "CSF3R": 10.0, "FCGR3B": 10.0, "CXCR2": 8.0, "CXCL8": 8.0,
        "S100A8": 12.0, "S100A9": 12.0, "G0S2": 6.0, "ITGAM": 3.0, "IL1B": 2.0,
        "TYROBP": 4.0, "CD74": 0.2,
    },
    "mast_cell": {
        **_IMMUNE, "PTPRC": 3.0, "TPSAB1": 15.0, "TPSB2": 12.0, "CPA3": 10.0, "KIT": 6.0,
        "MS4A2": 6.0, "CD74": 1.0,
    },
    "fibroblast": {
        "COL1A1": 15.0, "COL1A2": 15.0, "COL3A1": 12.0, "DCN": 10.0, "LUM": 8.0,
        "FAP": 3.0, "ACTA2": 3.0, "PDGFRB": 4.0, "TAGLN": 3.0, "POSTN": 2.0, "TGFB1": 1.0,
    },
    "endothelial": {
        "PECAM1": 8.0, "VWF": 10.0, "CDH5": 6.0, "KDR": 4.0, "PLVAP": 6.0, "ENG": 4.0,
        "HLA-DRA": 1.0, "CD74": 2.0,
    },
}


def _build_profiles() -> np.ndarray:
    """Turn the readable tables into row-normalized relative expression."""
    # Import-time consistency checks: a typo here would silently zero a marker.
    unknown = {g for table in _PROFILE_TABLE.values() for g in table} - set(_GENE_INDEX)
    uncovered = {g for genes in DEFAULT_PROGRAMS.values() for g in genes} - set(_GENE_INDEX)
    if unknown or uncovered or set(_PROFILE_TABLE) != set(FINE_TYPES):
        raise RuntimeError(
            f"profile tables out of sync: unknown genes {sorted(unknown)}, program genes "
            f"missing from the panel {sorted(uncovered)}, or types differ from FINE_TYPES"
        )
    weights = np.full((_N_TYPES, len(MARKER_PANEL)), _BACKGROUND)
    for i, cell_type in enumerate(FINE_TYPES):
        for gene, w in {**_SHARED, **_PROFILE_TABLE[cell_type]}.items():
            weights[i, _GENE_INDEX[gene]] = w
    profiles = weights / weights.sum(axis=1, keepdims=True)
    profiles.flags.writeable = False  # shared module state: guard against edits
    return profiles


TYPE_PROFILES: np.ndarray = _build_profiles()
"""``(len(FINE_TYPES), len(MARKER_PANEL))`` relative expression; each row sums to 1."""


# ---------------------------------------------------------------------------- state programs
class StateProgram(NamedTuple):
    """How one hidden signal modulates expression.

    Attributes
    ----------
    types
        Fine types whose expression responds.
    genes
        Genes that respond (all in :data:`MARKER_PANEL`).
    log_fold
        Natural-log fold change per unit of signal (signals lie in [0, 1]), one per gene.
        Abundant genes (B2M, HLA) get small folds: profiles are renormalized per cell, so a
        large fold on an abundant gene would dilute every other gene of the cell.
    """

    types: tuple[str, ...]
    genes: tuple[str, ...]
    log_fold: tuple[float, ...]


def _program(types: tuple[str, ...], log_folds: dict[str, float]) -> StateProgram:
    return StateProgram(types, tuple(log_folds), tuple(log_folds.values()))


_MYELOID_APC = ("monocyte", "macrophage_m1", "macrophage_m2", "mdsc", "cdc1", "dc_other")
_T_TYPES = ("cd8_memory", "cd8_effector", "cd8_tpex", "cd8_tex", "cd4_helper", "treg")

STATE_PROGRAMS: dict[str, StateProgram] = {
    # IFN-gamma from T/NK cells induces chemokines, PD-L1, interferon-stimulated genes and
    # antigen presentation in tumor cells and antigen-presenting myeloid cells.
    "ifn_gamma": _program(("malignant", *_MYELOID_APC), {
        "CXCL9": 2.0, "CXCL10": 2.0, "IDO1": 2.0, "GBP1": 2.0, "CD274": 1.5, "STAT1": 1.5,
        "ISG15": 1.5, "IFIT1": 1.5, "IFIT3": 1.5, "MX1": 1.5, "IFI6": 1.0, "TAP1": 1.0,
        "HLA-A": 0.5, "HLA-B": 0.5, "B2M": 0.3, "HLA-DRA": 0.7, "CD74": 0.5,
    }),
    # Cycling cells: tumor cells and clonally expanding T cells.
    "proliferation": _program(("malignant", *_T_TYPES), {
        "MKI67": 2.5, "TOP2A": 2.5, "MCM2": 1.5, "TYMS": 1.5, "STMN1": 0.7, "TUBB": 0.5,
    }),
    # TGF-beta turns fibroblasts into myofibroblast-like, matrix-producing CAFs.
    "tgf_beta": _program(("fibroblast",), {
        "ACTA2": 1.5, "FAP": 1.5, "POSTN": 1.5, "TAGLN": 1.0, "COL1A1": 0.5, "COL1A2": 0.5,
        "COL3A1": 0.5,
    }),
}
"""Signal name -> :class:`StateProgram`. Signals are per-biopsy floats in [0, 1]."""

IGNORED_SIGNALS: frozenset[str] = frozenset({"pd1_occupancy"})
"""Signals accepted but without effect on transcripts: an antibody bound to PD-1 blocks the
receptor; it does not change how much PDCD1 mRNA a cell makes."""


def _program_log_folds() -> dict[str, np.ndarray]:
    out = {}
    for name, program in STATE_PROGRAMS.items():
        mat = np.zeros((_N_TYPES, len(MARKER_PANEL)))
        rows = [_TYPE_INDEX[t] for t in program.types]
        cols = [_GENE_INDEX[g] for g in program.genes]
        mat[np.ix_(rows, cols)] = np.asarray(program.log_fold)[None, :]
        out[name] = mat
    return out


_PROGRAM_LOG_FOLDS = _program_log_folds()


# ---------------------------------------------------------------------------- lab conventions
@dataclass(frozen=True)
class LabConvention:
    """How one lab labels cells and what its assay looks like.

    Attributes
    ----------
    name
        Identifier of the lab convention.
    labels
        Fine type -> ``((label, probability), ...)``. Fine types sharing a label are
        merged by this lab; a type with several labels is split at random per cell.
        Probabilities per type must be positive and sum to 1.
    misannotation_rate
        Fraction of cells given the label of a random other type present in the biopsy.
    library_size_mean
        Mean UMIs per cell over :data:`MARKER_PANEL`.
    library_size_cv
        Coefficient of variation of the (log-normal) library size.
    batch_effect_sd
        Standard deviation of the per-gene natural-log batch effect.
    dispersion
        Negative-binomial size (inverse dispersion) ``theta``; variance is
        ``mu + mu**2 / theta``.

    Raises
    ------
    ValueError
        On a missing or unknown fine type, a bad probability, or an out-of-range number.
    """

    name: str
    labels: dict[str, tuple[tuple[str, float], ...]]
    misannotation_rate: float = 0.02
    library_size_mean: float = 800.0
    library_size_cv: float = 0.6
    batch_effect_sd: float = 0.2
    dispersion: float = 5.0

    def __post_init__(self) -> None:
        missing = [t for t in FINE_TYPES if t not in self.labels]
        if missing:
            raise ValidationError(
                f"labels: lab {self.name!r} gives no label for fine types {missing}; expected "
                f"one entry per fine type in {list(FINE_TYPES)}"
            )
        unknown = [t for t in self.labels if t not in _TYPE_INDEX]
        if unknown:
            raise ValidationError(
                f"labels: lab {self.name!r} names unknown fine types {unknown}; expected "
                f"keys from {list(FINE_TYPES)}"
            )
        for cell_type, choices in self.labels.items():
            if len(choices) == 0:
                raise ValidationError(
                    f"labels[{cell_type!r}]: got no (label, probability) pairs; expected at "
                    "least one"
                )
            for label, p in choices:
                if not isinstance(label, str) or not label.strip():
                    raise ValidationError(
                        f"labels[{cell_type!r}]: label {label!r} must be a non-empty string"
                    )
                if not np.isfinite(p) or p <= 0:
                    raise ValidationError(
                        f"labels[{cell_type!r}]: probability of {label!r} is {p}; expected "
                        "a positive number"
                    )
            total = float(sum(p for _, p in choices))
            if abs(total - 1.0) > 1e-6:
                raise ValidationError(
                    f"labels[{cell_type!r}]: probabilities sum to {total}; expected 1 "
                    "(within 1e-6)"
                )
        if not 0.0 <= self.misannotation_rate < 1.0:
            raise ValidationError(
                f"misannotation_rate: got {self.misannotation_rate}; expected a value in [0, 1)"
            )
        if not (np.isfinite(self.library_size_mean) and self.library_size_mean > 0):
            raise ValidationError(
                f"library_size_mean: got {self.library_size_mean}; expected a positive number"
            )
        if not (np.isfinite(self.library_size_cv) and self.library_size_cv >= 0):
            raise ValidationError(
                f"library_size_cv: got {self.library_size_cv}; expected a number >= 0"
            )
        if not (np.isfinite(self.batch_effect_sd) and self.batch_effect_sd >= 0):
            raise ValidationError(
                f"batch_effect_sd: got {self.batch_effect_sd}; expected a number >= 0"
            )
        if not (np.isfinite(self.dispersion) and self.dispersion > 0):
            raise ValidationError(f"dispersion: got {self.dispersion}; expected a positive number")

    @property
    def label_set(self) -> tuple[str, ...]:
        """Distinct labels this lab uses, in order of first appearance over FINE_TYPES."""
        return tuple(dict.fromkeys(lab for t in FINE_TYPES for lab, _ in self.labels[t]))

    def sources(self, label: str) -> tuple[str, ...]:
        """Fine types that can receive ``label`` (before misannotation)."""
        return tuple(t for t in FINE_TYPES if any(lab == label for lab, _ in self.labels[t]))

    def _label_cdf(self) -> np.ndarray:
        """``(n_types, n_labels)`` cumulative label probabilities per fine type."""
        index = {lab: k for k, lab in enumerate(self.label_set)}
        probs = np.zeros((_N_TYPES, len(index)))
        for cell_type, choices in self.labels.items():
            for label, p in choices:
                probs[_TYPE_INDEX[cell_type], index[label]] += p
        probs /= probs.sum(axis=1, keepdims=True)
        return np.cumsum(probs, axis=1)


def _one(label: str) -> tuple[tuple[str, float], ...]:
    return ((label, 1.0),)


def _lab(name: str, labels: Mapping[str, str | tuple[tuple[str, float], ...]],
         **assay: float) -> LabConvention:
    table = {t: _one(v) if isinstance(v, str) else v for t, v in labels.items()}
    return LabConvention(name=name, labels=table, **assay)


LABS: dict[str, LabConvention] = {
    # Zheng et al. 2021 pan-cancer T-cell atlas codes for T cells; plain names otherwise.
    # T cells are resolved finely, myeloid cells coarsely (DCs and macrophages merged).
    "atlas_zheng": _lab("atlas_zheng", {
        "malignant": "Tumor cells",
        "cd8_memory": (("CD8.c01.Tn.MAL", 0.25), ("CD8.c02.Tm.IL7R", 0.75)),
        "cd8_effector": (("CD8.c06.Tem.GZMK", 0.6), ("CD8.c07.Temra.CX3CR1", 0.4)),
        "cd8_tpex": "CD8.c14.Tex.TCF7",
        "cd8_tex": (("CD8.c12.Tex.CXCL13", 0.7), ("CD8.c11.Tex.PDCD1", 0.3)),
        "cd4_helper": (("CD4.c01.Tn.TCF7", 0.3), ("CD4.c16.Tfh.CXCR5", 0.3),
                       ("CD4.c17.TfhTh1.CXCL13", 0.4)),
        "treg": (("CD4.c18.Treg.RTKN2", 0.7), ("CD4.c20.Treg.TNFRSF9", 0.3)),
        "nk": "NK cells", "b_cell": "B cells", "plasma_cell": "Plasma cells",
        "cdc1": "DCs", "dc_other": "DCs", "monocyte": "Monocytes",
        "macrophage_m1": "Macrophages", "macrophage_m2": "Macrophages", "mdsc": "MDSC",
        "neutrophil": "Neutrophils", "mast_cell": "Mast cells", "fibroblast": "Fibroblasts",
        "endothelial": "Endothelial cells",
    }, misannotation_rate=0.02, library_size_mean=800.0, library_size_cv=0.6,
        batch_effect_sd=0.25, dispersion=5.0),
    # Sade-Feldman et al. 2018 (melanoma, Smart-seq2) cluster names: deep but noisy
    # full-length libraries, coarse clusters that mix lineages.
    "sade_feldman_style": _lab("sade_feldman_style", {
        "malignant": "Melanoma cells",
        "cd8_memory": "Memory T cells",
        "cd8_effector": "Cytotoxicity Lymphocytes",
        "cd8_tpex": (("Exhausted CD8+ T cells", 0.6), ("Memory T cells", 0.4)),
        "cd8_tex": (("Exhausted CD8+ T cells", 0.6), ("Exhausted/HS CD8+ T cells", 0.25),
                    ("Lymphocytes exhausted/Cell cycle", 0.15)),
        "cd4_helper": (("Memory T cells", 0.5), ("Lymphocytes", 0.5)),
        "treg": "Regulatory T cells",
        "nk": "Cytotoxicity Lymphocytes", "b_cell": "B cells", "plasma_cell": "Plasma cells",
        "cdc1": "Dendritic cells", "dc_other": "Dendritic cells",
        "monocyte": "Monocytes/Macrophages", "macrophage_m1": "Monocytes/Macrophages",
        "macrophage_m2": "Monocytes/Macrophages", "mdsc": "Monocytes/Macrophages",
        "neutrophil": "Granulocytes", "mast_cell": "Mast cells",
        "fibroblast": "Fibroblasts", "endothelial": "Endothelial cells",
    }, misannotation_rate=0.04, library_size_mean=2500.0, library_size_cv=0.8,
        batch_effect_sd=0.4, dispersion=2.0),
    # Lineage-level annotation, typical of large coarse atlases and first-pass clustering.
    "broad_immune": _lab("broad_immune", {
        "malignant": "Malignant",
        **dict.fromkeys(_T_TYPES, "T cells"),
        "nk": "NK cells", "b_cell": "B cells", "plasma_cell": "Plasma cells",
        **dict.fromkeys(("cdc1", "dc_other", "monocyte", "macrophage_m1", "macrophage_m2",
                         "mdsc", "neutrophil"), "Myeloid"),
        "mast_cell": "Mast cells", "fibroblast": "Fibroblasts", "endothelial": "Endothelial",
    }, misannotation_rate=0.01, library_size_mean=400.0, library_size_cv=0.5,
        batch_effect_sd=0.15, dispersion=10.0),
    # A modern TME-focused study annotating every state; fine labels are harder to call,
    # hence more misannotation.
    "tme_fine": _lab("tme_fine", {
        "malignant": "Cancer cells",
        "cd8_memory": (("CD8+ Tcm", 0.6), ("Naive CD8+ T", 0.4)),
        "cd8_effector": "Effector CD8+ T",
        "cd8_tpex": "CD8+ Tpex",
        "cd8_tex": "Terminally exhausted CD8+ T",
        "cd4_helper": (("Th1-like CD4+ T", 0.5), ("CD4+ Tfh", 0.5)),
        "treg": "Treg",
        "nk": "NK cells (CD56dim)", "b_cell": "Naive B cells", "plasma_cell": "Plasma cells",
        "cdc1": "cDC1 (CLEC9A+)",
        "dc_other": (("cDC2 (CD1C+)", 0.7), ("mregDC", 0.3)),
        "monocyte": "Classical monocytes",
        "macrophage_m1": "M1-like TAM (CXCL9+)", "macrophage_m2": "M2-like TAM (SPP1+)",
        "mdsc": "PMN-MDSC", "neutrophil": "Neutrophils", "mast_cell": "Mast cells",
        "fibroblast": "CAF", "endothelial": "Endothelial cells",
    }, misannotation_rate=0.05, library_size_mean=1200.0, library_size_cv=0.5,
        batch_effect_sd=0.2, dispersion=8.0),
    # Cheng et al. 2021 pan-cancer myeloid style: lineage_MARKER names. Macrophages are
    # split by marker, and C1QC+ TAMs come from both poles (a real, non-binary convention).
    "macrophage_split": _lab("macrophage_split", {
        "malignant": "Tumor_EPCAM",
        "cd8_memory": (("CD8_IL7R", 0.6), ("CD8_ZNF683", 0.4)),
        "cd8_effector": (("CD8_GZMK", 0.5), ("CD8_GZMB", 0.5)),
        "cd8_tpex": "CD8_Tpex_TCF7",
        "cd8_tex": (("CD8_HAVCR2", 0.5), ("CD8_CXCL13", 0.5)),
        "cd4_helper": (("CD4_Tconv_IL7R", 0.6), ("CD4_Tfh_CXCL13", 0.4)),
        "treg": "CD4_Treg_FOXP3",
        "nk": "NK_FCGR3A", "b_cell": "B_MS4A1", "plasma_cell": "Plasma_JCHAIN",
        "cdc1": "cDC1_CLEC9A",
        "dc_other": (("cDC2_CD1C", 0.6), ("cDC3_LAMP3", 0.25), ("pDC_LILRA4", 0.15)),
        "monocyte": (("Mono_CD14", 0.8), ("Mono_FCGR3A", 0.2)),
        "macrophage_m1": (("Macro_CXCL9", 0.5), ("Macro_INHBA", 0.2), ("Macro_C1QC", 0.3)),
        "macrophage_m2": (("Macro_SPP1", 0.45), ("Macro_C1QC", 0.35), ("Macro_LYVE1", 0.2)),
        "mdsc": "MDSC_S100A9", "neutrophil": "Neu_CSF3R", "mast_cell": "Mast_KIT",
        "fibroblast": "Fibro_COL1A1", "endothelial": "Endo_PECAM1",
    }, misannotation_rate=0.03, library_size_mean=600.0, library_size_cv=0.7,
        batch_effect_sd=0.3, dispersion=4.0),
    # A targeted clinical panel (few hundred UMIs per cell, strong platform effect) with
    # the merged classes a pathology-oriented report uses.
    "clinical_panel": _lab("clinical_panel", {
        "malignant": "Tumor",
        **dict.fromkeys(("cd8_memory", "cd8_effector", "cd8_tpex", "cd8_tex"), "CD8 T"),
        "cd4_helper": "CD4 T", "treg": "Treg", "nk": "NK",
        "b_cell": "B/Plasma", "plasma_cell": "B/Plasma",
        **dict.fromkeys(("monocyte", "macrophage_m1", "macrophage_m2", "mdsc"), "Myeloid"),
        "cdc1": "DC", "dc_other": "DC",
        "neutrophil": "Granulocytes", "mast_cell": "Granulocytes",
        "fibroblast": "Stroma", "endothelial": "Stroma",
    }, misannotation_rate=0.06, library_size_mean=250.0, library_size_cv=0.4,
        batch_effect_sd=0.5, dispersion=15.0),
}
"""Six lab conventions modelled on real atlas annotation styles."""


# ---------------------------------------------------------------------------- sampling
def sample_biopsy(
    composition: np.ndarray,
    n_cells: int,
    rng: np.random.Generator,
    *,
    concentration: float = 200.0,
) -> np.ndarray:
    """Draw the per-type cell counts of one biopsy.

    Parameters
    ----------
    composition
        Length ``len(FINE_TYPES)`` non-negative fractions (normalized here).
    n_cells
        Cells sequenced from the biopsy (>= 1).
    rng
        Source of randomness.
    concentration
        Dirichlet concentration around ``composition``: lower means biopsy sites differ
        more from the tumor average.

    Returns
    -------
    numpy.ndarray
        ``int64`` counts per fine type, summing to ``n_cells``. Types with zero fraction
        never appear.

    Raises
    ------
    ValueError
        If ``composition`` has the wrong length, is negative, non-finite or all zero, or
        ``n_cells`` / ``concentration`` is out of range.
    """
    try:
        comp = np.asarray(composition, dtype=float)
    except (TypeError, ValueError):
        raise bad("composition", composition, f"{_N_TYPES} numeric fractions") from None
    if comp.shape != (_N_TYPES,):
        raise ValidationError(
            f"composition: got shape {comp.shape}; expected ({_N_TYPES},), one fraction per "
            "fine type"
        )
    if not np.all(np.isfinite(comp)) or np.any(comp < 0):
        raise ValidationError(
            f"composition: got {comp.tolist()}; expected finite, non-negative fractions"
        )
    total = comp.sum()
    if total <= 0:
        raise ValidationError("composition: all fractions are zero; expected a positive total")
    n_cells = integer("n_cells", n_cells, low=1, high=MAX_CELLS)
    number("concentration", concentration, low=0, low_open=True)
    comp = comp / total
    present = np.flatnonzero(comp > 0)
    proportions = np.zeros(_N_TYPES)
    # Only present types enter the Dirichlet, so absent types stay exactly absent; the
    # epsilon keeps very rare types from giving a degenerate zero parameter.
    proportions[present] = rng.dirichlet(concentration * comp[present] + 1e-6)
    return rng.multinomial(int(n_cells), proportions).astype(np.int64)


def sample_batch_effect(lab: LabConvention, rng: np.random.Generator) -> np.ndarray:
    """Per-gene natural-log batch effect of a lab: ``Normal(0, lab.batch_effect_sd)``.

    Draw it once per lab per cohort and pass it to every :func:`simulate_cells` call of
    that lab, so that all of the lab's biopsies share the same platform bias.

    Returns
    -------
    numpy.ndarray
        Length ``len(MARKER_PANEL)`` float array.
    """
    return rng.normal(0.0, lab.batch_effect_sd, size=len(MARKER_PANEL))


def _check_signals(signals: Mapping[str, float] | None) -> dict[str, float]:
    if signals is None:
        return {}
    out = {}
    for name, value in signals.items():
        if name not in STATE_PROGRAMS and name not in IGNORED_SIGNALS:
            raise ValidationError(
                f"signals: unknown signal {name!r}; expected one of "
                f"{sorted(set(STATE_PROGRAMS) | IGNORED_SIGNALS)}"
            )
        value = float(value)
        if not (np.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValidationError(f"signals[{name!r}]: got {value}; expected a value in [0, 1]")
        out[name] = value
    return out


def expression_profiles(
    signals: Mapping[str, float] | None = None,
    batch_effect: np.ndarray | None = None,
) -> np.ndarray:
    """Relative expression per fine type after state programs and batch effect.

    Parameters
    ----------
    signals
        Signal name -> value in [0, 1]; names from :data:`STATE_PROGRAMS` or
        :data:`IGNORED_SIGNALS`. Missing signals count as 0.
    batch_effect
        Length ``len(MARKER_PANEL)`` natural-log fold per gene, or ``None`` for none.

    Returns
    -------
    numpy.ndarray
        ``(len(FINE_TYPES), len(MARKER_PANEL))``, rows summing to 1.
    """
    log_fold = np.zeros_like(TYPE_PROFILES)
    for name, value in _check_signals(signals).items():
        if name in _PROGRAM_LOG_FOLDS and value:
            log_fold += value * _PROGRAM_LOG_FOLDS[name]
    if batch_effect is not None:
        batch = np.asarray(batch_effect, dtype=float)
        if batch.shape != (len(MARKER_PANEL),) or not np.all(np.isfinite(batch)):
            raise ValidationError(
                f"batch_effect: got shape {batch.shape}; expected ({len(MARKER_PANEL)},) "
                "finite log-folds, one per MARKER_PANEL gene"
            )
        log_fold += batch
    expr = TYPE_PROFILES * np.exp(log_fold)
    return expr / expr.sum(axis=1, keepdims=True)


def simulate_cells(
    type_counts: np.ndarray,
    lab: LabConvention,
    rng: np.random.Generator,
    *,
    signals: Mapping[str, float] | None = None,
    batch_effect: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str], sp.csr_matrix]:
    """Expand per-type counts into labelled cells with marker-gene counts.

    Parameters
    ----------
    type_counts
        Length ``len(FINE_TYPES)`` non-negative integer cell counts (from
        :func:`sample_biopsy`).
    lab
        The lab whose labels and assay noise to apply.
    rng
        Source of randomness.
    signals
        Per-biopsy signal values in [0, 1] (see :data:`STATE_PROGRAMS`).
    batch_effect
        The lab's per-gene log-fold batch effect (:func:`sample_batch_effect`); ``None``
        for none.

    Returns
    -------
    true_types, labels, counts
        Index into ``FINE_TYPES`` of each cell (``int64``); the lab's label of each cell,
        misannotation applied; ``(n_cells, len(MARKER_PANEL))`` CSR counts (``float32``,
        integer-valued). Cells are in random order.

    Raises
    ------
    ValueError
        If ``type_counts`` has the wrong shape or is negative / non-integer, or a signal or
        the batch effect is invalid.
    """
    counts_in = np.asarray(type_counts)
    if counts_in.dtype.kind not in "biuf":
        raise bad("type_counts", type_counts, f"{_N_TYPES} non-negative integer counts")
    if counts_in.shape != (_N_TYPES,):
        raise ValidationError(
            f"type_counts: got shape {counts_in.shape}; expected ({_N_TYPES},), one count per "
            "fine type"
        )
    as_float = counts_in.astype(float)
    if (not np.all(np.isfinite(as_float)) or np.any(as_float < 0)
            or np.any(as_float != np.round(as_float))):
        raise ValidationError(
            f"type_counts: got {counts_in.tolist()}; expected non-negative integers"
        )
    if not isinstance(lab, LabConvention):
        raise bad("lab", lab, f"a LabConvention (immunegym.sim.observation.LABS: {sorted(LABS)})")
    n_types = as_float.astype(np.int64)
    n_cells = int(n_types.sum())
    n_genes = len(MARKER_PANEL)
    # Rates, draws and counts are dense (cells x genes) 8-byte arrays while drawn.
    memory_budget("type_counts", f"<{n_cells} cells>", n_cells * n_genes * 8 * 4,
                  f"{n_cells} cells x {n_genes} genes")
    expr = expression_profiles(signals, batch_effect)
    if n_cells == 0:
        return (np.zeros(0, dtype=np.int64), [],
                sp.csr_matrix((0, n_genes), dtype=np.float32))

    # Random cell order, so that row position carries no information about the type.
    true_types = rng.permutation(np.repeat(np.arange(_N_TYPES), n_types))

    # Library size: log-normal with the lab's mean and coefficient of variation.
    sigma2 = np.log1p(lab.library_size_cv**2)
    library = rng.lognormal(np.log(lab.library_size_mean) - sigma2 / 2, np.sqrt(sigma2),
                            size=n_cells)
    mu = library[:, None] * expr[true_types]
    # Negative binomial as gamma-Poisson (variance mu + mu^2 / theta); a scalar-shape
    # standard gamma times the scale is about twice as fast as an array-scale gamma.
    theta = lab.dispersion
    rate = rng.standard_gamma(theta, size=mu.shape)
    rate *= mu / theta
    counts = rng.poisson(rate)

    # Misannotation: a cell takes the identity of a uniformly chosen *other* type present.
    assigned = true_types.copy()
    present = np.flatnonzero(n_types)
    if lab.misannotation_rate > 0 and len(present) > 1:
        wrong = np.flatnonzero(rng.random(n_cells) < lab.misannotation_rate)
        if wrong.size:
            position = np.searchsorted(present, true_types[wrong])
            shift = rng.integers(1, len(present), size=wrong.size)
            assigned[wrong] = present[(position + shift) % len(present)]

    # Label per cell by inverse CDF over the assigned type's label distribution.
    cdf = lab._label_cdf()
    u = rng.random(n_cells)
    label_index = (u[:, None] >= cdf[assigned]).sum(axis=1)
    np.minimum(label_index, cdf.shape[1] - 1, out=label_index)  # guard CDF round-off
    vocabulary = np.array(lab.label_set, dtype=object)
    labels = vocabulary[label_index].tolist()
    return true_types.astype(np.int64), labels, _to_csr(counts)


def _to_csr(dense: np.ndarray) -> sp.csr_matrix:
    """CSR float32 from a dense integer matrix (faster than the generic constructor)."""
    nonzero = dense != 0
    indptr = np.zeros(dense.shape[0] + 1, dtype=np.int64)
    np.cumsum(nonzero.sum(axis=1), out=indptr[1:])
    indices = np.nonzero(nonzero)[1]
    data = dense[nonzero].astype(np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=dense.shape)
