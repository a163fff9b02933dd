"""Reconstruction benchmark: a tumor's composition between sparse biopsies, against the truth.

A lab sees a patient's tumor at 2-6 biopsies over a year; the question is what the tumor
looked like in between. Every figure is judged against ImmuneSim's hidden daily composition
on held-out patients (``ctx.fresh``: the 14 default-suite cohorts regenerated with new
seeds, so the pretrained world model never saw them).

Protocol
--------
Leave one biopsy out (``tree_w1``)
    Every *interior* biopsy (the patient has an observed biopsy strictly before and strictly
    after it) is left out in turn and reconstructed by

    * ``world_model``: the smoother (:meth:`WorldModel.smooth
      <immunegym.world_model.WorldModel.smooth>`) over the patient's whole record with the
      left-out biopsy hidden (its day stays a point, with its scan if there was one): every
      other biopsy and scan, before and after, and the therapy given. The point prediction
      is the ensemble-mean state composition.
    * ``world_model_filter``: the filter only (every observation strictly before the day),
      carried ``dt`` days to the day by the dynamics under the dose actually given
      (:func:`~immunegym.world_model.events.interval_dose`): a forecast, not a
      reconstruction, kept to show what the future biopsies add.
    * ``linear_interpolation``: the biopsies immediately before and after, interpolated
      linearly in time in centered log-ratio space (:func:`clr_interpolate`).
    * ``nearest``: the biopsy nearest in time (ties: the earlier one).
    * ``last_biopsy``: the biopsy immediately before, carried forward. It sees what the
      world model sees minus the scans and the therapy, so ``world_model`` against
      ``last_biopsy`` is the like-for-like test of the learned dynamics.

    ``observed_biopsy`` is the left-out biopsy's own W1 to the truth: the floor set by
    sampling a few hundred cells and by the lab's labels. It is a reference, not a method.
Dense daily reconstruction (``dense``)
    For every held-out patient, every day strictly between its first and its last biopsy
    (every ``dense_every_days``-th day in ``--quick`` runs, counted from the first biopsy):
    the smoother's state at the last point strictly before the day (a biopsy taken on the
    day itself hidden) is carried to the day (``dt`` = days since that point, therapy as
    given); the baselines use the bracketing biopsies, never a biopsy taken that day.
    ``tree_w1_by_gap`` splits the days by the time since the last biopsy before them.

Days on or after a patient's death are not scored (ImmuneSim can place a biopsy of a
patient who dies in the first days on day 7 or 8); ``config.skipped_after_death`` counts
them.

Truth and metrics
-----------------
The truth is ImmuneSim's composition over the 20 fine types on the reconstructed day. The
metric is the tree-Wasserstein distance W1 on the cell ontology (unit edges,
:func:`immunegym.ontology.tree_wasserstein`). Samples a lab labeled coarsely (a "Myeloid"
block) are split over their leaves by the model's leaf prior (``WorldModel.leaf_prior``)
before the interpolants and ``observed_biopsy`` use them, as the baselines of ``bench
world-model`` do. Leave-one-out figures are means over left-out biopsies with a cluster
bootstrap over patients; dense figures are per-patient means over days, then a mean over
patients with a bootstrap over patients (days-since-biopsy bins: the same, within each bin).

Output
------
``tree_w1``: leave-one-out W1 per method and ``observed_biopsy`` with ``ci95``, ``n``
(left-out biopsies) and ``n_patients``; ``tree_w1_paired_difference``: world model minus
each baseline, paired per biopsy (negative: the world model is closer); ``dense``:
``tree_w1`` (``n_patients``, ``n_days``) and ``tree_w1_by_gap`` (one block per bin of
:data:`GAP_BINS`); ``example``: one patient's daily malignant and CD8 T cell fractions,
true and reconstructed, with its biopsies; ``config``; ``seconds``.

World-model queries share one smoother pass per patient record (one more per hidden biopsy);
a filter query equals ``WorldModel.predict`` on the history truncated at its point (tested).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from immunegym.benchmarks.baselines import CLR_EPS, clr, inverse_clr, leaf_compositions
from immunegym.benchmarks.common import (
    BenchContext,
    format_ci,
    mean_block,
    model_leaf_prior,
    torch_threads,
)
from immunegym.ontology import FINE_TYPES, tree_wasserstein
from immunegym.planning.counterfactuals import CD8_TYPES, MALIGNANT_TYPE
from immunegym.validation import ValidationError
from immunegym.world_model.events import interval_dose
from immunegym.world_model.model import WorldModel
from immunegym.world_model.timelines import Timelines

METHODS: tuple[str, ...] = ("world_model", "world_model_filter", "linear_interpolation",
                             "nearest", "last_biopsy")
"""The reconstruction methods, in report order."""

EXAMPLE_METHODS: tuple[str, ...] = ("world_model", "linear_interpolation", "nearest")
"""The methods drawn in the example patient's plot."""

