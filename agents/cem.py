"""CEM planner: the cross-entropy method over per-cycle dose plans, in the world model.

For every patient at once, from the baseline biopsy and scan only, CEM samples ``population``
plans from a categorical distribution per cycle and therapy over the dose levels, simulates
each in ImmuneWorld (every ensemble member, the env's own reward and clinical rules), refits
the distribution to the best ``elite_fraction`` and repeats. The guideline regimen is in the
first population, so CEM never ends below standard of care in its own model. The plan is
then followed open loop (the env still withholds what its rules forbid), or, with
``--replan-every K``, planned again every K cycles from the latest biopsy and scan (closed
loop; ``agents/mpc.py`` is this with K = 1 by default).

``--pessimism k`` scores a plan as the mean over ensemble members minus k times their
standard deviation: risk-averse planning that avoids plans the members disagree on (0, the
default, is the plain mean; about 1 is a sensible risk-averse setting).

``--oracle`` gives the same planner ImmuneSim itself, hidden state included: the ceiling the
leaderboard compares against. Run ``python -m agents.cem --help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agents._common import MAX_HORIZON, CommonArgs, judge, search_progress, writer_for
from agents.standard_of_care import StandardOfCare
from immunegym import validation as v
from immunegym.planning.policy import ClosedLoopPlanner, EpisodeStart
from immunegym.planning.regimen_search import (
    MAX_ITERATIONS,
    MAX_POPULATION,
    SearchResult,
    cem,
)
from immunegym.planning.scoring import MAX_SAMPLES, scorer_for


@dataclass
class Args(CommonArgs):
    """Batched CEM over dose plans in the world model (or ImmuneSim with --oracle)."""

    population: int = 64
    """plans sampled per patient and iteration"""
    iterations: int = 6
    """CEM iterations"""
    elite_fraction: float = 0.125
    """share of the population that refits the distribution"""
    smoothing: float = 0.25
    """weight of the previous distribution in the refit"""
    n_samples: int = 0
    """simulations per plan (0: one per ensemble member; 2 in ImmuneSim)"""
    pessimism: float = 0.0
    """score = mean - PESSIMISM x std over members (0: the mean; ~1: risk-averse)"""
    replan_every: int = 0
    """plan again every K cycles from the latest observation (0: plan once, open loop)"""
    oracle: bool = False
    """plan in ImmuneSim with the true patients (the planner's ceiling)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        v.integer("population", self.population, low=2, high=MAX_POPULATION)
        v.integer("iterations", self.iterations, low=1, high=MAX_ITERATIONS)
        v.number("elite_fraction", self.elite_fraction, low=0.0, high=1.0, low_open=True)
        v.number("smoothing", self.smoothing, low=0.0, high=1.0, high_open=True)
        v.integer("n_samples", self.n_samples, low=0, high=MAX_SAMPLES,
                  hint="0: one per ensemble member")
        v.number("pessimism", self.pessimism, low=0.0)
        v.integer("replan_every", self.replan_every, low=0, high=MAX_HORIZON,
                  hint="0: plan once")
        v.boolean("oracle", self.oracle)


class CEMPlanner(ClosedLoopPlanner):
    """Plans every patient with :func:`immunegym.planning.cem` at the start, then follows
    (open loop), or plans the cycles left again every ``replan_every`` cycles.

    Parameters
    ----------
    simulator
        ``"world"`` (plan in the world model from observations) or ``"sim"`` (the oracle).
    model
        World model (the pretrained default when ``None``).
    population, iterations, elite_fraction, smoothing, n_samples, seed, device
        Search settings (:func:`immunegym.planning.cem`, :class:`EngineScorer`).
    pessimism
        Score plans as mean minus ``pessimism`` x std over samples (0: the mean; about 1
        is a sensible risk-averse setting).
    replan_every
        ``None``: plan once (open loop); ``k >= 1``: plan again every ``k`` cycles from the
        latest observation, warm-started from the current plan
        (:class:`~immunegym.planning.policy.ClosedLoopPlanner`).
    writer
        TensorBoard writer for the search trace.

    Raises
    ------
    ValidationError
        Naming the argument (simulator, seed, population, iterations, elite_fraction,
        smoothing, pessimism, replan_every).
    """

    def __init__(self, simulator: str = "world", *, model=None, population: int = 64,
                 iterations: int = 6, elite_fraction: float = 0.125, smoothing: float = 0.25,
                 n_samples: int | None = None, pessimism: float = 0.0,
                 replan_every: int | None = None, seed: int = 0, device: str = "cpu",
                 writer=None) -> None:
        super().__init__(simulator, model=model, n_samples=n_samples, pessimism=pessimism,
                         replan_every=replan_every, seed=seed, device=device)
        self.name = "cem" if simulator == "world" else "cem_oracle"
        # Checked here, not at the first start: a bad setting fails before any simulation.
        self.settings = {
            "population": v.integer("population", population, low=2, high=MAX_POPULATION),
            "iterations": v.integer("iterations", iterations, low=1, high=MAX_ITERATIONS),
            "elite_fraction": v.number("elite_fraction", elite_fraction, low=0.0, high=1.0,
                                       low_open=True),
            "smoothing": v.number("smoothing", smoothing, low=0.0, high=1.0, high_open=True)}
        self.writer = writer
        self.result: SearchResult | None = None
        self.patient_ids = np.array([], dtype=str)

    def make_plans(self, episodes: EpisodeStart) -> np.ndarray:
        scorer, rows = scorer_for(episodes, self.simulator, model=self.scoring_model(),
                                  n_samples=self.n_samples, seed=self.seed, device=self.device,
                                  pessimism=self.pessimism)
        guideline = StandardOfCare().make_plans(episodes)[:, None]
        self.patient_ids = episodes.patient_id
        with search_progress(self.name, self.settings["iterations"], self.writer) as log:
            self.result = cem(scorer, rows, episodes.scenario.horizon,
                              episodes.scenario.dose_levels, seeds=guideline, seed=self.seed,
                              progress=log, **self.settings)
        return self.result.plans

    def search(self, score, patients: np.ndarray, horizon: int, seeds: np.ndarray,
               seed: int) -> SearchResult:
        # A replan: the current plan's remaining cycles and the guideline's seed CEM.
        return cem(score, patients, horizon, self.scenario.dose_levels, seeds=seeds,
                   seed=seed, **self.settings)


def main(args: Args) -> dict[str, Any]:
    writer = writer_for(args, "cem_oracle" if args.oracle else "cem")
    planner = CEMPlanner("sim" if args.oracle else "world", population=args.population,
                         iterations=args.iterations, elite_fraction=args.elite_fraction,
                         smoothing=args.smoothing, n_samples=args.n_samples or None,
                         pessimism=args.pessimism, replan_every=args.replan_every or None,
                         seed=args.seed, device=args.device, writer=writer)
    result = judge(planner, args, writer=writer)
    if planner.result is not None:
        ranked = planner.result.ranked
        for pid, plans in list(zip(planner.patient_ids, ranked, strict=True))[:3]:
            print(f"{pid}: {plans[0][0]}  (predicted return {plans[0][1]:.2f})")
    if planner.replan_every is not None:
        print(f"closed loop, last judged run: {planner.stats.summary()}")
    writer.close()
    return result


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
