"""Response-prediction benchmark: who responds to therapy, from the baseline biopsy.

``immunegym bench response`` asks every method the clinical question "will this patient
respond (RECIST PR/CR) to the regimen of their arm?" and scores the answers by the area
under the ROC curve (AUROC). This module is the synthetic half, on ImmuneSim cohorts whose
hidden state gives the best any predictor could do.

Synthetic protocol
------------------
Patients
    The 14 default-suite cohort designs regenerated with new seeds
    (:attr:`BenchContext.fresh <immunegym.benchmarks.common.BenchContext.fresh>`; 30
    patients each with ``--quick``, 60 otherwise), so the pretrained world model never saw
    any of them. Every patient is randomized to one arm (regimen) of its cohort and followed
    for the cohort's ``horizon_days`` (365).
Label
    The patient's RECIST 1.1 best overall response over the whole follow-up, as the cohort
    records it (``uns["patients"]["response"]``): 1 for a confirmed PR/CR, else 0 (SD, PD,
    or death before a response). Treatment stops at progression, as in the cohort.
What a method sees (the *baseline*)
    The patient's observed history truncated at the day of the first biopsy: that biopsy
    (cells labeled in the cohort's lab convention) and the day-0 scan (sum of diameters), plus
    the regimen of the patient's arm as the trial protocol lays it out
    (:func:`protocol_cycle_doses`: e.g. chemotherapy x4, anti-CTLA-4 x4, radiotherapy one
    course, anti-PD-1 every cycle). The first biopsy is on day 0 for about 85% of patients
    and on days 1-14 (early on treatment) for the rest; those patients are kept, with the
    biopsy as their baseline, and the doses given before it are part of their history.
    Doses actually given after the baseline (which stop at progression and so encode the
    outcome), later biopsies and later scans are never used.
Scores (higher = more likely responder)
    * ``world_model``: the baseline history rolled forward by the world model's mean path
      (ensemble average, :func:`~immunegym.benchmarks.common.mean_path_outcomes`) under the
      arm's protocol doses for ``H = 8`` cycles (24 weeks, :data:`WORLD_MODEL_CYCLES`),
      each step's doses read from the protocol from the baseline day on; the score is minus
      the best predicted change of the sum of diameters from the baseline scan (a RECIST-like
      nadir; a response needs -30%). The rollout follows the whole protocol (it does not
      stop at a predicted progression). No fitting, so nothing crosses cohorts.
      ``world_model_by_cycles`` reports the same score over 4 and 8 cycles (``--quick``) or
      4, 8, 12 and 17 cycles (17 spans the label's 365-day window). 8 cycles is the main
      horizon for cost (a rollout's attention grows with its length: 17 cycles costs about
      four times as much); on the ``--quick`` fresh cohorts 4, 8, 12 and 17 cycles gave
      pooled AUROCs within 0.01 of each other.
    * ``world_model_calibrated`` (extra): a logistic regression on the 8-cycle rollout's
      features (log of the nadir / baseline SOD ratio, final and baseline ``log1p`` SOD,
      final CD8 and malignant fractions, the regimen's therapies), trained
      leave-one-cohort-out like the logistic baseline.
    * ``cd8_fraction``: the baseline biopsy's CD8 T-cell fraction (the leaves of the
      ontology's ``cd8_t`` node), coarse-labeled blocks split over their leaves by the world
      model's leaf prior (the suite's mean leaf fractions).
    * ``logistic_baseline``: scikit-learn ``LogisticRegression`` (L2, ``C = 0.5``, on
      standardized features) on the baseline composition's centered log-ratio (20 fine
      types), ``log1p`` baseline SOD and the regimen's therapy indicators (5), trained
      leave-one-cohort-out: each cohort is predicted by a model fitted on the other 13
      (14 folds, through ``ctx.map`` so ``--ray`` runs them as tasks). A training fold with a
      single class predicts its prevalence (a constant).
    * ``oracle``: ImmuneSim's own response probability given the hidden state. Each
      patient's exact day-0 state (:func:`~immunegym.benchmarks.common.day0_states`, checked
      against the cohort's recorded day-0 truth) is replicated ``R`` times (16 with
      ``--quick``, 64 otherwise) and run under the patient's arm, for the cohort's follow-up,
      with the cohort's imaging schedule (every 6-9 weeks) and treat-until-progression, by a
      fresh ImmuneSim seeded from the benchmark seed (never the cohort's); ``P`` is the
      fraction of replicates with a confirmed PR/CR. It is the Bayes limit up to Monte Carlo
      error (a standard error of at most ``0.5 / sqrt(R)`` per patient).
Metrics
    * ``pooled_auroc``: AUROC of every score on all patients pooled, with a bootstrap 95%
      interval over patients (1000 resamples), ``n`` and ``n_positive``. Pooling mixes
      cohorts with different response rates, so a score also gets credit for ranking
      regimens and cancer types.
    * ``per_cohort``: the same block within each cohort (values ``null`` when a cohort has
      a single class).
    * ``mean_per_cohort_auroc``: the mean of the per-cohort AUROCs over cohorts with both
      classes, with a bootstrap 95% interval over cohorts (within-cohort discrimination).
    * ``oracle``: the replicate count and the oracle's Brier score and mean probability
      against the observed labels (calibration check of the ground truth itself).

The JSON section also holds every patient's label and scores (``patients``), the settings
(``config``) and the wall time (``seconds``; ``seconds_excluding_data`` leaves out the
generation of the fresh cohorts, which the benchmarks share).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from immunegym.benchmarks.baselines import clr, last_observed
from immunegym.benchmarks.common import (
    N_BOOTSTRAP,
    BenchContext,
    aligned_doses,
    auroc_block,
    bootstrap_mean,
    format_ci,
    mean_path_outcomes,
    model_leaf_prior,
    torch_threads,
)
from immunegym.data.vocab import THERAPIES
from immunegym.ontology import FINE_TYPES
from immunegym.planning.counterfactuals import CD8_TYPES, MALIGNANT_TYPE
from immunegym.sim.cohort import CohortSpec
from immunegym.validation import ValidationError
from immunegym.world_model.timelines import (
    CYCLE_DAYS,
    Timelines,
)

NAME = "response"

METHODS: tuple[str, ...] = ("world_model", "cd8_fraction", "logistic_baseline", "oracle")
"""The methods the issue names, in table order."""

EXTRA_METHODS: tuple[str, ...] = ("world_model_calibrated",)
"""Further methods reported beside them."""

ORACLE_REPLICATES = {True: 16, False: 64}
"""ImmuneSim replicates per patient behind the oracle probability (quick, full)."""

LOGISTIC_C = 0.5
"""Inverse L2 strength of the leave-one-cohort-out logistic regressions."""

WORLD_MODEL_CYCLES = 8
"""Cycles the world model rolls each baseline forward (24 weeks) for its score."""

CHECK_CYCLES = {True: (4, 8), False: (4, 8, 12, 17)}
"""World-model horizons reported beside the main one (quick, full; 17 cycles spans the
label's 365-day follow-up); longer rollouts cost more (attention over the growing
sequence)."""

_ORACLE_TAG = 0x0AC1E
_LABELS = {"R": 1.0, "NR": 0.0}


# --------------------------------------------------------------------------- regimens
def therapy_indicators(regimens: Sequence[str]) -> np.ndarray:
    """``(P, R)`` 1.0 where the regimen contains the therapy (:data:`THERAPIES` order)."""
    from immunegym.sim.therapy import parse_regimen

    return np.array([[float(t in parse_regimen(r).therapies) for t in THERAPIES]
                     for r in regimens])


# --------------------------------------------------------------------------- baselines
@dataclass
class Baselines:
    """Every held-out patient at its baseline, in cohort order.

    Attributes
    ----------
    patient_ids, cohort, regimen
        ``(P,)`` ids, cohort names and arm regimens.
    arm
        ``(P,)`` index of the regimen in the cohort's ``spec.regimens``.
    label
        ``(P,)`` 1.0 for a confirmed PR/CR over the follow-up, else 0.0.
    baseline_day
        ``(P,)`` day of the first biopsy.
    timelines
        The histories truncated at the baseline day (doses after it zeroed).
    """

    patient_ids: list[str]
    cohort: np.ndarray
    regimen: list[str]
    arm: np.ndarray
    label: np.ndarray
    baseline_day: np.ndarray
    timelines: Timelines


def cohort_arms(spec: CohortSpec, patients: Any) -> tuple[list[str], np.ndarray]:
    """Patient ids and arm index (into ``spec.regimens``) of a cohort's ``uns["patients"]``.

    Rows come back in the cohort's patient order (``<name>-P000``, ``-P001``, ...), which is
    the row order of :func:`~immunegym.benchmarks.common.day0_states`.

    Raises
    ------
    ValueError
        If a patient's regimen is not one of the spec's, or the ids are not the cohort's.
    """
    from immunegym.sim.therapy import parse_regimen

    table = pd.DataFrame(patients)
    names = [parse_regimen(r).name for r in spec.regimens]
    expected = [f"{spec.name}-P{i:03d}" for i in range(spec.n_patients)]
    ids = [str(p) for p in table["patient_id"]]
    if ids != expected:
        raise ValidationError(f"uns['patients']: patient ids {ids[:3]}... do not match cohort "
                         f"{spec.name!r}; expected {expected[:3]}... in order")
    arms = []
    for pid, regimen in zip(ids, table["regimen"].astype(str), strict=True):
        if regimen not in names:
            raise ValidationError(f"uns['patients']: patient {pid!r} has regimen {regimen!r}; "
                             f"expected one of cohort {spec.name!r}'s regimens {names}")
        arms.append(names.index(regimen))
    return ids, np.asarray(arms, dtype=np.int64)


def truncate_at_first_biopsy(tl: Timelines) -> tuple[Timelines, np.ndarray]:
    """Histories up to each patient's first biopsy, and that day ``(P,)``.

    Points after the day are cleared (not only masked) and the per-cycle doses of cycles
    starting after it zeroed, so nothing after the baseline (later biopsies and scans,
    treatment stopped at progression) can reach a method.
    """
    observed = tl.comp_observed.numpy()
    if not observed.any(1).all():
        bad = tl.patient_ids[int(np.flatnonzero(~observed.any(1))[0])]
        raise ValidationError(f"timelines: patient {bad!r} has no biopsy; expected at least one")
    first = observed.argmax(1)
    day = tl.days.numpy()[np.arange(len(tl)), first].astype(np.float64)
    base = tl.truncate(day)
    starts = torch.arange(base.cycle_doses.shape[1], dtype=torch.float32) * CYCLE_DAYS
    future = starts[None, :] > torch.as_tensor(day, dtype=torch.float32)[:, None]
    doses = base.cycle_doses.masked_fill(future[..., None], 0.0)
    pad = ~base.valid
    n_k = base.block.shape[-1]
    cleared = {
        "days": base.days.masked_fill(pad, 0.0),
        "burden": base.burden.masked_fill(pad, 0.0),
        "counts": base.counts.masked_fill(pad[..., None], 0.0),
        "fractions": base.fractions.masked_fill(pad[..., None], 0.0),
        "program_scores": base.program_scores.masked_fill(pad[..., None, None], 0.0),
        "block": torch.where(pad[..., None], torch.arange(n_k).expand_as(base.block),
                             base.block),
    }
    return replace(base, cycle_doses=doses, **cleared), day


def collect_baselines(ctx: BenchContext) -> Baselines:
    """The held-out patients of ``ctx.fresh`` at their baseline (see the module docstring)."""
    tl_all = ctx.fresh_timelines
    row_of = {pid: i for i, pid in enumerate(tl_all.patient_ids)}
    ids, cohort, regimen, arm, label = [], [], [], [], []
    for held in ctx.fresh:
        pids, arms = cohort_arms(held.spec, held.adata.uns["patients"])
        table = pd.DataFrame(held.adata.uns["patients"])
        response = table["response"].astype(str).tolist()
        bad = [r for r in response if r not in _LABELS]
        if bad:
            raise ValidationError(f"uns['patients']['response']: {bad[0]!r} in cohort "
                             f"{held.spec.name!r}; expected 'R' or 'NR'")
        missing = [p for p in pids if p not in row_of]
        if missing:
            raise ValidationError(f"timelines: patient {missing[0]!r} of cohort "
                             f"{held.spec.name!r} has no observations")
        ids += pids
        cohort += [held.spec.name] * len(pids)
        regimen += table["regimen"].astype(str).tolist()
        arm.append(arms)
        label += [_LABELS[r] for r in response]
    tl, day = truncate_at_first_biopsy(tl_all.subset([row_of[p] for p in ids]))
    return Baselines(ids, np.asarray(cohort), regimen, np.concatenate(arm),
                     np.asarray(label), day, tl)


def baseline_features(tl: Timelines, regimens: Sequence[str], prior: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Logistic-baseline features ``(P, K + 1 + R)`` and the CD8 fraction ``(P,)``.

    Features: the clr of the last (baseline) biopsy's leaf composition, ``log1p`` of the last
    scan's SOD (the cohort mean where a patient has none), the regimen's therapies.
    """
    comp, burden = last_observed(tl, prior)
    burden = np.where(np.isnan(burden), np.nanmean(burden) if np.isfinite(burden).any()
                      else 0.0, burden)
    cd8 = comp[:, [FINE_TYPES.index(t) for t in CD8_TYPES]].sum(1)
    features = np.concatenate([clr(comp), burden[:, None], therapy_indicators(regimens)], 1)
    return features, cd8


