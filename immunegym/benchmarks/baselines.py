"""Baseline forecasters of a tumor's composition and burden, for the world-model benchmark.

The first four see what the world model sees (observed timelines, never the hidden truth):

* :class:`Persistence`: the last observed composition and burden, held.
* :class:`RidgeDynamics`: per-type linear dynamics in centered log-ratio space,
  ``clr(x_{t+dt}) = W [clr(x_t), log burden, dt, doses, exposure, dt * doses] + b``, fitted by
  scikit-learn's ``RidgeCV`` on consecutive biopsy pairs and iterated one cycle at a time.
* :class:`CohortMean`: the training cohort's mean composition and burden at the same
  treatment cycle.
* :class:`HistoryMean`: an exponentially weighted mean of the patient's own biopsies and
  scans (time constant chosen on the training patients' next observations).

:class:`RidgeTruth` is a privileged reference: one ridge per horizon from the last
observation (and the doses ahead) to ImmuneSim's *true* composition and burden, fitted on the
training patients' hidden truth. A model that learns the state should reach it.

A sample labeled coarser than the fine types (a "Myeloid" block) is split over its leaves
in proportion to the training data's mean leaf fractions (:func:`within_block_prior`).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import RidgeCV

from immunegym.world_model.events import cumulative_dose, interval_dose, split_blocks
from immunegym.world_model.timelines import CYCLE_DAYS, Timelines, within_block_prior

CLR_EPS = 1e-3
"""Pseudo-count added before the log of centered log-ratios (a zero fraction stays finite)."""


def leaf_compositions(tl: Timelines, prior: np.ndarray) -> np.ndarray:
    """``(P, L, K)`` compositions with block mass split by ``prior`` (0 where no biopsy)."""
    return split_blocks(tl.counts.double(), tl.block, torch.as_tensor(prior)).numpy()


def clr(x: np.ndarray) -> np.ndarray:
    logx = np.log(x + CLR_EPS)
    return logx - logx.mean(-1, keepdims=True)


def inverse_clr(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def last_observed(tl: Timelines, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each patient's last observed composition ``(P, K)`` and ``log1p`` burden ``(P,)``.

    A patient with no scan yet gets the burden NaN.
    """
    comps = leaf_compositions(tl, prior)
    n_p = len(tl)
    comp_pos = _last_index(tl.comp_observed.numpy())
    burden_pos = _last_index(tl.burden_observed.numpy())
    comp = np.where(comp_pos[:, None] >= 0, comps[np.arange(n_p), comp_pos.clip(0)],
                    np.full_like(comps[:, 0], 1.0 / comps.shape[-1]))
    burden = np.where(burden_pos >= 0, tl.burden.numpy()[np.arange(n_p), burden_pos.clip(0)],
                      np.nan)
    return comp, burden


def _last_index(mask: np.ndarray) -> np.ndarray:
    idx = np.where(mask, np.arange(mask.shape[1])[None, :], -1)
    return idx.max(1)


class Persistence:
    """The last observation, held for every future step."""

    name = "persistence"

    def fit(self, tl: Timelines) -> Persistence:
        self.prior = within_block_prior(tl)
        self.mean_burden = float(tl.burden[tl.burden_observed].mean())
        return self

    def forecast(self, tl: Timelines, doses: np.ndarray, dt: float = CYCLE_DAYS
                 ) -> tuple[np.ndarray, np.ndarray]:
        """``(P, H, K)`` compositions and ``(P, H)`` log1p burden."""
        comp, burden = last_observed(tl, self.prior)
        burden = np.where(np.isnan(burden), self.mean_burden, burden)
        h = doses.shape[1]
        return np.repeat(comp[:, None], h, 1), np.repeat(burden[:, None], h, 1)


