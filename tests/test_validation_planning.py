"""Issue 19, planning room: counterfactuals, search, scoring, evaluation and the agents'
arguments refuse bad input with a clear error, and results print compactly."""

from __future__ import annotations

import numpy as np
import pytest

from immunegym.planning.counterfactuals import counterfactual
from immunegym.planning.evaluate import evaluate_policy, leaderboard_scenario
from immunegym.planning.regimen_search import beam, cem, exhaustive, search
from immunegym.validation import ValidationError
from immunegym.world_model import LatentConfig, WorldModel, WorldModelConfig


@pytest.fixture(scope="module")
def model() -> WorldModel:
    return WorldModel(WorldModelConfig(LatentConfig(d_hidden=8, d_context=2, d_dynamics=8),
                                       n_members=2), seed=0)


def _score(patients: np.ndarray, plans: np.ndarray) -> np.ndarray:
    return -plans.sum((-1, -2))


# ---------------------------------------------------------------------------- counterfactual
def test_counterfactual_bounds_the_horizon_before_rolling_out(registered, model):
    with pytest.raises(ValidationError, match=r"horizon: got 1000000; expected an integer in "
                                              r"1\.\.1000"):
        counterfactual(registered, ["anti_pd1"], patient="p1", model=model, horizon=10**6)


def test_counterfactual_estimates_memory(registered, model, monkeypatch):
    monkeypatch.setenv("IMMUNEGYM_MAX_MEMORY_GB", "0.001")
    with pytest.raises(ValidationError, match=r"horizon: got 900; this needs about"):
        counterfactual(registered, ["anti_pd1"], patient="p1", model=model, horizon=900,
                       n_samples=1000)


def test_counterfactual_unknown_patient_lists_ids_that_exist(registered, model):
    with pytest.raises(ValidationError, match=r"patient: got 'p9'; expected a patient id of "
                                              r"the history \(3 patients, e.g. \['p1', 'p2', "
                                              r"'p3'\]\)"):
        counterfactual(registered, ["anti_pd1"], patient="p9", model=model)


def test_counterfactual_other_arguments(registered, model, tmp_path):
    with pytest.raises(ValidationError, match="n_samples: got 0"):
        counterfactual(registered, ["anti_pd1"], patient="p1", model=model, n_samples=0)
    with pytest.raises(ValidationError, match="seed: got -1"):
        counterfactual(registered, ["anti_pd1"], patient="p1", model=model, seed=-1)
    with pytest.raises(ValidationError, match=r"regimens\[1\]: got 'anti_pd9'"):
        counterfactual(registered, ["anti_pd1", "anti_pd9"], patient="p1", model=model)
    with pytest.raises(FileNotFoundError, match="history: got .*no such file"):
        counterfactual(tmp_path / "missing.h5ad", ["anti_pd1"], model=model)
    (tmp_path / "table.h5ad").write_text("patient,day\n")
    with pytest.raises(ValidationError, match="history: got .*not HDF5"):
        counterfactual(tmp_path / "table.h5ad", ["anti_pd1"], model=model)
    with pytest.raises(ValidationError, match="at_day: got nan"):
        counterfactual(registered, ["anti_pd1"], patient="p1", model=model,
                       at_day=float("nan"))


def test_counterfactual_repr_is_compact(registered, model):
    cf = counterfactual(registered, ["anti_pd1", "none"], patient="p1", model=model,
                        horizon=2, n_samples=2)
    text = repr(cf)
    assert text == ("Counterfactual(patient='p1', cancer_type='unknown', regimens=2, "
                    "samples=4, horizon=2 cycles from day 0)")
    with pytest.raises(ValidationError, match="by: got 'p_respons'.*did you mean 'p_response'"):
        cf.best("p_respons")


# ---------------------------------------------------------------------------- search
def test_search_methods_check_their_arguments():
    patients = np.arange(2)
    levels = (0.0, 1.0)
    with pytest.raises(ValidationError, match="population: got 1"):
        cem(_score, patients, 3, levels, population=1)
    with pytest.raises(ValidationError, match="horizon: got 0"):
        cem(_score, patients, 0, levels)
    with pytest.raises(ValidationError, match="levels: got"):
        cem(_score, patients, 3, [])
    with pytest.raises(ValidationError, match="score: got 'f'"):
        cem("f", patients, 3, levels)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="width: got 0"):
        beam(_score, patients, 3, np.eye(5), width=0)
    with pytest.raises(ValidationError, match="menu: got"):
        beam(_score, patients, 3, np.full((2, 5), np.nan))
    with pytest.raises(ValidationError, match=r"switch_cycles: got \[7\]"):
        exhaustive(_score, patients, 3, np.eye(5), switch_cycles=[7])


def test_exhaustive_estimates_memory(monkeypatch):
    monkeypatch.setenv("IMMUNEGYM_MAX_MEMORY_GB", "0.0001")
    with pytest.raises(ValidationError, match="horizon: got 400; this needs about"):
        exhaustive(_score, np.arange(4), 400, np.eye(5))


def test_search_result_repr_is_compact():
    result = cem(_score, np.arange(2), 3, (0.0, 1.0), population=4, iterations=1)
    text = repr(result)
    assert text.startswith("SearchResult(patients=2, plans=3x5 (cycles x therapies), "
                           "evaluations=4 per patient")
    assert "array" not in text


