"""The planner leaderboard: every agent on the same held-out patients, judged in ImmuneSim.

Agents (``agents/``) are trained or plan in the world model (ImmuneWorld-v0) and are then run
on held-out virtual patients in ImmuneSim-v0, the ground truth, for one year (17 cycles of
3 weeks, all nine cancer types); the same patients are also run in ImmuneWorld-v0 so the
sim-to-real gap (return predicted in the world model minus return in ImmuneSim) shows how far
the model misleads each agent. The oracle is the CEM planner given ImmuneSim itself (true
patients, hidden state) as its model: the ceiling of the planner.

``immunegym bench planners [--quick] --json PATH [--out DIR]`` writes::

    {"agents": {"random": {...}, "standard_of_care": {...}, "sb3_ppo": {...},
                "rllib_ppo": {...}, "ppo_lagrangian": {...}, "cem": {...}, "cem_k0": {...},
                "beam": {...}, "mpc": {...}},
     "oracle": {...}, "aims": {...}, "definitions": {...}, "config": {...}}

each entry with ``return_world``, ``return_sim``, ``orr_sim``, ``irae_sim``, ``ae3_sim``,
``pfs_median_sim``, ``os_1y_sim``, ``discontinuation_sim``, ``deaths_sim``,
``sim_to_real_gap`` and more (:func:`~immunegym.planning.evaluate.leaderboard_entry`; every
95% bootstrap CI over patients under ``entry["sim"]["<metric>_ci95"]``, :data:`DEFINITIONS`
says what each metric counts), planners also with ``evaluations_per_second`` and
``planning``; with ``--out`` a markdown table, the leaderboard plot and an
efficacy-toxicity (Pareto) plot.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from immunegym import validation as v
from immunegym.planning.evaluate import (
    evaluate_policy,
    leaderboard_entry,
    leaderboard_scenario,
)

ONE_YEAR_CYCLES = 17
"""Cycles of 3 weeks in the leaderboard's year (day 357, the last whole cycle in 365 days)."""


@dataclass(frozen=True)
class LeaderboardConfig:
    """Sizes of one leaderboard run.

    Attributes
    ----------
    n_patients, horizon
        Held-out ImmuneSim patients and cycles per episode (17: one year).
    cem_population, cem_iterations
        CEM search size (the oracle, ``cem_k0`` and MPC use the same).
    beam_width
        Beam search width (0 leaves beam out).
    ppo_timesteps
        SB3 PPO and PPO-Lagrangian training steps in the world model (0 leaves both out).
    rllib_iterations
        RLlib PPO iterations of 4096 env steps (0 leaves it out).
    replan_every
        MPC plans the cycles left again every this many cycles (1: every cycle).
    pessimism
        The default risk aversion k of the world-model planners (CEM, beam, MPC): a plan
        scores its mean return over the ensemble members minus k times their standard
        deviation. ``cem_k0`` runs CEM with k = 0 beside it (0 here leaves it out, as it
        would repeat ``cem``). The oracle plans in ImmuneSim with k = 0.
    cost_target
        PPO-Lagrangian's budget of grade >= 3 adverse events per episode. The default, 0.6,
        is standard of care's: 0.625 events per patient over 17 cycles on 256 training
        patients (bank seed 0) in ImmuneSim, 0.54 in ImmuneWorld (measured 2026-12-02).
    seed
        Seed of the agents and the evaluation envs.
    """

    n_patients: int = 256
    horizon: int = ONE_YEAR_CYCLES
    cem_population: int = 64
    cem_iterations: int = 6
    beam_width: int = 4
    ppo_timesteps: int = 200_000
    rllib_iterations: int = 50
    replan_every: int = 1
    pessimism: float = 1.0
    cost_target: float = 0.6
    seed: int = 0


QUICK = LeaderboardConfig(n_patients=48, cem_population=24, cem_iterations=4, beam_width=2,
                          ppo_timesteps=20_000, rllib_iterations=5, replan_every=4)
