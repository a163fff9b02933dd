"""Baseline forecasters of a tumor's composition and burden, for the world-model benchmark.

All three see what the world model sees (observed timelines, never the hidden truth):

* :class:`Persistence`: the last observed composition and burden, held.
* :class:`RidgeDynamics`: per-type linear dynamics in centered log-ratio space,
  ``clr(x_{t+dt}) = W [clr(x_t), log burden, dt, doses, exposure, dt * doses] + b``, fitted by
  scikit-learn's ``RidgeCV`` on consecutive biopsy pairs and iterated one cycle at a time.
* :class:`CohortMean`: the training cohort's mean composition and burden at the same
  treatment cycle.

A sample labeled coarser than the fine types (a "Myeloid" block) is split over its leaves
in proportion to the training data's mean leaf fractions (:func:`within_block_prior`).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import RidgeCV

from immunegym.world_model.batching import cumulative_dose, interval_dose, split_blocks
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


BASELINES = (Persistence, RidgeDynamics, CohortMean)
