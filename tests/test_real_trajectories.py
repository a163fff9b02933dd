"""The real-trajectories benchmark: inverse maps, baselines, validation, end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_reference
from typer.testing import CliRunner

from immunegym.benchmarks import real_trajectories as rt
from immunegym.benchmarks import runner
from immunegym.benchmarks.common import BenchContext, jsonable
from immunegym.benchmarks.response_real import (
    MORRISON1_REGIMENS,
    ReferenceBank,
    fit_without,
)
from immunegym.data.real import morrison1_samples, riaz2017_tcell_fraction
from immunegym.ontology import FINE_TYPES, default_ontology
from immunegym.validation import ValidationError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny batches: one thread


@pytest.fixture(scope="module")
def samples() -> pd.DataFrame:
    return morrison1_samples()


@pytest.fixture(scope="module")
def reference() -> ReferenceBank:
    return synthetic_reference()


@pytest.fixture(scope="module")
def obs(samples, reference):
    return fit_without(samples[samples["timepoint"] == "pre"], "038", reference)


@pytest.fixture
def identity_model(monkeypatch):
    """A 'world model' that never moves: rollouts and the day-0 estimate return the input."""
    def rollout(model, composition, regimens, sod_mm, *, n_cycles=rt.HORIZON_CYCLES):
        return np.repeat(np.asarray(composition)[:, None], n_cycles, axis=1)

    monkeypatch.setattr(rt, "rollout_compositions", rollout)
    monkeypatch.setattr(rt, "day0_estimate", lambda model, composition, sod: composition)
    return object()


# --------------------------------------------------------------------------- inverse maps
def test_inverse_quantile_map_round_trips_training_data(samples, obs):
    train = samples[(samples["timepoint"] == "pre") & (samples["cohort"] != "038")]
    composites = rt.node_composites(obs, train)
    for node, scores in composites.items():
        q = rt.ecdf_quantile(obs.ecdf_[node], scores)
        abundance = np.quantile(obs.reference.node_abundance(node), q)
        back_q = rt.reference_quantile(obs.reference.node_abundance(node), abundance)
        np.testing.assert_allclose(back_q, q, atol=1e-9, err_msg=node)
        np.testing.assert_allclose(rt.ecdf_inverse(obs.ecdf_[node], back_q), scores,
                                   atol=1e-9, err_msg=node)


def test_node_composites_match_the_observation_model(samples, obs):
    probe = samples.head(30)
    ours = rt.node_composites(obs, probe)
    theirs = obs._composites(obs._scores(probe))
    assert list(ours) == list(theirs)
    for node in ours:
        np.testing.assert_allclose(ours[node], theirs[node])


def test_inverse_maps_clamp_and_handle_ties():
    train = np.array([0.0, 0.0, 1.0, 2.0])
    assert rt.ecdf_inverse(train, np.array([0.0]))[0] == 0.0  # below the first knot
    assert rt.ecdf_inverse(train, np.array([1.0]))[0] == 2.0  # above the last
    q = rt.ecdf_quantile(train, np.array([1.0]))
    assert rt.ecdf_inverse(train, q)[0] == pytest.approx(1.0)
    ref = np.array([0.0, 0.0, 0.0, 1.0, 2.0])
    assert rt.reference_quantile(ref, np.array([0.0]))[0] == pytest.approx(0.25)  # tie middle
    assert rt.reference_quantile(ref, np.array([5.0]))[0] == 1.0
    assert np.quantile(ref, rt.reference_quantile(ref, np.array([1.5])))[0] == \
        pytest.approx(1.5)


def test_tcell_fraction_map_round_trip_and_simplex(reference):
    train = np.array([0.01, 0.05, 0.1, 0.2, 0.3, 0.45])
    comp = rt.tcell_fraction_composition(train, train, reference)
    np.testing.assert_allclose(comp.sum(1), 1.0)
    assert np.all(comp >= 0)
    np.testing.assert_allclose(rt.tcell_fraction_of(comp, train, reference), train, atol=1e-9)
    tcell = [FINE_TYPES.index(t) for t in default_ontology().leaves_under("t_cell")]
    assert np.all(np.diff(comp[:, tcell].sum(1)) > 0)  # monotone in the fraction


# --------------------------------------------------------------------------- baselines
def test_regimen_mean_change_falls_back_to_pooled():
    change, source = rt.regimen_mean_change(np.array([[1.0], [3.0], [11.0]]),
                                            ["A", "A", "B"], ["A", "B", "C"])
    np.testing.assert_allclose(change[:, 0], [2.0, 11.0, 5.0])
    assert source == ["regimen", "regimen", "pooled"]


def test_compare_methods_paired_deltas_and_verdict():
    errors = {"world_model": np.array([0.1, 0.2, 0.3, 0.2]),
              "persistence": np.array([0.5, 0.6, 0.4, 0.5]),
              "mean_change": np.array([0.3, 0.3, 0.3, 0.3])}
    out = rt.compare_methods(errors, seed=0, n_bootstrap=200)
    assert out["mean_error"]["world_model"] == pytest.approx(0.2)
    assert out["deltas"]["world_model"]["persistence"]["value"] == pytest.approx(-0.3)
    assert out["deltas"]["world_model"]["mean_change"]["ci95"][1] < 0
    assert out["beats_baselines"] and out["significant"]
    worse = rt.compare_methods({**errors, "world_model": np.array([0.9, 0.9, 0.9, 0.9])},
                               n_bootstrap=200)
    assert not worse["beats_baselines"] and not worse["significant"]


def test_identity_model_equals_persistence_and_lopo_mean(identity_model, reference):
    table = pd.DataFrame({"patient": ["a", "b", "c", "d"],
                          "fraction_pre": [0.1, 0.2, 0.3, 0.4],
                          "fraction_on": [0.2, 0.2, 0.5, 0.3]})
    out = rt.evaluate_riaz2017(identity_model, reference, table=table, n_bootstrap=100)
    np.testing.assert_allclose(out["errors"]["world_model"], out["errors"]["persistence"],
                               atol=1e-12)
    observed = np.array([0.1, 0.0, 0.2, -0.1])
    np.testing.assert_allclose(out["changes"]["observed"], observed)
    lopo = [(observed.sum() - observed[i]) / 3 for i in range(4)]
    np.testing.assert_allclose(out["changes"]["mean_change"], lopo, atol=1e-12)


def test_identity_model_equals_persistence_on_morrison1(identity_model, reference, samples):
    out = rt.evaluate_morrison1_pairs(identity_model, reference, samples=samples,
                                      n_bootstrap=100)
    np.testing.assert_allclose(out["errors"]["world_model"], out["errors"]["persistence"],
                               atol=1e-12)
    assert out["n"] == 68 and out["cohorts"] == {"038": 42, "064": 10, "gide": 16}
    # PD1 is the only regimen in two cohorts; everything else falls back to the pool.
    assert out["mean_change_source"] == {"regimen": 51, "pooled": 17}


# --------------------------------------------------------------------------- data selection
def test_pairs_and_groups(samples):
    pairs = rt.morrison1_pairs(samples)
    assert len(pairs) == 68 and pairs["subject_id"].is_unique
    assert set(pairs["regimen"]) <= set(MORRISON1_REGIMENS)
    sade = rt.sade_feldman_pairs()
    assert sade["patient"].nunique() == 11 and len(sade) == 14
    leaves = [leaf for group in rt.SADE_FELDMAN_GROUPS.values() for leaf in group]
    assert sorted(leaves) == sorted(default_ontology().leaves_under("immune"))
    comp = np.random.default_rng(0).dirichlet(np.ones(len(FINE_TYPES)), 5)
    np.testing.assert_allclose(rt.group_shares(comp).sum(1), 1.0)


# --------------------------------------------------------------------------- bad input
def test_pair_table_with_an_unknown_regimen_names_it(samples):
    bad = samples.copy()
    bad.loc[bad["subject_id"] == bad.loc[bad["timepoint"] == "on", "subject_id"].iloc[0],
            "regimen"] = "Nivo+Rela"
    with pytest.raises(ValidationError, match="regimen.*'Nivo\\+Rela'"):
        rt.morrison1_pairs(bad)
    with pytest.raises(ValidationError, match="no 'regimen' column"):
        rt.morrison1_pairs(samples.drop(columns=["regimen"]))


def test_bad_inputs_name_field_and_value(reference):
    with pytest.raises(ValidationError, match=r"fraction\[1\]: got 1.5; expected a fraction"):
        rt.tcell_fraction_composition([0.1, 1.5], [0.1, 0.2, 0.3], reference)
    with pytest.raises(ValidationError, match="n_cycles: got 0; expected an integer in 1..6"):
        rt.evaluate_riaz2017(None, reference, n_cycles=0)
    with pytest.raises(ValidationError, match="extra_models: key 'persistence' is taken"):
        rt.evaluate_riaz2017(None, reference, extra_models={"persistence": None})
    with pytest.raises(ValidationError, match="no 'fraction_on' column"):
        rt.evaluate_riaz2017(None, reference,
                             table=riaz2017_tcell_fraction().drop(columns=["fraction_on"]))
    with pytest.raises(ValidationError, match="errors: no 'mean_change' method"):
        rt.compare_methods({"world_model": [0.1], "persistence": [0.2]})
    with pytest.raises(ValidationError, match="sorted_train: expected values sorted"):
        rt.ecdf_inverse([2.0, 1.0], [0.5])
    with pytest.raises(ValidationError, match="groups\\['x'\\]: 'malignant' is not an immune"):
        rt.group_shares(np.full((1, len(FINE_TYPES)), 0.05), {"x": ("malignant",)})


def test_runner_resolves_the_hyphenated_name():
    assert runner.resolve("real-trajectories") == ["real_trajectories"]
    assert "real_trajectories" in runner.resolve("all")
    with pytest.raises(ValidationError, match="real-trajectories"):
        runner.resolve("real-trajectory")


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def section(one_torch_thread) -> dict:
    return jsonable(rt.run(BenchContext(quick=True, seed=3)))


def test_quick_run_has_every_key(section):
    json.dumps(section, allow_nan=False)
    assert section["neobcc"] == {"skipped": rt.NEOBCC_SKIP_REASON}
    shapes = {"morrison1": (68, 11), "riaz2017": (34,), "sade_feldman": (14, 8)}
    for key, shape in shapes.items():
        block = section[key]
        methods = {"world_model", rt.ESTIMATE_METHOD, rt.FINETUNED_METHOD, "persistence",
                   "mean_change"}
        assert methods <= set(block["mean_error"]) and set(block["errors"]) == methods
        for method in methods:
            assert len(block["errors"][method]) == block["n"]
            assert block["mean_error"][method] is not None
            lo, hi = block["mean_error"]["ci95"][method]
            assert lo <= block["mean_error"][method] <= hi
        assert set(block["deltas"]["world_model"]) == {"persistence", "mean_change"}
        assert isinstance(block["beats_baselines"], bool)
        assert np.asarray(block["changes"]["observed"]).shape == shape
        assert np.asarray(block["changes"]["world_model"]).shape == shape
        assert not np.any(np.asarray(block["changes"]["persistence"]))
        assert len(block["horizon"]) == rt.HORIZON_CYCLES
    assert section["config"]["reference_patients"] == 300


def test_extra_model_adds_a_method(section):
    from immunegym.world_model import load

    model = load()
    ref = ReferenceBank.from_sim(300)
    out = rt.evaluate_riaz2017(model, ref, extra_models={"world_model_finetuned": model},
                               n_bootstrap=100)
    np.testing.assert_allclose(out["errors"]["world_model_finetuned"],
                               out["errors"]["world_model"])
    assert "world_model_finetuned" in out["deltas"]
    # Same reference and model as the quick run: the same world-model errors.
    np.testing.assert_allclose(out["errors"]["world_model"],
                               section["riaz2017"]["errors"]["world_model"])


def test_report_writes_a_png_per_dataset(section, tmp_path):
    text = rt.report(section, tmp_path)
    for key in ("morrison1", "riaz2017", "sade_feldman"):
        png = tmp_path / f"real_trajectories_{key}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.name in text
    assert "NeoBCC" in text and "| world model |" not in text.split("\n")[0]
    with pytest.raises(ValidationError, match="no scored dataset"):
        rt.report({"neobcc": section["neobcc"]}, tmp_path)


def test_cli_bench_real_trajectories(tmp_path):
    from immunegym.cli import app

    result = CliRunner().invoke(app, ["bench", "real-trajectories", "--quick", "--seed", "1",
                                      "--json", str(tmp_path / "rt.json"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "rt.json").read_text())
    assert {"morrison1", "riaz2017", "sade_feldman", "neobcc", "meta"} <= set(doc)
    assert doc["meta"]["command"] == "immunegym bench real-trajectories --quick"
    assert (tmp_path / "out" / "real_trajectories_riaz2017.png").exists()
    assert "Real on-treatment trajectories" in (tmp_path / "out" / "report.md").read_text()
