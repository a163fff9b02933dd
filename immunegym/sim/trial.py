"""Virtual clinical trials: one arm, a regimen in the package grammar, fixed follow-up.

:func:`run_trial` is the calibration contract: ``run_trial(cancer_type, regimen, n_patients,
seed)`` returns objective response rate (confirmed RECIST CR + PR, intention to treat), the
grade >= 3 treatment-related adverse event rates (all, and immune-related), discontinuation
for toxicity, treatment-related deaths, the median time to response and the Kaplan-Meier
median progression-free survival over :data:`FOLLOW_UP_DAYS`, with 95% confidence intervals
(Clopper-Pearson for rates; the Kaplan-Meier interval of the median), and a per-patient
table. With the same seed the patients are the same whatever the regimen (they are drawn and
relaxed to day 0 before any regimen applies), so arms can be compared patient by patient.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from scipy import stats

from immunegym.regimen_grammar import RegimenPlan
from immunegym.sim.outcomes import CR, PR, RESPONSE_CODES
from immunegym.sim.parameters import PHENOTYPES, ParameterSet
from immunegym.sim.simulator import TRIAL_IMAGING, ImmuneSim, Simulation
from immunegym.sim.therapy import MAX_DAYS, Regimen, parse_regimen
from immunegym.sim.toxicity import DEATH_CAUSES, DEFAULT_RULES, ProtocolRules
from immunegym.validation import bad, integer
from immunegym.validation import seed as check_seed

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
    grade3_ae_rate, grade3_ae_ci
        Patients with any grade >= 3 treatment-related adverse event (irAE, neutropenia,
        febrile neutropenia, other), and its interval.
    discontinuation_rate, discontinuation_ci
        Patients who stopped a therapy for toxicity or became unfit for treatment.
    treatment_death_rate, treatment_death_ci
        Patients who died of a treatment-related cause.
    neutropenia_rate, febrile_neutropenia_rate
        Patients with grade 3-4 neutropenia (ANC < 1.0 x 1e9/L), and with febrile
        neutropenia.
    median_time_to_response_days
        Median day of the first documented response among responders (``nan`` if none).
    responder_progression_rate
        Share of responders who progressed or died within the follow-up (``nan`` if none):
        the durability of responses.
    median_pfs_days, median_pfs_ci
        Kaplan-Meier median PFS (``inf`` if not reached) and its 95% interval.
    best_response
        Count of each best overall response.
    patients
        One row per patient (``patient`` is the same patient in every arm of a seed):
        phenotype, key parameters, driver status, outcomes and toxicity.
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
    grade3_ae_rate: float
    grade3_ae_ci: tuple[float, float]
    discontinuation_rate: float
    discontinuation_ci: tuple[float, float]
    treatment_death_rate: float
    treatment_death_ci: tuple[float, float]
    neutropenia_rate: float
    febrile_neutropenia_rate: float
    median_time_to_response_days: float
    responder_progression_rate: float
    median_pfs_days: float
    median_pfs_ci: tuple[float, float]
    best_response: dict[str, int]
    patients: pd.DataFrame = field(repr=False)

    # Summaries that are undefined, not wrong, in small or short trials: NaN when there is
    # no responder, inf (and an open interval) when the median PFS is not reached.
    UNDEFINED_WHEN_EMPTY: ClassVar[frozenset[str]] = frozenset({
        "median_time_to_response_days", "responder_progression_rate", "median_pfs_days",
        "median_pfs_ci"})

    def __repr__(self) -> str:
        return (f"TrialResult({self.cancer_type}, {self.regimen!r}, n={self.n_patients}, "
                f"seed={self.seed}, {self.follow_up_days} days: ORR {self.orr:.3f} "
                f"[{self.orr_ci[0]:.3f}, {self.orr_ci[1]:.3f}], grade>=3 AE "
                f"{self.grade3_ae_rate:.3f}, median PFS {self.median_pfs_days:g} d; "
                f".patients: {len(self.patients)} rows, .summary() for all fields)")

    def summary(self) -> dict[str, object]:
        """JSON-ready summary (no per-patient table)."""
        return {k: getattr(self, k) for k in (
            "cancer_type", "regimen", "n_patients", "seed", "follow_up_days", "orr", "orr_ci",
            "cr_rate", "grade3_irae_rate", "grade3_irae_ci", "grade3_ae_rate", "grade3_ae_ci",
            "discontinuation_rate", "discontinuation_ci", "treatment_death_rate",
            "treatment_death_ci", "neutropenia_rate", "febrile_neutropenia_rate",
            "median_time_to_response_days", "responder_progression_rate", "median_pfs_days",
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
    responder = np.isin(best, (PR, CR))
    tox = sim.state.tox

    def take(t: torch.Tensor) -> np.ndarray:
        return t.cpu().numpy()[rows]

    irae = take(tox.irae_count) > 0
    any_ae = take(tox.ae_count) > 0
    stopped = take(tox.discontinued)
    tr_death = take(tox.treatment_death)
    response_day = sim.response_day[rows]
    ttr = float(np.median(response_day[responder])) if responder.any() else math.nan
    lost = (float(sim.pfs_event[rows][responder].mean()) if responder.any() else math.nan)
    median, median_ci = km_median(sim.pfs_day[rows], sim.pfs_event[rows])
    p = sim.patients
    index = np.arange(len(sim.best_response))[rows]
    if not isinstance(rows, slice):
        p = p.index(torch.as_tensor(index, device=p.cancer.device))
    table = pd.DataFrame({
        "patient": index,
        "phenotype": [PHENOTYPES[i] for i in p.phenotype.cpu().numpy()],
        "antigenicity": p.antigenicity.cpu().numpy(),
        "kill_reserve": p.kill_reserve.cpu().numpy(),
        "infiltration": p.infiltration.cpu().numpy(),
        "pdl1": p.pdl1.cpu().numpy(),
        "driver": p.driver.cpu().numpy() > 0,
        "best_response": [RESPONSE_CODES[i] for i in best],
        "responder": responder,
        "response_day": response_day,
        "pfs_days": sim.pfs_day[rows],
        "pfs_event": sim.pfs_event[rows],
        "irae": irae,
        "grade3_ae": any_ae,
        "discontinued": stopped,
        "worst_neutropenia": take(tox.worst_neutropenia),
        "febrile_neutropenia": take(tox.fn_episodes) > 0,
        "death_cause": [DEATH_CAUSES[i] for i in take(tox.death_cause)],
    })

    def rate(flags: np.ndarray) -> tuple[float, tuple[float, float]]:
        return float(flags.mean()), proportion_ci(int(flags.sum()), n)

    irae_rate, irae_ci = rate(irae)
    ae_rate, ae_ci = rate(any_ae)
    stop_rate, stop_ci = rate(stopped)
    death_rate, death_ci = rate(tr_death)
    return TrialResult(
        cancer_type=cancer_type, regimen=regimen, n_patients=n, seed=seed,
        follow_up_days=sim.days, orr=float(responder.mean()),
        orr_ci=proportion_ci(int(responder.sum()), n),
        cr_rate=float((best == CR).mean()), grade3_irae_rate=irae_rate,
        grade3_irae_ci=irae_ci, grade3_ae_rate=ae_rate, grade3_ae_ci=ae_ci,
        discontinuation_rate=stop_rate, discontinuation_ci=stop_ci,
        treatment_death_rate=death_rate, treatment_death_ci=death_ci,
        neutropenia_rate=float((table["worst_neutropenia"] >= 3).mean()),
        febrile_neutropenia_rate=float(table["febrile_neutropenia"].mean()),
        median_time_to_response_days=ttr, responder_progression_rate=lost,
        median_pfs_days=median, median_pfs_ci=median_ci,
        best_response={code: int((best == i).sum()) for i, code in enumerate(RESPONSE_CODES)},
        patients=table,
    )


def run_trial(
    cancer_type: str,
    regimen: str | Regimen | RegimenPlan,
    n_patients: int,
    seed: int,
    *,
    params: ParameterSet | None = None,
    follow_up_days: int = FOLLOW_UP_DAYS,
    device: str = "cpu",
    driver: str | None = None,
    rules: ProtocolRules = DEFAULT_RULES,
) -> TrialResult:
    """Simulate one trial arm under a regimen in the package's one grammar.

    Parameters
    ----------
    cancer_type
        Cancer-type id, e.g. ``"melanoma"``.
    regimen
        Regimen text (:mod:`immunegym.regimen_grammar`): therapy ids joined by ``"+"``
        (``"anti_pd1"``, ``"anti_pd1+anti_ctla4"``, each at its standard course: chemo q3w
        x4, anti-CTLA-4 x4, anti-PD-1 up to 35 doses), phases
        (``"anti_pd1+anti_ctla4 q3w x4 -> anti_pd1"``), a standard regimen's name
        (``"nivolumab_ipilimumab"``), ``"none"``; a
        :class:`~immunegym.regimen_grammar.RegimenPlan`; or a
        :class:`~immunegym.sim.therapy.Regimen` with custom schedules.
    n_patients
        Number of virtual patients (1 .. :data:`~immunegym.sim.simulator.MAX_PATIENTS`,
        and within the memory limit ``IMMUNEGYM_MAX_MEMORY_GB``).
    seed
        Seed of the trial's generator (0 .. 2**63 - 1).
    params
        Parameter set (the calibrated one by default).
    follow_up_days
        Follow-up in days since treatment start (1 .. 3650).
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    driver
        Enrol only driver-positive patients (the cancer type's driver name, e.g.
        ``"BRAF_V600"``) or only ``"wild_type"``; ``None`` for everyone.
    rules
        The protocol rules for toxicity.

    Returns
    -------
    TrialResult
        Response, toxicity, discontinuation, deaths and PFS with confidence intervals, and
        the per-patient table.

    Raises
    ------
    ValidationError
        For any argument out of its contract, before any patient is simulated.
    """
    # Every argument is checked before anything is drawn or allocated.
    parsed = parse_regimen(regimen)
    seed = check_seed("seed", seed)
    follow_up_days = integer("follow_up_days", follow_up_days, low=1, high=MAX_DAYS,
                             hint=f"days since treatment start, at most {MAX_DAYS}")
    if not isinstance(rules, ProtocolRules):
        raise bad("rules", rules, "a ProtocolRules")
    sim = ImmuneSim(params, device=device, seed=seed)
    sim.check_cancer_type(cancer_type)
    n_patients = sim.check_patient_count("n_patients", n_patients)
    patients = sim.sample_patients(cancer_type, n_patients, driver=driver)
    course = sim.run(patients, parsed, follow_up_days, imaging=TRIAL_IMAGING, rules=rules)
    return summarize(course, cancer_type=cancer_type, regimen=parsed.name, seed=seed)
