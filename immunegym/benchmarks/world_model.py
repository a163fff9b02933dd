"""World-model benchmark: forecasts on held-out patients judged against ImmuneSim's truth.

For every held-out patient and every biopsy day ``d`` (the *origin*), each forecaster sees
the observations up to ``d`` and predicts the composition and burden ``h`` cycles later
(21 days each) under the therapy the patient actually got. The truth is ImmuneSim's hidden
composition and noise-free sum of diameters at ``d + 21 h``; origins whose patient died
before that day are skipped.

Metrics
-------
* tree-Wasserstein W1 (unit edges on the ontology tree) between predicted and true
  composition, mean over origins, at 1 cycle (``one_step``) and 6 cycles (``rollout_6``);
* mean absolute error of ``log1p`` sum of diameters (mm);
* ``coverage90``: the fraction of true values (each type's fraction and the burden, at
  horizons 1-6) inside the world model's central 90% predictive interval from sampled
  rollouts (aleatoric and epistemic);
* 95% bootstrap intervals over patients for the world model and the best baseline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from immunegym.benchmarks.baselines import BASELINES, RidgeTruth, last_observed
from immunegym.benchmarks.common import bootstrap_mean, fresh_specs, model_leaf_prior
from immunegym.ontology import tree_wasserstein
from immunegym.sim.cohort import HiddenTruth, simulate_cohort
from immunegym.sim.outcomes import sum_of_diameters
from immunegym.sim.parameters import load_parameters
from immunegym.sim.suite import DEFAULT_SUITE
from immunegym.validation import bad, boolean, integer, refuse_shipped
from immunegym.validation import seed as validate_seed
from immunegym.world_model.events import interval_dose
from immunegym.world_model.model import INTERVAL_SAMPLES, WorldModel
from immunegym.world_model.timelines import (
    CYCLE_DAYS,
    Timelines,
    build_timelines,
    concat_timelines,
    split_patients,
)

HORIZONS = 6


@dataclass
class LabeledCohorts:
    """Observed timelines of several cohorts plus, per patient, the hidden truth."""

    timelines: Timelines
    truth_composition: dict[str, np.ndarray]  # patient -> (D, K)
    truth_burden: dict[str, np.ndarray]  # patient -> (D,) log1p true SOD (NaN after death)


def truth_by_patient(truth: HiddenTruth, rates: dict[str, float] | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A cohort's hidden truth per patient id: daily composition ``(D, K)`` and daily
    ``log1p`` noise-free sum of diameters ``(D,)`` (NaN after death)."""
    rates = load_parameters().rates if rates is None else rates
    sod = sum_of_diameters(torch.as_tensor(truth.tumor_cells), rates).numpy()
    log_sod = np.where(truth.alive, np.log1p(sod), np.nan)
    comp = {pid: truth.composition[:, i] for i, pid in enumerate(truth.patient_ids)}
    burden = {pid: log_sod[:, i] for i, pid in enumerate(truth.patient_ids)}
    return comp, burden


def load_cohorts(specs: Sequence = DEFAULT_SUITE, directory: str | Path | None = None,
                 progress: Callable[[str], None] | None = None) -> LabeledCohorts:
    """Timelines and truth of cohorts: read from a suite directory, or generated in memory."""
    import anndata as ad

    rates = load_parameters().rates
    parts, comp, burden = [], {}, {}
    for spec in specs:
        if directory is not None:
            adata = ad.read_h5ad(Path(directory) / f"{spec.name}.h5ad")
            truth = HiddenTruth.load(Path(directory) / f"{spec.name}.truth.safetensors")
        else:
            cohort = simulate_cohort(spec)
            adata, truth = cohort.adata, cohort.truth
        parts.append(build_timelines(adata))
        cohort_comp, cohort_burden = truth_by_patient(truth, rates)
        comp.update(cohort_comp)
        burden.update(cohort_burden)
        if progress:
            progress(spec.name)
    return LabeledCohorts(concat_timelines(parts), comp, burden)


@dataclass
class Origins:
    """Forecast origins: one row per (patient, biopsy or scan day) with truth at every horizon.

    ``true_comp`` / ``true_burden`` hold the truth at horizons ``1..H``; ``today_comp`` /
    ``today_burden`` at the origin day itself. ``observed_comp`` is the origin's own biopsy
    (NaN rows at scan-only origins). ``n_biopsies`` counts biopsies up to the origin;
    ``treated`` says whether any therapy is given in the ``H`` cycles ahead.
    """

    rows: np.ndarray  # (N,) patient row in the timelines
    day: np.ndarray  # (N,) origin day
    context: Timelines  # observations up to the origin
    true_comp: np.ndarray  # (N, H, K)
    true_burden: np.ndarray  # (N, H)
    today_comp: np.ndarray | None = None  # (N, K)
    today_burden: np.ndarray | None = None  # (N,)
    is_biopsy: np.ndarray | None = None  # (N,) bool
    n_biopsies: np.ndarray | None = None  # (N,)
    treated: np.ndarray | None = None  # (N,) bool
    lab: np.ndarray | None = None  # (N,) str