def world_model_scores(model, tl: Timelines, regimens: Sequence[str], start_day: np.ndarray,
                       n_cycles: int = WORLD_MODEL_CYCLES, check_cycles: Sequence[int] = ()
                       ) -> dict[str, Any]:
    """The world model's mean-path rollout from each baseline under the arm's protocol doses.

    One rollout of ``max(n_cycles, *check_cycles)`` cycles serves every horizon (the mean
    path is deterministic, so its first ``h`` steps are the ``h``-cycle rollout).

    Returns
    -------
    dict
        ``score`` ``(P,)``: minus the best change of the SOD from the baseline scan over
        the first ``n_cycles`` cycles; ``by_cycles`` ``{h: (P,)}`` the same over ``h`` cycles
        for ``h`` in ``check_cycles``; ``features`` ``(P, F)`` (at ``n_cycles``) for the
        calibrated variant.
    """
    if n_cycles < 1 or any(h < 1 for h in check_cycles):
        raise ValidationError(f"n_cycles: expected positive cycle counts, got {n_cycles} and "
                         f"check_cycles {list(check_cycles)}")
    total = max(n_cycles, *check_cycles) if check_cycles else n_cycles
    doses = aligned_doses(regimens, start_day, total)
    out = mean_path_outcomes(model, tl, doses)
    sod = np.expm1(out["log_sod"])
    # The baseline of mean_path_outcomes: the last scan in the history (else the first step).
    observed = tl.burden_observed.numpy()
    last = np.where(observed, np.arange(observed.shape[1])[None], -1).max(1)
    base = np.where(last >= 0, np.expm1(tl.burden.numpy()[np.arange(len(tl)), last.clip(0)]),
                    sod[:, 0])
    base = np.maximum(base, 1e-6)
    by_cycles = {int(h): -(sod[:, :h].min(1) / base - 1.0) for h in check_cycles}
    score = -(sod[:, :n_cycles].min(1) / base - 1.0)
    comp = out["composition"][:, n_cycles - 1]
    cd8 = comp[:, [FINE_TYPES.index(t) for t in CD8_TYPES]].sum(1)
    malignant = comp[:, FINE_TYPES.index(MALIGNANT_TYPE)]
    nadir_ratio = np.log(np.maximum(sod[:, :n_cycles].min(1), 1e-6) / base)
    features = np.column_stack([nadir_ratio, out["log_sod"][:, n_cycles - 1], np.log1p(base),
                                cd8, malignant, therapy_indicators(regimens)])
    return {"score": score, "by_cycles": by_cycles, "features": features}


