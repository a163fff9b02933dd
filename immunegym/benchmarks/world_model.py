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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from immunegym.benchmarks.baselines import BASELINES
from immunegym.benchmarks.common import bootstrap_mean, fresh_specs
from immunegym.ontology import tree_wasserstein
from immunegym.sim.cohort import HiddenTruth, simulate_cohort
from immunegym.sim.outcomes import sum_of_diameters
from immunegym.sim.parameters import load_parameters
from immunegym.sim.suite import DEFAULT_SUITE
from immunegym.world_model.model import WorldModel
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
    """Forecast origins: one row per (patient, biopsy day) with truth at every horizon."""

    rows: np.ndarray  # (N,) patient row in the timelines
    day: np.ndarray  # (N,) origin day
    context: Timelines  # observations up to the origin
    true_comp: np.ndarray  # (N, H, K)
    true_burden: np.ndarray  # (N, H)


def make_origins(data: LabeledCohorts, patient_rows: np.ndarray,
                 horizons: int = HORIZONS) -> Origins:
    """Every biopsy day of the given patients with the patient alive ``horizons`` cycles on."""
    tl = data.timelines
    rows, days, comps, burdens = [], [], [], []
    for p in patient_rows:
        pid = tl.patient_ids[p]
        truth_c, truth_b = data.truth_composition[pid], data.truth_burden[pid]
        for i in np.nonzero(tl.comp_observed[p].numpy())[0]:
            d = int(tl.days[p, i])
            targets = d + CYCLE_DAYS * np.arange(1, horizons + 1)
            if targets[-1] >= len(truth_b) or np.isnan(truth_b[targets]).any():
                continue
            rows.append(p)
            days.append(d)
            comps.append(truth_c[targets])
            burdens.append(truth_b[targets])
    rows_a = np.asarray(rows, dtype=np.int64)
    context = tl.subset(rows_a).truncate(np.asarray(days, dtype=np.float32))
    return Origins(rows_a, np.asarray(days, float), context, np.stack(comps),
                   np.stack(burdens))


def evaluate(model: WorldModel, train: Timelines, origins: Origins, *, n_samples: int = 100,
             seed: int = 0) -> dict[str, object]:
    """Every metric of the benchmark for the world model and the three baselines."""
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

    true_c, true_b = origins.true_comp, origins.true_burden
    w1 = {name: tree_wasserstein(np.clip(c, 0, None) + 1e-12, true_c)
          for name, (c, _) in forecasts.items()}  # (N, H)
    burden_err = {name: np.abs(b - true_b) for name, (_, b) in forecasts.items()}
    groups = origins.rows

    def section(h: int) -> dict[str, object]:
        out = {name: float(v[:, h - 1].mean()) for name, v in w1.items()}
        baselines = {k: v for k, v in out.items() if k != "world_model"}
        best = min(baselines, key=baselines.get)
        return {
            **out,
            "best_baseline": best,
            "improvement_vs_best_baseline": 1.0 - out["world_model"] / out[best],
            "ci95": {"world_model": bootstrap_mean(w1["world_model"][:, h - 1], groups, seed=seed),
                     best: bootstrap_mean(w1[best][:, h - 1], groups, seed=seed)},
            "log_burden_mae": {name: float(v[:, h - 1].mean())
                               for name, v in burden_err.items()},
        }

    lo_c, hi_c = np.quantile(comp_samples, [0.05, 0.95], axis=0)
    lo_b, hi_b = np.quantile(burden_samples, [0.05, 0.95], axis=0)
    inside_c = (true_c >= lo_c) & (true_c <= hi_c)  # (N, H, K)
    inside_b = (true_b >= lo_b) & (true_b <= hi_b)  # (N, H)
    inside = np.concatenate([inside_c, inside_b[..., None]], axis=-1)
    return {
        "one_step": section(1),
        "rollout_6": section(HORIZONS),
        "coverage90": float(inside.mean()),
        "coverage90_detail": {
            "composition": float(inside_c.mean()),
            "burden": float(inside_b.mean()),
            "by_horizon": [float(inside[:, h].mean()) for h in range(HORIZONS)],
        },
        "tree_w1_by_horizon": {name: [float(x) for x in v.mean(0)] for name, v in w1.items()},
        "n_origins": int(len(groups)),
        "n_patients": int(len(np.unique(groups))),
        "n_samples": n_samples,
        "timings_s": timings,
    }


def run_benchmark(model: WorldModel, *, quick: bool = False, suite_dir: str | Path | None = None,
                  seed: int = 0, progress: Callable[[str], None] | None = None
                  ) -> dict[str, object]:
    """The ``immunegym bench world-model`` figures.

    The held-out patients are the checkpoint's test split of the default suite (never seen
    in training or early stopping); the full run adds the 14 suite cohorts regenerated with
    new seeds (all patients unseen).
    """
    split_info = dict(model.card.get("split", {})) if model.card else {}
    test_fraction = float(split_info.get("test_fraction", 0.15))
    val_fraction = float(split_info.get("val_fraction", 0.15))
    split_seed = int(split_info.get("seed", 0))
    start = time.perf_counter()
    data = load_cohorts(DEFAULT_SUITE, suite_dir, progress)
    split = split_patients(data.timelines.patient_ids, test_fraction=test_fraction,
                           val_fraction=val_fraction, seed=split_seed)
    train = data.timelines.subset(np.nonzero(split != "test")[0])  # baselines: train + val
    held_out = [("suite_test_split", data, np.nonzero(split == "test")[0])]
    if not quick:
        fresh = load_cohorts(fresh_specs(), None, progress)
        held_out.append(("fresh_cohorts", fresh, np.arange(len(fresh.timelines))))
    results: dict[str, object] = {}
    for name, source, rows in held_out:
        origins = make_origins(source, rows)
        results[name] = evaluate(model, train, origins, n_samples=16 if quick else 64,
                                 seed=seed)
    main = results["fresh_cohorts" if not quick else "suite_test_split"]
    return {
        **{k: main[k] for k in ("one_step", "rollout_6", "coverage90", "coverage90_detail",
                                "tree_w1_by_horizon", "n_origins", "n_patients")},
        "held_out": results,
        "main_set": "fresh_cohorts" if not quick else "suite_test_split",
        "quick": quick,
        "metric": "tree-Wasserstein W1 on the ontology tree (unit edges) vs ImmuneSim's true "
                  "composition; log_burden_mae is |log1p SOD_pred - log1p SOD_true| (mm)",
        "seconds": time.perf_counter() - start,
    }
