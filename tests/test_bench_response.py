"""The response-prediction benchmark (synthetic half) on two tiny cohorts."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from immunegym.benchmarks import response
from immunegym.benchmarks.common import BenchContext, jsonable
from immunegym.sim.cohort import CohortSpec, simulate_cohort
from immunegym.sim.therapy import parse_regimen

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny batches: one thread

SPECS = [
    CohortSpec("resp_mel", "melanoma", ("anti_pd1", "anti_pd1+anti_ctla4"), "tme_fine",
               n_patients=10, seed=7),
    CohortSpec("resp_nsclc", "nsclc_pdl1_high", ("chemo", "anti_pd1"), "broad_immune",
               n_patients=10, seed=8),
]




@pytest.fixture(scope="module")
def model():
    from immunegym.world_model import load

    return load()


@pytest.fixture(scope="module")
def context(model):
    return BenchContext(model, quick=True, seed=3, specs=SPECS)


@pytest.fixture(scope="module")
def section(context):
    return jsonable(response.run(context))


def test_oracle_probabilities_and_day0_alignment():
    spec = SPECS[0]
    cohort = simulate_cohort(spec)
    _, arms = response.cohort_arms(spec, cohort.adata.uns["patients"])
    task = {"spec": spec, "arm": arms, "replicates": 4, "seed": 11,
            "day0": cohort.truth.composition[0]}
    out = response.oracle_task(task)
    p = out["probability"]
    assert p.shape == (spec.n_patients,)
    assert np.all((p >= 0) & (p <= 1))
    assert np.allclose(p * 4, np.round(p * 4))  # fractions of 4 replicates
    assert out["day0_max_abs_diff"] < 1e-6  # patient i of the cohort is row i of day0_states
    other = simulate_cohort(replace(spec, seed=spec.seed + 1))
    wrong = response.oracle_task({**task, "day0": other.truth.composition[0]})
    assert wrong["day0_max_abs_diff"] > 1e-3
    again = response.oracle_task(task)
    assert np.array_equal(again["probability"], p)
    with pytest.raises(ValueError, match="arm"):
        response.oracle_task({**task, "arm": arms[:-1]})
    with pytest.raises(ValueError, match="replicates"):
        response.oracle_task({**task, "replicates": 0})


def test_oracle_seed_is_not_the_cohort_seed():
    seeds = {response.oracle_seed(s, spec) for s in range(3) for spec in SPECS}
    assert len(seeds) == 6
    assert not seeds & {spec.seed for spec in SPECS}


def test_cohort_arms_match_the_patient_table():
    spec = SPECS[1]
    cohort = simulate_cohort(spec)
    table = pd.DataFrame(cohort.adata.uns["patients"])
    ids, arms = response.cohort_arms(spec, table)
    assert ids == [f"{spec.name}-P{i:03d}" for i in range(spec.n_patients)]
    names = [parse_regimen(spec.regimens[a]).name for a in arms]
    assert names == table["regimen"].astype(str).tolist()
    assert set(arms.tolist()) == {0, 1}
    bad = table.copy()
    bad["regimen"] = bad["regimen"].astype(str)
    bad.loc[0, "regimen"] = "anti_ctla4"
    with pytest.raises(ValueError, match="regimen"):
        response.cohort_arms(spec, bad)
    with pytest.raises(ValueError, match="patient ids"):
        response.cohort_arms(spec, table.iloc[::-1])


# --------------------------------------------------------------------------- folds
def _toy(seed: int = 0):
    rng = np.random.default_rng(seed)
    cohort = np.repeat(["a", "b", "c"], 20)
    x = rng.normal(size=(60, 4))
    y = (x[:, 0] + rng.normal(scale=0.5, size=60) > 0).astype(float)
    return x, y, cohort


def test_logistic_baseline_never_sees_the_test_cohort(context):
    x, y, cohort = _toy()
    folds = response.loco_folds(x, y, cohort)
    assert [f["test_cohort"] for f in folds] == ["a", "b", "c"]
    for fold in folds:
        assert fold["test_cohort"] not in fold["train_cohorts"]
        assert not set(fold["train_rows"]) & set(fold["test_rows"])
        assert set(cohort[fold["test_rows"]]) == {fold["test_cohort"]}
        assert len(fold["train_rows"]) + len(fold["test_rows"]) == len(y)
    pred = response.loco_predict(context, x, y, cohort)
    flipped = y.copy()
    flipped[cohort == "a"] = 1.0 - flipped[cohort == "a"]
    pred_flipped = response.loco_predict(context, x, flipped, cohort)
    # Cohort a's own labels cannot move its predictions; they do move the others'.
    assert np.array_equal(pred[cohort == "a"], pred_flipped[cohort == "a"])
    assert not np.allclose(pred[cohort != "a"], pred_flipped[cohort != "a"])
    both = response.loco_predict(context, {"x": x, "half": x[:, :2]}, y, cohort)
    assert np.array_equal(both["x"], pred)
    assert np.array_equal(both["half"], response.loco_predict(context, x[:, :2], y, cohort))
    with pytest.raises(ValueError, match="features"):
        response.loco_folds(x[:5], y, cohort)


def test_single_class_training_fold_predicts_prevalence():
    fold = {"x_train": np.zeros((4, 2)), "y_train": np.zeros(4), "x_test": np.ones((3, 2)),
            "c": 1.0}
    assert np.array_equal(response.fit_fold(fold), np.zeros(3))


# --------------------------------------------------------------------------- statistics
def test_per_cohort_auroc_is_null_with_one_class():
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 0, 0, 0], dtype=float)
    cohort = np.array(["x"] * 6 + ["y"] * 4)
    scores = {"s": np.arange(10, dtype=float)}
    out = jsonable(response.summarize(labels, cohort, scores))
    assert out["per_cohort"]["y"]["s"] is None
    assert out["per_cohort"]["y"]["ci95"]["s"] == [None, None]
    assert out["per_cohort"]["x"]["s"] is not None
    assert out["mean_per_cohort_auroc"]["n_cohorts"] == 1
    assert out["mean_per_cohort_auroc"]["s"] == pytest.approx(out["per_cohort"]["x"]["s"])


# --------------------------------------------------------------------------- leakage
def test_baseline_truncation_drops_everything_after_the_first_biopsy(context):
    tl = context.fresh_timelines
    base, day = response.truncate_at_first_biopsy(tl)
    first = tl.comp_observed.numpy().argmax(1)
    assert np.array_equal(day, tl.days.numpy()[np.arange(len(tl)), first])
    assert bool((base.days[base.valid] >= 0).all())
    assert np.all(np.where(base.valid.numpy(), base.days.numpy(), -1).max(1) == day)
    assert base.comp_observed.sum(1).max() == 1  # only the baseline biopsy
    # Altering what happens after the baseline (later scans, doses) changes nothing.
    later = tl.days > torch.as_tensor(day, dtype=torch.float32)[:, None]
    altered = replace(tl, burden=torch.where(later, tl.burden * 0.5, tl.burden),
                      cycle_doses=tl.cycle_doses.clone())
    altered.cycle_doses[:, 1:] = 3.0
    base2, _ = response.truncate_at_first_biopsy(altered)
    for name in ("days", "valid", "burden", "burden_observed", "counts", "fractions",
                 "program_scores", "comp_observed", "cycle_doses"):
        assert torch.equal(getattr(base, name), getattr(base2, name)), name
    assert not bool(base.burden[~base.valid].any())  # cleared, not only masked
    no_biopsy = replace(tl, comp_observed=tl.comp_observed.clone())
    no_biopsy.comp_observed[0] = False
    with pytest.raises(ValueError, match="no biopsy"):
        response.truncate_at_first_biopsy(no_biopsy)


def test_world_model_scores_shapes_and_errors(context):
    base = response.collect_baselines(context)
    wm = response.world_model_scores(context.model, base.timelines, base.regimen,
                                     base.baseline_day, 3, (2, 3))
    n = len(base.label)
    assert wm["score"].shape == (n,) and np.isfinite(wm["score"]).all()
    assert np.allclose(wm["by_cycles"][3], wm["score"])
    assert np.all(wm["by_cycles"][2] <= wm["score"] + 1e-9)  # a longer nadir is lower
    assert wm["features"].shape[0] == n
    with pytest.raises(ValueError, match="n_cycles"):
        response.world_model_scores(context.model, base.timelines, base.regimen,
                                    base.baseline_day, 0)


# --------------------------------------------------------------------------- contract
def test_section_contract(section):
    syn = section["synthetic"]
    json.dumps(section, allow_nan=False)
    pooled = syn["pooled_auroc"]
    for method in response.METHODS:
        assert method in pooled
        value, ci = pooled[method], pooled["ci95"][method]
        assert len(ci) == 2
        if value is not None and ci[0] is not None:
            assert ci[0] <= value + 1e-9 and value <= ci[1] + 1e-9
    assert pooled["n"] == sum(s.n_patients for s in SPECS)
    assert 0 <= pooled["n_positive"] <= pooled["n"]
    assert set(syn["per_cohort"]) == {s.name for s in SPECS}
    for block in syn["per_cohort"].values():
        one_class = block["n_positive"] in (0, block["n"])
        assert (block["oracle"] is None) == one_class
        assert set(response.METHODS) <= set(block["ci95"])
    mean = syn["mean_per_cohort_auroc"]
    assert set(response.METHODS) <= set(mean["ci95"])
    oracle = np.array(syn["patients"]["scores"]["oracle"])
    assert oracle.shape == (pooled["n"],) and np.all((oracle >= 0) & (oracle <= 1))
    assert syn["oracle"]["replicates"] == response.ORACLE_REPLICATES[True]
    assert section["config"]["synthetic"]["world_model_cycles"] == response.WORLD_MODEL_CYCLES
    assert section["seconds"] > 0


def test_same_seed_same_result(section, model):
    again = jsonable(response.run(BenchContext(model, quick=True, seed=3, specs=SPECS)))

    def strip(node):  # wall times differ run to run; everything else must not
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not k.startswith("seconds")}
        return node

    assert strip(again) == strip(section)


def test_report_writes_table_and_plots(section, tmp_path):
    text = response.report(section, tmp_path)
    assert text.startswith("## Response prediction")
    assert "| world model |" in text and "resp_mel" in text
    for name in ("response_synthetic_per_cohort.png", "response_synthetic_roc.png"):
        assert (tmp_path / name).stat().st_size > 1000
        assert f"]({name})" in text
    assert response.report_synthetic(section["synthetic"], tmp_path).startswith("### ")
