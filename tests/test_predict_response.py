"""``immunegym predict-response``: tables of signature scores and AnnData of cells."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from immunegym.benchmarks.predict_response import (
    OUTPUT_COLUMNS,
    SIGNATURE_COLUMNS,
    check_cells,
    check_table,
    fit_predictor,
    predict_response,
    predict_table,
    resolve_regimen,
)
from immunegym.benchmarks.response_real import (
    MORRISON1_REGIMENS,
    morrison1_pretreatment,
    world_model_outcomes,
)
from immunegym.cli import app
from immunegym.validation import ValidationError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny batches: one thread

runner = CliRunner()


@pytest.fixture(scope="module")
def predictor():
    from immunegym.world_model import load

    return fit_predictor(load(), n_reference=300)


@pytest.fixture
def table() -> pd.DataFrame:
    """Eight MORRISON-1 samples as a user would give them (id, regimen, signatures)."""
    data = morrison1_pretreatment().groupby("regimen").head(2).head(8)
    out = data[["sample_id", "regimen", *SIGNATURE_COLUMNS]].rename(columns={"sample_id": "id"})
    return out.reset_index(drop=True)


def _cells(n_cd8: int, n_malignant: int = 0) -> pd.DataFrame:
    labels = (["CD8 T cells"] * n_cd8 + ["Tregs"] * 10 + ["Macrophages"] * 20
              + ["B cells"] * 10 + ["Malignant cells"] * n_malignant + ["Doublets"] * 3)
    return pd.DataFrame({"cell_type": labels})


def _adata(samples: dict[str, tuple[pd.DataFrame, str | None]]) -> ad.AnnData:
    parts = []
    for name, (cells, regimen) in samples.items():
        part = cells.copy()
        part["sample"] = name
        part["patient"] = f"pt_{name}"
        part["regimen"] = regimen
        parts.append(part)
    obs = pd.concat(parts, ignore_index=True)
    obs.index = [f"cell{i}" for i in range(len(obs))]
    return ad.AnnData(obs=obs)


# --------------------------------------------------------------------------- happy paths
def test_table_happy_path_matches_the_benchmark_score(table, predictor, tmp_path):
    table.loc[0, "regimen"] = "anti_pd1"  # plan text works as well as MORRISON-1 names
    path, out = tmp_path / "samples.tsv", tmp_path / "pred.csv"
    table.to_csv(path, sep="\t", index=False)
    result = predict_response(path, out, predictor=predictor, seed=1)
    written = pd.read_csv(out)
    assert list(written.columns) == list(OUTPUT_COLUMNS)
    assert written["id"].tolist() == table["id"].tolist()
    assert written["regimen"].tolist() == table["regimen"].tolist()
    np.testing.assert_allclose(written["score"], result["score"])
    assert np.all(written["score_lo"] < written["score_hi"])
    assert np.all((written["probability"] > 0) & (written["probability"] < 1))
    # score is the benchmark's world-model score: the mean path under the resolved plan
    plans = [MORRISON1_REGIMENS.get(r, r) for r in table["regimen"]]
    comp = predictor.observation.transform(table[list(SIGNATURE_COLUMNS)])
    expected = -world_model_outcomes(predictor.model, comp, predictor.reference.median_sod_mm,
                                     plans)["best_change"]
    np.testing.assert_allclose(written["score"], expected, rtol=1e-6)
    # the probability is monotone in the score; the interval is seeded
    order = np.argsort(written["score"].to_numpy())
    assert np.all(np.diff(written["probability"].to_numpy()[order]) >= 0)
    again = predict_table(table, predictor, seed=1)
    np.testing.assert_allclose(again["score_lo"], written["score_lo"], rtol=1e-6)


def test_anndata_happy_path_counts_immune_cells_only(predictor, tmp_path):
    adata = _adata({"s_hot": (_cells(200, n_malignant=50), "PD1"),
                    "s_cold": (_cells(2), "Combo")})
    from immunegym.data import setup_anndata

    setup_anndata(adata, patient_key="patient", sample_key="sample", label_key="cell_type",
                  therapy_key="regimen")
    path, out = tmp_path / "cells.h5ad", tmp_path / "pred.csv"
    adata.write_h5ad(path)
    result = predict_response(path, out, predictor=predictor)
    written = pd.read_csv(out)
    assert list(written.columns) == list(OUTPUT_COLUMNS)
    assert written["id"].tolist() == ["s_hot", "s_cold"]
    assert written["regimen"].tolist() == ["PD1", "Combo"]
    assert np.all(written["score_lo"] < written["score_hi"])
    np.testing.assert_allclose(written["score"], result["score"])
    # malignant cells and doublets are left out (CD45+ protocol): same counts, same score
    checked = check_cells(adata)
    assert list(checked.counts.sum(1)) == [240, 42]
    no_tumor = _adata({"s_hot": (_cells(200), "PD1"), "s_cold": (_cells(2), "Combo")})
    np.testing.assert_array_equal(check_cells(no_tumor).counts.to_numpy(),
                                  checked.counts.to_numpy())


# --------------------------------------------------------------------------- bad input
def test_blank_regimen_is_an_error_naming_the_row(table):
    table.loc[3, "regimen"] = " "
    with pytest.raises(ValidationError, match=f"of '{table.loc[3, 'id']}'.*every sample"):
        check_table(table)
    table.loc[3, "regimen"] = np.nan
    with pytest.raises(ValidationError, match=f"of '{table.loc[3, 'id']}'"):
        check_table(table)


def test_unknown_regimen_names_the_row(table):
    table.loc[2, "regimen"] = "aspirin"
    with pytest.raises(ValidationError, match=f"of '{table.loc[2, 'id']}'.*aspirin"):
        check_table(table)
    with pytest.raises(ValidationError, match="MORRISON-1 name"):
        resolve_regimen("aspirin", "regimen")
    assert resolve_regimen(" CTLA4-to-PD1 ", "r") == MORRISON1_REGIMENS["CTLA4-to-PD1"]


def test_missing_signature_column_names_it_and_the_expected_set(table):
    dropped = table.drop(columns=["TReg", "cDC1"])
    first = next(c for c in SIGNATURE_COLUMNS if c in ("TReg", "cDC1"))
    with pytest.raises(ValidationError,
                       match=f"no column '{first}'.*{re.escape(SIGNATURE_COLUMNS[0])}"):
        check_table(dropped)


def test_bad_values_ids_and_columns_are_named(table):
    bad = table.copy()
    bad["TReg"] = bad["TReg"].astype(object)
    bad.loc[1, "TReg"] = "n/a"
    with pytest.raises(ValidationError, match=f"'TReg'\\] of '{table.loc[1, 'id']}'"):
        check_table(bad)
    dupes = table.copy()
    dupes.loc[1, "id"] = dupes.loc[0, "id"]
    with pytest.raises(ValidationError, match="unique sample ids"):
        check_table(dupes)
    with pytest.raises(ValidationError, match="an id column"):
        check_table(table.drop(columns=["id"]))
    with pytest.raises(ValidationError, match="'regimen' column"):
        check_table(table.drop(columns=["regimen"]))
    with pytest.raises(ValidationError, match="--id-column: got 'nope'"):
        check_table(table, id_column="nope")
    with pytest.raises(ValidationError, match="at least one sample row"):
        check_table(table.iloc[:0])


def test_unlabeled_cells_name_the_sample():
    cells = _cells(5)
    cells.loc[2, "cell_type"] = np.nan
    adata = _adata({"s1": (_cells(5), "PD1"), "s2": (cells, "PD1")})
    with pytest.raises(ValidationError, match="of sample 's2'.*1 unlabeled"):
        check_cells(adata)
    cells.loc[2, "cell_type"] = ""
    with pytest.raises(ValidationError, match="of sample 's2'"):
        check_cells(_adata({"s2": (cells, "PD1")}))


def test_cells_bad_regimen_and_columns_name_the_sample():
    with pytest.raises(ValidationError, match="of sample 's1'.*every sample needs one"):
        check_cells(_adata({"s0": (_cells(5), "PD1"), "s1": (_cells(5), None)}))
    mixed = _adata({"s1": (_cells(5), "PD1")})
    mixed.obs.loc[mixed.obs.index[0], "regimen"] = "CTLA4"
    with pytest.raises(ValidationError, match="of sample 's1'.*one regimen per sample"):
        check_cells(mixed)
    with pytest.raises(ValidationError, match="--label-key: got 'label'"):
        check_cells(_adata({"s1": (_cells(5), "PD1")}), label_key="label")
    only_tumor = pd.DataFrame({"cell_type": ["Malignant cells"] * 10})
    with pytest.raises(ValidationError, match="of sample 's9'.*no immune cells"):
        check_cells(_adata({"s1": (_cells(5), "PD1"), "s9": (only_tumor, "PD1")}))


def test_cli_errors_are_one_line_before_any_model_is_loaded(table, tmp_path):
    path = tmp_path / "samples.csv"
    table.drop(columns=["TReg"]).to_csv(path, index=False)
    result = runner.invoke(app, ["predict-response", str(path), "--out",
                                 str(tmp_path / "o.csv")], env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'TReg'" in lines[0]
    assert not (tmp_path / "o.csv").exists()
    wrong = tmp_path / "samples.xlsx"
    wrong.write_text("x")
    result = runner.invoke(app, ["predict-response", str(wrong), "--out",
                                 str(tmp_path / "o.csv")], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "FILE" in result.output and ".h5ad" in result.output
    table.to_csv(path, index=False)
    result = runner.invoke(app, ["predict-response", str(path), "--out",
                                 str(tmp_path / "o.csv"), "--label-key", "x"],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "--label-key" in result.output