# --------------------------------------------------------------------------- folds
def loco_folds(features: np.ndarray, labels: np.ndarray, cohort: np.ndarray, *,
               c: float = LOGISTIC_C) -> list[dict[str, Any]]:
    """Leave-one-cohort-out folds: one payload per cohort for :func:`fit_fold`.

    Each payload holds the training rows (every other cohort), their features and labels,
    and the test cohort's features; ``train_cohorts`` records what the fit saw.
    """
    features, labels, cohort = np.asarray(features), np.asarray(labels), np.asarray(cohort)
    if not (len(features) == len(labels) == len(cohort)):
        raise ValidationError(f"features: {len(features)} rows, labels {len(labels)}, cohort "
                         f"{len(cohort)}; expected one row per patient in each")
    folds = []
    for name in dict.fromkeys(cohort.tolist()):
        test = np.flatnonzero(cohort == name)
        train = np.flatnonzero(cohort != name)
        folds.append({"test_cohort": name, "test_rows": test, "train_rows": train,
                      "train_cohorts": sorted(set(cohort[train].tolist())),
                      "x_train": features[train], "y_train": labels[train],
                      "x_test": features[test], "c": float(c)})
    return folds


def fit_fold(fold: dict[str, Any]) -> np.ndarray:
    """Fit a standardized logistic regression on a fold's training rows; predict its test rows.

    A training set with one class (or none) predicts its prevalence for everyone.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(fold["y_train"], dtype=float)
    n_test = len(fold["x_test"])
    if len(y) == 0 or y.min() == y.max():
        return np.full(n_test, float(y.mean()) if len(y) else 0.5)
    model = make_pipeline(StandardScaler(),
                          LogisticRegression(C=fold["c"], max_iter=2000))
    model.fit(fold["x_train"], y.astype(int))
    return model.predict_proba(fold["x_test"])[:, 1]


def loco_predict(ctx: BenchContext, features: np.ndarray | dict[str, np.ndarray],
                 labels: np.ndarray, cohort: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
    """Leave-one-cohort-out predicted probabilities ``(P,)`` (folds through ``ctx.map``).

    ``features`` may be a dict of feature sets (name -> ``(P, F)``): every fold of every set
    then goes through one ``ctx.map`` call and a dict of predictions comes back.
    """
    sets = features if isinstance(features, dict) else {"": features}
    folds = [(name, fold) for name, x in sets.items() for fold in loco_folds(x, labels, cohort)]
    preds = ctx.map(fit_fold, [fold for _, fold in folds])
    out = {name: np.full(len(labels), np.nan) for name in sets}
    for (name, fold), pred in zip(folds, preds, strict=True):
        out[name][fold["test_rows"]] = pred
    return out if isinstance(features, dict) else out[""]


# --------------------------------------------------------------------------- oracle
def oracle_seed(seed: int, spec: CohortSpec) -> int:
    """Seed of the oracle's simulator for one cohort: from the benchmark seed, never the
    cohort's own."""
    value = int(np.random.SeedSequence([int(seed), int(spec.seed), _ORACLE_TAG])
                .generate_state(1)[0])
    return value + 1 if value == spec.seed else value


