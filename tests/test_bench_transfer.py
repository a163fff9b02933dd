"""The transfer benchmark: leave-one-cancer-type-out training, ratios and their intervals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from immunegym.benchmarks import transfer as tr
from immunegym.benchmarks.common import BenchContext, jsonable
from immunegym.sim.cohort import CohortSpec, simulate_cohort
from immunegym.world_model import load
from immunegym.world_model.timelines import build_timelines, concat_timelines

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny batches: one thread

SUITE = [
    CohortSpec("tr_suite_mel", "melanoma", ("anti_pd1",), "tme_fine", n_patients=12, seed=81),
    CohortSpec("tr_suite_nsclc", "nsclc", ("anti_pd1", "chemo"), "broad_immune",
               n_patients=12, seed=82),
]
FRESH = [
    CohortSpec("tr_fresh_mel", "melanoma", ("anti_pd1",), "tme_fine", n_patients=10, seed=91),
    CohortSpec("tr_fresh_nsclc", "nsclc", ("anti_pd1", "chemo"), "broad_immune",
               n_patients=8, seed=92),
]
TINY = tr.TransferSettings(n_members=1, epochs=1, patience=1, seed_reference=True)


@pytest.fixture(scope="module")
def ctx(one_torch_thread) -> BenchContext:
    context = BenchContext(load(), quick=True, specs=FRESH, seed=5)
    context.suite_timelines = concat_timelines(
        [build_timelines(simulate_cohort(s).adata) for s in SUITE])
    context.fresh_timelines  # noqa: B018 - generate the held-out cohorts once
    return context


@pytest.fixture(scope="module")
def section(ctx) -> dict:
    return tr.run(ctx, settings=TINY)


# --------------------------------------------------------------------------- statistics
def test_ratio_of_means_point_and_paired_interval():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.5, 1.0, 40)
    ratio, ci = tr.ratio_of_means(2.0 * b, b, seed=1)
    assert ratio == pytest.approx(2.0)
    assert ci == pytest.approx([2.0, 2.0])  # paired draws: every resample has ratio 2
    a = b + rng.normal(0, 0.2, 40)
    groups = np.repeat(np.arange(10), 4)
    ratio, ci = tr.ratio_of_means(a, b, groups, seed=1, n=400)
    assert ratio == pytest.approx(a.mean() / b.mean())
    assert ci[0] < ratio < ci[1]
    # The same draws of whole groups, computed by hand.
    draws = np.random.default_rng(1).integers(0, 10, (400, 10))
    manual = [a.reshape(10, 4)[d].mean() / b.reshape(10, 4)[d].mean() for d in draws]
    assert ci == pytest.approx([np.percentile(manual, 2.5), np.percentile(manual, 97.5)])


def test_ratio_of_means_drops_nan_and_rejects_bad_shapes():
    ratio, _ = tr.ratio_of_means(np.array([1.0, np.nan, 3.0]), np.array([1.0, 5.0, 1.0]))
    assert ratio == pytest.approx(2.0)
    with pytest.raises(ValueError, match="held_out, in_distribution"):
        tr.ratio_of_means(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="groups"):
        tr.ratio_of_means(np.ones(3), np.ones(3), np.arange(2))


def test_ratio_of_aurocs_identical_and_reversed_scores():
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(20), np.zeros(30)]
    s = y + rng.normal(0, 0.8, 50)
    ratio, ci = tr.ratio_of_aurocs(y, s, s, seed=0)
    assert ratio == pytest.approx(1.0) and ci == pytest.approx([1.0, 1.0])
    a = roc_auc_score(y, s)
    ratio, ci = tr.ratio_of_aurocs(y, -s, s, seed=0)
    assert ratio == pytest.approx((1 - a) / a)
    assert ci[0] < ratio < ci[1] < 1.0
    assert math.isnan(tr.ratio_of_aurocs(np.ones(5), s[:5], s[:5])[0])


def test_summary_averages_fold_ratios_and_counts_worse_intervals():
    def fold(w1, ci_w1, auc, ci_auc):
        return {"ratio": {"rollout_6_tree_w1": w1, "log_burden_mae_6": None,
                          "response_auroc": auc,
                          "ci95": {"rollout_6_tree_w1": ci_w1, "log_burden_mae_6": None,
                                   "response_auroc": ci_auc}}}

    folds = {"a": fold(1.2, [1.1, 1.3], 0.8, [0.7, 0.9]),
             "b": fold(0.9, [0.8, 1.05], 1.0, [0.9, 1.1])}
    summary = tr.summarize(folds)
    assert summary["rollout_6_tree_w1"] == pytest.approx(1.05)
    assert summary["response_auroc"] == pytest.approx(0.9)
    assert math.isnan(summary["log_burden_mae_6"])
    assert summary["worse_on_unseen_type"] == {"rollout_6_tree_w1": 1, "log_burden_mae_6": 0,
                                               "response_auroc": 1}


def test_settings_validate():
    with pytest.raises(ValueError, match="settings.epochs"):
        tr.TransferSettings(n_members=1, epochs=0, patience=1)


# --------------------------------------------------------------------------- training
def test_held_out_model_never_sees_the_held_out_type(ctx):
    suite = ctx.suite_timelines
    jobs, records = tr.training_jobs(suite, ["melanoma"], TINY, seed=0, split={})
    assert [j.name for j in jobs] == ["in_distribution", tr.RESEEDED, "held_out:melanoma"]
    held = tr.train_job(jobs[-1])
    cancer = dict(zip(suite.patient_ids, suite.patients["cancer_type"], strict=True))
    seen = held["train_patients"] + held["val_patients"]
    assert seen and all(cancer[p] != "melanoma" for p in seen)
    assert set(held["cancer_counts"]) == {"nsclc"}
    # Test-split patients never train either model; the in-distribution model sees both.
    split = ctx.suite_split
    test_ids = {p for p, s in zip(suite.patient_ids, split, strict=True) if s == "test"}
    in_dist = jobs[0]
    assert not test_ids & set(in_dist.train.patient_ids + in_dist.val.patient_ids)
    assert not test_ids & set(seen)
    assert set(in_dist.train.patients["cancer_type"]) == {"melanoma", "nsclc"}
    assert records["held_out:melanoma"]["leave_out_cancer"] == "melanoma"
    model = tr.rebuild(held)
    assert len(model.members) == 1 and model.config.cancer_types == ()


def test_match_steps_gives_the_smaller_set_more_epochs(ctx):
    settings = tr.TransferSettings(n_members=1, epochs=4, patience=2)
    suite = ctx.suite_timelines
    big = concat_timelines([suite] + [
        _renamed(suite, f"copy{i}") for i in range(3)])  # 96 patients
    jobs, _ = tr.training_jobs(big, ["melanoma"], settings, seed=0, split={})
    n_all, n_held = len(jobs[0].train), len(jobs[1].train)
    bs = jobs[0].recipe.train.batch_size
    scale = math.ceil(n_all / bs) / math.ceil(n_held / bs)
    assert jobs[0].recipe.train.epochs == 4 and jobs[0].recipe.train.patience == 2
    assert jobs[1].recipe.train.epochs == max(round(4 * scale), 4) > 4
    assert jobs[1].recipe.train.patience == max(round(2 * scale), 2)
    off = tr.TransferSettings(n_members=1, epochs=4, patience=2, match_steps=False)
    jobs, _ = tr.training_jobs(big, ["melanoma"], off, seed=0, split={})
    assert jobs[1].recipe.train.epochs == 4


def _renamed(tl, tag):
    from dataclasses import replace

    table = tl.patients.copy()
    table["patient_id"] = [f"{p}-{tag}" for p in table["patient_id"]]
    return replace(tl, patients=table)


def test_bucketed_mean_path_equals_rollout(ctx):
    data = tr.fold_data(ctx, "melanoma")
    tl = data.origins.context
    assert len(np.unique(tl.valid.sum(1).numpy())) > 1  # several lengths: buckets differ
    doses = ctx.model.actual_doses(tl, torch.as_tensor(data.origins.day, dtype=torch.float32),
                                   3).numpy()
    comp, burden = tr.bucketed_mean_path(ctx.model, tl, doses)
    ref = ctx.model.rollout(tl, doses, noise="none")
    np.testing.assert_allclose(comp, ref.compositions.mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(burden, ref.burden.mean(0).numpy(), atol=1e-5)


# --------------------------------------------------------------------------- run / report
def test_run_contract(ctx, section):
    assert section["held_out_types"] == ["melanoma"]  # quick: melanoma only
    fold = section["folds"]["melanoma"]
    n_mel = sum(s.n_patients for s in FRESH if s.cancer_type == "melanoma")
    assert fold["n_patients"] == n_mel
    for metric in tr.METRICS:
        block = fold[metric]
        assert set(block["ci95"]) == {*tr.MODELS, tr.RESEEDED} and set(tr.MODELS) < set(block)
        assert block["n"] > 0
    for metric in ("rollout_6_tree_w1", "log_burden_mae_6"):
        block = fold[metric]
        assert block["held_out"] > 0 and block["in_distribution"] > 0
        assert fold["ratio"][metric] == pytest.approx(
            block["held_out"] / block["in_distribution"])
        lo, hi = block["ci95"]["pretrained"]
        assert lo <= block["pretrained"] <= hi
    assert set(fold["ratio"]["ci95"]) == set(tr.METRICS)
    # The seed reference: the in-distribution model retrained with the next seed.
    assert set(fold["seed_reference"]["ci95"]) == set(tr.METRICS)
    w1 = fold["rollout_6_tree_w1"]
    assert fold["seed_reference"]["rollout_6_tree_w1"] == pytest.approx(
        w1[tr.RESEEDED] / w1["in_distribution"])
    assert w1[tr.RESEEDED] != w1["in_distribution"]  # another seed, another model
    assert section["config"]["split"][tr.RESEEDED]["model_seed"] == ctx.seed + 1
    assert fold["n_train"]["held_out"] < fold["n_train"]["in_distribution"]
    assert section["summary"]["n_folds"] == 1
    assert "ratio > 1 = worse" in section["direction"]["rollout_6_tree_w1"]
    assert "ratio < 1 = worse" in section["direction"]["response_auroc"]
    cfg = section["config"]
    assert cfg["settings"]["n_members"] == 1 and cfg["rollout_cycles"] == tr.HORIZON
    assert cfg["split"]["held_out:melanoma"]["leave_out_cancer"] == "melanoma"
    assert section["seconds"] > 0
    json.dumps(jsonable(section), allow_nan=False)


def test_run_is_deterministic(ctx, section):
    again = tr.run(ctx, settings=TINY)

    def strip(s):
        return {k: v for k, v in jsonable(s).items() if k not in ("seconds", "timings_s")}

    assert strip(again) == strip(section)


def test_ray_tasks_give_the_same_figures(ctx, section):
    pytest.importorskip("ray")
    import ray

    with BenchContext(ctx.model, quick=True, specs=FRESH, seed=ctx.seed, ray=True) as on_ray:
        on_ray.suite_timelines = ctx.suite_timelines
        on_ray.fresh = ctx.fresh  # the same held-out cohorts, not regenerated
        got = tr.run(on_ray, settings=TINY)
        assert ray.is_initialized()  # kept up across the context's maps ...
    assert not ray.is_initialized()  # ... and shut down when the context closes
    assert got["config"]["ray"] is True
    assert jsonable(got["folds"]) == jsonable(section["folds"])


def test_run_rejects_unknown_or_untested_types(ctx):
    with pytest.raises(ValueError, match="held_out_types.*glioma"):
        tr.run(ctx, held_out_types=["glioma"], settings=TINY)
    with pytest.raises(ValueError, match="held_out_types"):
        tr.run(ctx, held_out_types=["melanoma", "melanoma"], settings=TINY)
    with pytest.raises(ValueError, match="no fresh cohort of type 'melanoma'"):
        tr.fold_data(BenchContext(ctx.model, specs=FRESH[1:]), "melanoma")


def test_report_writes_table_and_plot(section, tmp_path):
    text = tr.report(jsonable(section), tmp_path)
    assert text.startswith("## Cross-cancer transfer")
    assert "| melanoma (n=10) | 6-cycle tree-W1" in text
    assert "(transfer_by_type.png)" in text
    header = next(line for line in text.splitlines() if line.startswith("| held-out type"))
    assert header.endswith("| ratio | seed reference |")
    separator = text.splitlines()[text.splitlines().index(header) + 1]
    assert separator.count("---") == header.count(" | ") + 1
    png = tmp_path / "transfer_by_type.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
