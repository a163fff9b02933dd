"""Real on-treatment trajectories: predict a patient's on-treatment sample from the pre one.

``immunegym bench real-trajectories`` (and a section of ``bench all``). The world model never
saw a real patient. Here each real patient's *pre-treatment* sample is mapped onto the
model's state, rolled forward under the regimen the patient actually received, and the
predicted *change* is compared with the change the patient's own on-treatment (or
post-treatment) sample shows. Two baselines are scored on the same patients:
``persistence`` (no change) and ``mean_change`` (the average change of the training
patients). Every map is fitted without the patient scored.

Datasets
--------
* **MORRISON-1** (Campbell et al., *Cancer Cell* 2023): the 68 subjects with a pre- and an
  on-treatment bulk RNA-seq sample (cohorts 038 = Riaz 2017, 42 pairs under PD1; 064, 7
  CTLA4-to-PD1 and 3 PD1-to-CTLA4; gide = Gide 2019, 9 PD1 and 7 Combo), regimens as plans by
  :data:`~immunegym.benchmarks.response_real.MORRISON1_REGIMENS`. Leave one cohort out over
  the three cohorts that have pairs (:func:`evaluate_morrison1_pairs`).
* **Riaz 2017** (CheckMate 038, nivolumab): the 34 patients with TCR metrics before and on
  treatment; the estimated T-cell fraction of the sample
  (:func:`~immunegym.data.real.riaz2017_tcell_fraction`). Leave one patient out
  (:func:`evaluate_riaz2017`). 31 of these 34 patients are also MORRISON-1 cohort 038
  subjects (bulk RNA of the same study): the two datasets are different measurements of
  largely the same patients, not independent evidence.
* **Sade-Feldman 2018** (scRNA, CD45+ cells): the 11 patients with a Pre and a Post biopsy,
  over the harmonized clusters G1..G11. Leave one patient out
  (:func:`evaluate_sade_feldman_pairs`).
* **NeoBCC** (Ressler et al. 2024): recorded as ``{"skipped": reason}``: only
  post-treatment counts are bundled (no pre-treatment composition to start from) and basal
  cell carcinoma is not one of ImmuneSim's cancer types, the world model's training data.

Observation maps
----------------
All three start from the quantile-matching idea of
:mod:`~immunegym.benchmarks.response_real`: a measured score is turned into a quantile among
training patients, and the state takes the reference bank's value
(:class:`~immunegym.benchmarks.response_real.ReferenceBank`, ImmuneSim melanoma day-0
states) at that quantile. Going back from a predicted state to the measured scale inverts
both steps: :func:`reference_quantile` (the inverse of :func:`numpy.quantile` on the
reference) and :func:`ecdf_inverse` (the inverse of the mid-rank empirical CDF of the
training scores, piecewise linear through its knots, clamped to the training range). The
predicted change is always *inverse(predicted on) - inverse(mapped pre)*: both sides go
through the same inverse, so persistence predicts exactly zero and the map's own distortion
cancels where the state does not move.

* **MORRISON-1** (signature scores): the fold's
  :class:`~immunegym.benchmarks.response_real.SignatureObservationModel`, fitted on every
  pre-treatment sample of the *other* cohorts (all six cohorts contribute, pairs or not;
  :func:`~immunegym.benchmarks.response_real.fit_without`), maps the pre sample to a
  composition. For each node of :data:`~immunegym.benchmarks.response_real.NODE_SIGNATURES`
  the predicted node abundance (the sum of its leaves) goes back to the node's composite
  score (:func:`inverse_node_scores`): reference quantile, then the training composite at
  that quantile. The observed change is the composite of the on sample minus that of the
  pre sample, both standardized with the fold's training mean and SD (:func:`node_composites`).
  Error per patient: the mean absolute error over the 11 nodes (composite z units).
* **Riaz 2017** (T-cell fraction, :func:`tcell_fraction_composition`): the pre fraction's
  mid-rank quantile among the *training patients'* pre fractions sets the ``t_cell`` node
  abundance (the reference bank's ``t_cell`` abundance at that quantile), split over its six
  leaves by the reference mean shares; every other leaf takes its reference mean fraction,
  scaled so the row sums to one. Back (:func:`tcell_fraction_of`): the predicted ``t_cell``
  abundance -> reference quantile -> training pre fraction at that quantile. Error: the
  absolute error of the change in fraction.
* **Sade-Feldman** (CD45+ counts): both the Pre and the Post biopsy are mapped with
  :func:`~immunegym.benchmarks.response_real.immune_counts_to_composition` (coarse clusters
  split over their leaves by the reference mean leaf fractions). They are compared as shares
  of CD45+ cells over :data:`SADE_FELDMAN_GROUPS`: the clusters' specific harmonized nodes
  (B cells G1, plasma cells G2, dendritic cells G4, Tregs G7, exhausted CD8 G6/G9/G11) and
  the remainders of T cells, lymphoid (NK) and myeloid cells, which receive the coarse
  clusters' (G3 myeloid, G5/G8 lymphoid, G10 T cells) prior-split mass. Error:
  ``0.5 * sum |predicted change - observed change|`` over the groups, the total variation
  distance between the predicted and the observed Post shares for ``world_model`` and
  ``persistence``. ``diagnostics.strict`` repeats it over lymphoid vs myeloid only, the one
  split the clusters resolve without any prior.

Assumptions (the published tables do not say)
---------------------------------------------
* **On-treatment time** (:data:`ON_TREATMENT_CYCLES`, cycles of 21 days): MORRISON-1 and
  Riaz 2017 on-treatment samples at 1 cycle (Riaz 2017 biopsied at about week 4, day 23-29;
  Gide 2019 early during treatment; CheckMate 064's on-treatment biopsy was probably later,
  about week 13, but the table does not record it, so one day is used for every cohort, the
  same as :mod:`~immunegym.benchmarks.real_finetune`); Sade-Feldman Post biopsies at 3
  cycles (taken at various times on or after therapy). ``horizon`` (per dataset) gives the
  world model's mean error had the sample been taken after 1..6 cycles instead.
* **Regimens**: MORRISON-1 as recorded; Riaz 2017 nivolumab = ``anti_pd1``; Sade-Feldman
  ``anti_pd1`` for every patient (per-sample therapy is not in the tables, as in
  :mod:`~immunegym.benchmarks.response_real`).
* **Tumor size**: the reference bank's median baseline SOD for every patient (no imaging).
* **Pairing**: MORRISON-1 and Riaz 2017 have one pre and one on sample per patient. In
  Sade-Feldman every Pre biopsy is paired with every Post biopsy of the same patient (P1,
  P3 and P28 have two Post lesions; each has one Pre); a patient's error is the mean over
  its pairs, so every patient weighs the same.
* **Clamping**: the inverse maps are bounded by the training pre-treatment range, so a
  predicted state beyond anything seen before treatment reads as the training extreme. The
  same bound applies to persistence and the world model alike.

World model and methods
-----------------------
The mapped pre composition is rolled forward under the plan with the ensemble's mean path
(:func:`~immunegym.benchmarks.response_real.world_model_outcomes`, which returns the
composition per cycle) and the composition at the assumed cycle is the prediction. Methods
(per-patient errors under ``errors``, their means under ``mean_error``):

* ``world_model``: the prediction above (and one key per extra model passed as
  ``extra_models``, e.g. ``world_model_finetuned``);
* ``world_model_from_estimate``: the same rollout, with the change measured from the
  model's own day-0 estimate of the mapped sample
  (:meth:`~immunegym.world_model.WorldModel.estimate`) instead of the mapped sample itself:
  the dynamics alone, without the filter's reading error of the day-0 state;
* ``persistence``: zero change;
* ``mean_change``: the mean observed change of the training patients (Riaz 2017 and
  Sade-Feldman: every other patient; MORRISON-1: the other cohorts' pairs under the same
  regimen; when no other cohort has that regimen, all the other cohorts' pairs pooled, and
  ``mean_change_source`` counts how often each applied. Only PD1 pairs occur in two cohorts
  (038 and gide); Combo, CTLA4-to-PD1 and PD1-to-CTLA4 pairs exist in one cohort each and
  always fall back to the pooled mean).

Statistics
----------
Per dataset: mean error of every method with a 95% patient bootstrap interval
(:func:`~immunegym.benchmarks.common.mean_block`, 1000 draws, ``seed``); ``deltas``: the mean
of world model minus baseline per patient with a paired bootstrap interval over patients
(negative = the world model is better); ``beats_baselines``: the world model's mean error
is below both baselines'; ``significant``: both paired intervals lie below zero. ``changes``
holds observed and predicted changes for the scatter plots, ``spearman`` the Spearman
correlation of each method's predicted change with the observed one (pooled over patients
and nodes/groups; does the model get the direction right even where the size is off). For
Riaz 2017's scalar change the leave-one-out mean is a decreasing function of the patient's
own change, so ``mean_change`` correlates at -1 by construction; the report shows the
world-model methods only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from immunegym.benchmarks.common import (
    N_BOOTSTRAP,
    bootstrap_mean,
    finite_mean,
    format_ci,
    mean_block,
)
from immunegym.benchmarks.real_finetune import morrison1_pairs
from immunegym.benchmarks.response_real import (
    CANCER_TYPE,
    MORRISON1_REGIMENS,
    REFERENCE_PATIENTS,
    REFERENCE_SEED,
    ReferenceBank,
    SignatureObservationModel,
    fit_without,
    immune_counts_to_composition,
    world_model_outcomes,
)
from immunegym.ontology import FINE_TYPES, default_ontology
from immunegym.validation import ValidationError

ON_TREATMENT_CYCLES: dict[str, int] = {"morrison1": 1, "riaz2017": 1, "sade_feldman": 3}
"""Cycles (21 days) between the pre and the on/post sample, per dataset (assumed)."""

HORIZON_CYCLES = 6
"""Rollout length; each dataset's ``horizon`` scores every cycle 1..6."""

