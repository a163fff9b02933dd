"""Transfer benchmark: how well does the world model do on a cancer type it never saw?

``immunegym bench transfer`` runs leave-one-cancer-type-out: for a held-out type ``T`` a
world model is trained without a single patient of ``T`` and compared, on unseen patients
of ``T``, with a model trained the same way on every type. The figure is the ratio
held-out / in-distribution of each metric.

Protocol
--------
Training data
    The default suite (``ctx.suite_timelines``: the 14 cohorts, 840 patients, that the
    pretrained model was trained on) with the pretrained model's patient split
    (``ctx.suite_split``: the model card's hash split). Only the ``train`` share is fitted
    and only the ``val`` share early-stops; ``test`` patients are never used.
Models (same recipe, same seed)
    * ``held_out``: trained without any patient of type ``T`` (train and val;
      :func:`~immunegym.world_model.recipe.split_rows` with ``leave_out_cancer``).
    * ``in_distribution``: trained on every type. It is trained once and shared by all
      folds.
    * ``pretrained``: the model under test (``ctx.model``, by default the shipped
      checkpoint), in-distribution by construction; reported as context on the same
      patients, not part of the ratio (it had a bigger training budget).
    * ``in_distribution_reseeded`` (:attr:`TransferSettings.seed_reference`): the
      in-distribution model retrained with seed ``seed + 1``. Its ratio to the
      in-distribution model (``seed_reference``) is what training randomness alone does
      to a ratio; the bootstrap intervals resample patients only and leave that out.

    The trained models use the pretrained recipe (``configs/default.toml``: architecture,
    optimizer, losses, split) with a smaller budget (:data:`QUICK` / :data:`FULL`: ensemble
    members and epochs; ``config["settings"]``) so that the full run's eleven models fit
    in under an hour. The ratio is fair because the two share everything but the patients
    of ``T``. Leaving ``T`` out also removes data (melanoma is 5 of the 14 cohorts): with
    ``match_steps`` the held-out model runs proportionally more epochs
    (``epochs * steps_all / steps_T``, rounded; the patience alike), so both get the same
    number of optimizer steps and the same learning-rate schedule; what is left is the
    difference in *which* patients were seen (and how many distinct ones). The cancer type
    is not a model input (``use_cancer_type = false``), so nothing tells the held-out model
    what ``T`` is. Models train as ``ctx.map`` tasks (Ray tasks with ``--ray``, one torch
    thread each); a task gets its training and validation timelines and returns the weights
    and the ids of the patients it was fitted and early-stopped on.
Test patients
    The fresh cohorts of type ``T`` (``ctx.fresh``: the suite's designs regenerated with new
    seeds; 30 patients per cohort with ``--quick``, else 60), unseen by all three models.
Metrics (per fold, each model)
    * ``rollout_6_tree_w1``: from every biopsy day of a test patient with the patient alive
      6 cycles (126 days) later (the origins of ``bench world-model``,
      :func:`~immunegym.benchmarks.world_model.make_origins`), the history up to that day is
      rolled forward 6 cycles by the ensemble mean path under the doses the patient actually
      got; tree-Wasserstein W1 (unit edges on the ontology) between the predicted and
      ImmuneSim's true composition at cycle 6; mean over origins, cluster bootstrap over
      patients.
    * ``log_burden_mae_6``: at the same origins, ``|log1p SOD_pred - log1p SOD_true|`` (mm,
      noise-free truth) at cycle 6.
    * ``response_auroc``: every test patient at its baseline (history truncated at the first
      biopsy, later doses zeroed: :func:`~immunegym.benchmarks.response
      .truncate_at_first_biopsy`) rolled forward by the mean path under its arm's protocol
      doses for :data:`~immunegym.benchmarks.response.WORLD_MODEL_CYCLES` cycles (the
      response benchmark's world-model score, so the figures agree with ``bench response``);
      score = minus the best predicted change of the sum of diameters; label = the cohort's
      RECIST PR/CR over the follow-up. AUROC with a bootstrap over patients.
    * ``ratio``: held-out / in-distribution of each metric, with a paired bootstrap 95%
      interval (1000 resamples of patients, the same ones for both models; the ratio of the
      two means or AUROCs per resample). W1 and MAE: lower is better, a ratio > 1 means
      worse on the unseen type. AUROC: higher is better, a ratio < 1 means worse.
      ``summary`` averages the fold ratios and counts the folds whose interval excludes 1
      on the worse side.

``--quick`` holds out melanoma only with one-member, 6-epoch models (three models; with the
suite's generation about 4 minutes on 2 busy CPU cores, 3 with ``--ray``). These are
small, partly trained models: read a quick ratio against the seed reference beside it,
which at this budget is itself 0.9-1.2. The full run holds out every cancer type of the
suite (nine folds, eleven trained models).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from immunegym.benchmarks.common import (
    N_BOOTSTRAP,
    BenchContext,
    auroc,
    auroc_block,
    bootstrap_weights,
    finite_mean,
    format_ci,
    mean_block,
    torch_threads,
    weighted_aurocs,
)
from immunegym.benchmarks.response import (
    WORLD_MODEL_CYCLES,
    truncate_at_first_biopsy,
    world_model_scores,
)
from immunegym.benchmarks.world_model import (
    LabeledCohorts,
    Origins,
    make_origins,
    truth_by_patient,
)
from immunegym.ontology import tree_wasserstein
from immunegym.validation import ValidationError
from immunegym.world_model.latent import LatentConfig
from immunegym.world_model.model import WorldModel, WorldModelConfig
from immunegym.world_model.recipe import DEFAULT_RECIPE, Recipe, TrainingData, split_rows
from immunegym.world_model.timelines import Timelines

NAME = "transfer"

HORIZON = 6
"""Cycles of the composition / burden rollouts (126 days)."""

MODELS: tuple[str, ...] = ("held_out", "in_distribution", "pretrained")
"""The models of every fold, in table order."""

RESEEDED = "in_distribution_reseeded"
"""The seed reference: the in-distribution model retrained with the next seed."""

METRICS: tuple[str, ...] = ("rollout_6_tree_w1", "log_burden_mae_6", "response_auroc")
"""The per-fold metrics, in table order."""

LOWER_IS_BETTER = {"rollout_6_tree_w1": True, "log_burden_mae_6": True,
                   "response_auroc": False}
"""Direction of each metric (and so of its held-out / in-distribution ratio)."""

QUICK_TYPES: tuple[str, ...] = ("melanoma",)
"""Held-out types of ``--quick`` runs (the full run holds out every type of the suite)."""


@dataclass(frozen=True)
class TransferSettings:
    """Training budget shared by the held-out and in-distribution models.

    Attributes
    ----------
    n_members
        Ensemble members per model.
    epochs
        Epochs of the in-distribution model (the held-out model's are scaled by
        ``match_steps``).
    patience
        Early-stopping patience (epochs without a better validation loss).
    match_steps
        Give the held-out model the in-distribution model's number of optimizer steps
        (more epochs over its smaller training set) rather than its number of epochs; its
        patience is scaled alike.
    seed_reference
        Also train the in-distribution model with seed ``seed + 1``: its ratio to the
        in-distribution model is what training randomness alone does to a ratio.
    """

    n_members: int
    epochs: int
    patience: int
    match_steps: bool = True
    seed_reference: bool = False

    def __post_init__(self) -> None:
        for name in ("n_members", "epochs", "patience"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValidationError(
                    f"settings.{name}: expected a positive integer, got {value!r}")


QUICK = TransferSettings(n_members=1, epochs=6, patience=6, seed_reference=True)
"""``--quick``: one member, 6 epochs, and the seed reference (three models in about 2.5
minutes on 2 CPU cores; at this budget training randomness moves a ratio by up to ~20%)."""

FULL = TransferSettings(n_members=1, epochs=20, patience=6, seed_reference=True)
"""Full run: one member, up to 20 epochs, and the seed reference (eleven models; about 35
minutes on 2 CPU cores). The pretrained recipe is 3 members and 45 epochs."""


# --------------------------------------------------------------------------- statistics
def ratio_of_means(held_out: np.ndarray, in_distribution: np.ndarray,
                   groups: np.ndarray | None = None, *, seed: int = 0, n: int = N_BOOTSTRAP
                   ) -> tuple[float, list[float]]:
    """Ratio of two paired means and its paired cluster-bootstrap 95% interval.

    Parameters
    ----------
    held_out, in_distribution
        ``(N,)`` per-item values of the two models on the same items; items where either
        is NaN are dropped.
    groups
        ``(N,)`` cluster of each item (the patient); every resample draws whole clusters,
        the same ones for both models.
    seed, n
        Bootstrap seed and resamples.

    Returns
    -------
    (float, [lo, hi])
        ``mean(held_out) / mean(in_distribution)`` and the 2.5 / 97.5 percentiles of the
        resampled ratios (NaN where undefined).
    """
    a = np.asarray(held_out, dtype=float)
    b = np.asarray(in_distribution, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValidationError(f"held_out, in_distribution: expected two (N,) arrays of one shape, "
                         f"got {a.shape} and {b.shape}")
    g = np.arange(len(a)) if groups is None else np.asarray(groups)
    if g.shape != a.shape:
        raise ValidationError(f"groups: expected shape {a.shape}, got {g.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b, g = a[keep], b[keep], g[keep]
    if not len(a) or b.mean() == 0:
        return math.nan, [math.nan, math.nan]
    _, inverse = np.unique(g, return_inverse=True)
    sum_a, sum_b = np.bincount(inverse, weights=a), np.bincount(inverse, weights=b)
    draws = np.random.default_rng(seed).integers(0, len(sum_a), (n, len(sum_a)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = sum_a[draws].sum(1) / sum_b[draws].sum(1)  # equal counts cancel
    ratios = ratios[np.isfinite(ratios)]
    ci = ([float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]
          if len(ratios) >= n // 2 else [math.nan, math.nan])
    return float(a.mean() / b.mean()), ci


def ratio_of_aurocs(labels: np.ndarray, held_out: np.ndarray, in_distribution: np.ndarray,
                    *, seed: int = 0, n: int = N_BOOTSTRAP) -> tuple[float, list[float]]:
    """Ratio of two AUROCs on the same patients and its paired bootstrap 95% interval.

    Patients are resampled together for both scores; resamples with a single class are
    skipped, and fewer than ``n // 2`` usable resamples give a NaN interval.

    Returns
    -------
    (float, [lo, hi])
        ``AUROC(held_out) / AUROC(in_distribution)`` (NaN with one class) and the interval.
    """
    y = np.asarray(labels, dtype=float)
    a = np.asarray(held_out, dtype=float)
    b = np.asarray(in_distribution, dtype=float)
    if not y.shape == a.shape == b.shape or y.ndim != 1:
        raise ValidationError(f"labels, held_out, in_distribution: expected (N,) arrays of one "
                         f"shape, got {y.shape}, {a.shape}, {b.shape}")
    keep = ~(np.isnan(y) | np.isnan(a) | np.isnan(b))
    y, a, b = y[keep], a[keep], b[keep]
    den = auroc(y, b)
    point = auroc(y, a) / den if den > 0 else math.nan
    if not math.isfinite(point):
        return math.nan, [math.nan, math.nan]
    weights = bootstrap_weights(np.arange(len(y)), seed=seed, n=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = weighted_aurocs(y, a, weights) / weighted_aurocs(y, b, weights)
    ratios = ratios[np.isfinite(ratios)]
    if len(ratios) < n // 2:
        return float(point), [math.nan, math.nan]
    return float(point), [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]


# --------------------------------------------------------------------------- training
def transfer_recipe(settings: TransferSettings, *, seed: int, split: dict[str, Any],
                    leave_out: str = "", epoch_scale: float = 1.0) -> Recipe:
    """The pretrained recipe (``configs/default.toml``) with the transfer budget.

    ``split`` holds the model card's ``seed``, ``test_fraction`` and ``val_fraction``, so the
    split is the pretrained model's; ``leave_out`` is the held-out cancer type ("" for
    none); ``epoch_scale`` (>= 1) multiplies the epochs and the patience (rounded).
    """
    base = Recipe.load(DEFAULT_RECIPE)
    scale = max(float(epoch_scale), 1.0)
    train = replace(base.train, epochs=max(round(settings.epochs * scale), settings.epochs),
                    patience=max(round(settings.patience * scale), settings.patience))
    return replace(base, n_members=int(settings.n_members), train=train, seed=int(seed),
                   split_seed=int(split.get("seed", base.split_seed)),
                   test_fraction=float(split.get("test_fraction", base.test_fraction)),
                   val_fraction=float(split.get("val_fraction", base.val_fraction)),
                   leave_out_cancer=leave_out)


@dataclass
class TrainJob:
    """One model to train (a picklable :meth:`BenchContext.map` payload).

    Attributes
    ----------
    name
        ``"in_distribution"``, ``"held_out:<type>"`` or :data:`RESEEDED`.
    leave_out
        The cancer type left out ("" for none).
    recipe
        Architecture, budget, seed.
    train, val
        Training and early-stopping timelines (already without ``leave_out``).
    threads
        Torch threads in the worker (``None``: leave as is).
    truth_train, truth_val
        Their hidden truth (:class:`~immunegym.world_model.synthetic.GridTruth`) for
        privileged training, as the pretrained model had; ``None``: observations only.
    """

    name: str
    leave_out: str
    recipe: Recipe
    train: Timelines
    val: Timelines
    threads: int | None = None
    truth_train: Any = None
    truth_val: Any = None


def train_job(job: TrainJob) -> dict[str, Any]:
    """Train one model of a fold (module level, so Ray can run it as a task).

    Returns
    -------
    dict
        ``name``, ``leave_out``, ``config`` (:meth:`WorldModelConfig.to_dict`), ``states``
        (one state dict per member), ``history``, ``train_patients`` / ``val_patients``
        (the ids the model was fitted and early-stopped on), ``cancer_counts`` (training
        patients per type), ``epochs`` (the budget) and ``seconds``.
    """
    torch_threads(job.threads)
    start = time.perf_counter()
    recipe = job.recipe
    module = LatentConfig(**recipe.module)  # type: ignore[arg-type]
    model = WorldModel(WorldModelConfig(module, recipe.n_members), seed=recipe.seed)
    model.fit(job.train, job.val, recipe.train, seed=recipe.seed,
              truth_train=job.truth_train, truth_val=job.truth_val)
    counts = job.train.patients["cancer_type"].value_counts()
    return {
        "name": job.name, "leave_out": job.leave_out, "config": model.config.to_dict(),
        "states": [{k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
                   for m in model.members],
        "history": [[asdict(r) for r in h] for h in model.history],
        "train_patients": job.train.patient_ids, "val_patients": job.val.patient_ids,
        "cancer_counts": {str(k): int(v) for k, v in counts.items()},
        "epochs": int(recipe.train.epochs), "seconds": time.perf_counter() - start,
    }


def rebuild(result: dict[str, Any]) -> WorldModel:
    """The :class:`WorldModel` of a :func:`train_job` result."""
    model = WorldModel(WorldModelConfig.from_dict(result["config"]))
    for member, state in zip(model.members, result["states"], strict=True):
        member.load_state_dict(state)
        member.eval()
    return model


def _steps(n: int, batch_size: int) -> int:
    return max(math.ceil(n / batch_size), 1)


def training_jobs(suite: Timelines, types: Sequence[str], settings: TransferSettings, *,
                  seed: int, split: dict[str, Any], threads: int | None = None,
                  truth: Any = None) -> tuple[list[TrainJob], dict[str, Any]]:
    """The in-distribution job and one held-out job per type, and their split records.

    ``truth``: the suite's :class:`~immunegym.world_model.synthetic.GridTruth` (privileged
    training); ``None`` trains from observations alone.

    Raises
    ------
    ValueError
        If a type is not in the suite (from :func:`split_rows`).
    """
    def pieces(recipe: Recipe) -> tuple[Timelines, Timelines, dict, Any, Any]:
        rows_train, rows_val, record = split_rows(
            TrainingData(suite, truth, np.zeros(len(suite), bool)), recipe)
        return (suite.subset(rows_train), suite.subset(rows_val), record,
                None if truth is None else truth.subset(rows_train),
                None if truth is None else truth.subset(rows_val))

    recipe = transfer_recipe(settings, seed=seed, split=split)
    train, val, record, t_train, t_val = pieces(recipe)
    jobs = [TrainJob("in_distribution", "", recipe, train, val, threads, t_train, t_val)]
    budget = {"epochs": recipe.train.epochs, "patience": recipe.train.patience}
    records = {"in_distribution": {**record, **budget, "model_seed": int(seed)}}
    if settings.seed_reference:
        jobs.append(TrainJob(RESEEDED, "", replace(recipe, seed=int(seed) + 1), train, val,
                             threads, t_train, t_val))
        records[RESEEDED] = {**record, **budget, "model_seed": int(seed) + 1}
    for cancer in types:
        held = transfer_recipe(settings, seed=seed, split=split, leave_out=cancer)
        h_train, h_val, h_record, h_t_train, h_t_val = pieces(held)
        if settings.match_steps:
            bs = held.train.batch_size
            held = transfer_recipe(settings, seed=seed, split=split, leave_out=cancer,
                                   epoch_scale=_steps(len(train), bs) / _steps(len(h_train), bs))
        jobs.append(TrainJob(f"held_out:{cancer}", cancer, held, h_train, h_val, threads,
                             h_t_train, h_t_val))
        records[f"held_out:{cancer}"] = {**h_record, "epochs": held.train.epochs,
                                         "patience": held.train.patience,
                                         "model_seed": int(seed)}
    return jobs, records


# --------------------------------------------------------------------------- test data
@dataclass
class FoldData:
    """The unseen test patients of one held-out type.

    Attributes
    ----------
    cancer_type
        The held-out type.
    patient_ids
        ``(P,)`` test patients.
    origins
        6-cycle forecast origins (every biopsy with the patient alive 126 days later).
    baseline
        Histories truncated at the first biopsy (later doses zeroed).
    baseline_day, regimens, labels
        ``(P,)`` first-biopsy day, arm regimen and response (1 = PR/CR).
    """

    cancer_type: str
    patient_ids: list[str]
    origins: Origins
    baseline: Timelines
    baseline_day: np.ndarray
    regimens: list[str]
    labels: np.ndarray


def fold_data(ctx: BenchContext, cancer_type: str) -> FoldData:
    """The fresh cohorts of ``cancer_type`` as test data (truth from ``ctx.fresh``).

    Raises
    ------
    ValueError
        If no fresh cohort is of ``cancer_type``, or none of its biopsies has the patient
        alive 6 cycles later.
    """
    import pandas as pd

    from immunegym.sim.parameters import load_parameters

    cohorts = [c for c in ctx.fresh if c.spec.cancer_type == cancer_type]
    if not cohorts:
        raise ValidationError(f"held_out_types: no fresh cohort of type {cancer_type!r}; expected "
                         f"one of {sorted({c.spec.cancer_type for c in ctx.fresh})}")
    tl_all = ctx.fresh_timelines
    rows = np.flatnonzero((tl_all.patients["cancer_type"] == cancer_type).to_numpy())
    tl = tl_all.subset(rows)
    rates = load_parameters().rates
    comp, burden = {}, {}
    for held in cohorts:
        cohort_comp, cohort_burden = truth_by_patient(held.truth, rates)
        comp.update(cohort_comp)
        burden.update(cohort_burden)
    missing = [p for p in tl.patient_ids if p not in comp]
    if missing:
        raise ValidationError(f"fresh cohorts: patient {missing[0]!r} has no hidden truth")
    try:
        origins = make_origins(LabeledCohorts(tl, comp, burden), np.arange(len(tl)), HORIZON)
    except ValueError:  # np.stack of no origins
        raise ValidationError(f"fresh cohorts of {cancer_type!r}: no biopsy with the patient alive "
                         f"{HORIZON} cycles later; expected at least one") from None
    baseline, day = truncate_at_first_biopsy(tl)
    labels = pd.to_numeric(tl.patients["response"], errors="coerce").to_numpy(float)
    return FoldData(cancer_type, tl.patient_ids, origins, baseline, day,
                    [str(r) for r in tl.patients["regimen"]], labels)


def bucketed_mean_path(model: WorldModel, tl: Timelines, doses: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The ensemble mean path of :meth:`WorldModel.rollout`, patients grouped by length.

    A rollout pads every history to the longest one and the filter runs over the padding;
    rolling patients of equal history length together gives the same numbers (to float
    tolerance) faster when lengths vary, as forecast origins do.

    Returns
    -------
    (np.ndarray, np.ndarray)
        ``(P, H, K)`` compositions and ``(P, H)`` ``log1p`` sums of diameters (float64).
    """
    doses = np.asarray(doses, dtype=np.float32)
    if doses.ndim != 3 or doses.shape[0] != len(tl):
        raise ValidationError(f"doses: shape {doses.shape}; expected ({len(tl)}, steps, therapies)")
    n_p, n_h = doses.shape[:2]
    comp = np.zeros((n_p, n_h, len(model.config.types)))
    burden = np.zeros((n_p, n_h))
    lengths = tl.valid.sum(1).numpy()
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        path = model.rollout(tl.subset(rows), doses[rows], noise="none")
        comp[rows] = path.compositions.mean(0).cpu().numpy()
        burden[rows] = path.burden.mean(0).cpu().numpy()
    return comp, burden