"""About 5 minutes on 2 CPU cores: fewer patients, smaller searches, short training, MPC
replanning every 4 cycles."""

FULL = LeaderboardConfig()

AGENTS: tuple[str, ...] = ("random", "standard_of_care", "sb3_ppo", "rllib_ppo",
                           "ppo_lagrangian", "cem", "cem_k0", "beam", "mpc")
"""Every agent the leaderboard knows (the oracle always runs)."""
SWITCHES: dict[str, str] = {"sb3_ppo": "ppo_timesteps", "rllib_ppo": "rllib_iterations",
                            "ppo_lagrangian": "ppo_timesteps", "beam": "beam_width",
                            "cem_k0": "pessimism"}
"""Agents a size of 0 leaves out, and that size."""
PLANNERS: tuple[str, ...] = ("cem", "cem_k0", "beam", "mpc")
"""Agents that plan in the world model (the aims' "best planner" is one of them)."""
LEARNED: tuple[str, ...] = ("sb3_ppo", "rllib_ppo", "ppo_lagrangian")
"""Agents trained by PPO in the world model."""
# field -> (low, high): far above any documented run, so a typo is refused, not run for days.
_LIMITS: dict[str, tuple[int, int]] = {
    "n_patients": (1, 1_000_000), "cem_population": (1, 100_000),
    "cem_iterations": (1, 1_000), "beam_width": (0, 10_000),
    "ppo_timesteps": (0, 10_000_000_000), "rllib_iterations": (0, 1_000_000),
}
MAX_PESSIMISM = 100.0
"""Largest k accepted (k = 3 already ignores all but the most certain plans)."""
MAX_COST_TARGET = 1_000.0
"""Largest cost budget accepted (grade >= 3 events per episode)."""
SIM_BYTES_PER_PLAN = 8_000
"""Peak bytes of one simulated patient-plan (the oracle's CEM population per patient)."""

GAP_TOLERANCE = 0.2
"""The aim's bound on the chosen planner's sim-to-real gap (absolute, return units)."""
ORACLE_SHARE = 0.9
"""The aim's share of the oracle's gain over standard of care."""

