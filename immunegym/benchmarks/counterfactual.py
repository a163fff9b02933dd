"""Counterfactual fidelity: does the world model rank regimens for a patient as ImmuneSim does?

No real dataset shows the same patient under two therapies; ImmuneSim can. For every held-out
patient this benchmark branches ImmuneSim's hidden day-0 state into six regimens and asks
whether the world model, which sees only the patient's observations, orders the regimens the
way the simulator's outcomes do.

Protocol
--------
Patients
    The *fresh* cohorts (:attr:`BenchContext.fresh`: the 14 default-suite cohort designs
    regenerated with new seeds, 30 patients each with ``--quick``, 60 otherwise); none of
    them was seen in training. Patients without a biopsy on day 0 (about 15%: their first
    biopsy falls on days 1-14) are skipped, and their number is reported
    (``config.n_skipped_no_day0_biopsy``).
Branch point and what the world model sees
    Baseline, day 0. The world model's history is the patient's observations up to and
    including day 0 (:meth:`Timelines.truncate`): the baseline biopsy and the baseline scan.
    Nothing after day 0, and none of the hidden state, enters.
Hidden state
    :func:`~immunegym.benchmarks.common.day0_states` regenerates ImmuneSim's exact day-0
    state and (escape-phase adjusted) parameters of every patient of a cohort from the
    cohort's seed; the state the lab's baseline biopsy was drawn from.
Truth
    From that state, ImmuneSim runs each regimen of :data:`REGIMENS` (``none``,
    ``anti_pd1``, ``anti_ctla4``, ``anti_pd1+anti_ctla4``, ``chemo``, ``chemo+anti_pd1``) for
    ``H = 6`` cycles (126 days) with ``R`` stochastic replicates (8 with ``--quick``, 32
    otherwise): every (patient, regimen, replicate) is one row of a single
    :meth:`ImmuneSim.run` call per cohort (``group`` = regimen), from a simulator seeded with
    ``SeedSequence([seed, cohort seed])``. Trial imaging (a scan every 6 weeks, so on days 42,
    84 and 126) and RECIST 1.1 as in trials. Therapy is **not** stopped at progression
    (``stop_on_progression=False``): the question put to the world model is "what happens
    under this regimen for six cycles", so the truth gives exactly those doses (irAE holds
    and stops, part of each regimen's clinical rules, still apply).

    * True outcome of (patient, regimen): the expected noise-free ``log1p`` sum of diameters
      (mm, :func:`~immunegym.sim.outcomes.sum_of_diameters` of the malignant cells) on day
      126, the mean over replicates. A replicate in which the patient died counts as worse
      than any living one: it gets the largest day-126 ``log1p`` SOD of any row of the run
      (``config.death_log_sod``).
    * True best regimen: the lowest expected log SOD (regimens within 1e-9 tie).
    * True responder under a regimen: RECIST best overall response PR or CR (confirmed) in
      at least half of the replicates.
Methods
    * ``world_model``: the ensemble's mean path (:func:`mean_path_outcomes`) of all six
      regimens in one batched rollout (``P * 6`` rows), predicted outcome = ``log1p`` SOD
      after 6 cycles; the responder score is minus the predicted best change of SOD from the
      baseline scan. The dose sequence given is ImmuneSim's own calendar of the regimen
      (:func:`~immunegym.benchmarks.common.protocol_cycle_doses`: anti-CTLA-4 and
      chemotherapy x4, anti-PD-1 every cycle), in standard-cycle intensities, so model and
      truth see the same intervention.
    * ``no_effect``: therapy changes nothing, every regimen is predicted the baseline log SOD;
      all six tie.
    * ``additive``: single-drug effects that add up. A weighted linear regression, fitted on
      the world model's training patients (the default suite's ``train`` split), of the
      observed change of ``log1p`` SOD between consecutive scans per cycle on the dose
      intensity of each therapy in between (:func:`interval_dose`), with an intercept for
      untreated growth (weights: squared interval length in cycles, as the measurement noise
      is per scan). Prediction = baseline log SOD + sum over the 6 cycles of (intercept +
      effects of the doses given); the same ranking for every patient.
    * ``world_model_additive`` (diagnostic): the world model's own single-drug predictions
      combined without interaction, ``pred(A+B) = pred(A) + pred(B) - pred(none)``; whether
      the model's interaction terms help.
Metrics
    Each with a bootstrap 95% interval over patients (every method resampled alike):

    * ``spearman``: mean per-patient Spearman correlation between predicted and true
      outcomes over the six regimens (:func:`scipy.stats.spearmanr`; an undefined
      correlation, from a constant prediction or truth, counts as 0);
    * ``best_regimen_accuracy``: how often the truly best regimen is picked, as the expected
      value under uniform tie-breaking among tied predictions (so ``no_effect`` scores
      ``1/6`` for a patient with a unique best regimen) and crediting any truly tied best;
    * ``regret``: true expected log SOD of the picked regimen minus the best's (expected over
      tie-breaking), in ``log1p`` mm;
    * ``responder_auroc``: per regimen, the AUROC of the world model's responder score
      against the true responder label (``null`` when one class is absent);
    * ``effect_mae``: per regimen, the mean absolute error of the predicted treatment effect
      (outcome minus the outcome under ``none``) of every method, and ``effect_spearman``:
      the Spearman correlation across patients of the world model's predicted and true
      effects (does it know *which* patients benefit; the baselines give everyone the same
      effect);
    * ``mean_effect``: per regimen, the mean over patients of the true and of each
      method's predicted treatment effect (is the average effect of the right size);
    * ``true_best_regimen_counts`` and ``predicted_best_regimen_counts`` (expected picks
      under tie-breaking), ``true_outcomes_by_regimen`` (mean outcome, response and death
      rates), the additive fit, and per-patient values under ``patients`` (for the plots).

``seconds`` is the benchmark's own time; generating the fresh cohorts and the training
suite (shared with the other benchmarks, cached on the context) is not counted in it;
``seconds_with_data`` also counts whatever of them this benchmark had to build.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import ConstantInputWarning, rankdata, spearmanr
from sklearn.linear_model import LinearRegression

from immunegym.benchmarks.common import (
    N_BOOTSTRAP,
    BenchContext,
    HeldOutCohort,
    auroc_block,
    day0_states,
    format_ci,
    mean_block,
    mean_path_outcomes,
    protocol_cycle_doses,
    regimen_doses,
    torch_threads,
)
from immunegym.data.vocab import THERAPIES
from immunegym.sim.cohort import CohortSpec
from immunegym.sim.outcomes import CR, PR, sum_of_diameters
from immunegym.sim.simulator import MAX_DAYS, TRIAL_IMAGING, ImmuneSim
from immunegym.sim.therapy import parse_regimen
from immunegym.validation import ValidationError, integer
from immunegym.world_model.events import interval_dose
from immunegym.world_model.timelines import CYCLE_DAYS, Timelines

NAME = "counterfactual"

REGIMENS: tuple[str, ...] = ("none", "anti_pd1", "anti_ctla4", "anti_pd1+anti_ctla4", "chemo",
                             "chemo+anti_pd1")
"""The regimens every patient is branched into."""

HORIZON_CYCLES = 6
"""Cycles (21 days each) from the branch point to the outcome."""

QUICK_REPLICATES = 8
FULL_REPLICATES = 32
"""ImmuneSim replicates per (patient, regimen)."""

TIE_TOLERANCE = 1e-9
"""Outcomes closer than this tie (best-regimen accuracy and regret)."""

METHODS: tuple[str, ...] = ("world_model", "no_effect", "additive", "world_model_additive")


# --------------------------------------------------------------------------- validation
def check_regimens(regimens: Sequence[str]) -> tuple[str, ...]:
    """Validate a list of regimen names ImmuneSim can give; returns them as a tuple.

    Raises
    ------
    ValueError
        Naming the field, the bad value and what was expected.
    """
    if isinstance(regimens, str) or not isinstance(regimens, Sequence) or len(regimens) < 2:
        raise ValidationError(f"regimens: got {regimens!r}; expected a sequence of at least two "
                         "regimen names (e.g. 'none', 'anti_pd1', 'anti_pd1+anti_ctla4')")
    out = tuple(regimens)
    for regimen in out:
        if not isinstance(regimen, str):
            raise ValidationError(f"regimens: got {regimen!r}; expected regimen names (str)")
        try:
            parse_regimen(regimen)
        except ValueError as error:
            raise ValidationError(f"regimens: {regimen!r} is not a regimen ImmuneSim can give "
                             f"({error})") from None
    names = [parse_regimen(r).name for r in out]
    if len(set(names)) != len(names):
        raise ValidationError(f"regimens: {list(out)} names the same regimen twice; expected "
                         "distinct regimens")
    return out


# --------------------------------------------------------------------------- doses
# --------------------------------------------------------------------------- truth
@dataclass
class TruthTask:
    """ImmuneSim branches of some patients of one cohort (one :func:`simulate_branches` call).

    Attributes
    ----------
    spec
        The cohort (its seed regenerates the day-0 state).
    patients
        Indices of the cohort's patients to branch (as in ``HiddenTruth.patient_ids``).
    regimens, n_cycles, replicates
        What to run.
    seed
        The benchmark's seed (mixed with the cohort's seed for the branch simulator).
    stop_on_progression
        Passed to :meth:`ImmuneSim.run`.
    threads
        Torch threads for the call (1 on Ray workers); unchanged when ``None``.
    """

    spec: CohortSpec
    patients: np.ndarray
    regimens: tuple[str, ...]
    n_cycles: int
    replicates: int
    seed: int
    stop_on_progression: bool = False
    threads: int | None = None


@dataclass
class Branches:
    """ImmuneSim's outcomes of ``P`` patients x ``G`` regimens x ``R`` replicates.

    Attributes
    ----------
    final_log_sod
        ``(P, G, R)`` ``log1p`` noise-free SOD (mm) on the last day (frozen at death).
    died
        ``(P, G, R)`` bool, died before the end.
    responded
        ``(P, G, R)`` bool, RECIST best overall response PR or CR.
    """

    final_log_sod: np.ndarray
    died: np.ndarray
    responded: np.ndarray


def branch_seed(seed: int, cohort_seed: int) -> int:
    """Seed of a cohort's branch simulator: independent of the cohort's own draws."""
    return int(np.random.SeedSequence([int(seed), int(cohort_seed)]).generate_state(1)[0])


def simulate_branches(task: TruthTask) -> Branches:
    """Run every (patient, regimen, replicate) of a task from the patients' day-0 state.

    One :meth:`ImmuneSim.run` call: rows are ordered regimen-major, then replicate, then
    patient, with ``group`` the regimen index.
    """
    torch_threads(task.threads)
    _, patients, state = day0_states(task.spec)
    chosen = torch.as_tensor(np.asarray(task.patients, dtype=np.int64))
    n_p, n_g, n_r = len(chosen), len(task.regimens), int(task.replicates)
    rows = chosen.repeat(n_g * n_r)
    group = np.repeat(np.arange(n_g), n_r * n_p)
    sim = ImmuneSim(seed=branch_seed(task.seed, task.spec.seed))
    course = sim.run(patients.index(rows), list(task.regimens), task.n_cycles * CYCLE_DAYS,
                     group=group, state=state.index(rows), imaging=TRIAL_IMAGING,
                     stop_on_progression=task.stop_on_progression)
    tumor = course.state.cells[:, :3].sum(-1)
    log_sod = torch.log1p(sum_of_diameters(tumor, sim.params.rates)).cpu().numpy()

    def shape(x: np.ndarray) -> np.ndarray:  # (G*R*P,) -> (P, G, R)
        return np.asarray(x).reshape(n_g, n_r, n_p).transpose(2, 0, 1)

    return Branches(final_log_sod=shape(log_sod).astype(np.float64),
                    died=shape(~course.state.alive.cpu().numpy()),
                    responded=shape(np.isin(course.best_response, (PR, CR))))


def true_outcomes(branches: Sequence[Branches]) -> dict[str, np.ndarray]:
    """Pool the branches of several cohorts into per-(patient, regimen) truth.

    Returns
    -------
    dict
        ``log_sod`` ``(P, G)`` expected day-126 ``log1p`` SOD with dead replicates set to
        ``death_log_sod`` (the largest value of any row); ``p_response`` and ``p_death``
        ``(P, G)``; ``responder`` ``(P, G)`` bool (``p_response >= 0.5``); ``death_log_sod``.
    """
    log_sod = np.concatenate([b.final_log_sod for b in branches])
    died = np.concatenate([b.died for b in branches])
    responded = np.concatenate([b.responded for b in branches])
    death_value = float(log_sod.max()) if log_sod.size else math.nan
    scored = np.where(died, death_value, log_sod)
    p_response = responded.mean(-1)
    return {"log_sod": scored.mean(-1), "p_response": p_response, "p_death": died.mean(-1),
            "responder": p_response >= 0.5, "death_log_sod": np.float64(death_value)}


# --------------------------------------------------------------------------- baselines
@dataclass
class AdditiveEffects:
    """Per-cycle change of ``log1p`` SOD: untreated growth plus one effect per therapy."""

    intercept: float
    effects: dict[str, float]
    n_intervals: int
    n_patients: int

    def predict(self, baseline_log_sod: np.ndarray, doses: np.ndarray) -> np.ndarray:
        """``(P, G)`` predicted final log SOD from ``(P,)`` baselines and ``(G, H, R)`` doses."""
        beta = np.array([self.effects[t] for t in THERAPIES])
        change = (self.intercept + doses @ beta).sum(-1)  # (G,)
        return np.asarray(baseline_log_sod, float)[:, None] + change[None, :]


def fit_additive(tl: Timelines) -> AdditiveEffects:
    """Fit :class:`AdditiveEffects` on consecutive scans of observed timelines.

    The change of ``log1p`` SOD between consecutive scans ``a < b``, per cycle, is regressed
    on each therapy's dose intensity over ``(a, b]`` with an intercept (scikit-learn
    ``LinearRegression``), weighted by the squared interval length in cycles.
    """
    observed = tl.burden_observed.numpy()
    days, burden = tl.days.numpy(), tl.burden.numpy()
    starts, ends, deltas, rows = [], [], [], []
    for p in range(len(tl)):
        idx = np.flatnonzero(observed[p])
        if len(idx) < 2:
            continue
        a, b = idx[:-1], idx[1:]
        keep = days[p, b] > days[p, a]
        starts.append(days[p, a][keep])
        ends.append(days[p, b][keep])
        deltas.append(burden[p, b][keep] - burden[p, a][keep])
        rows.append(np.full(int(keep.sum()), p))
    if not rows or not sum(len(r) for r in rows):
        raise ValidationError("tl: expected timelines with at least two scans for some patient; "
                         "found none to fit the additive baseline on")
    start, end = np.concatenate(starts), np.concatenate(ends)
    delta, row = np.concatenate(deltas), np.concatenate(rows)
    dose = interval_dose(tl.cycle_doses[torch.as_tensor(row)].double(),
                         torch.as_tensor(start, dtype=torch.float64)[:, None],
                         torch.as_tensor(end, dtype=torch.float64)[:, None])[:, 0].numpy()
    width = (end - start) / CYCLE_DAYS
    reg = LinearRegression().fit(dose, delta / width, sample_weight=width ** 2)
    return AdditiveEffects(float(reg.intercept_),
                           {t: float(c) for t, c in zip(THERAPIES, reg.coef_, strict=True)},
                           int(len(delta)), int(len(np.unique(row))))


def interaction_free(pred: np.ndarray, regimens: Sequence[str]) -> np.ndarray | None:
    """``(P, G)`` predictions with each combination replaced by its parts' summed effects.

    ``pred(A+B) = pred(none) + sum_t (pred(t) - pred(none))``; ``None`` unless ``none`` and
    every single therapy of every combination are among ``regimens``.
    """
    sets = [frozenset(parse_regimen(r).therapies) for r in regimens]
    if frozenset() not in sets:
        return None
    none = pred[:, sets.index(frozenset())]
    out = pred.copy()
    for g, therapies in enumerate(sets):
        if len(therapies) < 2:
            continue
        singles = [frozenset([t]) for t in therapies]
        if not all(s in sets for s in singles):
            return None
        out[:, g] = none + sum(pred[:, sets.index(s)] - none for s in singles)
    return out


# --------------------------------------------------------------------------- metrics
def ranking_metrics(predicted: np.ndarray, truth: np.ndarray,
                    tolerance: float = TIE_TOLERANCE) -> dict[str, np.ndarray]:
    """Per-patient agreement of predicted and true outcomes (lower = better) over regimens.

    Parameters
    ----------
    predicted, truth
        ``(P, G)`` outcomes (e.g. final log SOD) of ``G`` regimens.
    tolerance
        Values within this of the row's minimum tie for best.

    Returns
    -------
    dict
        ``spearman`` ``(P,)`` (an undefined correlation counts as 0), ``best_accuracy``
        ``(P,)``: the probability that uniform tie-breaking among the predicted best picks a
        truly best regimen, ``regret`` ``(P,)``: expected true outcome of the pick minus the
        true best, ``picked`` ``(P, G)``: the pick's probability per regimen.
    """
    predicted, truth = np.asarray(predicted, float), np.asarray(truth, float)
    if predicted.shape != truth.shape or predicted.ndim != 2:
        raise ValidationError(f"predicted: shape {predicted.shape}; expected the truth's shape "
                         f"{truth.shape} (patients, regimens)")
    spearman = np.zeros(len(truth))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        for i in range(len(truth)):
            rho = spearmanr(predicted[i], truth[i]).statistic
            spearman[i] = 0.0 if np.isnan(rho) else rho
    pred_best = predicted <= predicted.min(1, keepdims=True) + tolerance
    true_best = truth <= truth.min(1, keepdims=True) + tolerance
    picked = pred_best / pred_best.sum(1, keepdims=True)
    accuracy = (picked * true_best).sum(1)
    regret = (picked * (truth - truth.min(1, keepdims=True))).sum(1)
    return {"spearman": spearman, "best_accuracy": accuracy, "regret": regret,
            "picked": picked}


def _rowwise_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row pair of ``(B, N)`` arrays (NaN where constant)."""
    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    denom = np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rx * ry).sum(1) / denom, np.nan)


