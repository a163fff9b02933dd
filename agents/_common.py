"""What every agent shares: common arguments, judging on held-out patients, logging."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from immunegym import validation as v
from immunegym.planning.evaluate import (
    Evaluation,
    evaluate_policy,
    leaderboard_entry,
    leaderboard_scenario,
)
from immunegym.planning.policy import Policy

console = Console()


@dataclass
class CommonArgs:
    """Arguments every agent takes."""

    seed: int = 0
    """seed of the agent and of the evaluation envs"""
    horizon: int = 8
    """cycles (3 weeks each) per episode"""
    eval_patients: int = 64
    """held-out ImmuneSim patients the agent is judged on"""
    cancer_types: str = ""
    """comma-separated cancer types of the patient mix (empty: all calibrated types)"""
    device: str = "cpu"
    """torch device of the simulators: cpu, cuda or auto"""
    log_dir: str = "runs"
    """TensorBoard logs go to LOG_DIR/<agent>-<seed>-<time>"""
    eval_world: bool = True
    """also run the agent in ImmuneWorld-v0 on the same patients (the sim-to-real gap)"""

    def __post_init__(self) -> None:
        # tyro prints a ValueError raised here as a one-line error naming the argument.
        check_common(self)


MAX_EVAL_PATIENTS = 100_000
MAX_HORIZON = 100
"""Most cycles per episode (the env's own limit)."""


def check_common(args: CommonArgs) -> None:
    """Check the arguments every agent shares (raises ValidationError naming the field)."""
    v.seed("seed", args.seed)
    v.integer("horizon", args.horizon, low=1, high=MAX_HORIZON, hint="cycles")
    v.integer("eval_patients", args.eval_patients, low=1, high=MAX_EVAL_PATIENTS)
    v.device("device", args.device)
    v.boolean("eval_world", args.eval_world)
    v.output_path("log_dir", args.log_dir, directory=True)
    if not isinstance(args.cancer_types, str):
        raise v.bad("cancer_types", args.cancer_types, "comma-separated cancer types")
    names = [c.strip() for c in args.cancer_types.split(",") if c.strip()]
    if names:
        from immunegym.sim.parameters import load_parameters

        known = sorted(load_parameters().cancer_types)
        for name in names:
            v.choice("cancer_types", name, known)


def check_path(field: str, value: str, *, load: bool) -> None:
    """An agent's ``save_path`` (a writable directory) or ``load_path`` (an existing one)."""
    if not isinstance(value, str):
        raise v.bad(field, value, "a directory path or '' (none)")
    if not value:
        return
    if load:
        if not Path(value).is_dir():
            raise v.bad(field, value, "an existing directory written by --save-path")
    else:
        v.output_path(field, value, directory=True)


def mix(args: CommonArgs) -> dict[str, float]:
    """The cancer-type mix of ``args.cancer_types``."""
    return {c.strip(): 1.0 for c in args.cancer_types.split(",") if c.strip()}


def writer_for(args: CommonArgs, name: str):
    """A TensorBoard ``SummaryWriter`` under ``args.log_dir``, hyperparameters logged."""
    from torch.utils.tensorboard import SummaryWriter

    run = Path(args.log_dir) / f"{name}-{args.seed}-{int(time.time())}"
    writer = SummaryWriter(os.fspath(run))
    rows = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{rows}")
    return writer


def judge(policy: Policy, args: CommonArgs, *, model=None, writer=None,
          step: int = 0) -> dict[str, Any]:
    """Run ``policy`` on the held-out patients in ImmuneSim (and ImmuneWorld); print, log.

    Returns
    -------
    dict
        ``return_sim``, ``orr_sim``, ``irae_sim``, ``pfs_median_sim``, ``death_rate_sim``
        (and ``return_world``, ``sim_to_real_gap`` when ``args.eval_world``), plus the full
        summaries under ``"sim"`` / ``"world"``.
    """
    scenario = leaderboard_scenario(horizon=args.horizon, n_patients=args.eval_patients,
                                    cancer_types=mix(args))
    results: dict[str, Evaluation] = {}
    where = ("sim", "world") if args.eval_world else ("sim",)
    for simulator in where:
        results[simulator] = evaluate_policy(policy, simulator, scenario, model=model,
                                             seed=args.seed, device=args.device)
    out = leaderboard_entry(results)
    if writer is not None:
        for key, value in out.items():
            if isinstance(value, float):
                writer.add_scalar(f"eval/{key}", value, step)
    show({policy.name: out})
    return out


def show(rows: dict[str, dict[str, Any]]) -> None:
    """Print agents' scores as a table."""
    table = Table(title="judged on held-out patients in ImmuneSim-v0")
    for col in ("agent", "return (sim)", "ORR", "irAE >= 3", "PFS median", "return (world)",
                "gap"):
        table.add_column(col, justify="left" if col == "agent" else "right")

    def fmt(x: Any, spec: str = ".2f") -> str:
        return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) \
            else format(x, spec)

    for name, r in rows.items():
        table.add_row(name, fmt(r["return_sim"]), fmt(r["orr_sim"], ".0%"),
                      fmt(r["irae_sim"], ".0%"), fmt(r.get("pfs_median_sim"), ".1f"),
                      fmt(r.get("return_world")), fmt(r.get("sim_to_real_gap"), "+.2f"))
    console.print(table)


@contextmanager
def search_progress(name: str, total: int, writer=None):
    """A progress bar over search iterations; yields the ``progress(step, value)`` hook
    that advances it and logs the mean best value to TensorBoard."""
    from rich.progress import Progress

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"{name}: planning", total=total)

        def hook(step: int, value: float) -> None:
            bar.update(task, advance=1, description=f"{name}: best value {value:.2f}")
            if writer is not None:
                writer.add_scalar(f"search/{name}_best_value", value, step)

        yield hook