class CohortMean:
    """The training cohort's mean composition and burden by treatment cycle."""

    name = "cohort_mean"

    def fit(self, tl: Timelines) -> CohortMean:
        self.prior = within_block_prior(tl)
        comps = leaf_compositions(tl, self.prior)
        cycle = (tl.days.numpy() // CYCLE_DAYS).astype(int)
        n_c = int(cycle.max()) + 1
        self.comp = np.full((n_c, comps.shape[-1]), np.nan)
        self.burden = np.full(n_c, np.nan)
        obs = tl.comp_observed.numpy()
        b_obs = tl.burden_observed.numpy()
        for c in range(n_c):
            at = (cycle == c) & obs
            if at.any():
                self.comp[c] = comps[at].mean(0)
            at_b = (cycle == c) & b_obs
            if at_b.any():
                self.burden[c] = tl.burden.numpy()[at_b].mean()
        self.comp = _fill_nearest(self.comp)
        self.burden = _fill_nearest(self.burden[:, None])[:, 0]
        return self

    def forecast(self, tl: Timelines, doses: np.ndarray, dt: float = CYCLE_DAYS
                 ) -> tuple[np.ndarray, np.ndarray]:
        start = _last_day(tl)
        days = start[:, None] + dt * np.arange(1, doses.shape[1] + 1)[None, :]
        cycle = np.clip((days // CYCLE_DAYS).astype(int), 0, len(self.comp) - 1)
        return self.comp[cycle], self.burden[cycle]


def _fill_nearest(table: np.ndarray) -> np.ndarray:
    known = np.nonzero(~np.isnan(table).any(1))[0]
    out = table.copy()
    for row in range(len(table)):
        if row not in known:
            out[row] = table[known[np.argmin(np.abs(known - row))]]
    return out


def _last_day(tl: Timelines) -> np.ndarray:
    last = tl.valid.sum(1) - 1
    return tl.days[torch.arange(len(tl)), last].numpy()


def _features(comp: np.ndarray, burden: np.ndarray, dt: np.ndarray, dose: np.ndarray,
              exposure: np.ndarray) -> np.ndarray:
    step = (dt / CYCLE_DAYS)[:, None]
    return np.concatenate([clr(comp), burden[:, None], step, dose, np.log1p(exposure),
                           step * dose, clr(comp) * step], axis=1)


class RidgeDynamics:
    """Per-type ridge dynamics with therapy features, iterated one step at a time."""

    name = "ridge"
    alphas = (0.1, 1.0, 10.0, 100.0, 1000.0)

    def fit(self, tl: Timelines) -> RidgeDynamics:
        self.prior = within_block_prior(tl)
        comps = leaf_compositions(tl, self.prior)
        self.mean_burden = float(tl.burden[tl.burden_observed].mean())
        burden_known = _carry_forward_burden(tl, self.mean_burden)
        x_rows, y_comp, xb_rows, y_burden = [], [], [], []
        days = tl.days
        obs, b_obs = tl.comp_observed.numpy(), tl.burden_observed.numpy()
        for p in range(len(tl)):
            n = int(tl.valid[p].sum())
            for i in range(n):
                if not obs[p, i]:
                    continue
                for j in range(i + 1, n):
                    start, end = days[p:p + 1, i], days[p:p + 1, j]
                    dose = interval_dose(tl.cycle_doses[p:p + 1], start, end).numpy()
                    exposure = cumulative_dose(tl.cycle_doses[p:p + 1], start).numpy()
                    feats = _features(comps[p:p + 1, i], burden_known[p:p + 1, i],
                                      (end - start).numpy(), dose, exposure)
                    if obs[p, j]:
                        x_rows.append(feats)
                        y_comp.append(clr(comps[p:p + 1, j]))
                    if b_obs[p, j]:
                        xb_rows.append(feats)
                        y_burden.append(tl.burden.numpy()[p, j])
        self.comp_model = RidgeCV(alphas=self.alphas).fit(np.concatenate(x_rows),
                                                          np.concatenate(y_comp))
        self.burden_model = RidgeCV(alphas=self.alphas).fit(np.concatenate(xb_rows),
                                                            np.asarray(y_burden))
        return self

    def forecast(self, tl: Timelines, doses: np.ndarray, dt: float = CYCLE_DAYS
                 ) -> tuple[np.ndarray, np.ndarray]:
        comp, burden = last_observed(tl, self.prior)
        burden = np.where(np.isnan(burden), self.mean_burden, burden)
        day = torch.as_tensor(_last_day(tl))
        exposure = cumulative_dose(tl.cycle_doses, day[:, None])[:, 0].numpy()
        steps = np.full(len(tl), dt)
        comps, burdens = [], []
        for h in range(doses.shape[1]):
            feats = _features(comp, burden, steps, doses[:, h], exposure)
            comp = inverse_clr(self.comp_model.predict(feats))
            burden = self.burden_model.predict(feats)
            exposure = exposure + doses[:, h] * dt / CYCLE_DAYS
            comps.append(comp)
            burdens.append(burden)
        return np.stack(comps, 1), np.stack(burdens, 1)


def _carry_forward_burden(tl: Timelines, default: float) -> np.ndarray:
    """``(P, L)`` the latest scan's log1p burden at or before each point."""
    burden = tl.burden.numpy()
    obs = tl.burden_observed.numpy()
    out = np.full(burden.shape, default)
    for p in range(burden.shape[0]):
        current = default
        for i in range(burden.shape[1]):
            if obs[p, i]:
                current = burden[p, i]
            out[p, i] = current
    return out


class HistoryMean:
    """Exponentially weighted mean of the patient's past biopsies (in log-ratio space) and
    scans, held. The time constant minimizes the error on each training patient's next
    biopsy from the biopsies before it."""

    name = "history_mean"
    time_constants = (7.0, 21.0, 42.0, 84.0, 168.0, 365.0, 1e6)

    def fit(self, tl: Timelines) -> HistoryMean:
        self.prior = within_block_prior(tl)
        self.mean_burden = float(tl.burden[tl.burden_observed].mean())
        comps = leaf_compositions(tl, self.prior)
        obs = tl.comp_observed.numpy()
        days = tl.days.numpy()
        errors = {t: [] for t in self.time_constants}
        for p in range(len(tl)):
            idx = np.nonzero(obs[p])[0]
            for j in range(1, len(idx)):
                past, target = idx[:j], comps[p, idx[j]]
                for t in self.time_constants:
                    pred = _weighted(comps[p, past], days[p, past], days[p, idx[j]], t)
                    errors[t].append(np.abs(pred - target).sum())
        scores = {t: np.mean(v) if v else np.inf for t, v in errors.items()}
        self.time_constant = min(scores, key=scores.get)
        return self

    def forecast(self, tl: Timelines, doses: np.ndarray, dt: float = CYCLE_DAYS
                 ) -> tuple[np.ndarray, np.ndarray]:
        comps = leaf_compositions(tl, self.prior)
        obs, b_obs = tl.comp_observed.numpy(), tl.burden_observed.numpy()
        days, burden = tl.days.numpy(), tl.burden.numpy()
        last = _last_day(tl)
        out_c = np.zeros((len(tl), comps.shape[-1]))
        out_b = np.full(len(tl), self.mean_burden)
        for p in range(len(tl)):
            idx = np.nonzero(obs[p])[0]
            out_c[p] = (_weighted(comps[p, idx], days[p, idx], last[p], self.time_constant)
                        if len(idx) else 1.0 / comps.shape[-1])
            bi = np.nonzero(b_obs[p])[0]
            if len(bi):
                w = np.exp(-(last[p] - days[p, bi]) / self.time_constant)
                out_b[p] = float((w * burden[p, bi]).sum() / w.sum())
        h = doses.shape[1]
        return np.repeat(out_c[:, None], h, 1), np.repeat(out_b[:, None], h, 1)


def _weighted(comps: np.ndarray, days: np.ndarray, at: float, time_constant: float
              ) -> np.ndarray:
    """Exponentially weighted mean of compositions in centered log-ratio space."""
    w = np.exp(-(at - days) / time_constant)
    return inverse_clr((w[:, None] * clr(comps)).sum(0) / w.sum())


class RidgeTruth:
    """Privileged reference: per-horizon ridge from the last observation to the truth.

    ``fit(tl, truth_comp, truth_burden, horizons)`` takes the training patients' hidden
    daily truth (patient id -> ``(D, K)`` composition and ``(D,)`` log1p burden).
    """

    name = "ridge_truth"
    alphas = (0.1, 1.0, 10.0, 100.0, 1000.0)

    def fit(self, tl: Timelines, truth_comp: dict[str, np.ndarray],
            truth_burden: dict[str, np.ndarray], horizons: int) -> RidgeTruth:
        self.prior = within_block_prior(tl)
        self.mean_burden = float(tl.burden[tl.burden_observed].mean())
        self.models = []
        feats, targets_c, targets_b = self._rows(tl, truth_comp, truth_burden, horizons)
        for h in range(horizons):
            ok_c = ~np.isnan(targets_c[h]).any(1)
            ok_b = ~np.isnan(targets_b[h])
            comp = RidgeCV(alphas=self.alphas).fit(feats[h][ok_c], targets_c[h][ok_c])
            burden = RidgeCV(alphas=self.alphas).fit(feats[h][ok_b], targets_b[h][ok_b])
            self.models.append((comp, burden))
        return self

    def _features_at(self, tl: Timelines, day: np.ndarray, h: int) -> np.ndarray:
        """Features of every patient's history up to ``day`` for horizon ``h`` (1-based)."""
        ctx = tl.truncate(day)
        comp, burden = last_observed(ctx, self.prior)
        burden = np.where(np.isnan(burden), self.mean_burden, burden)
        start = torch.as_tensor(day, dtype=torch.float32)[:, None]
        dose = interval_dose(tl.cycle_doses, start, start + CYCLE_DAYS * h)[:, 0].numpy()
        exposure = cumulative_dose(tl.cycle_doses, start)[:, 0].numpy()
        return _features(comp, burden, np.full(len(tl), CYCLE_DAYS * h, float), dose, exposure)

    def _rows(self, tl, truth_comp, truth_burden, horizons):
        rows, days = np.nonzero((tl.comp_observed | tl.burden_observed).numpy())
        sub = tl.subset(rows)
        day = tl.days.numpy()[rows, days]
        ids = [tl.patient_ids[r] for r in rows]
        feats, targets_c, targets_b = [], [], []
        for h in range(1, horizons + 1):
            feats.append(self._features_at(sub, day, h))
            tc, tb = [], []
            for pid, d in zip(ids, day, strict=True):
                t = int(d) + CYCLE_DAYS * h
                comp, burden = truth_comp[pid], truth_burden[pid]
                if t < len(burden) and not np.isnan(burden[t]):
                    tc.append(clr(comp[t]))
                    tb.append(burden[t])
                else:
                    tc.append(np.full(comp.shape[-1], np.nan))
                    tb.append(np.nan)
            targets_c.append(np.stack(tc))
            targets_b.append(np.asarray(tb))
        return feats, targets_c, targets_b

    def forecast(self, tl: Timelines, doses: np.ndarray, dt: float = CYCLE_DAYS
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Forecasts from each history's last day (``doses`` sets the horizons only: the
        ridge reads the dose actually given from ``tl.cycle_doses``, as it was fitted)."""
        day = _last_day(tl)
        comps, burdens = [], []
        for h in range(1, doses.shape[1] + 1):
            comp_model, burden_model = self.models[min(h, len(self.models)) - 1]
            feats = self._features_at(tl, day, h)
            comps.append(inverse_clr(comp_model.predict(feats)))
            burdens.append(burden_model.predict(feats))
        return np.stack(comps, 1), np.stack(burdens, 1)


BASELINES = (Persistence, RidgeDynamics, CohortMean, HistoryMean)
"""The observation-only baselines (:class:`RidgeTruth` needs the truth and is separate)."""
