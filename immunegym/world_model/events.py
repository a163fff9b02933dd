"""From registered timelines to the latent model's per-point inputs.

The therapy record is per 21-day cycle. A cycle's dose is spread evenly over its days, so
the dose intensity over any interval ``(a, b]`` and the cumulative exposure at a day are
differences of one piecewise-linear function (:func:`cumulative_dose`); irregular biopsy
days and cycle-aligned rollout steps use the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from immunegym.validation import ValidationError
from immunegym.world_model.latent import LOG_EPS, EventInputs
from immunegym.world_model.timelines import CYCLE_DAYS, Timelines

UNKNOWN_LABS: tuple[str, ...] = ("unknown", "fractions")
"""Lab names read as "no known labeling bias" (a user's table, deconvolved fractions)."""


def cumulative_dose(cycle_doses: torch.Tensor, days: torch.Tensor) -> torch.Tensor:
    """``(P, ..., R)`` standard cycles of each therapy given up to each day.

    ``cycle_doses`` is ``(P, C, R)``; ``days`` is ``(P, ...)``.
    """
    starts = torch.arange(cycle_doses.shape[1], device=days.device,
                          dtype=days.dtype) * CYCLE_DAYS
    share = ((days.unsqueeze(-1) - starts) / CYCLE_DAYS).clamp(0.0, 1.0)  # (P, ..., C)
    flat = share.reshape(share.shape[0], -1, share.shape[-1])
    out = torch.bmm(flat, cycle_doses.to(days.dtype))
    return out.reshape(*days.shape, cycle_doses.shape[-1])


def interval_dose(cycle_doses: torch.Tensor, start: torch.Tensor,
                  end: torch.Tensor) -> torch.Tensor:
    """Dose intensity (standard cycles per 21 days) over ``(start, end]``; 0 if empty."""
    amount = cumulative_dose(cycle_doses, end) - cumulative_dose(cycle_doses, start)
    width = ((end - start) / CYCLE_DAYS).unsqueeze(-1)
    return torch.where(width > 0, amount / width.clamp_min(1e-6), torch.zeros_like(amount))


def split_blocks(counts: torch.Tensor, block: torch.Tensor, prior: torch.Tensor
                 ) -> torch.Tensor:
    """``(..., K)`` leaf fractions with each block's mass split in proportion to ``prior``."""
    weight = prior.to(counts.dtype).expand_as(counts)
    block_weight = torch.zeros_like(counts).scatter_add_(-1, block, weight)
    mass = torch.gather(counts, -1, block) * weight / torch.gather(block_weight, -1, block)
    total = mass.sum(-1, keepdim=True)
    return torch.where(total > 0, mass / total.clamp_min(1e-12), torch.zeros_like(mass))


def lab_indices(labs: Sequence[str], known: Sequence[str]) -> torch.Tensor:
    """``(P,)`` index of each patient's lab in ``known``; ``len(known)`` for an unknown lab.

    Raises
    ------
    ValueError
        For a lab that is neither known to the model nor one of :data:`UNKNOWN_LABS`.
    """
    index = {name: i for i, name in enumerate(known)}
    out = []
    for lab in labs:
        lab = str(lab)
        if lab in index:
            out.append(index[lab])
        elif lab in UNKNOWN_LABS:
            out.append(len(known))
        else:
            raise ValidationError(
                f"lab: {lab!r} is not a lab this model has seen ({list(known)}); set the "
                f"patients' lab to 'unknown' to read it without a labeling bias, or fine-tune "
                "the model on that lab's data (WorldModel.fit_observations)")
    return torch.tensor(out, dtype=torch.long)


def event_inputs(tl: Timelines, labs: Sequence[str], cancer: torch.Tensor,
                 prior: torch.Tensor | None = None) -> EventInputs:
    """Per-point inputs of every patient in ``tl``.

    Parameters
    ----------
    tl
        Observed timelines.
    labs
        The labs the model knows (one-hot and a learned labeling bias each).
    cancer
        ``(P, C)`` one-hot cancer type (``C`` may be 0).
    prior
        ``(K,)`` within-block split prior for coarse labels (evenly when ``None``).
    """
    k = tl.counts.shape[-1]
    if prior is None:
        fractions = tl.fractions
    else:
        fractions = split_blocks(tl.counts, tl.block, prior.to(tl.counts.device))
    log_f = torch.log(fractions + LOG_EPS)
    clr = (log_f - log_f.mean(-1, keepdim=True)) * tl.comp_observed.unsqueeze(-1)
    n_cells = torch.log1p(tl.counts.sum(-1)) / 8.0
    comp_obs = tl.comp_observed.float()
    burden_obs = tl.burden_observed.float()
    obs = torch.cat([clr, (tl.resolved & tl.comp_observed.unsqueeze(-1)).float(),
                     comp_obs.unsqueeze(-1), (n_cells * comp_obs).unsqueeze(-1),
                     (tl.burden * burden_obs).unsqueeze(-1) / 5.0,
                     burden_obs.unsqueeze(-1)], -1)
    days = tl.days
    previous = torch.cat([days[:, :1], days[:, :-1]], 1)
    gap = (days - previous) / CYCLE_DAYS
    dose = interval_dose(tl.cycle_doses, previous, days) * gap.unsqueeze(-1)
    exposure = cumulative_dose(tl.cycle_doses, days)
    time = torch.cat([gap.unsqueeze(-1), dose, torch.log1p(exposure),
                      (days / 365.0).unsqueeze(-1)], -1) * tl.valid.unsqueeze(-1)
    index = lab_indices(tl.patients["lab"].tolist(), labs).to(days.device)
    onehot = torch.zeros(len(tl), len(labs) + 1, device=days.device)
    onehot[torch.arange(len(tl)), index] = 1.0
    assert obs.shape[-1] == 2 * k + 4
    return EventInputs(obs=obs * tl.valid.unsqueeze(-1), time=time, lab=onehot[:, :len(labs)],
                       lab_index=index, cancer=cancer.to(days.device), valid=tl.valid)


def grid_doses(cycle_doses: torch.Tensor, origin_days: torch.Tensor, horizons: int
               ) -> torch.Tensor:
    """``(P, L, H, R)`` dose intensity in each 21-day step after each origin day ``(P, L)``."""
    offsets = torch.arange(horizons + 1, dtype=origin_days.dtype,
                           device=origin_days.device) * CYCLE_DAYS
    edges = origin_days.unsqueeze(-1) + offsets  # (P, L, H + 1)
    return interval_dose(cycle_doses, edges[..., :-1], edges[..., 1:])


def mask_points(x: EventInputs, keep_composition: torch.Tensor, keep_burden: torch.Tensor,
                n_types: int) -> EventInputs:
    """``x`` with the biopsy (``keep_composition`` False) or scan dropped at some points."""
    k = n_types
    obs = x.obs.clone()
    comp = keep_composition.unsqueeze(-1).float()
    obs[..., :2 * k + 2] = obs[..., :2 * k + 2] * comp
    burden = keep_burden.unsqueeze(-1).float()
    obs[..., 2 * k + 2:] = obs[..., 2 * k + 2:] * burden
    return EventInputs(obs, x.time, x.lab, x.lab_index, x.cancer, x.valid)


def index_inputs(x: EventInputs, rows: torch.Tensor | np.ndarray) -> EventInputs:
    """The inputs of ``rows``."""
    rows = torch.as_tensor(rows, device=x.obs.device)
    return EventInputs(x.obs[rows], x.time[rows], x.lab[rows], x.lab_index[rows],
                       x.cancer[rows], x.valid[rows])
