"""What the four evaluation benchmarks share: held-out data, statistics and parallel maps.

The reconstruction, transfer, counterfactual and response benchmarks
(``immunegym bench <name>``) all judge the world model on virtual patients it never saw,
against ImmuneSim's hidden truth, with a bootstrap 95% interval on every figure. This module
holds the pieces they share so that each benchmark module is only its own protocol:

* :class:`BenchContext`: the model under test and lazily built, cached data: the *fresh*
  cohorts (the 14 default-suite cohorts regenerated with new seeds, so every patient is
  unseen) with their hidden truth, and the default suite the model was trained on;
* :func:`day0_states`: ImmuneSim's day-0 hidden state of a cohort's patients, regenerated
  exactly from the cohort's seed (to branch a patient into counterfactual regimens, or to
  compute the Bayes-limit response probability);
* :func:`bootstrap_mean`, :func:`bootstrap_auroc`, :func:`mean_block`,
  :func:`auroc_block`: figures with cluster-bootstrap intervals in one JSON shape;
* :func:`parallel_map`: run folds or cohorts serially or as Ray tasks (``--ray``).

JSON shape of a method comparison (a *block*)::

    {"world_model": 0.31, "nearest": 0.42, ..., "ci95": {"world_model": [0.28, 0.34], ...},
     "n": 412}

so ``block["world_model"]`` is always the point value the issue contracts name.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from immunegym.sim.cohort import CohortSpec
from immunegym.sim.suite import DEFAULT_SUITE
from immunegym.validation import ValidationError

T = TypeVar("T")
R = TypeVar("R")

N_BOOTSTRAP = 1000
"""Bootstrap resamples behind every 95% interval."""

FRESH_SEED_OFFSET = 1000
"""Seed offset of the fresh cohorts (the same as ``bench world-model``'s fresh set)."""

QUICK_FRESH_PATIENTS = 30
"""Patients per fresh cohort in ``--quick`` runs (60, the suite's size, otherwise)."""

TASK_RETRIES = 3
"""Ray retries of a benchmark task whose worker died."""


# --------------------------------------------------------------------------- statistics
def bootstrap_mean(values: np.ndarray, groups: np.ndarray | None = None, *, seed: int = 0,
                   n: int = N_BOOTSTRAP) -> list[float]:
    """95% percentile interval of the mean of ``values``, resampling ``groups`` (clusters).

    ``groups`` (one label per value, e.g. the patient) makes it a cluster bootstrap: the
    values of one patient are drawn together. Without groups every value is its own cluster.
    NaN values are dropped first.
    """
    values = np.asarray(values, dtype=float)
    groups = np.arange(len(values)) if groups is None else np.asarray(groups)
    keep = ~np.isnan(values)
    values, groups = values[keep], groups[keep]
    if not len(values):
        return [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(groups, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse)
    draws = rng.integers(0, len(sums), (n, len(sums)))
    means = sums[draws].sum(1) / counts[draws].sum(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn); NaN when only one class is present.

    Rows with a NaN score or label are dropped.
    """
    labels, scores = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    keep = ~(np.isnan(labels) | np.isnan(scores))
    labels, scores = labels[keep], scores[keep]
    if len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels.astype(int), scores))


def bootstrap_weights(groups: np.ndarray, *, seed: int = 0, n: int = N_BOOTSTRAP
                      ) -> np.ndarray:
    """``(n, N)`` multiplicity of each of ``N`` items in ``n`` cluster-bootstrap draws.

    Each draw resamples the distinct ``groups`` with replacement; an item counts as many
    times as its group was drawn.
    """
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(inverse.max()) + 1 if len(inverse) else 0
    counts = np.zeros((n, n_groups))
    for b in range(n):
        counts[b] = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
    return counts[:, inverse]


def weighted_aurocs(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray
                    ) -> np.ndarray:
    """AUROC of ``scores`` under each row of item ``weights`` (ties count one half).

    Row ``b`` equals :func:`sklearn.metrics.roc_auc_score` on the data that repeat item
    ``i`` ``weights[b, i]`` times (one matrix product per score instead of a call per
    draw); NaN where a row leaves one class only.
    """
    labels = np.asarray(labels, dtype=float)
    _, tie = np.unique(np.asarray(scores, dtype=float), return_inverse=True)
    onehot = np.zeros((len(labels), int(tie.max()) + 1 if len(tie) else 0))
    onehot[np.arange(len(labels)), tie] = 1.0
    pos = (weights * (labels == 1)) @ onehot  # (B, T) positives at each distinct score
    neg = (weights * (labels == 0)) @ onehot
    below = np.cumsum(neg, 1) - neg
    num = (pos * (below + 0.5 * neg)).sum(1)
    den = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def bootstrap_auroc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None,
                    *, seed: int = 0, n: int = N_BOOTSTRAP) -> list[float]:
    """95% percentile interval of the AUROC, resampling ``groups`` (or items).

    Resamples that contain a single class have no AUROC and are skipped; with fewer than
    half the resamples usable the interval is NaN. Rows with a NaN label or score are
    dropped first.
    """
    labels, scores = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    keep = ~(np.isnan(labels) | np.isnan(scores))
    labels, scores = labels[keep], scores[keep]
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)[keep]
    if len(np.unique(labels)) < 2:
        return [math.nan, math.nan]
    values = weighted_aurocs(labels, scores, bootstrap_weights(groups, seed=seed, n=n))
    values = values[~np.isnan(values)]
    if len(values) < n // 2:
        return [math.nan, math.nan]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def paired_auroc_delta(labels: np.ndarray, a: np.ndarray, b: np.ndarray,
                       groups: np.ndarray | None = None, *, seed: int = 0,
                       n: int = N_BOOTSTRAP) -> dict[str, Any]:
    """AUROC(a) - AUROC(b) on the same labels, with a paired cluster-bootstrap 95% CI."""
    labels = np.asarray(labels, dtype=float)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    weights = bootstrap_weights(groups, seed=seed, n=n)
    diff = weighted_aurocs(labels, a, weights) - weighted_aurocs(labels, b, weights)
    diff = diff[~np.isnan(diff)]
    ci = ([float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))]
          if len(diff) >= n // 2 else [math.nan, math.nan])
    return {"value": auroc(labels, a) - auroc(labels, b), "ci95": ci}


def mean_block(values: dict[str, np.ndarray], groups: np.ndarray | None = None, *,
               seed: int = 0, n: int = N_BOOTSTRAP) -> dict[str, Any]:
    """Means of per-item values of several methods, each with a cluster-bootstrap 95% CI.

    Every method is resampled with the same seed, so the draws pair the same patients.
    """
    out: dict[str, Any] = {name: finite_mean(v) for name, v in values.items()}
    out["ci95"] = {name: bootstrap_mean(v, groups, seed=seed, n=n)
                   for name, v in values.items()}
    out["n"] = int(len(next(iter(values.values())))) if values else 0
    return out


def auroc_block(labels: np.ndarray, scores: dict[str, np.ndarray],
                groups: np.ndarray | None = None, *, seed: int = 0,
                n: int = N_BOOTSTRAP) -> dict[str, Any]:
    """AUROC of several scores (higher = responder) on the same labels, with 95% CIs."""
    labels = np.asarray(labels, dtype=float)
    out: dict[str, Any] = {name: auroc(labels, s) for name, s in scores.items()}
    out["ci95"] = {name: bootstrap_auroc(labels, s, groups, seed=seed, n=n)
                   for name, s in scores.items()}
    out["n"] = int((~np.isnan(labels)).sum())
    out["n_positive"] = int(np.nansum(labels))
    return out


def format_ci(value: float | None, ci: Sequence[float | None] | None = None, *,
              digits: int = 3, ci_digits: int | None = None) -> str:
    """``"0.812 [0.790, 0.834]"`` for report tables; ``"–"`` for a missing or NaN value, and
    no interval when it is missing."""
    def finite(x: Any) -> bool:
        return isinstance(x, (int, float, np.floating)) and math.isfinite(float(x))

    if not finite(value):
        return "–"
    text = f"{value:.{digits}f}"
    if ci is not None and len(ci) == 2 and all(finite(c) for c in ci):
        d = digits if ci_digits is None else ci_digits
        text += f" [{ci[0]:.{d}f}, {ci[1]:.{d}f}]"
    return text


def finite_mean(values: Sequence[float | None] | np.ndarray) -> float:
    """Mean of the finite values (``None`` and NaN left out); NaN when there are none."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else math.nan


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays made plain and NaN/inf turned into ``None``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    return value


# --------------------------------------------------------------------------- parallelism
def parallel_map(fn: Callable[[T], R], items: Iterable[T], *, ray: bool = False,
                 address: str | None = None, num_cpus: float = 1.0,
                 shutdown: bool = True) -> list[R]:
    """``[fn(x) for x in items]``, or the same as Ray tasks (one per item) when ``ray``.

    ``fn`` must be a module-level function (Ray pickles it by reference). Results come back
    in the order of ``items``. Ray starts locally unless ``address`` names a cluster; a Ray
    instance this call started is shut down afterwards unless ``shutdown`` is False.
    """
    items = list(items)
    if not ray:
        return [fn(x) for x in items]
    import ray as ray_lib

    started = not ray_lib.is_initialized()
    if started:
        ray_lib.init(address=address, include_dashboard=False, log_to_driver=False,
                     ignore_reinit_error=True)
    try:
        # Items are deterministic functions of their input: a task whose worker died is
        # simply run again.
        remote = ray_lib.remote(num_cpus=num_cpus, max_retries=TASK_RETRIES)(fn)
        return ray_lib.get([remote.remote(x) for x in items])
    finally:
        if started and shutdown:
            ray_lib.shutdown()


# --------------------------------------------------------------------------- world model
def protocol_cycle_doses(regimen: str, n_cycles: int) -> np.ndarray:
    """``(n_cycles, R)`` dose intensity per 21-day cycle of an ImmuneSim regimen's protocol.

    The regimen is laid out exactly as ImmuneSim gives it
    (:func:`immunegym.sim.therapy.dose_calendar`: standard schedules, e.g. chemotherapy
    q3w x4, anti-CTLA-4 x4, radiotherapy one course) and summed per cycle in standard-cycle
    units (:data:`~immunegym.world_model.timelines.STANDARD_CYCLE_DOSE`), the unit of the
    world model's doses. It is the plan, not what was given: holds and stops are left out.

    Raises
    ------
    ValueError
        If ``regimen`` is not an ImmuneSim regimen or ``n_cycles`` is not positive.
    """
    from immunegym.data.vocab import THERAPIES
    from immunegym.sim.therapy import dose_calendar, parse_regimen
    from immunegym.world_model.timelines import CYCLE_DAYS, STANDARD_CYCLE_DOSE

    if not isinstance(n_cycles, (int, np.integer)) or n_cycles < 1:
        raise ValidationError(f"n_cycles: expected a positive integer, got {n_cycles!r}")
    calendar = dose_calendar(parse_regimen(regimen), int(n_cycles) * CYCLE_DAYS)
    unit = np.array([STANDARD_CYCLE_DOSE[t] for t in THERAPIES])
    return calendar.reshape(int(n_cycles), CYCLE_DAYS, -1).sum(1) / unit


def aligned_doses(regimens: Sequence[str], start_day: np.ndarray, n_cycles: int
                  ) -> np.ndarray:
    """``(P, H, R)`` protocol doses per rollout step, for steps that start at ``start_day``.

    Step ``h`` covers days ``(start + 21 h, start + 21 (h + 1)]`` of the protocol, so a
    patient whose baseline is day 5 gets the protocol from day 5 on.
    """
    from immunegym.world_model.events import interval_dose
    from immunegym.world_model.timelines import CYCLE_DAYS

    start = np.asarray(start_day, dtype=np.float32)
    if len(regimens) != len(start):
        raise ValidationError(f"regimens: {len(regimens)} regimens for {len(start)} start days; "
                         "expected one per patient")
    total = n_cycles + int(math.ceil(float(start.max(initial=0.0)) / CYCLE_DAYS)) + 1
    table = {r: protocol_cycle_doses(r, total) for r in set(regimens)}
    cycles = torch.as_tensor(np.stack([table[r] for r in regimens]), dtype=torch.float32)
    edges = torch.as_tensor(start)[:, None] + torch.arange(n_cycles + 1) * float(CYCLE_DAYS)
    return interval_dose(cycles, edges[:, :-1], edges[:, 1:]).numpy()


def regimen_doses(regimen: str, n_patients: int, n_cycles: int) -> np.ndarray:
    """``(P, H, R)`` doses of an ImmuneSim regimen (``"chemo+anti_pd1"``) from day 0.

    What ImmuneSim gives under that regimen name (:func:`protocol_cycle_doses`), so a world
    model fed these doses is asked about the same therapy the simulator's truth received.
    """
    doses = protocol_cycle_doses(regimen, n_cycles).astype(np.float32)
    return np.repeat(doses[None], n_patients, axis=0)


def plan_doses(plan: str, n_patients: int, n_cycles: int) -> np.ndarray:
    """``(P, H, R)`` doses of a regimen plan in the planning grammar
    (:func:`~immunegym.planning.regimen.parse_plan`, e.g. ``"anti_ctla4 x4 -> anti_pd1"``;
    a bare drug name there means its standard course, as in ImmuneSim: chemo and
    anti_ctla4 x4, anti_pd1 up to 35 doses)."""
    from immunegym.planning.regimen import parse_plan

    doses = parse_plan(plan).cycle_doses(n_cycles).astype(np.float32)
    return np.repeat(doses[None], n_patients, axis=0)


def mean_path_outcomes(model, tl, doses: np.ndarray) -> dict[str, np.ndarray]:
    """Outcomes of the world model's mean path (ensemble average) under per-patient doses.

    Parameters
    ----------
    model
        A :class:`~immunegym.world_model.WorldModel`.
    tl
        Observed histories; the rollout starts at each patient's last time point.
    doses
        ``(P, H, R)`` dose intensities per cycle.

    Returns
    -------
    dict
        ``final_log_sod`` ``(P,)`` (log1p mm after ``H`` cycles); ``best_change`` ``(P,)``:
        the lowest predicted SOD over the ``H`` cycles relative to the baseline (the last
        scan in the history, else the first predicted cycle), minus 1, so ``-0.3`` is a
        RECIST partial response; ``log_sod`` ``(P, H)``; ``composition`` ``(P, H, K)``.
    """
    rollout = model.rollout(tl, doses, noise="none")
    log_sod = rollout.burden.mean(0).cpu().numpy().astype(np.float64)
    composition = rollout.compositions.mean(0).cpu().numpy().astype(np.float64)
    observed = tl.burden_observed.numpy()
    last = np.where(observed, np.arange(observed.shape[1])[None], -1).max(1)
    base = np.where(last >= 0, tl.burden.numpy()[np.arange(len(tl)), last.clip(0)],
                    log_sod[:, 0])
    sod = np.expm1(log_sod)
    best_change = sod.min(1) / np.maximum(np.expm1(base), 1e-6) - 1.0
    return {"final_log_sod": log_sod[:, -1], "best_change": best_change, "log_sod": log_sod,
            "composition": composition}


def model_leaf_prior(model, tl=None) -> np.ndarray:
    """``(K,)`` split of coarse-labeled mass over leaves: the model's own leaf prior; for a
    model without one (unfitted), the within-block prior of ``tl``, else an even split."""
    prior = model.leaf_prior()
    if prior is not None:
        return prior.cpu().numpy().astype(np.float64)
    if tl is not None:
        from immunegym.world_model.timelines import within_block_prior

        return within_block_prior(tl)
    return np.full(len(model.config.types), 1.0 / len(model.config.types))


# --------------------------------------------------------------------------- data
def fresh_specs(n_patients: int | None = None, offset: int = FRESH_SEED_OFFSET
                ) -> list[CohortSpec]:
    """The default suite's 14 cohorts with new seeds: the same designs, unseen patients."""
    specs = [replace(s, name=f"{s.name}_fresh", seed=s.seed + offset) for s in DEFAULT_SUITE]
    if n_patients is not None:
        specs = [replace(s, n_patients=int(n_patients)) for s in specs]
    return specs


def day0_states(spec: CohortSpec, *, device: str = "cpu"):
    """ImmuneSim's patients and day-0 hidden state of a cohort, exactly as it drew them.

    :func:`~immunegym.sim.cohort.simulate_cohort` draws the patients and relaxes them to day
    0 from a simulator seeded with ``spec.seed`` before anything else touches its generator,
    so repeating those two calls gives the same patients and the same state.

    Returns
    -------
    (ImmuneSim, Patients, SimState)
        The simulator (its generator is now past day 0: re-seed it before branching).
    """
    from immunegym.sim import ImmuneSim

    sim = ImmuneSim(device=device, seed=spec.seed)
    patients = sim.sample_patients(spec.cancer_type, spec.n_patients)
    patients, state = sim.reset(patients)
    return sim, patients, state


@dataclass
class HeldOutCohort:
    """One fresh cohort: its spec, the lab's AnnData and ImmuneSim's hidden truth."""

    spec: CohortSpec
    adata: Any
    truth: Any  # immunegym.sim.cohort.HiddenTruth


class BenchContext:
    """The model under test and the data every benchmark draws from, built once.

    Parameters
    ----------
    model
        The world model; the pretrained default when ``None``.
    quick
        Smaller data and settings (``--quick``: <= 10 minutes on 2 CPU cores in all).
    seed
        Seed of every bootstrap and sampled rollout.
    ray, address
        Run folds and cohorts as Ray tasks (local Ray, or the cluster at ``address``).
    suite_dir
        A directory from ``immunegym data make-suite`` holding the training suite; generated
        in memory when ``None``.
    progress
        Called with a short message as data is generated.
    specs
        The held-out cohorts; :func:`fresh_specs` (30 patients each with ``quick``, else 60)
        when ``None``. Tests pass one or two small cohorts.
    real_only
        The response benchmark skips its synthetic cohorts (``bench response --real-only``).
    """

    def __init__(self, model=None, *, quick: bool = False, seed: int = 0, ray: bool = False,
                 address: str | None = None, suite_dir: str | Path | None = None,
                 progress: Callable[[str], None] | None = None,
                 specs: Sequence[CohortSpec] | None = None, real_only: bool = False) -> None:
        from immunegym import validation as v

        v.seed("seed", seed)
        self.real_only = v.boolean("real_only", real_only)
        if address is not None and not ray:
            raise v.bad("address", address, "to be given together with ray=True")
        self._model = model
        self.specs = list(specs) if specs is not None else None
        self._ray_started = False
        self.quick, self.seed, self.ray, self.address = bool(quick), int(seed), bool(ray), address
        self.suite_dir = suite_dir
        self.progress = progress or (lambda message: None)

    @cached_property
    def model(self):
        """The world model under test."""
        if self._model is None:
            from immunegym.world_model import load

            self._model = load()
        return self._model

    @property
    def fresh_cohort_specs(self) -> list[CohortSpec]:
        """Specs of the held-out cohorts."""
        if self.specs is not None:
            return self.specs
        return fresh_specs(QUICK_FRESH_PATIENTS if self.quick else None)

    @cached_property
    def fresh(self) -> list[HeldOutCohort]:
        """The held-out cohorts (all patients unseen by the pretrained model)."""
        from immunegym.sim.cohort import simulate_cohort

        out = []
        for spec in self.fresh_cohort_specs:
            cohort = simulate_cohort(spec)
            out.append(HeldOutCohort(spec, cohort.adata, cohort.truth))
            self.progress(f"generated {spec.name}")
        return out

    @cached_property
    def fresh_timelines(self):
        """Observed timelines of the fresh cohorts, in cohort order."""
        from immunegym.world_model.timelines import build_timelines, concat_timelines

        return concat_timelines([build_timelines(c.adata) for c in self.fresh])

    @cached_property
    def suite_data(self):
        """The default suite's timelines and, where known, hidden truth on their grid
        (:class:`~immunegym.world_model.recipe.TrainingData`)."""
        from immunegym.world_model.recipe import Recipe, load_training_data

        source = "default" if self.suite_dir is None else str(self.suite_dir)
        return load_training_data(Recipe(suite=source),
                                  lambda name: self.progress(f"suite {name}"))

    @cached_property
    def suite_timelines(self):
        """Observed timelines of the default suite (the pretrained model's suite cohorts)."""
        return self.suite_data.timelines

    @property
    def suite_truth(self):
        """The suite's hidden truth on the timelines' grid, or None when the timelines were
        supplied some other way (then they carry no truth that matches them)."""
        data = self.__dict__.get("suite_data")
        if data is not None and data.timelines is self.suite_timelines:
            return data.truth
        return None

    @cached_property
    def suite_split(self) -> np.ndarray:
        """``"train"``/``"val"``/``"test"`` per suite patient, as the model's card records."""
        from immunegym.world_model.timelines import split_patients

        info = dict((self.model.card or {}).get("split", {}))
        return split_patients(self.suite_timelines.patient_ids,
                              test_fraction=float(info.get("test_fraction", 0.15)),
                              val_fraction=float(info.get("val_fraction", 0.15)),
                              seed=int(info.get("seed", 0)))

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """:func:`parallel_map` with this context's ``ray`` and ``address``.

        Ray starts on the first call and stays up until :meth:`close` (starting it costs
        seconds; the benchmarks map several times).
        """
        if self.ray:
            import ray as ray_lib

            self._ray_started = self._ray_started or not ray_lib.is_initialized()
        return parallel_map(fn, items, ray=self.ray, address=self.address, shutdown=False)

    def close(self) -> None:
        """Shut down a Ray instance :meth:`map` started."""
        if self._ray_started:
            import ray as ray_lib

            ray_lib.shutdown()
            self._ray_started = False

    def __enter__(self) -> BenchContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def torch_threads(n: int | None) -> None:
    """Cap torch's intra-op threads (Ray workers otherwise each take every core)."""
    if n is not None and n > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.set_num_threads(int(n))
