"""Regimen search: batched CEM, beam and exhaustive search over per-cycle dose plans.

Every method searches for all patients at once: a score function takes ``(P, C, H, R)``
candidate plans (dose multiples per patient, candidate, cycle and therapy) and returns
``(P, C)`` expected returns (:class:`~.scoring.EngineScorer` simulates them in the world
model, or in ImmuneSim for the oracle).

* :func:`cem`: the cross-entropy method over a factored categorical distribution (one per
  cycle and therapy over the scenario's dose levels), with elitism;
* :func:`beam`: cycle-by-cycle beam search over a menu of regimens; a partial plan is scored
  by continuing its last regimen to the horizon;
* :func:`exhaustive`: every two-phase plan ``induction xK -> maintenance`` over the menu;
* :func:`search`: ranked regimens for the patients of a cohort (AnnData), within a budget
  of scored plans per patient, fanned out over Ray tasks on request.

Every method returns a :class:`SearchResult` with the best plan per patient and a ranking
of the best distinct plans seen.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from immunegym.planning.regimen import RegimenPlan
from immunegym.validation import (
    ValidationError,
    bad,
    boolean,
    choice,
    did_you_mean,
    existing_file,
    integer,
    memory_budget,
    number,
)
from immunegym.validation import device as validate_device
from immunegym.validation import seed as validate_seed

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``score(patients (P,), plans (P, C, H, R)) -> (P, C)`` expected returns."""

METHODS: tuple[str, ...] = ("cem", "beam", "exhaustive")
MAX_HORIZON = 520
"""Most cycles a plan may span (30 years of 21-day cycles)."""
MAX_BUDGET = 10_000_000
"""Most plans scored per patient by :func:`search`."""
MAX_POPULATION = 100_000
"""Largest CEM population or beam width."""
MAX_ITERATIONS = 100_000
MAX_TOP_K = 1000


def _budget(field: str, value: object, n_bytes: float) -> None:
    memory_budget(field, value, n_bytes, "the candidate plans")


def _levels(levels: object) -> np.ndarray:
    """Dose levels as a non-empty (L,) array of finite values >= 0."""
    try:
        out = np.asarray(levels, dtype=np.float32)
    except (TypeError, ValueError):
        raise bad("levels", levels, "a list of dose levels >= 0") from None
    if out.ndim != 1 or not len(out) or not np.isfinite(out).all() or (out < 0).any():
        raise bad("levels", levels, "a non-empty list of finite dose levels >= 0")
    return out


def _menu(menu: object) -> np.ndarray:
    """A regimen menu as a non-empty (M, R) array of finite dose multiples >= 0."""
    try:
        out = np.asarray(menu, dtype=np.float32)
    except (TypeError, ValueError):
        raise bad("menu", menu, "(M, R) dose multiples, one row per menu regimen") from None
    if out.ndim != 2 or not out.size or not np.isfinite(out).all() or (out < 0).any():
        raise bad("menu", f"<shape {out.shape}>", "a non-empty (M, R) array of finite dose "
                  "multiples >= 0")
    return out


@dataclass
class SearchResult:
    """The outcome of a search for ``P`` patients.

    Attributes
    ----------
    plans
        ``(P, H, R)`` the best plan found per patient (dose multiples).
    values
        ``(P,)`` its expected return under the search's model.
    ranked
        Per patient, the best distinct plans seen as ``(plan, value)``, best first.
    trace
        Per iteration (CEM) or depth (beam), the mean over patients of the best value.
    evaluations
        Plans scored per patient.
    """

    plans: np.ndarray
    values: np.ndarray
    ranked: list[list[tuple[RegimenPlan, float]]] = field(default_factory=list)
    trace: list[float] = field(default_factory=list)
    evaluations: int = 0
    patient_id: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))

    def __repr__(self) -> str:
        n_p = len(self.values)
        shape = "x".join(str(d) for d in np.shape(self.plans)[1:])
        best = f", mean best value {float(np.mean(self.values)):.3g}" if n_p else ""
        return (f"SearchResult(patients={n_p}, plans={shape} (cycles x therapies), "
                f"evaluations={self.evaluations} per patient{best})")

    def table(self):
        """The ranking as a DataFrame: patient_id, rank, regimen, predicted_return."""
        import pandas as pd

        ids = self.patient_id if len(self.patient_id) else np.arange(len(self.ranked))
        return pd.DataFrame([
            {"patient_id": str(pid), "rank": r + 1, "regimen": str(plan),
             "predicted_return": value}
            for pid, ranking in zip(ids, self.ranked, strict=True)
            for r, (plan, value) in enumerate(ranking)])