DEFINITIONS: dict[str, str] = {
    "return_sim": "mean undiscounted episode return in ImmuneSim (LEADERBOARD_REWARD)",
    "orr_sim": "share of patients whose RECIST best overall response is PR or CR",
    "irae_sim": "share with a grade >= 3 immune-related adverse event",
    "ae3_sim": "share with any grade >= 3 adverse event (episode cost > 0)",
    "pfs_median_sim": "Kaplan-Meier median cycles to progression or death (None: not "
                      "reached)",
    "os_1y_sim": "share not dead by the end of cycle 17 (day 357), per-cycle deaths from "
                 "the env's info['died']; episodes end at RECIST progression, so a death "
                 "after progression within the year is not seen (counts as alive); None "
                 "when the horizon is shorter than 17 cycles",
    "discontinuation_sim": "share with a therapy stopped for toxicity by the episode's end "
                           "(the env's info['discontinued']: a protocol stop after an irAE "
                           "or exhausted dose reductions, or unfit from toxicity load)",
    "deaths_sim": "share with a treatment-related death (the env's "
                  "info['treatment_death']: fatal irAE, febrile neutropenia, toxicity "
                  "load); death_rate_sim counts deaths of any cause",
    "sim_to_real_gap": "return_world - return_sim on the same patients",
    "evaluations_per_second": "plans scored per second of search over the ImmuneSim run "
                              "(SearchResult.evaluations summed over patients and every "
                              "search, over the seconds those searches took)",
    "ci95": "95% bootstrap CI over patients, entry['sim']['<metric>_ci95']",
}
"""What each leaderboard metric counts (written into the JSON)."""


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_config(cfg: LeaderboardConfig, *, option_names: bool = False) -> LeaderboardConfig:
    """Refuse sizes a leaderboard run cannot use: ranges, seed and a memory estimate.

    Parameters
    ----------
    cfg
        The configuration to check.
    option_names
        Name fields as the CLI's options (``--n-patients``) in messages, not ``cfg.<field>``.

    Returns
    -------
    LeaderboardConfig
        ``cfg`` unchanged.

    Raises
    ------
    ValidationError
        Naming the field, its value and what is accepted.
    """
    from immunegym.env.scenario import MAX_HORIZON

    if not isinstance(cfg, LeaderboardConfig):
        raise v.bad("cfg", cfg, "a LeaderboardConfig (QUICK, FULL or your own)")
    name = _option if option_names else (lambda f: f"cfg.{f}")
    for key, (low, high) in _LIMITS.items():
        v.integer(name(key), getattr(cfg, key), low=low, high=high)
    v.integer(name("horizon"), cfg.horizon, low=1, high=MAX_HORIZON)
    v.integer(name("replan_every"), cfg.replan_every, low=1, high=MAX_HORIZON,
              hint="cycles between MPC's searches")
    v.number(name("pessimism"), cfg.pessimism, low=0.0, high=MAX_PESSIMISM)
    v.number(name("cost_target"), cfg.cost_target, low=0.0, high=MAX_COST_TARGET)
    v.seed(name("seed"), cfg.seed)
    # The oracle's CEM scores cem_population plans per patient at once in ImmuneSim.
    v.memory_budget(name("cem_population"), cfg.cem_population,
                    cfg.n_patients * cfg.cem_population * SIM_BYTES_PER_PLAN,
                    f"{cfg.n_patients} patients x {cfg.cem_population} plans in ImmuneSim")
    return cfg


def check_only(cfg: LeaderboardConfig, only: list[str] | None, *,
               field: str = "only") -> None:
    """Refuse unknown agent names, and agents ``cfg`` switches off (a size of 0).

    Raises
    ------
    ValidationError
        Naming ``field``, the agent and the known names (or the switch to set).
    """
    if only is not None and (isinstance(only, str) or not isinstance(only, (list, tuple))):
        raise v.bad(field, only, f"a list of agent names from {list(AGENTS)} or None")
    for agent in only or []:
        v.choice(field, agent, AGENTS)
        switch = SWITCHES.get(agent)
        if switch is not None and not getattr(cfg, switch):
            raise v.bad(field, agent, f"an agent that runs; {switch} is 0, which leaves "
                                      f"{agent} out (set {_option(switch)})")


def _agents(cfg: LeaderboardConfig, model, device: str
            ) -> dict[str, Callable[[], Any]]:
    """Name -> factory of each agent ``cfg`` runs (trained agents train when built).

    Every agent module is imported inside its factory, so the registry itself needs none.
    """
    def random():
        from agents.random import RandomAgent

        return RandomAgent(cfg.seed)

    def standard_of_care():
        from agents.standard_of_care import StandardOfCare

        return StandardOfCare()

    def cem(pessimism: float):
        from agents.cem import CEMPlanner

        return CEMPlanner("world", model=model, population=cfg.cem_population,
                          iterations=cfg.cem_iterations, pessimism=pessimism, seed=cfg.seed,
                          device=device)

    def beam():
        from agents.beam import TreePlanner

        return TreePlanner("world", method="beam", width=cfg.beam_width, model=model,
                           pessimism=cfg.pessimism, seed=cfg.seed, device=device)

    def mpc():
        from agents.mpc import MPCPlanner

        return MPCPlanner("world", model=model, population=cfg.cem_population,
                          iterations=cfg.cem_iterations, replan_every=cfg.replan_every,
                          pessimism=cfg.pessimism, seed=cfg.seed, device=device)

    out: dict[str, Callable[[], Any]] = {"random": random,
                                         "standard_of_care": standard_of_care}
    if cfg.ppo_timesteps:
        out["sb3_ppo"] = lambda: _sb3(cfg, device)
    if cfg.rllib_iterations:
        out["rllib_ppo"] = lambda: _rllib(cfg, device)
    if cfg.ppo_timesteps:
        out["ppo_lagrangian"] = lambda: _lagrangian(cfg, device)
    out["cem"] = lambda: cem(cfg.pessimism)
    if cfg.pessimism:
        out["cem_k0"] = lambda: cem(0.0)
    if cfg.beam_width:
        out["beam"] = beam
    out["mpc"] = mpc
    return out


