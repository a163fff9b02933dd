"""Closed-loop planning: the MPC agent (CEM re-planned from the latest biopsy and scan), the
mid-episode belief, plans scored as the env will give them, and replan_every on CEM / beam.

Everything runs a handful of patients over two to four cycles with tiny searches.
"""

from __future__ import annotations

import numpy as np
import pytest

from immunegym.data.vocab import THERAPIES
from immunegym.validation import ValidationError

R = len(THERAPIES)
PD1, CTLA4, CHEMO, RADIO, TARGETED = range(R)
TINY = {"population": 3, "iterations": 1, "n_samples": 2}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """Tiny batches: intra-op threads only add contention on a busy 2-core machine."""


@pytest.fixture(scope="module")
def model():
    from immunegym.world_model import load

    return load()


def _scenario(horizon: int, n: int = 4):
    from immunegym.planning.evaluate import leaderboard_scenario

    return leaderboard_scenario(horizon=horizon, n_patients=n)


def _expected_replans(ev, horizon: int, every: int) -> np.ndarray:
    """Replans per row: cycles 1..length-1 that are multiples of ``every`` (an episode
    lasts until its progression or death, ``pfs_cycles``, or the horizon)."""
    length = np.where(ev.pfs_event, ev.pfs_cycles, horizon)
    return np.array([sum(1 for c in range(1, n) if c % every == 0) for n in length])


def test_mpc_runs_end_to_end_and_replans_every_cycle(model, monkeypatch) -> None:
    import agents.cem as cem_agent
    from agents.mpc import MPCPlanner
    from immunegym.planning.evaluate import evaluate_policy
    from immunegym.planning.policy import ClosedLoopPlanner, Policy

    horizons = []

    def spy(score, patients, horizon, levels, **kwargs):
        horizons.append((horizon, kwargs["seeds"].shape))
        return real(score, patients, horizon, levels, **kwargs)

    real = cem_agent.cem
    monkeypatch.setattr(cem_agent, "cem", spy)
    planner = MPCPlanner(model=model, **TINY)
    assert isinstance(planner, Policy) and isinstance(planner, ClosedLoopPlanner)
    assert planner.name == "mpc" and planner.replan_every == 1
    ev = evaluate_policy(planner, "world", _scenario(3), model=model, seed=0)
    expected = _expected_replans(ev, 3, 1)
    np.testing.assert_array_equal(planner.stats.replans, expected)
    assert expected.max() == 2  # someone went the whole way
    # The start's search, then one per cycle over the cycles left, warm-started from the
    # current plan and the guideline (two seeds).
    assert horizons[0][0] == 3
    assert [h for h, _ in horizons[1:]] == [2, 1][: len(horizons) - 1]
    assert all(shape[1:] == (2, h, R) for h, shape in horizons[1:])
    per_search = TINY["population"] * TINY["iterations"]
    np.testing.assert_array_equal(planner.stats.evaluations, per_search * (1 + expected))
    assert planner.runs == [planner.stats]
    summary = planner.stats.summary()
    assert summary["replans_per_episode"] == pytest.approx(expected.mean())
    assert summary["searches"] == len(horizons) and summary["evaluations_per_second"] > 0
    # The replans changed the plan after the start (not the cycles already given).
    np.testing.assert_array_equal(planner.plans[:, 0], planner.opening[:, 0])
    assert np.isin(planner.plans, (0.0, 0.5, 1.0)).all()


def test_mpc_every_other_cycle_and_reproducible(model) -> None:
    from agents.mpc import MPCPlanner
    from immunegym.planning.evaluate import evaluate_policy

    def run(seed: int):
        planner = MPCPlanner(model=model, replan_every=2, seed=seed, **TINY)
        ev = evaluate_policy(planner, "world", _scenario(4, 3), model=model, seed=1)
        return planner, ev

    first, ev = run(5)
    np.testing.assert_array_equal(first.stats.replans, _expected_replans(ev, 4, 2))
    again, ev_again = run(5)
    np.testing.assert_array_equal(again.plans, first.plans)
    np.testing.assert_array_equal(ev_again.returns, ev.returns)
    np.testing.assert_array_equal(ev_again.given, ev.given)