RIAZ_REGIMEN = "anti_pd1"
"""CheckMate 038: nivolumab."""

SADE_FELDMAN_REGIMEN = "anti_pd1"
"""Assumed for every Sade-Feldman patient (not in the published tables)."""

BASELINES: tuple[str, ...] = ("persistence", "mean_change")
"""Baseline methods every world-model method is compared with."""

FINETUNED_METHOD = "world_model_finetuned"
"""The fine-tuned world model's method key (:func:`finetuned_models`)."""

ESTIMATE_METHOD = "world_model_from_estimate"

_ONTO = default_ontology()


def _leaves(node: str) -> list[int]:
    return [FINE_TYPES.index(t) for t in _ONTO.leaves_under(node)]


SADE_FELDMAN_GROUPS: dict[str, tuple[str, ...]] = {
    "b_cell": ("b_cell",),
    "plasma_cell": ("plasma_cell",),
    "treg": ("treg",),
    "cd8_exhausted": ("cd8_tpex", "cd8_tex"),
    "t_cell_other": ("cd8_memory", "cd8_effector", "cd4_helper"),
    "nk": ("nk",),
    "dendritic_cell": ("cdc1", "dc_other"),
    "myeloid_other": ("monocyte", "macrophage_m1", "macrophage_m2", "mdsc", "neutrophil",
                      "mast_cell"),
}
"""A partition of the immune leaves for Sade-Feldman: the clusters' specific nodes and the
remainders of T, lymphoid and myeloid cells."""

SADE_FELDMAN_STRICT_GROUPS: dict[str, tuple[str, ...]] = {
    "lymphoid": tuple(_ONTO.leaves_under("lymphoid")),
    "myeloid": tuple(_ONTO.leaves_under("myeloid")),
}
"""The only split of CD45+ cells the 11 clusters resolve without a prior."""

NEOBCC_SKIP_REASON = (
    "only post-treatment cell-type counts are bundled (no pre-treatment composition to "
    "start a trajectory from), and basal cell carcinoma is not one of ImmuneSim's cancer "
    "types (the world model's training data)")

METHOD_LABELS = {
    "world_model": "world model",
    "world_model_finetuned": "world model, fine-tuned",
    ESTIMATE_METHOD: "world model, change from its day-0 estimate",
    "persistence": "persistence",
    "mean_change": "training mean change",
}

DATASET_TITLES = {
    "morrison1": "MORRISON-1 bulk RNA (pre -> on, LOCO)",
    "riaz2017": "Riaz 2017 T-cell fraction (pre -> on nivolumab, LOPO)",
    "sade_feldman": "Sade-Feldman CD45+ shares (Pre -> Post, LOPO)",
}

DATASET_UNITS = {
    "morrison1": "change of node composite score (z)",
    "riaz2017": "change of T-cell fraction",
    "sade_feldman": "change of share of CD45+ cells",
}