def oracle_task(task: dict[str, Any]) -> dict[str, np.ndarray | float]:
    """ImmuneSim's response probability for every patient of one cohort.

    ``task`` holds ``spec`` (the cohort), ``arm`` ``(n,)`` (regimen index per patient, in
    the cohort's patient order), ``replicates``, ``seed`` and optionally ``day0`` ``(n, 20)``
    (the cohort's recorded day-0 composition, checked against the regenerated state) and
    ``threads`` (torch threads, for Ray workers).

    Returns
    -------
    dict
        ``probability`` ``(n,)`` fraction of replicates with a confirmed PR/CR;
        ``day0_max_abs_diff``: largest difference from ``day0`` (0.0 when not given).
    """
    from immunegym.benchmarks.common import day0_states
    from immunegym.sim.outcomes import CR, PR
    from immunegym.sim.simulator import COHORT_IMAGING, ImmuneSim

    torch_threads(task.get("threads"))
    spec: CohortSpec = task["spec"]
    n_rep = int(task["replicates"])
    if n_rep < 1:
        raise ValidationError(f"replicates: expected a positive integer, got {n_rep}")
    arm = np.asarray(task["arm"], dtype=np.int64)
    if arm.shape != (spec.n_patients,):
        raise ValidationError(f"arm: shape {arm.shape}; expected ({spec.n_patients},), one arm "
                         f"per patient of cohort {spec.name!r}")
    _, patients, state = day0_states(spec)
    diff = 0.0
    if task.get("day0") is not None:
        diff = float(np.abs(state.composition().cpu().numpy()
                            - np.asarray(task["day0"])).max())
    rows = torch.arange(patients.n).repeat_interleave(n_rep)
    sim = ImmuneSim(seed=int(task["seed"]))
    course = sim.run(patients.index(rows), list(spec.regimens), spec.horizon_days,
                     group=np.repeat(arm, n_rep), state=state.index(rows),
                     imaging=COHORT_IMAGING)
    hit = np.isin(course.best_response, (PR, CR)).reshape(patients.n, n_rep)
    return {"probability": hit.mean(1), "day0_max_abs_diff": diff}