def test_search_entry_point_checks_before_loading_anything(registered, model, tmp_path):
    with pytest.raises(ValidationError, match="method: got 'cme'.*did you mean 'cem'"):
        search(registered, method="cme", model=model)
    with pytest.raises(ValidationError, match="budget: got 1"):
        search(registered, budget=1, model=model)
    with pytest.raises(ValidationError, match="horizon: got 100000"):
        search(registered, horizon=100_000, model=model)
    with pytest.raises(ValidationError, match="ray: got 'yes'"):
        search(registered, ray="yes", model=model)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="history: got .*no such file"):
        search(tmp_path / "none.h5ad", model=model)
    with pytest.raises(ValidationError, match="patients: got 'p1'"):
        search(registered, patients="p1", model=model)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- scoring
def test_engine_scorer_and_scorer_for_arguments(model):
    from immunegym.env.patients import PatientBank
    from immunegym.planning.scoring import EngineScorer, scorer_for

    scenario = leaderboard_scenario(horizon=2, n_patients=2)
    bank = PatientBank.from_sim(scenario.cancer_types, 2, seed=0)
    with pytest.raises(ValidationError, match="simulator: got 'wrld'.*did you mean 'world'"):
        EngineScorer("wrld", scenario, bank, model=model)
    with pytest.raises(ValidationError, match="n_samples: got 0"):
        EngineScorer("world", scenario, bank, model=model, n_samples=0)
    with pytest.raises(ValidationError, match="bank: got"):
        EngineScorer("world", scenario, {"x": 1}, model=model)  # type: ignore[arg-type]
    scorer = EngineScorer("world", scenario, bank, model=model)
    with pytest.raises(ValidationError, match="plans: got"):
        scorer(np.arange(2), np.ones((2, 3, 5)))
    with pytest.raises(ValidationError, match="plans: got '<negative or non-finite doses>'"):
        scorer(np.arange(2), -np.ones((2, 1, 2, 5)))
    with pytest.raises(ValidationError, match=r"patients: got \[0, 7\]"):
        scorer(np.array([0, 7]), np.ones((2, 1, 2, 5)))
    with pytest.raises(ValidationError, match="simulator: got 'x'"):
        scorer_for(None, "x")


# ---------------------------------------------------------------------------- evaluation
def test_evaluate_policy_and_leaderboard_arguments():
    from agents.random import RandomAgent

    scenario = leaderboard_scenario(horizon=2, n_patients=2)
    with pytest.raises(ValidationError, match="policy: got"):
        evaluate_policy(object(), "sim", scenario)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="simulator: got 'simm'"):
        evaluate_policy(RandomAgent(0), "simm", scenario)
    with pytest.raises(ValidationError, match="n_patients: got 3"):
        evaluate_policy(RandomAgent(0), "sim", scenario, n_patients=3)
    with pytest.raises(ValidationError, match="scenario: got"):
        evaluate_policy(RandomAgent(0), "sim", {"horizon": 2})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="n_patients: got 0"):
        leaderboard_scenario(n_patients=0)
    with pytest.raises(ValidationError, match="held_out: got 'no'"):
        leaderboard_scenario(held_out="no")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="seed: got -1"):
        RandomAgent(-1)


# ---------------------------------------------------------------------------- agents' Args
def test_agent_args_validate_on_construction(tmp_path):
    from agents import beam as beam_agent
    from agents import cem as cem_agent
    from agents import sb3_ppo, standard_of_care

    cases = [
        (sb3_ppo.Args, {"total_timesteps": -5}, "total_timesteps: got -5"),
        (sb3_ppo.Args, {"gamma": 1.5}, "gamma: got 1.5"),
        (sb3_ppo.Args, {"load_path": str(tmp_path / "nope")}, "load_path: got"),
        (cem_agent.Args, {"population": 1}, "population: got 1"),
        (cem_agent.Args, {"elite_fraction": 0.0}, "elite_fraction: got 0.0"),
        (beam_agent.Args, {"width": 0}, "width: got 0"),
        (standard_of_care.Args, {"seed": -1}, "seed: got -1"),
        (standard_of_care.Args, {"horizon": 0}, "horizon: got 0"),
        (standard_of_care.Args, {"eval_patients": 0}, "eval_patients: got 0"),
        (standard_of_care.Args, {"device": "tpu"}, "device: got 'tpu'"),
        (standard_of_care.Args, {"cancer_types": "melanoma,melanomaa"},
         "cancer_types: got 'melanomaa'.*did you mean 'melanoma'"),
    ]
    for cls, kwargs, message in cases:
        with pytest.raises(ValidationError, match=message):
            cls(log_dir=str(tmp_path), **kwargs)


def test_agent_command_line_prints_a_clear_error(capsys, tmp_path, monkeypatch):
    import tyro

    monkeypatch.setenv("COLUMNS", "200")  # one line of the error box, not wrapped

    from agents import sb3_ppo

    with pytest.raises(SystemExit) as exit_info:
        tyro.cli(sb3_ppo.Args, args=["--total-timesteps", "-5", "--log-dir", str(tmp_path)])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "total_timesteps: got -5; expected an integer in 1.." in err
    assert "Traceback" not in err
