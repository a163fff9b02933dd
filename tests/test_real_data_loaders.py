"""Loaders of the bundled Riaz 2017 and NeoBCC tables: shapes, types, the source's quirks."""

from __future__ import annotations

import fnmatch
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np

import immunegym.data.real as real
from immunegym.data.real import (
    NEOBCC_CELL_TYPES,
    neobcc_metadata,
    neobcc_post_counts,
    riaz2017_clinical,
    riaz2017_samples,
    riaz2017_tcell_fraction,
)

ROOT = Path(__file__).resolve().parents[1]


def test_loaders_are_exported():
    for name in ("riaz2017_samples", "riaz2017_clinical", "riaz2017_tcell_fraction",
                 "neobcc_metadata", "neobcc_post_counts", "NEOBCC_CELL_TYPES"):
        assert name in real.__all__


def test_every_bundled_table_is_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["immunegym.data.real"]
    files = [f.name for f in resources.files("immunegym.data.real").iterdir()
             if f.is_file() and not f.name.endswith((".py", ".pyc"))]
    for name in ("riaz2017_TCRmetrics.csv", "ressler2024_neobcc_ADDITIONAL_METADATA.txt"):
        assert name in files
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert not unshipped


def test_riaz_tcell_fraction_one_row_per_patient_without_nan():
    table = riaz2017_tcell_fraction()
    assert table.shape == (34, 6)
    assert table["patient"].is_unique and table["patient"].str.match(r"^Pt\d+$").all()
    for column in ("patient", "cohort", "bor", "fraction_pre", "fraction_on"):
        assert table[column].notna().all(), column
    assert int(table["subtype"].isna().sum()) == 4
    both = table[["fraction_pre", "fraction_on"]].to_numpy()
    assert np.all((both >= 0) & (both <= 1))
    assert set(table["cohort"]) == {"NIV3-NAIVE", "NIV3-PROG"}
    assert set(table["bor"]) == {"CR", "PR", "SD", "PD"}
    # Spot values from the source (pt30: CR with the largest rise).
    pt30 = table.set_index("patient").loc["Pt30"]
    assert (pt30["fraction_pre"], pt30["fraction_on"]) == (0.038, 0.687)


def test_riaz_sample_table_flags_the_inconsistent_pt7_pre_row():
    samples = riaz2017_samples()
    assert len(samples) == 108 and samples["sample"].is_unique
    assert samples["source_patient"].nunique() == 64
    assert set(samples["timepoint"]) == {"pre", "on"}
    bad = samples[~samples["consistent"]]
    assert bad["sample"].tolist() == ["Pt7_Pre"]
    row = bad.iloc[0]
    assert (row["patient"], row["timepoint"]) == ("Pt7", "pre")
    assert (row["source_patient"], row["source_timepoint"]) == ("Pt72", "on")
    # Response and benefit are missing exactly for the not-evaluable samples.
    assert samples["response"].isna().equals(samples["bor"] == "NE")
    assert samples["benefit"].isna().equals(samples["bor"] == "NE")


def test_riaz_clinical_covers_the_tcr_patients():
    clinical = riaz2017_clinical()
    assert clinical.shape == (73, 9) and clinical["patient"].is_unique
    assert clinical[["os_days", "pfs_days"]].notna().all().all()
    assert set(riaz2017_tcell_fraction()["patient"]) <= set(clinical["patient"])


def test_neobcc_post_counts_wide_and_consistent():
    counts = neobcc_post_counts()
    assert counts.shape == (12, len(NEOBCC_CELL_TYPES) + 2)
    assert counts.index.is_unique and counts.index.str.endswith("_post").all()
    cells = counts[list(NEOBCC_CELL_TYPES)]
    assert not cells.isna().any().any() and (cells.to_numpy() >= 0).all()
    np.testing.assert_array_equal(cells.sum(1).to_numpy(), counts["n_cells"].to_numpy())
    assert set(counts["pathological_response"]) == {"pCR", "non-pCR"}


def test_neobcc_metadata_reads_na_as_missing():
    meta = neobcc_metadata()
    assert meta.shape == (14, 7) and meta["sample"].is_unique
    assert set(neobcc_post_counts().index) <= set(meta["sample"])
    assert meta["tumor_presence_after_treatment"].isna().sum() == 5
    assert set(meta["tumor_presence_after_treatment"].dropna()) == {"yes", "no"}
    assert meta["patient"].str.match(r"^NeoBCC\d+$").all()
