"""The planner leaderboard: every agent on the same held-out patients, judged in ImmuneSim.

Agents (``agents/``) are trained or plan in the world model (ImmuneWorld-v0) and are then run
on held-out virtual patients in ImmuneSim-v0, the ground truth; the same patients are also
run in ImmuneWorld-v0 so the sim-to-real gap (return predicted in the world model minus
return in ImmuneSim) shows how far the model misleads each agent. The oracle is the CEM
planner given ImmuneSim itself (true patients, hidden state) as its model: the ceiling of
the planner.

``immunegym bench planners [--quick] --json PATH [--out DIR]`` writes::

    {"agents": {"random": {...}, "standard_of_care": {...}, "sb3_ppo": {...}, "cem": {...},
                "beam": {...}, ...},
     "oracle": {...}, "aims": {...}, "config": {...}}

each entry with ``return_world``, ``return_sim``, ``orr_sim``, ``irae_sim``,
``pfs_median_sim``, ``sim_to_real_gap`` and more (:func:`leaderboard_entry`), and with
``--out`` a markdown table and a plot.
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
    Evaluation,
    evaluate_policy,
    leaderboard_entry,
    leaderboard_scenario,
)


@dataclass(frozen=True)
class LeaderboardConfig:
    """Sizes of one leaderboard run.

    Attributes
    ----------
    n_patients, horizon
        Held-out ImmuneSim patients and cycles per episode.
    cem_population, cem_iterations
        CEM search size (the oracle uses the same).
    beam_width
        Beam search width (0 leaves beam out).
    ppo_timesteps
        SB3 PPO training steps in the world model (0 leaves PPO out).
    rllib_iterations
        RLlib PPO iterations (0 leaves it out).
    seed
        Seed of the agents and the evaluation envs.
    """

    n_patients: int = 256
    horizon: int = 8
    cem_population: int = 64
    cem_iterations: int = 6
    beam_width: int = 4
    ppo_timesteps: int = 200_000
    rllib_iterations: int = 0
    seed: int = 0


QUICK = LeaderboardConfig(n_patients=64, cem_population=32, cem_iterations=4, beam_width=2,
                          ppo_timesteps=30_000)
"""Minutes on 2 CPU cores."""

FULL = LeaderboardConfig()

AGENTS: tuple[str, ...] = ("random", "standard_of_care", "sb3_ppo", "rllib_ppo", "cem",
                           "beam")
"""Every agent the leaderboard knows (the oracle always runs)."""
SWITCHES: dict[str, str] = {"sb3_ppo": "ppo_timesteps", "rllib_ppo": "rllib_iterations",
                            "beam": "beam_width"}
"""Agents a size of 0 leaves out, and that size."""
# field -> (low, high): far above any documented run, so a typo is refused, not run for days.
_LIMITS: dict[str, tuple[int, int]] = {
    "n_patients": (1, 1_000_000), "cem_population": (1, 100_000),
    "cem_iterations": (1, 1_000), "beam_width": (0, 10_000),
    "ppo_timesteps": (0, 10_000_000_000), "rllib_iterations": (0, 1_000_000),
}
SIM_BYTES_PER_PLAN = 8_000
"""Peak bytes of one simulated patient-plan (the oracle's CEM population per patient)."""


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_config(cfg: LeaderboardConfig, *, option_names: bool = False) -> LeaderboardConfig:
    """Refuse sizes a leaderboard run cannot use: ranges, seed and a memory estimate.

    ``option_names`` names fields as the CLI's options (``--n-patients``) in messages.
    """
    from immunegym.env.scenario import MAX_HORIZON

    name = _option if option_names else (lambda f: f"cfg.{f}")
    for key, (low, high) in _LIMITS.items():
        v.integer(name(key), getattr(cfg, key), low=low, high=high)
    v.integer(name("horizon"), cfg.horizon, low=1, high=MAX_HORIZON)
    v.seed(name("seed"), cfg.seed)
    # The oracle's CEM scores cem_population plans per patient at once in ImmuneSim.
    v.memory_budget(name("cem_population"), cfg.cem_population,
                    cfg.n_patients * cfg.cem_population * SIM_BYTES_PER_PLAN,
                    f"{cfg.n_patients} patients x {cfg.cem_population} plans in ImmuneSim")
    return cfg


def check_only(cfg: LeaderboardConfig, only: list[str] | None, *,
               field: str = "only") -> None:
    """Refuse unknown agent names, and agents ``cfg`` switches off (a size of 0)."""
    for agent in only or []:
        v.choice(field, agent, AGENTS)
        switch = SWITCHES.get(agent)
        if switch is not None and not getattr(cfg, switch):
            raise v.bad(field, agent, f"an agent that runs; {switch} is 0, which leaves "
                                      f"{agent} out (set {_option(switch)})")


def _agents(cfg: LeaderboardConfig, model, device: str
            ) -> dict[str, Callable[[], Any]]:
    """Name -> factory of each agent (trained agents train when built)."""
    from agents.beam import TreePlanner
    from agents.cem import CEMPlanner
    from agents.random import RandomAgent
    from agents.standard_of_care import StandardOfCare

    out: dict[str, Callable[[], Any]] = {
        "random": lambda: RandomAgent(cfg.seed),
        "standard_of_care": StandardOfCare,
    }
    if cfg.ppo_timesteps:
        out["sb3_ppo"] = lambda: _sb3(cfg, device)
    if cfg.rllib_iterations:
        out["rllib_ppo"] = lambda: _rllib(cfg, device)
    out["cem"] = lambda: CEMPlanner("world", model=model, population=cfg.cem_population,
                                    iterations=cfg.cem_iterations, seed=cfg.seed,
                                    device=device)
    if cfg.beam_width:
        out["beam"] = lambda: TreePlanner("world", method="beam", width=cfg.beam_width,
                                          model=model, seed=cfg.seed, device=device)
    return out


def _sb3(cfg: LeaderboardConfig, device: str):
    from agents import sb3_ppo

    args = sb3_ppo.Args(seed=cfg.seed, horizon=cfg.horizon, device=device,
                        total_timesteps=cfg.ppo_timesteps, progress_bar=False,
                        log_dir=os.path.join("runs", "leaderboard"))
    return sb3_ppo.SB3Policy(sb3_ppo.train(args))


def _rllib(cfg: LeaderboardConfig, device: str):
    from agents import rllib_ppo

    args = rllib_ppo.Args(seed=cfg.seed, horizon=cfg.horizon, device=device,
                          iterations=cfg.rllib_iterations,
                          log_dir=os.path.join("runs", "leaderboard"))
    module, _ = rllib_ppo.train_policy(args)
    return rllib_ppo.RLlibPolicy(module)


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
    """
    from agents.cem import CEMPlanner

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
    factories["oracle"] = lambda: CEMPlanner("sim", population=cfg.cem_population,
                                             iterations=cfg.cem_iterations, seed=cfg.seed,
                                             device=device)
    entries: dict[str, dict[str, Any]] = {}
    evaluations: dict[str, Evaluation] = {}
    for name, make in factories.items():
        t0 = time.perf_counter()
        policy = make()
        results = {sim: evaluate_policy(policy, sim, scenario, model=model, seed=cfg.seed,
                                        device=device) for sim in ("sim", "world")}
        entry = leaderboard_entry(results)
        entry["seconds"] = time.perf_counter() - t0
        entries[name] = entry
        evaluations[name] = results["sim"]
        log(f"{name}: return in ImmuneSim {entry['return_sim']:.2f}, in ImmuneWorld "
            f"{entry['return_world']:.2f}, ORR {entry['orr_sim']:.0%}, irAE "
            f"{entry['irae_sim']:.0%} ({entry['seconds']:.0f} s)")
    oracle = entries.pop("oracle")
    return {"agents": entries, "oracle": oracle, "aims": aims(entries, oracle),
            "config": {**asdict(cfg), "scenario": _scenario_dict(scenario)}}


def aims(agents: dict[str, dict[str, Any]], oracle: dict[str, Any]) -> dict[str, Any]:
    """The issue's aims: CEM beats standard of care in ImmuneSim and reaches >= 90% of the
    oracle's improvement over it; PPO beats random."""
    out: dict[str, Any] = {}
    soc = agents.get("standard_of_care")
    if soc and "cem" in agents:
        gain = oracle["return_sim"] - soc["return_sim"]
        cem_gain = agents["cem"]["return_sim"] - soc["return_sim"]
        out["cem_minus_standard_of_care"] = cem_gain
        out["oracle_minus_standard_of_care"] = gain
        out["cem_share_of_oracle_gain"] = cem_gain / gain if gain > 0 else None
        out["cem_beats_standard_of_care"] = cem_gain > 0
        out["cem_reaches_90pct_of_oracle"] = bool(gain > 0 and cem_gain >= 0.9 * gain)
    for ppo in ("sb3_ppo", "rllib_ppo"):
        if ppo in agents and "random" in agents:
            out[f"{ppo}_minus_random"] = agents[ppo]["return_sim"] - agents["random"]["return_sim"]
            out[f"{ppo}_beats_random"] = out[f"{ppo}_minus_random"] > 0
    return out


def _scenario_dict(scenario) -> dict[str, Any]:
    d = asdict(scenario)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def markdown_table(result: dict[str, Any]) -> str:
    """The leaderboard as a markdown table (oracle last)."""
    rows = [("agent", "return (ImmuneSim)", "95% CI", "ORR", "irAE >= 3", "PFS median (cycles)",
             "return (ImmuneWorld)", "sim-to-real gap")]
    board = {**result["agents"], "oracle (CEM in ImmuneSim)": result["oracle"]}

    def f(x: Any, spec: str) -> str:
        return "not reached" if x is None else format(x, spec)

    for name, e in board.items():
        lo, hi = e["sim"]["return_ci95"]
        rows.append((name, f"{e['return_sim']:.2f}", f"{lo:.2f} to {hi:.2f}",
                     f"{e['orr_sim']:.0%}", f"{e['irae_sim']:.0%}",
                     f(e['pfs_median_sim'], ".1f"), f"{e['return_world']:.2f}",
                     f"{e['sim_to_real_gap']:+.2f}"))
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "|" + "---|" * len(rows[0]))
    return "\n".join(lines) + "\n"


def plot_leaderboard(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Return in ImmuneSim with 95% CIs (and in ImmuneWorld), and ORR against irAE rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from immunegym._atomic import atomic_path

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def show_and_write(result: dict[str, Any], *, json_path=None, out=None, console=None) -> None:
    """Print the table and the aims; write the JSON, ``leaderboard.md`` and the plot."""
    import json

    from rich.console import Console
    from rich.markdown import Markdown

    from immunegym._atomic import atomic_path

    console = console or Console()
    table = markdown_table(result)
    console.print(Markdown(table))
    a = result["aims"]
    if a.get("cem_share_of_oracle_gain") is not None:
        console.print(f"CEM over standard of care: {a['cem_minus_standard_of_care']:+.2f} "
                      f"({a['cem_share_of_oracle_gain']:.0%} of the oracle's "
                      f"{a['oracle_minus_standard_of_care']:+.2f})")
    if json_path is not None:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {json_path}")
    if out is not None:
        out = Path(out)
        with atomic_path(out / "leaderboard.md") as tmp:
            tmp.write_text("# Planner leaderboard\n\n" + table)
        png = plot_leaderboard(result, out / "leaderboard.png")
        console.print(f"wrote {out / 'leaderboard.md'} and {png}")
