"""The one-year planner leaderboard (issue 17): configuration and its checks, the agent
registry, the new per-patient metrics (OS at one year, grade >= 3 AEs, discontinuation,
treatment-related deaths) with their bootstrap CIs, planning speed, the aims block, the
markdown table and the Pareto plot, and the CLI's errors.

End-to-end runs use only agents that need no training (random, standard of care) and a tiny
oracle search; the registry is checked without importing the agents it names.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import numpy as np
import pytest
from typer.testing import CliRunner

from immunegym.benchmarks import planners
from immunegym.benchmarks.planners import (
    AGENTS,
    FULL,
    QUICK,
    LeaderboardConfig,
    check_config,
    check_only,
)
from immunegym.planning.evaluate import Evaluation, leaderboard_entry
from immunegym.validation import ValidationError

PNG = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """Tiny batches: intra-op threads only add contention on a busy 2-core machine."""


# --------------------------------------------------------------------------- configuration
def test_both_sizes_follow_patients_for_a_year_with_rllib_on():
    for cfg in (QUICK, FULL):
        assert cfg.horizon == 17 == planners.ONE_YEAR_CYCLES
        assert cfg.rllib_iterations > 0 and cfg.ppo_timesteps > 0
        assert cfg.pessimism == 1.0 and cfg.cost_target == pytest.approx(0.6)
        assert check_config(cfg) is cfg
    assert FULL.replan_every == 1 and QUICK.replan_every >= 1
    assert QUICK.n_patients < FULL.n_patients
    assert set(planners.SWITCHES) <= set(AGENTS)
    assert {"mpc", "ppo_lagrangian", "cem_k0", "rllib_ppo"} <= set(AGENTS)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("replan_every", 0, "an integer in 1..100"),
    ("replan_every", 1.5, "an integer"),
    ("pessimism", -0.5, "[0, 100]"),
    ("pessimism", float("nan"), "finite"),
    ("pessimism", "high", "finite number"),
    ("cost_target", -1.0, "[0, 1000]"),
    ("cost_target", float("inf"), "finite"),
])
def test_check_config_names_the_field_value_and_expectation(field, value, expected):
    cfg = dataclasses.replace(QUICK, **{field: value})
    with pytest.raises(ValidationError) as err:
        check_config(cfg)
    assert f"cfg.{field}: got" in str(err.value) and expected in str(err.value)
    with pytest.raises(ValidationError, match="--" + field.replace("_", "-") + ": got"):
        check_config(cfg, option_names=True)


def test_check_config_wants_a_config():
    with pytest.raises(ValidationError, match="cfg: got .*expected a LeaderboardConfig"):
        check_config(dataclasses.asdict(QUICK))  # type: ignore[arg-type]


def test_check_only_refuses_unknown_and_switched_off_agents():
    check_only(QUICK, None)
    check_only(QUICK, list(AGENTS))
    with pytest.raises(ValidationError, match=r"only: got 'nonsense'; expected one of"):
        check_only(QUICK, ["nonsense"])
    with pytest.raises(ValidationError, match=r"--agent: got 'mcp'.*did you mean 'mpc'"):
        check_only(QUICK, ["mcp"], field="--agent")
    off = [("cem_k0", {"pessimism": 0.0}, "pessimism is 0"),
           ("ppo_lagrangian", {"ppo_timesteps": 0}, "ppo_timesteps is 0"),
           ("rllib_ppo", {"rllib_iterations": 0}, "rllib_iterations is 0")]
    for agent, change, why in off:
        with pytest.raises(ValidationError, match=why):
            check_only(dataclasses.replace(QUICK, **change), [agent])
    with pytest.raises(ValidationError, match="only: got 'random'; expected a list"):
        check_only(QUICK, "random")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the registry
def test_registry_names_every_agent_and_switches_them_off():
    assert list(planners._agents(FULL, None, "cpu")) == list(AGENTS)
    lean = dataclasses.replace(FULL, pessimism=0.0, ppo_timesteps=0, rllib_iterations=0,
                               beam_width=0)
    assert list(planners._agents(lean, None, "cpu")) == ["random", "standard_of_care", "cem",
                                                         "mpc"]


def test_registry_builds_mpc_lagrangian_and_cem_k0_with_the_config(monkeypatch):
    """The factories pass the config's settings (fake modules: no search, no training)."""
    import agents

    seen: dict[str, dict] = {}

    def recorder(name):
        def make(*args, **kwargs):
            seen[name] = {"args": args, **kwargs}
            return name
        return make

    mpc = types.ModuleType("agents.mpc")
    mpc.MPCPlanner = recorder("mpc")
    cem = types.ModuleType("agents.cem")
    cem.CEMPlanner = recorder("cem")
    beam = types.ModuleType("agents.beam")
    beam.TreePlanner = recorder("beam")
    lag = types.ModuleType("agents.ppo_lagrangian")
    lag.Args = recorder("lagrangian_args")
    lag.train = lambda args: ("trained", args)
    lag.LagrangianPolicy = recorder("lagrangian")
    for name, module in (("mpc", mpc), ("cem", cem), ("beam", beam), ("ppo_lagrangian", lag)):
        monkeypatch.setitem(sys.modules, f"agents.{name}", module)
        monkeypatch.setattr(agents, name, module, raising=False)
    cfg = LeaderboardConfig(n_patients=3, horizon=17, cem_population=5, cem_iterations=2,
                            beam_width=3, ppo_timesteps=7, replan_every=2, pessimism=1.5,
                            cost_target=0.25, seed=4)
    factories = planners._agents(cfg, "MODEL", "cpu")
    factories["mpc"]()
    assert seen["mpc"] == {"args": ("world",), "model": "MODEL", "population": 5,
                           "iterations": 2, "replan_every": 2, "pessimism": 1.5, "seed": 4,
                           "device": "cpu"}
    factories["cem"]()
    assert seen["cem"]["pessimism"] == 1.5 and seen["cem"]["population"] == 5
    factories["cem_k0"]()
    assert seen["cem"]["pessimism"] == 0.0
    factories["beam"]()
    assert seen["beam"]["pessimism"] == 1.5 and seen["beam"]["width"] == 3
    factories["ppo_lagrangian"]()
    args = seen["lagrangian_args"]
    assert args["cost_target"] == 0.25 and args["total_timesteps"] == 7
    assert args["seed"] == 4 and args["horizon"] == 17 and args["progress_bar"] is False


