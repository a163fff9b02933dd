"""Loaders for the small real immune-checkpoint-blockade tables shipped with the package.

The files sit beside this module (see README.md here for provenance and citations); nothing
is downloaded. Sade-Feldman 2018 gives per-cell cluster labels of melanoma biopsies;
MORRISON-1 gives bulk-RNA signature scores with RECIST outcomes across six cohorts.
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


__all__ = [
    "MORRISON1_ID_COLUMNS",
    "SADE_FELDMAN_CLUSTERS",
    "morrison1_samples",
    "morrison1_signature_columns",
    "sade_feldman_cells",
    "sade_feldman_distributions",
    "sade_feldman_sample_counts",
]