GAP_BINS: tuple[tuple[int, float], ...] = ((1, 21), (22, 63), (64, 126), (127, math.inf))
"""Days-since-the-last-biopsy bins of the dense reconstruction (inclusive)."""

QUICK_DENSE_EVERY = 3
"""Dense reconstruction evaluates every 3rd day in ``--quick`` runs (every day otherwise)."""

QUERY_CHUNK = 512
"""World-model queries per batch."""


# --------------------------------------------------------------------------- interpolants
def clr_interpolate(x0: np.ndarray, x1: np.ndarray, weight: np.ndarray | float) -> np.ndarray:
    """Linear interpolation between compositions in centered log-ratio space.

    ``clr`` needs positive parts, so both ends are shifted by the pseudo-count of
    :func:`~immunegym.benchmarks.baselines.clr` (``x + e``), interpolated as
    ``inverse_clr((1 - w) clr(x0) + w clr(x1))``, and shifted back (``y (1 + K e) - e``,
    clipped at 0 and renormalized): the ends are reproduced exactly, a part absent at one
    end grows or decays geometrically in between, and the result stays on the simplex.

    Parameters
    ----------
    x0, x1
        ``(..., K)`` compositions (rows sum to 1) at weight 0 and weight 1.
    weight
        ``(...)`` position in ``[0, 1]`` (0: ``x0``, 1: ``x1``), e.g. ``(t - t0) / (t1 - t0)``.

    Returns
    -------
    numpy.ndarray
        ``(..., K)`` compositions.
    """
    x0, x1 = np.asarray(x0, dtype=float), np.asarray(x1, dtype=float)
    if x0.shape != x1.shape:
        raise ValidationError(f"x1: shape {x1.shape}; expected the shape of x0 {x0.shape}")
    for name, x in (("x0", x0), ("x1", x1)):
        if not np.all(np.isfinite(x)) or np.any(x < 0):
            raise ValidationError(f"{name}: expected finite, non-negative compositions")
    w = np.asarray(weight, dtype=float)
    if not np.all(np.isfinite(w)) or np.any((w < 0) | (w > 1)):
        raise ValidationError(f"weight: expected values in [0, 1], got {w.min()}..{w.max()}")
    x0 = x0 / np.clip(x0.sum(-1, keepdims=True), 1e-12, None)
    x1 = x1 / np.clip(x1.sum(-1, keepdims=True), 1e-12, None)
    w = w[..., None]
    y = inverse_clr((1.0 - w) * clr(x0) + w * clr(x1))
    x = np.clip(y * (1.0 + y.shape[-1] * CLR_EPS) - CLR_EPS, 0.0, None)
    return x / x.sum(-1, keepdims=True)


def nearest_is_next(day: np.ndarray, prev_day: np.ndarray, next_day: np.ndarray
                    ) -> np.ndarray:
    """True where the biopsy after ``day`` is strictly nearer than the one before it.

    Ties go to the earlier biopsy.
    """
    day, prev_day, next_day = (np.asarray(a, dtype=float) for a in (day, prev_day, next_day))
    return (next_day - day) < (day - prev_day)


# --------------------------------------------------------------------------- queries
@dataclass
class Queries:
    """Days to reconstruct, one row per (patient, day), with what each method may use.

    Attributes
    ----------
    row
        ``(N,)`` patient row in the timelines.
    day
        ``(N,)`` the day to reconstruct.
    position
        ``(N,)`` index of the patient's last time point (biopsy or scan) strictly before
        ``day``: the world model's history ends there.
    prev, next
        ``(N,)`` indices of the biopsies immediately before and after ``day`` (never a
        biopsy taken on ``day``).
    own
        ``(N,)`` index of the biopsy taken on ``day``; -1 where there is none.
    """

    row: np.ndarray
    day: np.ndarray
    position: np.ndarray
    prev: np.ndarray
    next: np.ndarray
    own: np.ndarray

    def __len__(self) -> int:
        return len(self.row)

    def gap(self, tl: Timelines) -> np.ndarray:
        """``(N,)`` days since the biopsy before."""
        return self.day - tl.days.numpy()[self.row, self.prev]