# --------------------------------------------------------------------------- the metrics
def _evaluation(horizon: int = 17, *, death_cycle: bool = True, known: bool = True,
                n: int = 40) -> Evaluation:
    """40 patients: 8 die (cycles 3..10 and one at 20 when followed that long), 3 of them
    of treatment; 10 discontinue; 15 have a grade >= 3 AE; 12 respond."""
    rng = np.random.default_rng(0)
    died = np.zeros(n, dtype=bool)
    died[:8] = True
    cycles = np.zeros(n, dtype=np.int64)
    cycles[:8] = [3, 4, 5, 6, 7, 8, 9, 10]
    if horizon >= 20:
        died[8], cycles[8] = True, 20  # after the first year
    treatment = np.zeros(n, dtype=bool)
    treatment[[0, 2, 4]] = True
    discontinued = np.zeros(n, dtype=bool)
    discontinued[5:15] = True
    cost = np.zeros(n)
    cost[10:25] = [1, 2, 1, 3, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 4]
    best = np.array(["PD"] * n, dtype=object)
    best[20:32] = "PR"
    return Evaluation(
        "hand", "sim", np.array([f"p{i}" for i in range(n)]), np.array(["melanoma"] * n),
        rng.normal(size=n), best, cost > 1, cost, np.full(n, horizon), died.copy(),
        died, np.zeros((n, horizon, 5), np.float32),
        death_cycle=cycles if death_cycle else None,
        treatment_death=treatment if known else None,
        discontinued=discontinued if known else None)


