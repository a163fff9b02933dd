"""Readable plans: pruning searched dose plans into protocols, their text, and ``plan``.

Pruning is checked against a cheap synthetic score (anti-PD-1 helps, every dose of any other
drug costs 0.1), the text against the regimen grammar's parser, and the CLI on a three-patient
ImmuneSim cohort, whose true outcomes are known.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from immunegym.data.vocab import THERAPIES
from immunegym.planning.pruning import (
    PrunedPlans,
    candidate_edits,
    plan_complexity,
    prune_plans,
)
from immunegym.planning.regimen import describe_plan, parse_plan
from immunegym.validation import ValidationError

R = len(THERAPIES)
PD1, CTLA4, CHEMO, RADIO, TARGETED = range(R)
LEVELS = (0.0, 0.5, 1.0)


class PD1Only:
    """``value = sum of anti-PD-1 doses - cost * number of doses of other drugs``."""

    def __init__(self, cost: float = 0.1) -> None:
        self.cost = cost
        self.calls: list[tuple[int, int]] = []

    def __call__(self, patients: np.ndarray, plans: np.ndarray) -> np.ndarray:
        assert plans.ndim == 4 and plans.shape[0] == len(patients)
        self.calls.append(plans.shape[:2])
        return (plans[..., PD1].sum(-1)
                - self.cost * (plans[..., PD1 + 1:] > 0).sum((-2, -1)))


def _random_plans(n: int, horizon: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(LEVELS, (n, horizon, R)).astype(np.float32)


# --------------------------------------------------------------------------- pruning
def test_prune_drops_useless_drugs_and_keeps_anti_pd1() -> None:
    plans = _random_plans(4, 8)
    plans[:, :, PD1] = 1.0  # a full anti-PD-1 course: nothing to gain by cutting it
    score = PD1Only()
    result = prune_plans(score, np.arange(4), plans)
    assert isinstance(result, PrunedPlans)
    assert result.texts == ["anti_pd1 q3w x8"] * 4
    expected = np.zeros_like(plans)
    expected[:, :, PD1] = 1.0
    np.testing.assert_array_equal(result.plans, expected)
    # One score call per round, every patient and candidate in it.
    assert len(score.calls) == result.rounds
    assert all(p == 4 for p, _ in score.calls)
    assert result.evaluations == sum(p * c for p, c in score.calls)
    np.testing.assert_allclose(result.values, 8.0)
    np.testing.assert_allclose(result.original_values, score(np.arange(4), plans[:, None])[:, 0])
    np.testing.assert_array_equal(result.original_plans, plans)
    for edits in result.edits:
        assert {e.split()[1] for e in edits if e.startswith("drop")} == {
            "anti_ctla4", "chemo", "radio", "targeted"}


def test_prune_regularizes_a_ragged_course_and_cuts_nothing_useful() -> None:
    plan = np.zeros((1, 6, R), np.float32)
    plan[0, :, PD1] = [1.0, 0.5, 0.0, 1.0, 1.0, 1.0]
    plan[0, 2, CHEMO] = 0.5
    result = prune_plans(PD1Only(), np.arange(1), plan)
    assert result.texts == ["anti_pd1 q3w x6"]
    assert result.values[0] == pytest.approx(6.0) and result.original_values[0] == pytest.approx(
        4.4)
    assert result.edits[0][0] == "drop chemo"
    assert any(e.startswith("regularize anti_pd1") for e in result.edits[0])


def test_prune_never_falls_below_the_tolerance() -> None:
    plans = _random_plans(6, 6, seed=3)
    for tolerance in (0.0, 0.3, 1.5):
        result = prune_plans(PD1Only(), np.arange(6), plans, tolerance=tolerance)
        assert (result.values >= result.original_values - tolerance - 1e-9).all()
        # With no tolerance the value never falls, edit after edit.
        if tolerance == 0.0:
            assert (result.values >= result.original_values).all()
    # A larger tolerance buys simpler plans (anti-PD-1 courses get shortened too).
    strict = prune_plans(PD1Only(), np.arange(6), plans)
    loose = prune_plans(PD1Only(), np.arange(6), plans, tolerance=1.5)
    assert (loose.plans[..., PD1] > 0).sum() < (strict.plans[..., PD1] > 0).sum()


def test_prune_with_every_drug_useless_leaves_no_therapy() -> None:
    def costly(patients, plans):
        return -(plans > 0).sum((-2, -1)).astype(float)

    result = prune_plans(costly, np.arange(2), _random_plans(2, 4, seed=1))
    assert result.texts == ["none", "none"] and not result.plans.any()
    np.testing.assert_allclose(result.values, 0.0)


def test_prune_is_deterministic_and_repeats_patients() -> None:
    plans = _random_plans(3, 5, seed=2)
    a = prune_plans(PD1Only(0.05), np.array([0, 0, 1]), plans, tolerance=0.2)
    b = prune_plans(PD1Only(0.05), np.array([0, 0, 1]), plans, tolerance=0.2)
    np.testing.assert_array_equal(a.plans, b.plans)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.edits == b.edits and a.texts == b.texts and a.rounds == b.rounds


def test_prune_keeps_a_plan_when_every_edit_costs() -> None:
    plans = _random_plans(2, 4, seed=5)

    def any_change_costs(patients, candidates):
        return -np.abs(candidates - plans[patients][:, None]).sum((-2, -1))

    result = prune_plans(any_change_costs, np.arange(2), plans)
    np.testing.assert_array_equal(result.plans, plans)
    assert result.edits == [[], []] and result.texts == result.original_texts
    np.testing.assert_array_equal(result.values, result.original_values)


def test_prune_max_rounds_zero_only_scores() -> None:
    score = PD1Only()
    plans = _random_plans(2, 3)
    result = prune_plans(score, np.arange(2), plans, max_rounds=0)
    np.testing.assert_array_equal(result.plans, plans)
    assert result.rounds == 1 and score.calls == [(2, 2)]


def test_noisy_score_never_reports_a_fall_beyond_the_tolerance() -> None:
    """A score whose draws differ call by call: the values returned still hold the floor."""
    rng = np.random.default_rng(0)

    def noisy(patients, plans):
        return PD1Only()(patients, plans) + rng.normal(0, 0.5, plans.shape[:2])

    plans = _random_plans(8, 6, seed=4)
    result = prune_plans(noisy, np.arange(8), plans, tolerance=0.1)
    assert (result.values >= result.original_values - 0.1).all()


def test_a_pruned_plan_below_the_floor_in_the_last_call_is_rechecked() -> None:
    """The current plan's slot reads 5 lower (a draw that differs by position): the last
    round puts the pruned plan below the floor, so one more call scores the plans on the way
    and the last that holds there is kept."""
    calls: list[int] = []

    def biased(patients, plans):
        calls.append(plans.shape[1])
        values = PD1Only()(patients, plans)
        values[:, 1] -= 5.0
        return values

    plan = np.zeros((1, 4, R), np.float32)
    plan[0, :, PD1] = 1.0
    plan[0, 0, CHEMO] = plan[0, 1, RADIO] = 1.0
    result = prune_plans(biased, np.arange(1), plan)
    assert result.texts == ["anti_pd1 q3w x4"]
    assert result.edits == [["drop chemo", "drop radio"]]
    assert result.values[0] == pytest.approx(4.0)
    assert result.original_values[0] == pytest.approx(3.8)
    assert result.rounds == len(calls) and calls[-1] == 3  # original + the two plans on the way


def test_candidate_edits_each_simplify_the_plan() -> None:
    plan = _random_plans(1, 6, seed=6)[0]
    edits = candidate_edits(plan)
    assert edits and len({new.tobytes() for _, new in edits}) == len(edits)
    kinds = {text.split()[0] for text, _ in edits}
    assert kinds <= {"drop", "shorten", "regularize", "standardize"}
    for _, new in edits:
        assert plan_complexity(new) < plan_complexity(plan)
    assert candidate_edits(np.zeros((4, R), np.float32)) == []


@pytest.mark.parametrize(("kwargs", "names"), [
    ({"tolerance": -0.1}, ["tolerance", "-0.1", ">= 0"]),
    ({"tolerance": float("nan")}, ["tolerance"]),
    ({"max_rounds": -1}, ["max_rounds"]),
    ({"standard_dose": 0.0}, ["standard_dose"]),
    ({"plans": np.ones((2, 3))}, ["plans", "(patients, cycles, therapies)"]),
    ({"plans": -np.ones((2, 3, R))}, ["plans", ">= 0"]),
    ({"patients": np.arange(3)}, ["patients", "(2,)"]),
    ({"score": "not callable"}, ["score"]),
    ({"score": lambda p, x: np.zeros(3)}, ["score", "shape"]),
    ({"score": lambda p, x: np.full(x.shape[:2], np.nan)}, ["score", "non-finite"]),
    ({"therapies": ("anti_pd1",)}, ["therapies"]),
])
def test_prune_refuses_bad_input(kwargs, names) -> None:
    args = {"score": PD1Only(), "patients": np.arange(2), "plans": _random_plans(2, 3)}
    args.update(kwargs)
    score, patients, plans = args.pop("score"), args.pop("patients"), args.pop("plans")
    with pytest.raises(ValidationError) as err:
        prune_plans(score, patients, plans, **args)
    for name in names:
        assert name in str(err.value), (name, str(err.value))


# --------------------------------------------------------------------------- text
def _doses(*columns: tuple[int, list[float]], horizon: int) -> np.ndarray:
    out = np.zeros((horizon, R), np.float32)
    for r, values in columns:
        out[: len(values), r] = values
    return out


@pytest.mark.parametrize(("doses", "text"), [
    (_doses((PD1, [1.0] * 35), horizon=35), "anti_pd1 q3w x35"),
    (_doses((PD1, [1.0] * 17), (CTLA4, [1.0] * 4), horizon=20),
     "anti_pd1+anti_ctla4 q3w x4 -> anti_pd1 q3w x13"),
    (_doses((PD1, [1, 0, 1, 0, 1, 0, 1]), horizon=8), "anti_pd1 q6w x4"),
    (_doses((PD1, [0, 0, 1, 1]), horizon=6), "none x2 -> anti_pd1 q3w x2"),
    (_doses((CHEMO, [0.5] * 4), (PD1, [1.0] * 6), horizon=8),
     "anti_pd1+chemo@0.5 q3w x4 -> anti_pd1 q3w x2"),
    (_doses((RADIO, [1, 0, 0, 0, 1]), horizon=5), "radio q12w x2"),
    (np.zeros((4, R), np.float32), "none"),
])
def test_describe_plan_texts_and_round_trip(doses: np.ndarray, text: str) -> None:
    assert describe_plan(doses) == text
    np.testing.assert_array_equal(parse_plan(text).cycle_doses(len(doses)), doses)


@pytest.mark.parametrize("seed", range(6))
def test_describe_plan_round_trips_random_plans(seed: int) -> None:
    doses = _random_plans(1, 10, seed=seed)[0]
    doses[np.random.default_rng(seed).random(doses.shape) < 0.5] = 0
    text = describe_plan(doses)
    np.testing.assert_array_equal(parse_plan(text).cycle_doses(10), doses)


def test_describe_plan_weekly_cycles_and_column_names() -> None:
    doses = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]], np.float32)
    text = describe_plan(doses, therapies=("anti_pd1", "chemo"), cycle_days=14)
    assert text == "anti_pd1 q2w x1 -> anti_pd1+chemo q2w x1 -> anti_pd1 q2w x1"
    full = np.zeros((3, R), np.float32)
    full[:, PD1], full[:, CHEMO] = doses[:, 0], doses[:, 1]
    np.testing.assert_array_equal(parse_plan(text).cycle_doses(3, cycle_days=14), full)


@pytest.mark.parametrize(("args", "names"), [
    ((np.ones(5),), ["doses", "(cycles >= 1, therapies >= 1)"]),
    ((-np.ones((2, R)),), ["doses", ">= 0"]),
    ((np.full((2, R), 9.0),), ["doses", "at most"]),
    ((np.ones((2, 2)), ("anti_pd1",)), ["therapies"]),
    ((np.ones((2, 2)), ("anti_pd1", "aspirin")), ["therapies", "aspirin"]),
    ((np.ones((2, R)), THERAPIES, 10), ["cycle_days", "multiple of 7"]),
])
def test_describe_plan_refuses_bad_input(args, names) -> None:
    with pytest.raises(ValidationError) as err:
        describe_plan(*args)
    for name in names:
        assert name in str(err.value), (name, str(err.value))


# --------------------------------------------------------------------------- cohort and CLI
runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def cohort_path(tmp_path_factory):
    import torch

    from immunegym.sim.cohort import make_cohort

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("cohort") / "pr.h5ad"
    make_cohort("melanoma", ("anti_pd1",), n_patients=3, seed=7, horizon_days=120,
                name="pr").write_h5ad(path)
    return path


def test_truth_bank_only_for_simulated_cohorts(cohort_path) -> None:
    import anndata as ad

    from immunegym.planning.pruning import _truth_bank

    adata = ad.read_h5ad(cohort_path)
    bank, rows, why = _truth_bank(adata, ["pr-P002", "pr-P000"], "cpu")
    assert why == "" and list(rows) == [2, 0] and bank.has_hidden_state
    del adata.uns["cohort"]
    assert _truth_bank(adata, ["pr-P000"], "cpu")[2].startswith("not an ImmuneSim cohort")


def test_cli_plan_prints_protocols_with_predicted_and_true_returns(cohort_path,
                                                                  tmp_path) -> None:
    from immunegym.cli import app

    js = tmp_path / "plan.json"
    args = ["plan", "--cohort", str(cohort_path), "--patient", "pr-P000", "--budget", "8",
            "--method", "cem", "--horizon", "2", "--samples", "4", "--out", str(tmp_path),
            "--json", str(js), "--tolerance", "0.05"]
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    assert "readable plans" in result.output and "at most 0.05" in result.output
    data = json.loads(js.read_text())
    assert data["tolerance"] == 0.05
    pruned = data["pruned"]
    assert len(pruned) == len(data["ranked"])
    for rec in pruned:
        parse_plan(rec["regimen"])  # protocol text in the grammar
        assert rec["regimen"] in result.output
        assert f"predicted return {rec['predicted_return']:.2f}" in result.output
        assert f"true return (ImmuneSim) {rec['true_return']:.2f}" in result.output
        assert rec["predicted_return"] >= rec["original_predicted_return"] - 0.05
        assert isinstance(rec["original_true_return"], float)
    off = runner.invoke(app, [*args[:-2], "--no-prune"], env=WIDE)
    assert off.exit_code == 0 and "readable plans" not in off.output
    assert "pruned" not in json.loads(js.read_text())


def test_cli_plan_refuses_a_negative_tolerance(cohort_path, tmp_path) -> None:
    from immunegym.cli import app

    result = runner.invoke(app, ["plan", "--cohort", str(cohort_path), "--patient", "pr-P000",
                                 "--tolerance", "-1", "--out", str(tmp_path)], env=WIDE)
    assert result.exit_code == 1
    assert "--tolerance" in result.output and "got -1" in result.output