def _points(tl: Timelines, p: int) -> tuple[np.ndarray, np.ndarray]:
    n = int(tl.valid[p].sum())
    return tl.days[p, :n].numpy().astype(float), np.flatnonzero(tl.comp_observed[p, :n].numpy())


def _queries(rows: list, days: list, position: list, prev: list, nxt: list, own: list
             ) -> Queries:
    def ints(values: list) -> np.ndarray:
        return np.asarray(values, dtype=np.int64).reshape(-1)

    return Queries(ints(rows), np.asarray(days, dtype=float).reshape(-1), ints(position),
                   ints(prev), ints(nxt), ints(own))


def leave_one_out_queries(tl: Timelines) -> Queries:
    """Every interior biopsy of every patient (a biopsy before and after it), left out."""
    rows, days, position, prev, nxt, own = [], [], [], [], [], []
    for p in range(len(tl)):
        point_days, biopsies = _points(tl, p)
        for k in range(1, len(biopsies) - 1):
            b = biopsies[k]
            rows.append(p)
            days.append(point_days[b])
            position.append(b - 1)  # points have distinct days: the one before is b - 1
            prev.append(biopsies[k - 1])
            nxt.append(biopsies[k + 1])
            own.append(b)
    return _queries(rows, days, position, prev, nxt, own)


def dense_queries(tl: Timelines, every: int = 1, rows: Sequence[int] | None = None
                  ) -> Queries:
    """Every ``every``-th day strictly between each patient's first and last biopsy.

    Parameters
    ----------
    tl
        Observed timelines.
    every
        Day step, counted from the first biopsy (1: every day).
    rows
        Patient rows; all when ``None``.
    """
    if not isinstance(every, (int, np.integer)) or every < 1:
        raise ValidationError(f"every: expected a whole number of days >= 1, got {every!r}")
    parts: list[tuple[np.ndarray, ...]] = []
    for p in range(len(tl)) if rows is None else rows:
        point_days, biopsies = _points(tl, int(p))
        if len(biopsies) < 2:
            continue
        biopsy_days = point_days[biopsies]
        day = np.arange(biopsy_days[0] + every, biopsy_days[-1], every)
        # Biopsy days are interior here, so a biopsy lies strictly before and after each day.
        before = np.searchsorted(biopsy_days, day, side="left")  # first biopsy on/after day
        after = np.searchsorted(biopsy_days, day, side="right")  # first biopsy after day
        own = np.where(after > before, biopsies[before], -1)
        parts.append((np.full(len(day), int(p)), day,
                      np.searchsorted(point_days, day, side="left") - 1,
                      biopsies[before - 1], biopsies[after], own))
    if not parts:
        return _queries([], [], [], [], [], [])
    return Queries(*(np.concatenate(column).astype(float if i == 1 else np.int64)
                     for i, column in enumerate(zip(*parts, strict=True))))


