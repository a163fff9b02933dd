"""Counterfactual regimens for one patient with the pretrained world model (tiny, fast)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from immunegym.ontology import FINE_TYPES
from immunegym.planning import Counterfactual, counterfactual, plot_counterfactual_tree
from immunegym.planning.counterfactuals import CD8_TYPES, OUTCOMES
from immunegym.planning.regimen import parse_plan

REGIMENS = ["none", "anti_pd1", "anti_pd1+anti_ctla4 q3w x2 -> anti_pd1"]
PATIENT = "cf-P000"
H = 4


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny batches: intra-op threads only add contention on a busy 2-core machine (they
    made these rollouts ~50x slower at times)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def adata():
    from immunegym.sim.cohort import make_cohort

    return make_cohort("melanoma", ("anti_pd1",), n_patients=3, seed=7, horizon_days=120,
                       name="cf")


@pytest.fixture(scope="module")
def timelines(adata):
    from immunegym.world_model import build_timelines

    return build_timelines(adata)


@pytest.fixture(scope="module")
def model():
    from immunegym.world_model import load

    return load()


@pytest.fixture(scope="module")
def cf(adata, model) -> Counterfactual:
    return counterfactual(adata, REGIMENS, 6, patient=PATIENT, model=model, horizon=H, seed=3)


def test_shapes_and_fields(cf: Counterfactual, model, timelines) -> None:
    n_members = len(model.members)
    s = max(2, -(-6 // n_members)) * n_members
    assert cf.patient_id == PATIENT and cf.cancer_type == "melanoma"
    assert cf.regimens == tuple(str(parse_plan(r)) for r in REGIMENS)
    assert cf.sod_mm.shape == (3, s, H)
    assert cf.composition.shape == (3, s, H, len(FINE_TYPES))
    assert cf.member.shape == (s,) and cf.n_samples == s and cf.horizon == H
    # Balanced members, at least two samples each.
    counts = np.bincount(cf.member, minlength=n_members)
    assert (counts == counts[0]).all() and counts[0] >= 2
    # Default decision point: the first observation (baseline).
    row = timelines.patient_ids.index(PATIENT)
    first = float(timelines.days[row, 0])
    assert cf.decision_day == first
    np.testing.assert_allclose(cf.days, first + 21.0 * np.arange(1, H + 1))
    assert np.isfinite(cf.baseline_sod_mm) and cf.baseline_sod_mm > 0
    assert (cf.sod_mm >= 0).all()
    np.testing.assert_allclose(cf.composition.sum(-1), 1.0, atol=1e-4)
    # The observed history is all of the patient's points, the later ones flagged.
    n_obs = int(timelines.valid[row].sum())
    assert cf.observed_days.shape == (n_obs,) and cf.observed_composition.shape[0] == n_obs
    np.testing.assert_array_equal(cf.observed_after, cf.observed_days > cf.decision_day)
    assert cf.observed_sod_mm[0] == pytest.approx(cf.baseline_sod_mm, rel=1e-5)
    assert len(model.members) == n_members  # the model is not changed


def test_n_samples_rounded_up_per_member(adata, model) -> None:
    out = counterfactual(adata, ["anti_pd1"], 1, patient=PATIENT, model=model, horizon=1)
    assert out.n_samples == 2 * len(model.members)
    assert np.bincount(out.member).min() >= 2


def test_same_seed_identical_other_seed_differs(adata, model, cf: Counterfactual) -> None:
    again = counterfactual(adata, REGIMENS, 6, patient=PATIENT, model=model, horizon=H,
                           seed=3)
    np.testing.assert_array_equal(again.sod_mm, cf.sod_mm)
    np.testing.assert_array_equal(again.composition, cf.composition)
    np.testing.assert_array_equal(again.member, cf.member)
    pd.testing.assert_frame_equal(again.table(), cf.table())
    other = counterfactual(adata, REGIMENS, 6, patient=PATIENT, model=model, horizon=H,
                           seed=4)
    assert not np.array_equal(other.sod_mm, cf.sod_mm)


def test_regimen_enters_the_rollout(cf: Counterfactual) -> None:
    # "none" and "anti_pd1" give different doses from the first cycle on.
    assert not np.array_equal(cf.sod_mm[0], cf.sod_mm[1])


def test_variance_split_adds_up(cf: Counterfactual) -> None:
    out = cf.outcomes()
    for name in OUTCOMES:
        var = cf.variance(name)
        assert list(var.index) == list(cf.regimens)
        np.testing.assert_allclose(var["total"], var["aleatoric"] + var["epistemic"],
                                   rtol=1e-9, atol=1e-12)
        assert (var[["aleatoric", "epistemic"]].to_numpy() >= -1e-15).all()
        np.testing.assert_allclose(var["total"], out[name].var(1), rtol=1e-12, atol=1e-15)
    # Epistemic: variance of member means; aleatoric: mean within-member variance.
    y = out["final_log_sod"][1]
    groups = [y[cf.member == m] for m in np.unique(cf.member)]
    var = cf.variance("final_log_sod").iloc[1]
    assert var["epistemic"] == pytest.approx(np.var([g.mean() for g in groups]))
    assert var["aleatoric"] == pytest.approx(np.mean([g.var() for g in groups]))
    table = cf.table()
    np.testing.assert_allclose(table["sd_log_sod_total"] ** 2,
                               table["sd_log_sod_aleatoric"] ** 2
                               + table["sd_log_sod_epistemic"] ** 2, rtol=1e-9)
    long = cf.uncertainty()
    assert len(long) == len(OUTCOMES) * len(cf.regimens)


def test_outcomes_follow_their_definitions(cf: Counterfactual) -> None:
    out = cf.outcomes()
    sod = cf.sod_mm.astype(np.float64)
    base = cf.baseline_sod_mm
    np.testing.assert_array_equal(out["final_sod_mm"], sod[..., -1])
    np.testing.assert_allclose(out["final_log_sod"], np.log1p(sod[..., -1]))
    np.testing.assert_allclose(out["best_change_pct"], (sod.min(-1) / base - 1) * 100)
    np.testing.assert_array_equal(out["response"], (sod <= 0.7 * base).any(-1))
    nadir = np.minimum(sod.min(-1), base)
    final = sod[..., -1]
    np.testing.assert_array_equal(out["progression"],
                                  (final >= 1.2 * nadir) & (final >= nadir + 5.0))
    cd8 = [FINE_TYPES.index(t) for t in CD8_TYPES]
    assert set(CD8_TYPES) == {"cd8_memory", "cd8_effector", "cd8_tpex", "cd8_tex"}
    np.testing.assert_allclose(out["final_cd8"], cf.composition[..., -1, cd8].sum(-1),
                               rtol=1e-6)
    np.testing.assert_allclose(out["final_malignant"],
                               cf.composition[..., -1, FINE_TYPES.index("malignant")],
                               rtol=1e-6)


def test_table_and_best(cf: Counterfactual) -> None:
    table = cf.table()
    assert list(table.index) == list(cf.regimens)
    for col in ("median_final_sod_mm", "final_sod_mm_q05", "final_sod_mm_q95", "p_response",
                "p_progression", "final_malignant_fraction", "final_cd8_fraction",
                "sd_log_sod_total", "sd_log_sod_aleatoric", "sd_log_sod_epistemic"):
        assert col in table.columns
    assert ((table["final_sod_mm_q05"] <= table["median_final_sod_mm"])
            & (table["median_final_sod_mm"] <= table["final_sod_mm_q95"])).all()
    assert table["p_response"].between(0, 1).all()
    assert table["p_progression"].between(0, 1).all()
    best = cf.best("p_response")
    assert table.loc[best, "p_response"] == table["p_response"].max()
    smallest = cf.best("median_final_sod_mm")
    assert table.loc[smallest, "median_final_sod_mm"] == table["median_final_sod_mm"].min()
    with pytest.raises(ValueError, match="by: got 'fun'"):
        cf.best("fun")
    with pytest.raises(ValueError, match="outcome"):
        cf.variance("nope")


def test_to_dict_is_json_and_round_trips(cf: Counterfactual) -> None:
    data = json.loads(json.dumps(cf.to_dict(), allow_nan=False))
    assert data["patient_id"] == PATIENT and data["regimens"] == list(cf.regimens)
    assert set(data["table"]) == set(cf.regimens)
    back = Counterfactual.from_dict(data)
    np.testing.assert_array_equal(back.sod_mm, cf.sod_mm)
    np.testing.assert_array_equal(back.observed_composition, cf.observed_composition)
    pd.testing.assert_frame_equal(back.table(), cf.table())
    with pytest.raises(ValueError, match="missing key"):
        Counterfactual.from_dict({"patient_id": "x"})


def test_decision_point_hides_later_observations(timelines, model) -> None:
    pid = "cf-P001"
    row = timelines.patient_ids.index(pid)
    days = timelines.days[row][timelines.valid[row]].numpy()
    at = float(days[2]) + 0.5  # between the third and fourth observation
    out = counterfactual(timelines, ["anti_pd1", "chemo"], 2, patient=pid, model=model,
                         horizon=2, at_day=at, seed=1)
    assert out.decision_day == float(days[2])
    np.testing.assert_array_equal(out.observed_after, out.observed_days > days[2])
    assert out.observed_after.sum() == len(days) - 3
    # The model never sees what came after: a history cut at the decision gives the same.
    cut = timelines.subset([row]).truncate(np.array([at], dtype=np.float32))
    same = counterfactual(cut, ["anti_pd1", "chemo"], 2, model=model, horizon=2, at_day=at,
                          seed=1)
    np.testing.assert_array_equal(same.sod_mm, out.sod_mm)
    np.testing.assert_array_equal(same.composition, out.composition)


def test_history_as_h5ad_path(adata, model, cf: Counterfactual, tmp_path) -> None:
    path = tmp_path / "cohort.h5ad"
    adata.write_h5ad(path)
    out = counterfactual(str(path), REGIMENS, 6, patient=PATIENT, model=model, horizon=H,
                         seed=3)
    np.testing.assert_array_equal(out.sod_mm, cf.sod_mm)
    with pytest.raises(FileNotFoundError, match="history"):
        counterfactual(tmp_path / "missing.h5ad", REGIMENS, patient=PATIENT, model=model)


def test_plot_writes_png(cf: Counterfactual, tmp_path) -> None:
    path = plot_counterfactual_tree(cf, tmp_path / "tree.png")
    assert path == tmp_path / "tree.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    plot_counterfactual_tree(cf, tmp_path / "malignant.png", fraction="malignant", level=0.9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["malignant.png", "tree.png"]
    with pytest.raises(ValueError, match="fraction"):
        plot_counterfactual_tree(cf, tmp_path / "bad.png", fraction="cd9")
    with pytest.raises(ValueError, match="level"):
        plot_counterfactual_tree(cf, tmp_path / "bad.png", level=1.5)
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("kwargs, needle", [
    ({"n_samples": 0}, "n_samples: got 0; expected an integer in 1.."),
    ({"n_samples": 2.5}, "n_samples"),
    ({"n_samples": True}, "n_samples"),
    ({"horizon": 0}, "horizon: got 0; expected an integer in 1..1000"),
    ({"regimens": []}, "regimens: got an empty list"),
    ({"regimens": ["anti_pd1", "anti_pd1 q3w"]}, "listed twice"),
    ({"regimens": ["anti_pd2"]}, "'anti_pd2'"),
    ({"regimens": ["anti_pd1 q2w x4"]}, "every_weeks"),
    ({"patient": "cf-P999"}, "patient: got 'cf-P999'; expected a patient id of the history"),
    ({"patient": None}, "patient: got None"),
    ({"at_day": -5.0}, "at_day: -5.0 is before"),
    ({"at_day": float("nan")}, "at_day"),
    ({"seed": -1}, "seed"),
])
def test_errors(adata, model, kwargs, needle) -> None:
    args = {"regimens": ["anti_pd1"], "n_samples": 2, "patient": PATIENT, "horizon": 1,
            **kwargs}
    with pytest.raises(ValueError) as err:
        counterfactual(adata, args.pop("regimens"), args.pop("n_samples"), model=model,
                       **args)
    assert needle in str(err.value)
    if "patient" in needle:
        assert "cf-P000" in str(err.value)  # valid ids are named