def make_origins(data: LabeledCohorts, patient_rows: np.ndarray,
                 horizons: int = HORIZONS, *, include_scans: bool = True) -> Origins:
    """Every biopsy (and scan) day of the given patients with the patient alive ``horizons``
    cycles on."""
    tl = data.timelines
    rows, days, comps, burdens, today_c, today_b, biopsy, n_bx = [], [], [], [], [], [], [], []
    for p in patient_rows:
        pid = tl.patient_ids[p]
        truth_c, truth_b = data.truth_composition[pid], data.truth_burden[pid]
        seen = tl.comp_observed[p].numpy()
        points = seen | (tl.burden_observed[p].numpy() if include_scans else False)
        points = points & tl.valid[p].numpy()
        for i in np.nonzero(points)[0]:
            d = int(tl.days[p, i])
            targets = d + CYCLE_DAYS * np.arange(1, horizons + 1)
            if targets[-1] >= len(truth_b) or np.isnan(truth_b[targets]).any():
                continue
            rows.append(p)
            days.append(d)
            comps.append(truth_c[targets])
            burdens.append(truth_b[targets])
            today_c.append(truth_c[d])
            today_b.append(truth_b[d])
            biopsy.append(bool(seen[i]))
            n_bx.append(int(seen[:i + 1].sum()))
    rows_a = np.asarray(rows, dtype=np.int64)
    day_a = np.asarray(days, dtype=np.float32)
    context = tl.subset(rows_a).truncate(day_a)
    edges = torch.as_tensor(day_a)[:, None] + CYCLE_DAYS * torch.tensor([0.0, horizons])
    given = interval_dose(context.cycle_doses, edges[:, :1], edges[:, 1:])[:, 0]
    return Origins(rows_a, np.asarray(days, float), context, np.stack(comps),
                   np.stack(burdens), np.stack(today_c), np.asarray(today_b),
                   np.asarray(biopsy), np.asarray(n_bx), given.sum(-1).numpy() > 0,
                   context.patients["lab"].to_numpy(str))