def _sb3(cfg: LeaderboardConfig, device: str):
    from agents import sb3_ppo

    args = sb3_ppo.Args(seed=cfg.seed, horizon=cfg.horizon, device=device,
                        total_timesteps=cfg.ppo_timesteps, progress_bar=False,
                        log_dir=os.path.join("runs", "leaderboard"))
    return sb3_ppo.SB3Policy(sb3_ppo.train(args))


def _lagrangian(cfg: LeaderboardConfig, device: str):
    from agents import ppo_lagrangian

    args = ppo_lagrangian.Args(seed=cfg.seed, horizon=cfg.horizon, device=device,
                               total_timesteps=cfg.ppo_timesteps, cost_target=cfg.cost_target,
                               progress_bar=False, log_dir=os.path.join("runs", "leaderboard"))
    return ppo_lagrangian.LagrangianPolicy(ppo_lagrangian.train(args))


def _rllib(cfg: LeaderboardConfig, device: str):
    from agents import rllib_ppo

    args = rllib_ppo.Args(seed=cfg.seed, horizon=cfg.horizon, device=device,
                          iterations=cfg.rllib_iterations, progress_bar=False,
                          log_dir=os.path.join("runs", "leaderboard"))
    module, _ = rllib_ppo.train_policy(args)
    return rllib_ppo.RLlibPolicy(module)


class _Timed:
    """A :class:`~immunegym.planning.policy.Policy` that times its policy's ``start``."""

    def __init__(self, policy: Any) -> None:
        self.policy, self.name = policy, policy.name
        self.start_seconds = 0.0

    def start(self, episodes) -> None:
        t0 = time.perf_counter()
        self.policy.start(episodes)
        self.start_seconds += time.perf_counter() - t0

    def act(self, obs: Any, infos: dict[str, np.ndarray]) -> np.ndarray:
        return self.policy.act(obs, infos)


def planning_speed(policy: Any, start_seconds: float) -> dict[str, float] | None:
    """How fast a planner searched in one evaluation run; ``None`` for agents that do not.

    A closed-loop planner's own :class:`~immunegym.planning.policy.PlanningStats` (every
    search, replans included) when it keeps them; otherwise the start's
    :class:`~immunegym.planning.regimen_search.SearchResult`: its ``evaluations`` (plans
    scored per patient) times the patients, over ``start_seconds``.

    Returns
    -------
    dict or None
        ``evaluations_per_second``, ``planning_seconds``, ``evaluations_per_episode`` (and
        the planner's other statistics, e.g. ``replans_per_episode``).
    """
    stats = getattr(policy, "stats", None)
    if stats is not None and hasattr(stats, "summary") and getattr(stats, "searches", 0):
        out = {k: float(x) for k, x in stats.summary().items()}
    else:
        result = getattr(policy, "result", None)
        if result is None or not hasattr(result, "evaluations"):
            return None
        n = len(getattr(result, "values", [])) or 1
        total = float(result.evaluations) * n
        out = {"evaluations_per_episode": float(result.evaluations),
               "planning_seconds": float(start_seconds),
               "evaluations_per_second": total / start_seconds if start_seconds > 0 else
               float("nan")}
    return {k: (x if np.isfinite(x) else None) for k, x in out.items()}


