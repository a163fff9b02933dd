"""The bundled real tables load, and per-cell labels round-trip to the published counts."""

import numpy as np
import pandas as pd

from immunegym.data import from_counts_table, sample_distributions
from immunegym.data.real import (
    MORRISON1_ID_COLUMNS,
    SADE_FELDMAN_CLUSTERS,
    morrison1_samples,
    sade_feldman_cells,
    sade_feldman_sample_counts,
)


def test_sade_feldman_cells_shape():
    adata = sade_feldman_cells()
    assert adata.n_obs == 16291
    assert adata.obs["sample"].nunique() == 48
    # 32, once the loader strips the stray space in the source's "P28 ".
    assert adata.obs["patient"].nunique() == 32
    assert adata.obs["patient"].notna().all()
    assert set(adata.obs["timepoint"].unique()) == {"Pre", "Post"}
    assert adata.obs_names.is_unique


def test_sade_feldman_per_cell_round_trips_to_published_counts():
    adata = sade_feldman_cells()
    published = sade_feldman_sample_counts().set_index("sample")
    ours = pd.crosstab(adata.obs["sample"], adata.obs["cluster"]).reindex(
        columns=list(SADE_FELDMAN_CLUSTERS), fill_value=0
    )
    ours.index = ours.index.astype(str)
    ours = ours.loc[published.index]
    pd.testing.assert_frame_equal(
        ours, published[list(SADE_FELDMAN_CLUSTERS)], check_names=False, check_dtype=False
    )
    np.testing.assert_array_equal(ours.sum(axis=1), published["n_cells"])
    patients = adata.obs.groupby("sample", observed=True)["patient"].first()
    patients.index = patients.index.astype(str)
    np.testing.assert_array_equal(patients.loc[published.index].astype(str).to_numpy(),
                                  published["patient"].to_numpy())


def test_harmonized_cells_equal_harmonized_published_table():
    from_cells = sample_distributions(sade_feldman_cells())
    table = sade_feldman_sample_counts()
    from_table = from_counts_table(
        table, list(SADE_FELDMAN_CLUSTERS), sample_col="sample", patient_col="patient",
        response_col="response", convention="sade_feldman_2018",
    )
    cells_frame = pd.DataFrame(from_cells.counts, index=from_cells.sample_ids,
                               columns=from_cells.nodes)
    table_frame = pd.DataFrame(from_table.counts, index=from_table.sample_ids,
                               columns=from_table.nodes)
    pd.testing.assert_frame_equal(cells_frame.loc[table_frame.index], table_frame)
    assert from_cells.n_excluded.sum() == 0  # every cluster maps to a node
    exhausted = cells_frame["cd8_exhausted"]
    np.testing.assert_array_equal(
        exhausted.loc[table["sample"]], table[["G6", "G9", "G11"]].sum(axis=1)
    )


def test_morrison1_tidy_table():
    table = morrison1_samples()
    assert len(table) == 442 and table["sample_id"].is_unique
    assert list(table.columns[: len(MORRISON1_ID_COLUMNS)]) == list(MORRISON1_ID_COLUMNS)
    assert set(table["cohort"]) == {"038", "gide", "064", "067", "liu", "va"}
    assert set(table["timepoint"]) == {"pre", "on", "post"}
    pre = table[(table["timepoint"] == "pre") & table["responder"].notna()]
    assert len(pre) == 357  # the reference set of shared/realdata/README.md
    assert set(table["first_regimen"]) == {"anti_pd1", "anti_ctla4", "anti_pd1+anti_ctla4"}
    assert (table.loc[table["response"] == "CRPR", "responder"] == 1.0).all()
    for col in ("TIDE", "IMPRES", "tiara_pd1", "CD8+ Tcell infiltration"):
        assert col in table.columns and table[col].notna().all()


def test_morrison1_reference_auroc_for_cd8_infiltration():
    from scipy.stats import mannwhitneyu

    table = morrison1_samples()
    pre = table[(table["timepoint"] == "pre") & table["responder"].notna()]
    score = pre["CD8+ Tcell infiltration"]
    resp = pre["responder"] == 1.0
    u = mannwhitneyu(score[resp], score[~resp]).statistic
    auroc = u / (resp.sum() * (~resp).sum())
    assert abs(auroc - 0.610) < 0.005  # the figure quoted in shared/realdata/README.md
