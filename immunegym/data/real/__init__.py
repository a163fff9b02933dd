"""Loaders for the small real immune-checkpoint-blockade tables shipped with the package.

The files sit beside this module (see README.md here for provenance and citations); nothing
is downloaded. Sade-Feldman 2018 gives per-cell cluster labels of melanoma biopsies;
MORRISON-1 gives bulk-RNA signature scores with RECIST outcomes across six cohorts; Riaz
2017 (CheckMate 038) gives pre/on-nivolumab TCR metrics with an estimated T-cell fraction;
NeoBCC (Ressler 2024) gives post-treatment cell-type counts of basal cell carcinoma.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from immunegym.data.distributions import SampleDistributions, sample_distributions
from immunegym.data.schema import setup_anndata
from immunegym.data.vocab import format_regimen, parse_regimen, parse_response

_PACKAGE = "immunegym.data.real"
SADE_FELDMAN_CLUSTERS: tuple[str, ...] = tuple(f"G{i}" for i in range(1, 12))


def _read_tsv(name: str, **kwargs: object) -> pd.DataFrame:
    with resources.files(_PACKAGE).joinpath(name).open("rb") as handle:
        return pd.read_csv(handle, sep="\t", **kwargs)


def _read_csv(name: str, **kwargs: object) -> pd.DataFrame:
    with resources.files(_PACKAGE).joinpath(name).open("rb") as handle:
        return pd.read_csv(handle, **kwargs)


@cache
def _sade_feldman_cells_table() -> pd.DataFrame:
    return _read_tsv("sadefeldman_percell_sample_cluster.tsv", dtype={"cell": str})


def sade_feldman_cells() -> ad.AnnData:
    """Sade-Feldman et al. 2018 (GSE120575): 16,291 CD45+ cells from 48 melanoma biopsies.

    Returns
    -------
    anndata.AnnData
        No expression (``n_vars == 0``); ``obs`` indexed by cell id with ``sample``,
        ``patient``, ``timepoint`` (``Pre``/``Post``), ``response`` (per lesion, R/NR) and
        ``cluster`` (``"G1"``..``"G11"``). Registered with :func:`setup_anndata`
        (labels: ``cluster`` under the ``sade_feldman_2018`` convention). Sample times in
        days and per-sample therapy are not in the published tables, so they are not
        registered.
    """
    cells = _sade_feldman_cells_table()
    lesions = _read_tsv("sadefeldman_patient_lesion_48samples.tsv")
    lesions.columns = ["patient", "sample", "lesion_response"]
    # The source table writes one patient id with a trailing space ("P28 " beside "P28").
    lesions = lesions.apply(lambda col: col.str.strip())
    patient_of = dict(zip(lesions["sample"], lesions["patient"], strict=False))
    obs = pd.DataFrame(
        {
            "sample": pd.Categorical(cells["sample"]),
            "patient": pd.Categorical(cells["sample"].map(patient_of)),
            "timepoint": pd.Categorical(cells["sample"].str.split("_").str[0]),
            "response": pd.Categorical(cells["response"]),
            "cluster": pd.Categorical(
                "G" + cells["cluster"].astype(str), categories=list(SADE_FELDMAN_CLUSTERS)
            ),
        },
        index=pd.Index(cells["cell"].to_numpy(), name="cell"),
    )
    adata = ad.AnnData(X=sp.csr_matrix((len(obs), 0), dtype=np.float32), obs=obs)
    setup_anndata(
        adata, patient_key="patient", sample_key="sample", label_key="cluster",
        response_key="response", label_convention="sade_feldman_2018",
    )
    return adata


def sade_feldman_sample_counts() -> pd.DataFrame:
    """The published per-sample cluster counts (``sample, patient, timepoint, response,
    n_cells, G1..G11``), one row per biopsy."""
    return _read_tsv("sadefeldman_persample_cluster_counts.tsv")


def sade_feldman_distributions() -> SampleDistributions:
    """Harmonized per-sample compositions of :func:`sade_feldman_cells`."""
    return sample_distributions(sade_feldman_cells())


MORRISON1_ID_COLUMNS = (
    "sample_id", "subject_id", "cohort", "timepoint", "regimen", "first_regimen",
    "tumor_type", "bor", "response", "responder", "previous_treatment", "age", "sex",
    "pfs", "os",
)


def morrison1_samples() -> pd.DataFrame:
    """MORRISON-1 (Campbell et al., Cancer Cell 2023): a tidy per-sample table.

    Returns
    -------
    pandas.DataFrame
        One row per bulk RNA-seq sample (442): the columns :data:`MORRISON1_ID_COLUMNS`
        then one column per published signature score (names as published, e.g.
        ``"CD8+ Tcell infiltration"``, ``"TIDE"``, ``"IMPRES"``, ``"tiara_pd1"``).
        ``timepoint`` is ``pre``/``on``/``post``; ``regimen`` is the study's name (PD1,
        CTLA4, Combo, CTLA4-to-PD1, PD1-to-CTLA4) and ``first_regimen`` the first-line
        regimen in immunegym therapy ids; ``responder`` is 1 for CR/PR, 0 for SD/PD, NaN
        when not assessed. ``pfs``/``os`` come from the subject table as published (units
        differ between cohorts).
    """
    meta = _read_tsv("morrison1_RNA-CancerCell-MORRISON1-metadata.tsv")
    scores = _read_tsv(
        "morrison1_RNA-CancerCell-MORRISON1-immune_signatures-tiara_pd1-all_samples.tsv"
    )
    subjects = _read_tsv("morrison1_Subjects-CancerCell-MORRISON1-metadata.tsv")
    regimen = meta["treatment.regimen.name"]
    first_line = regimen.str.split("-to-").str[0]
    tidy = pd.DataFrame(
        {
            "sample_id": meta["sample.id"],
            "subject_id": meta["subject.id"],
            "cohort": meta["cohort"].astype(str),
            "timepoint": meta["timepoint.id"].str.rsplit("-", n=1).str[-1],
            "regimen": regimen,
            "first_regimen": [
                format_regimen(parse_regimen(r, "regimen") or ()) for r in first_line
            ],
            "tumor_type": meta["sample.tumor.type"],
            "bor": meta["bor"],
            "response": meta["response"],
            "responder": [parse_response(r, "response") for r in meta["response"]],
            "previous_treatment": meta["previous.treatment"],
            "age": meta["subject.age"],
            "sex": meta["subject.sex"],
        }
    )
    outcome = subjects.set_index("subject.id")[["pfs", "os"]]
    tidy = tidy.join(outcome, on="subject_id")
    signature = scores.drop(columns=["subject.id", "response", "previous.treatment"])
    tidy = tidy.merge(signature, left_on="sample_id", right_on="sample.id", how="left",
                      validate="one_to_one").drop(columns=["sample.id"])
    return tidy


def morrison1_signature_columns() -> list[str]:
    """Names of the signature-score columns of :func:`morrison1_samples`."""
    return [c for c in morrison1_samples().columns if c not in MORRISON1_ID_COLUMNS]


# --------------------------------------------------------------------------- Riaz 2017
def _riaz_patient(ids: pd.Series) -> pd.Series:
    """``pt11`` / ``Pt11`` -> ``Pt11`` (the sample table's spelling)."""
    return "Pt" + ids.astype(str).str.strip().str.lower().str.removeprefix("pt")


def riaz2017_samples() -> pd.DataFrame:
    """Riaz et al. 2017 (CheckMate 038, nivolumab): the corrected sample table.

    Returns
    -------
    pandas.DataFrame
        One row per sequenced sample (108 samples of 64 patients): ``sample``, ``patient``
        and ``timepoint`` (``"pre"``/``"on"``) read from the sample name, the source's own
        ``source_patient`` (``PatientID``) and ``source_timepoint`` (``PreOn``, lower case),
        ``cohort`` (``NIV3-NAIVE``: ipilimumab-naive, ``NIV3-PROG``: progressed on
        ipilimumab), ``bor`` (CR/PR/SD/PD/NE), ``response`` (PRCR/SD/PD, NaN for NE),
        ``benefit`` (LB/NB, NaN for NE) and ``consistent``: whether the name's patient and
        timepoint agree with the source's columns. One row is inconsistent in the source:
        ``Pt7_Pre`` is filed under ``PatientID`` Pt72 with ``PreOn`` = On (Pt72 has its own
        ``Pt72_Pre``); it is kept and flagged, never silently reassigned.
    """
    raw = _read_csv("riaz2017_SampleTableCorrected.9.19.16.csv", index_col=0)
    parts = raw["Sample"].str.rsplit("_", n=1)
    out = pd.DataFrame({
        "sample": raw["Sample"].to_numpy(),
        "patient": parts.str[0].to_numpy(),
        "timepoint": parts.str[1].str.lower().to_numpy(),
        "source_patient": raw["PatientID"].to_numpy(),
        "source_timepoint": raw["PreOn"].str.lower().to_numpy(),
        "cohort": raw["Cohort"].to_numpy(),
        "bor": raw["BOR"].to_numpy(),
        # The source repeats the header "Response": the RECIST group, then the benefit.
        "response": raw["Response"].to_numpy(),
        "benefit": raw["Response.1"].to_numpy(),
    })
    out["consistent"] = ((out["patient"] == out["source_patient"])
                         & (out["timepoint"] == out["source_timepoint"]))
    return out


def riaz2017_clinical() -> pd.DataFrame:
    """Riaz et al. 2017: clinical data of the 73 CheckMate 038 patients.

    Returns
    -------
    pandas.DataFrame
        ``patient``, ``cohort``, ``subtype`` (BRAF/RAS/NF1/TripleWt, NaN if unknown),
        ``bor`` (CR/PR/SD/PD/NE), ``ibor`` (the investigator's text), ``os_days``,
        ``pfs_days`` and the source's status columns ``os_sor``/``pfs_sor`` (0/1, as
        published; the source does not document their coding).
    """
    raw = _read_csv("riaz2017_bms038_clinical_data.csv")
    return pd.DataFrame({
        "patient": _riaz_patient(raw["PatientID"]).to_numpy(),
        "cohort": raw["Cohort"].to_numpy(),
        "subtype": raw["SubtypeEZ"].to_numpy(),
        "bor": raw["BOR"].to_numpy(),
        "ibor": raw["IBOR"].to_numpy(),
        "os_days": raw["OS"].to_numpy(dtype=np.float64),
        "pfs_days": raw["PFS"].to_numpy(dtype=np.float64),
        "os_sor": raw["OS_SOR"].to_numpy(dtype=np.int64),
        "pfs_sor": raw["PFS_SOR"].to_numpy(dtype=np.int64),
    })


def riaz2017_tcell_fraction() -> pd.DataFrame:
    """Riaz et al. 2017: estimated T-cell fraction before and on nivolumab, per patient.

    The estimate is the source's ``fraction_productive_of_cells_mass_estimate`` (productive
    TCR template mass over the cell mass of the sample, from TCR-beta sequencing); on
    treatment is about week 4 (the study's day 23-29 biopsy).

    Returns
    -------
    pandas.DataFrame
        One row per patient with TCR metrics at both times (34): ``patient`` (``Pt11``,
        the sample table's spelling), ``cohort`` (``NIV3-NAIVE``/``NIV3-PROG``), ``subtype``
        (NaN for 4 patients), ``bor`` (CR/PR/SD/PD as in the TCR table; the clinical table
        has NE for Pt23, death before assessment), ``fraction_pre`` and ``fraction_on``
        (in [0, 1], never NaN). None of these patients is Pt7 or Pt72, so the sample
        table's inconsistent ``Pt7_Pre`` row (:func:`riaz2017_samples`) does not touch it.
    """
    raw = _read_csv("riaz2017_TCRmetrics.csv")
    return pd.DataFrame({
        "patient": _riaz_patient(raw["Patient"]).to_numpy(),
        "cohort": raw["Cohort"].to_numpy(),
        "subtype": raw["SubtypeEZ"].to_numpy(),
        "bor": raw["BOR"].to_numpy(),
        "fraction_pre": raw["fraction_productive_of_cells_mass_estimate_Pre"].to_numpy(
            dtype=np.float64),
        "fraction_on": raw["fraction_productive_of_cells_mass_estimate_On"].to_numpy(
            dtype=np.float64),
    })


# --------------------------------------------------------------------------- NeoBCC
NEOBCC_CELL_TYPES: tuple[str, ...] = (
    "B cells", "CD4+ T cells", "CD8+ T cells", "DC", "LC", "Mast cells", "Mono-Mac",
    "Natural killer cells", "Plasma cells", "Proliferating cells", "Tregs", "other", "pDC",
)
"""The 13 cell types (``anno_l1``) of the NeoBCC post-treatment counts, as published."""


def neobcc_metadata() -> pd.DataFrame:
    """Ressler et al. 2024 (NeoBCC, basal cell carcinoma, neoadjuvant): sample metadata.

    Returns
    -------
    pandas.DataFrame
        One row per sample of the bundled metadata (14): ``sample``, ``patient``
        (``NeoBCC004``), ``treatment`` (the source's ``pre``/``post``), ``type``
        (infiltrative / non-infiltrative), ``clinical_response`` (CR/PR/SD, ``planned``),
        ``pathological_response`` (pCR/non-pCR, ``planned``) and
        ``tumor_presence_after_treatment`` (``yes``/``no``; NaN where the source says
        ``na``).
    """
    raw = _read_tsv("ressler2024_neobcc_ADDITIONAL_METADATA.txt", na_values=["na"],
                    keep_default_na=False)
    return pd.DataFrame({
        "sample": raw["sample"].to_numpy(),
        "patient": raw["sample"].str.split("_").str[0].to_numpy(),
        "treatment": raw["treatment"].to_numpy(),
        "type": raw["type"].to_numpy(),
        "clinical_response": raw["Clinical Response"].to_numpy(),
        "pathological_response": raw["Pathological Response"].to_numpy(),
        "tumor_presence_after_treatment": raw["Tumor_presence_after_treatment"].to_numpy(),
    })


def neobcc_post_counts() -> pd.DataFrame:
    """Ressler et al. 2024 (NeoBCC): post-treatment cell counts per sample (EDF 6b).

    Returns
    -------
    pandas.DataFrame
        One row per post-treatment sample (12), indexed by ``sample``: the counts of
        :data:`NEOBCC_CELL_TYPES` (integers, never NaN), ``n_cells`` (their sum, the
        source's ``C``) and ``pathological_response`` (pCR/non-pCR). No pre-treatment
        composition is bundled.
    """
    raw = _read_csv("ressler2024_neobcc_post_celltype_counts_EDF6b.csv")
    counts = raw.pivot(index="id", columns="anno_l1", values="Nb")
    counts = counts.reindex(columns=list(NEOBCC_CELL_TYPES)).fillna(0).astype(np.int64)
    counts.index.name = "sample"
    counts.columns.name = None
    first = raw.drop_duplicates("id").set_index("id")
    counts["n_cells"] = first.loc[counts.index, "C"].astype(np.int64).to_numpy()
    counts["pathological_response"] = first.loc[counts.index,
                                                "Pathological.Response"].to_numpy()
    return counts


__all__ = [
    "MORRISON1_ID_COLUMNS",
    "NEOBCC_CELL_TYPES",
    "SADE_FELDMAN_CLUSTERS",
    "morrison1_samples",
    "morrison1_signature_columns",
    "neobcc_metadata",
    "neobcc_post_counts",
    "riaz2017_clinical",
    "riaz2017_samples",
    "riaz2017_tcell_fraction",
    "sade_feldman_cells",
    "sade_feldman_distributions",
    "sade_feldman_sample_counts",
]
