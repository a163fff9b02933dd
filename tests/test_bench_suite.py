"""The evaluation-benchmark plumbing: statistics, parallel maps, JSON, report and CLI."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from immunegym.benchmarks import runner
from immunegym.benchmarks.common import (
    BenchContext,
    aligned_doses,
    auroc,
    auroc_block,
    bootstrap_auroc,
    bootstrap_mean,
    day0_states,
    fresh_specs,
    jsonable,
    mean_block,
    model_leaf_prior,
    paired_auroc_delta,
    parallel_map,
    plan_doses,
    protocol_cycle_doses,
    regimen_doses,
)
from immunegym.cli import app
from immunegym.data.vocab import THERAPIES


def _square(x: int) -> int:
    return x * x


# ------------------------------------------------------------------------ statistics
def test_bootstrap_mean_interval_brackets_the_mean_and_narrows_with_data():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 1.0, 20), rng.normal(1.0, 1.0, 2000)
    lo_s, hi_s = bootstrap_mean(small, seed=1)
    lo_l, hi_l = bootstrap_mean(large, seed=1)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3


def test_cluster_bootstrap_is_wider_when_values_are_correlated_within_patients():
    rng = np.random.default_rng(0)
    patient_effect = rng.normal(0, 1, 30)
    groups = np.repeat(np.arange(30), 10)
    values = patient_effect[groups] + rng.normal(0, 0.1, 300)
    naive = np.diff(bootstrap_mean(values, seed=0))[0]
    clustered = np.diff(bootstrap_mean(values, groups, seed=0))[0]
    assert clustered > 2 * naive


def test_bootstrap_is_reproducible_and_drops_nan():
    values = np.array([1.0, np.nan, 3.0, 2.0, 5.0])
    assert bootstrap_mean(values, seed=3) == bootstrap_mean(values, seed=3)
    assert all(math.isfinite(v) for v in bootstrap_mean(values, seed=3))
    assert all(math.isnan(v) for v in bootstrap_mean(np.array([np.nan]), seed=0))


def test_auroc_perfect_reversed_and_single_class():
    y = np.array([0, 0, 1, 1])
    assert auroc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auroc(y, -np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert math.isnan(auroc(np.ones(4), np.arange(4.0)))
    assert all(math.isnan(v) for v in bootstrap_auroc(np.ones(4), np.arange(4.0)))


def test_vectorized_bootstrap_auroc_equals_a_loop_over_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 50).astype(float)
    groups = rng.integers(0, 30, 50)
    score = np.round(rng.normal(size=50) + y, 1)  # rounded: ties must count one half
    draws = np.random.default_rng(5)
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    loop = []
    for _ in range(200):
        rows = np.concatenate([members[g] for g in draws.integers(0, len(members),
                                                                  len(members))])
        if y[rows].min() != y[rows].max():
            loop.append(roc_auc_score(y[rows], score[rows]))
    expected = [np.percentile(loop, 2.5), np.percentile(loop, 97.5)]
    np.testing.assert_allclose(bootstrap_auroc(y, score, groups, seed=5, n=200), expected)


def test_paired_auroc_delta_is_the_difference_with_an_interval():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300).astype(float)
    a, b = y + rng.normal(0, 0.7, 300), rng.normal(0, 1, 300)
    delta = paired_auroc_delta(y, a, b, seed=1)
    assert delta["value"] == pytest.approx(auroc(y, a) - auroc(y, b))
    assert 0 < delta["ci95"][0] < delta["value"] < delta["ci95"][1]


def test_blocks_have_the_contract_shape():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200).astype(float)
    good, noise = y + rng.normal(0, 0.5, 200), rng.normal(0, 1, 200)
    block = auroc_block(y, {"good": good, "noise": noise}, seed=0)
    assert set(block) >= {"good", "noise", "ci95", "n", "n_positive"}
    assert block["good"] > 0.8 > block["noise"]
    for method in ("good", "noise"):
        lo, hi = block["ci95"][method]
        assert lo <= block[method] <= hi
    means = mean_block({"a": np.arange(10.0), "b": np.ones(10)}, seed=0)
    assert means["a"] == 4.5 and means["b"] == 1.0 and means["n"] == 10
    assert means["ci95"]["b"] == [1.0, 1.0]


def test_jsonable_turns_numpy_and_nan_into_plain_json():
    out = jsonable({"a": np.float32(1.5), "b": np.array([1, 2]), "c": math.nan,
                    "d": (np.bool_(True), np.int64(3)), 4: float("inf")})
    assert out == {"a": 1.5, "b": [1, 2], "c": None, "d": [True, 3], "4": None}
    json.dumps(out, allow_nan=False)


# ------------------------------------------------------------------------ helpers
def test_parallel_map_serial_keeps_order():
    assert parallel_map(_square, [3, 1, 2]) == [9, 1, 4]


def test_parallel_map_on_ray_equals_serial():
    pytest.importorskip("ray")
    items = [[3, 1], {"a": 2}, "x"]  # json.dumps: a module-level function workers can import
    assert parallel_map(json.dumps, items, ray=True) == parallel_map(json.dumps, items)


def test_regimen_doses_follow_immunesim_and_plan_doses_the_grammar():
    doses = regimen_doses("anti_pd1+anti_ctla4", 3, 6)
    assert doses.shape == (3, 6, 5)
    assert doses[..., 0].min() == 1.0 and doses[0, :, 1].sum() == 4.0  # ipilimumab x4
    assert doses[..., 2:].max() == 0.0
    # One grammar: a bare drug is its standard course in planning too (ipilimumab x4), so
    # the planning doses of a named regimen equal ImmuneSim's; "x6" asks for every cycle.
    same = plan_doses("anti_pd1+anti_ctla4", 3, 6)
    assert np.array_equal(same, doses)
    every_cycle = plan_doses("anti_pd1+anti_ctla4 x6", 2, 6)
    assert every_cycle[0, :, 1].sum() == 6.0
    switch = plan_doses("anti_ctla4 x2 -> anti_pd1", 1, 4)[0]
    assert switch[:, 1].tolist() == [1, 1, 0, 0] and switch[:, 0].tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError):
        regimen_doses("not_a_drug", 1, 2)


def test_protocol_doses_follow_the_simulator_schedule():
    chemo = protocol_cycle_doses("chemo", 6)
    col = list(THERAPIES).index("chemo")
    assert chemo[:, col].tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]  # platinum x4
    assert chemo.sum() == 4.0
    pd1 = protocol_cycle_doses("anti_pd1", 6)
    assert np.allclose(pd1[:, list(THERAPIES).index("anti_pd1")], 1.0)
    assert not protocol_cycle_doses("none", 3).any()
    with pytest.raises(ValueError, match="n_cycles"):
        protocol_cycle_doses("chemo", 0)
    with pytest.raises(ValueError, match="regimen"):
        protocol_cycle_doses("aspirin", 3)


def test_aligned_doses_start_at_the_baseline_day():
    col = list(THERAPIES).index("chemo")
    doses = aligned_doses(["chemo"] * 3, np.array([0.0, 21.0, 10.5]), 5)
    assert doses.shape == (3, 5, len(THERAPIES))
    assert np.allclose(doses[0, :, col], [1, 1, 1, 1, 0])
    assert np.allclose(doses[1, :, col], [1, 1, 1, 0, 0])  # one cycle already given
    assert np.allclose(doses[2, :, col], [1, 1, 1, 0.5, 0])
    with pytest.raises(ValueError, match="regimens"):
        aligned_doses(["chemo"], np.zeros(2), 3)


# --------------------------------------------------------------------------- oracle
def test_model_leaf_prior_prefers_the_model_then_the_data_then_an_even_split():
    from immunegym.world_model import WorldModel, load
    from immunegym.world_model.timelines import baseline_timelines, within_block_prior

    pretrained = load()
    np.testing.assert_allclose(model_leaf_prior(pretrained),
                               pretrained.leaf_prior().numpy(), rtol=1e-6)
    unfitted = WorldModel()
    assert unfitted.leaf_prior() is None
    k = len(unfitted.config.types)
    np.testing.assert_allclose(model_leaf_prior(unfitted), np.full(k, 1.0 / k))
    comp = np.random.default_rng(0).dirichlet(np.ones(k), 3)
    tl = baseline_timelines(comp, None, ["a", "b", "c"], cancer_type="melanoma",
                            programs=())
    np.testing.assert_allclose(model_leaf_prior(unfitted, tl), within_block_prior(tl))


def test_fresh_specs_are_new_patients_of_the_same_designs():
    from immunegym.sim.suite import DEFAULT_SUITE

    fresh = fresh_specs(12)
    assert len(fresh) == len(DEFAULT_SUITE)
    for new, old in zip(fresh, DEFAULT_SUITE, strict=True):
        assert new.seed != old.seed and new.regimens == old.regimens
        assert new.n_patients == 12 and new.name.endswith("_fresh")


def test_day0_states_reproduce_the_cohorts_day0_truth():
    from immunegym.sim.cohort import CohortSpec, simulate_cohort

    spec = CohortSpec("t_day0", "melanoma", ("anti_pd1",), "tme_fine", n_patients=5, seed=7,
                      horizon_days=42)
    truth = simulate_cohort(spec).truth
    _, _, state = day0_states(spec)
    np.testing.assert_allclose(state.composition().numpy(), truth.composition[0], rtol=1e-5,
                               atol=1e-6)


# ------------------------------------------------------------------------ runner, CLI
def _fake_benchmark(name: str):
    def run(ctx):
        return {"score": {"world_model": 0.5, "baseline": np.float64(0.25),
                          "ci95": {"world_model": [0.4, 0.6], "baseline": [0.2, 0.3]},
                          "n": 3},
                "per_cohort": {"c": {"world_model": math.nan, "ci95": {"world_model": [
                    math.nan, math.nan]}}},
                "config": {"quick": ctx.quick}}

    def report(section, out: Path) -> str:
        (out / f"{name}_plot.png").write_bytes(b"png")
        return f"## {name}\n\nscore {section['score']['world_model']}\n"

    return types.SimpleNamespace(run=run, report=report)


@pytest.fixture
def fake_benchmarks(monkeypatch):
    monkeypatch.setattr(runner, "_module", _fake_benchmark)


def test_resolve_names():
    assert runner.resolve("all") == list(runner.BENCHMARKS)
    assert runner.resolve("transfer") == ["transfer"]
    with pytest.raises(ValueError, match="unknown name 'recon'"):
        runner.resolve("recon")


def test_all_writes_one_json_with_a_section_per_benchmark_and_a_report(fake_benchmarks,
                                                                         tmp_path):
    ctx = BenchContext(quick=True)
    result = runner.run_benchmarks(runner.resolve("all"), ctx, command="test")
    path = runner.write_json(result, tmp_path / "all.json")
    doc = json.loads(path.read_text())
    assert set(doc) == {*runner.BENCHMARKS, "meta"}
    assert doc["transfer"]["per_cohort"]["c"]["world_model"] is None  # NaN -> null
    assert doc["meta"]["quick"] is True and doc["meta"]["machine"]["cpu_count"] >= 1
    report = runner.write_report(result, tmp_path / "report")
    text = report.read_text()
    for name in runner.BENCHMARKS:
        assert f"## {name}" in text and (tmp_path / "report" / f"{name}_plot.png").exists()
    rows = list(runner.headline(result, {"reconstruction": ("score",),
                                         "transfer": ("*",)}))
    assert ("reconstruction.score", "world_model", 0.5, [0.4, 0.6]) in rows
    assert ("transfer.score", "baseline", 0.25, [0.2, 0.3]) in rows
    assert not any(where.startswith("counterfactual") for where, *_ in rows)


def test_single_benchmark_json_is_the_section(fake_benchmarks, tmp_path):
    result = runner.run_benchmarks(["counterfactual"], BenchContext(quick=True))
    doc = json.loads(runner.write_json(result, tmp_path / "cf.json").read_text())
    assert doc["score"]["world_model"] == 0.5 and "meta" in doc


def test_cli_bench_all_writes_json_and_report(fake_benchmarks, tmp_path):
    result = CliRunner().invoke(app, ["bench", "all", "--quick", "--json",
                                      str(tmp_path / "r.json"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert set(doc) == {*runner.BENCHMARKS, "meta"}
    assert doc["meta"]["command"] == "immunegym bench all --quick"
    assert (tmp_path / "o" / "report.md").exists()


def test_cli_requires_json_and_ray_for_address(tmp_path):
    missing = CliRunner().invoke(app, ["bench", "transfer", "--quick"])
    assert missing.exit_code != 0
    bad = CliRunner().invoke(app, ["bench", "transfer", "--json", str(tmp_path / "x.json"),
                                   "--address", "ray://x:1"])
    assert bad.exit_code == 1 and "--address" in bad.output and "--ray" in bad.output
