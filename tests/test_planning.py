"""Planning: regimen search (CEM, beam, exhaustive), scoring in the simulators, policy
evaluation, the planner agents, the leaderboard and the ``bench planners`` / ``plan`` CLI.

The search algorithms are checked against a cheap synthetic score with a known optimum; the
rest runs the real simulators with a handful of patients and two or three cycles.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from immunegym.data.vocab import THERAPIES
from immunegym.planning.regimen import RegimenPlan
from immunegym.planning.regimen_search import beam, cem, exhaustive, search

LEVELS = (0.0, 0.5, 1.0)
R = len(THERAPIES)
PD1, CTLA4, CHEMO, RADIO, TARGETED = range(R)
CONTRACT = ("return_world", "return_sim", "orr_sim", "irae_sim")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny batches: intra-op threads only add contention on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------
# 1. Search algorithms on a synthetic score with a known optimum
# --------------------------------------------------------------------------------------


class Quadratic:
    """``score = -sum((plan - target[patient])^2)``, recording every batch it scores."""

    def __init__(self, target: np.ndarray) -> None:
        self.target = np.asarray(target, dtype=np.float32)
        self.batches: list[np.ndarray] = []

    def __call__(self, patients: np.ndarray, plans: np.ndarray) -> np.ndarray:
        plans = np.asarray(plans)
        assert plans.ndim == 4 and plans.shape[0] == len(patients)
        self.batches.append(plans.copy())
        t = self.target[np.asarray(patients)][:, None]
        return -((plans - t) ** 2).sum((-2, -1))

    @property
    def scored(self) -> int:
        """Plans scored per patient so far."""
        return sum(b.shape[1] for b in self.batches)


def _targets(n: int, horizon: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(LEVELS, (n, horizon, R)).astype(np.float32)


MENU = np.array([[0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]], dtype=np.float32)


def _check_ranked(result, score: Quadratic, patients: np.ndarray, horizon: int,
                  top_k: int) -> None:
    """Best first, distinct, at most top_k; the head is the returned plan and value."""
    assert len(result.ranked) == len(patients)
    for i, ranking in enumerate(result.ranked):
        assert 1 <= len(ranking) <= top_k
        values = [v for _, v in ranking]
        assert values == sorted(values, reverse=True)
        doses = [plan.cycle_doses(horizon) for plan, _ in ranking]
        assert len({d.tobytes() for d in doses}) == len(doses), "ranked plans repeat"
        np.testing.assert_array_equal(doses[0], result.plans[i])
        assert values[0] == result.values[i]
        # Each ranked value is the score of its plan.
        again = score(patients[i:i + 1], np.stack(doses)[None])[0]
        np.testing.assert_allclose(values, again, rtol=0, atol=1e-6)


def test_cem_finds_the_optimum() -> None:
    target = _targets(4, 2)
    score = Quadratic(target)
    patients = np.array([3, 1, 0, 2])  # rows, not positions: plan i belongs to row i
    result = cem(score, patients, 2, LEVELS, population=64, iterations=10,
                 elite_fraction=0.25, smoothing=0.5, top_k=5, seed=0)
    assert result.plans.shape == (4, 2, R) and result.values.shape == (4,)
    np.testing.assert_array_equal(result.plans, target[patients])
    np.testing.assert_array_equal(result.values, 0.0)
    assert result.evaluations == 64 * 10 == score.scored
    assert len(result.trace) == 10
    assert all(b >= a for a, b in zip(result.trace, result.trace[1:], strict=False))
    assert result.trace[-1] == 0.0 and result.trace[0] < 0
    _check_ranked(result, score, patients, 2, 5)
    assert all(len(r) == 5 for r in result.ranked)


def test_cem_seeded_optimum_is_kept_after_one_iteration() -> None:
    target = _targets(3, 3, seed=1)
    score = Quadratic(target)
    patients = np.arange(3)
    result = cem(score, patients, 3, LEVELS, population=4, iterations=1,
                 seeds=target[:, None], seed=0)
    np.testing.assert_array_equal(result.plans, target)
    np.testing.assert_array_equal(result.values, 0.0)
    assert result.evaluations == 4


def test_cem_never_ends_below_its_best_seed_and_elitism() -> None:
    target = _targets(3, 4, seed=2)
    near = target.copy()
    near[:, 0, 0] = np.where(near[:, 0, 0] > 0, 0.0, 1.0)  # one dose off the optimum
    seeds = np.stack([np.zeros_like(target), near], axis=1)  # the best seed second
    score = Quadratic(target)
    patients = np.arange(3)
    best_seed = score(patients, seeds).max(1)
    score.batches.clear()
    result = cem(score, patients, 4, LEVELS, population=6, iterations=4, seeds=seeds,
                 seed=3)
    assert (result.values >= best_seed).all()
    # Both seeds entered the first population.
    np.testing.assert_array_equal(score.batches[0][:, :2], seeds)
    # Elitism: each iteration's best plan competes again in the next one (slot 0).
    for prev, cur in zip(score.batches, score.batches[1:], strict=False):
        values = score.__class__(target)(patients, prev)
        best = prev[np.arange(3), values.argmax(1)]
        np.testing.assert_array_equal(cur[:, 0], best)


def test_cem_progress_and_reproducibility() -> None:
    table = np.random.default_rng(5).normal(size=(2, 3, R, len(LEVELS)))

    def bumpy(patients, plans):  # many local optima, no structure CEM can exploit fully
        idx = np.rint(np.asarray(plans) * 2).astype(int)[..., None]  # level index
        t = np.broadcast_to(table[np.asarray(patients)][:, None], (*idx.shape[:-1],
                                                                    len(LEVELS)))
        return np.take_along_axis(t, idx, -1)[..., 0].sum((-2, -1))

    calls: list[tuple[int, float]] = []
    kwargs = {"population": 8, "iterations": 3, "top_k": 3}
    a = cem(bumpy, np.arange(2), 3, LEVELS, seed=11, progress=lambda i, v: calls.append((i, v)),
            **kwargs)
    assert [i for i, _ in calls] == [0, 1, 2]
    assert [v for _, v in calls] == a.trace
    b = cem(bumpy, np.arange(2), 3, LEVELS, seed=11, **kwargs)
    np.testing.assert_array_equal(a.plans, b.plans)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.trace == b.trace
    assert [[(str(p), v) for p, v in r] for r in a.ranked] == \
        [[(str(p), v) for p, v in r] for r in b.ranked]
    others = [cem(bumpy, np.arange(2), 3, LEVELS, seed=s, **kwargs) for s in (12, 13, 14)]
    assert any(not np.array_equal(o.plans, a.plans) for o in others)


def test_beam_finds_the_best_menu_sequence() -> None:
    seqs = np.array([[2, 0, 1], [0, 2, 2], [1, 1, 0]])
    target = MENU[seqs]  # (P, H, R): the optimum is a menu sequence
    score = Quadratic(target)
    patients = np.arange(3)
    seen: list[int] = []
    result = beam(score, patients, 3, MENU, width=9, top_k=4,
                  progress=lambda depth, v: seen.append(depth))
    np.testing.assert_array_equal(result.plans, target)
    np.testing.assert_array_equal(result.values, 0.0)
    assert result.evaluations == 3 + 9 + 27 == score.scored
    assert seen == [0, 1, 2] and len(result.trace) == 3
    _check_ranked(result, score, patients, 3, 4)
    # A narrower beam scores fewer plans: 3, then width * 3 per depth.
    narrow = beam(Quadratic(target), patients, 3, MENU, width=2)
    assert narrow.evaluations == 3 + 6 + 6


def test_beam_seeds_are_scored_and_kept() -> None:
    target = _targets(2, 3, seed=4)  # not reachable from the menu
    score = Quadratic(target)
    result = beam(score, np.arange(2), 3, MENU, width=1, seeds=target[:, None])
    np.testing.assert_array_equal(result.plans, target)
    np.testing.assert_array_equal(result.values, 0.0)
    assert result.evaluations == 1 + 3 * 3 == score.scored


def test_exhaustive_finds_the_best_two_phase_plan() -> None:
    # Patient 0: menu[2] x3 -> menu[0]; patient 1: menu[1] x1 -> menu[2].
    target = np.stack([np.concatenate([np.repeat(MENU[[2]], 3, 0), MENU[[0]]]),
                       np.concatenate([MENU[[1]], np.repeat(MENU[[2]], 3, 0)])])
    patients = np.arange(2)
    score = Quadratic(target)
    result = exhaustive(score, patients, 4, MENU, switch_cycles=[1, 3], top_k=5)
    np.testing.assert_array_equal(result.plans, target)
    np.testing.assert_array_equal(result.values, 0.0)
    assert result.evaluations == 3 + 3 * 2 * 2 == score.scored
    _check_ranked(result, score, patients, 4, 5)
    assert [str(p) for p, _ in result.ranked[1][:1]] == [str(RegimenPlan.from_cycle_doses(
        target[1]))]
    # The default switch points (2 below a horizon of 4) miss both plans.
    default = exhaustive(Quadratic(target), patients, 4, MENU)
    assert default.evaluations == 3 + 3 * 2 * 1
    assert (default.values < 0).all()


def test_ranked_holds_top_k_distinct_plans_despite_duplicates() -> None:
    # The seed repeats the best menu plan: the ranking still holds top_k distinct plans.
    target = np.repeat(MENU[[2]], 4, 0)[None]
    seeds = target[:, None]
    result = exhaustive(Quadratic(target), np.arange(1), 4, MENU, seeds=seeds, top_k=5)
    assert result.evaluations == 1 + 9
    assert len(result.ranked[0]) == 5
    doses = [p.cycle_doses(4).tobytes() for p, _ in result.ranked[0]]
    assert len(set(doses)) == 5


@pytest.mark.parametrize("call, field", [
    (lambda s, p: cem(s, p, 2, LEVELS, population=1), "population"),
    (lambda s, p: cem(s, p, 2, LEVELS, iterations=0), "iterations"),
    (lambda s, p: cem(s, p, 2, LEVELS, elite_fraction=0.0), "elite_fraction"),
    (lambda s, p: cem(s, p, 2, LEVELS, smoothing=1.0), "smoothing"),
    (lambda s, p: cem(s, p, 0, LEVELS), "horizon"),
    (lambda s, p: cem(s, p, 2, LEVELS, seeds=np.zeros((2, 1, 3, R))), "seeds"),
    (lambda s, p: cem(s, p, 2, LEVELS, seeds=np.zeros((2, 2, R))), "seeds"),
    (lambda s, p: beam(s, p, 2, MENU, width=0), "width"),
    (lambda s, p: beam(s, p, 2, MENU, seeds=np.zeros((3, 1, 2, R))), "seeds"),
    (lambda s, p: exhaustive(s, p, 4, MENU, switch_cycles=[0]), "switch_cycles"),
    (lambda s, p: exhaustive(s, p, 4, MENU, switch_cycles=[2, 4]), "switch_cycles"),
])
def test_search_argument_errors(call, field) -> None:
    score = Quadratic(_targets(2, 4))
    with pytest.raises(ValueError, match=field):
        call(score, np.arange(2))
    assert score.batches == []  # nothing was scored


# --------------------------------------------------------------------------------------
# 2. EngineScorer in ImmuneSim and the world model
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    from immunegym.world_model import load

    return load()


@pytest.fixture(scope="module")
def scenario():
    from immunegym.planning.evaluate import leaderboard_scenario

    return leaderboard_scenario(horizon=3, n_patients=8)


@pytest.fixture(scope="module")
def sim_bank(scenario):
    from immunegym.env.patients import PatientBank

    return PatientBank.from_sim(scenario.cancer_types, scenario.bank_size,
                                seed=scenario.bank_seed)


def _plans(n: int, horizon: int) -> np.ndarray:
    """No therapy, full-dose anti-PD-1 + anti-CTLA-4, anti-PD-1 at half dose."""
    plans = np.zeros((n, 3, horizon, R), dtype=np.float32)
    plans[:, 1, :, PD1] = plans[:, 1, :, CTLA4] = 1.0
    plans[:, 2, :, PD1] = 0.5
    return plans


def test_engine_scorer_sim(scenario, sim_bank) -> None:
    from immunegym.planning.scoring import EngineScorer

    scorer = EngineScorer("sim", scenario, sim_bank)
    assert scorer.n_samples == 2
    rows = np.arange(8)
    plans = _plans(8, 3)
    values = scorer(rows, plans)
    assert values.shape == (8, 3) and np.isfinite(values).all()
    assert scorer.simulated > 0
    # Common random numbers: the same call gives the same values.
    np.testing.assert_array_equal(scorer(rows, plans), values)
    # The therapy matters: no therapy and full-dose combination score differently.
    assert (values[:, 0] != values[:, 1]).all()
    # A subset of patients in another order: (P, C) in that order.
    assert scorer(rows[[5, 2]], plans[:2]).shape == (2, 3)
    with pytest.raises(ValueError, match="plans"):
        scorer(rows, np.zeros((8, 1, 4, R), dtype=np.float32))
    with pytest.raises(ValueError, match="n_samples"):
        EngineScorer("sim", scenario, sim_bank, n_samples=0)


def test_engine_scorer_world(scenario, sim_bank, model) -> None:
    from immunegym.planning.scoring import EngineScorer

    scorer = EngineScorer("world", scenario, sim_bank, model=model)
    assert scorer.n_samples == len(model.members)
    plans = _plans(8, 3)
    values = scorer(np.arange(8), plans)
    assert values.shape == (8, 3) and np.isfinite(values).all()
    np.testing.assert_array_equal(scorer(np.arange(8), plans), values)
    assert EngineScorer("world", scenario, sim_bank, model=model, n_samples=5).n_samples == 5


# --------------------------------------------------------------------------------------
# 3. evaluate_policy
# --------------------------------------------------------------------------------------


def _rerun(policy, simulator: str, scenario, n: int, seed: int, model=None):
    """The evaluation loop by hand: returns, given doses and whether actions were allowed."""
    from immunegym.planning.evaluate import episode_start, make_env

    env = make_env(simulator, scenario, n, model=model)
    obs, infos = env.reset(seed=seed, options={"patient": np.arange(n)})
    policy.start(episode_start(env, obs, infos))
    total = np.zeros(n)
    done = np.zeros(n, dtype=bool)
    allowed = True
    for _ in range(scenario.horizon):
        actions = policy.act(obs, infos)
        mask = infos["action_mask"]
        picked = np.take_along_axis(mask, actions[..., None], -1)[..., 0]
        allowed &= bool(picked[~done].all())
        obs, reward, terminated, truncated, infos = env.step(actions)
        total[~done] += reward[~done]
        done |= terminated | truncated
        if done.all():
            break
    env.close()
    return total, allowed


def _check_evaluation(ev, n: int, horizon: int) -> None:
    from immunegym.sim.outcomes import RESPONSE_CODES

    for name in ("patient_id", "cancer_type", "returns", "best_response", "irae", "cost",
                 "pfs_cycles", "pfs_event", "died"):
        assert getattr(ev, name).shape == (n,), name
    assert ev.given.shape == (n, horizon, R)
    assert ((ev.given >= 0) & (ev.given <= max(LEVELS))).all()
    # The protocol reduces chemotherapy and targeted therapy and may stop a course midway;
    # antibodies are one dose a cycle, never reduced: a level or nothing.
    assert np.isin(ev.given[..., [PD1, CTLA4]], LEVELS).all()
    assert ((ev.pfs_cycles >= 1) & (ev.pfs_cycles <= horizon)).all()
    assert (ev.pfs_cycles[~ev.pfs_event] == horizon).all()  # censored at the end
    assert not (ev.died & ~ev.pfs_event).any()  # death is a PFS event
    assert set(ev.best_response) <= set(RESPONSE_CODES)
    assert (ev.cost >= ev.irae).all()  # an irAE is a grade >= 3 adverse event


def _first_cycle_as_planned(given: np.ndarray, plans: np.ndarray) -> None:
    """The first cycle gives the plan (nothing is held yet), but for what the protocol
    does within the cycle: chemotherapy waits for neutrophils, targeted therapy is held
    after its own grade >= 3 event, a patient unfit for treatment stops everything."""
    np.testing.assert_array_equal(given[..., [PD1, CTLA4]], plans[..., [PD1, CTLA4]])
    assert (given <= plans + 1e-6).all()
    # Radiotherapy and targeted therapy start on day 0 whatever happens later.
    np.testing.assert_array_equal(given[..., [RADIO, TARGETED]] > 0,
                                  plans[..., [RADIO, TARGETED]] > 0)


def test_evaluate_standard_of_care_in_sim(scenario) -> None:
    from agents.standard_of_care import StandardOfCare
    from immunegym.planning.evaluate import evaluate_policy

    policy = StandardOfCare()
    ev = evaluate_policy(policy, "sim", scenario, n_patients=8, seed=3)
    assert ev.policy == "standard_of_care" and ev.simulator == "sim"
    _check_evaluation(ev, 8, 3)
    np.testing.assert_array_equal(ev.patient_id, [f"sim-{scenario.bank_seed}-{i}"
                                                  for i in range(8)])
    _first_cycle_as_planned(ev.given[:, 0], policy.plans[:, 0])
    total, _ = _rerun(StandardOfCare(), "sim", scenario, 8, 3)
    np.testing.assert_allclose(ev.returns, total)
    s = ev.summary()
    assert set(s) == {"n_patients", "return", "return_ci95", "orr", "orr_ci95", "irae",
                      "irae_ci95", "adverse_events_per_patient", "pfs_median_cycles",
                      "pfs_median_ci95", "death_rate", "death_rate_ci95", "ae3", "ae3_ci95",
                      "os_1y", "os_1y_ci95", "discontinuation", "discontinuation_ci95",
                      "deaths", "deaths_ci95"}
    assert s["n_patients"] == 8
    for key in ("return", "orr", "irae"):
        lo, hi = s[f"{key}_ci95"]
        assert lo <= s[key] <= hi
    assert s["return"] == pytest.approx(ev.returns.mean())
    assert s["orr"] == pytest.approx(ev.responder.mean())
    json.dumps(s, allow_nan=False)


def test_evaluate_random_in_world(scenario, model) -> None:
    from agents.random import RandomAgent
    from immunegym.planning.evaluate import evaluate_policy

    ev = evaluate_policy(RandomAgent(1), "world", scenario, n_patients=8, model=model, seed=2)
    _check_evaluation(ev, 8, 3)
    total, allowed = _rerun(RandomAgent(1), "world", scenario, 8, 2, model=model)
    np.testing.assert_allclose(ev.returns, total)
    assert allowed, "the random agent picked a level the action mask forbids"
    with pytest.raises(ValueError, match="n_patients"):
        evaluate_policy(RandomAgent(), "sim", scenario, n_patients=9)
    with pytest.raises(ValueError, match="n_patients"):
        evaluate_policy(RandomAgent(), "sim", scenario, n_patients=0)
    with pytest.raises(ValueError, match="simulator"):
        evaluate_policy(RandomAgent(), "real", scenario, n_patients=2)


def test_env_withholds_what_its_rules_forbid(scenario) -> None:
    from immunegym.env.clinical import MAX_COURSES
    from immunegym.planning.evaluate import evaluate_policy
    from immunegym.planning.policy import PlanFollower

    class Everything(PlanFollower):
        name = "everything"

        def make_plans(self, episodes):
            return np.ones((len(episodes.patient_id), episodes.scenario.horizon, R),
                           dtype=np.float32)

    long = scenario.updated(horizon=6)
    ev = evaluate_policy(Everything(), "sim", long, n_patients=8, seed=0)
    _check_evaluation(ev, 8, 6)
    courses = (ev.given > 0).sum(1)
    for therapy, cap in MAX_COURSES.items():
        assert (courses[:, THERAPIES.index(therapy)] <= cap).all(), therapy
    assert (ev.given[:, 2:, RADIO] == 0).all() and (ev.given[:, 4:, CTLA4] == 0).all()
    # Episodes went on past the radiotherapy cap, so the rule was exercised.
    assert (ev.given[:, 2:].sum((1, 2)) > 0).any()


# --------------------------------------------------------------------------------------
# 4. Planner agents
# --------------------------------------------------------------------------------------


def _start(simulator: str, scenario, n: int, model=None, seed: int = 0):
    from immunegym.planning.evaluate import episode_start, make_env

    env = make_env(simulator, scenario, n, model=model)
    obs, infos = env.reset(seed=seed, options={"patient": np.arange(n)})
    start = episode_start(env, obs, infos)
    env.close()
    return start


def test_cem_planner_plans_once_per_baseline(scenario, model, monkeypatch) -> None:
    import dataclasses

    import agents.cem as cem_agent
    from immunegym.planning.evaluate import evaluate_policy

    searches = []

    def counted(*args, **kwargs):
        searches.append(kwargs)
        return cem(*args, **kwargs)

    monkeypatch.setattr(cem_agent, "cem", counted)
    planner = cem_agent.CEMPlanner("world", model=model, population=4, iterations=1)
    start = _start("world", scenario, 8, model=model)
    planner.start(start)
    assert planner.name == "cem" and len(searches) == 1
    assert planner.plans.shape == (8, 3, R) and np.isin(planner.plans, LEVELS).all()
    assert planner.result.evaluations == 4
    first = planner.result
    planner.start(start)
    assert len(searches) == 1 and planner.result is first
    # Judging in both simulators reuses the plan (the baselines coincide).
    for simulator in ("world", "sim"):
        ev = evaluate_policy(planner, simulator, scenario, n_patients=8, model=model)
        _first_cycle_as_planned(ev.given[:, 0], first.plans[:, 0])
    assert len(searches) == 1 and planner.result is first
    # Another baseline is planned again.
    planner.start(dataclasses.replace(start, sod_mm=start.sod_mm * 1.5))
    assert len(searches) == 2 and planner.result is not first


def test_oracle_plans_with_the_true_patients(scenario, monkeypatch) -> None:
    import dataclasses

    import agents.cem as cem_agent

    seen = []

    def spy(episodes, simulator, **kwargs):
        out = real(episodes, simulator, **kwargs)
        seen.append((episodes, simulator, *out))
        return out

    real = cem_agent.scorer_for
    monkeypatch.setattr(cem_agent, "scorer_for", spy)
    start = _start("sim", scenario, 8)
    order = np.array([6, 1, 7, 0])
    subset = dataclasses.replace(
        start, cancer_type=start.cancer_type[order], patient_id=start.patient_id[order],
        composition=start.composition[order], sod_mm=start.sod_mm[order])
    oracle = cem_agent.CEMPlanner("sim", population=4, iterations=1)
    oracle.start(subset)
    assert oracle.name == "cem_oracle" and oracle.plans.shape == (4, 3, R)
    (episodes, simulator, scorer, rows), = seen
    assert simulator == "sim" and scorer.simulator == "sim"
    assert scorer.bank.has_hidden_state and len(scorer.bank) == scenario.bank_size
    np.testing.assert_array_equal(rows, order)
    np.testing.assert_array_equal(scorer.bank.patient_id[rows], subset.patient_id)
    np.testing.assert_array_equal(scorer.bank.cancer_type[rows], subset.cancer_type)
    with pytest.raises(ValueError, match="simulator"):
        real(subset, "nope")


# --------------------------------------------------------------------------------------
# 5. Leaderboard
# --------------------------------------------------------------------------------------

TINY = {"n_patients": 6, "horizon": 2, "cem_population": 4, "cem_iterations": 1,
        "beam_width": 1, "ppo_timesteps": 0, "rllib_iterations": 0}


@pytest.fixture(scope="module")
def board(model):
    from immunegym.benchmarks.planners import LeaderboardConfig, run_leaderboard

    logs: list[str] = []
    result = run_leaderboard(LeaderboardConfig(**TINY), model=model, log=logs.append)
    return result, logs


def _check_entry(entry: dict) -> None:
    for key in CONTRACT:
        assert isinstance(entry[key], float) and np.isfinite(entry[key]), key
    assert 0 <= entry["orr_sim"] <= 1 and 0 <= entry["irae_sim"] <= 1
    assert entry["sim_to_real_gap"] == pytest.approx(entry["return_world"] - entry["return_sim"])
    assert entry["sim"]["n_patients"] == 6 and entry["world"]["n_patients"] == 6


def test_leaderboard_result(board, model) -> None:
    from agents.standard_of_care import StandardOfCare
    from immunegym.planning.evaluate import evaluate_policy, leaderboard_scenario

    board, logs = board
    assert set(board) == {"agents", "oracle", "aims", "definitions", "config"}
    assert list(board["agents"]) == ["random", "standard_of_care", "cem", "cem_k0", "beam",
                                     "mpc"]
    for entry in [*board["agents"].values(), board["oracle"]]:
        _check_entry(entry)
    assert len(logs) == 7 and logs[-1].startswith("oracle:")
    cfg = board["config"]
    assert {k: cfg[k] for k in TINY} == TINY
    assert cfg["scenario"]["bank_size"] == 6 and cfg["scenario"]["horizon"] == 2
    json.dumps(board, allow_nan=False)
    # The same patients as evaluate_policy on the leaderboard scenario.
    ev = evaluate_policy(StandardOfCare(), "sim",
                         leaderboard_scenario(horizon=2, n_patients=6), seed=0)
    assert board["agents"]["standard_of_care"]["return_sim"] == pytest.approx(ev.returns.mean())
    # The aims follow from the entries.
    agents, oracle, a = board["agents"], board["oracle"], board["aims"]
    soc = agents["standard_of_care"]["return_sim"]
    gain, cem_gain = oracle["return_sim"] - soc, agents["cem"]["return_sim"] - soc
    assert a["cem_minus_standard_of_care"] == pytest.approx(cem_gain)
    assert a["oracle_minus_standard_of_care"] == pytest.approx(gain)
    assert a["cem_beats_standard_of_care"] == (cem_gain > 0)
    assert a["cem_reaches_90pct_of_oracle"] == bool(gain > 0 and cem_gain >= 0.9 * gain)
    if gain > 0:
        assert a["cem_share_of_oracle_gain"] == pytest.approx(cem_gain / gain)
    else:
        assert a["cem_share_of_oracle_gain"] is None


def test_aims_rules() -> None:
    from immunegym.benchmarks.planners import aims

    agents = {"standard_of_care": {"return_sim": 1.0}, "cem": {"return_sim": 1.95},
              "random": {"return_sim": -1.0}, "sb3_ppo": {"return_sim": -2.0}}
    a = aims(agents, {"return_sim": 2.0})
    assert a["cem_share_of_oracle_gain"] == pytest.approx(0.95)
    assert a["cem_reaches_90pct_of_oracle"] is True and a["cem_beats_standard_of_care"]
    assert a["sb3_ppo_minus_random"] == pytest.approx(-1.0) and not a["sb3_ppo_beats_random"]
    assert "rllib_ppo_minus_random" not in a
    low = aims(agents, {"return_sim": 0.5})  # the oracle below standard of care
    assert low["cem_share_of_oracle_gain"] is None
    assert low["cem_reaches_90pct_of_oracle"] is False
    assert aims({"random": {"return_sim": 0.0}}, {"return_sim": 1.0}) == {}


def test_markdown_table_and_plot(board, tmp_path) -> None:
    from immunegym.benchmarks.planners import markdown_table, plot_leaderboard

    board, _ = board
    lines = markdown_table(board).strip().splitlines()
    assert len(lines) == 2 + len(board["agents"]) + 1
    assert lines[0].startswith("| agent |") and set(lines[1]) <= set("|-")
    names = [line.split("|")[1].strip() for line in lines[2:]]
    assert names == [*board["agents"], "oracle (CEM in ImmuneSim)"]
    assert f"{board['oracle']['return_sim']:.2f}" in lines[-1]
    path = plot_leaderboard(board, tmp_path / "sub" / "board.png")
    assert path == tmp_path / "sub" / "board.png"
    assert path.read_bytes()[:8] == PNG


def test_leaderboard_only(model) -> None:
    from immunegym.benchmarks.planners import LeaderboardConfig, run_leaderboard

    cfg = LeaderboardConfig(**TINY)
    with pytest.raises(ValueError, match="nope"):
        run_leaderboard(cfg, model=model, only=["nope"], log=lambda _: None)
    out = run_leaderboard(cfg, model=model, only=["random"], log=lambda _: None)
    assert list(out["agents"]) == ["random"] and out["aims"] == {}
    _check_entry(out["oracle"])


# --------------------------------------------------------------------------------------
# 6. CLI
# --------------------------------------------------------------------------------------

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def cohort():
    from immunegym.sim.cohort import make_cohort

    return make_cohort("melanoma", ("anti_pd1",), n_patients=3, seed=7, horizon_days=120,
                       name="pl")


@pytest.fixture(scope="module")
def cohort_path(cohort, tmp_path_factory):
    path = tmp_path_factory.mktemp("cohort") / "pl.h5ad"
    cohort.write_h5ad(path)
    return path


def test_cli_bench_planners(tmp_path) -> None:
    from immunegym.cli import app

    out, js = tmp_path / "board", tmp_path / "board.json"
    args = ["bench", "planners", "--n-patients", "6", "--horizon", "2", "--ppo-timesteps", "0",
            "--rllib-iterations", "0", "--cem-population", "4", "--cem-iterations", "1",
            "--beam-width", "1", "--agent", "random", "--agent", "standard_of_care",
            "--agent", "cem", "--json", str(js), "--out", str(out)]
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    data = json.loads(js.read_text())
    assert list(data["agents"]) == ["random", "standard_of_care", "cem"]
    for entry in [*data["agents"].values(), data["oracle"]]:
        assert all(isinstance(entry[k], float) for k in CONTRACT)
    assert data["config"]["cem_population"] == 4 and data["config"]["n_patients"] == 6
    assert "cem_minus_standard_of_care" in data["aims"]
    assert data["command"] == "immunegym bench planners"
    md = (out / "leaderboard.md").read_text()
    assert md.startswith("# Planner leaderboard") and md.count("\n| ") == 5
    assert (out / "leaderboard.png").read_bytes()[:8] == PNG
    bad = runner.invoke(app, ["bench", "planners", "--n-patients", "2", "--horizon", "1",
                              "--agent", "nope"], env=WIDE)
    assert bad.exit_code != 0 and "nope" in bad.output  # the CLI names the bad agent


def test_cli_plan(cohort_path, tmp_path) -> None:
    from immunegym.cli import app

    out, js = tmp_path / "out", tmp_path / "plan.json"
    args = ["plan", "--cohort", str(cohort_path), "--patient", "pl-P000", "--budget", "8",
            "--method", "cem", "--horizon", "2", "--samples", "6", "--out", str(out),
            "--json", str(js)]
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    assert "pl-P000 (melanoma)" in result.output and "predicted return" in result.output
    assert (out / "counterfactual_tree_pl-P000.png").read_bytes()[:8] == PNG
    data = json.loads(js.read_text())
    assert data["patient"] == "pl-P000" and data["method"] == "cem" and data["budget"] == 8
    ranked = data["ranked"]
    assert 1 <= len(ranked) <= 3
    values = [r["predicted_return"] for r in ranked]
    assert values == sorted(values, reverse=True)
    cf = data["counterfactual"]
    assert cf["patient_id"] == "pl-P000"
    # The searched regimens, the guideline and no therapy are all simulated.
    assert {r["regimen"] for r in ranked} <= set(cf["regimens"]) and "none" in cf["regimens"]
    for regimen in cf["regimens"]:
        assert regimen in result.output
    for value in values:  # the table shows each searched regimen's predicted return
        assert f"{value:.2f}" in result.output


def test_cli_plan_errors(cohort_path, tmp_path) -> None:
    from immunegym.cli import app

    base = ["plan", "--budget", "4", "--horizon", "1", "--samples", "2", "--out",
            str(tmp_path)]
    result = runner.invoke(app, [*base, "--cohort", str(cohort_path), "--patient", "pl-P999"],
                           env=WIDE)
    assert result.exit_code != 0 and "pl-P999" in result.output
    result = runner.invoke(app, [*base, "--cohort", str(tmp_path / "missing.h5ad"),
                                 "--patient", "pl-P000"], env=WIDE)
    assert result.exit_code != 0 and "missing.h5ad" in result.output
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------
# 7. search() over a cohort
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method, evaluations", [("cem", 8), ("beam", 1 + 2 * 10),
                                                 ("exhaustive", 1 + 10)])
def test_search_cohort(cohort, model, method, evaluations) -> None:
    ids = ["pl-P002", "pl-P000"]
    result = search(cohort, 8, patients=ids, method=method, horizon=2, model=model)
    assert list(result.patient_id) == ids
    assert result.plans.shape == (2, 2, R) and np.isin(result.plans, LEVELS).all()
    assert result.evaluations == evaluations
    table = result.table()
    assert list(table.columns) == ["patient_id", "rank", "regimen", "predicted_return"]
    assert len(table) == sum(len(r) for r in result.ranked)
    for pid, (plan, value) in zip(ids, [r[0] for r in result.ranked], strict=True):
        rows = table[table.patient_id == pid]
        assert list(rows["rank"]) == list(range(1, len(rows) + 1))
        assert rows["predicted_return"].is_monotonic_decreasing
        assert rows.iloc[0]["regimen"] == str(plan) and rows.iloc[0]["predicted_return"] == value


def test_search_path_defaults_and_errors(cohort, cohort_path, model) -> None:
    a = search(cohort, 8, method="cem", horizon=2, model=model, seed=1)
    assert list(a.patient_id) == ["pl-P000", "pl-P001", "pl-P002"]
    b = search(str(cohort_path), 8, method="cem", horizon=2, model=model, seed=1)
    np.testing.assert_array_equal(a.plans, b.plans)
    np.testing.assert_array_equal(a.values, b.values)
    with pytest.raises(ValueError, match="method"):
        search(cohort, 8, method="greedy", model=model)
    for budget in (1, 8.0, True):
        with pytest.raises(ValueError, match="budget"):
            search(cohort, budget, model=model)
    with pytest.raises(ValueError, match="pl-P999"):
        search(cohort, 8, patients=["pl-P999"], horizon=1, model=model)


def test_search_on_ray_matches_local_chunks(cohort, model) -> None:
    ray = pytest.importorskip("ray")
    kwargs = {"method": "cem", "horizon": 2, "model": model, "seed": 2}
    # Two tasks get patients [0, 1] and [2]: the same searches as run here chunk by chunk.
    local = [search(cohort, 8, patients=chunk, **kwargs)
             for chunk in (["pl-P000", "pl-P001"], ["pl-P002"])]
    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = search(cohort, 8, ray=True, num_tasks=2, **kwargs)
        assert ray.is_initialized()  # a cluster it did not start is left running
    finally:
        ray.shutdown()
    assert list(remote.patient_id) == ["pl-P000", "pl-P001", "pl-P002"]
    np.testing.assert_array_equal(remote.plans, np.concatenate([p.plans for p in local]))
    np.testing.assert_array_equal(remote.values, np.concatenate([p.values for p in local]))
    assert [[str(p) for p, _ in r] for r in remote.ranked] == \
        [[str(p) for p, _ in r] for part in local for r in part.ranked]
    assert remote.evaluations == local[0].evaluations