# --------------------------------------------------------------------------- quantile maps
def ecdf_quantile(sorted_train: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mid-rank empirical CDF of ``values`` against sorted training values, in (0, 1).

    The forward map of :class:`~immunegym.benchmarks.response_real.SignatureObservationModel`
    (a training value ``x_(i)`` of ``n`` distinct values gets ``(2 i + 1) / (2 n)``).
    """
    train = np.asarray(sorted_train, dtype=np.float64)
    n = len(train)
    if n < 1:
        raise ValidationError("sorted_train: empty; expected at least one training value")
    values = np.asarray(values, dtype=np.float64)
    lo = np.searchsorted(train, values, side="left")
    hi = np.searchsorted(train, values, side="right")
    return np.clip((lo + hi) / (2.0 * n), 0.5 / n, 1.0 - 0.5 / n)


def ecdf_inverse(sorted_train: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The training value at quantile ``q``: the inverse of :func:`ecdf_quantile`.

    Piecewise linear through ``(ecdf_quantile(u), u)`` over the distinct training values
    ``u``, constant beyond the first and last knot; a training value's own quantile returns
    it exactly.

    Raises
    ------
    ValidationError
        If ``sorted_train`` is empty, not sorted or not finite.
    """
    train = _sorted_finite("sorted_train", sorted_train)
    knots = np.unique(train)
    levels = ecdf_quantile(train, knots)
    if len(knots) == 1:
        return np.full(np.shape(q), knots[0])
    return np.interp(np.asarray(q, dtype=np.float64), levels, knots)


def reference_quantile(reference_values: np.ndarray, abundance: np.ndarray) -> np.ndarray:
    """Quantile of ``abundance`` in ``reference_values``: the inverse of
    :func:`numpy.quantile` (linear interpolation) on the reference.

    ``np.quantile(reference_values, reference_quantile(reference_values, a)) == a`` for ``a``
    within the reference range; tied reference values map to the middle of their quantile
    range; values outside the range clamp to 0 or 1.

    Raises
    ------
    ValidationError
        If the reference has fewer than 2 values or is not finite.
    """
    ref = np.sort(np.asarray(reference_values, dtype=np.float64).ravel())
    if len(ref) < 2 or not np.all(np.isfinite(ref)):
        raise ValidationError(f"reference_values: {len(ref)} values; expected at least 2 "
                              "finite values")
    knots, first, counts = np.unique(ref, return_index=True, return_counts=True)
    position = (first + (counts - 1) / 2.0) / (len(ref) - 1)
    a = np.asarray(abundance, dtype=np.float64)
    if len(knots) == 1:
        return np.full(a.shape, 0.5)
    return np.interp(a, knots, position)


def _sorted_finite(field: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if len(arr) < 1 or not np.all(np.isfinite(arr)):
        raise ValidationError(f"{field}: expected at least one finite value, got {len(arr)} "
                              "values" + ("" if np.all(np.isfinite(arr)) else " with NaN/inf"))
    if np.any(np.diff(arr) < 0):
        raise ValidationError(f"{field}: expected values sorted ascending")
    return arr


def node_composites(obs: SignatureObservationModel, samples: pd.DataFrame
                    ) -> dict[str, np.ndarray]:
    """Composite score per node of ``obs``: the mean of its signatures standardized with the
    training mean and SD of the fitted observation model.

    Raises
    ------
    ValidationError
        If ``obs`` is not fitted, a signature column is missing or a score not finite.
    """
    if not hasattr(obs, "mean_"):
        raise ValidationError("obs: not fitted; expected SignatureObservationModel.fit() first")
    columns = obs.columns
    missing = [c for c in columns if c not in samples.columns]
    if missing:
        raise ValidationError(f"samples: signature column {missing[0]!r} not found; expected "
                              f"columns {columns}")
    values = samples[columns].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)):
        row, col = np.argwhere(~np.isfinite(values))[0]
        raise ValidationError(f"samples[{columns[col]!r}]: row {samples.index[row]!r} is "
                              f"{values[row, col]}; expected finite scores")
    z = (values - obs.mean_) / obs.sd_
    index = {c: i for i, c in enumerate(columns)}
    return {node: z[:, [index[c] for c in cols]].mean(1)
            for node, cols in obs.node_signatures.items()}


def inverse_node_scores(obs: SignatureObservationModel, composition: np.ndarray
                        ) -> dict[str, np.ndarray]:
    """Composition -> composite score per node of ``obs`` (the inverse quantile map).

    Node abundance (sum of its leaves) -> its quantile in the reference bank's node abundance
    (:func:`reference_quantile`) -> the training composite at that quantile
    (:func:`ecdf_inverse`).
    """
    comp = _composition("composition", composition)
    out = {}
    for node in obs.node_signatures:
        q = reference_quantile(obs.reference.node_abundance(node),
                               comp[:, _leaves(node)].sum(1))
        out[node] = ecdf_inverse(obs.ecdf_[node], q)
    return out


def _composition(field: str, composition: np.ndarray) -> np.ndarray:
    comp = np.asarray(composition, dtype=np.float64)
    if comp.ndim != 2 or comp.shape[1] != len(FINE_TYPES):
        raise ValidationError(f"{field}: expected shape (N, {len(FINE_TYPES)}), got "
                              f"{comp.shape}")
    if not np.all(np.isfinite(comp)) or np.any(comp < 0):
        raise ValidationError(f"{field}: expected finite, non-negative fractions")
    return comp


# --------------------------------------------------------------------------- world model
def rollout_compositions(model, composition: np.ndarray, regimens: Sequence[str],
                         sod_mm: float, *, n_cycles: int = HORIZON_CYCLES) -> np.ndarray:
    """``(P, n_cycles, K)`` mean-path compositions after each cycle under each plan."""
    return world_model_outcomes(model, composition, sod_mm, list(regimens),
                                n_cycles=n_cycles)["composition"]


def day0_estimate(model, composition: np.ndarray, sod_mm: float) -> np.ndarray:
    """``(P, K)`` the world model's own estimate of the day-0 state from ``composition``."""
    from immunegym.world_model.timelines import baseline_timelines

    comp = _composition("composition", composition)
    tl = baseline_timelines(comp, np.full(len(comp), float(sod_mm)),
                            [f"p{i}" for i in range(len(comp))], cancer_type=CANCER_TYPE,
                            programs=())
    return model.estimate(tl).composition.cpu().numpy().astype(np.float64)


def _models(model, extra_models: Mapping[str, Any] | None) -> dict[str, Any]:
    models = {"world_model": model}
    for name, extra in (extra_models or {}).items():
        if name in models or name in BASELINES or name == ESTIMATE_METHOD:
            raise ValidationError(f"extra_models: key {name!r} is taken; expected a new method "
                                  "name such as 'world_model_finetuned'")
        models[str(name)] = extra
    return models


def _cycle(field: str, n_cycles: int) -> int:
    if not isinstance(n_cycles, (int, np.integer)) or not 1 <= n_cycles <= HORIZON_CYCLES:
        raise ValidationError(f"{field}: got {n_cycles!r}; expected an integer in "
                              f"1..{HORIZON_CYCLES}")
    return int(n_cycles)