def test_mpc_oracle_replays_the_given_doses(monkeypatch) -> None:
    from agents.mpc import MPCPlanner
    from immunegym.planning import scoring
    from immunegym.planning.evaluate import evaluate_policy

    scored = []
    real = scoring.EngineScorer.__call__

    def spy(self, patients, plans):
        scored.append(np.array(plans))
        return real(self, patients, plans)

    monkeypatch.setattr(scoring.EngineScorer, "__call__", spy)
    planner = MPCPlanner("sim", **TINY)
    assert planner.name == "mpc_oracle"
    ev = evaluate_policy(planner, "sim", _scenario(2, 2), seed=0)
    np.testing.assert_array_equal(planner.stats.replans, _expected_replans(ev, 2, 1))
    assert planner.stats.replans.any(), "nobody reached cycle 1: the test checks nothing"
    # The oracle scores whole episodes: the first cycle as given, then the candidates.
    replanned = scored[-1]
    assert replanned.shape[2] == 2
    rows = np.flatnonzero(planner.stats.replans)
    np.testing.assert_array_equal(replanned[:, :, 0],
                                  np.broadcast_to(ev.given[rows, 0][:, None],
                                                  replanned[:, :, 0].shape))


@pytest.mark.parametrize("method", ["cem", "beam"])
def test_cem_and_beam_with_replan_every_run(model, method) -> None:
    from agents.beam import TreePlanner
    from agents.cem import CEMPlanner
    from immunegym.planning.evaluate import evaluate_policy

    if method == "cem":
        planner = CEMPlanner("world", model=model, replan_every=2, **TINY)
        open_loop = CEMPlanner("world", model=model, **TINY)
    else:
        planner = TreePlanner("world", width=1, model=model, n_samples=2, replan_every=2)
        open_loop = TreePlanner("world", width=1, model=model, n_samples=2)
    assert open_loop.replan_every is None
    ev = evaluate_policy(planner, "world", _scenario(3, 3), model=model, seed=0)
    np.testing.assert_array_equal(planner.stats.replans, _expected_replans(ev, 3, 2))
    assert (planner.stats.evaluations > 0).all()
    evaluate_policy(open_loop, "world", _scenario(3, 3), model=model, seed=0)
    assert not open_loop.stats.replans.any()
    np.testing.assert_array_equal(open_loop.plans, open_loop.opening)


def test_episode_now_reads_the_latest_biopsy_and_scan() -> None:
    from immunegym.env.spaces import ObservationCodec
    from immunegym.planning.evaluate import episode_start, make_env
    from immunegym.planning.policy import episode_now

    scenario = _scenario(3, 3)
    env = make_env("sim", scenario, 3)
    obs, infos = env.reset(seed=0, options={"patient": np.arange(3)})
    start = episode_start(env, obs, infos)
    obs, *_ = env.step(np.zeros((3, R), dtype=np.int64))
    obs, *_, infos = env.step(np.zeros((3, R), dtype=np.int64))
    now = episode_now(start, obs, np.array([2, 0]), 2)
    env.close()
    assert now.scenario.horizon == 1 and now.scenario.bank_seed == scenario.bank_seed
    np.testing.assert_array_equal(now.patient_id, start.patient_id[[2, 0]])
    parts = ObservationCodec(scenario).slices
    np.testing.assert_allclose(now.composition, obs[[2, 0], parts["composition"]])
    # The cycle-2 scan (scans every 2 cycles), not the true SOD of info["sod_mm"].
    burden = obs[[2, 0], parts["burden"]][:, 0]
    np.testing.assert_allclose(now.sod_mm, np.expm1(burden.astype(np.float64)), rtol=1e-6)
    assert not np.allclose(now.sod_mm, infos["sod_mm"][[2, 0]])
    as_dict = episode_now(start, {"composition": obs[:, parts["composition"]],
                                  "burden": obs[:, parts["burden"]]}, np.array([2, 0]), 2)
    np.testing.assert_array_equal(as_dict.composition, now.composition)
    with pytest.raises(ValidationError, match="obs"):
        episode_now(start, obs[:, :10], np.array([0]), 2)
    with pytest.raises(ValidationError, match="cycle"):
        episode_now(start, obs, np.array([0]), 3)


