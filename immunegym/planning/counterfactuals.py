"""Counterfactual regimens for one patient: what the world model expects under each.

"For this patient, what happens under anti-PD-1 versus anti-CTLA-4 versus the combination,
and which schedule is best?" :func:`counterfactual` takes a patient's observed history (its
biopsies and scans, never a simulator's hidden state), cuts it at a decision point, and rolls
the world model forward under every candidate regimen from the same starting point::

    >>> cf = counterfactual("cohort.h5ad", ["anti_pd1", "anti_pd1+anti_ctla4 x4 -> anti_pd1",
    ...                                     "none"], patient="melanoma-P007", horizon=8)
    >>> cf.table()                       # one row per regimen
    >>> cf.best("p_response")
    >>> plot_counterfactual_tree(cf, "tree.png")

Uncertainty is split by the law of total variance over the ensemble members: every member
is rolled out with the same number of samples (each sample drawn from that member's
predictive distribution, step by step), so for any outcome ``y``

    Var[y] = E_m[Var[y | m]] + Var_m[E[y | m]]
           = aleatoric       + epistemic

holds exactly over the drawn samples (population variances, equal member weights).

Outcomes per sample (:meth:`Counterfactual.outcomes`):

* ``final_sod_mm``: sum of diameters at the last step (mm);
* ``final_log_sod``: its ``log1p`` (the world model's burden scale);
* ``best_change_pct``: best (lowest) % change of the SOD from the baseline SOD, the last
  scan at or before the decision point;
* ``response``: the SOD is <= 70% of the baseline at some step (RECIST partial-response-like,
  unconfirmed);
* ``progression``: the final SOD is >= 120% of the nadir and >= 5 mm above it (the nadir is
  the smallest SOD of the baseline and the predicted steps);
* ``final_malignant``: fraction of malignant cells at the last step;
* ``final_cd8``: fraction of CD8 T cells at the last step, the sum of the leaves of the
  ontology's ``cd8_t`` node (:data:`CD8_TYPES`: memory/naive, effector, Tpex, Tex).

Response-type outcomes are NaN when the history has no scan at or before the decision point.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from immunegym.ontology import FINE_TYPES, default_ontology
from immunegym.planning.regimen import RegimenPlan, parse_plan
from immunegym.validation import (
    ValidationError,
    bad,
    choice,
    did_you_mean,
    existing_file,
    integer,
    memory_budget,
    number,
    output_path,
)
from immunegym.validation import device as validate_device
from immunegym.validation import seed as validate_seed

MAX_HORIZON = 1000
"""Most cycles a counterfactual predicts (57 years of 21-day cycles; the model is trained on
one-year follow-ups, so anything near this is extrapolation)."""

MAX_SAMPLES = 100_000
"""Most samples per regimen."""

MAX_REGIMENS = 1000
"""Most regimens compared at once."""


class HistoryNotFoundError(ValidationError, FileNotFoundError):
    """The history file does not exist."""


if TYPE_CHECKING:
    import anndata as ad

    from immunegym.world_model.model import WorldModel
    from immunegym.world_model.timelines import Timelines

CD8_TYPES: tuple[str, ...] = tuple(default_ontology().leaves_under("cd8_t"))
"""Fine types summed into the CD8 T-cell fraction (the leaves of ``cd8_t``)."""

MALIGNANT_TYPE = "malignant"
"""Fine type of the malignant fraction."""

RESPONSE_RATIO = 0.7
"""Response: SOD at some step <= this times the baseline SOD (RECIST PR: -30%)."""

PROGRESSION_RATIO = 1.2
"""Progression: final SOD >= this times the nadir (RECIST PD: +20%) ..."""

PROGRESSION_MM = 5.0
"""... and at least this many mm above the nadir."""

OUTCOMES: tuple[str, ...] = ("final_sod_mm", "final_log_sod", "best_change_pct", "response",
                             "progression", "final_malignant", "final_cd8")
"""Per-sample outcomes of :meth:`Counterfactual.outcomes`."""

_HIGHER_IS_BETTER: dict[str, bool] = {
    "median_final_sod_mm": False,
    "median_best_change_pct": False,
    "p_response": True,
    "p_progression": False,
    "final_malignant_fraction": False,
    "final_cd8_fraction": True,
}


@dataclass
class Counterfactual:
    """Outcome distributions of one patient under alternative regimens.

    ``n_reg`` regimens, ``S`` samples per regimen (the same ensemble members in the same
    order for every regimen), ``H`` cycles of 21 days, ``K`` fine types.

    Attributes
    ----------
    patient_id, cancer_type
        The patient.
    regimens
        ``(n_reg,)`` regimen texts (``str`` of the parsed plans).
    decision_day
        Day of the last observation the forecast starts from.
    days
        ``(H,)`` day of every predicted step.
    baseline_sod_mm
        Last observed sum of diameters at or before the decision point (NaN without one).
    sod_mm
        ``(n_reg, S, H)`` predicted sum of diameters (mm, >= 0).
    composition
        ``(n_reg, S, H, K)`` predicted compositions over :attr:`types`.
    member
        ``(S,)`` ensemble member behind each sample.
    observed_days
        ``(L,)`` days of the patient's observed points, including those after the decision.
    observed_sod_mm
        ``(L,)`` observed sum of diameters (NaN where no scan).
    observed_composition
        ``(L, K)`` observed compositions (NaN where no biopsy; coarse labels split over their
        leaves with the model's leaf prior).
    observed_after
        ``(L,)`` the point lies after the decision point (what happened under the therapy
        the patient actually got, :attr:`actual_regimen`; never seen by the model).
    actual_regimen
        The regimen the patient actually got, as recorded in the history.
    seed
        Seed of the sampling.
    types
        Composition columns.
    """

    patient_id: str
    cancer_type: str
    regimens: tuple[str, ...]
    decision_day: float
    days: np.ndarray
    baseline_sod_mm: float
    sod_mm: np.ndarray
    composition: np.ndarray
    member: np.ndarray
    observed_days: np.ndarray
    observed_sod_mm: np.ndarray
    observed_composition: np.ndarray
    observed_after: np.ndarray
    actual_regimen: str = "unknown"
    seed: int = 0
    types: tuple[str, ...] = field(default=FINE_TYPES)

    def __repr__(self) -> str:
        return (f"Counterfactual(patient={self.patient_id!r}, cancer_type={self.cancer_type!r}"
                f", regimens={len(self.regimens)}, samples={self.n_samples}, "
                f"horizon={self.horizon} cycles from day {self.decision_day:g})")

    # ------------------------------------------------------------------ outcomes
    @property
    def horizon(self) -> int:
        """``H``, cycles predicted."""
        return int(self.days.shape[0])

    @property
    def n_samples(self) -> int:
        """``S``, samples per regimen."""
        return int(self.member.shape[0])

    def fraction(self, which: str) -> np.ndarray:
        """``(n_reg, S, H)`` predicted fraction of ``"cd8"`` or of one fine type."""
        return self.composition[..., _type_columns(which, self.types)].sum(-1)

    def outcomes(self) -> dict[str, np.ndarray]:
        """Per-sample outcomes (:data:`OUTCOMES`), each ``(n_reg, S)`` float64."""
        sod = self.sod_mm.astype(np.float64)
        final = sod[..., -1]
        base = float(self.baseline_sod_mm)
        has_base = math.isfinite(base) and base > 0
        if has_base:
            best = ((sod.min(-1) - base) / base * 100.0)
            response = (sod <= RESPONSE_RATIO * base).any(-1).astype(np.float64)
            nadir = np.minimum(sod.min(-1), base)
        else:
            best = np.full(final.shape, np.nan)
            response = np.full(final.shape, np.nan)
            nadir = sod.min(-1)
        progression = ((final >= PROGRESSION_RATIO * nadir)
                       & (final >= nadir + PROGRESSION_MM)).astype(np.float64)
        last = self.composition[..., -1, :].astype(np.float64)
        return {
            "final_sod_mm": final,
            "final_log_sod": np.log1p(final),
            "best_change_pct": best,
            "response": response,
            "progression": progression,
            "final_malignant": last[..., _type_columns(MALIGNANT_TYPE, self.types)].sum(-1),
            "final_cd8": last[..., _type_columns("cd8", self.types)].sum(-1),
        }

    def variance(self, outcome: str = "final_log_sod") -> pd.DataFrame:
        """Law-of-total-variance split of one outcome, one row per regimen.

        Parameters
        ----------
        outcome
            One of :data:`OUTCOMES`.

        Returns
        -------
        pandas.DataFrame
            Index ``regimen``; columns ``total``, ``aleatoric`` (mean over members of the
            within-member variance) and ``epistemic`` (variance over members of the member
            means); ``total == aleatoric + epistemic``.
        """
        choice("outcome", outcome, OUTCOMES)
        total, aleatoric, epistemic = _split_variance(self.outcomes()[outcome], self.member)
        return pd.DataFrame({"total": total, "aleatoric": aleatoric, "epistemic": epistemic},
                            index=pd.Index(self.regimens, name="regimen"))

    def uncertainty(self) -> pd.DataFrame:
        """:meth:`variance` of every outcome, long format (regimen, outcome, ...)."""
        frames = [self.variance(name).reset_index().assign(outcome=name) for name in OUTCOMES]
        table = pd.concat(frames, ignore_index=True)
        return table[["regimen", "outcome", "total", "aleatoric", "epistemic"]]

    def table(self) -> pd.DataFrame:
        """One row per regimen: outcome summaries and the uncertainty of the final size.

        Columns: ``median_final_sod_mm`` with its 5-95% interval (``final_sod_mm_q05``,
        ``final_sod_mm_q95``), ``median_best_change_pct``, ``p_response``,
        ``p_progression``, mean ``final_malignant_fraction`` and ``final_cd8_fraction``,
        and the total / aleatoric / epistemic standard deviation of the final ``log1p`` SOD
        (``sd_log_sod_total`` etc.; the variances add up).
        """
        out = self.outcomes()
        final = out["final_sod_mm"]
        total, aleatoric, epistemic = _split_variance(out["final_log_sod"], self.member)
        frame = pd.DataFrame({
            "median_final_sod_mm": np.median(final, axis=1),
            "final_sod_mm_q05": np.quantile(final, 0.05, axis=1),
            "final_sod_mm_q95": np.quantile(final, 0.95, axis=1),
            "median_best_change_pct": np.median(out["best_change_pct"], axis=1),
            "p_response": out["response"].mean(1),
            "p_progression": out["progression"].mean(1),
            "final_malignant_fraction": out["final_malignant"].mean(1),
            "final_cd8_fraction": out["final_cd8"].mean(1),
            "sd_log_sod_total": np.sqrt(total),
            "sd_log_sod_aleatoric": np.sqrt(aleatoric),
            "sd_log_sod_epistemic": np.sqrt(epistemic),
        }, index=pd.Index(self.regimens, name="regimen"))
        return frame

    def best(self, by: str = "p_response") -> str:
        """The regimen text that is best by one :meth:`table` column.

        Higher is better for ``p_response`` and ``final_cd8_fraction``; lower for
        ``median_final_sod_mm``, ``median_best_change_pct``, ``p_progression`` and
        ``final_malignant_fraction``. Ties go to the regimen listed first.
        """
        choice("by", by, list(_HIGHER_IS_BETTER))
        values = self.table()[by].to_numpy(dtype=np.float64)
        if np.isnan(values).all():
            raise ValidationError(f"by: {by!r} is undefined for every regimen (no baseline scan at "
                             "or before the decision point?)")
        score = values if _HIGHER_IS_BETTER[by] else -values
        return self.regimens[int(np.nanargmax(score))]

    # ------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable content (NaN as ``None``), with the summary table.

        :meth:`from_dict` reads it back.
        """
        return {
            "patient_id": self.patient_id,
            "cancer_type": self.cancer_type,
            "regimens": list(self.regimens),
            "decision_day": float(self.decision_day),
            "days": _jsonable(self.days),
            "baseline_sod_mm": _jsonable(self.baseline_sod_mm),
            "sod_mm": _jsonable(self.sod_mm),
            "composition": _jsonable(self.composition),
            "member": [int(m) for m in self.member],
            "observed_days": _jsonable(self.observed_days),
            "observed_sod_mm": _jsonable(self.observed_sod_mm),
            "observed_composition": _jsonable(self.observed_composition),
            "observed_after": [bool(v) for v in self.observed_after],
            "actual_regimen": self.actual_regimen,
            "seed": int(self.seed),
            "types": list(self.types),
            "table": {regimen: {k: _jsonable(v) for k, v in row.items()}
                      for regimen, row in self.table().iterrows()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Counterfactual:
        """Rebuild from :meth:`to_dict` (the summary table is recomputed)."""
        def arr(key: str, dtype: Any = np.float64) -> np.ndarray:
            return np.array(_unjson(data[key]), dtype=dtype)

        try:
            return cls(
                patient_id=str(data["patient_id"]), cancer_type=str(data["cancer_type"]),
                regimens=tuple(data["regimens"]), decision_day=float(data["decision_day"]),
                days=arr("days"), baseline_sod_mm=float(_unjson(data["baseline_sod_mm"])),
                sod_mm=arr("sod_mm", np.float32),
                composition=arr("composition", np.float32),
                member=np.asarray(data["member"], dtype=np.int64),
                observed_days=arr("observed_days"), observed_sod_mm=arr("observed_sod_mm"),
                observed_composition=arr("observed_composition").reshape(
                    len(data["observed_days"]), len(data["types"])),
                observed_after=np.asarray(data["observed_after"], dtype=bool),
                actual_regimen=str(data.get("actual_regimen", "unknown")),
                seed=int(data.get("seed", 0)), types=tuple(data["types"]))
        except KeyError as err:
            raise ValidationError(f"data: missing key {err}; expected Counterfactual.to_dict() "
                             "output") from None


# ---------------------------------------------------------------------------- the question
def counterfactual(
    history: ad.AnnData | str | os.PathLike[str] | Timelines,
    regimens: Sequence[str | RegimenPlan] | str | RegimenPlan,
    n_samples: int = 64,
    *,
    patient: str | None = None,
    model: WorldModel | None = None,
    horizon: int = 8,
    at_day: float | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> Counterfactual:
    """Roll one patient forward under alternative regimens with the world model.

    Parameters
    ----------
    history
        The observed history: an AnnData registered with
        :func:`immunegym.data.setup_anndata` (biopsies, ``uns["imaging"]``,
        ``uns["therapy_cycles"]``), a path to such an ``.h5ad``, or
        :class:`~immunegym.world_model.timelines.Timelines`.
    regimens
        Regimen texts or names (:func:`~immunegym.planning.regimen.parse_plan`) or plans;
        each is laid out per 21-day cycle from the decision point.
    n_samples
        Trajectories per regimen. Rounded up so that every ensemble member gets the same
        number and at least two (the returned :attr:`Counterfactual.n_samples` may be
        larger).
    patient
        Patient id; required when the history holds more than one patient.
    model
        The world model; the pretrained default (loaded on ``device``) when ``None``. A
        given model runs on its own device.
    horizon
        Cycles (21 days each) to predict.
    at_day
        Decision point: observations after this day are hidden from the model, and the
        forecast starts from the last observation on or before it. Default: the patient's
        first observation (the baseline, before therapy).
    seed
        Seed of the sampling (same seed, same result on CPU). Member ``m`` samples with its
        own seed derived from ``(seed, m)``; all regimens are rolled out together.
    device
        Device of the default model.

    Returns
    -------
    Counterfactual

    Raises
    ------
    ValueError
        On a bad ``n_samples``, ``horizon``, ``seed`` or ``at_day``, an empty or duplicated
        regimen list, a regimen that does not parse or lay out in 21-day cycles, or an
        unknown or missing ``patient``.
    """
    from immunegym.world_model.events import split_blocks
    from immunegym.world_model.timelines import CYCLE_DAYS

    n_samples = integer("n_samples", n_samples, low=1, high=MAX_SAMPLES)
    horizon = integer("horizon", horizon, low=1, high=MAX_HORIZON,
                      hint=f"{MAX_HORIZON} cycles of 21 days is {MAX_HORIZON * 21 // 365} years")
    seed = validate_seed("seed", seed)
    if model is not None and not hasattr(model, "rollout"):
        raise bad("model", model, "a WorldModel or None (the pretrained default)")
    if model is None:
        device = validate_device("device", device)
    plans = _plans(regimens)
    # The samples of every regimen, before anything is rolled out: (n_reg, S, H, K + 1)
    # float32, held about three times over (the rollout, its copy, the concatenation).
    n_members = len(model.members) if model is not None else 3
    per = max(2, math.ceil(n_samples / n_members)) * n_members
    memory_budget("horizon" if horizon > 64 else "n_samples",
                  horizon if horizon > 64 else n_samples,
                  3 * 4 * len(plans) * per * horizon * (len(FINE_TYPES) + 1),
                  f"{len(plans)} regimens x {per} samples x {horizon} cycles")
    doses = np.stack([plan.cycle_doses(horizon, CYCLE_DAYS) for plan in plans])  # (n, H, R)

    tl = _timelines(history)
    row = _patient_row(tl, patient)
    full = tl.subset([row]).to("cpu")
    valid = full.valid[0].numpy()
    obs_days = full.days[0].numpy()[valid].astype(np.float64)
    first = float(obs_days[0])
    if at_day is None:
        at_day = first
    at_day = number("at_day", at_day)
    if float(at_day) < first:
        raise ValidationError(f"at_day: {at_day!r} is before patient {tl.patient_ids[row]!r}'s "
                         f"first observation (day {first:g}); expected a day >= {first:g}")
    context = full.truncate(np.array([at_day], dtype=np.float32))
    n_ctx = int(context.valid[0].sum())
    decision_day = float(context.days[0, n_ctx - 1])

    if model is None:
        from immunegym.world_model import load

        model = load(device=device)
    n_reg = len(plans)
    per_member = max(2, math.ceil(n_samples / len(model.members)))
    batch = context.subset([0] * n_reg)
    sod_parts, comp_parts, member_parts = [], [], []
    days = None
    for m in range(len(model.members)):
        view = copy.copy(model)  # a one-member view: "aleatoric" samples its only member
        view.members = [model.members[m]]
        member_seed = int(np.random.SeedSequence([int(seed), m]).generate_state(1)[0])
        roll = view.rollout(batch, doses, n_samples=per_member, noise="aleatoric",
                            seed=member_seed, dt=CYCLE_DAYS)
        burden = roll.burden.detach().cpu().to(torch.float64).clamp_min(0.0)  # (s, n, H)
        sod_parts.append(torch.expm1(burden).transpose(0, 1).numpy())
        comp_parts.append(roll.compositions.detach().cpu().transpose(0, 1).numpy())
        member_parts.append(np.full(per_member, m, dtype=np.int64))
        days = roll.days[0].detach().cpu().numpy().astype(np.float64)

    scans = context.burden_observed[0].numpy()[:n_ctx]
    baseline = (float(np.expm1(context.burden[0].numpy()[:n_ctx][scans][-1]))
                if scans.any() else float("nan"))
    prior = model.leaf_prior()
    weights = prior.cpu() if prior is not None else torch.ones(full.counts.shape[-1])
    comp = split_blocks(full.counts[0], full.block[0], weights).numpy()[valid]
    comp[~full.comp_observed[0].numpy()[valid]] = np.nan
    sod_obs = np.where(full.burden_observed[0].numpy()[valid],
                       np.expm1(full.burden[0].numpy()[valid].astype(np.float64)), np.nan)
    info = full.patients.iloc[0]
    return Counterfactual(
        patient_id=str(info["patient_id"]),
        cancer_type=str(info.get("cancer_type", "unknown")),
        regimens=tuple(str(plan) for plan in plans),
        decision_day=decision_day,
        days=np.asarray(days),
        baseline_sod_mm=baseline,
        sod_mm=np.concatenate(sod_parts, axis=1).astype(np.float32),
        composition=np.concatenate(comp_parts, axis=1).astype(np.float32),
        member=np.concatenate(member_parts),
        observed_days=obs_days,
        observed_sod_mm=sod_obs,
        observed_composition=comp.astype(np.float64),
        observed_after=obs_days > decision_day,
        actual_regimen=str(info.get("regimen", "unknown")),
        seed=int(seed),
        types=tuple(model.config.types),
    )


# ---------------------------------------------------------------------------- the figure
def plot_counterfactual_tree(cf: Counterfactual, path: str | os.PathLike[str], *,
                             fraction: str = "cd8", level: float = 0.8,
                             title: str | None = None) -> Path:
    """The patient's observed course as a trunk, one branch per regimen; writes a PNG.

    Two panels over weeks from treatment start: the sum of diameters (mm) and a cell
    fraction. Up to the decision point, the observed points are joined as the trunk (black);
    from it, every regimen fans out as its median line and central ``level`` band (10-90%
    by default). Observations after the decision point, under the therapy the patient
    actually got, are grey markers. The legend gives each regimen's text and P(response).

    Parameters
    ----------
    cf
        A :class:`Counterfactual`.
    path
        Output PNG (written to a temporary file, then renamed).
    fraction
        Lower panel: ``"cd8"`` (CD8 T cells, :data:`CD8_TYPES`) or a fine type
        (e.g. ``"malignant"``).
    level
        Width of the bands (0 < level < 1).
    title
        Figure title; default names the patient, cancer type and decision day.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from immunegym._atomic import atomic_path

    if not isinstance(cf, Counterfactual):
        raise bad("cf", cf, "a Counterfactual (from counterfactual(...))")
    level = number("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    output_path("path", path)
    if title is not None and not isinstance(title, str):
        raise bad("title", title, "text or None")
    columns = _type_columns(fraction, cf.types)
    label = ("CD8 T-cell fraction" if fraction == "cd8"
             else f"{default_ontology().node(fraction).name} fraction")
    table = cf.table()
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2

    weeks = cf.days / 7.0
    d0 = cf.decision_day / 7.0
    obs_w = cf.observed_days / 7.0
    before = ~cf.observed_after
    obs_frac = cf.observed_composition[:, columns].sum(-1)  # NaN where no biopsy
    panels = [
        ("sum of diameters (mm)", cf.sod_mm, cf.observed_sod_mm),
        (label, cf.fraction(fraction), obs_frac),
    ]
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(2, 1, figsize=(9.0, 7.6), sharex=True, height_ratios=[3, 2])
    for ax, (ylabel, values, observed) in zip(axes, panels, strict=True):
        has = np.isfinite(observed)
        trunk = before & has
        # Branches start from the last observation before the decision in this panel.
        anchor = (obs_w[trunk][-1], observed[trunk][-1]) if trunk.any() else None
        for r, regimen in enumerate(cf.regimens):
            color = colors(r % 10)
            med = np.median(values[r], axis=0)
            lo = np.quantile(values[r], lo_q, axis=0)
            hi = np.quantile(values[r], hi_q, axis=0)
            x = weeks
            if anchor is not None:
                x = np.concatenate([[anchor[0]], weeks])
                med, lo, hi = (np.concatenate([[anchor[1]], v]) for v in (med, lo, hi))
            ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
            p = table.loc[regimen, "p_response"]
            text = f"{regimen}  (P(response) {p:.0%})" if np.isfinite(p) else regimen
            ax.plot(x, med, color=color, lw=2.0, label=text)
        ax.plot(obs_w[trunk], observed[trunk], color="black", lw=2.2, marker="o", ms=5,
                zorder=4, label="observed history (seen by the model)")
        after = cf.observed_after & has
        if after.any():
            ax.scatter(obs_w[after], observed[after], color="0.45", marker="D", s=26,
                       zorder=5, label=f"observed later, actual therapy ({cf.actual_regimen})")
        ax.axvline(d0, color="0.3", ls=":", lw=1.0)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.25)
    sod_ax, frac_ax = axes
    if np.isfinite(cf.baseline_sod_mm):
        sod_ax.axhline(RESPONSE_RATIO * cf.baseline_sod_mm, color="0.35", ls="--", lw=0.8,
                       label="response threshold (-30% of baseline)")
    sod_ax.set_ylim(bottom=0)
    frac_ax.set_ylim(bottom=0)
    sod_ax.text(d0, 1.0, " decision", transform=sod_ax.get_xaxis_transform(), va="top",
                ha="left", fontsize=8, color="0.3")
    frac_ax.set_xlabel("weeks since treatment start")
    sod_ax.set_title(f"median and {lo_q:.0%}-{hi_q:.0%} band of {cf.n_samples} world-model "
                     "samples per regimen", fontsize=9)
    handles, labels = sod_ax.get_legend_handles_labels()
    fig.suptitle(title if title is not None else
                 f"Patient {cf.patient_id} ({cf.cancer_type}): counterfactual regimens from "
                 f"day {cf.decision_day:g}", fontsize=11)
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", ncol=1, fontsize=8,
                        frameon=False, bbox_to_anchor=(0.5, 0.0))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------------------- helpers
def _plans(regimens: Any) -> list[RegimenPlan]:
    if isinstance(regimens, (str, RegimenPlan)):
        regimens = [regimens]
    try:
        items = list(regimens)
    except TypeError:
        raise ValidationError(f"regimens: got {regimens!r}; expected a list of regimen texts, "
                         "names or RegimenPlan") from None
    if not items:
        raise ValidationError("regimens: got an empty list; expected at least one regimen such "
                         "as 'anti_pd1' or 'none'")
    if len(items) > MAX_REGIMENS:
        raise bad("regimens", f"<{len(items)} regimens>", f"at most {MAX_REGIMENS} regimens")
    plans = [parse_plan(item, f"regimens[{i}]") for i, item in enumerate(items)]
    texts = [str(plan) for plan in plans]
    dup = sorted({t for t in texts if texts.count(t) > 1})
    if dup:
        raise ValidationError(f"regimens: {dup} listed twice; expected distinct regimens")
    return plans


def _timelines(history: Any) -> Timelines:
    from immunegym.world_model.timelines import Timelines, build_timelines

    if isinstance(history, Timelines):
        return history
    if isinstance(history, (str, bytes)) or hasattr(history, "__fspath__"):
        import anndata as ad

        file = Path(os.fsdecode(history))
        if not file.exists():
            raise HistoryNotFoundError(f"history: got {str(file)!r}; expected an .h5ad of a "
                                       "registered cohort (no such file)")
        history = ad.read_h5ad(existing_file("history", file, hdf5=True))
    if not hasattr(history, "obs") or not hasattr(history, "uns"):
        raise ValidationError(f"history: got {type(history).__name__}; expected an AnnData "
                         "registered with setup_anndata, a path to an .h5ad, or Timelines")
    return build_timelines(history)


def _patient_row(tl: Timelines, patient: str | None) -> int:
    ids = tl.patient_ids
    if not ids:
        raise ValidationError("history: holds no patients")
    if patient is None:
        if len(ids) > 1:
            raise ValidationError(f"patient: got None but the history holds {len(ids)} patients; "
                             f"expected one of their ids, e.g. {ids[:5]}")
        return 0
    if not isinstance(patient, str | int | np.integer) or isinstance(patient, bool):
        raise bad("patient", patient, "a patient id (text)")
    if str(patient) not in ids:
        tip = did_you_mean(patient, ids)
        raise bad("patient", patient, f"a patient id of the history ({len(ids)} patients, "
                  f"e.g. {ids[:5]}{' ...' if len(ids) > 5 else ''}){tip}")
    return ids.index(str(patient))


def _type_columns(which: str, types: Sequence[str]) -> list[int]:
    names = CD8_TYPES if which == "cd8" else (which,)
    missing = [n for n in names if n not in types]
    if missing:
        raise ValidationError(f"fraction: {which!r} is not a composition column; expected 'cd8' "
                         f"or one of {list(types)}")
    return [list(types).index(n) for n in names]


def _split_variance(values: np.ndarray, member: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(total, aleatoric, epistemic)`` variances over samples of ``(n_reg, S)`` values.

    Population variances with equal member weights: exact when every member has the same
    number of samples (as :func:`counterfactual` draws them).
    """
    values = np.asarray(values, dtype=np.float64)
    groups = [values[:, member == m] for m in np.unique(member)]
    means = np.stack([g.mean(1) for g in groups])  # (E, n_reg)
    within = np.stack([g.var(1) for g in groups])
    return values.var(1), within.mean(0), means.var(0)


def _jsonable(value: Any) -> Any:
    """Numbers and arrays as JSON (NaN and infinities as None)."""
    array = np.asarray(value)
    if array.dtype.kind == "f":
        return _nan_to_none(array.astype(np.float64).tolist())
    return array.tolist()


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value if math.isfinite(value) else None


def _unjson(value: Any) -> Any:
    """Inverse of :func:`_jsonable` for floats (None -> NaN)."""
    if value is None:
        return float("nan")
    if isinstance(value, list):
        return [_unjson(v) for v in value]
    return value