# --------------------------------------------------------------------------- world model
def world_model_at(model: WorldModel, tl: Timelines, row: np.ndarray, position: np.ndarray,
                   dt: np.ndarray, doses: np.ndarray, *, hide: np.ndarray | None = None,
                   smooth: bool = True, chunk: int = QUERY_CHUNK) -> np.ndarray:
    """Ensemble-mean state composition ``dt`` days after point ``position`` of patient ``row``.

    With ``smooth`` the state at the point comes from the smoother (the patient's whole
    record, past and future, with the biopsy at point ``hide`` hidden: a left-out biopsy is
    never seen); otherwise from the filter (points ``0..position`` only). It is then carried
    ``dt`` days forward by the member's dynamics under ``doses`` (``dt`` = 0: the point
    itself).

    Parameters
    ----------
    model
        The world model.
    tl
        Observed timelines.
    row, position
        ``(N,)`` patient row and time-point index of each query.
    dt
        ``(N,)`` days ahead (>= 0).
    doses
        ``(N, R)`` dose intensity per therapy over each query's interval.
    hide
        ``(N,)`` index of a biopsy to hide from the smoother per query (-1: none).
    smooth
        Smoother (default) or filter.
    chunk
        Patient copies per batch.

    Returns
    -------
    numpy.ndarray
        ``(N, K)`` compositions.
    """
    from immunegym.world_model.fitting import advance

    model.check_timelines(tl)
    row = np.asarray(row, dtype=np.int64).reshape(-1)
    position = np.asarray(position, dtype=np.int64).reshape(-1)
    dt = np.asarray(dt, dtype=np.float64).reshape(-1)
    doses = np.asarray(doses, dtype=np.float64)
    n = len(row)
    hide = np.full(n, -1, np.int64) if hide is None else np.asarray(hide, np.int64).reshape(-1)
    n_r = len(model.config.therapies)
    if position.shape != (n,) or dt.shape != (n,) or hide.shape != (n,):
        raise ValidationError(f"position, dt, hide: expected {n} values each (one per query), got "
                         f"{position.shape[0]}, {dt.shape[0]} and {hide.shape[0]}")
    if n and (row.min() < 0 or row.max() >= len(tl)):
        raise ValidationError(f"row: expected patient rows in [0, {len(tl)}), got "
                         f"{row.min()}..{row.max()}")
    if n and (np.any(position < 0) or np.any(position >= tl.lengths.numpy()[row])):
        raise ValidationError("position: expected a time point of the patient (0 <= position < "
                         "its number of points)")
    if not np.all(np.isfinite(dt) & (dt >= 0)):
        raise ValidationError("dt: expected days >= 0")
    if doses.shape != (n, n_r) or not np.all(np.isfinite(doses)) or np.any(doses < 0):
        raise ValidationError(f"doses: expected ({n}, {n_r}) finite, non-negative intensities, "
                         f"got shape {doses.shape}")
    if chunk < 1:
        raise ValidationError(f"chunk: expected >= 1, got {chunk}")
    out = np.zeros((n, len(model.config.types)))
    if not n:
        return out
    if not smooth:
        hide = np.full(n, -1, np.int64)
    # One copy of a patient's record per distinct hidden biopsy.
    keys, copy = np.unique(np.stack([row, hide], 1), axis=0, return_inverse=True)
    copy = copy.reshape(-1)
    device = model.device
    with torch.no_grad():
        for start in range(0, len(keys), chunk):
            part = keys[start:start + chunk]
            sub = tl.subset(part[:, 0])
            masked = part[:, 1] >= 0
            if masked.any():
                r = torch.as_tensor(np.flatnonzero(masked))
                at = torch.as_tensor(part[masked, 1])
                sub.comp_observed[r, at] = False
                sub.counts[r, at] = 0.0
                sub.fractions[r, at] = 0.0
                sub.resolved[r, at] = False
            x = model.inputs(sub)
            queries = np.flatnonzero((copy >= start) & (copy < start + len(part)))
            local = torch.as_tensor(copy[queries] - start, device=device)
            pos = torch.as_tensor(position[queries], device=device)
            tau = torch.as_tensor(dt[queries] / 21.0, dtype=torch.float32, device=device)
            dose = torch.as_tensor(doses[queries], dtype=torch.float32, device=device)
            cancer = model.cancer_onehot(sub)[local]
            for module in model.members:
                state = module.smooth(x) if smooth else module.filter(x)
                z, c = state.z[local, pos], state.c[local, pos]
                z, _, _ = advance(module, z, c, tau, dose, cancer, max_substeps=64)
                comp = torch.softmax(module.composition_logits(z), -1)
                out[queries] += comp.double().cpu().numpy()
    return out / len(model.members)


def query_doses(tl: Timelines, queries: Queries, chunk: int = 8192) -> np.ndarray:
    """``(N, R)`` dose intensity actually given between each query's last point and its day."""
    days = tl.days.numpy()
    out = []
    for start in range(0, len(queries), chunk):
        s = slice(start, start + chunk)
        rows = torch.as_tensor(queries.row[s])
        begin = torch.as_tensor(days[queries.row[s], queries.position[s]], dtype=torch.float32)
        end = torch.as_tensor(queries.day[s], dtype=torch.float32)
        out.append(interval_dose(tl.cycle_doses[rows], begin, end).numpy())
    return (np.concatenate(out) if out
            else np.zeros((0, tl.cycle_doses.shape[-1]), dtype=np.float32))