def effect_metrics(predictions: dict[str, np.ndarray], truth: np.ndarray,
                   regimens: Sequence[str], *, seed: int = 0,
                   n: int = N_BOOTSTRAP) -> dict[str, Any]:
    """Per-patient treatment effects (outcome under a regimen minus under ``none``).

    Returns ``{"effect_mae": {regimen: block}, "effect_spearman": {regimen: block}}``: the
    mean absolute error of each method's predicted effect, and the Spearman correlation
    across patients of the world model's predicted and true effects (does it know *which*
    patients benefit; methods with one effect for everyone have none), each with a
    bootstrap 95% interval over patients. Empty when ``none`` is not among ``regimens``.
    """
    sets = [frozenset(parse_regimen(r).therapies) for r in regimens]
    if frozenset() not in sets:
        return {}
    ref = sets.index(frozenset())
    true_effect = truth - truth[:, [ref]]
    mae, rank = {}, {}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(truth), (n, len(truth)))
    for g, r in enumerate(regimens):
        if g == ref:
            continue
        effects = {k: p[:, g] - p[:, ref] for k, p in predictions.items()}
        mae[r] = mean_block({k: np.abs(e - true_effect[:, g]) for k, e in effects.items()},
                            seed=seed, n=n)
        wm, tr = effects["world_model"], true_effect[:, g]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConstantInputWarning)
            rho = spearmanr(wm, tr).statistic if len(tr) > 2 else math.nan
        boot = _rowwise_spearman(wm[draws], tr[draws])
        boot = boot[~np.isnan(boot)]
        ci = ([float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
              if len(boot) >= n // 2 else [math.nan, math.nan])
        rank[r] = {"world_model": float(rho), "ci95": {"world_model": ci}, "n": len(tr)}
    return {"effect_mae": mae, "effect_spearman": rank}


def mean_effects(predictions: dict[str, np.ndarray], truth: np.ndarray,
                 regimens: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean treatment effect over patients (outcome minus the outcome under ``none``).

    ``{regimen: {"truth": ..., method: ...}}``: is each drug's average effect of the right
    size (a confounded training set gets the size wrong before it gets the ranking
    wrong). Empty when ``none`` is not among ``regimens``.
    """
    sets = [frozenset(parse_regimen(r).therapies) for r in regimens]
    if frozenset() not in sets:
        return {}
    ref = sets.index(frozenset())
    return {r: {"truth": float((truth[:, g] - truth[:, ref]).mean()),
                **{k: float((p[:, g] - p[:, ref]).mean()) for k, p in predictions.items()}}
            for g, r in enumerate(regimens) if g != ref}


# --------------------------------------------------------------------------- protocol
@dataclass
class Eligible:
    """Held-out patients with a day-0 biopsy: where they are in the data."""

    cohort: np.ndarray  # (N,) index into the cohorts
    truth_index: np.ndarray  # (N,) index into the cohort's HiddenTruth
    row: np.ndarray  # (N,) row in the observed timelines
    patient_ids: list[str]
    n_skipped: int


def eligible_patients(cohorts: Sequence[HeldOutCohort], tl: Timelines) -> Eligible:
    """The cohorts' patients that have a biopsy on day 0 (the branch point)."""
    row_of = {pid: i for i, pid in enumerate(tl.patient_ids)}
    day0_biopsy = (tl.comp_observed & (tl.days == 0)).any(1).numpy()
    cohort, index, rows, ids, skipped = [], [], [], [], 0
    for c, held in enumerate(cohorts):
        for i, pid in enumerate(held.truth.patient_ids):
            if pid not in row_of:
                raise ValidationError(f"tl: patient {pid!r} of cohort {held.spec.name!r} has no "
                                 "timeline; expected the cohorts' observed timelines")
            if not day0_biopsy[row_of[pid]]:
                skipped += 1
                continue
            cohort.append(c)
            index.append(i)
            rows.append(row_of[pid])
            ids.append(pid)
    return Eligible(np.asarray(cohort, np.int64), np.asarray(index, np.int64),
                    np.asarray(rows, np.int64), ids, skipped)


def world_model_predictions(model, history: Timelines, regimens: Sequence[str],
                            n_cycles: int) -> dict[str, np.ndarray]:
    """The world model's mean path under every regimen, in one batched rollout.

    Returns ``final_log_sod`` and ``best_change``, each ``(P, G)``.
    """
    n_p, n_g = len(history), len(regimens)
    doses = np.concatenate([regimen_doses(r, n_p, n_cycles)
                            for r in regimens])  # (G*P, H, R), regimen-major
    stacked = history.subset(np.tile(np.arange(n_p), n_g))
    out = mean_path_outcomes(model, stacked, doses)
    return {k: out[k].reshape(n_g, n_p).T for k in ("final_log_sod", "best_change")}


def evaluate(model, cohorts: Sequence[HeldOutCohort], timelines: Timelines, train: Timelines,
             *, regimens: Sequence[str] = REGIMENS, n_cycles: int = HORIZON_CYCLES,
             replicates: int = QUICK_REPLICATES, seed: int = 0,
             stop_on_progression: bool = False,
             map_fn: Callable[[Callable, list], list] | None = None,
             threads: int | None = None, n_bootstrap: int | None = None) -> dict[str, Any]:
    """Every figure of the benchmark (see the module docstring for the protocol).

    Parameters
    ----------
    model
        The world model under test.
    cohorts
        Held-out cohorts (spec, AnnData, hidden truth).
    timelines
        Their observed timelines (every patient of ``cohorts``; other rows are ignored).
    train
        Observed timelines the ``additive`` baseline is fitted on (the model's training
        patients).
    regimens, n_cycles, replicates
        Regimens to branch into, cycles to the outcome, ImmuneSim replicates.
    seed
        Seed of the branch simulators and of every bootstrap.
    stop_on_progression
        Stop therapy at RECIST progression in the truth (off: the queried doses are given).
    map_fn
        ``map_fn(fn, items)`` runs the per-cohort simulations (e.g. ``ctx.map`` for Ray);
        a plain loop when ``None``.
    threads
        Torch threads inside each per-cohort simulation (1 on Ray workers).
    n_bootstrap
        Bootstrap resamples behind every interval (:data:`N_BOOTSTRAP` when ``None``).
    """
    regimens = check_regimens(regimens)
    n_cycles = integer("n_cycles", n_cycles, low=1, high=MAX_DAYS // CYCLE_DAYS)
    replicates = integer("replicates", replicates, low=1)
    n_boot = integer("n_bootstrap", N_BOOTSTRAP if n_bootstrap is None else n_bootstrap,
                     low=1)
    if not cohorts:
        raise ValidationError("cohorts: got none; expected at least one held-out cohort")
    start = time.perf_counter()
    timings: dict[str, float] = {}
    elig = eligible_patients(cohorts, timelines)
    if not len(elig.row):
        raise ValidationError("cohorts: no patient has a day-0 biopsy; nothing to branch")

    t0 = time.perf_counter()
    tasks = [TruthTask(held.spec, elig.truth_index[elig.cohort == c], regimens, n_cycles,
                       replicates, int(seed), bool(stop_on_progression), threads)
             for c, held in enumerate(cohorts) if (elig.cohort == c).any()]
    branches = (map_fn or (lambda fn, items: [fn(x) for x in items]))(simulate_branches, tasks)
    truth = true_outcomes(branches)
    timings["truth_simulation_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    history = timelines.subset(elig.row).truncate(np.zeros(len(elig.row), np.float32))
    wm = world_model_predictions(model, history, regimens, n_cycles)
    timings["world_model_rollout_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    additive = fit_additive(train)
    observed = history.burden_observed.numpy()
    last = np.where(observed, np.arange(observed.shape[1])[None], -1).max(1)
    train_scans = train.burden[train.burden_observed].numpy()
    fallback = float(train_scans.mean()) if train_scans.size else 0.0
    baseline = np.where(last >= 0, history.burden.numpy()[np.arange(len(history)),
                                                          last.clip(0)], fallback)
    doses = np.stack([protocol_cycle_doses(r, n_cycles).astype(np.float32) for r in regimens])
    predictions = {
        "world_model": wm["final_log_sod"],
        "no_effect": np.repeat(baseline[:, None].astype(float), len(regimens), 1),
        "additive": additive.predict(baseline, doses),
    }
    combined = interaction_free(wm["final_log_sod"], regimens)
    if combined is not None:
        predictions["world_model_additive"] = combined
    timings["baselines_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    per = {name: ranking_metrics(p, truth["log_sod"]) for name, p in predictions.items()}
    boot = {"seed": seed, "n": n_boot}
    section: dict[str, Any] = {
        "spearman": mean_block({k: v["spearman"] for k, v in per.items()}, **boot),
        "best_regimen_accuracy": mean_block({k: v["best_accuracy"] for k, v in per.items()},
                                            **boot),
        "regret": mean_block({k: v["regret"] for k, v in per.items()}, **boot),
        "responder_auroc": {
            r: auroc_block(truth["responder"][:, g].astype(float),
                           {"world_model": -wm["best_change"][:, g]}, **boot)
            for g, r in enumerate(regimens)},
    }
    section.update(effect_metrics(predictions, truth["log_sod"], regimens, **boot))
    section["mean_effect"] = mean_effects(predictions, truth["log_sod"], regimens)
    true_best = truth["log_sod"] <= truth["log_sod"].min(1, keepdims=True) + TIE_TOLERANCE
    section["true_best_regimen_counts"] = {
        **{r: int(true_best[:, g].sum()) for g, r in enumerate(regimens)},
        "patients_with_tied_best": int((true_best.sum(1) > 1).sum())}
    section["predicted_best_regimen_counts"] = {
        name: {r: float(v["picked"][:, g].sum()) for g, r in enumerate(regimens)}
        for name, v in per.items()}
    section["true_outcomes_by_regimen"] = {
        r: {"mean_log_sod": float(truth["log_sod"][:, g].mean()),
            "response_rate": float(truth["p_response"][:, g].mean()),
            "responders": int(truth["responder"][:, g].sum()),
            "death_rate": float(truth["p_death"][:, g].mean())}
        for g, r in enumerate(regimens)}
    section["additive_fit"] = {
        "intercept_per_cycle": additive.intercept, "effect_per_cycle": additive.effects,
        "n_intervals": additive.n_intervals, "n_patients": additive.n_patients}
    section["patients"] = {
        "patient_id": elig.patient_ids,
        "cohort": [cohorts[c].spec.name for c in elig.cohort],
        "cancer_type": [cohorts[c].spec.cancer_type for c in elig.cohort],
        "true_log_sod": truth["log_sod"],
        "true_p_response": truth["p_response"],
        "predicted_log_sod": {k: v for k, v in predictions.items() if k != "no_effect"},
        "world_model_best_change": wm["best_change"],
        "spearman": {k: v["spearman"] for k, v in per.items()},
    }
    timings["metrics_s"] = time.perf_counter() - t0
    section["config"] = {
        "regimens": list(regimens), "n_cycles": n_cycles, "horizon_days": n_cycles * CYCLE_DAYS,
        "replicates": replicates, "seed": int(seed),
        "branch_seeds": {t.spec.name: branch_seed(seed, t.spec.seed) for t in tasks},
        "cohorts": [h.spec.name for h in cohorts],
        "patients_per_cohort": [h.spec.n_patients for h in cohorts],
        "n_patients": int(len(elig.row)), "n_skipped_no_day0_biopsy": int(elig.n_skipped),
        "branch_day": 0, "imaging": "trial (every 42 days)",
        "stop_on_progression": bool(stop_on_progression),
        "death_log_sod": float(truth["death_log_sod"]),
        "world_model_members": len(getattr(model, "members", [])),
        "tie_tolerance": TIE_TOLERANCE, "n_bootstrap": n_boot,
    }
    section["timings_s"] = timings
    section["seconds"] = time.perf_counter() - start
    return section


def run(ctx: BenchContext) -> dict[str, Any]:
    """The ``immunegym bench counterfactual`` section on the context's fresh cohorts."""
    start = time.perf_counter()
    cohorts, timelines = ctx.fresh, ctx.fresh_timelines
    suite = ctx.suite_timelines
    train = suite.subset(np.flatnonzero(ctx.suite_split == "train"))
    ctx.progress("counterfactual: branching ImmuneSim")
    section = evaluate(ctx.model, cohorts, timelines, train,
                       replicates=QUICK_REPLICATES if ctx.quick else FULL_REPLICATES,
                       seed=ctx.seed, map_fn=ctx.map, threads=1 if ctx.ray else None)
    section["config"]["quick"] = ctx.quick
    section["config"]["additive_fit_on"] = "default suite, train split"
    section["seconds_with_data"] = time.perf_counter() - start  # incl. data built here
    return section


# --------------------------------------------------------------------------- report
def _fmt(value: Any, digits: int = 3) -> str:
    return format_ci(value, digits=digits)


def _ci(block: dict[str, Any], name: str, digits: int = 3) -> str:
    return format_ci(block.get(name), block.get("ci95", {}).get(name), digits=digits)


def report(section: dict[str, Any], out: Path) -> str:
    """Markdown for the report, with a scatter of predicted vs true outcome per regimen and
    the distribution of per-patient Spearman correlations (PNGs written into ``out``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from immunegym._atomic import atomic_path

    out = Path(out)
    cfg = section["config"]
    regimens = list(cfg["regimens"])
    methods = [m for m in METHODS if m in section["spearman"]]
    lines = [
        "## Counterfactual fidelity", "",
        f"For {cfg['n_patients']} held-out patients ({len(cfg['cohorts'])} fresh cohorts; "
        f"{cfg['n_skipped_no_day0_biopsy']} without a day-0 biopsy skipped), ImmuneSim's "
        f"hidden day-0 state is branched into {len(regimens)} regimens for "
        f"{cfg['n_cycles']} cycles ({cfg['horizon_days']} days, {cfg['replicates']} "
        "stochastic replicates each). The truth is the expected noise-free log1p sum of "
        "diameters on the last day (death counts as the worst outcome); the world model "
        "sees only the baseline biopsy and scan. Methods are compared on how they rank the "
        "regimens per patient. `no_effect` predicts no change under any therapy (all tie); "
        "`additive` sums per-drug effects fitted on the training suite (the same ranking "
        "for everyone); `world_model_additive` is the world model's single-drug effects "
        "summed without interaction. 95% bootstrap intervals over patients.", "",
        "| Method | Spearman | Best-regimen accuracy | Regret (log1p mm) |",
        "|---|---|---|---|",
    ]
    for m in methods:
        lines.append(f"| {m} | {_ci(section['spearman'], m)} | "
                     f"{_ci(section['best_regimen_accuracy'], m)} | "
                     f"{_ci(section['regret'], m)} |")
    lines += ["", "| Regimen | Truly best (patients) | True response rate | "
                  "Responder AUROC (world model) | n (positive) |", "|---|---|---|---|---|"]
    for r in regimens:
        block = section["responder_auroc"][r]
        outcome = section["true_outcomes_by_regimen"][r]
        lines.append(f"| {r} | {section['true_best_regimen_counts'][r]} | "
                     f"{_fmt(outcome['response_rate'], 2)} | {_ci(block, 'world_model')} | "
                     f"{block['n']} ({block['n_positive']}) |")
    if section.get("effect_mae"):
        shown = methods
        lines += ["", "Treatment effect vs `none` (log1p mm): mean absolute error per method, "
                      "and the world model's Spearman across patients (who benefits most).",
                  "", "| Regimen | " + " | ".join(f"MAE {m}" for m in shown)
                  + " | Spearman (world model) |",
                  "|---|" + "---|" * (len(shown) + 1)]
        for r, block in section["effect_mae"].items():
            rank = section["effect_spearman"][r]
            lines.append(f"| {r} | " + " | ".join(_ci(block, m) for m in shown)
                         + f" | {_ci(rank, 'world_model')} |")
    if section.get("mean_effect"):
        shown = ["truth"] + methods
        lines += ["", "Mean treatment effect vs `none` over patients (log1p mm; negative: "
                      "smaller tumors).", "", "| Regimen | " + " | ".join(shown) + " |",
                  "|---|" + "---|" * len(shown)]
        for r, block in section["mean_effect"].items():
            lines.append(f"| {r} | " + " | ".join(_fmt(block.get(m)) for m in shown) + " |")
    ties = section["true_best_regimen_counts"].get("patients_with_tied_best", 0)
    if ties:
        lines += ["", f"{ties} patients have tied best regimens (counted for each)."]

    patients = section["patients"]
    truth = np.asarray(patients["true_log_sod"], dtype=float)
    pred = np.asarray(patients["predicted_log_sod"]["world_model"], dtype=float)
    n_cols = min(3, len(regimens))
    n_rows = math.ceil(len(regimens) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.4 * n_cols, 3.2 * n_rows),
                             squeeze=False, sharex=True, sharey=True)
    both = np.concatenate([truth.ravel(), pred.ravel()])
    lo, hi = float(np.nanmin(both)) - 0.1, float(np.nanmax(both)) + 0.1
    for g, r in enumerate(regimens):
        ax = axes[g // n_cols, g % n_cols]
        ax.scatter(truth[:, g], pred[:, g], s=6, alpha=0.5)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set_title(r, fontsize=9)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    for ax in axes[-1]:
        ax.set_xlabel("true log1p SOD (mm)")
    for ax in axes[:, 0]:
        ax.set_ylabel("world model log1p SOD")
    for g in range(len(regimens), n_rows * n_cols):
        axes[g // n_cols, g % n_cols].set_visible(False)
    fig.suptitle(f"Outcome after {cfg['n_cycles']} cycles: world model vs ImmuneSim",
                 fontsize=10)
    fig.tight_layout()
    scatter = out / f"{NAME}_outcomes.png"
    with atomic_path(scatter) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    bins = np.linspace(-1, 1, 41)
    for m in ("world_model", "additive", "world_model_additive"):
        if m in patients["spearman"]:
            ax.hist(np.asarray(patients["spearman"][m], dtype=float), bins=bins,
                    histtype="step", linewidth=1.5, label=m)
    ax.set_xlabel("per-patient Spearman (predicted vs true regimen outcomes)")
    ax.set_ylabel("patients")
    ax.legend(fontsize=8)
    fig.tight_layout()
    hist = out / f"{NAME}_spearman.png"
    with atomic_path(hist) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    lines += ["", f"![Predicted vs true outcome per regimen]({scatter.name})", "",
              f"![Per-patient Spearman]({hist.name})"]
    return "\n".join(lines) + "\n"
