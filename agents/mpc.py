"""MPC planner: CEM re-planned every cycle from the latest biopsy and scan (closed loop).

Model-predictive control in the world model. At the start it plans every patient's whole
episode with CEM, as ``agents/cem.py`` does. Then, every ``replan_every`` cycles (1 by
default), it builds a fresh belief of each patient still under treatment from what the env
has observed so far (the latest biopsy's composition and the latest scan's sum of diameters:
:func:`immunegym.planning.policy.episode_now`, scored through the same
:func:`~immunegym.planning.scoring.scorer_for` path as the baseline) and runs CEM again over
the cycles left, warm-started from the current plan's remaining cycles and the guideline
regimen. Candidate plans are scored as the env will give them: therapies on hold,
discontinued or past their course cap are taken out
(:func:`~immunegym.planning.policy.feasible_plans`). It acts on the first cycle of the new
plan and repeats.

The belief forgets the history before the latest observation (the filter reads one biopsy
and one scan), uses population-typical toxicity parameters and restarts the RECIST nadir at
the latest scan. ``--oracle`` re-plans in ImmuneSim with the true patient, replaying the
doses actually given from the baseline (its own dynamics noise, not the env's).

``--pessimism k`` scores plans as mean minus k x std over ensemble members (about 1 is a
sensible risk-averse setting; 0, the default, is the plain mean). The planner records
replans and CEM evaluations per episode (``planner.stats``), for CEM evaluations per second.
Run ``python -m agents.mpc --help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents import cem
from agents._common import MAX_HORIZON, judge, writer_for
from agents.cem import CEMPlanner
from immunegym import validation as v


@dataclass
class Args(cem.Args):
    """Model-predictive control: CEM re-planned from every new observation."""

    replan_every: int = 1
    """plan the cycles left again every K cycles (K >= 1)"""

    def __post_init__(self) -> None:
        # Before CEM's checks: its 0 means "plan once", and an MPC that never replans is
        # not one, so the MPC's own bound is the one a bad value meets.
        v.integer("replan_every", self.replan_every, low=1, high=MAX_HORIZON,
                  hint="cycles between plans")
        super().__post_init__()


class MPCPlanner(CEMPlanner):
    """CEM over the cycles left, re-planned every ``replan_every`` cycles (closed loop).

    Parameters
    ----------
    simulator
        ``"world"`` (the world model, from observations) or ``"sim"`` (the oracle).
    model
        World model (the pretrained default, loaded once, when ``None``).
    population, iterations, elite_fraction, smoothing
        CEM settings of every (re)plan (:func:`immunegym.planning.cem`).
    replan_every
        Cycles between plans, ``>= 1`` (an MPC that never re-plans is
        :class:`~agents.cem.CEMPlanner`).
    pessimism
        Score plans as mean minus ``pessimism`` x std over samples (0: the mean; about 1
        is a sensible risk-averse setting).
    n_samples, seed, device
        :class:`~immunegym.planning.EngineScorer` settings; ``seed`` also seeds the
        planner's generator, which draws each replan's CEM seed.
    writer
        TensorBoard writer for the start's search trace.

    Attributes
    ----------
    stats
        :class:`~immunegym.planning.policy.PlanningStats` of the last batch of episodes:
        replans and CEM evaluations per episode, seconds spent searching.

    Raises
    ------
    ValidationError
        Naming the argument: ``replan_every`` not an integer >= 1, ``pessimism`` negative,
        or a bad CEM setting, seed or simulator.
    """

    def __init__(self, simulator: str = "world", *, model=None, population: int = 64,
                 iterations: int = 6, elite_fraction: float = 0.125, smoothing: float = 0.25,
                 replan_every: int = 1, pessimism: float = 0.0, n_samples: int | None = None,
                 seed: int = 0, device: str = "cpu", writer=None) -> None:
        # None means "never" to CEMPlanner; an MPC re-plans, so it must be a count >= 1.
        replan_every = v.integer("replan_every", replan_every, low=1, high=MAX_HORIZON,
                                 hint="cycles between plans")
        super().__init__(simulator, model=model, population=population,
                         iterations=iterations, elite_fraction=elite_fraction,
                         smoothing=smoothing, n_samples=n_samples, pessimism=pessimism,
                         replan_every=replan_every, seed=seed, device=device, writer=writer)
        self.name = "mpc" if simulator == "world" else "mpc_oracle"


def main(args: Args) -> dict[str, Any]:
    name = "mpc_oracle" if args.oracle else "mpc"
    writer = writer_for(args, name)
    planner = MPCPlanner("sim" if args.oracle else "world", population=args.population,
                         iterations=args.iterations, elite_fraction=args.elite_fraction,
                         smoothing=args.smoothing, replan_every=args.replan_every,
                         pessimism=args.pessimism, n_samples=args.n_samples or None,
                         seed=args.seed, device=args.device, writer=writer)
    result = judge(planner, args, writer=writer)
    # The stats of the last judged run (ImmuneWorld when --eval-world, else ImmuneSim).
    result["planning"] = planner.stats.summary()
    for key, value in result["planning"].items():
        writer.add_scalar(f"planning/{key}", value, 0)
    print(f"{name}: {result['planning']}")
    writer.close()
    return result


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