class _HallOfFame:
    """The ``k`` best distinct plans per patient seen so far."""

    def __init__(self, n_patients: int, k: int) -> None:
        self.k = k
        self.best: list[dict[bytes, tuple[float, np.ndarray]]] = [{} for _ in range(n_patients)]

    def add(self, plans: np.ndarray, values: np.ndarray) -> None:
        for i, (pp, vv) in enumerate(zip(plans, values, strict=True)):
            book = self.best[i]
            seen: set[bytes] = set()
            for j in np.argsort(-vv, kind="stable"):
                # The k best *distinct* plans of the batch (a population repeats plans).
                key = pp[j].tobytes()
                if key in seen:
                    continue
                seen.add(key)
                if key not in book or book[key][0] < vv[j]:
                    book[key] = (float(vv[j]), pp[j].copy())
                if len(seen) == self.k:
                    break
            if len(book) > self.k:
                keep = sorted(book.items(), key=lambda kv: -kv[1][0])[: self.k]
                self.best[i] = dict(keep)

    def mean_best(self) -> float:
        """Mean over patients of the best value so far."""
        return float(np.mean([max(v for v, _ in book.values()) for book in self.best]))

    def result(self, trace: list[float], evaluations: int) -> SearchResult:
        ranked, plans, values = [], [], []
        for book in self.best:
            items = sorted(book.values(), key=lambda vp: -vp[0])
            ranked.append([(RegimenPlan.from_cycle_doses(p), v) for v, p in items])
            values.append(items[0][0])
            plans.append(items[0][1])
        return SearchResult(np.stack(plans), np.asarray(values), ranked, trace, evaluations)


def _check(patients: np.ndarray, horizon: int, n_therapies: int,
           seeds: np.ndarray | None, score: object = None, top_k: int = 5) -> np.ndarray | None:
    if score is not None and not callable(score):
        raise bad("score", score, "a function score(patients, plans) -> (P, C) values")
    integer("horizon", horizon, low=1, high=MAX_HORIZON)
    integer("n_therapies", n_therapies, low=1, high=1024)
    integer("top_k", top_k, low=1, high=MAX_TOP_K)
    if np.ndim(patients) != 1 or len(patients) == 0:
        raise bad("patients", f"<shape {np.shape(patients)}>", "a non-empty (P,) array of "
                  "patient rows")
    if seeds is None:
        return None
    try:
        seeds = np.asarray(seeds, dtype=np.float32)
    except (TypeError, ValueError):
        raise bad("seeds", seeds, "(patients, M, horizon, therapies) dose plans") from None
    if not np.isfinite(seeds).all() or (seeds < 0).any():
        raise bad("seeds", "<plans with negative or non-finite doses>",
                  "finite dose multiples >= 0")
    want = (len(patients), horizon, n_therapies)
    if seeds.ndim != 4 or (seeds.shape[0], *seeds.shape[2:]) != want:
        raise ValidationError(f"seeds: shape {seeds.shape}; expected (patients, M, horizon, "
                         f"therapies) = ({want[0]}, M, {want[1]}, {want[2]})")
    return seeds


