"""Response prediction on real patients: MORRISON-1 (bulk RNA) and Sade-Feldman 2018 (scRNA).

The real-data half of ``immunegym bench response`` (merged under ``section["real"]``). The
world model never saw a real patient; here it is asked, for real pre-treatment tumors, to
roll each one forward under the regimen that patient actually got and the predicted tumor
shrinkage is scored against the recorded RECIST response. The published predictors are
computed on exactly the same samples in the same run.

Data
----
* **MORRISON-1** (Campbell et al., *Cancer Cell* 2023; cohorts 038 = Riaz 2017, gide = Gide
  2019, 064, 067 = CheckMate 064/067, liu = Liu 2019, va = Van Allen 2015): every
  *pre-treatment* bulk RNA-seq sample whose patient has a RECIST response, labeled 1 for
  CR/PR (``CRPR``) and 0 for SD/PD: 357 samples over 6 cohorts (one sample per subject). The
  5 samples without a response assessment are the only pre-treatment samples left out.
* **Sade-Feldman** (Sade-Feldman et al., *Cell* 2018, GSE120575): the 19 pre-treatment
  biopsies with their per-lesion response (R = 1, NR = 0), as published per-sample counts
  over the 11 CD45+ clusters G1..G11.

Observation model (:class:`SignatureObservationModel`)
------------------------------------------------------
Bulk signature scores are not cell fractions, and the world model's state is a composition
over the 20 ontology leaves (:data:`~immunegym.ontology.FINE_TYPES`) plus a sum of target
lesion diameters (SOD). The map is a *quantile match* against a reference bank of ImmuneSim
melanoma day-0 states (:class:`ReferenceBank`: ``PatientBank.from_sim({"melanoma": 1.0})``,
seeded, the simulator the world model's training data came from; ImmuneSim's biopsies are
an unbiased Dirichlet-multinomial draw around this hidden composition, so it is the
noise-free centre of what the model was trained on):

1. each mapped ontology node (:data:`NODE_SIGNATURES`) gets a composite score, the mean of
   its signatures standardized with the *training* mean and SD;
2. the composite is turned into a quantile by the empirical CDF (mid-ranks) of the training
   samples, and the node's abundance is the reference bank's abundance of that node
   (the sum of its leaves) at the same quantile. Within a node, leaves split by the
   reference bank's mean shares;
3. CD8 T cells are split by one more score: the residual of cytotoxic activity
   (``cytotoxic-activity-khan2018``, GZMA/PRF1) regressed on the CD8 composite (least squares
   on the training samples) is quantile-matched to the reference bank's effector share of
   CD8 cells (``cd8_effector / cd8_t``); the other CD8 mass splits over memory, Tpex and Tex
   by their reference mean shares;
4. leaves no signature measures (malignant, DC other, mast cells, fibroblasts, endothelial)
   take their reference mean fraction; rows are renormalized to the simplex, so a more
   infiltrated tumor has a lower malignant share;
5. the baseline SOD is the reference bank's median for every patient: bulk RNA has no
   imaging, so tumor size carries no information here by construction.

The published predictors (TIDE, IMPRES, tiara_pd1) and the non-cell-type signatures (STING,
TLS, Th2, Th17, OX40 neutrophil programs) never enter the composition. Each cohort's
compositions come from an observation model fitted on the other five cohorts only
(leave-one-cohort-out, :func:`fit_without`); only the reference bank (synthetic) is shared.

World-model score
-----------------
The mapped day-0 state (:func:`~immunegym.world_model.timelines.baseline_timelines`) is
rolled forward 6 cycles (21 days each) under the patient's actual regimen
(:data:`MORRISON1_REGIMENS`; Sade-Feldman: anti-PD-1 for all, see below) with the mean path
of the ensemble (:func:`~immunegym.benchmarks.common.mean_path_outcomes`); the score is
``-best_change`` (deepest predicted shrinkage = most likely responder). Extra scores:

* ``world_model_regimen_only``: the same rollout from the reference bank's *mean*
  composition, i.e. what the world model knows from the regimen alone; the gap to
  ``world_model`` is what the patient's own data add;
* ``world_model_calibrated`` (full runs only; it costs six more rollouts of every sample):
  a logistic regression on the world model's predicted features (best change, final log
  SOD, final immune share), fitted on the five training cohorts, whose compositions and
  rollouts also come from the observation model fitted without the test cohort (strict
  leave-one-cohort-out). The contract key ``world_model`` stays the uncalibrated
  ``-best_change``.

``diagnostics.pd1_sensitivity`` records how the world model's predicted best change under
anti-PD-1 moves when 2% of the reference mean tumor's mass is moved from malignant cells to
each other cell type: it shows which parts of the mapped state the score can use.

Logistic baseline
-----------------
``logistic_signatures``: the strong simple baseline. For each test cohort a scikit-learn
pipeline (``StandardScaler`` then ``LogisticRegression``, L2, fixed ``C = 1.0``:
:data:`LOGISTIC_C`, scikit-learn's default and the calibrated world model's, chosen before
any run and never tuned, so nothing is selected on an outcome) is fitted on the other five
cohorts' pre-treatment samples using *all* 28 signature columns of
:func:`~immunegym.data.real.morrison1_signature_columns`: the cell-type signatures, the
non-cell-type programs and the published predictors (TIDE, IMPRES, tiara_pd1) as well, so it
knows everything each published score knows. The regimen is not a feature. Its score is the
held-out log-odds (:func:`logistic_signature_scores`).

``logistic_signatures_regimen``: the same with the regimen as one-hot features too (the
world model knows each patient's regimen; does the baseline gain as much from it?). Across
cohorts the regimen is confounded with the cohort (ipilimumab alone is only in ``va``, the
CheckMate 064 sequences only in ``064``), so a held-out cohort's regimen may never have been
seen in training; that is the point of the comparison, not a flaw of it.

Published scores (higher = responder): ``TIDE`` negated (low TIDE = responder), ``IMPRES``,
``cd8_infiltration`` (the CD8 T-cell infiltration signature) and ``tiara_pd1``. The
MORRISON-1 README's reference values on these samples (TIDE 0.537, IMPRES 0.527, CD8 0.610,
tiara_pd1 0.628, pooled) are a consistency check of the sample selection, never an input.

Sade-Feldman protocol
---------------------
The cluster codes are harmonized onto the ontology (``sade_feldman_2018`` convention); mass
labeled at a coarse node (``G3`` myeloid, ``G5``/``G8`` lymphoid, ``G10`` T cell, ...) is split
over its leaves by the reference bank's mean leaf fractions. Those are CD45+ cells only, so
the non-immune share (malignant, fibroblasts, endothelial) is the reference bank's mean
non-immune share, split by its mean leaf shares (:func:`immune_counts_to_composition`).
The study treated patients with anti-PD-1, anti-CTLA-4 or both, mostly anti-PD-1; the
bundled tables carry no per-sample therapy, so every sample is rolled forward under
``anti_pd1`` (an assumption). Baseline SOD: the reference median, as for MORRISON-1. Scores:
``world_model``, ``cd8_fraction`` (the CD8 share of CD45+ cells after harmonization) and
``memory_vs_exhausted``, a proxy of the paper's own finding (memory/TCF7+-like over
exhausted CD8 states predicts response) on the 11 published clusters, computed on the same
samples: ``log((G10 + 0.5) / (G6 + G9 + 0.5))``, higher = responder.

Metrics
-------
AUROC (scikit-learn) pooled and per cohort, each with a 95% bootstrap interval resampling
patients (1000 draws); the mean of the per-cohort AUROCs with a bootstrap interval over
cohorts; ``delta_vs_best_published``: the pooled AUROC of the world model minus that of the
best published score, with a paired bootstrap interval over patients. ``beats_all_published``
says whether the world model's pooled AUROC is above every published score's.
``delta_vs_logistic`` / ``beats_logistic``: the same against ``logistic_signatures``;
``deltas[wm][other]``: every paired difference of ``world_model`` (and
``world_model_calibrated`` when present) to each published score and the logistic baseline.
``aim``: ``{"pooled_auroc_min": 0.65, "met": ...}``, met when the world model's pooled AUROC
is at least 0.65 *and* above every published score *and* above the logistic baseline.

Survival concordance (``concordance``, :func:`survival_concordance`): Harrell's C of every
score (higher = longer survival) against MORRISON-1's published PFS and OS. The units differ
between cohorts (months in some, days in others), so only pairs of patients in the same cohort
are compared; the per-cohort C (:func:`harrell_c`, ``(D + 1) / 2`` with ``D`` the Somers' D of
the score given the time, from :func:`scipy.stats.kendalltau`) and the pooled within-cohort C
(concordant / comparable pairs summed over cohorts, i.e. the pair-weighted mean) come with a
95% bootstrap interval resampling patients within cohorts (seeded, 1000 draws). **No
event/censoring flag is published**: every time is treated as an event, so a patient censored
early counts as an early progression/death; C is biased where censoring is heavy (in a
direction that depends on who was censored), and the figures are descriptive. PFS is not
published for cohort 064.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from immunegym.benchmarks.common import (
    N_BOOTSTRAP,
    auroc_block,
    format_ci,
    mean_block,
    mean_path_outcomes,
    paired_auroc_delta,
    plan_doses,
)
from immunegym.ontology import FINE_TYPES, default_ontology
from immunegym.validation import ValidationError

N_CYCLES = 6
"""Cycles (21 days each) every real patient is rolled forward."""

REFERENCE_PATIENTS = {True: 300, False: 1000}
"""Reference-bank size: ``--quick`` and full runs."""

REFERENCE_SEED = 2023
"""Seed of the ImmuneSim reference bank."""

CANCER_TYPE = "melanoma"

NODE_SIGNATURES: dict[str, tuple[str, ...]] = {
    "cd8_t": ("CD8+ Tcell infiltration",),
    "cd4_helper": ("Th1", "imsig_T cells"),
    "treg": ("TReg",),
    "nk": ("imsig_NK cells",),
    "b_cell": ("BCell", "imsig_B cells"),
    "plasma_cell": ("imsig_Plasma cells",),
    "cdc1": ("cDC1",),
    "monocyte": ("imsig_Monocytes",),
    "macrophage": ("imsig_Macrophages", "myeloid-macrophage-mahler"),
    "mdsc": ("mdsc-mahler",),
    "neutrophil": ("imsig_Neutrophils", "neutrophil-BindeaImmunity2013"),
}
"""Ontology node -> the MORRISON-1 signature columns whose mean measures its abundance."""

EFFECTOR_SIGNATURE = "cytotoxic-activity-khan2018"
"""Signature whose residual on the CD8 composite sets the effector share of CD8 cells."""

PUBLISHED_SCORES: dict[str, tuple[str, float]] = {
    "TIDE": ("TIDE", -1.0),
    "IMPRES": ("IMPRES", 1.0),
    "cd8_infiltration": ("CD8+ Tcell infiltration", 1.0),
    "tiara_pd1": ("tiara_pd1", 1.0),
}
"""Report key -> (MORRISON-1 column, sign making higher = responder)."""

MORRISON1_REGIMENS: dict[str, str] = {
    "PD1": "anti_pd1",
    "CTLA4": "anti_ctla4 x4",
    "Combo": "anti_pd1+anti_ctla4 x4 -> anti_pd1",
    "CTLA4-to-PD1": "anti_ctla4 x4 -> anti_pd1",
    "PD1-to-CTLA4": "anti_pd1 x4 -> anti_ctla4 x4",
}
"""MORRISON-1 regimen -> plan text (:func:`~immunegym.planning.regimen.parse_plan`):
ipilimumab is 4 doses q3w (CheckMate 067); the CheckMate 064 sequences give 12 weeks of the
first drug (4 cycles) then the second."""

LOGISTIC_C = 1.0
"""Inverse L2 strength of the ``logistic_signatures`` baseline: fixed (scikit-learn's default),
never tuned, so no choice looks at any outcome, let alone the test cohort's."""

AIM_POOLED_AUROC = 0.65
"""The issue's aim on MORRISON-1: the world model's pooled AUROC at least this, above every
published score and above the logistic baseline."""

SURVIVAL_ENDPOINTS = ("pfs", "os")
"""MORRISON-1 survival columns scored by concordance (as published; units vary by cohort)."""

LOGISTIC_BASELINES = ("logistic_signatures", "logistic_signatures_regimen")
"""The leave-one-cohort-out logistic baselines (without and with the regimen)."""

WORLD_MODEL_SCORES = ("world_model", "world_model_calibrated", "world_model_finetuned")
"""Scores that come from the world model (compared with every baseline in ``deltas``)."""

SIM_DIAGNOSTIC_PATIENTS = 300
"""ImmuneSim patients of the CD8-state diagnostic (full runs only)."""

SADE_FELDMAN_REGIMEN = "anti_pd1"
"""Assumed for every Sade-Feldman sample (per-sample therapy is not published in the tables)."""

SCORE_LABELS = {
    "world_model": "world model (-best change)",
    "world_model_calibrated": "world model, calibrated (LOCO)",
    "world_model_regimen_only": "world model, regimen only",
    "world_model_finetuned": "world model, fine-tuned on real pairs (LOCO)",
    "TIDE": "TIDE (negated)",
    "IMPRES": "IMPRES",
    "cd8_infiltration": "CD8 infiltration",
    "tiara_pd1": "tiara_pd1",
    "logistic_signatures": "logistic, all signatures (LOCO)",
    "logistic_signatures_regimen": "logistic, all signatures + regimen (LOCO)",
    "cd8_fraction": "CD8 share of CD45+",
    "memory_vs_exhausted": "G10 memory / (G6+G9) exhausted",
}


# --------------------------------------------------------------------------- reference bank
@dataclass(frozen=True)
class ReferenceBank:
    """Day-0 states of simulated patients: the distribution real data are matched onto.

    Attributes
    ----------
    composition
        ``(N, K)`` fractions over :data:`~immunegym.ontology.FINE_TYPES`.
    sod_mm
        ``(N,)`` sum of target-lesion diameters (mm).
    """

    composition: np.ndarray
    sod_mm: np.ndarray

    def __post_init__(self) -> None:
        comp = np.asarray(self.composition, dtype=np.float64)
        if comp.ndim != 2 or comp.shape[1] != len(FINE_TYPES) or len(comp) < 2:
            raise ValidationError(f"composition: expected shape (N >= 2, {len(FINE_TYPES)}), got "
                             f"{comp.shape}")
        if not np.all(np.isfinite(comp)) or np.any(comp < 0):
            raise ValidationError("composition: expected finite, non-negative fractions")
        sod = np.asarray(self.sod_mm, dtype=np.float64)
        if sod.shape != (len(comp),) or not np.all(np.isfinite(sod)) or np.any(sod < 0):
            raise ValidationError(f"sod_mm: expected {len(comp)} finite values >= 0 (mm)")
        object.__setattr__(self, "composition", comp / comp.sum(1, keepdims=True))
        object.__setattr__(self, "sod_mm", sod)

    @classmethod
    def from_sim(cls, n: int, *, seed: int = REFERENCE_SEED,
                 cancer_type: str = CANCER_TYPE) -> ReferenceBank:
        """``n`` ImmuneSim patients of ``cancer_type`` relaxed to day 0 (seeded)."""
        from immunegym.env.patients import PatientBank

        bank = PatientBank.from_sim({cancer_type: 1.0}, int(n), seed=seed)
        return cls(bank.composition.cpu().numpy().astype(np.float64),
                   bank.sod_mm.cpu().numpy().astype(np.float64))

    def node_abundance(self, node: str) -> np.ndarray:
        """``(N,)`` summed fraction of the leaves under ``node``."""
        return self.composition[:, _leaf_columns(node)].sum(1)

    @property
    def mean(self) -> np.ndarray:
        """``(K,)`` mean composition."""
        return self.composition.mean(0)

    @property
    def median_sod_mm(self) -> float:
        """The median baseline SOD (mm)."""
        return float(np.median(self.sod_mm))


def _leaf_columns(node: str) -> list[int]:
    onto = default_ontology()
    if node not in onto:
        raise ValidationError(f"node: {node!r} is not an ontology node; expected one of "
                         f"{onto.ids[:6]}...")
    return [FINE_TYPES.index(leaf) for leaf in onto.leaves_under(node)]


# --------------------------------------------------------------------------- observation model
def _ecdf(sorted_train: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mid-rank empirical CDF of ``values`` against sorted training values, in (0, 1)."""
    n = len(sorted_train)
    lo = np.searchsorted(sorted_train, values, side="left")
    hi = np.searchsorted(sorted_train, values, side="right")
    return np.clip((lo + hi) / (2.0 * n), 0.5 / n, 1.0 - 0.5 / n)


class SignatureObservationModel:
    """Bulk signature scores -> compositions over the 20 fine types (quantile matching).

    See the module docstring for the protocol. Fit on the training cohorts' samples only;
    :meth:`transform` then maps any sample onto the simplex.

    Parameters
    ----------
    reference
        The simulated day-0 distribution matched onto.
    node_signatures
        Ontology node -> signature columns measuring its abundance; nodes must not overlap.
    effector_signature
        Column whose residual on the CD8 composite sets the effector share within CD8 T
        cells (needs ``"cd8_t"`` in ``node_signatures``); ``None`` splits CD8 cells by the
        reference mean shares.
    """

    def __init__(self, reference: ReferenceBank,
                 node_signatures: Mapping[str, Sequence[str]] | None = None,
                 effector_signature: str | None = EFFECTOR_SIGNATURE) -> None:
        self.reference = reference
        self.node_signatures = {k: tuple(v) for k, v in
                                (node_signatures or NODE_SIGNATURES).items()}
        onto = default_ontology()
        nodes = list(self.node_signatures)
        for node, columns in self.node_signatures.items():
            _leaf_columns(node)
            if not columns:
                raise ValidationError(f"node_signatures[{node!r}]: expected at least one column")
            others = [o for o in nodes if o != node and (onto.is_ancestor(o, node) or o == node)]
            if others:
                raise ValidationError(f"node_signatures: {node!r} lies under {others[0]!r}; "
                                 "expected non-overlapping nodes")
        if effector_signature is not None and "cd8_t" not in self.node_signatures:
            raise ValidationError("effector_signature: needs 'cd8_t' in node_signatures")
        self.effector_signature = effector_signature
        self._fitted = False

    @property
    def columns(self) -> list[str]:
        """Every signature column the model reads."""
        cols = [c for cs in self.node_signatures.values() for c in cs]
        if self.effector_signature is not None:
            cols.append(self.effector_signature)
        return list(dict.fromkeys(cols))

    def _scores(self, samples: pd.DataFrame) -> np.ndarray:
        if not isinstance(samples, pd.DataFrame):
            raise ValidationError(
                f"samples: expected a pandas DataFrame, got {type(samples).__name__}")
        missing = [c for c in self.columns if c not in samples.columns]
        if missing:
            raise ValidationError(f"samples: signature column {missing[0]!r} not found; expected "
                             f"columns {self.columns}")
        values = samples[self.columns].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValidationError(f"samples[{self.columns[col]!r}]: row {samples.index[row]!r} is "
                             f"{values[row, col]}; expected finite scores")
        return values

    def _composites(self, values: np.ndarray) -> dict[str, np.ndarray]:
        z = (values - self.mean_) / self.sd_
        index = {c: i for i, c in enumerate(self.columns)}
        return {node: z[:, [index[c] for c in cols]].mean(1)
                for node, cols in self.node_signatures.items()}

    def _residual(self, values: np.ndarray, composites: dict[str, np.ndarray]) -> np.ndarray:
        z = (values - self.mean_) / self.sd_
        cyto = z[:, self.columns.index(self.effector_signature)]
        return cyto - self.beta_ * composites["cd8_t"]

    def fit(self, samples: pd.DataFrame) -> SignatureObservationModel:
        """Learn standardization, empirical CDFs and the effector regression from ``samples``.

        Raises
        ------
        ValueError
            If a signature column is missing or not finite, or fewer than 5 samples.
        """
        values = self._scores(samples)
        if len(values) < 5:
            raise ValidationError(f"samples: {len(values)} rows; expected at least 5 to fit")
        self.mean_ = values.mean(0)
        self.sd_ = np.where(values.std(0) > 0, values.std(0), 1.0)
        composites = self._composites(values)
        self.ecdf_ = {node: np.sort(v) for node, v in composites.items()}
        if self.effector_signature is not None:
            z = (values - self.mean_) / self.sd_
            cd8 = composites["cd8_t"]
            cyto = z[:, self.columns.index(self.effector_signature)]
            self.beta_ = float(np.dot(cd8, cyto) / max(np.dot(cd8, cd8), 1e-12))
            self.residual_ecdf_ = np.sort(self._residual(values, composites))
        self._fitted = True
        return self

    def transform(self, samples: pd.DataFrame) -> np.ndarray:
        """``(N, 20)`` compositions (rows on the simplex) of ``samples``."""
        if not self._fitted:
            raise ValidationError("SignatureObservationModel: call fit() before transform()")
        values = self._scores(samples)
        ref = self.reference
        mean = ref.mean
        out = np.tile(mean, (len(values), 1))
        composites = self._composites(values)
        for node, score in composites.items():
            cols = _leaf_columns(node)
            q = _ecdf(self.ecdf_[node], score)
            total = np.quantile(ref.node_abundance(node), q)
            if node == "cd8_t" and self.effector_signature is not None:
                out[:, cols] = total[:, None] * self._cd8_split(values, composites)
            else:
                share = mean[cols] / max(mean[cols].sum(), 1e-12)
                out[:, cols] = total[:, None] * share[None]
        return out / out.sum(1, keepdims=True)

    def _cd8_split(self, values: np.ndarray, composites: dict[str, np.ndarray]) -> np.ndarray:
        """``(N, 4)`` shares of the CD8 leaves: effector by quantile, the rest by mean."""
        ref = self.reference
        cols = _leaf_columns("cd8_t")
        eff = cols.index(FINE_TYPES.index("cd8_effector"))
        cd8 = ref.composition[:, cols]
        ref_share = cd8[:, eff] / np.maximum(cd8.sum(1), 1e-12)
        q = _ecdf(self.residual_ecdf_, self._residual(values, composites))
        share = np.quantile(ref_share, q)
        rest = np.delete(cd8.mean(0), eff)
        rest = rest / max(rest.sum(), 1e-12)
        out = np.empty((len(values), len(cols)))
        out[:, eff] = share
        out[:, [i for i in range(len(cols)) if i != eff]] = (1 - share)[:, None] * rest[None]
        return out


def fit_without(samples: pd.DataFrame, cohort: str, reference: ReferenceBank,
                **kwargs: Any) -> SignatureObservationModel:
    """An observation model fitted on every sample whose ``cohort`` is not ``cohort``.

    Raises
    ------
    ValueError
        If ``samples`` has no ``cohort`` column or ``cohort`` is not one of its values.
    """
    if "cohort" not in samples.columns:
        raise ValidationError("samples: no 'cohort' column; expected one cohort id per sample")
    known = sorted(samples["cohort"].astype(str).unique())
    if str(cohort) not in known:
        raise ValidationError(f"cohort: {cohort!r} is not in samples; expected one of {known}")
    train = samples[samples["cohort"].astype(str) != str(cohort)]
    return SignatureObservationModel(reference, **kwargs).fit(train)


# --------------------------------------------------------------------------- data selection
def morrison1_pretreatment(samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """MORRISON-1 pre-treatment samples with a CR/PR vs SD/PD label (357 over 6 cohorts).

    ``samples`` defaults to :func:`~immunegym.data.real.morrison1_samples`; rows keep their
    order, the index is reset.
    """
    if samples is None:
        from immunegym.data.real import morrison1_samples

        samples = morrison1_samples()
    for column in ("timepoint", "responder", "cohort", "regimen"):
        if column not in samples.columns:
            raise ValidationError(f"samples: no {column!r} column; expected morrison1_samples()")
    keep = (samples["timepoint"] == "pre") & samples["responder"].notna()
    out = samples[keep].reset_index(drop=True)
    unknown = sorted(set(out["regimen"]) - set(MORRISON1_REGIMENS))
    if unknown:
        raise ValidationError(f"regimen: {unknown[0]!r} has no plan; expected one of "
                         f"{sorted(MORRISON1_REGIMENS)}")
    return out


def published_scores(samples: pd.DataFrame) -> dict[str, np.ndarray]:
    """The published predictors on ``samples``, signed so that higher = responder."""
    return {key: sign * samples[column].to_numpy(dtype=np.float64)
            for key, (column, sign) in PUBLISHED_SCORES.items()}


# --------------------------------------------------------------------------- world model
def world_model_outcomes(model, composition: np.ndarray, sod_mm: float,
                         regimens: Sequence[str], *, n_cycles: int = N_CYCLES,
                         ids: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Roll mapped day-0 states forward under per-patient plans (mean path).

    Parameters
    ----------
    model
        The world model.
    composition
        ``(P, K)`` day-0 fractions.
    sod_mm
        Baseline SOD (mm) for everyone.
    regimens
        ``P`` plan texts (:func:`~immunegym.planning.regimen.parse_plan`).

    Returns
    -------
    dict
        :func:`~immunegym.benchmarks.common.mean_path_outcomes` plus ``immune_share``
        ``(P,)``: the predicted immune fraction after ``n_cycles``.
    """
    tl, doses = rollout_inputs(model, composition, sod_mm, regimens, n_cycles=n_cycles,
                               ids=ids)
    out = mean_path_outcomes(model, tl, doses)
    immune = _leaf_columns("immune")
    out["immune_share"] = out["composition"][:, -1, immune].sum(-1)
    return out


def rollout_inputs(model, composition: np.ndarray, sod_mm: float, regimens: Sequence[str], *,
                   n_cycles: int = N_CYCLES, ids: Sequence[str] | None = None):
    """Day-0 timelines and ``(P, n_cycles, R)`` plan doses of mapped real patients.

    Parameters are those of :func:`world_model_outcomes`.

    Returns
    -------
    (Timelines, numpy.ndarray)
        One melanoma day-0 observation per patient at ``sod_mm`` and each patient's plan
        laid out per cycle (:func:`~immunegym.benchmarks.common.plan_doses`).
    """
    from immunegym.world_model.timelines import baseline_timelines

    comp = np.asarray(composition, dtype=np.float64)
    if len(regimens) != len(comp):
        raise ValidationError(f"regimens: {len(regimens)} values for {len(comp)} patients")
    ids = [f"p{i}" for i in range(len(comp))] if ids is None else list(ids)
    tl = baseline_timelines(comp, np.full(len(comp), float(sod_mm)), ids,
                            cancer_type=CANCER_TYPE, programs=(),
                            regimen=list(regimens))
    doses = np.zeros((len(comp), n_cycles, len(model.config.therapies)), np.float32)
    plans = np.asarray(regimens, dtype=object)
    for plan in dict.fromkeys(regimens):
        rows = np.flatnonzero(plans == plan)
        doses[rows] = plan_doses(plan, len(rows), n_cycles)
    return tl, doses


def _features(outcomes: dict[str, np.ndarray]) -> np.ndarray:
    return np.column_stack([outcomes["best_change"], outcomes["final_log_sod"],
                            outcomes["immune_share"]])


# --------------------------------------------------------------------------- baselines
def logistic_with_regimen(data: pd.DataFrame, labels: np.ndarray, cohorts: np.ndarray, *,
                          c: float = LOGISTIC_C) -> np.ndarray:
    """:func:`logistic_signature_scores` on every signature score plus the regimen (one-hot)."""
    from immunegym.data.real import morrison1_signature_columns

    if "regimen" not in data.columns:
        raise ValidationError("data: no 'regimen' column; expected one regimen per sample")
    onehot = pd.get_dummies(data["regimen"].astype(str), prefix="regimen").astype(float)
    columns = [*morrison1_signature_columns(), *onehot.columns]
    frame = pd.concat([data.reset_index(drop=True), onehot.reset_index(drop=True)], axis=1)
    return logistic_signature_scores(frame, labels, cohorts, columns, c=c)


def logistic_signature_scores(data: pd.DataFrame, labels: np.ndarray, cohorts: np.ndarray,
                              columns: Sequence[str] | None = None, *,
                              c: float = LOGISTIC_C) -> np.ndarray:
    """Leave-one-cohort-out logistic regression on every signature score (``(N,)`` logits).

    Each cohort is scored by a scikit-learn pipeline (``StandardScaler`` then L2
    ``LogisticRegression`` with a fixed ``C``, :data:`LOGISTIC_C`) fitted on the other
    cohorts' samples only. The features are all of ``columns`` (default
    :func:`~immunegym.data.real.morrison1_signature_columns`: the cell-type signatures, the
    non-cell-type programs and the published predictors TIDE, IMPRES and tiara_pd1 too), so
    the baseline can use anything the published scores know, and more.

    Parameters
    ----------
    data
        Samples with the signature columns.
    labels
        ``(N,)`` responder labels (0/1).
    cohorts
        ``(N,)`` cohort of each sample; the folds.
    columns
        Feature columns.
    c
        Inverse L2 strength (> 0).

    Returns
    -------
    numpy.ndarray
        The held-out decision function (log-odds) of every sample.

    Raises
    ------
    ValidationError
        A missing or non-finite feature column, labels or cohorts of the wrong length, fewer
        than two cohorts, or a training fold with a single class.
    """
    from sklearn.pipeline import make_pipeline

    from immunegym import validation as v

    if columns is None:
        from immunegym.data.real import morrison1_signature_columns

        columns = morrison1_signature_columns()
    columns = list(columns)
    missing = [col for col in columns if col not in data.columns]
    if missing:
        raise v.bad("columns", missing[0], f"signature columns of data (expected {columns})")
    x = data[columns].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(x)):
        row, col = np.argwhere(~np.isfinite(x))[0]
        raise v.bad(f"data[{columns[col]!r}]", x[row, col], f"finite scores (row {row})")
    labels = np.asarray(labels, dtype=np.float64)
    cohorts = np.asarray(cohorts).astype(str)
    if labels.shape != (len(x),) or cohorts.shape != (len(x),):
        raise v.bad("labels", labels.shape, f"labels and cohorts of length {len(x)}")
    c = v.number("c", c, low=0.0, low_open=True)
    names = sorted(set(cohorts))
    if len(names) < 2:
        raise v.bad("cohorts", names, "at least two cohorts (leave one cohort out)")
    out = np.full(len(x), np.nan)
    for cohort in names:
        test = cohorts == cohort
        train = labels[~test]
        if len(np.unique(train)) < 2:
            raise v.bad("labels", f"one class without cohort {cohort!r}",
                        "both responders and non-responders in every training fold")
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
        pipe.fit(x[~test], train.astype(int))
        out[test] = pipe.decision_function(x[test])
    return out


# --------------------------------------------------------------------------- concordance
def harrell_c(time: np.ndarray, score: np.ndarray) -> float:
    """Harrell's C of ``score`` for ``time`` with every time an event, from Kendall's tau.

    ``C = (D + 1) / 2`` with ``D`` the Somers' D of the score given the time: over the pairs
    with different times, (concordant - discordant) / pairs, so a score tie counts one half
    and pairs tied in time are not comparable; higher score = longer time gives ``C > 0.5``.
    ``D`` comes from :func:`scipy.stats.kendalltau` (tau-b, O(n log n)) as
    ``tau_b * sqrt((n0 - n_score_ties) / (n0 - n_time_ties))``, which equals
    :func:`scipy.stats.somersd` of (time, score) (checked in the tests) at a fraction of its
    cost. NaN rows are dropped; NaN when fewer than two distinct times are left.
    """
    from scipy.stats import kendalltau

    time = np.asarray(time, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    keep = np.isfinite(time) & np.isfinite(score)
    time, score = time[keep], score[keep]
    if len(np.unique(time)) < 2:
        return math.nan
    if len(np.unique(score)) < 2:
        return 0.5  # every comparable pair is a score tie
    untied_time = float(comparable_pairs(time))
    untied_score = float(comparable_pairs(score))
    tau = float(kendalltau(time, score, variant="b").statistic)
    return (tau * math.sqrt(untied_score / untied_time) + 1.0) / 2.0


def comparable_pairs(time: np.ndarray) -> int:
    """Pairs with different (finite) values: for times, the denominator of
    :func:`harrell_c`."""
    time = np.asarray(time, dtype=np.float64)
    time = time[np.isfinite(time)]
    _, counts = np.unique(time, return_counts=True)
    return int((len(time) ** 2 - (counts ** 2).sum()) // 2)


def _pair_matrices(time: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(concordance, comparable)`` over ordered pairs ``(i, j)`` with ``t_i < t_j``: 1 when
    ``s_i < s_j``, 1/2 on a score tie, 0 otherwise; rows with a NaN score compare nothing."""
    valid = np.isfinite(score)
    comparable = (time[:, None] < time[None, :]) & valid[:, None] & valid[None, :]
    with np.errstate(invalid="ignore"):
        agree = (score[:, None] < score[None, :]) + 0.5 * (score[:, None] == score[None, :])
    return comparable * agree, comparable.astype(np.float64)


def concordance_block(time: np.ndarray, scores: Mapping[str, np.ndarray],
                      cohorts: np.ndarray, *, seed: int = 0,
                      n_bootstrap: int = N_BOOTSTRAP) -> dict[str, Any]:
    """Within-cohort Harrell's C of several scores, per cohort and pooled, with 95% CIs.

    Parameters
    ----------
    time
        ``(N,)`` survival times (NaN where not published). Only pairs of the same cohort
        are compared (units may differ between cohorts) and, as no event flag is given,
        every time is treated as an event (censored times count as deaths: a limitation).
    scores
        Score name -> ``(N,)`` values, higher = expected longer survival.
    cohorts
        ``(N,)`` cohort of each row.
    seed, n_bootstrap
        The patient bootstrap: patients resampled with replacement within each cohort
        (``np.random.default_rng(seed)``), the same draws for every score.

    Returns
    -------
    dict
        ``pooled``: per score the pair-weighted C over cohorts (concordant / comparable
        pairs, all within cohorts), ``ci95``, ``n`` (patients with a time) and ``pairs``;
        ``per_cohort``: the same block per cohort (:func:`harrell_c`);
        ``cohorts_without_times``: cohorts left out (fewer than two distinct times).
    """
    from immunegym import validation as v

    time = np.asarray(time, dtype=np.float64)
    cohorts = np.asarray(cohorts).astype(str)
    if cohorts.shape != time.shape:
        raise v.bad("cohorts", cohorts.shape, f"one cohort per time {time.shape}")
    for name, s in scores.items():
        if np.shape(s) != time.shape:
            raise v.bad(f"scores[{name!r}]", np.shape(s), f"one value per time {time.shape}")
    n_bootstrap = v.integer("n_bootstrap", n_bootstrap, low=1)
    rng = np.random.default_rng(v.seed("seed", seed))
    keys = list(scores)
    per_cohort: dict[str, Any] = {}
    skipped: list[str] = []
    num = {k: np.zeros(n_bootstrap) for k in keys}
    den = {k: np.zeros(n_bootstrap) for k in keys}
    point_num = dict.fromkeys(keys, 0.0)
    point_den = dict.fromkeys(keys, 0.0)
    n_total = 0
    for cohort in sorted(set(cohorts)):
        rows = np.flatnonzero((cohorts == cohort) & np.isfinite(time))
        t = time[rows]
        if len(np.unique(t)) < 2:
            skipped.append(cohort)
            continue
        n_total += len(rows)
        weights = rng.multinomial(len(rows), np.full(len(rows), 1.0 / len(rows)),
                                  size=n_bootstrap).astype(np.float64)
        block: dict[str, Any] = {"ci95": {}}
        for key in keys:
            s = np.asarray(scores[key], dtype=np.float64)[rows]
            value = harrell_c(t, s)
            pairs = comparable_pairs(t[np.isfinite(s)])
            conc, comp = _pair_matrices(t, s)
            b_num = ((weights @ conc) * weights).sum(1)  # sum_ij w_i conc_ij w_j per draw
            b_den = ((weights @ comp) * weights).sum(1)
            num[key] += b_num
            den[key] += b_den
            if math.isfinite(value):
                point_num[key] += value * pairs
                point_den[key] += pairs
            block[key] = value
            block["ci95"][key] = _percentile_ci(b_num, b_den)
        block["n"] = int(len(rows))
        block["pairs"] = comparable_pairs(t)
        per_cohort[cohort] = block
    pooled: dict[str, Any] = {k: (point_num[k] / point_den[k] if point_den[k] else math.nan)
                              for k in keys}
    pooled["ci95"] = {k: _percentile_ci(num[k], den[k]) for k in keys}
    pooled["n"] = int(n_total)
    pooled["pairs"] = int(sum(b["pairs"] for b in per_cohort.values()))
    return {"pooled": pooled, "per_cohort": per_cohort,
            "cohorts_without_times": [str(c) for c in skipped]}


def _percentile_ci(num: np.ndarray, den: np.ndarray) -> list[float]:
    """95% percentile interval of ``num / den`` over draws with ``den > 0`` (NaN if fewer
    than half the draws are usable)."""
    ok = den > 0
    if ok.sum() < max(1, len(den) // 2):
        return [math.nan, math.nan]
    ratio = num[ok] / den[ok]
    return [float(np.percentile(ratio, 2.5)), float(np.percentile(ratio, 97.5))]


def survival_concordance(data: pd.DataFrame, scores: Mapping[str, np.ndarray], *,
                         seed: int = 0, n_bootstrap: int = N_BOOTSTRAP) -> dict[str, Any]:
    """:func:`concordance_block` of every score for each of :data:`SURVIVAL_ENDPOINTS` that
    ``data`` has (``{"pfs": ..., "os": ...}``), cohorts from ``data["cohort"]``."""
    cohorts = data["cohort"].astype(str).to_numpy()
    return {end: concordance_block(pd.to_numeric(data[end], errors="coerce").to_numpy(float),
                                   scores, cohorts, seed=seed, n_bootstrap=n_bootstrap)
            for end in SURVIVAL_ENDPOINTS if end in data.columns}


CONCORDANCE_NOTE = (
    "Harrell's C with higher score = longer survival, pairs compared only within a cohort "
    "(PFS/OS units differ between MORRISON-1 cohorts); no event/censoring flag is published, "
    "so every time is treated as an event (a censored patient counts as if they progressed "
    "or died then), which biases C for cohorts with much censoring.")


# --------------------------------------------------------------------------- MORRISON-1
def evaluate_morrison1(model, reference: ReferenceBank, *, samples: pd.DataFrame | None = None,
                       seed: int = 0, calibrated: bool = True, finetuned: bool = True,
                       n_bootstrap: int = N_BOOTSTRAP) -> dict[str, Any]:
    """The MORRISON-1 leave-one-cohort-out evaluation (see the module docstring).

    ``calibrated`` adds ``world_model_calibrated`` (strict leave-one-cohort-out: one extra
    rollout of every sample per cohort, about six times the cost of the rest).
    ``finetuned`` adds ``world_model_finetuned``: per test cohort, the model fine-tuned on
    the other cohorts' pre -> on pairs (:func:`~.real_finetune.fine_tune_without`, a few
    seconds per fold), scored like ``world_model``.
    """
    if samples is None:
        from immunegym.data.real import morrison1_samples

        samples = morrison1_samples()
    data = morrison1_pretreatment(samples)
    labels = data["responder"].to_numpy(dtype=np.float64)
    groups = data["subject_id"].astype(str).to_numpy()
    cohorts = data["cohort"].astype(str).to_numpy()
    plans = [MORRISON1_REGIMENS[r] for r in data["regimen"]]
    sod = reference.median_sod_mm
    names = sorted(set(cohorts))
    composition = np.zeros((len(data), len(FINE_TYPES)))
    calib = np.full(len(data), np.nan)
    tuned_score = np.full(len(data), np.nan)
    finetune_record: dict[str, Any] = {}
    for cohort in names:
        test = cohorts == cohort
        obs = fit_without(data, cohort, reference)
        composition[test] = obs.transform(data[test])
        if finetuned:
            from immunegym.benchmarks.real_finetune import fine_tune_without

            tuned, finetune_record[cohort] = fine_tune_without(
                model, reference, cohort, samples=samples, seed=seed, obs=obs)
            tuned_score[test] = -world_model_outcomes(
                tuned, composition[test], sod,
                [p for p, t in zip(plans, test, strict=True) if t])["best_change"]
        if calibrated:
            # Strict: the training cohorts' features also come from this fold's map.
            out = world_model_outcomes(model, obs.transform(data[~test]), sod,
                                       [p for p, t in zip(plans, test, strict=True) if not t])
            scaler = StandardScaler().fit(_features(out))
            clf = LogisticRegression(C=1.0).fit(scaler.transform(_features(out)),
                                                labels[~test])
            held = world_model_outcomes(model, composition[test], sod,
                                        [p for p, t in zip(plans, test, strict=True) if t])
            calib[test] = clf.decision_function(scaler.transform(_features(held)))
    wm = -world_model_outcomes(model, composition, sod, plans)["best_change"]
    unique_plans = list(dict.fromkeys(plans))
    by_plan = world_model_outcomes(model, np.tile(reference.mean, (len(unique_plans), 1)), sod,
                                   unique_plans)["best_change"]
    regimen_only = -np.array([by_plan[unique_plans.index(p)] for p in plans])
    scores: dict[str, np.ndarray] = {"world_model": wm}
    if calibrated:
        scores["world_model_calibrated"] = calib
    if finetuned:
        scores["world_model_finetuned"] = tuned_score
    scores["world_model_regimen_only"] = regimen_only
    scores["logistic_signatures"] = logistic_signature_scores(data, labels, cohorts)
    scores["logistic_signatures_regimen"] = logistic_with_regimen(data, labels, cohorts)
    published = published_scores(data)
    scores.update(published)
    pooled = auroc_block(labels, scores, groups, seed=seed, n=n_bootstrap)
    per_cohort = {c: auroc_block(labels[cohorts == c],
                                      {k: v[cohorts == c] for k, v in scores.items()},
                                      groups[cohorts == c], seed=seed, n=n_bootstrap)
                  for c in names}
    mean_per = mean_block({k: np.array([per_cohort[c][k] for c in names], dtype=float)
                           for k in scores}, seed=seed, n=n_bootstrap)
    best = max(published, key=lambda k: pooled[k])
    cd8 = _leaf_columns("cd8_t")
    deltas = {wm_key: {other: paired_auroc_delta(labels, scores[wm_key], scores[other], groups,
                                                 seed=seed, n=n_bootstrap)
                       for other in (*published, *LOGISTIC_BASELINES)}
              for wm_key in WORLD_MODEL_SCORES if wm_key in scores}
    if finetuned:
        deltas["world_model_finetuned"]["world_model"] = paired_auroc_delta(
            labels, tuned_score, wm, groups, seed=seed, n=n_bootstrap)
    beats_all = bool(all(pooled["world_model"] > pooled[k] for k in published))
    beats_logistic = bool(pooled["world_model"] > pooled["logistic_signatures"])
    return {
        "pooled_auroc": pooled,
        "per_cohort": per_cohort,
        "mean_per_cohort_auroc": mean_per,
        "beats_all_published": beats_all,
        "beats_all_published_mean_per_cohort": bool(
            all(mean_per["world_model"] > mean_per[k] for k in published)),
        "best_published": best,
        "delta_vs_best_published": paired_auroc_delta(labels, wm, published[best], groups,
                                                       seed=seed, n=n_bootstrap),
        "delta_vs_logistic": deltas["world_model"]["logistic_signatures"],
        "beats_logistic": beats_logistic,
        "deltas": deltas,
        "aim": {"pooled_auroc_min": AIM_POOLED_AUROC,
                "met": bool(pooled["world_model"] >= AIM_POOLED_AUROC and beats_all
                            and beats_logistic)},
        "concordance": survival_concordance(data, scores, seed=seed, n_bootstrap=n_bootstrap),
        "concordance_method": CONCORDANCE_NOTE,
        "logistic_config": {"features": "all morrison1_signature_columns()",
                            "scaler": "StandardScaler", "penalty": "l2", "C": LOGISTIC_C,
                            "folds": "leave one cohort out"},
        "n_samples": int(len(data)),
        "n_positive": int(labels.sum()),
        "cohorts": {c: int((cohorts == c).sum()) for c in names},
        "regimens": {str(r): int(k) for r, k in data["regimen"].value_counts().items()},
        "regimen_only_best_change": {r: float(by_plan[unique_plans.index(MORRISON1_REGIMENS[r])])
                                     for r in sorted(set(data["regimen"]))},
        "mapped_mean_composition": dict(zip(FINE_TYPES, composition.mean(0).tolist(),
                                            strict=True)),
        "mapped_cd8_fraction_mean": float(composition[:, cd8].sum(1).mean()),
        "finetune": finetune_record,
    }


# --------------------------------------------------------------------------- Sade-Feldman
def immune_counts_to_composition(counts: np.ndarray, nodes: Sequence[str],
                                 reference: ReferenceBank) -> np.ndarray:
    """CD45+ cell counts over ontology nodes -> ``(N, 20)`` whole-tumor compositions.

    Coarse-node counts split over their leaves by the reference mean leaf fractions
    (:meth:`~immunegym.ontology.CellOntology.split_to_leaves`); the immune part is scaled to
    the reference mean immune share and the non-immune leaves take the rest in their
    reference mean proportions.

    Raises
    ------
    ValueError
        If a node is not an immune node, or a row has no cells.
    """
    onto = default_ontology()
    counts = np.asarray(counts, dtype=np.float64)
    for node in nodes:
        if node not in onto or not (node == "immune" or onto.is_ancestor("immune", node)):
            raise ValidationError(f"nodes: {node!r} is not an immune ontology node; expected "
                             "CD45+ cell types")
    mean = reference.mean
    prior = {leaf: float(mean[FINE_TYPES.index(leaf)]) for leaf in onto.leaves}
    leaves = onto.split_to_leaves(counts, list(nodes), prior)  # (N, K) in onto.leaves order
    order = [onto.leaves.index(t) for t in FINE_TYPES]
    leaves = leaves[:, order]
    total = leaves.sum(1, keepdims=True)
    if np.any(total <= 0):
        raise ValidationError("counts: a sample has no CD45+ cells; expected a positive total")
    immune = _leaf_columns("immune")
    other = [i for i in range(len(FINE_TYPES)) if i not in immune]
    share = float(mean[immune].sum())
    out = np.zeros_like(leaves)
    out[:, immune] = share * leaves[:, immune] / total
    out[:, other] = (1.0 - share) * mean[other] / mean[other].sum()
    return out


def evaluate_sade_feldman(model, reference: ReferenceBank, *, seed: int = 0,
                          n_bootstrap: int = N_BOOTSTRAP, tuned_model=None) -> dict[str, Any]:
    """The Sade-Feldman pre-treatment evaluation (see the module docstring).

    ``tuned_model`` (optional) adds ``world_model_finetuned``: a model fine-tuned on every
    MORRISON-1 pair (no Sade-Feldman sample enters it), scored like ``world_model``.
    """
    from immunegym.data.real import SADE_FELDMAN_CLUSTERS, sade_feldman_sample_counts
    from immunegym.ontology import harmonize_labels

    table = sade_feldman_sample_counts()
    pre = table[table["timepoint"] == "Pre"].reset_index(drop=True)
    labels = (pre["response"] == "R").to_numpy(dtype=np.float64)
    clusters = list(SADE_FELDMAN_CLUSTERS)
    nodes = harmonize_labels(clusters, convention="sade_feldman_2018", strict=True)
    counts = pre[clusters].to_numpy(dtype=np.float64)
    composition = immune_counts_to_composition(counts, nodes, reference)
    out = world_model_outcomes(model, composition, reference.median_sod_mm,
                               [SADE_FELDMAN_REGIMEN] * len(pre))
    cd8 = _leaf_columns("cd8_t")
    immune = _leaf_columns("immune")
    scores = {
        "world_model": -out["best_change"],
        "cd8_fraction": composition[:, cd8].sum(1) / composition[:, immune].sum(1),
        "memory_vs_exhausted": np.log((pre["G10"].to_numpy(float) + 0.5)
                                      / (pre["G6"].to_numpy(float)
                                         + pre["G9"].to_numpy(float) + 0.5)),
    }
    if tuned_model is not None:
        scores["world_model_finetuned"] = -world_model_outcomes(
            tuned_model, composition, reference.median_sod_mm,
            [SADE_FELDMAN_REGIMEN] * len(pre))["best_change"]
    groups = pre["patient"].astype(str).str.strip().to_numpy()
    return {
        "pooled_auroc": auroc_block(labels, scores, groups, seed=seed, n=n_bootstrap),
        "n_samples": int(len(pre)),
        "n_positive": int(labels.sum()),
        "regimen_assumed": SADE_FELDMAN_REGIMEN,
        "cluster_nodes": dict(zip(clusters, nodes, strict=True)),
    }


def pd1_sensitivity(model, reference: ReferenceBank, *, shift: float = 0.02,
                    regimen: str = "anti_pd1") -> dict[str, float]:
    """Change in predicted best change when ``shift`` of the mean tumor moves to each type.

    Starts from the reference mean composition at the reference median SOD and moves
    ``shift`` of the mass from malignant cells to one other fine type at a time; negative =
    the world model predicts more shrinkage.
    """
    base = reference.mean
    malignant = FINE_TYPES.index("malignant")
    shift = min(float(shift), float(base[malignant]))
    others = [t for t in FINE_TYPES if t != "malignant"]
    rows = [base]
    for t in others:
        row = base.copy()
        row[FINE_TYPES.index(t)] += shift
        row[malignant] -= shift
        rows.append(row)
    change = world_model_outcomes(model, np.array(rows), reference.median_sod_mm,
                                  [regimen] * len(rows))["best_change"]
    return {t: float(change[i + 1] - change[0]) for i, t in enumerate(others)}


# --------------------------------------------------------------------------- entry points
def run_real(ctx) -> dict[str, Any]:
    """The real-data section: MORRISON-1 (leave one cohort out) and Sade-Feldman.

    Parameters
    ----------
    ctx
        A :class:`~immunegym.benchmarks.common.BenchContext` (uses ``model``, ``quick``,
        ``seed``, ``progress``; no simulated held-out cohort is needed).
    """
    start = time.perf_counter()
    n_ref = REFERENCE_PATIENTS[bool(ctx.quick)]
    reference = ReferenceBank.from_sim(n_ref, seed=REFERENCE_SEED)
    ctx.progress(f"real data: reference bank of {n_ref} ImmuneSim melanoma patients")
    calibrated = not ctx.quick
    morrison = evaluate_morrison1(ctx.model, reference, seed=ctx.seed, calibrated=calibrated)
    ctx.progress("real data: MORRISON-1 done")
    from immunegym.benchmarks.real_finetune import fine_tune_all

    tuned = fine_tune_all(ctx.model, reference, seed=ctx.seed)
    sade = evaluate_sade_feldman(ctx.model, reference, seed=ctx.seed, tuned_model=tuned)
    ctx.progress("real data: Sade-Feldman done")
    diagnostics: dict[str, Any] = {
        "pd1_sensitivity": pd1_sensitivity(ctx.model, reference),
        "pd1_sensitivity_finetuned": pd1_sensitivity(tuned, reference)}
    if not ctx.quick:
        from immunegym.benchmarks.truth_diagnostics import cd8_state_auroc

        # Is the Sade-Feldman disagreement already in the ground truth? (~20 s)
        diagnostics["sim_cd8_states"] = cd8_state_auroc(SIM_DIAGNOSTIC_PATIENTS)
        ctx.progress("real data: ImmuneSim CD8-state diagnostic done")
    return {
        "morrison1": morrison,
        "sade_feldman": sade,
        "diagnostics": diagnostics,
        "config": {
            "reference_patients": n_ref, "reference_seed": REFERENCE_SEED,
            "reference_cancer_type": CANCER_TYPE,
            "baseline_sod_mm": reference.median_sod_mm, "n_cycles": N_CYCLES,
            "n_bootstrap": N_BOOTSTRAP, "seed": ctx.seed, "calibrated": calibrated,
            "morrison1_regimens": dict(MORRISON1_REGIMENS),
            "sade_feldman_regimen": SADE_FELDMAN_REGIMEN,
            "node_signatures": {k: list(v) for k, v in NODE_SIGNATURES.items()},
            "effector_signature": EFFECTOR_SIGNATURE,
            "published_scores": {k: {"column": c, "sign": s}
                                 for k, (c, s) in PUBLISHED_SCORES.items()},
        },
        "seconds": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------- report
def _score_keys(block: dict[str, Any]) -> list[str]:
    return [k for k in block if k not in ("ci95", "n", "n_positive")]


def _table(rows: dict[str, dict[str, Any]], keys: list[str]) -> str:
    head = "| | n (resp.) | " + " | ".join(SCORE_LABELS.get(k, k) for k in keys) + " |"
    lines = [head, "|---" * (len(keys) + 2) + "|"]
    for name, block in rows.items():
        cells = [format_ci(block.get(k), block.get("ci95", {}).get(k)) for k in keys]
        count = block.get("count") or f"{block.get('n', '')} ({block.get('n_positive', '')})"
        lines.append(f"| {name} | {count} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_real(section: dict[str, Any], path: str | Path) -> Path:
    """Per-cohort and pooled AUROC of every score with 95% CIs and the 0.5 chance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from immunegym._atomic import atomic_path

    morrison = section["morrison1"]
    keys = _score_keys(morrison["pooled_auroc"])
    groups = {**{f"{c}\n(n={b['n']})": b for c, b in morrison["per_cohort"].items()},
              f"pooled\n(n={morrison['pooled_auroc']['n']})": morrison["pooled_auroc"]}
    sade = section.get("sade_feldman")
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [4, 1]})
    ax = axes[0]
    cmap = plt.get_cmap("tab10")
    order = list(dict.fromkeys([*SCORE_LABELS, *keys]))
    color = {k: cmap(i % 10) for i, k in enumerate(order)}
    width = 0.8 / len(keys)
    for j, key in enumerate(keys):
        xs, ys, err = [], [], []
        for i, block in enumerate(groups.values()):
            value = block.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            ci = block.get("ci95", {}).get(key) or [None, None]
            lo = value if ci[0] is None else ci[0]
            hi = value if ci[1] is None else ci[1]
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(value)
            err.append([value - lo, hi - value])
        ax.errorbar(xs, ys, yerr=np.array(err).T if err else None, fmt="o",
                    color=color[key], ms=4, capsize=2, lw=1,
                    label=SCORE_LABELS.get(key, key))
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_xticks(range(len(groups)), list(groups), fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("AUROC (CR/PR vs SD/PD)")
    ax.set_title("MORRISON-1 pre-treatment, leave one cohort out", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4)
    ax = axes[1]
    if sade:
        block = sade["pooled_auroc"]
        skeys = _score_keys(block)
        for j, key in enumerate(skeys):
            value = block.get(key)
            ci = block.get("ci95", {}).get(key) or [None, None]
            if value is None:
                continue
            lo = value if ci[0] is None else ci[0]
            hi = value if ci[1] is None else ci[1]
            ax.errorbar([j], [value], yerr=[[value - lo], [hi - value]], fmt="o", capsize=2,
                        color=color.get(key, cmap(j % 10)))
        ax.set_xticks(range(len(skeys)), [SCORE_LABELS.get(k, k) for k in skeys],
                      rotation=30, ha="right", fontsize=7)
        ax.set_title(f"Sade-Feldman pre (n={block['n']})", fontsize=10)
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _sensitivity_lines(sens: dict[str, float] | None,
                       tuned: dict[str, float] | None = None) -> list[str]:
    if not sens:
        return []
    ranked = sorted(sens.items(), key=lambda kv: kv[1])
    text = ", ".join(f"{k} {v:+.4f}" for k, v in ranked)
    lines = [f"What the score can use: moving 2% of the mean tumor from malignant cells to one "
             f"cell type changes the predicted best change under anti-PD-1 by: {text}."]
    if tuned:
        cd8 = [t for t in sens if t.startswith("cd8_")]
        pairs = ", ".join(f"{t} {sens[t]:+.4f} -> {tuned[t]:+.4f}" for t in cd8 if t in tuned)
        lines.append(f"The CD8 states after fine-tuning on every real pair (pretrained -> "
                     f"fine-tuned): {pairs}.")
    return [" ".join(lines), ""]


def _logistic_and_aim_lines(morrison: dict[str, Any]) -> list[str]:
    """The sentences on the logistic baseline and the issue's aim (absent in old JSON)."""
    lines: list[str] = []
    pooled = morrison["pooled_auroc"]
    delta = morrison.get("delta_vs_logistic")
    if delta is not None and "logistic_signatures" in pooled:
        verdict = "beats" if morrison.get("beats_logistic") else "does not beat"
        lines += ["Against a leave-one-cohort-out logistic regression on all signature "
                  "scores (published predictors included, fixed L2 C = "
                  f"{morrison.get('logistic_config', {}).get('C', LOGISTIC_C):g}): the world "
                  f"model {verdict} it, {format_ci(pooled['world_model'])} against "
                  f"{format_ci(pooled['logistic_signatures'])}; difference "
                  f"{format_ci(delta['value'], delta['ci95'])} (paired bootstrap).", ""]
    aim = morrison.get("aim")
    if aim is not None:
        need = aim["pooled_auroc_min"]
        if aim["met"]:
            lines += [f"Aim met: pooled AUROC >= {need:g}, above every published score and "
                      "above the logistic baseline.", ""]
        else:
            missed = []
            if not pooled["world_model"] >= need:
                missed.append(f"the pooled AUROC {format_ci(pooled['world_model'])} is below "
                              f"{need:g}")
            if not morrison.get("beats_all_published"):
                missed.append("it does not beat every published score")
            if not morrison.get("beats_logistic"):
                missed.append("it does not beat the logistic baseline")
            text = (f"Aim not met (pooled AUROC >= {need:g}, above every published score "
                    f"and above the logistic baseline): {'; '.join(missed)}.")
            unresolved = _unresolved(morrison)
            if unresolved:
                names = " and ".join(SCORE_LABELS.get(k, k) for k in unresolved)
                plural = len(unresolved) > 1
                text += (f" The paired difference{'s' if plural else ''} to {names} "
                         f"{'have 95% intervals' if plural else 'has a 95% interval'} that "
                         f"include{'' if plural else 's'} 0 on these "
                         f"{morrison['n_samples']} patients.")
            lines += [text, ""]
    return lines


def _unresolved(morrison: dict[str, Any]) -> list[str]:
    """The scores whose paired AUROC difference to the world model has a 95% interval
    including 0 (or none)."""
    out = []
    for key, block in morrison.get("deltas", {}).get("world_model", {}).items():
        ci = block.get("ci95") or [None, None]
        if None in ci or ci[0] <= 0 <= ci[1]:
            out.append(key)
    return out


def _concordance_lines(morrison: dict[str, Any]) -> list[str]:
    """The C-index table (PFS and OS, pooled within cohorts and per cohort)."""
    conc = morrison.get("concordance")
    if not conc:
        return []
    first = next(iter(conc.values()))
    keys = [k for k in first["pooled"] if k not in ("ci95", "n", "pairs")]
    head = "| | n (pairs) | " + " | ".join(SCORE_LABELS.get(k, k) for k in keys) + " |"
    lines = ["Concordance with survival (Harrell's C, higher score = longer survival; 0.5 = "
             "chance), 95% bootstrap CIs over patients resampled within cohorts:", "",
             head, "|---" * (len(keys) + 2) + "|"]
    for end, block in conc.items():
        rows = {f"{end.upper()} pooled": block["pooled"],
                **{f"{end.upper()} {c}": b for c, b in block["per_cohort"].items()}}
        for name, row in rows.items():
            cells = [format_ci(row.get(k), row.get("ci95", {}).get(k)) for k in keys]
            lines.append(f"| {name} | {row['n']} ({row['pairs']}) | " + " | ".join(cells)
                         + " |")
    missing = {end: b["cohorts_without_times"] for end, b in conc.items()
               if b.get("cohorts_without_times")}
    note = morrison.get("concordance_method", CONCORDANCE_NOTE)
    gaps = "; ".join(f"{end.upper()} not published for cohort(s) {', '.join(c)}"
                     for end, c in missing.items())
    lines += ["", note + (f" {gaps}." if gaps else ""), ""]
    return lines


def _finetune_lines(morrison: dict[str, Any]) -> list[str]:
    """What fine-tuning on real pre -> on pairs adds over the pretrained model."""
    delta = morrison.get("deltas", {}).get("world_model_finetuned", {}).get("world_model")
    if not delta:
        return []
    pairs = {c: r["pairs"] for c, r in morrison.get("finetune", {}).items()}
    return [f"Fine-tuning on real longitudinal pairs (per test cohort, the other cohorts' "
            f"pre -> on MORRISON-1 pairs through the fold's observation model, from "
            f"observations alone; pairs per fold: {pairs}) changes the pooled AUROC by "
            f"{format_ci(delta['value'], delta['ci95'])} (fine-tuned minus pretrained, "
            "paired bootstrap).", ""]


def _truth_lines(diagnostics: dict[str, Any]) -> list[str]:
    """The ground truth's own CD8-state predictors (is a disagreement already there?)."""
    sim = diagnostics.get("sim_cd8_states")
    if not sim:
        return []
    a = sim["auroc"]
    return [f"In the ground truth itself ({sim['n_patients']} fresh ImmuneSim "
            f"{sim['cancer_type']} patients under `{sim['regimen']}`, first biopsy as a lab "
            f"delivers it): AUROC of the terminally exhausted CD8 share {a['cd8_tex']:.3f}, "
            f"Tpex {a['cd8_tpex']:.3f}, memory CD8 {a['cd8_memory']:.3f}, all CD8 "
            f"{a['cd8_total']:.3f}, and log((memory + Tpex) / Tex) "
            f"{a['memory_tpex_vs_tex']:.3f}. A world model that learned ImmuneSim faithfully "
            "ranks exhausted-rich tumors as responders; where Sade-Feldman's patients say the "
            "opposite, the disagreement starts in the simulator.", ""]


def report_real(section: dict[str, Any], out: Path) -> str:
    """Markdown for the real-data part of the response section; writes its PNG into ``out``.

    Parameters
    ----------
    section
        What :func:`run_real` returned (after :func:`~immunegym.benchmarks.common.jsonable`).
    out
        The report directory (exists).
    """
    for key in ("morrison1", "sade_feldman"):
        if key not in section:
            raise ValidationError(f"section: no {key!r} key; expected the output of run_real()")
    morrison, sade = section["morrison1"], section["sade_feldman"]
    figure = plot_real(section, Path(out) / "response_real_auroc.png")
    keys = _score_keys(morrison["pooled_auroc"])
    delta = morrison["delta_vs_best_published"]
    verdict = ("beats" if morrison["beats_all_published"] else "does not beat")
    rows = {"pooled": morrison["pooled_auroc"], **morrison["per_cohort"]}
    mean_per = morrison["mean_per_cohort_auroc"]
    mean_row = {"mean of cohorts": {**{k: mean_per[k] for k in keys},
                                    "ci95": mean_per["ci95"],
                                    "count": f"{mean_per['n']} cohorts"}}
    cfg = section.get("config", {})
    lines = [
        "### Real patients: MORRISON-1 and Sade-Feldman",
        "",
        f"Pre-treatment tumors of real ICB-treated melanoma patients: MORRISON-1 bulk RNA "
        f"({morrison['n_samples']} samples, {len(morrison['cohorts'])} cohorts, CR/PR vs "
        f"SD/PD) and Sade-Feldman 2018 single-cell clusters ({sade['n_samples']} samples, "
        "R vs NR). Signature scores are mapped onto the world model's 20 cell types by a "
        "quantile-matching observation model fitted without the test cohort against "
        f"{cfg.get('reference_patients', '?')} ImmuneSim melanoma day-0 states; each patient "
        f"is rolled forward {cfg.get('n_cycles', N_CYCLES)} cycles under the regimen they "
        "actually got and scored by the predicted best change in tumor size. Published "
        "predictors are computed on the same samples. AUROC with 95% bootstrap CIs over "
        "patients (mean of cohorts: over cohorts).",
        "",
        _table({**rows, **mean_row}, keys),
        "",
        f"The world model {verdict} every published score on the pooled AUROC point value: "
        f"{format_ci(morrison['pooled_auroc']['world_model'])} against "
        f"{format_ci(morrison['pooled_auroc'][morrison['best_published']])} for the best published "
        f"score ({morrison['best_published']}); difference "
        f"{format_ci(delta['value'], delta['ci95'])}"
        " (paired bootstrap). `world model, regimen only` rolls out the reference mean "
        "patient under each regimen: what the regimen alone explains.",
        "",
        *_logistic_and_aim_lines(morrison),
        *_finetune_lines(morrison),
        *_concordance_lines(morrison),
        *_sensitivity_lines(section.get("diagnostics", {}).get("pd1_sensitivity"),
                            section.get("diagnostics", {}).get("pd1_sensitivity_finetuned")),
        _table({"Sade-Feldman pre": sade["pooled_auroc"]},
               _score_keys(sade["pooled_auroc"])),
        "",
        f"Sade-Feldman regimens are not in the published tables; all samples are rolled "
        f"forward under `{sade.get('regimen_assumed', SADE_FELDMAN_REGIMEN)}` (an "
        "assumption).",
        "",
        *_truth_lines(section.get("diagnostics", {})),
        f"![AUROC per cohort on real data]({figure.name})",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "AIM_POOLED_AUROC",
    "EFFECTOR_SIGNATURE",
    "LOGISTIC_C",
    "MORRISON1_REGIMENS",
    "NODE_SIGNATURES",
    "PUBLISHED_SCORES",
    "ReferenceBank",
    "SignatureObservationModel",
    "evaluate_morrison1",
    "comparable_pairs",
    "concordance_block",
    "evaluate_sade_feldman",
    "fit_without",
    "harrell_c",
    "immune_counts_to_composition",
    "logistic_signature_scores",
    "logistic_with_regimen",
    "morrison1_pretreatment",
    "pd1_sensitivity",
    "published_scores",
    "report_real",
    "rollout_inputs",
    "run_real",
    "survival_concordance",
    "world_model_outcomes",
]