def test_new_metrics_on_a_hand_built_evaluation():
    ev = _evaluation()
    s = ev.summary()
    assert s["os_1y"] == pytest.approx(32 / 40)
    assert s["ae3"] == pytest.approx(15 / 40)
    assert s["discontinuation"] == pytest.approx(10 / 40)
    assert s["deaths"] == pytest.approx(3 / 40)  # treatment-related only
    assert s["death_rate"] == pytest.approx(8 / 40)  # every death
    assert s["orr"] == pytest.approx(12 / 40)
    for key in ("os_1y", "ae3", "discontinuation", "deaths", "death_rate", "orr"):
        lo, hi = s[f"{key}_ci95"]
        assert lo <= s[key] <= hi and lo < hi, key
    assert ev.summary() == s  # the bootstrap is seeded
    entry = leaderboard_entry({"sim": ev})
    assert entry["os_1y_sim"] == s["os_1y"] and entry["ae3_sim"] == s["ae3"]
    assert entry["discontinuation_sim"] == s["discontinuation"]
    assert entry["deaths_sim"] == s["deaths"] and entry["death_rate_sim"] == s["death_rate"]
    json.dumps(entry, allow_nan=False)


def test_one_year_survival_needs_a_year_of_follow_up():
    # Followed 20 cycles: the death at cycle 20 is after day 357, so alive at one year.
    longer = _evaluation(20)
    assert longer.died.sum() == 9
    assert longer.summary()["os_1y"] == pytest.approx(32 / 40)
    # Shorter than a year: unknown, as are its CI and the entry's key.
    short = _evaluation(16)
    assert short.alive_at_one_year() is None
    s = short.summary()
    assert s["os_1y"] is None and s["os_1y_ci95"] is None
    assert leaderboard_entry({"sim": short})["os_1y_sim"] is None
    # Without per-cycle deaths, a 17-cycle episode's deaths are the first year's.
    assert _evaluation(death_cycle=False).summary()["os_1y"] == pytest.approx(32 / 40)
    assert _evaluation(20, death_cycle=False).alive_at_one_year() is None
    # Longer cycles: a year is fewer of them.
    weekly = dataclasses.replace(_evaluation(), cycle_days=42)
    assert weekly.one_year_cycles == 8
    assert weekly.summary()["os_1y"] == pytest.approx(34 / 40)  # deaths at 3..8 only


def test_unknown_discontinuation_and_treatment_deaths_are_none():
    s = _evaluation(known=False).summary()
    assert s["discontinuation"] is None and s["discontinuation_ci95"] is None
    assert s["deaths"] is None and s["deaths_ci95"] is None


def test_evaluate_policy_records_deaths_discontinuation_and_adverse_events():
    from agents.random import RandomAgent
    from immunegym.planning.evaluate import evaluate_policy, leaderboard_scenario

    scenario = leaderboard_scenario(horizon=17, n_patients=32)
    ev = evaluate_policy(RandomAgent(0), "sim", scenario, seed=0)
    assert ev.cycle_days == 21 and ev.one_year_cycles == 17
    np.testing.assert_array_equal(ev.death_cycle > 0, ev.died)
    assert ((ev.death_cycle >= 0) & (ev.death_cycle <= 17)).all()
    assert not (ev.treatment_death & ~ev.died).any()
    assert ev.discontinued.dtype == bool and ev.discontinued.shape == (32,)
    # A dead patient's episode ends in the cycle of death.
    dead = ev.died
    np.testing.assert_array_equal(ev.pfs_cycles[dead], ev.death_cycle[dead])
    # Random dosing over a year stops some drug for toxicity in some patients.
    assert ev.discontinued.any() and ev.ae3.mean() > 0.3
    s = ev.summary()
    assert s["os_1y"] == pytest.approx(1 - ev.died.mean())
    assert s["ae3"] == pytest.approx((ev.cost > 0).mean())


# --------------------------------------------------------------------------- speed
def test_planning_speed_from_stats_or_the_search_result():
    from immunegym.planning.regimen_search import SearchResult

    plain = types.SimpleNamespace(name="x")
    assert planners.planning_speed(plain, 1.0) is None
    searched = types.SimpleNamespace(result=SearchResult(np.zeros((4, 2, 5)), np.zeros(4),
                                                         evaluations=50))
    speed = planners.planning_speed(searched, 2.0)
    assert speed["evaluations_per_second"] == pytest.approx(4 * 50 / 2.0)
    assert speed["evaluations_per_episode"] == 50 and speed["planning_seconds"] == 2.0
    assert planners.planning_speed(searched, 0.0)["evaluations_per_second"] is None

    class Stats:
        searches = 3

        def summary(self):
            return {"evaluations_per_second": 123.0, "replans_per_episode": 2.0,
                    "planning_seconds": 4.0, "evaluations_per_episode": 10.0}

    closed = types.SimpleNamespace(stats=Stats(), result=searched.result)
    assert planners.planning_speed(closed, 9.0)["evaluations_per_second"] == 123.0