def model_scores(model: WorldModel, data: FoldData) -> dict[str, np.ndarray]:
    """A model's per-origin errors and per-patient response scores on one fold.

    Returns
    -------
    dict
        ``w1`` and ``burden_error`` ``(N,)`` at cycle 6 per origin; ``response_score``
        ``(P,)`` (minus the best predicted change of the sum of diameters).
    """
    ctx = data.origins.context
    doses = model.actual_doses(ctx, torch.as_tensor(data.origins.day, dtype=torch.float32),
                               HORIZON).numpy()
    comp, burden = bucketed_mean_path(model, ctx, doses)
    comp, burden = comp[:, HORIZON - 1], burden[:, HORIZON - 1]
    w1 = tree_wasserstein(np.clip(comp, 0, None) + 1e-12, data.origins.true_comp[:, -1])
    error = np.abs(burden - data.origins.true_burden[:, -1])
    response = world_model_scores(model, data.baseline, data.regimens, data.baseline_day,
                                  n_cycles=WORLD_MODEL_CYCLES)["score"]
    return {"w1": np.asarray(w1, float), "burden_error": error,
            "response_score": np.asarray(response, float)}


def fold_section(data: FoldData, scores: dict[str, dict[str, np.ndarray]], *, seed: int = 0,
                 n: int = N_BOOTSTRAP) -> dict[str, Any]:
    """The JSON block of one fold from each model's :func:`model_scores`.

    ``scores`` holds ``held_out``, ``in_distribution`` and any other models (``pretrained``,
    :data:`RESEEDED`); ``ratio`` is held-out / in-distribution and, with :data:`RESEEDED`,
    ``seed_reference`` the same for the reseeded model.
    """
    groups = data.origins.rows
    out: dict[str, Any] = {}
    keys = {"rollout_6_tree_w1": "w1", "log_burden_mae_6": "burden_error"}
    for metric, key in keys.items():
        out[metric] = mean_block({m: scores[m][key] for m in scores}, groups, seed=seed, n=n)
    out["response_auroc"] = auroc_block(
        data.labels, {m: scores[m]["response_score"] for m in scores}, seed=seed, n=n)

    def ratios(model: str) -> dict[str, Any]:
        block: dict[str, Any] = {"ci95": {}}
        for metric, key in keys.items():
            block[metric], block["ci95"][metric] = ratio_of_means(
                scores[model][key], scores["in_distribution"][key], groups, seed=seed, n=n)
        block["response_auroc"], block["ci95"]["response_auroc"] = ratio_of_aurocs(
            data.labels, scores[model]["response_score"],
            scores["in_distribution"]["response_score"], seed=seed, n=n)
        return block

    out["ratio"] = ratios("held_out")
    if RESEEDED in scores:
        out["seed_reference"] = ratios(RESEEDED)
    out["n_patients"] = len(data.patient_ids)
    out["n_origins"] = int(len(groups))
    out["n_origin_patients"] = int(len(np.unique(groups)))
    return out