def _crps(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Sample CRPS ``E|X - y| - E|X - X'| / 2`` per value; ``samples (S, ...)``."""
    first = np.abs(samples - truth[None]).mean(0)
    ordered = np.sort(samples, axis=0)
    s = len(samples)
    weights = (2 * np.arange(1, s + 1) - s - 1).reshape(-1, *([1] * truth.ndim))
    spread = (weights * ordered).sum(0) / (s * s)  # = E|X - X'| / 2
    return first - spread


def _stratum_table(w1_model: np.ndarray, w1_base: np.ndarray, groups: np.ndarray,
                   labels: np.ndarray, seed: int) -> dict[str, dict[str, object]]:
    out = {}
    for label in sorted(set(labels.tolist())):
        at = labels == label
        out[str(label)] = {
            "n_origins": int(at.sum()),
            "world_model": float(w1_model[at].mean()),
            "best_baseline": float(w1_base[at].mean()),
            "difference_ci95": bootstrap_mean(w1_model[at] - w1_base[at], groups[at],
                                              seed=seed),
        }
    return out


def evaluate(model: WorldModel, train: Timelines, origins: Origins, *, n_samples: int = 100,
             seed: int = 0, train_truth: LabeledCohorts | None = None) -> dict[str, object]:
    """Every metric of the benchmark for the world model and the baselines.

    ``train_truth`` (the training patients' hidden truth) adds the privileged
    ``ridge_truth`` reference.
    """
    if not isinstance(model, WorldModel):
        raise bad("model", model, "a WorldModel")
    n_samples = integer("n_samples", n_samples, low=2, high=100_000)
    seed = validate_seed("seed", seed)
    ctx = origins.context
    doses = model.actual_doses(ctx, torch.as_tensor(origins.day, dtype=torch.float32),
                               HORIZONS).numpy()
    forecasts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    timings: dict[str, float] = {}
    start = time.perf_counter()
    sampled = model.rollout(ctx, doses, n_samples=n_samples, noise="both", seed=seed)
    timings["world_model_sampled_rollout_s"] = time.perf_counter() - start
    comp_samples = sampled.compositions.cpu().numpy()  # (S, N, H, K)
    burden_samples = sampled.burden.cpu().numpy()
    # The point forecast is the ensemble's mean path: a mean of a few sampled paths would
    # add Monte Carlo noise that W1 (a sum of absolute differences) counts as error.
    mean_path = model.rollout(ctx, doses, noise="none")
    forecasts["world_model"] = (mean_path.compositions.mean(0).cpu().numpy(),
                                mean_path.burden.mean(0).cpu().numpy())
    for cls in BASELINES:
        start = time.perf_counter()
        forecasts[cls.name] = cls().fit(train).forecast(ctx, doses)
        timings[f"{cls.name}_fit_forecast_s"] = time.perf_counter() - start
    references: dict[str, np.ndarray] = {}
    if train_truth is not None:
        start = time.perf_counter()
        ridge = RidgeTruth().fit(train, train_truth.truth_composition,
                                 train_truth.truth_burden, HORIZONS)
        forecasts[RidgeTruth.name] = ridge.forecast(ctx, doses)
        timings["ridge_truth_fit_forecast_s"] = time.perf_counter() - start

    true_c, true_b = origins.true_comp, origins.true_burden
    w1 = {name: tree_wasserstein(np.clip(c, 0, None) + 1e-12, true_c)
          for name, (c, _) in forecasts.items()}  # (N, H)
    burden_err = {name: np.abs(b - true_b) for name, (_, b) in forecasts.items()}
    groups = origins.rows
    # Reference points: the truth at the origin held, a biopsy vs the truth on its own day,
    # and the filter's estimate of today's state vs the truth.
    if origins.today_comp is not None:
        held = np.repeat(origins.today_comp[:, None], HORIZONS, 1)
        references["oracle_persistence"] = tree_wasserstein(held + 1e-12, true_c)
        today = model.estimate(ctx)
        references["estimate_today"] = tree_wasserstein(
            today.composition.cpu().numpy()[:, None] + 1e-12, origins.today_comp[:, None])[:, 0]
        observed = ctx_biopsy(ctx, model)
        bx = origins.is_biopsy
        references["noise_floor"] = tree_wasserstein(
            observed[bx][:, None] + 1e-12, origins.today_comp[bx][:, None])[:, 0]
        references["persistence_today"] = tree_wasserstein(
            forecasts["persistence"][0][:, 0][:, None] + 1e-12,
            origins.today_comp[:, None])[:, 0]
    observed_baselines = [b.name for b in BASELINES]

    def section(h: int) -> dict[str, object]:
        out = {name: float(v[:, h - 1].mean()) for name, v in w1.items()}
        baselines = {k: out[k] for k in observed_baselines}
        best = min(baselines, key=baselines.get)
        extra = {}
        if "oracle_persistence" in references:
            extra = {"oracle_persistence": float(references["oracle_persistence"][:, h - 1]
                                                 .mean()),
                     "noise_floor": float(references["noise_floor"].mean()),
                     "estimate_today": float(references["estimate_today"].mean())}
        diffs = {name: bootstrap_mean(w1["world_model"][:, h - 1] - w1[name][:, h - 1],
                                      groups, seed=seed)
                 for name in w1 if name != "world_model"}
        return {
            **out,
            **extra,
            "best_baseline": best,
            "improvement_vs_best_baseline": 1.0 - out["world_model"] / out[best],
            "ci95": {"world_model": bootstrap_mean(w1["world_model"][:, h - 1], groups,
                                                   seed=seed),
                     best: bootstrap_mean(w1[best][:, h - 1], groups, seed=seed)},
            "difference_ci95": diffs,
            "log_burden_mae": {name: float(v[:, h - 1].mean())
                               for name, v in burden_err.items()},
        }

    lo_c, hi_c = np.quantile(comp_samples, [0.05, 0.95], axis=0)
    lo_b, hi_b = np.quantile(burden_samples, [0.05, 0.95], axis=0)
    inside_c = (true_c >= lo_c) & (true_c <= hi_c)  # (N, H, K)
    inside_b = (true_b >= lo_b) & (true_b <= hi_b)  # (N, H)
    inside = np.concatenate([inside_c, inside_b[..., None]], axis=-1)
    crps_c = _crps(comp_samples, true_c).mean(-1)  # (N, H)
    one, six = section(1), section(HORIZONS)
    best6 = six["best_baseline"]
    strata = {
        "lab": _stratum_table(w1["world_model"][:, -1], w1[best6][:, -1], groups,
                              origins.lab, seed) if origins.lab is not None else {},
        "history_biopsies": _stratum_table(
            w1["world_model"][:, -1], w1[best6][:, -1], groups,
            np.minimum(origins.n_biopsies, 3).astype(str) if origins.n_biopsies is not None
            else np.zeros(len(groups), str), seed),
        "treated": _stratum_table(
            w1["world_model"][:, -1], w1[best6][:, -1], groups,
            np.where(origins.treated, "treated", "untreated") if origins.treated is not None
            else np.zeros(len(groups), str), seed),
        "origin": _stratum_table(
            w1["world_model"][:, -1], w1[best6][:, -1], groups,
            np.where(origins.is_biopsy, "biopsy", "scan") if origins.is_biopsy is not None
            else np.zeros(len(groups), str), seed),
    }
    return {
        "one_step": one,
        "rollout_6": six,
        "coverage90": float(inside.mean()),
        "coverage90_by_horizon": [float(inside[:, h].mean()) for h in range(HORIZONS)],
        "coverage90_detail": {
            "composition": float(inside_c.mean()),
            "burden": float(inside_b.mean()),
            "by_horizon": [float(inside[:, h].mean()) for h in range(HORIZONS)],
        },
        "interval90_width_by_horizon": {
            "composition": [float((hi_c - lo_c)[:, h].mean()) for h in range(HORIZONS)],
            "log_burden": [float((hi_b - lo_b)[:, h].mean()) for h in range(HORIZONS)],
        },
        "crps_by_horizon": {
            "composition": [float(crps_c[:, h].mean()) for h in range(HORIZONS)],
            "log_burden": [float(v) for v in _crps(burden_samples, true_b).mean(0)],
        },
        "tree_w1_by_horizon": {name: [float(x) for x in v.mean(0)] for name, v in w1.items()},
        "strata_rollout_6": {"vs": best6, **strata},
        "n_origins": int(len(groups)),
        "n_patients": int(len(np.unique(groups))),
        "n_samples": n_samples,
        "timings_s": timings,
        "_w1_world_model_6": w1["world_model"][:, -1].tolist(),
    }


def ctx_biopsy(ctx: Timelines, model: WorldModel) -> np.ndarray:
    """``(N, K)`` each history's last biopsy, coarse blocks split by the model's prior."""
    comp, _ = last_observed(ctx, model_leaf_prior(model, ctx))
    return comp


def run_benchmark(model: WorldModel, *, quick: bool = False, suite_dir: str | Path | None = None,
                  seed: int = 0, progress: Callable[[str], None] | None = None,
                  observation_only: WorldModel | None = None) -> dict[str, object]:
    """The ``immunegym bench world-model`` figures.

    The held-out patients are the checkpoint's test split of the default suite (never seen
    in training or early stopping); the full run adds the 14 suite cohorts regenerated with
    new seeds (all patients unseen). ``observation_only``: a model trained without the
    privileged state, scored on the same origins under ``"observation_only"``.
    """
    if not isinstance(model, WorldModel):
        raise bad("model", model, "a WorldModel (immunegym.world_model.load())")
    if observation_only is not None and not isinstance(observation_only, WorldModel):
        raise bad("observation_only", observation_only, "a WorldModel or None")
    boolean("quick", quick)
    seed = validate_seed("seed", seed)
    if suite_dir is not None:
        if not isinstance(suite_dir, str | os.PathLike) or not Path(suite_dir).is_dir():
            raise bad("suite_dir", suite_dir, "a suite directory from `immunegym data "
                      "make-suite` or None (generate in memory)")
    split_info = dict(model.card.get("split", {})) if model.card else {}
    test_fraction = float(split_info.get("test_fraction", 0.15))
    val_fraction = float(split_info.get("val_fraction", 0.15))
    split_seed = int(split_info.get("seed", 0))
    start = time.perf_counter()
    data = load_cohorts(DEFAULT_SUITE, suite_dir, progress)
    split = split_patients(data.timelines.patient_ids, test_fraction=test_fraction,
                           val_fraction=val_fraction, seed=split_seed)
    train_rows = np.nonzero(split != "test")[0]
    train = data.timelines.subset(train_rows)  # baselines: train + val
    train_ids = set(train.patient_ids)
    train_truth = LabeledCohorts(
        train, {k: v for k, v in data.truth_composition.items() if k in train_ids},
        {k: v for k, v in data.truth_burden.items() if k in train_ids})
    held_out = [("suite_test_split", data, np.nonzero(split == "test")[0])]
    if not quick:
        fresh = load_cohorts(fresh_specs(), None, progress)
        held_out.append(("fresh_cohorts", fresh, np.arange(len(fresh.timelines))))
    results: dict[str, object] = {}
    obs_only: dict[str, object] = {}
    # The paths the conformal scales were fitted for: fewer paths give narrower intervals.
    n_samples = INTERVAL_SAMPLES
    for name, source, rows in held_out:
        origins = make_origins(source, rows)
        results[name] = evaluate(model, train, origins, n_samples=n_samples, seed=seed,
                                 train_truth=train_truth)
        if observation_only is not None:
            other = evaluate(observation_only, train, origins, n_samples=n_samples, seed=seed)
            obs_only[name] = {
                "one_step": other["one_step"]["world_model"],
                "rollout_6": other["rollout_6"]["world_model"],
                "estimate_today": other["rollout_6"].get("estimate_today"),
                "coverage90_by_horizon": other["coverage90_by_horizon"],
                "rollout_6_difference_vs_privileged_ci95": bootstrap_mean(
                    np.asarray(other["_w1_world_model_6"]) -
                    np.asarray(results[name]["_w1_world_model_6"]), origins.rows, seed=seed),
            }
            other.pop("_w1_world_model_6", None)
    for section in results.values():
        section.pop("_w1_world_model_6", None)  # type: ignore[union-attr]
    main = results["fresh_cohorts" if not quick else "suite_test_split"]
    out = {
        **{k: main[k] for k in ("one_step", "rollout_6", "coverage90", "coverage90_by_horizon",
                                "coverage90_detail", "interval90_width_by_horizon",
                                "crps_by_horizon", "tree_w1_by_horizon", "strata_rollout_6",
                                "n_origins", "n_patients")},
        "held_out": results,
        "main_set": "fresh_cohorts" if not quick else "suite_test_split",
        "quick": quick,
        "metric": "tree-Wasserstein W1 on the ontology tree (unit edges) vs ImmuneSim's true "
                  "composition; log_burden_mae is |log1p SOD_pred - log1p SOD_true| (mm); "
                  "difference_ci95: paired, patient-clustered bootstrap of world_model minus "
                  "each forecaster",
        "seconds": time.perf_counter() - start,
    }
    if observation_only is not None:
        out["observation_only"] = obs_only[out["main_set"]] | {"held_out": obs_only}
    return out


RECORD_KEYS = ("one_step", "rollout_6", "coverage90", "coverage90_by_horizon", "n_origins",
               "n_patients", "main_set")
"""The benchmark figures :func:`record_evaluation` writes into a checkpoint."""


def record_evaluation(model: WorldModel, result: dict[str, object],
                      path: str | os.PathLike[str] | None = None, *, quick: bool = False,
                      allow_shipped: bool = False) -> Path:
    """Write the figures of :func:`run_benchmark` into a checkpoint's record and card.

    ``immunegym bench world-model --record`` calls this. The checkpoint directory is
    rewritten whole (atomically, :meth:`WorldModel.save`) with ``evaluation`` set in
    ``training.json`` and the model card.

    Parameters
    ----------
    model
        The model that was benchmarked (its weights are written back unchanged).
    result
        :func:`run_benchmark`'s output.
    path
        Checkpoint directory; the pretrained default when ``None``.
    quick
        The run was ``--quick`` (recorded in the command).
    allow_shipped
        Allow writing into the package's shipped pretrained folders (maintainers only,
        the CLI's ``--replace-shipped``). Refused by default: the shipped record is
        read-only.

    Raises
    ------
    ValidationError
        A shipped folder without ``allow_shipped``, an unwritable path, or a result
        without the benchmark's figures; nothing is written then.
    """
    from immunegym.world_model.checkpoint import PRETRAINED

    if not isinstance(model, WorldModel):
        raise bad("model", model, "the WorldModel that was benchmarked")
    boolean("quick", quick)
    boolean("allow_shipped", allow_shipped)
    target = Path(path) if path is not None else PRETRAINED
    refuse_shipped("path", target, allow=allow_shipped, flag="--replace-shipped")
    if not isinstance(result, dict) or any(k not in result for k in RECORD_KEYS):
        missing = [k for k in RECORD_KEYS if not isinstance(result, dict) or k not in result]
        raise bad("result", f"<result without {missing}>",
                  "the output of run_benchmark(...)")
    card = dict(model.card)
    card["evaluation"] = {"command": "immunegym bench world-model" + (" --quick" if quick
                                                                      else ""),
                          **{k: result[k] for k in RECORD_KEYS}}
    model.card = card
    return model.to("cpu").save(target, card, allow_shipped=allow_shipped)