# --------------------------------------------------------------------------- aims
def test_aims_judge_each_aim_with_its_value():
    from immunegym.benchmarks.planners import aims

    agents = {"random": {"return_sim": -1.5}, "standard_of_care": {"return_sim": -0.5},
              "sb3_ppo": {"return_sim": -0.2}, "ppo_lagrangian": {"return_sim": -1.0},
              "cem": {"return_sim": 0.0, "sim_to_real_gap": 0.6},
              "cem_k0": {"return_sim": -0.3, "sim_to_real_gap": 1.0},
              "mpc": {"return_sim": 0.45, "sim_to_real_gap": -0.15}}
    a = aims(agents, {"return_sim": 0.5})
    assert a["best_planner"] == "mpc" == a["chosen_planner"]
    assert a["best_planner_share_of_oracle_gain"] == pytest.approx(0.95)
    assert a["best_planner_reaches_90pct_of_oracle"] is True
    assert a["chosen_planner_sim_to_real_gap"] == pytest.approx(-0.15)
    assert a["chosen_planner_gap_within_tolerance"] is True
    assert a["sb3_ppo_beats_random"] and a["sb3_ppo_beats_standard_of_care"]
    assert a["ppo_lagrangian_beats_random"]
    assert a["ppo_lagrangian_minus_standard_of_care"] == pytest.approx(-0.5)
    assert a["ppo_lagrangian_beats_standard_of_care"] is False
    assert a["random_below_standard_of_care"] is True
    assert "rllib_ppo_beats_random" not in a
    # The issue-6 keys stay.
    assert a["cem_share_of_oracle_gain"] == pytest.approx(0.5)
    assert a["cem_reaches_90pct_of_oracle"] is False
    checks = {c["aim"].split(" (")[0]: c for c in a["checks"]}
    assert len(a["checks"]) == 7
    assert all(set(c) == {"aim", "value", "met"} for c in a["checks"])
    assert checks["ppo_lagrangian beats standard_of_care"]["met"] is False
    assert checks["random below standard of care"]["value"] == pytest.approx(-1.0)
    json.dumps(a, allow_nan=False)
    # A chosen planner with a wide gap, and an oracle below standard of care.
    agents["mpc"]["sim_to_real_gap"] = 0.3
    low = aims(agents, {"return_sim": -0.6})
    assert low["chosen_planner_gap_within_tolerance"] is False
    assert low["best_planner_share_of_oracle_gain"] is None
    assert low["best_planner_reaches_90pct_of_oracle"] is False
    assert aims({"random": {"return_sim": 0.0}}, {"return_sim": 1.0}) == {}


def test_pareto_front():
    from immunegym.benchmarks.planners import pareto_front

    efficacy = np.array([0.2, 0.5, 0.5, 0.4, 0.9])
    toxicity = np.array([0.1, 0.3, 0.4, 0.5, 0.8])
    assert pareto_front(efficacy, toxicity).tolist() == [True, True, False, False, True]


# --------------------------------------------------------------------------- end to end
TINY = LeaderboardConfig(n_patients=6, horizon=17, cem_population=4, cem_iterations=1,
                         beam_width=1, ppo_timesteps=0, rllib_iterations=0)


@pytest.fixture(scope="module")
def board():
    from immunegym.world_model import load

    logs: list[str] = []
    result = planners.run_leaderboard(TINY, model=load(), only=["random", "standard_of_care"],
                                      log=logs.append)
    return result, logs


def test_board_carries_the_new_metrics(board):
    result, logs = board
    assert set(result) == {"agents", "oracle", "aims", "definitions", "config"}
    assert list(result["agents"]) == ["random", "standard_of_care"]
    assert len(logs) == 3 and "OS 1 y" in logs[0]
    for entry in [*result["agents"].values(), result["oracle"]]:
        for key in ("os_1y", "ae3", "discontinuation", "deaths"):
            value, (lo, hi) = entry[f"{key}_sim"], entry["sim"][f"{key}_ci95"]
            assert 0 <= lo <= value <= hi <= 1, key
    oracle = result["oracle"]
    assert oracle["evaluations_per_second"] > 0 and oracle["planning"]["planning_seconds"] > 0
    assert "evaluations_per_second" not in result["agents"]["random"]
    assert result["config"]["horizon"] == 17 and result["config"]["pessimism"] == 1.0
    assert {"os_1y_sim", "discontinuation_sim", "deaths_sim"} <= set(result["definitions"])
    assert result["aims"]["random_minus_standard_of_care"] == pytest.approx(
        result["agents"]["random"]["return_sim"]
        - result["agents"]["standard_of_care"]["return_sim"])
    json.dumps(result, allow_nan=False)


