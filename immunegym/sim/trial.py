"""Virtual clinical trials: one arm, standard schedules, fixed follow-up.

:func:`run_trial` is the calibration contract: ``run_trial(cancer_type, regimen, n_patients,
seed)`` returns objective response rate (confirmed RECIST CR + PR, intention to treat), the
grade >= 3 immune-related adverse event rate and the Kaplan-Meier median progression-free
survival over :data:`FOLLOW_UP_DAYS`, with 95% confidence intervals (Clopper-Pearson for
rates; the Kaplan-Meier interval of the median).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy import stats

from immunegym.sim.outcomes import CR, PR, RESPONSE_CODES
from immunegym.sim.parameters import PHENOTYPES, ParameterSet
from immunegym.sim.simulator import TRIAL_IMAGING, ImmuneSim, Simulation
from immunegym.sim.therapy import parse_regimen

FOLLOW_UP_DAYS = 730
"""Follow-up of a virtual trial: two years."""


@dataclass(frozen=True)
class TrialResult:
    """Outcome of one virtual trial arm.

    Attributes
    ----------
    orr, orr_ci
        Objective response rate (confirmed CR + PR) and its 95% Clopper-Pearson interval.
    cr_rate
        Confirmed complete responses.
    grade3_irae_rate, grade3_irae_ci
        Patients with a grade >= 3 immune-related adverse event, and its interval.
    median_pfs_days, median_pfs_ci
        Kaplan-Meier median PFS (``inf`` if not reached) and its 95% interval.
    best_response
        Count of each best overall response.
    patients
        One row per patient: phenotype, key parameters and outcomes.
    """

    cancer_type: str
    regimen: str
    n_patients: int
    seed: int
    follow_up_days: int
    orr: float
    orr_ci: tuple[float, float]
    cr_rate: float
    grade3_irae_rate: float
    grade3_irae_ci: tuple[float, float]
    median_pfs_days: float
    median_pfs_ci: tuple[float, float]
    best_response: dict[str, int]
    patients: pd.DataFrame = field(repr=False)

    def summary(self) -> dict[str, object]:
        """JSON-ready summary (no per-patient table)."""
        return {k: getattr(self, k) for k in (
            "cancer_type", "regimen", "n_patients", "seed", "follow_up_days", "orr", "orr_ci",
            "cr_rate", "grade3_irae_rate", "grade3_irae_ci", "median_pfs_days",
            "median_pfs_ci", "best_response")}


def proportion_ci(k: int, n: int) -> tuple[float, float]:
    """95% Clopper-Pearson interval of k successes in n."""
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def km_median(time: np.ndarray, event: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Kaplan-Meier median survival and its 95% interval (``inf`` when not reached)."""
    data = stats.CensoredData(uncensored=time[event], right=time[~event])
    sf = stats.ecdf(data).sf

    def crossing(probabilities: np.ndarray) -> float:
        below = np.nonzero(probabilities <= 0.5)[0]
        return float(sf.quantiles[below[0]]) if below.size else math.inf

    with warnings.catch_warnings():  # undefined CI at late observations is expected
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = sf.confidence_interval(0.95)
    low = crossing(ci.low.probabilities)
    high = crossing(ci.high.probabilities)
    return crossing(sf.probabilities), (low, high)


def summarize(sim: Simulation, rows: np.ndarray | slice = slice(None), *, cancer_type: str,
              regimen: str, seed: int) -> TrialResult:
    """Trial statistics of the patients ``rows`` of a simulation."""
    best = sim.best_response[rows]
    n = int(best.shape[0])
    responders = int(np.isin(best, (PR, CR)).sum())
    irae = sim.state.irae.cpu().numpy()[rows]
    median, median_ci = km_median(sim.pfs_day[rows], sim.pfs_event[rows])
    p = sim.patients
    if not isinstance(rows, slice):
        p = p.index(torch.as_tensor(rows, device=p.cancer.device))
    table = pd.DataFrame({
        "phenotype": [PHENOTYPES[i] for i in p.phenotype.cpu().numpy()],
        "antigenicity": p.antigenicity.cpu().numpy(),
        "infiltration": p.infiltration.cpu().numpy(),
        "pdl1": p.pdl1.cpu().numpy(),
        "best_response": [RESPONSE_CODES[i] for i in best],
        "responder": np.isin(best, (PR, CR)),
        "pfs_days": sim.pfs_day[rows],
        "pfs_event": sim.pfs_event[rows],
        "irae": irae,
    })
    return TrialResult(
        cancer_type=cancer_type, regimen=regimen, n_patients=n, seed=seed,
        follow_up_days=sim.days, orr=responders / n, orr_ci=proportion_ci(responders, n),
        cr_rate=float((best == CR).mean()), grade3_irae_rate=float(irae.mean()),
        grade3_irae_ci=proportion_ci(int(irae.sum()), n), median_pfs_days=median,
        median_pfs_ci=median_ci,
        best_response={code: int((best == i).sum()) for i, code in enumerate(RESPONSE_CODES)},
        patients=table,
    )


def run_trial(
    cancer_type: str,
    regimen: str,
    n_patients: int,
    seed: int,
    *,
    params: ParameterSet | None = None,
    follow_up_days: int = FOLLOW_UP_DAYS,
    device: str = "cpu",
) -> TrialResult:
    """Simulate one trial arm under the regimen's standard schedules.

    Parameters
    ----------
    cancer_type
        Cancer-type id, e.g. ``"melanoma"``.
    regimen
        Therapy ids joined by ``"+"`` (``"anti_pd1"``, ``"anti_pd1+anti_ctla4"``) or
        ``"none"``.
    n_patients
        Number of virtual patients (>= 1).
    seed
        Seed of the trial's generator.
    params
        Parameter set (the calibrated one by default).
    follow_up_days
        Follow-up in days.
    device
        Torch device.

    Returns
    -------
    TrialResult
        ORR, grade >= 3 irAE rate and median PFS with confidence intervals.
    """
    if not isinstance(n_patients, int) or isinstance(n_patients, bool) or n_patients <= 0:
        raise ValueError(f"n_patients: expected a positive integer, got {n_patients!r}")
    parsed = parse_regimen(regimen)
    sim = ImmuneSim(params, device=device, seed=seed)
    sim.params.cancer(cancer_type)  # clear error before any work
    patients = sim.sample_patients(cancer_type, n_patients)
    course = sim.run(patients, parsed, follow_up_days, imaging=TRIAL_IMAGING)
    return summarize(course, cancer_type=cancer_type, regimen=parsed.name, seed=seed)
