"""What an agent is to the evaluation: a :class:`Policy`, and plan-following policies.

A policy is told when its episodes start (:class:`EpisodeStart`: only what a clinic knows,
the diagnosis and the baseline biopsy and scan) and then picks every row's action each
cycle from the observation and the info. Planners and guideline regimens decide a per-cycle
dose plan up front; :class:`PlanFollower` turns such plans into the env's actions.
:class:`ClosedLoopPlanner` plans again every few cycles from the latest observation
(:func:`episode_now`: the last biopsy and scan), model-predictive control.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from immunegym.data.vocab import THERAPIES
from immunegym.env.scenario import Scenario
from immunegym.validation import ValidationError, bad, choice, integer, number
from immunegym.validation import seed as validate_seed


@dataclass
class EpisodeStart:
    """What a policy may know when its episodes start (one entry per env row).

    Attributes
    ----------
    cancer_type, patient_id
        ``(n,)`` strings: the diagnosis and the patient's id.
    composition
        ``(n, K)`` the baseline biopsy's fractions over the fine types.
    sod_mm
        ``(n,)`` the baseline scan's sum of target-lesion diameters (mm).
    scenario
        The scenario the episodes run under (horizon, actions, reward).
    """

    cancer_type: np.ndarray
    patient_id: np.ndarray
    composition: np.ndarray
    sod_mm: np.ndarray
    scenario: Scenario


@runtime_checkable
class Policy(Protocol):
    """An agent the evaluation can run: ``start`` once, then ``act`` every cycle."""

    name: str

    def start(self, episodes: EpisodeStart) -> None:
        """New episodes begin for every row (plan here if the policy plans)."""

    def act(self, obs: Any, infos: dict[str, np.ndarray]) -> np.ndarray:
        """Actions of every row (the env's batched action space)."""


def dose_levels_to_actions(doses: np.ndarray, scenario: Scenario) -> np.ndarray:
    """``(..., R)`` dose multiples -> MultiDiscrete level indices (the nearest level).

    Raises
    ------
    ValueError
        If the scenario's action type is not ``"multidiscrete"``, or a dose is further than
        0.01 from every level (the plan asks for a dose the env cannot give).
    """
    if not isinstance(scenario, Scenario):
        raise bad("scenario", scenario, "a Scenario")
    if scenario.action_type != "multidiscrete":
        raise ValidationError(f"action_type: plans act through 'multidiscrete' dose levels, got "
                         f"{scenario.action_type!r}")
    levels = np.asarray(scenario.dose_levels, dtype=np.float64)
    doses = np.asarray(doses, dtype=np.float64)
    if not np.isfinite(doses).all():
        raise bad("doses", "<plans with NaN or infinite doses>", "finite dose multiples")
    gap = np.abs(doses[..., None] - levels)
    index = gap.argmin(-1)
    if np.any(gap.min(-1) > 0.01):
        off = np.unique(doses[gap.min(-1) > 0.01])[:3]
        raise ValidationError(f"doses: {off.tolist()} are not dose levels of the scenario "
                         f"{list(scenario.dose_levels)}")
    return index.astype(np.int64)


class PlanFollower:
    """Gives each row the dose of its plan for the row's current cycle.

    Subclasses return ``(n, H, R)`` dose multiples from :meth:`make_plans`, called once per
    baseline (a second :meth:`start` with the same patients and observations reuses the
    plans); cycles past the plan get no therapy. The env withholds what its rules forbid.
    """

    name = "plan"

    def __init__(self) -> None:
        self.plans: np.ndarray | None = None
        self.scenario: Scenario | None = None
        self._planned_for = b""

    def start(self, episodes: EpisodeStart) -> None:
        if not isinstance(episodes, EpisodeStart):
            raise bad("episodes", episodes, "an EpisodeStart (what the clinic knows at the "
                      "start: cancer type, baseline biopsy and scan)")
        self.scenario = episodes.scenario
        # Judging runs the same patients in two simulators: plan once per baseline.
        key = (episodes.patient_id.tobytes() + episodes.composition.tobytes()
               + episodes.sod_mm.tobytes())
        if self.plans is None or key != self._planned_for:
            self.plans = self.make_plans(episodes)
            self._planned_for = key
        n, h = len(episodes.cancer_type), episodes.scenario.horizon
        if self.plans.shape[:2] != (n, h):
            raise ValidationError(f"plans: shape {self.plans.shape}; expected ({n}, {h}, R)")

    def make_plans(self, episodes: EpisodeStart) -> np.ndarray:
        """``(n, H, R)`` dose multiples per row and cycle."""
        raise NotImplementedError

    def act(self, obs: Any, infos: dict[str, np.ndarray]) -> np.ndarray:
        if self.plans is None or self.scenario is None:
            raise RuntimeError("act() before start(): the policy has no plans yet")
        cycle = np.asarray(infos["cycle"])
        h = self.plans.shape[1]
        doses = self.plans[np.arange(len(cycle)), np.minimum(cycle, h - 1)]
        doses = np.where((cycle < h)[:, None], doses, 0.0)
        return dose_levels_to_actions(doses, self.scenario)


# --------------------------------------------------------------------------------------
# Closed-loop planning
# --------------------------------------------------------------------------------------

CLOSED_LOOP_INFO = ("cycle", "given", "action_mask", "discontinued", "died", "progressed")
"""Info keys a :class:`ClosedLoopPlanner` reads every cycle (the native envs give them)."""


def episode_now(start: EpisodeStart, obs: Any, rows: np.ndarray, cycle: int) -> EpisodeStart:
    """What the clinic knows of ``rows`` after ``cycle`` cycles, as a fresh start.

    The composition of the latest biopsy and the sum of diameters of the latest scan (both
    in the observation; never ``info["sod_mm"]``, which is the true, unobserved SOD), over
    the ``horizon - cycle`` cycles left. :func:`~.scoring.scorer_for` turns it into the
    planner's belief exactly as it does the baseline.

    Parameters
    ----------
    start
        The episodes' :class:`EpisodeStart` (names, diagnosis, scenario).
    obs
        The env's batched observation (flat ``(n, 44)`` or a dict of fields).
    rows
        Env rows to describe.
    cycle
        Cycles completed by those rows (``0 < cycle < horizon``).
    """
    from immunegym.env.spaces import ObservationCodec

    if not isinstance(start, EpisodeStart):
        raise bad("start", start, "an EpisodeStart")
    horizon = start.scenario.horizon
    cycle = integer("cycle", cycle, low=0, high=horizon - 1, hint="cycles completed")
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(obs, dict):
        if "composition" not in obs or "burden" not in obs:
            raise bad("obs", sorted(obs), "a dict observation with 'composition' and "
                      "'burden'")
        composition = np.asarray(obs["composition"])[rows]
        burden = np.asarray(obs["burden"])[rows, 0]
    else:
        codec = ObservationCodec(start.scenario.updated(observation_type="flat"))
        flat = np.asarray(obs)
        if flat.ndim != 2 or flat.shape[1] != codec.size:
            raise bad("obs", f"<shape {flat.shape}>", f"(n, {codec.size}) flat observations "
                      "of the env")
        composition = flat[rows, codec.slices["composition"]]
        burden = flat[rows, codec.slices["burden"]][:, 0]
    return EpisodeStart(cancer_type=start.cancer_type[rows], patient_id=start.patient_id[rows],
                        composition=np.asarray(composition, dtype=np.float32).copy(),
                        sod_mm=np.expm1(np.asarray(burden, dtype=np.float64)),
                        scenario=start.scenario.updated(horizon=horizon - cycle))


@dataclass
class PlanningStats:
    """What planning cost over one batch of episodes (one :meth:`ClosedLoopPlanner.start`).

    Attributes
    ----------
    replans
        ``(n,)`` searches after the start, per row (episode).
    evaluations
        ``(n,)`` plans scored per row, over every search (:attr:`SearchResult.evaluations`);
        the start's search counts only when it ran (not when reused for the same baseline).
    searches
        Search calls (one replan of every row due at a cycle is one call).
    seconds
        Wall time spent in those searches (scorer set-up included).
    """

    replans: np.ndarray
    evaluations: np.ndarray
    searches: int = 0
    seconds: float = 0.0

    @property
    def evaluations_per_second(self) -> float:
        """Plans scored per second, all rows together (NaN before any search)."""
        total = float(self.evaluations.sum())
        return total / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict[str, float]:
        """JSON-ready means: replans and evaluations per episode, evaluations per second."""
        n = max(len(self.replans), 1)
        return {"replans_per_episode": float(self.replans.sum() / n),
                "evaluations_per_episode": float(self.evaluations.sum() / n),
                "searches": float(self.searches), "planning_seconds": self.seconds,
                "evaluations_per_second": self.evaluations_per_second}


def feasible_plans(plans: np.ndarray, courses_left: np.ndarray, allowed_now: np.ndarray,
                   stopped: np.ndarray) -> np.ndarray:
    """``plans`` (``(P, C, h, R)``) without the doses the env will withhold.

    A planner's belief starts a fresh course record, so it would believe capped or stopped
    therapies still available: this zeroes what is not allowed in the next cycle
    (``allowed_now``, ``(P, R)``: holds, caps, death), what is stopped for good
    (``stopped``, ``(P, R)``) and the courses beyond each therapy's remaining cap
    (``courses_left``, ``(P, R)``, ``inf`` when uncapped). Later holds are unknown.
    """
    out = np.array(plans, dtype=np.float32, copy=True)
    out[:, :, 0] *= np.asarray(allowed_now, dtype=bool)[:, None]
    out *= ~np.asarray(stopped, dtype=bool)[:, None, None]
    # A withheld dose is no course: count what is left after the masks above.
    count = np.cumsum(out > 0, axis=2)
    out[count > np.asarray(courses_left)[:, None, None]] = 0.0
    return out


class ClosedLoopPlanner(PlanFollower):
    """A search-based plan follower that may plan again mid-episode (model-predictive).

    At :meth:`start` it plans every row's whole episode (:meth:`make_plans`, cached per
    baseline as in :class:`PlanFollower`). With ``replan_every = k`` it then plans again,
    every ``k`` cycles, the cycles left of every row still in its episode: from the latest
    biopsy and scan (:func:`episode_now`) in the world model, or (``"sim"``, the oracle)
    from the true patient with the doses actually given so far replayed. The search is
    warm-started from the current plan's remaining cycles and the guideline's, and scores
    plans as the env will give them (:func:`feasible_plans`). Subclasses implement
    :meth:`make_plans` and :meth:`search`.

    Parameters
    ----------
    simulator
        ``"world"`` or ``"sim"`` (the oracle).
    model
        World model (the pretrained default, loaded once, when ``None``).
    n_samples, pessimism, seed, device
        :class:`~.scoring.EngineScorer` settings; ``seed`` also seeds the planner's own
        generator, which draws each replan's search seed.
    replan_every
        ``None``: plan once and follow it (open loop); ``k >= 1``: plan again every ``k``
        cycles (closed loop).

    Attributes
    ----------
    stats
        :class:`PlanningStats` of the current batch of episodes (since the last
        :meth:`start`).
    runs
        Every batch's :class:`PlanningStats`, in order (judging runs ImmuneSim, then
        ImmuneWorld: two entries).

    Notes
    -----
    The mid-episode belief is a fresh start from the latest observation: the world model's
    filter reads one biopsy and one scan (the history before them is forgotten), toxicity
    parameters are population-typical and the RECIST nadir restarts at the latest scan, so
    the planner under-rates progression when the tumor has shrunk before. Rows that ended
    (death, progression) are not planned again; a row the env restarts (autoreset) follows
    its old plan open loop.
    """

    def __init__(self, simulator: str = "world", *, model=None, n_samples: int | None = None,
                 pessimism: float = 0.0, replan_every: int | None = None, seed: int = 0,
                 device: str = "cpu") -> None:
        super().__init__()
        from immunegym.planning.scoring import SIMULATORS

        choice("simulator", simulator, SIMULATORS)
        self.pessimism = number("pessimism", pessimism, low=0.0)
        if replan_every is not None:
            replan_every = integer("replan_every", replan_every, low=1, high=10_000,
                                   hint="cycles between plans; None plans once")
        self.replan_every = replan_every
        self.simulator, self.model, self.n_samples = simulator, model, n_samples
        self.seed, self.device = validate_seed("seed", seed), device
        self.result = None  # the start's SearchResult (subclasses set it in make_plans)
        self.opening: np.ndarray | None = None  # the start's plan, before any replan
        self.stats = PlanningStats(np.zeros(0, np.int64), np.zeros(0, np.int64))
        self.runs: list[PlanningStats] = []
        self.rng = np.random.default_rng(self.seed)
        self._episodes: EpisodeStart | None = None
        self._oracle: tuple[Any, np.ndarray, bytes] | None = None

    # ------------------------------------------------------------------ to implement
    def search(self, score: Callable[[np.ndarray, np.ndarray], np.ndarray],
               patients: np.ndarray, horizon: int, seeds: np.ndarray, seed: int):
        """A :class:`~.regimen_search.SearchResult` for ``patients`` over ``horizon``
        cycles, the ``(P, M, horizon, R)`` ``seeds`` among the candidates."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def scoring_model(self):
        """The world model scorers use (loaded once; ``None`` for the oracle)."""
        if self.simulator == "world" and self.model is None:
            from immunegym.world_model import load

            self.model = load(device=self.device)
        return self.model if self.simulator == "world" else None

    def start(self, episodes: EpisodeStart) -> None:
        if not isinstance(episodes, EpisodeStart):
            raise bad("episodes", episodes, "an EpisodeStart (what the clinic knows at the "
                      "start: cancer type, baseline biopsy and scan)")
        n, h = len(episodes.cancer_type), episodes.scenario.horizon
        self.stats = PlanningStats(np.zeros(n, np.int64), np.zeros(n, np.int64))
        self.runs.append(self.stats)
        # PlanFollower caches the start's plan per baseline; replans change a copy of it.
        self.plans = self.opening
        t0 = time.perf_counter()
        super().start(episodes)
        if self.plans is not self.opening:  # planned now, not reused
            self.stats.searches += 1
            self.stats.seconds += time.perf_counter() - t0
            self.stats.evaluations += getattr(self.result, "evaluations", 0)
        self.opening = self.plans
        self.plans = np.array(self.opening, dtype=np.float32, copy=True)
        self._episodes = episodes
        # Each batch of episodes replays the same draws (judging runs two simulators).
        self.rng = np.random.default_rng(self.seed)
        self._active = np.ones(n, dtype=bool)
        self._last_cycle = np.zeros(n, dtype=np.int64)
        self._planned_at = np.zeros(n, dtype=np.int64)
        self._given = np.zeros((n, h, self.plans.shape[2]), dtype=np.float32)
        self._guideline: np.ndarray | None = None

    def act(self, obs: Any, infos: dict[str, np.ndarray]) -> np.ndarray:
        if self.replan_every is not None and self._episodes is not None:
            self._follow(infos)
            cycle = np.asarray(infos["cycle"], dtype=np.int64)
            h = self._episodes.scenario.horizon
            due = (self._active & (cycle > 0) & (cycle < h) & (cycle % self.replan_every == 0)
                   & (cycle != self._planned_at))
            for c in np.unique(cycle[due]):
                rows = np.flatnonzero(due & (cycle == c))
                self.plans[rows, c:] = self._replan(obs, infos, rows, int(c))
                self._planned_at[rows] = c
        return super().act(obs, infos)

    def _follow(self, infos: dict[str, np.ndarray]) -> None:
        """Keep each row's course: doses given, whether its episode is still running."""
        missing = [k for k in CLOSED_LOOP_INFO if k not in infos]
        if missing:
            raise bad("infos", sorted(infos)[:8], f"the env's info with {missing} (a "
                      "closed-loop planner reads them)")
        cycle = np.asarray(infos["cycle"], dtype=np.int64)
        # A cycle that goes back is a new episode in that row (autoreset): not ours to plan.
        self._active &= cycle >= self._last_cycle
        ended = np.asarray(infos["died"], dtype=bool)
        if self._episodes.scenario.terminate_on_progression:
            ended = ended | np.asarray(infos["progressed"], dtype=bool)
        self._active &= ~ended
        stepped = np.flatnonzero(self._active & (cycle == self._last_cycle + 1))
        self._given[stepped, self._last_cycle[stepped]] = np.asarray(infos["given"])[stepped]
        self._last_cycle = np.where(self._active, cycle, self._last_cycle)

    def _replan(self, obs: Any, infos: dict[str, np.ndarray], rows: np.ndarray,
                cycle: int) -> np.ndarray:
        """New ``(len(rows), horizon - cycle, R)`` plans of the cycles left."""
        from immunegym.env.clinical import MAX_COURSES
        from immunegym.planning.scoring import scorer_for

        t0 = time.perf_counter()
        start = self._episodes
        h = start.scenario.horizon - cycle
        if self.simulator == "world":
            now = episode_now(start, obs, rows, cycle)
            scorer, patients = scorer_for(now, "world", model=self.scoring_model(),
                                          n_samples=self.n_samples, seed=self.seed,
                                          device=self.device, pessimism=self.pessimism)
            prefix = None
        else:
            scorer, bank_rows = self._oracle_scorer()
            patients = bank_rows[rows]
            prefix = self._given[rows, :cycle]
        caps = np.array([MAX_COURSES.get(t, np.inf) for t in THERAPIES])
        left = caps - (self._given[rows, :cycle] > 0).sum(1)
        mask = np.asarray(infos["action_mask"], dtype=bool)[rows]
        # Plans act through multidiscrete levels: (R, levels) masks; a therapy is open if a
        # dose above 0 is (dose_levels_to_actions refuses other action types).
        allowed = mask[..., 1:].any(-1) if mask.ndim == 3 else np.ones(
            (len(rows), len(THERAPIES)), bool)
        stopped = np.asarray(infos["discontinued"], dtype=bool)[rows]

        def feasible(plans: np.ndarray) -> np.ndarray:
            return feasible_plans(plans, left, allowed, stopped)

        def score(p: np.ndarray, plans: np.ndarray) -> np.ndarray:
            plans = feasible(plans)
            if prefix is not None:  # the oracle replays what was given from the baseline
                past = np.broadcast_to(prefix[:, None], (*plans.shape[:2], *prefix.shape[1:]))
                plans = np.concatenate([past, plans], axis=2)
            return scorer(p, plans)

        seeds = np.stack([self.plans[rows, cycle:], self._guideline_plans()[rows, cycle:]], 1)
        result = self.search(score, patients, h, seeds, int(self.rng.integers(2**31 - 1)))
        self.stats.replans[rows] += 1
        self.stats.evaluations[rows] += result.evaluations
        self.stats.searches += 1
        self.stats.seconds += time.perf_counter() - t0
        # Follow the plan as it was scored: no order the env would refuse.
        return feasible(result.plans[:, None])[:, 0]

    def _guideline_plans(self) -> np.ndarray:
        """``(n, H, R)`` each row's guideline regimen (a warm start of every replan)."""
        if self._guideline is None:
            from immunegym.planning.regimen import STANDARD_OF_CARE, standard_of_care

            sc = self._episodes.scenario
            r = self.plans.shape[2]
            self._guideline = np.stack([
                standard_of_care(c).cycle_doses(sc.horizon, sc.cycle_days)
                if c in STANDARD_OF_CARE else np.zeros((sc.horizon, r), np.float32)
                for c in self._episodes.cancer_type]).astype(np.float32)
        return self._guideline

    def _oracle_scorer(self):
        """The oracle's full-horizon scorer and bank rows (drawn once per baseline)."""
        from immunegym.planning.scoring import scorer_for

        start = self._episodes
        key = start.patient_id.tobytes() + repr(start.scenario).encode()
        if self._oracle is None or self._oracle[2] != key:
            scorer, rows = scorer_for(start, "sim", n_samples=self.n_samples, seed=self.seed,
                                      device=self.device, pessimism=self.pessimism)
            self._oracle = (scorer, rows, key)
        return self._oracle[0], self._oracle[1]