def test_markdown_table_and_pareto_plot_are_written(board, tmp_path):
    from rich.console import Console

    result, _ = board
    table = planners.markdown_table(result).strip().splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    for column in ("AE >= 3", "OS 1 y", "discontinued", "treatment deaths", "plans/s"):
        assert column in header
    assert all(len(line.strip("|").split("|")) == len(header) for line in table)
    assert len(table) == 2 + 2 + 1
    oracle = result["oracle"]
    assert f"{oracle['os_1y_sim']:.0%} (" in table[-1]
    console = Console(file=open(tmp_path / "console.txt", "w"), width=200)  # noqa: SIM115
    planners.show_and_write(result, json_path=tmp_path / "lb.json", out=tmp_path / "lb",
                            console=console)
    console.file.close()
    assert "aim: random below standard of care" in (tmp_path / "console.txt").read_text()
    for name in ("leaderboard.png", "pareto.png"):
        assert (tmp_path / "lb" / name).read_bytes()[:8] == PNG
    assert "| OS 1 y |" in (tmp_path / "lb" / "leaderboard.md").read_text()
    assert json.loads((tmp_path / "lb.json").read_text())["agents"]["random"]["os_1y_sim"] \
        == result["agents"]["random"]["os_1y_sim"]
    # Shorter episodes: no OS panel, still a plot.
    short = json.loads(json.dumps(result))
    for entry in [*short["agents"].values(), short["oracle"]]:
        entry["os_1y_sim"] = None
    path = planners.plot_pareto(short, tmp_path / "short.png")
    assert path.read_bytes()[:8] == PNG


# --------------------------------------------------------------------------- the CLI
def _refused(args: list[str], *names: str) -> str:
    from immunegym.cli import app

    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    text = result.output.strip()
    assert result.exit_code == 1, text
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.mark.parametrize(("args", "names"), [
    (["--replan-every", "0"], ["--replan-every", "got 0", "1..100"]),
    (["--pessimism", "-1"], ["--pessimism", "got -1.0", "[0, 100]"]),
    (["--cost-target", "-0.5"], ["--cost-target", "got -0.5", "[0, 1000]"]),
    (["--only", "nonsense"], ["--only", "'nonsense'", "one of"]),
    (["--agent", "nonsense"], ["--agent", "'nonsense'"]),
    (["--only", "cem_k0", "--pessimism", "0"], ["--only", "pessimism is 0", "--pessimism"]),
    (["--only", "ppo_lagrangian", "--ppo-timesteps", "0"], ["ppo_timesteps is 0"]),
])
def test_cli_refuses_bad_options_before_running(monkeypatch, args, names):
    monkeypatch.setattr(planners, "run_leaderboard", lambda *a, **k: pytest.fail("ran"))
    _refused(["bench", "planners", "--quick", *args], *names)


def test_cli_passes_the_new_options(monkeypatch, tmp_path):
    from immunegym.cli import app

    seen = {}

    def fake(cfg, **kwargs):
        seen["cfg"], seen["only"] = cfg, kwargs["only"]
        return {"agents": {}, "oracle": {}, "aims": {}, "config": {}}

    monkeypatch.setattr(planners, "run_leaderboard", fake)
    monkeypatch.setattr(planners, "show_and_write", lambda *a, **k: None)
    result = runner.invoke(app, ["bench", "planners", "--quick", "--replan-every", "3",
                                 "--pessimism", "0.5", "--cost-target", "1.5", "--only", "mpc",
                                 "--only", "random"])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.replan_every, cfg.pessimism, cfg.cost_target) == (3, 0.5, 1.5)
    assert cfg.n_patients == QUICK.n_patients and seen["only"] == ["mpc", "random"]