def run_leaderboard(cfg: LeaderboardConfig = QUICK, *, model=None, device: str = "cpu",
                    only: list[str] | None = None,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train or plan every agent, run it on the held-out patients in both simulators.

    Parameters
    ----------
    cfg
        Sizes (:data:`QUICK`, :data:`FULL` or your own).
    model
        The world model agents plan and train in (the pretrained default when ``None``).
    device
        Torch device of the simulators.
    only
        Agent names to run (all when ``None``); the oracle always runs.
    log
        Progress messages.

    Returns
    -------
    dict
        ``agents`` (name -> entry), ``oracle``, ``aims`` (:func:`aims`), ``definitions``
        (:data:`DEFINITIONS`) and ``config``.

    Raises
    ------
    ValidationError
        A bad ``cfg``, agent name or device, before anything runs.
    """
    check_config(cfg)
    check_only(cfg, only)
    device = v.device("device", device)
    if model is None:
        from immunegym.world_model import load

        model = load(device=device)
    scenario = leaderboard_scenario(horizon=cfg.horizon, n_patients=cfg.n_patients)
    factories = _agents(cfg, model, device)
    if only:
        factories = {k: f for k, f in factories.items() if k in only}

    def oracle():
        from agents.cem import CEMPlanner

        return CEMPlanner("sim", population=cfg.cem_population, iterations=cfg.cem_iterations,
                          seed=cfg.seed, device=device)

    factories["oracle"] = oracle
    entries: dict[str, dict[str, Any]] = {}
    for name, make in factories.items():
        t0 = time.perf_counter()
        policy = _Timed(make())
        results = {"sim": evaluate_policy(policy, "sim", scenario, model=model,
                                          seed=cfg.seed, device=device)}
        # Read before the world run: a closed-loop planner restarts its statistics there.
        speed = planning_speed(policy.policy, policy.start_seconds)
        results["world"] = evaluate_policy(policy, "world", scenario, model=model,
                                           seed=cfg.seed, device=device)
        entry = leaderboard_entry(results)
        entry["seconds"] = time.perf_counter() - t0
        if speed is not None:
            entry["evaluations_per_second"] = speed["evaluations_per_second"]
            entry["planning"] = speed
        entries[name] = entry
        log(f"{name}: return in ImmuneSim {entry['return_sim']:.2f}, in ImmuneWorld "
            f"{entry['return_world']:.2f}, ORR {entry['orr_sim']:.0%}, AE >= 3 "
            f"{entry['ae3_sim']:.0%}, irAE {entry['irae_sim']:.0%}, OS 1 y "
            f"{_pct(entry['os_1y_sim'])} ({entry['seconds']:.0f} s)")
    oracle_entry = entries.pop("oracle")
    return {"agents": entries, "oracle": oracle_entry, "aims": aims(entries, oracle_entry),
            "definitions": dict(DEFINITIONS),
            "config": {**asdict(cfg), "scenario": _scenario_dict(scenario)}}


def aims(agents: dict[str, dict[str, Any]], oracle: dict[str, Any]) -> dict[str, Any]:
    """The issues' aims, each with its measured value (returns in ImmuneSim).

    - CEM beats standard of care and reaches >= 90% of the oracle's gain over it (issue 6:
      ``cem_*`` keys);
    - the best planner in the world model (of :data:`PLANNERS` run, by return in ImmuneSim)
      reaches >= 90% of the oracle's gain over standard of care (``best_planner*``);
    - each PPO agent (:data:`LEARNED`) beats random and standard of care
      (``<agent>_minus_random``, ``<agent>_beats_random``, ``<agent>_minus_standard_of_care``,
      ``<agent>_beats_standard_of_care``);
    - random is below standard of care (``random_minus_standard_of_care``,
      ``random_below_standard_of_care``);
    - the chosen planner (the best planner above) has a sim-to-real gap within
      +-:data:`GAP_TOLERANCE` (``chosen_planner_sim_to_real_gap``,
      ``chosen_planner_gap_within_tolerance``).

    ``checks`` lists every aim that could be judged as ``{"aim", "value", "met"}``; an aim
    whose agents did not run is left out (an empty dict when none could be judged).
    """
    out: dict[str, Any] = {}
    checks: list[dict[str, Any]] = []

    def check(aim: str, value: float | None, met: bool) -> None:
        checks.append({"aim": aim, "value": value, "met": bool(met)})

    soc = agents.get("standard_of_care")
    gain = oracle["return_sim"] - soc["return_sim"] if soc else None
    if soc and "cem" in agents:
        cem_gain = agents["cem"]["return_sim"] - soc["return_sim"]
        out["cem_minus_standard_of_care"] = cem_gain
        out["oracle_minus_standard_of_care"] = gain
        out["cem_share_of_oracle_gain"] = cem_gain / gain if gain > 0 else None
        out["cem_beats_standard_of_care"] = cem_gain > 0
        out["cem_reaches_90pct_of_oracle"] = bool(gain > 0 and cem_gain >= ORACLE_SHARE * gain)
    planners = [p for p in PLANNERS if p in agents]
    best = max(planners, key=lambda p: agents[p]["return_sim"]) if planners else None
    if soc and best is not None:
        best_gain = agents[best]["return_sim"] - soc["return_sim"]
        share = best_gain / gain if gain > 0 else None
        out["oracle_minus_standard_of_care"] = gain
        out["best_planner"] = best
        out["best_planner_minus_standard_of_care"] = best_gain
        out["best_planner_share_of_oracle_gain"] = share
        out["best_planner_reaches_90pct_of_oracle"] = bool(
            gain > 0 and best_gain >= ORACLE_SHARE * gain)
        check(f"best planner in the world model ({best}) reaches >= 90% of the oracle's gain "
              "over standard of care (share)", share, out["best_planner_reaches_90pct_of_oracle"])
    for ppo in LEARNED:
        if ppo not in agents:
            continue
        for base in ("random", "standard_of_care"):
            if base in agents:
                diff = agents[ppo]["return_sim"] - agents[base]["return_sim"]
                out[f"{ppo}_minus_{base}"] = diff
                out[f"{ppo}_beats_{base}"] = diff > 0
                check(f"{ppo} beats {base} (return difference)", diff, diff > 0)
    if soc and "random" in agents:
        diff = agents["random"]["return_sim"] - soc["return_sim"]
        out["random_minus_standard_of_care"] = diff
        out["random_below_standard_of_care"] = diff < 0
        check("random below standard of care (return difference)", diff, diff < 0)
    if best is not None:
        gap = agents[best].get("sim_to_real_gap")
        if gap is not None:
            out["chosen_planner"] = best
            out["chosen_planner_sim_to_real_gap"] = gap
            out["chosen_planner_gap_tolerance"] = GAP_TOLERANCE
            out["chosen_planner_gap_within_tolerance"] = abs(gap) <= GAP_TOLERANCE
            check(f"chosen planner ({best}) sim-to-real gap within +-{GAP_TOLERANCE:g}", gap,
                  abs(gap) <= GAP_TOLERANCE)
    if checks:
        out["checks"] = checks
    return out


def _scenario_dict(scenario) -> dict[str, Any]:
    d = asdict(scenario)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _rate(entry: dict[str, Any], key: str) -> str:
    """``"45% (38-52)"``: a rate in ImmuneSim and its 95% CI; ``-`` when unknown."""
    value = entry.get(f"{key}_sim")
    ci = entry.get("sim", {}).get(f"{key}_ci95")
    if value is None:
        return "-"
    if not ci or ci[0] is None:
        return f"{value:.0%}"
    return f"{value:.0%} ({100 * ci[0]:.0f}-{100 * ci[1]:.0f})"


def markdown_table(result: dict[str, Any]) -> str:
    """The leaderboard as a markdown table (oracle last), rates with their 95% CIs."""
    rows = [("agent", "return (ImmuneSim)", "95% CI", "ORR", "AE >= 3", "irAE >= 3",
             "PFS median (cycles)", "OS 1 y", "discontinued", "treatment deaths",
             "return (ImmuneWorld)", "sim-to-real gap", "plans/s", "seconds")]
    board = {**result["agents"], "oracle (CEM in ImmuneSim)": result["oracle"]}

    def f(x: Any, spec: str, none: str = "not reached") -> str:
        return none if x is None else format(x, spec)

    for name, e in board.items():
        lo, hi = e["sim"]["return_ci95"]
        rows.append((name, f"{e['return_sim']:.2f}", f"{lo:.2f} to {hi:.2f}",
                     _rate(e, "orr"), _rate(e, "ae3"), _rate(e, "irae"),
                     f(e["pfs_median_sim"], ".1f"), _rate(e, "os_1y"),
                     _rate(e, "discontinuation"), _rate(e, "deaths"),
                     f(e.get("return_world"), ".2f", "-"),
                     f(e.get("sim_to_real_gap"), "+.2f", "-"),
                     f(e.get("evaluations_per_second"), ",.0f", "-"),
                     f(e.get("seconds"), ".0f", "-")))
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "|" + "---|" * len(rows[0]))
    return "\n".join(lines) + "\n"


def _save(fig, path: str | os.PathLike[str]) -> Path:
    import matplotlib.pyplot as plt

    from immunegym._atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_leaderboard(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Return in ImmuneSim with 95% CIs (and in ImmuneWorld), and ORR against irAE rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    board = {**result["agents"], "oracle": result["oracle"]}
    names = list(board)
    y = np.arange(len(names))
    sim = np.array([board[n]["return_sim"] for n in names])
    world = np.array([board[n]["return_world"] for n in names])
    ci = np.array([board[n]["sim"]["return_ci95"] for n in names])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 0.55 * len(names) + 2.2),
                                  gridspec_kw={"width_ratios": [1.6, 1]})
    ax.barh(y, sim, xerr=np.abs(ci.T - sim), color="#3b6ea5", label="ImmuneSim (truth)",
            height=0.6, capsize=3)
    ax.scatter(world, y, marker="D", color="#d1495b", zorder=3,
               label="ImmuneWorld (model's own estimate)")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("mean episode return on held-out patients")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8)
    for n in names:
        ax2.scatter(board[n]["irae_sim"], board[n]["orr_sim"], s=40)
        ax2.annotate(n, (board[n]["irae_sim"], board[n]["orr_sim"]), fontsize=8,
                     xytext=(4, 2), textcoords="offset points")
    ax2.set_xlabel("grade >= 3 irAE rate (ImmuneSim)")
    ax2.set_ylabel("objective response rate (ImmuneSim)")
    ax2.set_xlim(-0.02, 1.02)
    ax2.set_ylim(-0.02, 1.02)
    cfg = result["config"]
    fig.suptitle(f"Planner leaderboard: {cfg['n_patients']} held-out patients, "
                 f"{cfg['horizon']} cycles, judged in ImmuneSim")
    fig.tight_layout()
    return _save(fig, path)


def pareto_front(efficacy: np.ndarray, toxicity: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: no other point has efficacy >= and toxicity <= with one strictly."""
    eff, tox = np.asarray(efficacy, dtype=float), np.asarray(toxicity, dtype=float)
    better = ((eff[None, :] >= eff[:, None]) & (tox[None, :] <= tox[:, None])
              & ((eff[None, :] > eff[:, None]) | (tox[None, :] < tox[:, None])))
    return ~better.any(1)


