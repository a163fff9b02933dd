"""From registered timelines to the module's token inputs, and back from its predictions.

The therapy record is per 21-day cycle. A cycle's dose is spread evenly over its days, so
the dose intensity over any interval ``(a, b]`` and the cumulative exposure at a day are
differences of one piecewise-linear function (:func:`cumulative_dose`); irregular biopsy
days and cycle-aligned rollout steps use the same arithmetic.
"""

from __future__ import annotations

import torch

from immunegym.world_model.module import LOG_EPS, TokenInputs
from immunegym.world_model.timelines import CYCLE_DAYS, Timelines


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


def block_log_mass(counts: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """``(..., K)`` log fraction of the block each leaf belongs to."""
    total = counts.sum(-1, keepdim=True).clamp_min(1.0)
    return torch.log(torch.gather(counts, -1, block) / total + LOG_EPS)


def split_blocks(counts: torch.Tensor, block: torch.Tensor, prior: torch.Tensor
                 ) -> torch.Tensor:
    """``(..., K)`` leaf fractions with each block's mass split in proportion to ``prior``."""
    weight = prior.to(counts.dtype).expand_as(counts)
    block_weight = torch.zeros_like(counts).scatter_add_(-1, block, weight)
    mass = torch.gather(counts, -1, block) * weight / torch.gather(block_weight, -1, block)
    total = mass.sum(-1, keepdim=True)
    return torch.where(total > 0, mass / total.clamp_min(1e-12), torch.zeros_like(mass))


def timeline_inputs(tl: Timelines, cancer: torch.Tensor,
                    prior: torch.Tensor | None = None) -> TokenInputs:
    """Token inputs of every time point, with the real next interval filled in.

    ``cancer`` is the ``(P, C)`` one-hot cancer type (``C`` may be 0). ``prior`` (``(K,)``)
    splits the mass of coarse blocks over their leaves (evenly when ``None``). The last
    point of each patient gets ``next_dt = 0`` and no dose; a query fills them
    (:func:`set_query`).
    """
    days = tl.days
    next_days = torch.cat([days[:, 1:], days[:, -1:]], dim=1)
    has_next = torch.cat([tl.valid[:, 1:], torch.zeros_like(tl.valid[:, :1])], dim=1)
    next_days = torch.where(has_next, next_days, days)
    fractions = tl.fractions if prior is None else split_blocks(tl.counts, tl.block, prior)
    return TokenInputs(
        fractions=fractions,
        resolved=tl.resolved,
        block_log_mass=block_log_mass(tl.counts, tl.block),
        programs=tl.program_scores,
        program_mask=tl.program_mask,
        comp_observed=tl.comp_observed,
        burden=tl.burden,
        burden_observed=tl.burden_observed,
        predicted=torch.zeros_like(tl.valid),
        days=days,
        next_dt=next_days - days,
        next_dose=interval_dose(tl.cycle_doses, days, next_days),
        exposure=cumulative_dose(tl.cycle_doses, days),
        cancer=cancer,
    )


def _at(position: torch.Tensor, n_l: int) -> torch.Tensor:
    """``(B, L)`` one-hot of a per-patient position."""
    return torch.nn.functional.one_hot(position, n_l).bool()


def set_query(x: TokenInputs, position: torch.Tensor, dt: torch.Tensor,
              dose: torch.Tensor) -> TokenInputs:
    """Ask for the state ``dt`` days after point ``position`` under ``dose`` (``(B, R)``)."""
    at = _at(position, x.days.shape[1])
    return _replace(x, next_dt=torch.where(at, dt.unsqueeze(1), x.next_dt),
                    next_dose=torch.where(at.unsqueeze(-1), dose.unsqueeze(1), x.next_dose))


def write_point(x: TokenInputs, position: torch.Tensor, composition: torch.Tensor,
                burden: torch.Tensor, active: torch.Tensor | None = None) -> TokenInputs:
    """Overwrite point ``position`` with a predicted state (fully observed, flagged).

    Gradients flow through ``composition`` and ``burden``. Rows where ``active`` is False
    are left unchanged.
    """
    at = _at(position, x.days.shape[1])
    if active is not None:
        at = at & active.unsqueeze(1)
    at_k = at.unsqueeze(-1)
    comp = composition.unsqueeze(1)
    return _replace(
        x,
        fractions=torch.where(at_k, comp, x.fractions),
        resolved=x.resolved | at_k,
        block_log_mass=torch.where(at_k, torch.log(comp + LOG_EPS), x.block_log_mass),
        program_mask=x.program_mask & ~at_k,
        comp_observed=x.comp_observed | at,
        burden=torch.where(at, burden.unsqueeze(1), x.burden),
        burden_observed=x.burden_observed | at,
        predicted=x.predicted | at,
    )


def append_point(x: TokenInputs, position: torch.Tensor, day: torch.Tensor,
                 exposure: torch.Tensor) -> tuple[TokenInputs, torch.Tensor]:
    """Open a new point after ``position`` (growing ``L`` when needed); return its index."""
    new = position + 1
    if int(new.max()) >= x.days.shape[1]:
        x = _pad(x, 1)
    at = _at(new, x.days.shape[1])
    x = _replace(x, days=torch.where(at, day.unsqueeze(1), x.days),
                 exposure=torch.where(at.unsqueeze(-1), exposure.unsqueeze(1), x.exposure))
    return x, new


def _pad(x: TokenInputs, n: int) -> TokenInputs:
    out = {}
    for name, value in vars(x).items():
        if name == "cancer":
            out[name] = value
            continue
        shape = (value.shape[0], n, *value.shape[2:])
        out[name] = torch.cat([value, torch.zeros(shape, dtype=value.dtype,
                                                  device=value.device)], dim=1)
    return TokenInputs(**out)


def _replace(x: TokenInputs, **changes: torch.Tensor) -> TokenInputs:
    return TokenInputs(**{**vars(x), **changes})