def summarize(folds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean held-out / in-distribution ratio of each metric over the folds (finite ones).

    Also ``seed_reference`` (the mean reseeded / in-distribution ratios, when every fold has
    them) and ``worse_on_unseen_type``: per metric, the folds whose ratio interval excludes 1
    on the worse side.
    """
    out: dict[str, Any] = {metric: finite_mean([f["ratio"][metric] for f in folds.values()])
                           for metric in METRICS}
    out["n_folds"] = len(folds)
    if all("seed_reference" in f for f in folds.values()) and folds:
        out["seed_reference"] = {
            metric: finite_mean([f["seed_reference"][metric] for f in folds.values()])
            for metric in METRICS}
    out["worse_on_unseen_type"] = {
        metric: sum(1 for f in folds.values() if _ci_worse(f["ratio"]["ci95"][metric], metric))
        for metric in METRICS}
    return out


def _ci_worse(ci: Sequence[float | None], metric: str) -> bool:
    """The ratio's interval excludes 1 on the worse side."""
    if ci is None or any(c is None or not math.isfinite(c) for c in ci):
        return False
    return ci[0] > 1.0 if LOWER_IS_BETTER[metric] else ci[1] < 1.0


# --------------------------------------------------------------------------- run
def suite_types(tl: Timelines) -> list[str]:
    """Cancer types of timelines, in order of first appearance."""
    return list(dict.fromkeys(str(t) for t in tl.patients["cancer_type"]))


def run(ctx: BenchContext, *, held_out_types: Sequence[str] | None = None,
        settings: TransferSettings | None = None) -> dict[str, Any]:
    """The ``immunegym bench transfer`` section (see the module docstring).

    Parameters
    ----------
    ctx
        Model under test, data, seed, ``quick`` and ``ray``.
    held_out_types
        Types to hold out; :data:`QUICK_TYPES` with ``ctx.quick``, else every type of the
        suite.
    settings
        Training budget; :data:`QUICK` or :data:`FULL` by ``ctx.quick``.

    Raises
    ------
    ValueError
        If a held-out type is not in the suite or has no fresh cohort.
    """
    start = time.perf_counter()
    settings = settings or (QUICK if ctx.quick else FULL)
    suite = ctx.suite_timelines
    available = suite_types(suite)
    if held_out_types is None:
        types = list(QUICK_TYPES) if ctx.quick else available
    else:
        types = [str(t) for t in held_out_types]
    unknown = [t for t in types if t not in available]
    if unknown or not types or len(set(types)) != len(types):
        raise ValidationError(f"held_out_types: {types!r}; expected distinct cancer types of the "
                         f"training suite, some of {available}")
    if len(available) < 2:
        raise ValidationError(f"suite: one cancer type ({available}); expected at least two")
    t_suite = time.perf_counter() - start
    data = {t: fold_data(ctx, t) for t in types}  # validates the test cohorts first
    t_data = time.perf_counter() - start - t_suite

    split_info = dict((ctx.model.card or {}).get("split", {}))
    jobs, split_records = training_jobs(suite, types, settings, seed=ctx.seed,
                                        split=split_info, threads=1 if ctx.ray else None,
                                        truth=ctx.suite_truth)
    ctx.progress(f"transfer: training {len(jobs)} models ({', '.join(j.name for j in jobs)})")
    t0 = time.perf_counter()
    results = {r["name"]: r for r in ctx.map(train_job, jobs)}
    t_train = time.perf_counter() - t0
    ctx.progress(f"transfer: trained in {t_train:.0f} s")

    t0 = time.perf_counter()
    shared = {"in_distribution": rebuild(results["in_distribution"]), "pretrained": ctx.model}
    if RESEEDED in results:
        shared[RESEEDED] = rebuild(results[RESEEDED])
    folds: dict[str, Any] = {}
    for cancer in types:
        models = {"held_out": rebuild(results[f"held_out:{cancer}"]), **shared}
        scores = {name: model_scores(m, data[cancer]) for name, m in models.items()}
        folds[cancer] = fold_section(data[cancer], scores, seed=ctx.seed)
        folds[cancer]["n_train"] = {
            "held_out": len(results[f"held_out:{cancer}"]["train_patients"]),
            "in_distribution": len(results["in_distribution"]["train_patients"])}
        ctx.progress(f"transfer: {cancer} ratio W1 "
                     f"{folds[cancer]['ratio']['rollout_6_tree_w1']:.3f}")
    t_eval = time.perf_counter() - t0

    recipe = jobs[0].recipe
    config = {
        "held_out_types": types,
        "settings": asdict(settings),
        "recipe": {"source": str(DEFAULT_RECIPE.name), "module": dict(recipe.module),
                   "train": recipe.train.to_dict(), "seed": recipe.seed},
        "epochs": {name: r["epochs"] for name, r in results.items()},
        "epochs_run": {name: [len(h) for h in r["history"]] for name, r in results.items()},
        "best_val_loss": {name: [min(e["val_loss"] for e in h) for h in r["history"]]
                          for name, r in results.items()},
        "split": split_records,
        "test": "ctx.fresh cohorts of the held-out type (new seeds, unseen by every model)",
        "fresh_patients_per_cohort": sorted({c.spec.n_patients for c in ctx.fresh}),
        "rollout_cycles": HORIZON,
        "response_cycles": WORLD_MODEL_CYCLES,
        "n_bootstrap": N_BOOTSTRAP,
        "seed": ctx.seed,
        "ray": ctx.ray,
    }
    return {
        "folds": folds,
        "summary": summarize(folds),
        "held_out_types": types,
        "direction": {
            "rollout_6_tree_w1": "lower is better; ratio > 1 = worse on the unseen type",
            "log_burden_mae_6": "lower is better; ratio > 1 = worse on the unseen type",
            "response_auroc": "higher is better; ratio < 1 = worse on the unseen type",
            "ratio": "held_out / in_distribution",
            "seed_reference": f"{RESEEDED} / in_distribution (training randomness alone)",
        },
        "config": config,
        "timings_s": {"suite_data": t_suite, "test_data": t_data, "training": t_train,
                      "evaluation": t_eval,
                      "per_model": {name: r["seconds"] for name, r in results.items()}},
        "seconds": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------- report
_LABELS = {"rollout_6_tree_w1": "6-cycle tree-W1 (lower better)",
           "log_burden_mae_6": "6-cycle log-burden MAE (lower better)",
           "response_auroc": "response AUROC (higher better)"}


def report(section: dict[str, Any], out: Path) -> str:
    """Markdown for the transfer section; writes ``transfer_by_type.png`` into ``out``."""
    out = Path(out)
    folds, cfg = section["folds"], section.get("config", {})
    settings = cfg.get("settings", {})
    lines = [
        "## Cross-cancer transfer (leave one cancer type out)", "",
        "For each held-out cancer type a world model is trained without any patient of that "
        "type (*held-out*) and compared with a model trained the same way on every type "
        "(*in-distribution*: same recipe, seed and number of optimizer steps; "
        f"{settings.get('n_members', '?')} member(s), {settings.get('epochs', '?')} epochs) "
        "on unseen patients of the type (fresh cohorts). Metrics: tree-W1 of the "
        f"{cfg.get('rollout_cycles', HORIZON)}-cycle rollout (actual doses) vs ImmuneSim's "
        "true composition and the log-burden MAE at every biopsy origin, and the AUROC of "
        "the baseline rollout's predicted tumor shrinkage "
        f"({cfg.get('response_cycles', '?')} cycles of the arm's regimen) for RECIST "
        "response. *Pretrained* is the shipped model (bigger budget, in-distribution) for "
        "context. The ratio is held-out / in-distribution with a paired bootstrap 95% "
        "interval over patients: above 1 is worse for W1 and MAE, below 1 is worse for "
        "AUROC.", "",
    ]
    reference = bool(folds) and all("seed_reference" in f for f in folds.values())
    head = "| held-out type | metric | held-out | in-distribution | pretrained | ratio |"
    if reference:
        head += " seed reference |"
    lines += [head, "|---" * head.count(" | ") + "|---|"]
    for cancer, fold in folds.items():
        for metric in METRICS:
            block = fold[metric]
            cells = [format_ci(block.get(m), block["ci95"].get(m)) for m in MODELS]
            cells.append(format_ci(fold["ratio"][metric], fold["ratio"]["ci95"][metric]))
            if reference:
                ref = fold["seed_reference"]
                cells.append(format_ci(ref[metric], ref["ci95"][metric]))
            lines.append(f"| {cancer} (n={fold['n_patients']}) | {_LABELS[metric]} | "
                         + " | ".join(cells) + " |")
    summary = section.get("summary", {})
    lines += ["", "Mean ratio over the {} fold(s): ".format(summary.get("n_folds", len(folds)))
              + "; ".join(f"{m} {format_ci(summary.get(m))}" for m in METRICS) + "."]
    if reference:
        lines += ["The *seed reference* is the in-distribution model retrained with another "
                  "seed, divided by the in-distribution model: the spread a ratio gets from "
                  "training randomness alone. Mean over folds: " + "; ".join(
                      f"{m} {format_ci(summary.get('seed_reference', {}).get(m))}"
                      for m in METRICS) + "."]
    else:
        lines += ["The intervals resample patients; they do not include the randomness of "
                  "training."]
    lines.append("")
    plot = out / f"{NAME}_by_type.png"
    _plot_by_type(folds, plot)
    lines.append(f"![Held-out vs in-distribution by cancer type]({plot.name})")
    return "\n".join(lines) + "\n"


def _plot_by_type(folds: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from immunegym._atomic import atomic_path

    types = list(folds)
    x = np.arange(len(types))
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.1 * len(types) + 4), 3.8))
    colors = {"held_out": "tab:red", "in_distribution": "tab:blue"}
    for ax, metric in zip(axes, ("rollout_6_tree_w1", "response_auroc"), strict=True):
        for k, model in enumerate(("held_out", "in_distribution")):
            values = np.array([_num(folds[t][metric].get(model)) for t in types])
            ci = np.array([[_num(c) for c in (folds[t][metric]["ci95"].get(model)
                                              or [None, None])] for t in types])
            err = np.abs(np.stack([values - ci[:, 0], ci[:, 1] - values]))
            ax.bar(x + (k - 0.5) * 0.38, values, 0.38, yerr=np.nan_to_num(err),
                   color=colors[model], label=model.replace("_", "-"), capsize=3)
        pre = [_num(folds[t][metric].get("pretrained")) for t in types]
        ax.scatter(x, pre, marker="D", color="black", zorder=3, s=18, label="pretrained")
        if all(RESEEDED in folds[t][metric] for t in types):
            other = [_num(folds[t][metric].get(RESEEDED)) for t in types]
            ax.scatter(x + 0.3, other, marker="x", color="black", zorder=3, s=30,
                       label="in-distribution, other seed")
        ax.set_xticks(x, types, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.8, len(types) - 0.2)
        ax.set_title(_LABELS[metric], fontsize=10)
        if metric == "response_auroc":
            ax.axhline(0.5, color="grey", lw=0.8, ls="--")
            ax.set_ylim(0, 1)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def _num(value: Any) -> float:
    return float(value) if value is not None else math.nan