# --------------------------------------------------------------------------- statistics
# --------------------------------------------------------------------------- run
def run_synthetic(ctx: BenchContext) -> dict[str, Any]:
    """The synthetic half of the benchmark (see the module docstring for the protocol).

    Returns
    -------
    dict
        ``pooled_auroc``, ``per_cohort``, ``mean_per_cohort_auroc``,
        ``world_model_by_cycles``, ``oracle``, ``patients``, ``config``, ``seconds``,
        ``seconds_excluding_data``.
    """
    start = time.perf_counter()
    fresh = ctx.fresh
    _ = ctx.fresh_timelines
    t_data = time.perf_counter()
    ctx.progress("response: baselines")
    base = collect_baselines(ctx)
    specs = {h.spec.name: h.spec for h in fresh}
    checks = CHECK_CYCLES[ctx.quick]

    prior = model_leaf_prior(ctx.model, base.timelines)
    features, cd8 = baseline_features(base.timelines, base.regimen, prior)
    ctx.progress("response: world-model rollouts")
    wm = world_model_scores(ctx.model, base.timelines, base.regimen, base.baseline_day,
                            WORLD_MODEL_CYCLES, checks)
    ctx.progress("response: leave-one-cohort-out fits")
    fitted = loco_predict(ctx, {"logistic": features, "calibrated": wm["features"]},
                          base.label, base.cohort)
    logistic, calibrated = fitted["logistic"], fitted["calibrated"]

    ctx.progress("response: oracle replicates")
    n_rep = ORACLE_REPLICATES[ctx.quick]
    tasks = []
    for held in fresh:
        rows = base.cohort == held.spec.name
        tasks.append({"spec": held.spec, "arm": base.arm[rows], "replicates": n_rep,
                      "seed": oracle_seed(ctx.seed, held.spec),
                      "day0": np.asarray(held.truth.composition[0]),
                      "threads": 1 if ctx.ray else None})
    t_oracle = time.perf_counter()
    results = ctx.map(oracle_task, tasks)
    oracle_seconds = time.perf_counter() - t_oracle
    worst = max(float(r["day0_max_abs_diff"]) for r in results)
    if worst > 1e-5:
        raise RuntimeError(f"day0_states: the regenerated day-0 state differs from the "
                           f"cohorts' recorded truth by {worst:.3g}; the oracle would not "
                           "describe these patients")
    oracle = np.concatenate([r["probability"] for r in results])

    scores = {"world_model": wm["score"], "cd8_fraction": cd8,
              "logistic_baseline": logistic, "oracle": oracle,
              "world_model_calibrated": calibrated}
    section = summarize(base.label, base.cohort, scores, seed=ctx.seed)
    section["world_model_by_cycles"] = auroc_block(
        base.label, {f"cycles_{h}": v for h, v in wm["by_cycles"].items()}, seed=ctx.seed)
    section["oracle"] = {
        "replicates": n_rep, "mean_probability": float(oracle.mean()),
        "response_rate": float(base.label.mean()),
        "brier": float(np.mean((oracle - base.label) ** 2)),
        "max_standard_error": 0.5 / math.sqrt(n_rep), "seconds": oracle_seconds,
    }
    section["patients"] = {
        "patient_id": base.patient_ids, "cohort": base.cohort.tolist(),
        "regimen": base.regimen, "label": base.label, "baseline_day": base.baseline_day,
        "scores": scores,
    }
    section["config"] = {
        "cohorts": list(specs), "patients": int(len(base.label)),
        "patients_per_cohort": {k: int(s.n_patients) for k, s in specs.items()},
        "world_model_cycles": WORLD_MODEL_CYCLES, "check_cycles": list(checks),
        "follow_up_days": sorted({int(s.horizon_days) for s in specs.values()}),
        "oracle_replicates": n_rep, "oracle_seeds": {t["spec"].name: t["seed"]
                                                     for t in tasks},
        "logistic_c": LOGISTIC_C, "bootstrap": N_BOOTSTRAP, "seed": ctx.seed,
        "quick": ctx.quick, "baseline_day_nonzero": int((base.baseline_day > 0).sum()),
    }
    end = time.perf_counter()
    section["seconds"] = end - start
    section["seconds_excluding_data"] = end - t_data
    return section


