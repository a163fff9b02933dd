"""Beam (or exhaustive) search over the regimen tree, in the world model.

The tree: each cycle picks one regimen of the scenario's menu (``none``, ``anti_pd1``,
``anti_pd1+anti_ctla4``, ``chemo+anti_pd1``, ...). Beam search keeps the ``width`` best
partial plans per patient after each cycle, scoring a partial plan by continuing its last
regimen to the horizon; ``--method exhaustive`` scores every two-phase plan
``induction xK -> maintenance``. Scoring simulates every plan in ImmuneWorld for all
patients at once (:class:`immunegym.planning.EngineScorer`); ``--oracle`` scores in
ImmuneSim with the true patients. ``--replan-every K`` searches the cycles left again
every K cycles from the latest biopsy and scan (closed loop); ``--pessimism k`` scores a
plan as mean minus k x std over ensemble members (risk-averse; about 1 is sensible, 0 the
default). Run ``python -m agents.beam --help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from agents._common import MAX_HORIZON, CommonArgs, judge, search_progress, writer_for
from agents.standard_of_care import StandardOfCare
from immunegym import validation as v
from immunegym.env.spaces import ActionCodec
from immunegym.planning.policy import ClosedLoopPlanner, EpisodeStart
from immunegym.planning.regimen_search import MAX_POPULATION, SearchResult, beam, exhaustive
from immunegym.planning.scoring import MAX_SAMPLES, scorer_for


@dataclass
class Args(CommonArgs):
    """Beam or exhaustive search over menu regimens per cycle."""

    method: Literal["beam", "exhaustive"] = "beam"
    """beam: cycle by cycle; exhaustive: every 'induction xK -> maintenance' plan"""
    width: int = 4
    """partial plans kept per patient (beam)"""
    n_samples: int = 0
    """simulations per plan (0: one per ensemble member; 2 in ImmuneSim)"""
    pessimism: float = 0.0
    """score = mean - PESSIMISM x std over members (0: the mean; ~1: risk-averse)"""
    replan_every: int = 0
    """search again every K cycles from the latest observation (0: once, open loop)"""
    oracle: bool = False
    """search in ImmuneSim with the true patients (the planner's ceiling)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        v.choice("method", self.method, ("beam", "exhaustive"))
        v.integer("width", self.width, low=1, high=MAX_POPULATION)
        v.integer("n_samples", self.n_samples, low=0, high=MAX_SAMPLES,
                  hint="0: one per ensemble member")
        v.number("pessimism", self.pessimism, low=0.0)
        v.integer("replan_every", self.replan_every, low=0, high=MAX_HORIZON,
                  hint="0: search once")
        v.boolean("oracle", self.oracle)


class TreePlanner(ClosedLoopPlanner):
    """Plans every patient by beam or exhaustive search at the start, then follows (open
    loop), or searches the cycles left again every ``replan_every`` cycles.

    Parameters
    ----------
    simulator
        ``"world"`` (search in the world model from observations) or ``"sim"`` (the oracle).
    method
        ``"beam"`` or ``"exhaustive"``.
    width
        Partial plans kept per patient (beam).
    model, n_samples, seed, device
        As for :class:`~agents.cem.CEMPlanner`.
    pessimism
        Score plans as mean minus ``pessimism`` x std over samples (0: the mean; about 1
        is a sensible risk-averse setting).
    replan_every
        ``None``: search once (open loop); ``k >= 1``: search the cycles left again every
        ``k`` cycles from the latest observation
        (:class:`~immunegym.planning.policy.ClosedLoopPlanner`).
    writer
        TensorBoard writer for the search trace.
    """

    def __init__(self, simulator: str = "world", *, method: str = "beam", width: int = 4,
                 model=None, n_samples: int | None = None, pessimism: float = 0.0,
                 replan_every: int | None = None, seed: int = 0, device: str = "cpu",
                 writer=None) -> None:
        v.choice("method", method, ("beam", "exhaustive"))
        super().__init__(simulator, model=model, n_samples=n_samples, pessimism=pessimism,
                         replan_every=replan_every, seed=seed, device=device)
        v.integer("width", width, low=1, high=MAX_POPULATION)
        self.name = method + ("" if simulator == "world" else "_oracle")
        self.method, self.width = method, width
        self.writer = writer
        self.result: SearchResult | None = None

    def make_plans(self, episodes: EpisodeStart) -> np.ndarray:
        sc = episodes.scenario
        scorer, rows = scorer_for(episodes, self.simulator, model=self.scoring_model(),
                                  n_samples=self.n_samples, seed=self.seed, device=self.device,
                                  pessimism=self.pessimism)
        guideline = StandardOfCare().make_plans(episodes)[:, None]
        if self.method == "beam":
            with search_progress(self.name, sc.horizon, self.writer) as log:
                self.result = self.search(scorer, rows, sc.horizon, guideline, self.seed,
                                          progress=log)
        else:
            self.result = self.search(scorer, rows, sc.horizon, guideline, self.seed)
        return self.result.plans

    def search(self, score, patients: np.ndarray, horizon: int, seeds: np.ndarray,
               seed: int, progress=None) -> SearchResult:
        # Deterministic: the search seed is unused (the scorer's common random numbers rule).
        menu = ActionCodec(self.scenario.updated(action_type="menu")).menu_doses
        if self.method == "beam":
            return beam(score, patients, horizon, menu, width=self.width, seeds=seeds,
                        progress=progress)
        return exhaustive(score, patients, horizon, menu, seeds=seeds)


def main(args: Args) -> dict[str, Any]:
    writer = writer_for(args, args.method + ("_oracle" if args.oracle else ""))
    planner = TreePlanner("sim" if args.oracle else "world", method=args.method,
                          width=args.width, n_samples=args.n_samples or None,
                          pessimism=args.pessimism, replan_every=args.replan_every or None,
                          seed=args.seed, device=args.device, writer=writer)
    result = judge(planner, args, writer=writer)
    writer.close()
    return result


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