def reconstruct(model: WorldModel, tl: Timelines, queries: Queries,
                comps: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every method's reconstruction of every query day.

    Parameters
    ----------
    model
        The world model (its leaf prior splits coarse samples for the interpolants).
    tl
        Observed timelines.
    queries
        The days to reconstruct.
    comps
        ``(P, L, K)`` leaf compositions of ``tl`` (computed when ``None``).

    Returns
    -------
    dict
        ``world_model``, ``linear_interpolation``, ``nearest``, ``last_biopsy`` and
        ``observed_biopsy`` (the biopsy taken that day; NaN where none): ``(N, K)`` each.
    """
    if comps is None:
        comps = leaf_compositions(tl, model_leaf_prior(model))
    days = tl.days.numpy().astype(float)
    q = queries
    prev_day, next_day = days[q.row, q.prev], days[q.row, q.next]
    x0, x1 = comps[q.row, q.prev], comps[q.row, q.next]
    weight = (q.day - prev_day) / (next_day - prev_day)
    dt = q.day - days[q.row, q.position]
    take_next = nearest_is_next(q.day, prev_day, next_day)
    observed = np.where((q.own >= 0)[:, None], comps[q.row, np.maximum(q.own, 0)], np.nan)
    doses = query_doses(tl, q)
    # The smoother reads the left-out (or same-day) biopsy's own point when it has one,
    # with that biopsy hidden; other days are carried from the last point before them.
    at_own = q.own >= 0
    position = np.where(at_own, q.own, q.position)
    smooth_dt = np.where(at_own, 0.0, dt)
    return {
        "world_model": world_model_at(model, tl, q.row, position, smooth_dt, doses,
                                      hide=q.own, smooth=True),
        "world_model_filter": world_model_at(model, tl, q.row, q.position, dt, doses,
                                             smooth=False),
        "linear_interpolation": clr_interpolate(x0, x1, weight),
        "nearest": np.where(take_next[:, None], x1, x0),
        "last_biopsy": x0,
        "observed_biopsy": observed,
    }


def _w1(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """W1 per row; NaN where ``pred`` is missing."""
    ok = np.isfinite(pred).all(-1)
    out = np.full(len(pred), np.nan)
    if ok.any():
        out[ok] = tree_wasserstein(np.clip(pred[ok], 0.0, None) + 1e-12, truth[ok])
    return out


# --------------------------------------------------------------------------- one cohort
@dataclass
class CohortTask:
    """One held-out cohort's work: its timelines, its truth and the settings."""

    model: WorldModel
    timelines: Timelines
    truth: np.ndarray  # (P, D, K) true composition, rows as the timelines
    alive: np.ndarray  # (P, D)
    dense_every: int
    threads: int | None = None


def evaluate_cohort(task: CohortTask) -> dict[str, Any]:
    """Leave-one-biopsy-out and dense W1 of every method on one cohort (a map item).

    Returns
    -------
    dict
        ``lobo`` and ``dense``: ``patient`` (ids), ``day``, ``gap`` (days since the biopsy
        before) and ``w1`` (method -> values) per reconstructed day, and
        ``skipped_after_death`` (days on or after the patient's death, not scored).
    """
    torch_threads(task.threads)
    tl, model = task.timelines, task.model
    comps = leaf_compositions(tl, model_leaf_prior(model))
    ids = np.asarray(tl.patient_ids, dtype=object)
    out: dict[str, Any] = {}
    for name, queries in (("lobo", leave_one_out_queries(tl)),
                          ("dense", dense_queries(tl, task.dense_every))):
        day = queries.day.astype(np.int64)
        # ImmuneSim can place a biopsy of a patient who died in the first days on day 7-8;
        # there is no living tumor to reconstruct then, so such days are skipped (counted).
        alive = (day < task.alive.shape[1]) & task.alive[
            queries.row, np.minimum(day, task.alive.shape[1] - 1)]
        skipped = int((~alive).sum())
        queries = Queries(*(v[alive] for v in vars(queries).values()))
        day = day[alive]
        truth = task.truth[queries.row, day]
        recon = reconstruct(model, tl, queries, comps)
        methods = (*METHODS, "observed_biopsy") if name == "lobo" else METHODS
        out[name] = {"patient": ids[queries.row], "day": queries.day,
                     "gap": queries.gap(tl),
                     "w1": {m: _w1(recon[m], truth) for m in methods},
                     "skipped_after_death": skipped}
    return out


def cohort_tasks(ctx: BenchContext, dense_every: int) -> list[CohortTask]:
    """One :class:`CohortTask` per held-out cohort, its truth aligned to its timeline rows."""
    tl_all = ctx.fresh_timelines
    cohort_of = tl_all.patients["cohort"].astype(str).to_numpy()
    tasks = []
    for held in ctx.fresh:
        rows = np.flatnonzero(cohort_of == held.spec.name)
        tl = tl_all.subset(rows)
        column = {pid: i for i, pid in enumerate(held.truth.patient_ids)}
        order = np.asarray([column[pid] for pid in tl.patient_ids])
        truth = np.moveaxis(np.asarray(held.truth.composition, dtype=np.float64), 1, 0)[order]
        alive = np.asarray(held.truth.alive, dtype=bool).T[order]
        tasks.append(CohortTask(ctx.model, tl, truth, alive, dense_every,
                                threads=1 if ctx.ray else None))
    return tasks


# --------------------------------------------------------------------------- run
def _per_patient(values: np.ndarray, patients: np.ndarray) -> np.ndarray:
    """Mean of ``values`` per patient (patients in sorted order)."""
    _, inverse = np.unique(patients, return_inverse=True)
    return np.bincount(inverse, weights=values) / np.bincount(inverse)


def _dense_block(w1: dict[str, np.ndarray], patients: np.ndarray, seed: int
                 ) -> dict[str, Any]:
    per_patient = {m: _per_patient(v, patients) for m, v in w1.items()}
    block = mean_block(per_patient, seed=seed)
    block["n_patients"] = block.pop("n")
    block["n_days"] = int(len(patients))
    return block


def _gap_label(lo: int, hi: float) -> str:
    return f">{lo - 1}" if math.isinf(hi) else f"{lo}-{int(hi)}"


def run(ctx: BenchContext) -> dict[str, Any]:
    """The ``reconstruction`` section (see the module docstring for the protocol)."""
    start = time.perf_counter()
    dense_every = QUICK_DENSE_EVERY if ctx.quick else 1
    tasks = cohort_tasks(ctx, dense_every)
    data_seconds = time.perf_counter() - start
    t0 = time.perf_counter()
    if ctx.ray:
        results = ctx.map(evaluate_cohort, tasks)
    else:
        results = []
        for task in tasks:
            results.append(evaluate_cohort(task))
            ctx.progress(f"reconstruction: {task.timelines.patients['cohort'].iloc[0]}")
    eval_seconds = time.perf_counter() - t0

    def joined(name: str) -> dict[str, Any]:
        parts = [r[name] for r in results]
        return {"patient": np.concatenate([p["patient"] for p in parts]),
                "day": np.concatenate([p["day"] for p in parts]),
                "gap": np.concatenate([p["gap"] for p in parts]),
                "w1": {m: np.concatenate([p["w1"][m] for p in parts])
                       for m in parts[0]["w1"]}}

    lobo, dense = joined("lobo"), joined("dense")
    seed = ctx.seed
    tree_w1 = mean_block(lobo["w1"], lobo["patient"], seed=seed)
    tree_w1["n_patients"] = int(len(np.unique(lobo["patient"])))
    differences = {f"world_model_minus_{m}": lobo["w1"]["world_model"] - lobo["w1"][m]
                   for m in METHODS[1:]}
    paired = mean_block(differences, lobo["patient"], seed=seed)

    by_gap: dict[str, Any] = {}
    for lo, hi in GAP_BINS:
        inside = (dense["gap"] >= lo) & (dense["gap"] <= hi)
        if inside.any():
            by_gap[_gap_label(lo, hi)] = _dense_block(
                {m: v[inside] for m, v in dense["w1"].items()}, dense["patient"][inside], seed)
    dense_section = {"tree_w1": _dense_block(dense["w1"], dense["patient"], seed),
                     "tree_w1_by_gap": by_gap}

    t1 = time.perf_counter()
    example = _example(ctx, tasks)
    example_seconds = time.perf_counter() - t1
    n_patients = [len(t.timelines) for t in tasks]
    return {
        "tree_w1": tree_w1,
        "tree_w1_paired_difference": paired,
        "dense": dense_section,
        "example": example,
        "config": {
            "held_out": "ctx.fresh: the default suite's cohorts with new seeds",
            "n_cohorts": len(tasks), "n_patients": int(sum(n_patients)),
            "patients_per_cohort": sorted(set(n_patients)),
            "dense_every_days": dense_every, "gap_bins_days": [
                _gap_label(lo, hi) for lo, hi in GAP_BINS],
            "world_model_members": len(ctx.model.members),
            "leaf_prior": "model" if ctx.model.leaf_prior() is not None else "even",
            "clr_pseudocount": CLR_EPS, "bootstrap": "over patients, 1000 resamples",
            "seed": seed, "quick": ctx.quick, "ray": ctx.ray,
            "skipped_after_death": {name: int(sum(r[name]["skipped_after_death"]
                                                  for r in results))
                                    for name in ("lobo", "dense")},
        },
        "metric": "tree-Wasserstein W1 on the cell ontology (unit edges) vs ImmuneSim's true "
                  "composition on the reconstructed day",
        "seconds": time.perf_counter() - start,
        "seconds_detail": {"timelines_and_truth": data_seconds, "evaluate": eval_seconds,
                           "example": example_seconds},
    }


def _example(ctx: BenchContext, tasks: list[CohortTask]) -> dict[str, Any]:
    """One patient's daily course: truth and every method, for the report's plot.

    Every day between the first and the last biopsy except the biopsy days themselves (the
    plot shows the biopsies there).

    The patient with the most biopsies (then the longest span between the first and the
    last; then the first in cohort order) among treated patients when there are any.
    """
    best, best_key = None, None
    for t, task in enumerate(tasks):
        tl = task.timelines
        treated = tl.cycle_doses.sum((1, 2)).numpy() > 0
        for p in range(len(tl)):
            days, biopsies = _points(tl, p)
            if len(biopsies) < 3:
                continue
            key = (bool(treated[p]), len(biopsies), days[biopsies[-1]] - days[biopsies[0]])
            if best_key is None or key > best_key:
                best, best_key = (t, p), key
    if best is None:
        return {}
    task, row = tasks[best[0]], best[1]
    tl, p = task.timelines.subset([row]), 0
    queries = dense_queries(tl, 1)
    queries = Queries(*(v[queries.own < 0] for v in vars(queries).values()))  # biopsy days:
    recon = reconstruct(task.model, tl, queries)  # the dots, not a method's spike
    point_days, biopsies = _points(tl, p)
    comps = leaf_compositions(tl, model_leaf_prior(task.model))[0]
    last = int(point_days[biopsies[-1]])
    mal = [FINE_TYPES.index(MALIGNANT_TYPE)]
    cd8 = [FINE_TYPES.index(t) for t in CD8_TYPES]

    def fractions(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"malignant": x[..., mal].sum(-1), "cd8": x[..., cd8].sum(-1)}

    truth_days = np.arange(0, min(last + 21, task.truth.shape[1]))
    alive = task.alive[row, truth_days]
    truth_days = truth_days[alive]
    return {
        "patient_id": tl.patient_ids[p],
        "cohort": str(tl.patients["cohort"].iloc[p]),
        "regimen": str(tl.patients["regimen"].iloc[p]),
        "truth_days": truth_days,
        "truth": fractions(task.truth[row, truth_days]),
        "days": queries.day,
        **{m: fractions(recon[m]) for m in EXAMPLE_METHODS},
        "biopsy_days": point_days[biopsies],
        "biopsy": fractions(comps[biopsies]),
    }


# --------------------------------------------------------------------------- report
def _fmt(block: dict[str, Any], method: str) -> str:
    return format_ci(block.get(method), (block.get("ci95") or {}).get(method))


def report(section: dict[str, Any], out: Path) -> str:
    """Markdown for the reconstruction section; writes its two plots into ``out``."""
    out = Path(out)
    lobo = section.get("tree_w1", {})
    dense = section.get("dense", {}).get("tree_w1", {})
    config = section.get("config", {})
    every = config.get("dense_every_days", 1)
    lines = [
        "## Trajectory reconstruction from sparse biopsies",
        "",
        "How well is a tumor's composition known between biopsies? On held-out patients "
        f"({config.get('n_patients', '?')} in {config.get('n_cohorts', '?')} fresh cohorts), "
        "each interior biopsy is left out in turn and reconstructed by the world model's "
        "smoother (the patient's whole record with that biopsy hidden: every other biopsy "
        "and scan, before and after, and the therapy given), by its filter alone (every "
        "observation before the day, carried forward under the therapy given), by linear "
        "interpolation of the neighbouring biopsies in centered log-ratio space, and by the "
        "nearest biopsy; carrying the last biopsy forward is the baseline that sees what the "
        "filter sees (minus scans and therapy). The dense task reconstructs "
        + ("every day" if every == 1 else f"one day in {every}")
        + " between a patient's first and last biopsy the same way. Error is tree-Wasserstein "
        "W1 on the cell ontology against ImmuneSim's true composition (lower is better); "
        "*observed biopsy* is the left-out sample's own error, the floor set by sampling and "
        "labeling. The smoother, interpolation and nearest see the next biopsy; the filter and "
        "the last biopsy only the past. 95% bootstrap intervals over patients.",
        "",
        "| method | leave one biopsy out | dense daily |",
        "|---|---|---|",
    ]
    for method in (*METHODS, "observed_biopsy"):
        dense_cell = _fmt(dense, method) if method in dense else "-"
        lines.append(f"| {method.replace('_', ' ')} | {_fmt(lobo, method)} | {dense_cell} |")
    lines += ["", f"Leave-one-out: {lobo.get('n', 0)} biopsies of {lobo.get('n_patients', 0)} "
              f"patients. Dense: {dense.get('n_days', 0)} days of "
              f"{dense.get('n_patients', 0)} patients (per-patient means).", ""]
    paired = section.get("tree_w1_paired_difference", {})
    if paired:
        cells = [f"{k.replace('world_model_minus_', 'vs ').replace('_', ' ')}: "
                 f"{_fmt(paired, k)}" for k in paired if k not in ("ci95", "n")]
        lines += ["World model minus baseline, paired per biopsy (negative: the world model "
                  "is closer): " + "; ".join(cells) + ".", ""]
    by_gap = section.get("dense", {}).get("tree_w1_by_gap", {})
    if by_gap:
        lines += ["| days since last biopsy | " + " | ".join(m.replace("_", " ")
                                                         for m in METHODS) + " | patients |",
                  "|---|" + "---|" * (len(METHODS) + 1)]
        for label, block in by_gap.items():
            lines.append(f"| {label} | " + " | ".join(_fmt(block, m) for m in METHODS)
                         + f" | {block.get('n_patients', 0)} |")
        lines.append("")
        gap_png = _plot_by_gap(by_gap, out / "reconstruction_w1_by_gap.png")
        lines += [f"![W1 by days since the last biopsy]({gap_png.name})", ""]
    example = section.get("example") or {}
    if example:
        png = _plot_example(example, out / "reconstruction_example.png")
        lines += [f"Example patient `{example['patient_id']}` ({example['regimen']}): true "
                  "and reconstructed malignant and CD8 T cell fractions; dots are its "
                  "biopsies.", "", f"![Example reconstruction]({png.name})", ""]
    return "\n".join(lines)


_COLORS = {"world_model": "tab:blue", "world_model_filter": "tab:cyan",
           "linear_interpolation": "tab:orange", "nearest": "tab:green",
           "last_biopsy": "tab:gray"}


def _plot_by_gap(by_gap: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from immunegym._atomic import atomic_path

    labels = list(by_gap)
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    width = 0.8 / len(METHODS)
    for i, method in enumerate(METHODS):
        values = [by_gap[b].get(method) for b in labels]
        cis = [(by_gap[b].get("ci95") or {}).get(method) or [None, None] for b in labels]
        x = np.arange(len(labels)) + (i - (len(METHODS) - 1) / 2) * width
        y = np.array([np.nan if v is None else v for v in values], dtype=float)
        lo = np.array([np.nan if c[0] is None else c[0] for c in cis], dtype=float)
        hi = np.array([np.nan if c[1] is None else c[1] for c in cis], dtype=float)
        ax.bar(x, y, width, color=_COLORS[method], label=method.replace("_", " "))
        ax.errorbar(x, y, yerr=[np.nan_to_num(y - lo), np.nan_to_num(hi - y)], fmt="none",
                    ecolor="black", capsize=2, linewidth=0.8)
    ax.set_xticks(np.arange(len(labels)), labels)
    ax.set_xlabel("days since the last biopsy")
    ax.set_ylabel("tree-Wasserstein W1 (lower is better)")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130)
    plt.close(fig)
    return path


def _plot_example(example: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from immunegym._atomic import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.6), sharex=True)
    for ax, key, title in zip(axes, ("malignant", "cd8"),
                              ("malignant fraction", "CD8 T cell fraction"), strict=True):
        ax.plot(example["truth_days"], example["truth"][key], color="black", linewidth=2,
                label="truth (ImmuneSim)")
        for method in EXAMPLE_METHODS:
            ax.plot(example["days"], example[method][key], color=_COLORS[method],
                    linewidth=1.2, label=method.replace("_", " "))
        ax.scatter(example["biopsy_days"], example["biopsy"][key], color="black", zorder=5,
                   s=25, marker="o", facecolors="white", label="biopsies")
        for day in example["biopsy_days"]:
            ax.axvline(day, color="grey", linewidth=0.5, linestyle=":")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("day")
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle(f"{example['patient_id']} ({example['regimen']})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130)
    plt.close(fig)
    return path


__all__ = ["GAP_BINS", "METHODS", "CohortTask", "Queries", "clr_interpolate", "cohort_tasks",
           "dense_queries", "evaluate_cohort", "leave_one_out_queries", "nearest_is_next",
           "query_doses", "reconstruct", "report", "run", "world_model_at"]