def plot_pareto(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Efficacy against toxicity per agent in ImmuneSim, with 95% CI bars both ways.

    Left: objective response rate; right: overall survival at one year (when the horizon
    covers a year). Toxicity is the grade >= 3 adverse event rate. The agents no other
    agent beats on both axes (the Pareto front) are joined by a line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    board = {**result["agents"], "oracle": result["oracle"]}
    names = list(board)
    panels = [("orr", "objective response rate")]
    if all(board[n].get("os_1y_sim") is not None for n in names):
        panels.append(("os_1y", "overall survival at 1 year (17 cycles)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 1.6, 4.8),
                             squeeze=False)
    colors = plt.get_cmap("tab10")(np.arange(len(names)) % 10)
    tox = np.array([board[n]["ae3_sim"] for n in names])
    tox_ci = np.array([board[n]["sim"]["ae3_ci95"] for n in names]).T
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        eff = np.array([board[n][f"{key}_sim"] for n in names])
        eff_ci = np.array([board[n]["sim"][f"{key}_ci95"] for n in names]).T
        for i, n in enumerate(names):
            ax.errorbar(tox[i], eff[i], xerr=np.abs(tox_ci[:, i:i + 1] - tox[i]),
                        yerr=np.abs(eff_ci[:, i:i + 1] - eff[i]), fmt="o", color=colors[i],
                        capsize=3, ms=6, label=n)
            ax.annotate(n, (tox[i], eff[i]), fontsize=8, xytext=(4, 3),
                        textcoords="offset points")
        front = np.flatnonzero(pareto_front(eff, tox))
        front = front[np.argsort(tox[front])]
        ax.plot(tox[front], eff[front], "--", color="grey", lw=1, label="Pareto front")
        ax.set_xlabel("grade >= 3 adverse event rate (ImmuneSim)")
        ax.set_ylabel(f"{label} (ImmuneSim)")
        ax.set_xlim(-0.02, 1.02)
        # Survival sits near 1 over a year: zoom to the CIs rather than flatten them.
        low = -0.02 if key == "orr" else max(-0.02, float(np.min(eff_ci[0])) - 0.05)
        ax.set_ylim(low, 1.02)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center right")
    cfg = result["config"]
    fig.suptitle(f"Efficacy against toxicity: {cfg['n_patients']} held-out patients, "
                 f"{cfg['horizon']} cycles, 95% bootstrap CIs")
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / (5.5 * len(panels) + 1.6), 1))
    return _save(fig, path)