def cem(score: ScoreFn, patients: np.ndarray, horizon: int, levels: Sequence[float], *,
        n_therapies: int = 5, population: int = 64, iterations: int = 5,
        elite_fraction: float = 0.125, smoothing: float = 0.25,
        seeds: np.ndarray | None = None, top_k: int = 5, seed: int = 0,
        progress: Callable[[int, float], None] | None = None) -> SearchResult:
    """Cross-entropy method over per-cycle, per-therapy dose levels.

    Parameters
    ----------
    score
        The score function (:data:`ScoreFn`).
    patients
        ``(P,)`` patient rows passed to ``score``.
    horizon
        Cycles ``H`` per plan.
    levels
        Dose levels a therapy may take in a cycle (``scenario.dose_levels``).
    n_therapies
        ``R``.
    population
        Plans sampled per patient and iteration.
    iterations
        CEM iterations.
    elite_fraction
        Share of the population that updates the distribution.
    smoothing
        Weight of the old distribution in the update (keeps exploring).
    seeds
        ``(P, M, H, R)`` plans put into the first population (e.g. standard of care), so
        the search never ends below them in its own model.
    top_k
        Distinct plans ranked per patient.
    seed
        Seed of the sampling generator.
    progress
        Called with ``(iteration, mean best value)`` after each iteration.
    """
    patients = np.asarray(patients)
    seeds = _check(patients, horizon, n_therapies, seeds, score, top_k)
    population = integer("population", population, low=2, high=MAX_POPULATION)
    iterations = integer("iterations", iterations, low=1, high=MAX_ITERATIONS)
    number("elite_fraction", elite_fraction, low=0.0, high=1.0, low_open=True)
    number("smoothing", smoothing, low=0.0, high=1.0, high_open=True)
    levels = _levels(levels)
    # Candidates (P, population, H, R) and the categorical probabilities (P, H, R, levels).
    _budget("population", population, 4 * len(patients) * population * horizon
            * n_therapies * (2 + len(levels)))
    rng = np.random.default_rng(validate_seed("seed", seed))
    n_p, n_l = len(patients), len(levels)
    probs = np.full((n_p, horizon, n_therapies, n_l), 1.0 / n_l)
    n_elite = max(1, int(round(elite_fraction * population)))
    hall = _HallOfFame(n_p, top_k)
    best_plan: np.ndarray | None = None
    trace: list[float] = []
    for it in range(iterations):
        cdf = np.cumsum(probs, -1)
        u = rng.random((n_p, population, horizon, n_therapies, 1))
        index = np.minimum((u > cdf[:, None]).sum(-1), n_l - 1)
        cand = levels[index]
        if it == 0 and seeds is not None:
            m = min(seeds.shape[1], population - 1)
            cand[:, :m] = seeds[:, :m]
        if best_plan is not None:  # elitism: the best so far competes again
            cand[:, 0] = best_plan
        values = score(patients, cand)
        hall.add(cand, values)
        order = np.argsort(-values, axis=1)[:, :n_elite]
        elite = np.take_along_axis(cand, order[:, :, None, None], axis=1)
        elite_index = np.abs(elite[..., None] - levels).argmin(-1)
        freq = np.eye(n_l)[elite_index].mean(1)
        probs = (1 - smoothing) * freq + smoothing * probs
        best_plan = np.take_along_axis(cand, order[:, :1, None, None], axis=1)[:, 0]
        trace.append(hall.mean_best())
        if progress is not None:
            progress(it, trace[-1])
    return hall.result(trace, population * iterations)


def _continued(prefix: np.ndarray, option: np.ndarray, horizon: int) -> np.ndarray:
    """``prefix`` (``(..., d, R)``) then ``option`` (``(..., R)``) to the horizon."""
    d = prefix.shape[-2]
    tail = np.broadcast_to(option[..., None, :], (*option.shape[:-1], horizon - d,
                                                  option.shape[-1]))
    return np.concatenate([prefix, tail], axis=-2)


def beam(score: ScoreFn, patients: np.ndarray, horizon: int, menu: np.ndarray, *,
         width: int = 4, seeds: np.ndarray | None = None, top_k: int = 5,
         progress: Callable[[int, float], None] | None = None) -> SearchResult:
    """Beam search over the regimen chosen each cycle from a menu.

    Parameters
    ----------
    score, patients, horizon, seeds, top_k, progress
        As for :func:`cem` (``progress`` gets the depth).
    menu
        ``(M, R)`` dose multiples of the regimens a cycle may take.
    width
        Partial plans kept per patient after each cycle.
    """
    patients = np.asarray(patients)
    menu = _menu(menu)
    n_p, (n_m, n_r) = len(patients), menu.shape
    seeds = _check(patients, horizon, n_r, seeds, score, top_k)
    width = integer("width", width, low=1, high=MAX_POPULATION)
    _budget("width", width, 4 * 3 * n_p * width * n_m * horizon * n_r)
    hall = _HallOfFame(n_p, top_k)
    evaluations = 0
    if seeds is not None:
        hall.add(seeds, score(patients, seeds))
        evaluations += seeds.shape[1]
    prefix = np.zeros((n_p, 1, 0, n_r), dtype=np.float32)
    trace: list[float] = []
    for depth in range(horizon):
        n_b = prefix.shape[1]
        grown = np.repeat(prefix, n_m, axis=1)  # (P, B*M, d, R)
        option = np.tile(menu, (n_b, 1))[None].repeat(n_p, 0)  # (P, B*M, R)
        cand = _continued(grown, option, horizon)
        values = score(patients, cand)
        evaluations += cand.shape[1]
        hall.add(cand, values)
        keep = np.argsort(-values, axis=1)[:, :width]
        prefix = np.take_along_axis(cand[:, :, : depth + 1], keep[:, :, None, None], axis=1)
        trace.append(hall.mean_best())
        if progress is not None:
            progress(depth, trace[-1])
    return hall.result(trace, evaluations)