# --------------------------------------------------------------------------- statistics
def compare_methods(errors: Mapping[str, np.ndarray], *, seed: int = 0,
                    n_bootstrap: int = N_BOOTSTRAP) -> dict[str, Any]:
    """Mean errors with patient-bootstrap CIs and paired deltas of each world-model method.

    Parameters
    ----------
    errors
        Method -> ``(P,)`` per-patient errors (the same patients, in the same order); must
        hold ``world_model`` and every :data:`BASELINES` method.

    Returns
    -------
    dict
        ``mean_error`` (a :func:`~immunegym.benchmarks.common.mean_block`), ``deltas``
        (``{method: {baseline: {"value", "ci95"}}}`` for every non-baseline method; mean of
        method minus baseline per patient, paired bootstrap), ``beats_baselines`` and
        ``significant`` (for ``world_model``).
    """
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in errors.items()}
    for key in ("world_model", *BASELINES):
        if key not in arrays:
            raise ValidationError(f"errors: no {key!r} method; expected world_model and "
                                  f"{list(BASELINES)}")
    n = len(arrays["world_model"])
    for key, values in arrays.items():
        if values.shape != (n,):
            raise ValidationError(f"errors[{key!r}]: shape {values.shape}; expected ({n},), "
                                  "one error per patient")
    block = mean_block(arrays, seed=seed, n=n_bootstrap)
    deltas = {
        method: {base: {"value": finite_mean(arrays[method] - arrays[base]),
                        "ci95": bootstrap_mean(arrays[method] - arrays[base], seed=seed,
                                               n=n_bootstrap)}
                 for base in BASELINES}
        for method in arrays if method not in BASELINES
    }
    wm = deltas["world_model"]
    return {
        "mean_error": block,
        "deltas": deltas,
        "beats_baselines": bool(all(block["world_model"] < block[b] for b in BASELINES)),
        "significant": bool(all(wm[b]["ci95"][1] < 0 for b in BASELINES)),
    }