def show_and_write(result: dict[str, Any], *, json_path=None, out=None, console=None) -> None:
    """Print the table and the aims; write the JSON, ``leaderboard.md``, ``leaderboard.png``
    and ``pareto.png``."""
    import json

    from rich.console import Console
    from rich.markdown import Markdown

    from immunegym._atomic import atomic_path

    console = console or Console()
    table = markdown_table(result)
    if console.width >= max(len(line) for line in table.splitlines()):
        console.print(Markdown(table))
    else:  # too narrow for a rendered table: the markdown itself, one row a line
        console.print(table, soft_wrap=True, markup=False, highlight=False)
    a = result["aims"]
    if a.get("cem_share_of_oracle_gain") is not None:
        console.print(f"CEM over standard of care: {a['cem_minus_standard_of_care']:+.2f} "
                      f"({a['cem_share_of_oracle_gain']:.0%} of the oracle's "
                      f"{a['oracle_minus_standard_of_care']:+.2f})")
    for c in a.get("checks", []):
        spec = ".0%" if "(share)" in c["aim"] else "+.2f"
        value = "-" if c["value"] is None else format(c["value"], spec)
        console.print(f"aim: {c['aim']}: {value}, {'met' if c['met'] else 'not met'}")
    if json_path is not None:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {json_path}")
    if out is not None:
        out = Path(out)
        with atomic_path(out / "leaderboard.md") as tmp:
            tmp.write_text("# Planner leaderboard\n\n" + table)
        png = plot_leaderboard(result, out / "leaderboard.png")
        pareto = plot_pareto(result, out / "pareto.png")
        console.print(f"wrote {out / 'leaderboard.md'}, {png} and {pareto}")
