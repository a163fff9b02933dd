"""Imaging and RECIST 1.1, batched over patients.

Imaging reports the sum of target-lesion diameters (SOD), ``c (tumor cells / 1e9)^(1/3)``
mm with log-normal measurement noise; below the detection limit no target lesion is
measurable (0 mm). RECIST 1.1 (Eisenhauer 2009):

* PR: SOD down >= 30% from baseline; CR: all target lesions gone (0 mm);
* PD: SOD up >= 20% over the nadir (smallest sum so far, baseline included) and >= 5 mm;
  new lesions are not modelled;
* a response (PR/CR) counts only when confirmed by a scan >= 28 days after it was first seen;
  SD needs a non-PD scan >= 42 days after baseline; the best overall response is the best
  confirmed one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

RESPONSE_CODES: tuple[str, ...] = ("NE", "PD", "SD", "PR", "CR")
"""Best-overall-response codes by index (NE: not evaluable, died before the first scan)."""

NE, PD, SD, PR, CR = range(5)
CONFIRM_DAYS = 28
SD_MIN_DAYS = 42


def sum_of_diameters(tumor_cells: torch.Tensor, rates: dict[str, float]) -> torch.Tensor:
    """True SOD in mm of a tumor burden; 0 below the detection limit."""
    sod = rates["sod_per_cube_root_gcells"] * (tumor_cells.clamp_min(0) / 1e9).pow(1 / 3)
    return torch.where(tumor_cells >= rates["detection_limit"], sod, torch.zeros_like(sod))


def measure_sod(tumor_cells: torch.Tensor, rates: dict[str, float],
                generator: torch.Generator) -> torch.Tensor:
    """SOD as a radiologist reads it: the true SOD with log-normal noise."""
    true = sum_of_diameters(tumor_cells, rates)
    noise = torch.randn(true.shape, generator=generator, device=true.device)
    return true * torch.exp(rates["imaging_cv"] * noise)


@dataclass
class RecistTracker:
    """Running RECIST 1.1 assessment for a batch of patients (mutated scan by scan).

    Attributes
    ----------
    baseline
        ``(n,)`` baseline SOD (mm).
    nadir
        ``(n,)`` smallest SOD so far.
    best
        ``(n,)`` best confirmed response code (:data:`RESPONSE_CODES`).
    pd_day
        ``(n,)`` day of progression, -1 if none yet.
    """

    baseline: torch.Tensor
    nadir: torch.Tensor
    best: torch.Tensor
    pd_day: torch.Tensor
    sd_seen: torch.Tensor
    previous_code: torch.Tensor
    previous_day: torch.Tensor
    response_day: torch.Tensor

    @classmethod
    def start(cls, baseline_sod: torch.Tensor) -> RecistTracker:
        """A tracker whose baseline scan read ``baseline_sod``."""
        n, device = baseline_sod.shape[0], baseline_sod.device

        def full(value: int) -> torch.Tensor:
            return torch.full((n,), value, dtype=torch.long, device=device)

        return cls(baseline_sod.clone(), baseline_sod.clone(), full(NE), full(-1),
                   torch.zeros(n, dtype=torch.bool, device=device), full(NE), full(-1),
                   full(-1))

    def update(self, scanned: torch.Tensor, sod: torch.Tensor, day: torch.Tensor) -> torch.Tensor:
        """Assess the patients in ``scanned`` on ``day``; returns the new-progression mask."""
        active = scanned & (self.pd_day < 0)
        progressed = active & (sod >= 1.2 * self.nadir) & (sod - self.nadir >= 5.0)
        code = torch.full_like(self.best, SD)
        code = torch.where(sod <= 0.7 * self.baseline, torch.full_like(code, PR), code)
        code = torch.where(sod <= 0, torch.full_like(code, CR), code)
        code = torch.where(progressed, torch.full_like(code, PD), code)
        # Confirmation: PR/CR on this scan and on a previous one >= 28 days earlier.
        confirms = (active & (code >= PR) & (self.previous_code >= PR)
                    & (day - self.previous_day >= CONFIRM_DAYS))
        confirmed = torch.minimum(code, self.previous_code)
        self.best = torch.where(confirms, torch.maximum(self.best, confirmed), self.best)
        self.response_day = torch.where(confirms & (self.response_day < 0), self.previous_day,
                                        self.response_day)
        self.previous_code = torch.where(active, code, self.previous_code)
        self.previous_day = torch.where(active, day, self.previous_day)
        self.sd_seen |= active & ~progressed & (day >= SD_MIN_DAYS)
        self.pd_day = torch.where(progressed, day, self.pd_day)
        self.nadir = torch.where(active, torch.minimum(self.nadir, sod), self.nadir)
        return progressed

    def exclude(self, rows: torch.Tensor, keep: float) -> None:
        """A lesion leaves the target sum in ``rows`` (``(n,)`` bool): the baseline and nadir
        shrink by ``keep`` (the remaining lesions' share of the sum of diameters)."""
        self.baseline = torch.where(rows, self.baseline * keep, self.baseline)
        self.nadir = torch.where(rows, self.nadir * keep, self.nadir)

    def best_overall(self) -> torch.Tensor:
        """``(n,)`` best overall response codes."""
        best = self.best.clone()
        unconfirmed = best < PR
        best = torch.where(unconfirmed & self.sd_seen, torch.full_like(best, SD), best)
        scanned_pd = unconfirmed & ~self.sd_seen & (self.pd_day >= 0)
        return torch.where(scanned_pd, torch.full_like(best, PD), best)