def summarize(labels: np.ndarray, cohort: np.ndarray, scores: dict[str, np.ndarray], *,
              seed: int = 0) -> dict[str, Any]:
    """Pooled, per-cohort and mean-per-cohort AUROC blocks of several scores."""
    labels, cohort = np.asarray(labels, dtype=float), np.asarray(cohort)
    pooled = auroc_block(labels, scores, seed=seed)
    per_cohort: dict[str, Any] = {}
    for name in dict.fromkeys(cohort.tolist()):
        rows = cohort == name
        per_cohort[name] = auroc_block(labels[rows], {k: np.asarray(v)[rows]
                                                           for k, v in scores.items()},
                                            seed=seed)
    usable = [k for k, b in per_cohort.items() if 0 < b["n_positive"] < b["n"]]
    values = {m: np.array([per_cohort[k][m] for k in usable], dtype=float) for m in scores}
    mean = {m: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
            for m, v in values.items()}
    mean["ci95"] = {m: bootstrap_mean(v, seed=seed) for m, v in values.items()}
    mean["n_cohorts"] = len(usable)
    mean["cohorts"] = usable
    return {"pooled_auroc": pooled, "per_cohort": per_cohort, "mean_per_cohort_auroc": mean}


def run(ctx: BenchContext, *, real_only: bool | None = None) -> dict[str, Any]:
    """The ``immunegym bench response`` section.

    ``{"synthetic": ..., "real": {"morrison1": ..., "sade_feldman": ...}, "config",
    "seconds"}``: the synthetic cohorts here, the real tables in
    :mod:`immunegym.benchmarks.response_real`.

    Parameters
    ----------
    ctx
        The shared benchmark context.
    real_only
        Skip the synthetic cohorts (``immunegym bench response --real-only``: the full real
        section, under a minute on 2 CPU cores): ``synthetic`` is then ``None`` and
        ``config["synthetic"]`` too. ``None`` reads ``ctx.real_only`` (the runner calls
        ``run(ctx)``).
    """
    from immunegym import validation as v
    from immunegym.benchmarks.response_real import run_real

    if real_only is None:
        real_only = ctx.real_only
    real_only = v.boolean("real_only", real_only)
    start = time.perf_counter()
    synthetic = None if real_only else run_synthetic(ctx)
    real = run_real(ctx)
    return {"synthetic": synthetic, "real": real,
            "config": {"synthetic": None if synthetic is None else synthetic["config"],
                       "real": real["config"], "real_only": real_only},
            "seconds": time.perf_counter() - start}