def test_feasible_plans_withholds_like_the_env() -> None:
    from immunegym.planning.policy import feasible_plans

    plans = np.ones((2, 1, 4, R), dtype=np.float32)
    left = np.array([[np.inf, 1, 6, 0, np.inf], [np.inf, 4, 6, 2, np.inf]])
    allowed = np.array([[False, True, True, True, True], [True] * R])
    stopped = np.zeros((2, R), dtype=bool)
    stopped[1, TARGETED] = True
    out = feasible_plans(plans, left, allowed, stopped)
    np.testing.assert_array_equal(out[0, 0, :, PD1], [0, 1, 1, 1])  # on hold this cycle
    np.testing.assert_array_equal(out[0, 0, :, CTLA4], [1, 0, 0, 0])  # one dose left
    np.testing.assert_array_equal(out[0, 0, :, RADIO], [0, 0, 0, 0])  # cap reached
    np.testing.assert_array_equal(out[1, 0, :, RADIO], [1, 1, 0, 0])
    np.testing.assert_array_equal(out[1, 0, :, TARGETED], [0, 0, 0, 0])  # stopped
    assert (out[:, :, :, CHEMO] == 1).all()
    assert (plans == 1).all()  # the input is not changed


@pytest.mark.parametrize("value", [0, -1, 1.5, None, True])
def test_bad_replan_every_is_refused(model, value) -> None:
    from agents import beam as beam_agent
    from agents import cem as cem_agent
    from agents import mpc

    with pytest.raises(ValidationError, match="replan_every.*integer"):
        mpc.MPCPlanner(model=model, replan_every=value)
    with pytest.raises(ValidationError, match="replan_every"):
        mpc.Args(replan_every=value)
    if value is not None:  # None is the open-loop default of CEM and beam
        with pytest.raises(ValidationError, match="replan_every.*None plans once"):
            cem_agent.CEMPlanner(model=model, replan_every=value)
        with pytest.raises(ValidationError, match="replan_every"):
            beam_agent.TreePlanner(model=model, replan_every=value)
    if value != 0:  # 0 is the CLI's "plan once"
        with pytest.raises(ValidationError, match="replan_every"):
            cem_agent.Args(replan_every=value)


def test_mpc_refuses_bad_settings(model) -> None:
    from agents.mpc import MPCPlanner

    with pytest.raises(ValidationError, match="pessimism"):
        MPCPlanner(model=model, pessimism=-1.0)
    with pytest.raises(ValidationError, match="population"):
        MPCPlanner(model=model, population=1)
    with pytest.raises(ValidationError, match="simulator"):
        MPCPlanner("real", model=model)
    with pytest.raises(ValidationError, match="seed"):
        MPCPlanner(model=model, seed=-1)


def test_mpc_main_and_help(tmp_path, capsys) -> None:
    import tyro

    from agents import mpc

    with pytest.raises(SystemExit):
        tyro.cli(mpc.Args, args=["--help"])
    assert "--replan-every" in capsys.readouterr().out
    args = mpc.Args(horizon=2, eval_patients=2, population=2, iterations=1, n_samples=2,
                    log_dir=str(tmp_path), eval_world=False)
    result = mpc.main(args)
    assert np.isfinite(result["return_sim"])
    assert set(result["planning"]) == {"replans_per_episode", "evaluations_per_episode",
                                       "searches", "planning_seconds",
                                       "evaluations_per_second"}
