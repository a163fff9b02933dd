"""Counterfactual fidelity benchmark: truth, metrics, contract and determinism on tiny cohorts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from immunegym.benchmarks import counterfactual as cf
from immunegym.benchmarks.common import BenchContext, HeldOutCohort, day0_states, jsonable
from immunegym.sim.cohort import CohortSpec, simulate_cohort
from immunegym.sim.state import compartments_to_fine
from immunegym.world_model import load
from immunegym.world_model.timelines import build_timelines, concat_timelines

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny batches: one thread

HELD_OUT = (
    CohortSpec("cf_mel", "melanoma", ("anti_pd1",), "atlas_zheng", n_patients=10, seed=7),
    CohortSpec("cf_nsclc", "nsclc", ("chemo",), "tme_fine", n_patients=10, seed=8),
)
TRAIN = (
    CohortSpec("cf_tr1", "melanoma", ("anti_pd1", "none", "anti_ctla4"), "atlas_zheng",
               n_patients=10, seed=21),
    CohortSpec("cf_tr2", "nsclc", ("chemo", "anti_pd1+chemo"), "tme_fine", n_patients=10,
               seed=22),
)
N_BOOT = 100


@pytest.fixture(scope="module")
def data(one_torch_thread):
    cohorts = [simulate_cohort(s) for s in HELD_OUT]
    held = [HeldOutCohort(s, c.adata, c.truth) for s, c in zip(HELD_OUT, cohorts, strict=True)]
    tl = concat_timelines([build_timelines(c.adata) for c in cohorts])
    train = concat_timelines([build_timelines(simulate_cohort(s).adata) for s in TRAIN])
    return {"model": load(), "held": held, "tl": tl, "train": train}


@pytest.fixture(scope="module")
def section(data):
    return cf.evaluate(data["model"], data["held"], data["tl"], data["train"], replicates=3,
                       seed=5, n_bootstrap=N_BOOT)


def test_day0_states_equal_the_cohorts_day0_truth(data):
    for held in data["held"]:
        _, patients, state = day0_states(held.spec)
        fine = compartments_to_fine(state.cells).numpy()
        comp = fine / fine.sum(-1, keepdims=True)
        np.testing.assert_allclose(comp, held.truth.composition[0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(state.cells[:, :3].sum(-1).numpy(),
                                   held.truth.tumor_cells[0], rtol=1e-6)


def test_untreated_tumors_grow_more_than_treated():
    spec = HELD_OUT[0]
    task = cf.TruthTask(spec, np.arange(spec.n_patients), ("none", "anti_pd1+anti_ctla4"), 6,
                        2, seed=0)
    truth = cf.true_outcomes([cf.simulate_branches(task)])
    _, _, state = day0_states(spec)
    from immunegym.sim.outcomes import sum_of_diameters
    from immunegym.sim.parameters import load_parameters

    base = np.log1p(sum_of_diameters(state.cells[:, :3].sum(-1),
                                     load_parameters().rates).numpy())
    none, combo = truth["log_sod"][:, 0], truth["log_sod"][:, 1]
    assert (none - base).mean() > 0  # untreated escape-phase tumors grow
    assert none.mean() > combo.mean()
    assert truth["p_response"][:, 0].mean() < truth["p_response"][:, 1].mean()


def test_branch_rows_keep_each_patient_on_its_own_row():
    spec = HELD_OUT[0]
    rows = np.arange(spec.n_patients)[::-1].copy()
    task = cf.TruthTask(spec, rows, ("anti_pd1", "none"), 1, 2, seed=3)
    branches = cf.simulate_branches(task)
    assert branches.final_log_sod.shape == (len(rows), 2, 2)
    from immunegym.sim.outcomes import sum_of_diameters
    from immunegym.sim.parameters import load_parameters

    _, _, state = day0_states(spec)
    base = np.log1p(sum_of_diameters(state.cells[:, :3].sum(-1),
                                     load_parameters().rates).numpy())[rows]
    # One untreated cycle barely moves a tumor: each row is still its own patient.
    after = branches.final_log_sod[:, 1].mean(-1)
    assert np.abs(after - base).max() < 0.5
    assert np.corrcoef(after, base)[0, 1] > 0.9


def test_death_counts_as_the_worst_outcome():
    log_sod = np.array([[[3.0, 3.0], [2.0, 4.5]], [[1.0, 1.0], [1.0, 1.0]]])  # (P, G, R)
    died = np.zeros_like(log_sod, dtype=bool)
    died[0, 0, 1] = True  # patient 0 dies in one replicate of regimen 0 (frozen at 3.0)
    responded = np.zeros_like(died)
    responded[1, 1] = True
    truth = cf.true_outcomes([cf.Branches(log_sod, died, responded)])
    assert truth["death_log_sod"] == 4.5
    np.testing.assert_allclose(truth["log_sod"], [[3.75, 3.25], [1.0, 1.0]])
    np.testing.assert_array_equal(truth["responder"], [[False, False], [False, True]])
    np.testing.assert_allclose(truth["p_death"][0], [0.5, 0.0])


def test_perfect_predictor_scores_one():
    truth = np.random.default_rng(0).normal(size=(20, 6))
    m = cf.ranking_metrics(truth, truth)
    np.testing.assert_allclose(m["spearman"], 1.0)
    np.testing.assert_allclose(m["best_accuracy"], 1.0)
    np.testing.assert_allclose(m["regret"], 0.0)
    reversed_ = cf.ranking_metrics(-truth, truth)
    np.testing.assert_allclose(reversed_["spearman"], -1.0)
    assert (reversed_["regret"] > 0).all()


def test_no_effect_accuracy_is_the_tie_breaking_expectation():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(30, 6))
    truth[:5, :2] = truth[:5].min(1, keepdims=True) - 1.0  # two tied best regimens
    constant = np.repeat(rng.normal(size=(30, 1)), 6, 1)
    m = cf.ranking_metrics(constant, truth)
    n_best = (truth == truth.min(1, keepdims=True)).sum(1)
    np.testing.assert_allclose(m["best_accuracy"], n_best / 6)
    np.testing.assert_allclose(m["spearman"], 0.0)
    mean_gap = (truth - truth.min(1, keepdims=True)).mean(1)
    np.testing.assert_allclose(m["regret"], mean_gap)


def test_additive_fit_recovers_known_effects(data):
    train = data["train"]
    fit = cf.fit_additive(train)
    assert fit.n_intervals > 20 and fit.n_patients <= len(train)
    # A synthetic burden with known per-cycle effects is recovered exactly.
    from immunegym.world_model.events import cumulative_dose

    synthetic = train.subset(range(len(train)))
    exposure = cumulative_dose(synthetic.cycle_doses, synthetic.days)  # (P, L, R)
    effects = torch.tensor([-0.2, -0.1, -0.3, 0.0, 0.0])
    synthetic.burden = (4.0 + 0.05 * synthetic.days / 21 + exposure @ effects).float()
    known = cf.fit_additive(synthetic)
    assert known.intercept == pytest.approx(0.05, abs=1e-4)
    for t, e in zip(("anti_pd1", "anti_ctla4", "chemo"), (-0.2, -0.1, -0.3), strict=True):
        assert known.effects[t] == pytest.approx(e, abs=1e-4)


def test_world_model_additive_removes_interaction():
    pred = np.array([[5.0, 4.0, 4.5, 1.0, 3.0, 2.0]])
    out = cf.interaction_free(pred, cf.REGIMENS)
    np.testing.assert_allclose(out, [[5.0, 4.0, 4.5, 3.5, 3.0, 2.0]])
    assert cf.interaction_free(pred[:, 1:], cf.REGIMENS[1:]) is None


def test_simulator_doses_match_immunesim_calendar():
    doses = cf.protocol_cycle_doses("anti_pd1+anti_ctla4", 6)
    assert doses.shape == (6, 5)
    assert doses[:, 0].tolist() == [1.0] * 6  # pembrolizumab every cycle
    assert doses[:, 1].sum() == 4.0  # ipilimumab x4


def test_section_has_the_contract_keys_with_intervals(section):
    methods = ("world_model", "no_effect", "additive")
    for key in ("spearman", "best_regimen_accuracy", "regret"):
        block = section[key]
        for m in methods:
            assert m in block and len(block["ci95"][m]) == 2
            lo, hi = block["ci95"][m]
            assert lo <= block[m] + 1e-12 and block[m] <= hi + 1e-12
    assert set(section["responder_auroc"]) == set(cf.REGIMENS)
    for block in section["responder_auroc"].values():
        assert {"world_model", "ci95", "n", "n_positive"} <= set(block)
    counts = section["true_best_regimen_counts"]
    n = section["config"]["n_patients"]
    assert sum(counts[r] for r in cf.REGIMENS) >= n
    assert section["config"]["n_skipped_no_day0_biopsy"] + n == sum(s.n_patients
                                                                    for s in HELD_OUT)
    # no_effect: the computed tie-breaking expectation, not a constant written down.
    true = np.asarray(section["patients"]["true_log_sod"])
    n_best = (true <= true.min(1, keepdims=True) + cf.TIE_TOLERANCE).sum(1)
    assert section["best_regimen_accuracy"]["no_effect"] == pytest.approx(
        float(np.mean(n_best / len(cf.REGIMENS))))
    assert section["spearman"]["no_effect"] == 0.0
    assert set(section["effect_mae"]) == set(cf.REGIMENS[1:])
    # Mean effects: recomputed from the per-patient outcomes; no_effect predicts none.
    mean_effect = section["mean_effect"]
    assert set(mean_effect) == set(cf.REGIMENS[1:])
    g = cf.REGIMENS.index("anti_pd1")
    expected = float((true[:, g] - true[:, 0]).mean())
    assert mean_effect["anti_pd1"]["truth"] == pytest.approx(expected)
    assert all(block["no_effect"] == 0.0 for block in mean_effect.values())
    json.dumps(jsonable(section), allow_nan=False)


def test_same_seed_same_result(data, section):
    again = cf.evaluate(data["model"], data["held"], data["tl"], data["train"], replicates=3,
                        seed=5, n_bootstrap=N_BOOT)
    for key in ("spearman", "best_regimen_accuracy", "regret", "responder_auroc",
                "true_best_regimen_counts", "config"):
        assert jsonable(again[key]) == jsonable(section[key])
    other = cf.simulate_branches(cf.TruthTask(HELD_OUT[0], np.arange(4), ("none",), 2, 2,
                                              seed=6))
    same = cf.simulate_branches(cf.TruthTask(HELD_OUT[0], np.arange(4), ("none",), 2, 2,
                                             seed=5))
    assert not np.array_equal(other.final_log_sod, same.final_log_sod)


@pytest.mark.parametrize("kwargs, field", [
    ({"regimens": ("none", "anti_pd3")}, "regimens"),
    ({"regimens": ("anti_pd1",)}, "regimens"),
    ({"regimens": ("anti_pd1", "anti_pd1")}, "regimens"),
    ({"replicates": 0}, "replicates"),
    ({"n_cycles": 0}, "n_cycles"),
])
def test_bad_arguments_raise(data, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cf.evaluate(data["model"], data["held"], data["tl"], data["train"], **kwargs)


def test_run_and_report_through_the_context(data, tmp_path, monkeypatch):
    monkeypatch.setattr(cf, "N_BOOTSTRAP", N_BOOT)
    ctx = BenchContext(data["model"], quick=True, seed=0, specs=list(HELD_OUT[:1]))
    ctx.fresh = data["held"][:1]
    ctx.suite_timelines = data["train"]
    ctx.suite_split = np.array(["train"] * len(data["train"]))
    section = jsonable(cf.run(ctx))
    assert section["config"]["replicates"] == cf.QUICK_REPLICATES
    assert section["config"]["cohorts"] == [HELD_OUT[0].name]
    md = cf.report(section, tmp_path)
    assert md.startswith("## Counterfactual fidelity")
    for name in ("counterfactual_outcomes.png", "counterfactual_spearman.png"):
        assert (tmp_path / name).stat().st_size > 1000
        assert f"]({name})" in md
    assert not math.isnan(section["spearman"]["world_model"])