# --------------------------------------------------------------------------- report
_DISPLAY = {"world_model": "world model", "world_model_calibrated": "world model (calibrated)",
            "cd8_fraction": "CD8 fraction", "logistic_baseline": "logistic baseline",
            "oracle": "oracle (ImmuneSim)"}


def _methods(block: dict[str, Any]) -> list[str]:
    return [m for m in (*METHODS, *EXTRA_METHODS) if m in block]


def report_synthetic(section: dict[str, Any], out: Path) -> str:
    """Markdown for the synthetic half; writes ``response_synthetic_*.png`` into ``out``.

    ``section`` is the benchmark's section (with a ``"synthetic"`` key) or the synthetic
    part itself.
    """
    syn = section.get("synthetic", section)
    out = Path(out)
    pooled, per_cohort = syn["pooled_auroc"], syn["per_cohort"]
    mean = syn["mean_per_cohort_auroc"]
    methods = _methods(pooled)
    cfg = syn.get("config", {})
    lines = [
        "### Synthetic cohorts (ImmuneSim ground truth)", "",
        f"{pooled['n']} unseen patients ({pooled['n_positive']} responders) in "
        f"{len(per_cohort)} cohorts. Every method sees the first biopsy, the baseline scan and "
        "the arm's regimen; the label is RECIST PR/CR over the follow-up. The world model "
        f"rolls the baseline forward {cfg.get('world_model_cycles', '?')} cycles under the "
        "regimen (score: minus the best predicted change of the sum of diameters); the "
        "logistic baseline and the calibrated world model are fit leave-one-cohort-out; the "
        f"oracle is ImmuneSim's response probability from the hidden day-0 state "
        f"({syn.get('oracle', {}).get('replicates', '?')} replicates per patient). AUROC "
        "with bootstrap 95% intervals over patients (pooled, per cohort) or cohorts (mean).",
        "",
        "| method | pooled AUROC | mean per-cohort AUROC |",
        "|---|---|---|",
    ]
    for m in methods:
        lines.append(f"| {_DISPLAY.get(m, m)} | {format_ci(pooled[m], pooled['ci95'][m])} | "
                     f"{format_ci(mean.get(m), mean['ci95'].get(m))} |")
    lines += ["", f"Mean per cohort over the {mean['n_cohorts']} cohorts with both classes.",
              ""]
    by_cycles = syn.get("world_model_by_cycles")
    if by_cycles:
        keys = [k for k in by_cycles if k.startswith("cycles_")]
        lines += ["World-model AUROC (pooled) by rollout length: " + "; ".join(
            f"{k.split('_')[1]} cycles {format_ci(by_cycles[k], by_cycles['ci95'][k])}"
            for k in keys) + ".", ""]
    lines += ["| cohort | n (resp.) | " + " | ".join(_DISPLAY.get(m, m) for m in methods)
              + " |", "|---|---|" + "---|" * len(methods)]
    for name, block in per_cohort.items():
        lines.append(f"| {name} | {block['n']} ({block['n_positive']}) | "
                     + " | ".join(format_ci(block[m], block["ci95"][m]) for m in methods) + " |")
    lines.append("")
    bars = out / f"{NAME}_synthetic_per_cohort.png"
    roc = out / f"{NAME}_synthetic_roc.png"
    _plot_per_cohort(per_cohort, methods, bars)
    if "patients" in syn:
        _plot_roc(syn["patients"], methods, pooled, roc)
        lines += [f"![Per-cohort AUROC]({bars.name})", "", f"![Pooled ROC curves]({roc.name})"]
    else:
        lines += [f"![Per-cohort AUROC]({bars.name})"]
    return "\n".join(lines) + "\n"


