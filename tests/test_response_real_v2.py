"""MORRISON-1 v2: logistic baseline, deltas, aim, survival concordance and --real-only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_reference
from scipy.stats import somersd
from typer.testing import CliRunner

from immunegym.benchmarks import response
from immunegym.benchmarks.common import BenchContext, auroc, jsonable
from immunegym.benchmarks.response_real import (
    AIM_POOLED_AUROC,
    PUBLISHED_SCORES,
    ReferenceBank,
    comparable_pairs,
    concordance_block,
    evaluate_morrison1,
    evaluate_sade_feldman,
    harrell_c,
    logistic_signature_scores,
    morrison1_pretreatment,
    report_real,
)
from immunegym.benchmarks.runner import headline
from immunegym.validation import ValidationError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny batches: one thread


@pytest.fixture(scope="module")
def model():
    from immunegym.world_model import load

    return load()


@pytest.fixture(scope="module")
def reference() -> ReferenceBank:
    return synthetic_reference()


@pytest.fixture(scope="module")
def morrison(model, reference) -> dict:
    return jsonable(evaluate_morrison1(model, reference, calibrated=False, finetuned=False,
                                       n_bootstrap=200))


# --------------------------------------------------------------------------- concordance
def test_pooled_c_matches_hand_enumerated_pairs():
    # Cohort a (months): distinct-time pairs (1,2) (1,3) (1,3') (2,3) (2,3'); (3,3') tie.
    # Higher score = longer time: concordant (1,2) (1,3) (1,3') (2,3'), discordant (2,3).
    # Cohort b (days): (10,20) a score tie (1/2), (10,30) and (20,30) discordant.
    time = np.array([1, 2, 3, 3, 10, 20, 30, np.nan])
    score = np.array([0.1, 0.3, 0.2, 0.5, 1.0, 1.0, 0.0, 9.0])
    cohorts = np.array(["a"] * 4 + ["b"] * 4)
    out = concordance_block(time, {"s": score}, cohorts, n_bootstrap=50)
    assert out["per_cohort"]["a"]["s"] == pytest.approx(4 / 5)
    assert out["per_cohort"]["b"]["s"] == pytest.approx(0.5 / 3)
    assert out["per_cohort"]["a"]["pairs"] == 5 and out["per_cohort"]["b"]["pairs"] == 3
    assert out["pooled"]["s"] == pytest.approx((4 + 0.5) / (5 + 3))
    assert out["pooled"]["pairs"] == 8 and out["pooled"]["n"] == 7  # the NaN time is out
    # Comparing across cohorts (mixed units) would give another figure: the block does not.
    assert harrell_c(time, score) != pytest.approx(out["pooled"]["s"])


def test_harrell_c_equals_scipy_somersd_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(5):
        t = rng.integers(0, 8, 40).astype(float)
        s = rng.integers(0, 4, 40).astype(float)
        expected = (somersd(t, s).statistic + 1) / 2  # D(score | time)
        assert harrell_c(t, s) == pytest.approx(expected)
    t = np.arange(10.0)
    assert harrell_c(t, t) == pytest.approx(1.0) and harrell_c(t, -t) == pytest.approx(0.0)
    assert harrell_c(t, np.ones(10)) == 0.5
    assert np.isnan(harrell_c(np.ones(5), t[:5]))
    assert comparable_pairs(np.array([1.0, 1.0, 2.0])) == 2


def test_concordance_bootstrap_is_seeded_and_brackets_the_value():
    rng = np.random.default_rng(0)
    time = rng.exponential(10, 120)
    cohorts = np.repeat(["x", "y", "z"], 40)
    scores = {"good": time + rng.normal(0, 5, 120), "noise": rng.normal(size=120)}
    one = concordance_block(time, scores, cohorts, seed=1, n_bootstrap=300)
    again = concordance_block(time, scores, cohorts, seed=1, n_bootstrap=300)
    other = concordance_block(time, scores, cohorts, seed=2, n_bootstrap=300)
    assert one["pooled"]["ci95"] == again["pooled"]["ci95"]
    assert one["pooled"]["ci95"]["good"] != other["pooled"]["ci95"]["good"]
    for key in scores:
        lo, hi = one["pooled"]["ci95"][key]
        assert lo <= one["pooled"][key] <= hi
    assert one["pooled"]["ci95"]["good"][0] > 0.6
    assert one["pooled"]["ci95"]["noise"][0] < 0.5 < one["pooled"]["ci95"]["noise"][1]


def test_concordance_block_bad_input_names_the_field():
    with pytest.raises(ValidationError, match=r"cohorts: got \(3,\)"):
        concordance_block(np.ones(4), {"s": np.ones(4)}, np.array(["a"] * 3))
    with pytest.raises(ValidationError, match=r"scores\['s'\]"):
        concordance_block(np.ones(4), {"s": np.ones(3)}, np.array(["a"] * 4))
    with pytest.raises(ValidationError, match="n_bootstrap"):
        concordance_block(np.ones(4), {"s": np.ones(4)}, np.array(["a"] * 4), n_bootstrap=0)


# --------------------------------------------------------------------------- logistic
def test_logistic_baseline_is_leave_one_cohort_out():
    data = morrison1_pretreatment()
    labels = data["responder"].to_numpy(float)
    cohorts = data["cohort"].astype(str).to_numpy()
    base = logistic_signature_scores(data, labels, cohorts)
    assert base.shape == (len(data),) and np.all(np.isfinite(base))
    # The held-out cohort's own labels and scores never enter its prediction ...
    flipped = labels.copy()
    held = cohorts == "gide"
    flipped[held] = 1 - flipped[held]
    again = logistic_signature_scores(data, flipped, cohorts)
    np.testing.assert_array_equal(again[held], base[held])
    # ... but they do enter the other cohorts' (so the check above can fail).
    assert not np.allclose(again[~held], base[~held])


def test_logistic_baseline_learns_a_planted_signal_and_checks_input():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 120).astype(float)
    frame = pd.DataFrame({"signal": labels + rng.normal(0, 0.5, 120),
                          "noise": rng.normal(size=120)})
    cohorts = np.repeat(["a", "b", "c"], 40)
    score = logistic_signature_scores(frame, labels, cohorts, ["signal", "noise"])
    assert auroc(labels, score) > 0.8
    with pytest.raises(ValidationError, match="columns: got 'missing'"):
        logistic_signature_scores(frame, labels, cohorts, ["signal", "missing"])
    with pytest.raises(ValidationError, match="at least two cohorts"):
        logistic_signature_scores(frame, labels, np.repeat("a", 120), ["signal"])
    with pytest.raises(ValidationError, match="both responders"):
        logistic_signature_scores(frame, np.where(cohorts == "a", labels, 0.0), cohorts,
                                  ["signal"])
    bad = frame.copy()
    bad.loc[5, "noise"] = np.nan
    with pytest.raises(ValidationError, match=r"data\['noise'\]"):
        logistic_signature_scores(bad, labels, cohorts, ["signal", "noise"])
    with pytest.raises(ValidationError, match="c: got 0"):
        logistic_signature_scores(frame, labels, cohorts, ["signal"], c=0.0)


# --------------------------------------------------------------------------- contract
def test_morrison1_v2_contract(morrison):
    pooled = morrison["pooled_auroc"]
    key = "logistic_signatures"
    assert key in pooled and key in pooled["ci95"]
    assert all(key in block for block in morrison["per_cohort"].values())
    assert key in morrison["mean_per_cohort_auroc"]
    delta = morrison["delta_vs_logistic"]
    assert delta["value"] == pytest.approx(pooled["world_model"] - pooled[key])
    assert delta["ci95"][0] <= delta["value"] <= delta["ci95"][1]
    assert morrison["beats_logistic"] == (pooled["world_model"] > pooled[key])
    assert set(morrison["deltas"]) == {"world_model"}  # not calibrated here
    assert set(morrison["deltas"]["world_model"]) == {*PUBLISHED_SCORES, key,
                                                      "logistic_signatures_regimen"}
    for other, block in morrison["deltas"]["world_model"].items():
        assert block["value"] == pytest.approx(pooled["world_model"] - pooled[other])
    aim = morrison["aim"]
    assert aim["pooled_auroc_min"] == AIM_POOLED_AUROC == 0.65
    assert aim["met"] == (pooled["world_model"] >= 0.65 and morrison["beats_all_published"]
                          and morrison["beats_logistic"])
    conc = morrison["concordance"]
    assert set(conc) == {"pfs", "os"}
    assert conc["pfs"]["cohorts_without_times"] == ["064"]  # PFS unpublished there
    assert conc["os"]["cohorts_without_times"] == []
    assert conc["os"]["pooled"]["n"] == morrison["n_samples"]
    for end in conc.values():
        assert set(end["per_cohort"]) == set(morrison["cohorts"]) - set(
            end["cohorts_without_times"])
        for k in pooled["ci95"]:
            lo, hi = end["pooled"]["ci95"][k]
            assert 0.0 <= lo <= end["pooled"][k] <= hi <= 1.0
    assert "event" in morrison["concordance_method"]
    json.dumps(morrison)


def test_report_has_logistic_deltas_concordance_and_aim(model, reference, morrison,
                                                        tmp_path):
    sade = jsonable(evaluate_sade_feldman(model, reference, n_bootstrap=100))
    text = report_real({"morrison1": morrison, "sade_feldman": sade}, tmp_path)
    assert "logistic, all signatures (LOCO)" in text
    assert "Against a leave-one-cohort-out logistic regression" in text
    assert "Harrell's C" in text and "| PFS pooled |" in text and "| OS 064 |" in text
    assert "| PFS 064 |" not in text
    assert ("Aim met" in text) == morrison["aim"]["met"]
    assert ("Aim not met" in text) == (not morrison["aim"]["met"])


# --------------------------------------------------------------------------- --real-only
def test_real_only_cli_skips_synthetic_and_reports(tmp_path):
    from immunegym.cli import app

    runner = CliRunner()
    path, out = tmp_path / "r.json", tmp_path / "report"
    result = runner.invoke(app, ["bench", "response", "--quick", "--real-only", "--json",
                                 str(path), "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    doc = json.loads(path.read_text())
    assert doc["synthetic"] is None and doc["config"]["synthetic"] is None
    assert doc["config"]["real_only"] is True
    assert doc["real"]["morrison1"]["n_samples"] == 357
    assert "--real-only" in doc["meta"]["command"]
    rows = list(headline({"response": doc}))
    assert rows and all(".real." in where for where, *_ in rows)
    report = (out / "report.md").read_text()
    assert "Synthetic cohorts skipped" in report and "MORRISON-1" in report
    assert not (out / "response_synthetic_per_cohort.png").exists()
    # The option exists for `bench response` only.
    other = runner.invoke(app, ["bench", "reconstruction", "--real-only", "--json",
                                str(path)])
    assert other.exit_code == 2 and "No such option" in other.output


def test_real_only_must_be_a_bool():
    with pytest.raises(ValidationError, match="real_only: got 'yes'"):
        response.run(BenchContext(quick=True), real_only="yes")


def test_logistic_with_regimen_adds_one_hot_regimens(morrison):
    import pandas as pd

    from immunegym.benchmarks.response_real import (
        logistic_signature_scores,
        logistic_with_regimen,
        morrison1_pretreatment,
    )
    from immunegym.data.real import morrison1_signature_columns

    data = morrison1_pretreatment()
    labels = data["responder"].to_numpy(float)
    cohorts = data["cohort"].astype(str).to_numpy()
    onehot = pd.get_dummies(data["regimen"], prefix="regimen").astype(float)
    by_hand = logistic_signature_scores(pd.concat([data, onehot], axis=1), labels, cohorts,
                                        [*morrison1_signature_columns(), *onehot.columns])
    np.testing.assert_allclose(logistic_with_regimen(data, labels, cohorts), by_hand)
    assert "logistic_signatures_regimen" in morrison["pooled_auroc"]
    with pytest.raises(ValidationError, match="'regimen'"):
        logistic_with_regimen(data.drop(columns=["regimen"]), labels, cohorts)
