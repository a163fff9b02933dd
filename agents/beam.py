"""Beam (or exhaustive) search over the regimen tree, in the world model.

The tree: each cycle picks one regimen of the scenario's menu (``none``, ``anti_pd1``,
``anti_pd1+anti_ctla4``, ``chemo+anti_pd1``, ...). Beam search keeps the ``width`` best
partial plans per patient after each cycle, scoring a partial plan by continuing its last
regimen to the horizon; ``--method exhaustive`` scores every two-phase plan
``induction xK -> maintenance``. Scoring simulates every plan in ImmuneWorld for all
patients at once (:class:`immunegym.planning.EngineScorer`); ``--oracle`` scores in
ImmuneSim with the true patients. Run ``python -m agents.beam --help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from agents._common import CommonArgs, judge, search_progress, writer_for
from agents.standard_of_care import StandardOfCare
from immunegym import validation as v
from immunegym.env.spaces import ActionCodec
from immunegym.planning.policy import EpisodeStart, PlanFollower
from immunegym.planning.regimen_search import MAX_POPULATION, SearchResult, beam, exhaustive
from immunegym.planning.scoring import MAX_SAMPLES, SIMULATORS, scorer_for


@dataclass
class Args(CommonArgs):
    """Beam or exhaustive search over menu regimens per cycle."""

    method: Literal["beam", "exhaustive"] = "beam"
    """beam: cycle by cycle; exhaustive: every 'induction xK -> maintenance' plan"""
    width: int = 4
    """partial plans kept per patient (beam)"""
    n_samples: int = 0
    """simulations per plan (0: one per ensemble member; 2 in ImmuneSim)"""
    oracle: bool = False
    """search in ImmuneSim with the true patients (the planner's ceiling)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        v.choice("method", self.method, ("beam", "exhaustive"))
        v.integer("width", self.width, low=1, high=MAX_POPULATION)
        v.integer("n_samples", self.n_samples, low=0, high=MAX_SAMPLES,
                  hint="0: one per ensemble member")
        v.boolean("oracle", self.oracle)


class TreePlanner(PlanFollower):
    """Plans every patient by beam or exhaustive search at the start, then follows."""

    def __init__(self, simulator: str = "world", *, method: str = "beam", width: int = 4,
                 model=None, n_samples: int | None = None, seed: int = 0,
                 device: str = "cpu", writer=None) -> None:
        super().__init__()
        v.choice("method", method, ("beam", "exhaustive"))
        v.choice("simulator", simulator, SIMULATORS)
        v.integer("width", width, low=1, high=MAX_POPULATION)
        self.name = method + ("" if simulator == "world" else "_oracle")
        self.simulator, self.method, self.width = simulator, method, width
        self.model, self.n_samples, self.seed, self.device = model, n_samples, seed, device
        self.writer = writer
        self.result: SearchResult | None = None

    def make_plans(self, episodes: EpisodeStart) -> np.ndarray:
        sc = episodes.scenario
        scorer, rows = scorer_for(episodes, self.simulator, model=self.model,
                                  n_samples=self.n_samples, seed=self.seed, device=self.device)
        menu = ActionCodec(sc.updated(action_type="menu")).menu_doses
        guideline = StandardOfCare().make_plans(episodes)[:, None]
        if self.method == "beam":
            with search_progress(self.name, sc.horizon, self.writer) as log:
                self.result = beam(scorer, rows, sc.horizon, menu, width=self.width,
                                   seeds=guideline, progress=log)
        else:
            self.result = exhaustive(scorer, rows, sc.horizon, menu, seeds=guideline)
        return self.result.plans


def main(args: Args) -> dict[str, Any]:
    writer = writer_for(args, args.method + ("_oracle" if args.oracle else ""))
    planner = TreePlanner("sim" if args.oracle else "world", method=args.method,
                          width=args.width, n_samples=args.n_samples or None, seed=args.seed,
                          device=args.device, writer=writer)
    result = judge(planner, args, writer=writer)
    writer.close()
    return result


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
