"""The real-data response benchmark: sample selection, observation model, scores, contract."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_reference

from immunegym.benchmarks.common import BenchContext, auroc, jsonable
from immunegym.benchmarks.response_real import (
    NODE_SIGNATURES,
    PUBLISHED_SCORES,
    ReferenceBank,
    SignatureObservationModel,
    fit_without,
    immune_counts_to_composition,
    morrison1_pretreatment,
    published_scores,
    report_real,
    run_real,
    world_model_outcomes,
)
from immunegym.data.real import morrison1_samples
from immunegym.ontology import FINE_TYPES

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny batches: one thread

CD8 = [FINE_TYPES.index(t) for t in ("cd8_memory", "cd8_effector", "cd8_tpex", "cd8_tex")]


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return morrison1_pretreatment()


@pytest.fixture(scope="module")
def reference() -> ReferenceBank:
    return synthetic_reference()


@pytest.fixture(scope="module")
def real_section(one_torch_thread) -> dict:
    return jsonable(run_real(BenchContext(quick=True)))


def test_pretreatment_selection_is_357_samples_over_6_cohorts(data):
    assert len(data) == 357
    assert data["cohort"].nunique() == 6
    assert set(data["timepoint"]) == {"pre"}
    assert set(data["responder"].unique()) == {0.0, 1.0}
    assert data["subject_id"].is_unique
    # Only unassessed pre-treatment samples are dropped.
    everything = morrison1_samples()
    pre = everything[everything["timepoint"] == "pre"]
    assert len(pre) - len(data) == int(pre["responder"].isna().sum())


def test_tide_sign_convention_flips_the_auroc(data):
    y = data["responder"].to_numpy(float)
    signed = published_scores(data)["TIDE"]
    raw = data["TIDE"].to_numpy(float)
    assert PUBLISHED_SCORES["TIDE"][1] == -1.0
    assert auroc(y, signed) == pytest.approx(1.0 - auroc(y, raw))
    assert auroc(y, signed) > 0.5  # low TIDE = responder, as published


def test_observation_model_rows_on_simplex_and_ignore_held_out_cohort(data, reference):
    cohort = "gide"
    probe = data.head(40)
    model = fit_without(data, cohort, reference)
    comp = model.transform(probe)
    assert comp.shape == (40, len(FINE_TYPES))
    assert np.all(comp >= 0)
    np.testing.assert_allclose(comp.sum(1), 1.0)
    altered = data.copy()
    columns = model.columns
    held = altered["cohort"] == cohort
    altered.loc[held, columns] = altered.loc[held, columns] * 5.0 + 3.0
    np.testing.assert_array_equal(fit_without(altered, cohort, reference).transform(probe), comp)
    # The same change in a training cohort does move the fit: the check above can fail.
    other = altered.copy()
    other.loc[other["cohort"] == "liu", columns] += 3.0
    assert not np.allclose(fit_without(other, cohort, reference).transform(probe), comp)


def test_higher_cd8_score_never_lowers_the_mapped_cd8_fraction(data, reference):
    model = SignatureObservationModel(reference).fit(data)
    column = NODE_SIGNATURES["cd8_t"][0]
    grid = np.linspace(data[column].min() - 1, data[column].max() + 1, 41)
    for _, row in data.sample(5, random_state=0).iterrows():
        probe = pd.DataFrame([row] * len(grid))
        probe[column] = grid
        cd8 = model.transform(probe)[:, CD8].sum(1)
        assert np.all(np.diff(cd8) >= -1e-12)
        assert cd8[-1] > cd8[0]


def test_observation_model_bad_input_errors_clearly(data, reference):
    with pytest.raises(ValueError, match="no such signature"):
        SignatureObservationModel(reference, {"cd8_t": ("no such signature",)},
                                  effector_signature=None).fit(data)
    with pytest.raises(ValueError, match="not an ontology node"):
        SignatureObservationModel(reference, {"cd9_t": ("TReg",)}, effector_signature=None)
    with pytest.raises(ValueError, match="lies under"):
        SignatureObservationModel(reference, {"t_cell": ("TReg",), "treg": ("TReg",)},
                                  effector_signature=None)
    with pytest.raises(ValueError, match="fit"):
        SignatureObservationModel(reference).transform(data)
    bad = data.copy()
    bad.loc[bad.index[3], "TReg"] = np.nan
    with pytest.raises(ValueError, match="TReg"):
        SignatureObservationModel(reference).fit(bad)
    with pytest.raises(ValueError, match="cohort"):
        fit_without(data, "nope", reference)
    weird = morrison1_samples()
    weird.loc[weird.index[0], ["regimen", "timepoint"]] = ["IL2", "pre"]
    weird.loc[weird.index[0], "responder"] = 1.0
    with pytest.raises(ValueError, match="IL2"):
        morrison1_pretreatment(weird)


def test_immune_counts_keep_reference_immune_share(reference):
    nodes = ["cd8_exhausted", "t_cell", "myeloid", "b_cell"]
    counts = np.array([[10, 5, 3, 0], [0, 0, 4, 4]], dtype=float)
    comp = immune_counts_to_composition(counts, nodes, reference)
    np.testing.assert_allclose(comp.sum(1), 1.0)
    immune = [FINE_TYPES.index(t) for t in FINE_TYPES
              if t not in ("malignant", "fibroblast", "endothelial")]
    np.testing.assert_allclose(comp[:, immune].sum(1), reference.mean[immune].sum())
    assert comp[1, CD8].sum() == 0.0  # no T cells counted, none invented
    with pytest.raises(ValueError, match="not an immune"):
        immune_counts_to_composition(counts, ["malignant", "t_cell", "myeloid", "b_cell"],
                                     reference)


def test_world_model_outcomes_checks_regimens(reference):
    from immunegym.world_model import load

    with pytest.raises(ValueError, match="regimens"):
        world_model_outcomes(load(), reference.composition[:3], 60.0, ["anti_pd1"])


def test_run_real_contract_and_report(real_section, tmp_path):
    section = real_section
    assert set(section) >= {"morrison1", "sade_feldman", "config", "seconds"}
    morrison = section["morrison1"]
    assert morrison["n_samples"] == 357 and len(morrison["cohorts"]) == 6
    required = {"world_model", "TIDE", "IMPRES", "cd8_infiltration", "tiara_pd1"}
    for block in (morrison["pooled_auroc"], *morrison["per_cohort"].values()):
        assert required <= set(block)
        assert set(block["ci95"]) >= required
        for key in required:
            lo, hi = block["ci95"][key]
            assert 0.0 <= lo <= block[key] <= hi <= 1.0
        assert block["n"] > block["n_positive"] > 0
    assert set(morrison["per_cohort"]) == set(morrison["cohorts"])
    assert isinstance(morrison["beats_all_published"], bool)
    published = [morrison["pooled_auroc"][k] for k in ("TIDE", "IMPRES", "cd8_infiltration",
                                                        "tiara_pd1")]
    assert morrison["beats_all_published"] == (morrison["pooled_auroc"]["world_model"]
                                               > max(published))
    sade = section["sade_feldman"]
    assert sade["n_samples"] == 19
    assert {"world_model", "cd8_fraction", "memory_vs_exhausted"} <= set(sade["pooled_auroc"])
    assert sade["pooled_auroc"]["n"] == 19
    json.dumps(section)  # plain JSON
    text = report_real(section, tmp_path)
    assert text.startswith("### ")
    assert "TIDE" in text and "(response_real_auroc.png)" in text
    assert (tmp_path / "response_real_auroc.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="sade_feldman"):
        report_real({"morrison1": morrison}, tmp_path)