def report(section: dict[str, Any], out: Path) -> str:
    """Markdown for this benchmark's section of the report (plots into ``out``)."""
    from immunegym.benchmarks.response_real import report_real

    head = ["## Response prediction", "",
            "Can a method tell responders from non-responders before treatment? Each scores "
            "every patient from what a clinic has at baseline (the first biopsy, the baseline "
            "scan, the planned regimen) and is judged by the AUROC against the patient's "
            "RECIST response (PR/CR).", ""]
    parts = ["\n".join(head)]
    if section.get("synthetic") is not None or "pooled_auroc" in section:
        parts.append(report_synthetic(section, out))
    else:
        parts.append("Synthetic cohorts skipped (`--real-only`).")
    if "real" in section:
        parts.append(report_real(section["real"], out))
    return "\n\n".join(parts)


def _plot_per_cohort(per_cohort: dict[str, Any], methods: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from immunegym._atomic import atomic_path

    names = list(per_cohort)
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.75 * len(names) + 2), 4.8))
    x = np.arange(len(names))
    for j, m in enumerate(methods):
        values = np.array([np.nan if per_cohort[k][m] is None else per_cohort[k][m]
                           for k in names], dtype=float)
        ax.bar(x + (j - (len(methods) - 1) / 2) * width, values, width,
               label=_DISPLAY.get(m, m))
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("AUROC")
    ax.set_title("Response prediction per cohort (missing bar: one class)")
    ax.legend(fontsize=7, ncol=len(methods), loc="lower center", bbox_to_anchor=(0.5, 1.08),
              frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _plot_roc(patients: dict[str, Any], methods: Sequence[str], pooled: dict[str, Any],
              path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    from immunegym._atomic import atomic_path

    labels = np.asarray(patients["label"], dtype=float)
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    for m in methods:
        scores = np.asarray([np.nan if v is None else v for v in patients["scores"][m]],
                            dtype=float)
        keep = np.isfinite(scores) & np.isfinite(labels)
        if len(np.unique(labels[keep])) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels[keep].astype(int), scores[keep])
        ax.plot(fpr, tpr, label=f"{_DISPLAY.get(m, m)} ({format_ci(pooled[m])})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Pooled ROC, synthetic cohorts")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