def change_correlation(changes: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Spearman correlation (SciPy) of each method's predicted change with the observed one,
    pooled over patients and components; NaN for a constant prediction (persistence)."""
    from scipy.stats import spearmanr

    observed = np.asarray(changes["observed"], dtype=np.float64).ravel()
    out = {}
    for name, values in changes.items():
        if name == "observed":
            continue
        pred = np.asarray(values, dtype=np.float64).ravel()
        constant = np.ptp(pred) == 0 or np.ptp(observed) == 0
        out[name] = math.nan if constant else float(spearmanr(pred, observed).statistic)
    return out


def _horizon(errors_by_cycle: np.ndarray) -> dict[str, float]:
    return {str(h + 1): float(np.mean(errors_by_cycle[h])) for h in range(len(errors_by_cycle))}


# --------------------------------------------------------------------------- MORRISON-1
def regimen_mean_change(train_changes: np.ndarray, train_regimens: Sequence[str],
                        regimens: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Per test patient: the mean training change under the same regimen, else pooled.

    Parameters
    ----------
    train_changes
        ``(N, D)`` observed changes of the training pairs.
    train_regimens
        ``N`` regimens of the training pairs.
    regimens
        The test patients' regimens.

    Returns
    -------
    (numpy.ndarray, list of str)
        ``(P, D)`` predicted changes and, per patient, ``"regimen"`` or ``"pooled"``.
    """
    train = np.asarray(train_changes, dtype=np.float64)
    if train.ndim != 2 or len(train) != len(train_regimens) or len(train) < 1:
        raise ValidationError(f"train_changes: shape {train.shape} for {len(train_regimens)} "
                              "regimens; expected (N >= 1, D), one row per regimen")
    labels = np.asarray(train_regimens, dtype=object)
    pooled = train.mean(0)
    out, source = [], []
    for regimen in regimens:
        rows = labels == regimen
        out.append(train[rows].mean(0) if rows.any() else pooled)
        source.append("regimen" if rows.any() else "pooled")
    return np.array(out).reshape(len(out), train.shape[1]), source


def evaluate_morrison1_pairs(model, reference: ReferenceBank, *,
                             samples: pd.DataFrame | None = None,
                             extra_models: Mapping[str, Any] | None = None,
                             n_cycles: int = ON_TREATMENT_CYCLES["morrison1"], seed: int = 0,
                             n_bootstrap: int = N_BOOTSTRAP) -> dict[str, Any]:
    """MORRISON-1 pre -> on, leave one cohort out (see the module docstring).

    Parameters
    ----------
    model
        The world model (``world_model``).
    reference
        The reference bank the observation model matches onto.
    samples
        :func:`~immunegym.data.real.morrison1_samples` (the default).
    extra_models
        More models scored the same way, one method key each (``world_model_finetuned``).
        A value may be a callable ``cohort -> model``, called per held-out cohort (a model
        fine-tuned without that cohort).
    n_cycles
        Cycles between the pre and the on sample.
    """
    n_cycles = _cycle("n_cycles", n_cycles)
    if samples is None:
        from immunegym.data.real import morrison1_samples

        samples = morrison1_samples()
    pairs = morrison1_pairs(samples)
    models = _models(model, extra_models)
    by_id = samples.set_index("sample_id")
    pre_samples = by_id.loc[pairs["pre_sample"]]
    on_samples = by_id.loc[pairs["on_sample"]]
    pretreatment = samples[samples["timepoint"] == "pre"]
    cohorts = pairs["cohort"].to_numpy()
    regimens = pairs["regimen"].to_numpy()
    plans = [MORRISON1_REGIMENS[r] for r in regimens]
    nodes = list(SignatureObservationModel(reference).node_signatures)
    n, d = len(pairs), len(nodes)
    sod = reference.median_sod_mm
    observed = np.zeros((n, d))
    predicted = {name: np.zeros((n, d)) for name in models}
    predicted[ESTIMATE_METHOD] = np.zeros((n, d))
    mean_change = np.zeros((n, d))
    source = np.empty(n, dtype=object)
    horizon = np.zeros((HORIZON_CYCLES, n))
    names = sorted(set(cohorts))
    for cohort in names:
        test = cohorts == cohort
        obs = fit_without(pretreatment, cohort, reference)
        z_pre = node_composites(obs, pre_samples)
        z_on = node_composites(obs, on_samples)
        change = np.column_stack([z_on[k] - z_pre[k] for k in nodes])
        observed[test] = change[test]
        mean_change[test], src = regimen_mean_change(change[~test], regimens[~test],
                                                     regimens[test])
        source[test] = src
        comp = obs.transform(pre_samples[test])
        pre_back = inverse_node_scores(obs, comp)
        test_plans = [p for p, t in zip(plans, test, strict=True) if t]

        def back_change(c: np.ndarray, base: dict[str, np.ndarray],
                        _obs: SignatureObservationModel = obs) -> np.ndarray:
            on = inverse_node_scores(_obs, c)
            return np.column_stack([on[k] - base[k] for k in nodes])

        for name, m in models.items():
            m = m(cohort) if callable(m) and not hasattr(m, "rollout") else m
            path = rollout_compositions(m, comp, test_plans, sod)
            predicted[name][test] = back_change(path[:, n_cycles - 1], pre_back)
            if name == "world_model":
                est = inverse_node_scores(obs, day0_estimate(m, comp, sod))
                predicted[ESTIMATE_METHOD][test] = back_change(path[:, n_cycles - 1], est)
                for h in range(HORIZON_CYCLES):
                    horizon[h, test] = np.abs(back_change(path[:, h], pre_back)
                                              - change[test]).mean(1)
    changes = {"observed": observed, **predicted, "persistence": np.zeros((n, d)),
               "mean_change": mean_change}
    errors = {k: np.abs(v - observed).mean(1) for k, v in changes.items() if k != "observed"}
    return {
        **compare_methods(errors, seed=seed, n_bootstrap=n_bootstrap),
        "errors": errors,
        "patients": pairs["subject_id"].astype(str).tolist(),
        "cohorts": {c: int((cohorts == c).sum()) for c in names},
        "regimens": {str(r): int(k) for r, k in pairs["regimen"].value_counts().items()},
        "mean_change_source": {s: int((source == s).sum()) for s in ("regimen", "pooled")},
        "mean_change_source_by_cohort_regimen": {
            f"{c}/{r}": str(source[(cohorts == c) & (regimens == r)][0])
            for c, r in sorted(set(zip(cohorts, regimens, strict=True)))},
        "nodes": nodes,
        "changes": changes,
        "spearman": change_correlation(changes),
        "n_cycles": n_cycles,
        "horizon": _horizon(horizon),
        "n": int(n),
    }


# --------------------------------------------------------------------------- Riaz 2017
def tcell_fraction_composition(fraction: np.ndarray, train_fractions: np.ndarray,
                               reference: ReferenceBank) -> np.ndarray:
    """T-cell fractions -> ``(N, 20)`` compositions by quantile matching.

    The fraction's mid-rank quantile among ``train_fractions`` sets the ``t_cell`` abundance
    (the reference bank's at that quantile), split over the T-cell leaves by the reference
    mean shares; the other leaves take the reference mean, scaled to fill the rest.

    Raises
    ------
    ValidationError
        If a fraction is not finite or outside [0, 1], or fewer than 2 training fractions.
    """
    fraction = _fractions("fraction", fraction, minimum=1)
    train = np.sort(_fractions("train_fractions", train_fractions, minimum=2))
    tcell = _leaves("t_cell")
    other = [i for i in range(len(FINE_TYPES)) if i not in tcell]
    mean = reference.mean
    total = np.quantile(reference.node_abundance("t_cell"), ecdf_quantile(train, fraction))
    out = np.zeros((len(fraction), len(FINE_TYPES)))
    out[:, tcell] = total[:, None] * (mean[tcell] / mean[tcell].sum())[None]
    out[:, other] = (1.0 - total)[:, None] * (mean[other] / mean[other].sum())[None]
    return out


def tcell_fraction_of(composition: np.ndarray, train_fractions: np.ndarray,
                      reference: ReferenceBank) -> np.ndarray:
    """The inverse of :func:`tcell_fraction_composition`: ``t_cell`` abundance -> reference
    quantile -> training fraction at that quantile."""
    comp = _composition("composition", composition)
    train = np.sort(_fractions("train_fractions", train_fractions, minimum=2))
    q = reference_quantile(reference.node_abundance("t_cell"), comp[:, _leaves("t_cell")].sum(1))
    return ecdf_inverse(train, q)


def _fractions(field: str, values: np.ndarray, *, minimum: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if len(arr) < minimum:
        raise ValidationError(f"{field}: {len(arr)} values; expected at least {minimum}")
    bad = ~np.isfinite(arr) | (arr < 0) | (arr > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValidationError(f"{field}[{i}]: got {arr[i]}; expected a fraction in [0, 1]")
    return arr


def evaluate_riaz2017(model, reference: ReferenceBank, *, table: pd.DataFrame | None = None,
                      extra_models: Mapping[str, Any] | None = None,
                      n_cycles: int = ON_TREATMENT_CYCLES["riaz2017"], seed: int = 0,
                      n_bootstrap: int = N_BOOTSTRAP) -> dict[str, Any]:
    """Riaz 2017 T-cell fraction pre -> on nivolumab, leave one patient out.

    Parameters
    ----------
    table
        :func:`~immunegym.data.real.riaz2017_tcell_fraction` (the default) or a table with
        ``patient``, ``fraction_pre`` and ``fraction_on``.
    extra_models
        More models, one method key each (see :func:`evaluate_morrison1_pairs`; a callable
        is called with the held-out patient id).
    """
    n_cycles = _cycle("n_cycles", n_cycles)
    if table is None:
        from immunegym.data.real import riaz2017_tcell_fraction

        table = riaz2017_tcell_fraction()
    for column in ("patient", "fraction_pre", "fraction_on"):
        if column not in table.columns:
            raise ValidationError(f"table: no {column!r} column; expected the columns of "
                                  "riaz2017_tcell_fraction()")
    pre = _fractions("table['fraction_pre']", table["fraction_pre"], minimum=3)
    on = _fractions("table['fraction_on']", table["fraction_on"], minimum=3)
    patients = table["patient"].astype(str).tolist()
    models = _models(model, extra_models)
    n = len(pre)
    observed = on - pre
    sod = reference.median_sod_mm
    comp = np.zeros((n, len(FINE_TYPES)))
    train_of = [np.delete(pre, i) for i in range(n)]
    for i in range(n):
        comp[i] = tcell_fraction_composition(pre[i:i + 1], train_of[i], reference)[0]
    base = np.array([tcell_fraction_of(comp[i:i + 1], train_of[i], reference)[0]
                     for i in range(n)])

    def back(c: np.ndarray) -> np.ndarray:
        return np.array([tcell_fraction_of(c[i:i + 1], train_of[i], reference)[0]
                         for i in range(n)])

    predicted: dict[str, np.ndarray] = {}
    horizon = np.zeros((HORIZON_CYCLES, n))
    for name, m in models.items():
        if callable(m) and not hasattr(m, "rollout"):
            rows = [rollout_compositions(m(p), comp[i:i + 1], [RIAZ_REGIMEN], sod)[0]
                    for i, p in enumerate(patients)]
            path = np.stack(rows)
        else:
            path = rollout_compositions(m, comp, [RIAZ_REGIMEN] * n, sod)
        predicted[name] = back(path[:, n_cycles - 1]) - base
        if name == "world_model":
            est = back(day0_estimate(m, comp, sod))
            predicted[ESTIMATE_METHOD] = back(path[:, n_cycles - 1]) - est
            for h in range(HORIZON_CYCLES):
                horizon[h] = np.abs(back(path[:, h]) - base - observed)
    mean_change = np.array([np.delete(observed, i).mean() for i in range(n)])
    changes = {"observed": observed, **predicted, "persistence": np.zeros(n),
               "mean_change": mean_change}
    errors = {k: np.abs(v - observed) for k, v in changes.items() if k != "observed"}
    return {
        **compare_methods(errors, seed=seed, n_bootstrap=n_bootstrap),
        "errors": errors,
        "patients": patients,
        "cohorts": ({str(c): int(k) for c, k in table["cohort"].value_counts().items()}
                    if "cohort" in table.columns else {}),
        "regimen": RIAZ_REGIMEN,
        "changes": changes,
        "spearman": change_correlation(changes),
        "n_cycles": n_cycles,
        "horizon": _horizon(horizon),
        "n": int(n),
    }


# --------------------------------------------------------------------------- Sade-Feldman
def sade_feldman_pairs(table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every (Pre, Post) biopsy pair of the same Sade-Feldman patient.

    Returns
    -------
    pandas.DataFrame
        ``patient, pre_sample, post_sample``: 14 pairs of 11 patients on the bundled table
        (P1, P3 and P28 have two Post lesions), sorted by patient then sample.
    """
    if table is None:
        from immunegym.data.real import sade_feldman_sample_counts

        table = sade_feldman_sample_counts()
    for column in ("sample", "patient", "timepoint"):
        if column not in table.columns:
            raise ValidationError(f"table: no {column!r} column; expected the columns of "
                                  "sade_feldman_sample_counts()")
    t = table.assign(patient=table["patient"].astype(str).str.strip())
    pre = t[t["timepoint"] == "Pre"][["patient", "sample"]]
    post = t[t["timepoint"] == "Post"][["patient", "sample"]]
    pairs = pre.merge(post, on="patient", suffixes=("_pre", "_post"))
    pairs = pairs.rename(columns={"sample_pre": "pre_sample", "sample_post": "post_sample"})
    return pairs.sort_values(["patient", "pre_sample", "post_sample"]).reset_index(drop=True)


def group_shares(composition: np.ndarray,
                 groups: Mapping[str, Sequence[str]] | None = None) -> np.ndarray:
    """``(N, G)`` share of the immune cells of each group of leaves (CD45+ shares).

    Raises
    ------
    ValidationError
        If a group names a non-immune leaf, or a row has no immune cells.
    """
    groups = SADE_FELDMAN_GROUPS if groups is None else groups
    comp = _composition("composition", composition)
    immune = _leaves("immune")
    total = comp[:, immune].sum(1)
    if np.any(total <= 0):
        raise ValidationError("composition: a row has no immune cells; expected a positive "
                              "immune share")
    cols = []
    for name, leaves in groups.items():
        bad = [leaf for leaf in leaves if leaf not in FINE_TYPES
               or FINE_TYPES.index(leaf) not in immune]
        if bad:
            raise ValidationError(f"groups[{name!r}]: {bad[0]!r} is not an immune leaf; "
                                  "expected leaves under 'immune'")
        cols.append(comp[:, [FINE_TYPES.index(leaf) for leaf in leaves]].sum(1) / total)
    return np.column_stack(cols)


def evaluate_sade_feldman_pairs(model, reference: ReferenceBank, *,
                                table: pd.DataFrame | None = None,
                                extra_models: Mapping[str, Any] | None = None,
                                n_cycles: int = ON_TREATMENT_CYCLES["sade_feldman"],
                                seed: int = 0, n_bootstrap: int = N_BOOTSTRAP
                                ) -> dict[str, Any]:
    """Sade-Feldman Pre -> Post CD45+ shares, leave one patient out.

    Parameters
    ----------
    table
        :func:`~immunegym.data.real.sade_feldman_sample_counts` (the default).
    extra_models
        More models, one method key each (a callable is called with the held-out patient).
    """
    from immunegym.data.real import SADE_FELDMAN_CLUSTERS, sade_feldman_sample_counts
    from immunegym.ontology import harmonize_labels

    n_cycles = _cycle("n_cycles", n_cycles)
    table = sade_feldman_sample_counts() if table is None else table
    clusters = list(SADE_FELDMAN_CLUSTERS)
    missing = [c for c in clusters if c not in table.columns]
    if missing:
        raise ValidationError(f"table: no {missing[0]!r} column; expected the cluster counts "
                              f"{clusters}")
    pairs = sade_feldman_pairs(table)
    if pairs["patient"].nunique() < 3:
        raise ValidationError(f"table: {pairs['patient'].nunique()} patients with Pre and Post "
                              "biopsies; expected at least 3")
    models = _models(model, extra_models)
    nodes = harmonize_labels(clusters, convention="sade_feldman_2018", strict=True)
    counts = table.set_index("sample")[clusters].astype(np.float64)
    pre_comp = immune_counts_to_composition(counts.loc[pairs["pre_sample"]].to_numpy(), nodes,
                                            reference)
    post_comp = immune_counts_to_composition(counts.loc[pairs["post_sample"]].to_numpy(),
                                             nodes, reference)
    sod = reference.median_sod_mm
    patient = pairs["patient"].to_numpy()
    names = sorted(set(patient), key=lambda p: (len(p), p))
    n_pairs = len(pairs)

    def shares(c: np.ndarray, groups: Mapping[str, Sequence[str]]) -> np.ndarray:
        return group_shares(c, groups)

    def per_patient(values: np.ndarray) -> np.ndarray:
        return np.array([values[patient == p].mean() for p in names])

    paths = {}
    for name, m in models.items():
        if callable(m) and not hasattr(m, "rollout"):
            paths[name] = np.concatenate([
                rollout_compositions(m(p), pre_comp[[i]], [SADE_FELDMAN_REGIMEN], sod)
                for i, p in enumerate(patient)])
        else:
            paths[name] = rollout_compositions(m, pre_comp, [SADE_FELDMAN_REGIMEN] * n_pairs,
                                               sod)
    estimate = day0_estimate(models["world_model"], pre_comp, sod)
    result: dict[str, Any] = {}
    for label, groups in (("main", SADE_FELDMAN_GROUPS), ("strict", SADE_FELDMAN_STRICT_GROUPS)):
        pre = shares(pre_comp, groups)
        observed = shares(post_comp, groups) - pre
        predicted = {name: shares(path[:, n_cycles - 1], groups) - pre
                     for name, path in paths.items()}
        predicted[ESTIMATE_METHOD] = (shares(paths["world_model"][:, n_cycles - 1], groups)
                                      - shares(estimate, groups))
        # LOPO: the other patients' mean change (each patient's pairs averaged first).
        by_patient = {p: observed[patient == p].mean(0) for p in names}
        mean_change = np.array([np.mean([by_patient[q] for q in names if q != p], axis=0)
                                for p in patient])
        changes = {"observed": observed, **predicted, "persistence": np.zeros_like(observed),
                   "mean_change": mean_change}
        pair_errors = {k: 0.5 * np.abs(v - observed).sum(1)
                       for k, v in changes.items() if k != "observed"}
        errors = {k: per_patient(v) for k, v in pair_errors.items()}
        horizon = np.array([per_patient(0.5 * np.abs(
            shares(paths["world_model"][:, h], groups) - pre - observed).sum(1))
            for h in range(HORIZON_CYCLES)])
        block = {**compare_methods(errors, seed=seed, n_bootstrap=n_bootstrap),
                 "errors": errors, "horizon": _horizon(horizon)}
        if label == "main":
            result.update(block)
            result["changes"] = changes
            result["spearman"] = change_correlation(changes)
            result["groups"] = {k: list(v) for k, v in groups.items()}
        else:
            result["diagnostics"] = {"strict": {
                "groups": {k: list(v) for k, v in groups.items()},
                "mean_error": block["mean_error"], "deltas": block["deltas"],
                "beats_baselines": block["beats_baselines"]}}
    result.update({
        "patients": names,
        "pairs": [f"{a}->{b}" for a, b in zip(pairs["pre_sample"], pairs["post_sample"],
                                              strict=True)],
        "pair_patients": patient.tolist(),
        "regimen_assumed": SADE_FELDMAN_REGIMEN,
        "cluster_nodes": dict(zip(clusters, nodes, strict=True)),
        "n_cycles": n_cycles,
        "n": len(names),
        "n_pairs": int(n_pairs),
    })
    return result


# --------------------------------------------------------------------------- entry points
def neobcc_section() -> dict[str, str]:
    """NeoBCC is recorded, not scored: ``{"skipped": reason}``."""
    return {"skipped": NEOBCC_SKIP_REASON}


def evaluate_all(model, reference: ReferenceBank, *,
                 extra_models: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0,
                 n_bootstrap: int = N_BOOTSTRAP, progress=None) -> dict[str, Any]:
    """Every dataset of the benchmark on one reference bank (``run`` without a context).

    ``extra_models`` maps a dataset (``"morrison1"``, ``"riaz2017"``, ``"sade_feldman"``) to
    its extra methods (see each ``evaluate_*`` function).
    """
    progress = progress or (lambda message: None)
    extra = dict(extra_models or {})
    unknown = sorted(set(extra) - {"morrison1", "riaz2017", "sade_feldman"})
    if unknown:
        raise ValidationError(f"extra_models: unknown dataset {unknown[0]!r}; expected "
                              "'morrison1', 'riaz2017' or 'sade_feldman'")
    out = {}
    out["morrison1"] = evaluate_morrison1_pairs(model, reference,
                                                extra_models=extra.get("morrison1"),
                                                seed=seed, n_bootstrap=n_bootstrap)
    progress("real trajectories: MORRISON-1 done")
    out["riaz2017"] = evaluate_riaz2017(model, reference, extra_models=extra.get("riaz2017"),
                                        seed=seed, n_bootstrap=n_bootstrap)
    progress("real trajectories: Riaz 2017 done")
    out["sade_feldman"] = evaluate_sade_feldman_pairs(model, reference,
                                                      extra_models=extra.get("sade_feldman"),
                                                      seed=seed, n_bootstrap=n_bootstrap)
    progress("real trajectories: Sade-Feldman done")
    out["neobcc"] = neobcc_section()
    return out


def finetuned_models(model, reference: ReferenceBank, *, seed: int = 0
                     ) -> dict[str, dict[str, Any]]:
    """``world_model_finetuned`` for each dataset, never trained on the patients it predicts.

    * MORRISON-1: per held-out cohort, the model fine-tuned on the other cohorts' pairs
      (:func:`~.real_finetune.fine_tune_without`);
    * Riaz 2017: the model fine-tuned without cohort 038 (CheckMate 038 *is* Riaz 2017: 31
      of its 34 TCR patients are MORRISON-1 038 subjects);
    * Sade-Feldman: the model fine-tuned on every MORRISON-1 pair
      (:func:`~.real_finetune.fine_tune_all`).

    Models are built lazily and cached, so the 038 fold is fine-tuned once for both uses.
    """
    from immunegym.benchmarks.real_finetune import fine_tune_all, fine_tune_without

    cache: dict[str, Any] = {}

    def without(cohort: str):
        if cohort not in cache:
            cache[cohort] = fine_tune_without(model, reference, cohort, seed=seed)[0]
        return cache[cohort]

    def everything(_patient: str):
        if "*" not in cache:
            cache["*"] = fine_tune_all(model, reference, seed=seed)
        return cache["*"]

    return {"morrison1": {FINETUNED_METHOD: without},
            "riaz2017": {FINETUNED_METHOD: lambda _patient: without("038")},
            "sade_feldman": {FINETUNED_METHOD: everything}}


def run(ctx) -> dict[str, Any]:
    """The benchmark's JSON section.

    Parameters
    ----------
    ctx
        A :class:`~immunegym.benchmarks.common.BenchContext` (uses ``model``, ``quick``,
        ``seed``, ``progress``).
    """
    start = time.perf_counter()
    n_ref = REFERENCE_PATIENTS[bool(ctx.quick)]
    reference = ReferenceBank.from_sim(n_ref, seed=REFERENCE_SEED)
    ctx.progress(f"real trajectories: reference bank of {n_ref} ImmuneSim melanoma patients")
    out = evaluate_all(ctx.model, reference, seed=ctx.seed, progress=ctx.progress,
                       extra_models=finetuned_models(ctx.model, reference, seed=ctx.seed))
    out["config"] = {
        "reference_patients": n_ref, "reference_seed": REFERENCE_SEED,
        "reference_cancer_type": CANCER_TYPE, "baseline_sod_mm": reference.median_sod_mm,
        "on_treatment_cycles": dict(ON_TREATMENT_CYCLES), "cycle_days": 21,
        "horizon_cycles": HORIZON_CYCLES, "n_bootstrap": N_BOOTSTRAP, "seed": ctx.seed,
        "morrison1_regimens": dict(MORRISON1_REGIMENS), "riaz2017_regimen": RIAZ_REGIMEN,
        "sade_feldman_regimen": SADE_FELDMAN_REGIMEN,
        "sade_feldman_groups": {k: list(v) for k, v in SADE_FELDMAN_GROUPS.items()},
    }
    out["seconds"] = time.perf_counter() - start
    return out


# --------------------------------------------------------------------------- report
def _methods(block: dict[str, Any]) -> list[str]:
    keys = [k for k in block["mean_error"] if k not in ("ci95", "n")]
    order = ["world_model", *[k for k in keys if k.startswith("world_model_")
                              and k != ESTIMATE_METHOD], ESTIMATE_METHOD, *BASELINES]
    return [k for k in order if k in keys] + [k for k in keys if k not in order]


def plot_dataset(block: dict[str, Any], path: str | Path, *, title: str = "",
                 unit: str = "change") -> Path:
    """Predicted vs observed change: the world model and the mean-change baseline, with the
    identity line (points on it = perfect; persistence is the horizontal line y = 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from immunegym._atomic import atomic_path

    changes = block["changes"]
    observed = np.asarray(changes["observed"], dtype=float).ravel()
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    shown = [k for k in ("world_model", "world_model_finetuned", "mean_change") if k in changes]
    colors = {"world_model": "tab:blue", "world_model_finetuned": "tab:green",
              "mean_change": "tab:orange"}
    for key in shown:
        pred = np.asarray(changes[key], dtype=float).ravel()
        err = block["mean_error"].get(key)
        ax.scatter(observed, pred, s=12, alpha=0.6, color=colors[key],
                   label=f"{METHOD_LABELS.get(key, key)} (mean error "
                         f"{format_ci(err)})")
    values = np.concatenate([observed, *[np.asarray(changes[k], float).ravel() for k in shown]])
    values = values[np.isfinite(values)]
    lim = float(np.max(np.abs(values))) * 1.05 if len(values) else 1.0
    ax.plot([-lim, lim], [-lim, lim], color="grey", ls="--", lw=1)
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel(f"observed {unit}")
    ax.set_ylabel(f"predicted {unit}")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def report(section: dict[str, Any], out: Path) -> str:
    """Markdown for the section; writes one scatter PNG per scored dataset into ``out``.

    Parameters
    ----------
    section
        What :func:`run` returned (after :func:`~immunegym.benchmarks.common.jsonable`).
    out
        The report directory.
    """
    scored = [k for k in DATASET_TITLES if k in section and "mean_error" in section[k]]
    if not scored:
        raise ValidationError(f"section: no scored dataset among {list(DATASET_TITLES)}; "
                              "expected the output of run()")
    out = Path(out)
    methods = list(dict.fromkeys(m for k in scored for m in _methods(section[k])))
    head = "| dataset | n | " + " | ".join(METHOD_LABELS.get(m, m) for m in methods) + " |"
    lines = [
        "## Real on-treatment trajectories",
        "",
        "Each real patient's pre-treatment sample is mapped onto the world model's state, "
        "rolled forward under the recorded regimen, and the predicted change is compared "
        "with the patient's own on-treatment (MORRISON-1, Riaz 2017) or post-treatment "
        "(Sade-Feldman) sample. Maps are fitted without the scored cohort (MORRISON-1) or "
        "patient (others). Mean error per patient (lower is better) with 95% bootstrap "
        "intervals over patients; units: MORRISON-1 mean absolute error of node composite "
        "z-scores, Riaz 2017 absolute error of the T-cell fraction change, Sade-Feldman "
        "total variation of CD45+ shares.",
        "",
        head,
        "|---" * (len(methods) + 2) + "|",
    ]
    for key in scored:
        block = section[key]["mean_error"]
        cells = [format_ci(block.get(m), block.get("ci95", {}).get(m)) for m in methods]
        lines.append(f"| {DATASET_TITLES[key]} | {section[key]['n']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "World model minus baseline (mean per patient, paired bootstrap 95% CI; "
              "negative = the world model is better):", "",
              "| dataset | method | - persistence | - mean change | beats both |",
              "|---|---|---|---|---|"]
    for key in scored:
        block = section[key]
        for method, delta in block["deltas"].items():
            beats = ("yes" if block["beats_baselines"] else "no") \
                if method == "world_model" else ""
            lines.append(
                f"| {DATASET_TITLES[key]} | {METHOD_LABELS.get(method, method)} | "
                + " | ".join(format_ci(delta[b]["value"], delta[b]["ci95"])
                             for b in BASELINES) + f" | {beats} |")
    lines.append("")
    for key in scored:
        block = section[key]
        horizon = block.get("horizon") or {}
        if horizon:
            text = ", ".join(f"{h}: {v:.3f}" for h, v in horizon.items())
            lines.append(f"- {DATASET_TITLES[key]}: world-model mean error had the sample "
                         f"been taken after 1..{len(horizon)} cycles ({block['n_cycles']} "
                         f"assumed): {text}.")
    for key in scored:
        rho = section[key].get("spearman") or {}
        shown = [k for k in rho if k not in BASELINES and rho[k] is not None]
        if shown:
            lines.append(f"- {DATASET_TITLES[key]}: Spearman correlation of predicted with "
                         "observed change (pooled over patients and components): "
                         + ", ".join(
                             f"{METHOD_LABELS.get(k, k)} {rho[k]:.3f}" for k in shown) + ".")
    morrison = section.get("morrison1")
    if morrison and "mean_change_source" in morrison:
        src = morrison["mean_change_source"]
        lines.append(f"- MORRISON-1 mean-change baseline: {src.get('regimen', 0)} patients "
                     f"from other cohorts' pairs under the same regimen, "
                     f"{src.get('pooled', 0)} from all regimens pooled (no other cohort "
                     "has their regimen).")
    sade = section.get("sade_feldman", {})
    strict = sade.get("diagnostics", {}).get("strict")
    if strict:
        m = strict["mean_error"]
        lines.append("- Sade-Feldman over lymphoid vs myeloid only (no prior split): "
                     + ", ".join(f"{METHOD_LABELS.get(k, k)} {format_ci(m[k], m['ci95'][k])}"
                                 for k in ("world_model", *BASELINES)) + ".")
    skipped = section.get("neobcc", {}).get("skipped")
    if skipped:
        lines.append(f"- NeoBCC (Ressler 2024) is not scored: {skipped}.")
    cfg = section.get("config", {})
    if cfg:
        cycles = cfg.get("on_treatment_cycles", ON_TREATMENT_CYCLES)
        lines.append("- Assumed cycles (21 days) to the second sample: "
                     + ", ".join(f"{k} {v}" for k, v in cycles.items())
                     + f"; Riaz 2017 and Sade-Feldman under `{cfg.get('riaz2017_regimen')}`"
                     f" (Sade-Feldman's regimen per sample is not published); reference bank "
                     f"of {cfg.get('reference_patients')} ImmuneSim melanoma patients.")
    lines.append("")
    for key in scored:
        figure = plot_dataset(section[key], out / f"real_trajectories_{key}.png",
                              title=DATASET_TITLES[key], unit=DATASET_UNITS[key])
        lines += [f"![{DATASET_TITLES[key]}]({figure.name})", ""]
    return "\n".join(lines)


__all__ = [
    "BASELINES",
    "ON_TREATMENT_CYCLES",
    "SADE_FELDMAN_GROUPS",
    "SADE_FELDMAN_STRICT_GROUPS",
    "change_correlation",
    "compare_methods",
    "day0_estimate",
    "ecdf_inverse",
    "ecdf_quantile",
    "evaluate_all",
    "finetuned_models",
    "evaluate_morrison1_pairs",
    "evaluate_riaz2017",
    "evaluate_sade_feldman_pairs",
    "group_shares",
    "inverse_node_scores",
    "neobcc_section",
    "node_composites",
    "plot_dataset",
    "reference_quantile",
    "regimen_mean_change",
    "report",
    "rollout_compositions",
    "run",
    "sade_feldman_pairs",
    "tcell_fraction_composition",
    "tcell_fraction_of",
]