def exhaustive(score: ScoreFn, patients: np.ndarray, horizon: int, menu: np.ndarray, *,
               switch_cycles: Sequence[int] | None = None, seeds: np.ndarray | None = None,
               top_k: int = 5) -> SearchResult:
    """Every plan ``a xK -> b`` over the menu (induction ``a`` for ``K`` cycles, then ``b``).

    Parameters
    ----------
    switch_cycles
        The ``K`` tried (default: every other cycle, ``2, 4, ...`` below the horizon).
    """
    patients = np.asarray(patients)
    menu = _menu(menu)
    n_p, (n_m, n_r) = len(patients), menu.shape
    seeds = _check(patients, horizon, n_r, seeds, score, top_k)
    ks = list(switch_cycles) if switch_cycles is not None else list(range(2, horizon, 2))
    outside = [k for k in ks if not isinstance(k, int | np.integer) or not 0 < k < horizon]
    if outside:
        raise bad("switch_cycles", outside, f"cycles in 1..{horizon - 1}")
    # The whole tree is scored at once: (P, plans, H, R) float32, twice (stack, broadcast).
    n_plans = n_m + n_m * (n_m - 1) * len(ks)
    _budget("horizon", horizon, 2 * 4 * n_p * n_plans * horizon * n_r)
    plans = [np.repeat(menu[a][None], horizon, 0) for a in range(n_m)]
    for a in range(n_m):
        for b in range(n_m):
            if a != b:
                for k in ks:
                    plans.append(np.concatenate([np.repeat(menu[a][None], k, 0),
                                                 np.repeat(menu[b][None], horizon - k, 0)]))
    cand = np.broadcast_to(np.stack(plans)[None], (n_p, len(plans), horizon, n_r))
    if seeds is not None:
        cand = np.concatenate([seeds, cand], axis=1)
    values = score(patients, np.ascontiguousarray(cand))
    hall = _HallOfFame(n_p, top_k)
    hall.add(np.ascontiguousarray(cand), values)
    return hall.result([float(values.max(1).mean())], cand.shape[1])


