"""The reconstruction benchmark: interpolants, queries, world-model (smoother and filter)
queries, run/report,
and WorldModel.predict with a per-patient dt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from immunegym.benchmarks import reconstruction as rec
from immunegym.benchmarks.baselines import clr, leaf_compositions
from immunegym.benchmarks.common import BenchContext, jsonable, model_leaf_prior
from immunegym.ontology import tree_wasserstein
from immunegym.sim.cohort import CohortSpec
from immunegym.world_model import load

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny batches: one thread

SPECS = [
    CohortSpec("rec_test_pd1", "melanoma", ("anti_pd1",), "tme_fine", n_patients=8, seed=71,
               biopsies=(3, 6)),
    CohortSpec("rec_test_chemo", "nsclc", ("chemo", "none"), "broad_immune", n_patients=8,
               seed=72, biopsies=(3, 6)),
]


@pytest.fixture(scope="module")
def ctx(one_torch_thread) -> BenchContext:
    context = BenchContext(load(), quick=True, specs=SPECS, seed=3)
    context.fresh_timelines  # noqa: B018 - generate the cohorts once
    return context


@pytest.fixture(scope="module")
def section(ctx):
    return rec.run(ctx)


def _composition(rng: np.random.Generator, n: int, k: int = 20, zeros: bool = True
                 ) -> np.ndarray:
    x = rng.dirichlet(np.full(k, 0.5), size=n)
    if zeros:
        x[rng.random(x.shape) < 0.3] = 0.0
        x[:, 0] += 1e-3  # every row keeps some mass
    return x / x.sum(-1, keepdims=True)


# --------------------------------------------------------------------------- interpolants
def test_interpolation_reproduces_equal_neighbours_and_endpoints():
    rng = np.random.default_rng(0)
    x0, x1 = _composition(rng, 50), _composition(rng, 50)
    for w in (0.0, 0.37, 1.0):
        np.testing.assert_allclose(rec.clr_interpolate(x0, x0, np.full(50, w)), x0,
                                   atol=1e-12)
    np.testing.assert_allclose(rec.clr_interpolate(x0, x1, np.zeros(50)), x0, atol=1e-12)
    np.testing.assert_allclose(rec.clr_interpolate(x0, x1, np.ones(50)), x1, atol=1e-12)


def test_interpolation_is_linear_in_clr_and_stays_on_simplex():
    rng = np.random.default_rng(1)
    x0, x1 = _composition(rng, 40), _composition(rng, 40)
    w = rng.random(40)
    mid = rec.clr_interpolate(x0, x1, w)
    assert np.all(mid >= 0)
    np.testing.assert_allclose(mid.sum(-1), 1.0, atol=1e-12)
    # Linear in (pseudo-count) clr space: clr(x_w) = (1 - w) clr(x0) + w clr(x1).
    np.testing.assert_allclose(clr(mid), (1 - w[:, None]) * clr(x0) + w[:, None] * clr(x1),
                               atol=1e-9)
    # Halfway is nearer (in W1) to each end than the ends are to each other.
    half = rec.clr_interpolate(x0, x1, np.full(40, 0.5))
    assert np.all(tree_wasserstein(half, x0) < tree_wasserstein(x0, x1) + 1e-12)


def test_interpolation_rejects_bad_input():
    x = np.full((2, 20), 0.05)
    with pytest.raises(ValueError, match="weight"):
        rec.clr_interpolate(x, x, np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="x1"):
        rec.clr_interpolate(x, x[:, :10], 0.5)
    bad = x.copy()
    bad[0, 0] = -0.1
    with pytest.raises(ValueError, match="x0"):
        rec.clr_interpolate(bad, x, 0.5)


def test_nearest_picks_the_nearer_biopsy_and_the_earlier_on_ties():
    day = np.array([10, 10, 10, 10])
    prev = np.array([5, 5, 5, 9])
    nxt = np.array([14, 15, 20, 30])
    assert rec.nearest_is_next(day, prev, nxt).tolist() == [True, False, False, False]


# --------------------------------------------------------------------------- queries
def test_leave_one_out_queries_are_interior_biopsies(ctx):
    tl = ctx.fresh_timelines
    q = rec.leave_one_out_queries(tl)
    days, obs = tl.days.numpy(), tl.comp_observed.numpy()
    assert len(q) > 0
    assert np.all(obs[q.row, q.own]) and np.all(obs[q.row, q.prev]) and np.all(obs[q.row, q.next])
    assert np.all(days[q.row, q.own] == q.day)
    assert np.all(days[q.row, q.prev] < q.day) and np.all(q.day < days[q.row, q.next])
    assert np.all(q.position == q.own - 1)
    # No biopsy between the neighbours and the left-out one.
    for r, a, b in zip(q.row, q.prev, q.next, strict=True):
        assert obs[r, a + 1:b].sum() == 1
    expected = sum(max(int(obs[p].sum()) - 2, 0) for p in range(len(tl)))
    assert len(q) == expected


def test_dense_queries_cover_interior_days_without_the_days_own_biopsy(ctx):
    tl = ctx.fresh_timelines
    days, obs, valid = tl.days.numpy(), tl.comp_observed.numpy(), tl.valid.numpy()
    q = rec.dense_queries(tl)
    assert np.all(days[q.row, q.prev] < q.day) and np.all(q.day < days[q.row, q.next])
    assert np.all(days[q.row, q.position] < q.day)
    after = np.where(q.position + 1 < valid.sum(1)[q.row],
                     days[q.row, np.minimum(q.position + 1, days.shape[1] - 1)], np.inf)
    assert np.all(after >= q.day)  # position is the last point before the day
    own = q.own >= 0
    assert np.all(days[q.row[own], q.own[own]] == q.day[own])
    for p in range(len(tl)):
        bd = days[p][obs[p] & valid[p]]
        assert (q.row == p).sum() == max(int(bd[-1] - bd[0]) - 1, 0)
        assert (own & (q.row == p)).sum() == max(len(bd) - 2, 0)
    sub = rec.dense_queries(tl, every=7)
    assert 0 < len(sub) < len(q) / 5
    with pytest.raises(ValueError, match="every"):
        rec.dense_queries(tl, every=0)


def test_reconstruct_uses_the_right_neighbours(ctx):
    tl = ctx.fresh_timelines
    q = rec.leave_one_out_queries(tl)
    comps = leaf_compositions(tl, model_leaf_prior(ctx.model))
    out = rec.reconstruct(ctx.model, tl, q, comps)
    days = tl.days.numpy()
    take_next = (days[q.row, q.next] - q.day) < (q.day - days[q.row, q.prev])
    chosen = np.where(take_next, q.next, q.prev)
    np.testing.assert_allclose(out["nearest"], comps[q.row, chosen])
    np.testing.assert_allclose(out["observed_biopsy"], comps[q.row, q.own])
    np.testing.assert_allclose(out["last_biopsy"], comps[q.row, q.prev])
    for name in rec.METHODS:
        assert out[name].shape == (len(q), 20)
        np.testing.assert_allclose(out[name].sum(-1), 1.0, atol=1e-5)


def test_truth_is_aligned_to_the_timelines(ctx):
    """A biopsy is nearer to its own patient's true composition than to another's."""
    own, other = [], []
    for task in rec.cohort_tasks(ctx, 1):
        tl = task.timelines
        comps = leaf_compositions(tl, model_leaf_prior(ctx.model))
        for p in range(len(tl)):
            for i in np.flatnonzero(tl.comp_observed[p].numpy()):
                day = int(tl.days[p, i])
                own.append(tree_wasserstein(comps[p, i], task.truth[p, day]))
                other.append(tree_wasserstein(comps[p, i], task.truth[(p + 1) % len(tl), day]))
    assert np.mean(own) < 0.8 * np.mean(other)


# --------------------------------------------------------------------------- world model
def test_filter_world_model_queries_equal_predict(ctx):
    tl, model = ctx.fresh_timelines, ctx.model
    q = rec.dense_queries(tl, every=23)
    dt = q.day - tl.days.numpy()[q.row, q.position]
    doses = rec.query_doses(tl, q)
    cached = rec.world_model_at(model, tl, q.row, q.position, dt, doses, smooth=False,
                                chunk=7)
    history = tl.subset(q.row).truncate(tl.days.numpy()[q.row, q.position])
    direct = model.predict(history, doses, dt=dt).composition.numpy()
    np.testing.assert_allclose(cached, direct, atol=2e-5)
    # The doses are those actually given over each interval (a treated patient gets some).
    assert doses.max() > 0 and np.all(doses >= 0)


def test_smoother_queries_hide_the_left_out_biopsy(ctx):
    tl, model = ctx.fresh_timelines, ctx.model
    q = rec.leave_one_out_queries(tl)
    zeros = np.zeros((len(q), 5))
    hidden = rec.world_model_at(model, tl, q.row, q.own, np.zeros(len(q)), zeros, hide=q.own)
    shown = rec.world_model_at(model, tl, q.row, q.own, np.zeros(len(q)), zeros)
    np.testing.assert_allclose(hidden.sum(-1), 1.0, atol=1e-5)
    # Seeing the biopsy moves the estimate towards it; hiding it must change the answer.
    assert np.abs(hidden - shown).sum(-1).mean() > 1e-3
    # One smoother pass per (patient, hidden biopsy), chunked or not: the same numbers.
    chunked = rec.world_model_at(model, tl, q.row, q.own, np.zeros(len(q)), zeros,
                                 hide=q.own, chunk=3)
    np.testing.assert_allclose(chunked, hidden, atol=1e-5)


def test_world_model_at_rejects_bad_queries(ctx):
    tl, model = ctx.fresh_timelines, ctx.model
    row, pos = np.array([0]), np.array([0])
    doses = np.zeros((1, 5))
    with pytest.raises(ValueError, match="position"):
        rec.world_model_at(model, tl, row, np.array([99]), np.array([5.0]), doses)
    with pytest.raises(ValueError, match="dt"):
        rec.world_model_at(model, tl, row, pos, np.array([-1.0]), doses)
    with pytest.raises(ValueError, match="doses"):
        rec.world_model_at(model, tl, row, pos, np.array([5.0]), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="row"):
        rec.world_model_at(model, tl, np.array([len(tl)]), pos, np.array([5.0]), doses)


def test_predict_vector_dt_equals_scalar_calls(ctx):
    model = ctx.model
    tl = ctx.fresh_timelines.subset(range(6))
    doses = np.tile([1.0, 0.0, 0.5, 0.0, 0.0], (6, 1))
    dt = np.array([1.0, 7.0, 21.0, 30.0, 60.0, 120.0])
    vector = model.predict(tl, doses, dt=dt)
    as_tensor = model.predict(tl, doses, dt=torch.as_tensor(dt))
    torch.testing.assert_close(vector.composition, as_tensor.composition)
    for i, d in enumerate(dt):
        single = model.predict(tl, doses, dt=float(d))
        torch.testing.assert_close(vector.composition[i], single.composition[i])
        torch.testing.assert_close(vector.burden[i], single.burden[i])
    # dt matters: different horizons give different predictions.
    assert not torch.allclose(vector.composition[0], model.predict(
        tl, doses, dt=120.0).composition[0])


@pytest.mark.parametrize("dt, match", [
    (0.0, r"dt: got 0\.0; expected days > 0"),
    (np.array([1.0, -2.0, 3.0, 4.0, 5.0, 6.0]), "at patient 1"),
    (np.array([1.0, np.nan, 3.0, 4.0, 5.0, 6.0]), "dt: got 'nan at patient 1'; expected days > 0"),
    (np.ones(5), r"dt: shape \(5,\); expected a number or \(6,\)"),
    (np.ones((6, 1)), "dt: shape"),
    ("soon", "dt: 'soon'"),
])
def test_predict_rejects_bad_dt(ctx, dt, match):
    tl = ctx.fresh_timelines.subset(range(6))
    with pytest.raises(ValueError, match=match):
        ctx.model.predict(tl, ["anti_pd1"], dt=dt)


# --------------------------------------------------------------------------- run / report
def _check_block(block: dict, methods) -> None:
    for m in methods:
        value = block[m]
        lo, hi = block["ci95"][m]
        assert np.isfinite(value) and np.isfinite(lo) and np.isfinite(hi)
        assert lo <= value <= hi
        assert 0.0 <= value <= 20.0


def test_run_returns_the_contract(ctx, section):
    lobo = section["tree_w1"]
    _check_block(lobo, (*rec.METHODS, "observed_biopsy"))
    n_lobo = len(rec.leave_one_out_queries(ctx.fresh_timelines))
    assert lobo["n"] == n_lobo > 0 and 0 < lobo["n_patients"] <= 16
    dense = section["dense"]["tree_w1"]
    _check_block(dense, rec.METHODS)
    assert dense["n_patients"] == 16
    assert dense["n_days"] == len(rec.dense_queries(ctx.fresh_timelines, rec.QUICK_DENSE_EVERY))
    by_gap = section["dense"]["tree_w1_by_gap"]
    assert set(by_gap) <= {"1-21", "22-63", "64-126", ">126"} and "1-21" in by_gap
    for block in by_gap.values():
        _check_block(block, rec.METHODS)
    assert sum(b["n_days"] for b in by_gap.values()) == dense["n_days"]
    paired = section["tree_w1_paired_difference"]
    for method in rec.METHODS[1:]:
        np.testing.assert_allclose(paired[f"world_model_minus_{method}"],
                                   lobo["world_model"] - lobo[method])
    assert section["config"]["dense_every_days"] == rec.QUICK_DENSE_EVERY
    assert section["seconds"] > 0
    json.dumps(jsonable(section), allow_nan=False)


def test_run_is_deterministic(ctx, section):
    again = rec.run(ctx)
    for key in ("tree_w1", "dense", "tree_w1_paired_difference", "example"):
        assert json.dumps(jsonable(again[key])) == json.dumps(jsonable(section[key]))


def test_report_writes_table_and_plots(section, tmp_path):
    markdown = rec.report(jsonable(section), tmp_path)
    assert markdown.startswith("## ")
    assert f"{section['tree_w1']['world_model']:.3f}" in markdown
    assert "| linear interpolation |" in markdown
    for name in ("reconstruction_w1_by_gap.png", "reconstruction_example.png"):
        assert (tmp_path / name).stat().st_size > 1000
        assert f"]({name})" in markdown
    example = section["example"]
    assert len(example["days"]) == len(example["world_model"]["cd8"]) > 0
    assert not np.isin(example["days"], example["biopsy_days"]).any()