def search(history, budget: int = 256, *, patients: Sequence[str] | None = None,
           method: str = "cem", horizon: int = 8, model=None, scenario=None, top_k: int = 5,
           n_samples: int | None = None, seed: int = 0, device: str = "cpu",
           ray: bool = False, address: str | None = None,
           num_tasks: int | None = None) -> SearchResult:
    """Ranked regimens for the patients of a cohort, from their baseline biopsy and scan.

    The planner sees what the clinic saw before the first therapy (each patient's first
    biopsy and first scan), and plans every patient at once in the world model with the
    env's reward and clinical rules (:class:`~.scoring.EngineScorer`). The guideline
    regimen of each patient's cancer type is among the candidates.

    Parameters
    ----------
    history
        A registered AnnData (:func:`immunegym.data.setup_anndata`) or an ``.h5ad`` path.
    budget
        Plans scored per patient: CEM runs ``budget // population`` iterations of a
        population of ``min(64, budget // 2)``; beam keeps ``budget // (horizon * menu)``
        partial plans; exhaustive scores its whole tree whatever the budget.
    patients
        Patient ids to plan for (all when ``None``).
    method
        ``"cem"``, ``"beam"`` or ``"exhaustive"``.
    horizon
        Cycles planned.
    model
        World model (the pretrained default when ``None``).
    scenario
        Reward and rules (default: :func:`~.evaluate.leaderboard_scenario`).
    top_k
        Plans ranked per patient.
    n_samples, seed, device
        Simulations per plan, seed, torch device.
    ray, address, num_tasks
        Fan patients out over ``num_tasks`` Ray tasks (default: the cluster's CPUs) on the
        cluster at ``address`` (a local one when ``None``).

    Returns
    -------
    SearchResult
        Best plans and rankings in the order of ``patients`` (``.table()`` for a frame).

    Notes
    -----
    The random draws (CEM's sampling, the simulations' common random numbers) belong to a
    batch of patients, so a patient's plan depends on which patients share its batch: a
    Ray run equals local runs of the same patient groups, not one local run of everyone.
    """
    from immunegym.env.patients import PatientBank
    from immunegym.planning.evaluate import leaderboard_scenario

    choice("method", method, METHODS)
    budget = integer("budget", budget, low=2, high=MAX_BUDGET,
                     hint="plans scored per patient")
    horizon = integer("horizon", horizon, low=1, high=MAX_HORIZON)
    top_k = integer("top_k", top_k, low=1, high=MAX_TOP_K)
    if n_samples is not None:
        n_samples = integer("n_samples", n_samples, low=1, high=10_000)
    seed = validate_seed("seed", seed)
    device = validate_device("device", device)
    boolean("ray", ray)
    if num_tasks is not None:
        num_tasks = integer("num_tasks", num_tasks, low=1, high=100_000)
    if address is not None and not isinstance(address, str):
        raise bad("address", address, "a Ray address (text) or None")
    if patients is not None:
        if isinstance(patients, str) or not hasattr(patients, "__iter__"):
            raise bad("patients", patients, "a non-empty list of patient ids or None (all)")
        patients = list(patients)
        if not patients:
            raise bad("patients", patients, "a non-empty list of patient ids or None (all)")
    if model is not None and not hasattr(model, "members"):
        raise bad("model", model, "a WorldModel or None (the pretrained default)")
    if isinstance(history, (str, bytes)) or hasattr(history, "__fspath__"):
        import anndata as ad

        history = ad.read_h5ad(existing_file("history", os.fsdecode(history), hdf5=True))
    elif not (hasattr(history, "obs") and hasattr(history, "uns")):
        raise bad("history", f"<{type(history).__name__}>", "an AnnData registered with "
                  "setup_anndata or a path to an .h5ad")
    if model is None:
        from immunegym.world_model import load

        model = load(device=device)
    bank = PatientBank.from_anndata(history, prior=model.leaf_prior(), seed=seed,
                                    device=device)
    if patients is None:
        rows = np.arange(len(bank))
    else:
        known = set(bank.patient_id.astype(str).tolist())
        missing = [str(p) for p in patients if str(p) not in known]
        if missing:
            ids = sorted(known)
            tip = did_you_mean(missing[0], ids)
            raise bad("patients", missing[:5], f"patient ids of the history ({len(ids)} "
                      f"patients, e.g. {ids[:5]}){tip}")
        rows = np.asarray([bank.index_of(str(p)) for p in patients])
    scenario = scenario or leaderboard_scenario(horizon=horizon)
    scenario = scenario.updated(horizon=horizon)
    settings = {"method": method, "budget": budget, "scenario": scenario, "top_k": top_k,
                "n_samples": n_samples, "seed": seed, "device": device}
    if not ray:
        return _search_rows(bank, rows, model, **settings)
    import ray as ray_

    started = not ray_.is_initialized()
    if started:
        ray_.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        n_tasks = num_tasks or max(1, int(ray_.cluster_resources().get("CPU", 1)))
        chunks = [c for c in np.array_split(rows, min(n_tasks, len(rows))) if len(c)]
        task = ray_.remote(_search_rows)
        model_ref = ray_.put(model)
        parts = ray_.get([task.remote(bank, chunk, model_ref, **settings) for chunk in chunks])
    finally:
        if started:
            ray_.shutdown()
    return SearchResult(np.concatenate([p.plans for p in parts]),
                        np.concatenate([p.values for p in parts]),
                        [r for p in parts for r in p.ranked], [],
                        parts[0].evaluations, np.concatenate([p.patient_id for p in parts]))


def _search_rows(bank, rows: np.ndarray, model, *, method: str, budget: int, scenario,
                 top_k: int, n_samples: int | None, seed: int, device: str) -> SearchResult:
    """Search for bank ``rows`` in one process (a Ray task when fanned out)."""
    from immunegym.env.spaces import ActionCodec
    from immunegym.planning.regimen import STANDARD_OF_CARE, standard_of_care
    from immunegym.planning.scoring import EngineScorer, _typical_tox

    # The planner does not know how prone a patient is to toxicity: the population typical.
    bank.tox = _typical_tox(bank.cancer_type, len(bank), str(bank.sod_mm.device))
    scorer = EngineScorer("world", scenario, bank, model=model, n_samples=n_samples,
                          seed=seed, device=device)
    h = scenario.horizon
    guideline = np.stack([standard_of_care(c).cycle_doses(h, scenario.cycle_days)
                          if c in STANDARD_OF_CARE else np.zeros((h, 5), np.float32)
                          for c in bank.cancer_type[rows]])[:, None]
    if method == "cem":
        population = max(2, min(64, budget // 2))
        result = cem(scorer, rows, h, scenario.dose_levels, population=population,
                     iterations=max(1, budget // population), seeds=guideline, top_k=top_k,
                     seed=seed)
    else:
        menu = ActionCodec(scenario.updated(action_type="menu")).menu_doses
        if method == "beam":
            width = max(1, budget // (h * len(menu)))
            result = beam(scorer, rows, h, menu, width=width, seeds=guideline, top_k=top_k)
        else:
            result = exhaustive(scorer, rows, h, menu, seeds=guideline, top_k=top_k)
    result.patient_id = bank.patient_id[rows].astype(str)
    return result
