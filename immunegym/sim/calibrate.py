"""Calibration of ImmuneSim to clinical anchors, and the report that checks it.

Fitted (SCIENCE.md, single agents and control arms only): objective response rates, grade
>= 3 treatment-related adverse events, discontinuation for toxicity, fatal irAEs and
chemotherapy myelosuppression, each with the trial arm it comes from (cancer type, regimen,
driver selection, the trial's scan schedule). Each fitted anchor has one parameter it mainly
moves (a cancer type's antigenicity for its anti-PD-1 response rate, melanoma's anti-CTLA-4
depletion efficiency, chemotherapy and targeted sensitivities, toxicity hazards); the fit
sweeps the anchors in order and solves each by Brent's method in log space, with common
random numbers (fixed seeds) so every objective is a deterministic function of its
parameter.

Checked, not fitted: figures of the same arms that no parameter targets (median PFS, time
to response, toxicity in other trials); they must lie in their acceptance range too.

Validation, never fitted: combination arms (CheckMate 067 nivolumab + ipilimumab), and
independent action (IA, Palmer & Sorger 2017) for every pair of calibrated single agents
given to the same simulated patients: the combination's response rate should lie in
[IA - 0.03, IA + 0.08] and at most 15% of its responders should respond to neither drug
alone.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from scipy.optimize import brentq

from immunegym import validation as v
from immunegym._atomic import atomic_path
from immunegym.sim.parameters import PARAMETER_FILE, ParameterSet, load_parameters
from immunegym.sim.simulator import ImagingSchedule, ImmuneSim
from immunegym.sim.therapy import Regimen, TherapySchedule, parse_regimen
from immunegym.sim.trial import FOLLOW_UP_DAYS, TrialResult, summarize

MONTH = 365.25 / 12
MAX_PATIENTS = 10_000_000
MAX_SWEEPS = 100
MAX_WORKERS = 1_024
ARM_BYTES_PER_PATIENT = 32_000
"""Peak bytes per patient of one simulated two-year arm (~14 kB measured, doubled)."""
DEFAULT_PARAMS_OUT = Path("immunegym-out") / PARAMETER_FILE
"""Where ``immunegym sim calibrate --fit`` writes without ``--params-out``: a user path
(relative to the working directory), never the file shipped in the package."""

# Trial scan schedules (first assessment, then the interval).
CHECKMATE_067 = ImagingSchedule((42, 42), (84, 84), 364, first_scan_day=84)
"""CheckMate 067: week 12, then every 6 weeks for a year, then every 12 weeks."""
EVERY_9_WEEKS = ImagingSchedule((63, 63), (63, 63), 10**6)
"""KEYNOTE-024 / KEYNOTE-177: every 9 weeks."""
CHECKMATE_017 = ImagingSchedule((42, 42), (42, 42), 10**6, first_scan_day=63)
"""CheckMate 017: week 9, then every 6 weeks."""
CHECKMATE_214 = ImagingSchedule((42, 42), (84, 84), 364, first_scan_day=84)
"""CheckMate 214: week 12, then every 6 weeks."""
TARGETED_TRIAL = ImagingSchedule((56, 56), (56, 56), 10**6)
"""Targeted-therapy trials (COMBI-v, FLAURA, BLC2001, ...): about every 8 weeks."""


def _until_progression(therapy: str, interval_days: int = 21) -> TherapySchedule:
    base = parse_regimen(therapy).schedules[0]
    return replace(base, interval_days=interval_days, n_doses=100)


@dataclass(frozen=True)
class Arm:
    """One trial arm: who is treated, with what, and how they are scanned.

    Attributes
    ----------
    trial
        Trial and arm name, e.g. ``"CheckMate 067 nivolumab"``.
    cancer_type
        Cancer-type id.
    regimen
        Regimen text in the package grammar (standard schedules), e.g. ``"anti_pd1"``.
    schedules
        Schedules that replace the standard ones (e.g. chemotherapy until progression).
    driver
        Driver selection (:func:`~immunegym.sim.patients.sample_patients`).
    imaging
        The trial's scan schedule.
    """

    trial: str
    cancer_type: str
    regimen: str
    schedules: tuple[TherapySchedule, ...] = ()
    driver: str | None = None
    imaging: ImagingSchedule = field(default_factory=ImagingSchedule)

    def build(self) -> Regimen:
        """The :class:`Regimen` this arm gives."""
        base = parse_regimen(self.regimen)
        custom = {s.therapy: s for s in self.schedules}
        schedules = tuple(custom.get(s.therapy, s) for s in base.schedules)
        return Regimen(schedules, base.name)

    @property
    def population(self) -> tuple[str, str | None]:
        """Arms with the same population are given to the same simulated patients."""
        return (self.cancer_type, self.driver)


@dataclass(frozen=True)
class Anchor:
    """One clinical figure the model should reproduce.

    Attributes
    ----------
    arm
        The trial arm.
    metric
        A :class:`~immunegym.sim.trial.TrialResult` field (``"orr"``, ``"grade3_ae_rate"``,
        ``"median_pfs_days"``, ...).
    target
        The published figure.
    low, high
        Acceptance range of the simulated value.
    parameter
        ``"cancer:<type>:<field>"`` or ``"rate:<name>"`` that the fit moves for this
        anchor; empty for anchors that are only checked.
    source
        Where the figure comes from, and whether it was verified at its source.
    """

    arm: Arm
    metric: str
    target: float
    low: float
    high: float
    parameter: str
    source: str

    @property
    def fitted(self) -> bool:
        return bool(self.parameter)

    @property
    def label(self) -> str:
        return f"{self.arm.trial}: {self.metric}"


def _rate(arm: Arm, metric: str, target: float, tol: float, parameter: str,
          source: str) -> Anchor:
    return Anchor(arm, metric, target, max(0.0, target - tol), target + tol, parameter, source)


def _days(arm: Arm, metric: str, months: float, lo: float, hi: float, source: str,
          parameter: str = "") -> Anchor:
    """A time anchor given in months; accepted from ``lo`` to ``hi`` months."""
    return Anchor(arm, metric, months * MONTH, lo * MONTH, hi * MONTH, parameter, source)


CM067_NIVO = Arm("CheckMate 067 nivolumab", "melanoma", "anti_pd1", imaging=CHECKMATE_067)
CM067_IPI = Arm("CheckMate 067 ipilimumab", "melanoma", "anti_ctla4", imaging=CHECKMATE_067)
CM067_COMBO = Arm("CheckMate 067 nivolumab + ipilimumab", "melanoma", "anti_pd1+anti_ctla4",
                  imaging=CHECKMATE_067)
KN024_PEMBRO = Arm("KEYNOTE-024 pembrolizumab", "nsclc_pdl1_high", "anti_pd1",
                   imaging=EVERY_9_WEEKS)
KN024_CHEMO = Arm("KEYNOTE-024 platinum doublet", "nsclc_pdl1_high", "chemo",
                  imaging=EVERY_9_WEEKS)
CM017_NIVO = Arm("CheckMate 017 nivolumab", "nsclc", "anti_pd1", imaging=CHECKMATE_017)
CM017_DOCETAXEL = Arm("CheckMate 017 docetaxel", "nsclc", "chemo",
                      (_until_progression("chemo"),), imaging=CHECKMATE_017)
KN177_PEMBRO = Arm("KEYNOTE-177 pembrolizumab", "crc_msi", "anti_pd1", imaging=EVERY_9_WEEKS)
KN177_CHEMO = Arm("KEYNOTE-177 chemotherapy", "crc_msi", "chemo",
                  (_until_progression("chemo", 14),), imaging=EVERY_9_WEEKS)
CM214_SUNITINIB = Arm("CheckMate 214 sunitinib", "rcc", "targeted", imaging=CHECKMATE_214)

_CM067 = "Larkin NEJM 2015 (CheckMate 067), verified"
_KN024 = "Reck NEJM 2016 (KEYNOTE-024), verified"
_CM017 = "Brahmer NEJM 2015 (CheckMate 017), verified"
_KN177 = "Andre NEJM 2020 (KEYNOTE-177), verified"


def _pd1(cancer: str, target: float, source: str) -> Anchor:
    arm = Arm(f"{cancer} anti-PD-1 ({source.split(',')[0]})", cancer, "anti_pd1")
    return _rate(arm, "orr", target, 0.05, f"cancer:{cancer}:antigenicity", source)


def _targeted(cancer: str, driver: str | None, target: float, source: str) -> Anchor:
    label = driver or "unselected"
    arm = Arm(f"{cancer} {label} targeted therapy", cancer, "targeted", driver=driver,
              imaging=TARGETED_TRIAL)
    return _rate(arm, "orr", target, 0.05, f"cancer:{cancer}:targeted_sensitivity", source)


ANCHORS: tuple[Anchor, ...] = (
    # --- response rates (each moves one cancer-type parameter) ----------------------
    _rate(CM067_NIVO, "orr", 0.437, 0.05, "cancer:melanoma:antigenicity", _CM067),
    _rate(CM067_IPI, "orr", 0.19, 0.05, "cancer:melanoma:treg_escape", _CM067),
    _rate(KN024_PEMBRO, "orr", 0.448, 0.05, "cancer:nsclc_pdl1_high:antigenicity", _KN024),
    _rate(KN024_CHEMO, "orr", 0.278, 0.05, "cancer:nsclc_pdl1_high:chemo_sensitivity",
          _KN024),
    _rate(CM017_NIVO, "orr", 0.20, 0.05, "cancer:nsclc:antigenicity", _CM017),
    _rate(CM017_DOCETAXEL, "orr", 0.09, 0.04, "cancer:nsclc:chemo_sensitivity", _CM017),
    _rate(KN177_PEMBRO, "orr", 0.438, 0.05, "cancer:crc_msi:antigenicity",
          _KN177 + " (67/153 responders)"),
    _rate(KN177_CHEMO, "orr", 0.331, 0.05, "cancer:crc_msi:chemo_sensitivity",
          _KN177 + " (51/154 responders)"),
    _rate(CM214_SUNITINIB, "orr", 0.27, 0.05, "cancer:rcc:targeted_sensitivity",
          "Motzer NEJM 2018 (CheckMate 214), verified"),
    _pd1("rcc", 0.25, "pretreated RCC 21-27% (CheckMate 025), SCIENCE.md"),
    _pd1("urothelial", 0.21, "KEYNOTE-045, SCIENCE.md"),
    _pd1("hnscc", 0.16, "KEYNOTE-040 / CheckMate 141, SCIENCE.md"),
    _pd1("crc_mss", 0.02, "Le NEJM 2015: 0% in MSS, SCIENCE.md"),
    _pd1("tnbc", 0.05, "unselected pretreated TNBC, SCIENCE.md"),
    _targeted("melanoma", "BRAF_V600", 0.64, "COMBI-v (Robert NEJM 2015), verified"),
    _targeted("nsclc", "EGFR", 0.80, "FLAURA (Soria NEJM 2018), verified"),
    _targeted("urothelial", "FGFR3", 0.40, "BLC2001 (Loriot NEJM 2019), verified"),
    _targeted("hnscc", "EGFR_expression", 0.13, "Vermorken JCO 2007 cetuximab, verified"),
    _targeted("crc_msi", "BRAF_V600E", 0.20, "BEACON doublet (Kopetz NEJM 2019), verified"),
    _targeted("crc_mss", "RAS_wild_type", 0.17, "Amado JCO 2008 panitumumab, verified"),
    _targeted("tnbc", "gBRCA", 0.599, "OlympiAD (Robson NEJM 2017), verified"),
    # --- toxicity --------------------------------------------------------------------
    _rate(CM067_NIVO, "grade3_ae_rate", 0.163, 0.05, "rate:irae_hazard_pd1",
          _CM067 + " (grade 3-4 TRAE)"),
    _rate(CM067_IPI, "grade3_ae_rate", 0.273, 0.05, "rate:irae_hazard_ctla4",
          _CM067 + " (grade 3-4 TRAE)"),
    _rate(CM067_NIVO, "discontinuation_rate", 0.077, 0.03, "rate:irae_stop_pd1",
          "CheckMate 067 7.7% (CMAJ 2019 table rounds to 8%; close)"),
    _rate(CM067_IPI, "discontinuation_rate", 0.148, 0.04, "rate:irae_stop_ctla4",
          "CheckMate 067 14.8% (CMAJ 2019 table rounds to 15%; close)"),
    _rate(CM067_NIVO, "treatment_death_rate", 0.0036, 0.003, "rate:irae_fatal_pd1",
          "Wang JAMA Oncol 2018: anti-PD-1 0.36% (range 0.3-1.3% verified; per-class "
          "figure from memory)"),
    _rate(CM067_IPI, "treatment_death_rate", 0.0108, 0.005, "rate:irae_fatal_ctla4",
          "Wang JAMA Oncol 2018: anti-CTLA-4 1.08% (per-class figure from memory)"),
    _rate(CM017_DOCETAXEL, "neutropenia_rate", 0.35, 0.07, "rate:chemo_marrow_slope",
          "docetaxel grade 3-4 neutropenia ~30-40% (CheckMate 017/057, REVEL; not verified "
          "here)"),
    _rate(CM017_DOCETAXEL, "febrile_neutropenia_rate", 0.10, 0.04, "rate:fn_hazard_severe",
          "docetaxel febrile neutropenia ~10% (not verified here)"),
    _rate(CM017_DOCETAXEL, "grade3_ae_rate", 0.55, 0.06, "rate:chemo_ae_per_dose",
          _CM017 + " (grade 3-4 TRAE)"),
    _rate(KN024_CHEMO, "grade3_ae_rate", 0.533, 0.06, "cancer:nsclc_pdl1_high:"
          "chemo_toxicity", _KN024 + " (grade 3-5 TRAE; platinum doublet vs docetaxel)"),
    _rate(KN177_CHEMO, "grade3_ae_rate", 0.66, 0.06, "cancer:crc_msi:chemo_toxicity",
          _KN177 + " (grade >= 3 TRAE; FOLFOX/FOLFIRI vs docetaxel)"),
    _rate(CM214_SUNITINIB, "grade3_ae_rate", 0.63, 0.06, "rate:targeted_ae_hazard",
          "CheckMate 214 sunitinib grade 3-4 TRAE 63% (from memory, unverified)"),
    # --- progression speed: the control arms are mostly non-responders -----------------
    _days(CM067_IPI, "median_pfs_days", 2.9, 2.5, 3.5, _CM067 + " (median PFS 2.9 mo)",
          "cancer:melanoma:doubling_days"),
    _days(KN024_CHEMO, "median_pfs_days", 6.0, 4.5, 8.0, _KN024 + " (median PFS 6.0 mo)",
          "cancer:nsclc_pdl1_high:doubling_days"),
    # --- checked, not fitted ---------------------------------------------------------
    _rate(KN024_PEMBRO, "grade3_ae_rate", 0.266, 0.08, "", _KN024 + " (grade 3-5 TRAE)"),
    _rate(CM017_NIVO, "grade3_ae_rate", 0.07, 0.05, "", _CM017 + " (grade 3-4 TRAE)"),
    _rate(KN177_PEMBRO, "grade3_ae_rate", 0.22, 0.08, "", _KN177 + " (grade >= 3 TRAE)"),
    _rate(KN024_PEMBRO, "treatment_death_rate", 0.006, 0.006, "",
          "KEYNOTE-024: 1 treatment death (0.6%; from memory, unverified)"),
    _rate(KN024_CHEMO, "treatment_death_rate", 0.02, 0.015, "",
          "KEYNOTE-024: 3 treatment deaths (2.0%; from memory, unverified)"),
    _days(CM067_NIVO, "median_pfs_days", 6.9, 4.6, 10.3, _CM067 + " (median PFS 6.9 mo)"),
    _days(KN024_PEMBRO, "median_pfs_days", 10.3, 6.9, 15.5, _KN024 + " (median PFS 10.3 mo)"),
    Anchor(CM067_NIVO, "responder_progression_rate", 0.25, 0.15, 0.40,
           "rate:escape_presence",
           "Ribas JAMA 2016 (KEYNOTE-001): about a quarter of anti-PD-1 responders progressed "
           "at a median follow-up of 21 months, verified; Zaretsky 2016: ~75% durable"),
    _days(CM067_NIVO, "median_time_to_response_days", 2.8, 2.0, 3.5,
          "CheckMate 067 median time to response ~2.8 mo (from memory; first scan week 12)"),
    _days(KN024_PEMBRO, "median_time_to_response_days", 2.2, 1.8, 3.5,
          "KEYNOTE-024 median time to response 2.2 mo (from memory; scans every 9 weeks)"),
)
"""The fitting set and the checked figures of the same single-agent and control arms."""

VALIDATION: tuple[Anchor, ...] = (
    Anchor(CM067_COMBO, "orr", 0.576, 0.520, 0.632, "",
           _CM067 + ": 57.6% (95% CI 52.0-63.2)"),
    Anchor(CM067_COMBO, "grade3_ae_rate", 0.55, 0.50, 0.63, "",
           _CM067 + ": grade 3-4 TRAE 55.0% (59% at 5 years)"),
    Anchor(CM067_COMBO, "discontinuation_rate", 0.364, 0.30, 0.45, "",
           "CheckMate 067: discontinuation for TRAE 36.4% (CMAJ 2019: 36%)"),
    Anchor(CM067_COMBO, "median_pfs_days", 11.5 * MONTH, 8.9 * MONTH, 16.7 * MONTH, "",
           _CM067 + ": median PFS 11.5 mo (95% CI 8.9-16.7), above nivolumab's 6.9"),
)
"""Combination arms: simulated and reported against published figures, never fitted."""

IA_LOW, IA_HIGH = 0.03, 0.08
"""The combination's response rate should lie in [IA - 0.03, IA + 0.08]."""
MAX_NEITHER_SHARE = 0.15
"""At most this share of combination responders respond to neither drug alone."""


@dataclass(frozen=True)
class Pair:
    """Two calibrated single agents given, alone and together, to the same patients."""

    first: Arm
    second: Arm
    combination: Arm


def _pair(cancer: str, a: str, b: str, driver: str | None = None, imaging=None) -> Pair:
    imaging = imaging or ImagingSchedule()
    arms = [Arm(f"{cancer} {r}" + (f" ({driver})" if driver else ""), cancer, r,
                driver=driver, imaging=imaging) for r in (a, b, f"{a}+{b}")]
    return Pair(*arms)


PAIRS: tuple[Pair, ...] = (
    _pair("melanoma", "anti_pd1", "anti_ctla4", imaging=CHECKMATE_067),
    _pair("melanoma", "anti_pd1", "targeted", "BRAF_V600"),
    _pair("nsclc_pdl1_high", "anti_pd1", "chemo", imaging=EVERY_9_WEEKS),
    _pair("nsclc", "anti_pd1", "chemo"),
    _pair("nsclc", "anti_pd1", "targeted", "EGFR"),
    _pair("crc_msi", "anti_pd1", "chemo", imaging=EVERY_9_WEEKS),
    _pair("rcc", "anti_pd1", "targeted"),
    _pair("urothelial", "anti_pd1", "targeted", "FGFR3"),
    _pair("tnbc", "anti_pd1", "targeted", "gBRCA"),
)
"""Pairs of calibrated single agents in the same population (independent-action checks)."""


# --------------------------------------------------------------------------- simulation
def _population_seed(seed: int, arm: Arm) -> int:
    key = f"{arm.cancer_type}|{arm.driver}".encode()
    return int(seed) * 1_000_003 + zlib.crc32(key) % 1_000_003


def simulate_arms(
    params: ParameterSet,
    arms: Sequence[Arm],
    n: int,
    seed: int,
    days: int = FOLLOW_UP_DAYS,
    device: str = "cpu",
) -> dict[Arm, TrialResult]:
    """Simulate trial arms; arms of one population are given to the same patients.

    Each population (cancer type, driver selection) draws ``n`` patients from its own seed
    and relaxes them to day 0 once; every arm of that population then starts from the same
    day-0 state (common random numbers across arms and across parameter values), so the
    per-patient tables line up arm by arm.
    """
    arms = list(dict.fromkeys(arms))
    out: dict[Arm, TrialResult] = {}
    for population in dict.fromkeys(a.population for a in arms):
        members = [a for a in arms if a.population == population]
        sim = ImmuneSim(params, device=device, seed=_population_seed(seed, members[0]))
        patients, state = sim.reset(sim.sample_patients(members[0].cancer_type, n,
                                                        driver=members[0].driver))
        for arm in members:
            sim.generator.manual_seed(_population_seed(seed, arm) + 7)
            course = sim.run(patients, arm.build(), days, state=state, imaging=arm.imaging)
            out[arm] = summarize(course, cancer_type=arm.cancer_type, regimen=arm.trial,
                                 seed=seed)
    return out


# --------------------------------------------------------------------------- parameters
def _get(params: ParameterSet, key: str) -> float:
    kind, *rest = key.split(":")
    if kind == "rate":
        return params.rates[rest[0]]
    return float(getattr(params.cancer(rest[0]), rest[1]))


def _set(params: ParameterSet, values: dict[str, float]) -> ParameterSet:
    rates: dict[str, float] = {}
    types: dict[str, dict[str, float]] = {}
    for key, value in values.items():
        kind, *rest = key.split(":")
        if kind == "rate":
            rates[rest[0]] = value
        else:
            types.setdefault(rest[0], {})[rest[1]] = value
    return params.with_updates(rates, types)


_BOUNDS = {"antigenicity": (1e-3, 30.0), "ctla4_depletion": (1e-2, 300.0),
           "treg_escape": (1e-3, 0.95), "doubling_days": (10.0, 400.0),
           "chemo_toxicity": (0.01, 5.0), "escape_presence": (1e-3, 0.95),
           "chemo_sensitivity": (1e-3, 20.0), "targeted_sensitivity": (1e-4, 2.0),
           "irae_hazard_pd1": (1e-6, 0.05), "irae_hazard_ctla4": (1e-6, 0.05),
           "irae_stop_pd1": (1e-3, 1.0), "irae_stop_ctla4": (1e-3, 1.0),
           "irae_fatal_pd1": (1e-4, 0.5), "irae_fatal_ctla4": (1e-4, 0.5),
           "chemo_marrow_slope": (1e-3, 20.0), "fn_hazard_severe": (1e-4, 1.0),
           "chemo_ae_per_dose": (1e-4, 0.9), "targeted_ae_hazard": (1e-5, 0.5)}


def _fit_block(params: ParameterSet, anchors: Sequence[Anchor], n: int, days: int,
               seed: int, xtol: float, device: str, threads: int | None = None
               ) -> tuple[dict[str, float], dict[str, dict[str, object]], int, list[str]]:
    """Fit ``anchors`` in order (Gauss-Seidel within the block); returns the fitted values,
    the per-anchor record, the number of simulations and the log lines."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    current = params
    values: dict[str, float] = {}
    record: dict[str, dict[str, object]] = {}
    lines: list[str] = []
    evaluations = 0
    for anchor in anchors:
        lo, hi = (math.log(b) for b in _BOUNDS[anchor.parameter.split(":")[-1]])
        cache: dict[float, float] = {}

        def gap(x: float, anchor: Anchor = anchor, cache=cache,
                base: ParameterSet = current) -> float:
            nonlocal evaluations
            if x not in cache:
                trial = _set(base, {anchor.parameter: math.exp(x)})
                result = simulate_arms(trial, [anchor.arm], n, seed, days, device)
                cache[x] = getattr(result[anchor.arm], anchor.metric) - anchor.target
                evaluations += 1
            return cache[x]

        x_now = min(max(math.log(_get(current, anchor.parameter)), lo), hi)
        # Bracket around the current value first (cheap near the solution), then widen.
        step = 0.5
        a, b = max(lo, x_now - step), min(hi, x_now + step)
        while gap(a) * gap(b) > 0 and (a > lo or b < hi):
            step *= 2
            a, b = max(lo, x_now - step), min(hi, x_now + step)
        if gap(a) * gap(b) > 0:
            x = a if abs(gap(a)) < abs(gap(b)) else b
            status = "target outside the reachable range; nearest endpoint"
        else:
            x = brentq(gap, a, b, xtol=xtol)
            status = "converged"
        current = _set(current, {anchor.parameter: math.exp(x)})
        values[anchor.parameter] = math.exp(x)
        record[anchor.label] = {"parameter": anchor.parameter, "value": math.exp(x),
                                "simulated": gap(x) + anchor.target, "target": anchor.target,
                                "status": status}
        lines.append(f"{anchor.label}: {anchor.parameter} = {math.exp(x):.4g} -> "
                     f"{gap(x) + anchor.target:.4g} (target {anchor.target:.4g}; {status})")
    return values, record, evaluations, lines


def check_sizes(n: int, seed: int = 0, *, workers: int = 1, field_n: str = "n",
                field_seed: str = "seed") -> None:
    """Refuse a cohort size (range, memory of ``workers`` arms at once) or seed, up front."""
    v.integer(field_n, n, low=1, high=MAX_PATIENTS)
    v.memory_budget(field_n, n, n * ARM_BYTES_PER_PATIENT * max(1, workers),
                    f"{max(1, workers)} simulated arm(s) at once")
    v.seed(field_seed, seed)


def check_fit_sizes(n: int, sweeps: int, workers: int, *,
                    fields: tuple[str, str, str] = ("n", "sweeps", "workers")) -> None:
    """Refuse :func:`fit` sizes out of range (or above the memory limit) before fitting."""
    v.integer(fields[2], workers, low=1, high=MAX_WORKERS)
    v.integer(fields[1], sweeps, low=1, high=MAX_SWEEPS)
    check_sizes(n, workers=workers, field_n=fields[0])


def parameter_target(params_out: str | Path | None = None, *, ship: bool = False,
                     field: str = "--params-out", flag: str = "--ship") -> Path:
    """Where a fitted parameter file goes: a user path, or the shipped file with ``ship``.

    The shipped file (:func:`default_parameter_path`) is read-only unless ``ship``; any path
    inside the package's shipped folders is refused without it, and ``ship`` with another
    ``params_out`` is refused as contradictory. The target is checked writable.
    """
    shipped = default_parameter_path()
    if ship:
        if params_out is not None and Path(params_out).resolve() != shipped.resolve():
            raise v.bad(field, str(params_out),
                        f"no --params-out with {flag} ({flag} writes {shipped})")
        target = shipped
    else:
        target = Path(params_out) if params_out is not None else DEFAULT_PARAMS_OUT
        v.refuse_shipped(field, target, allow=False, flag=flag)
    return v.output_path(field, target)


def fit(
    params: ParameterSet | None = None,
    *,
    n: int = 1000,
    days: int = FOLLOW_UP_DAYS,
    seed: int = 12345,
    sweeps: int = 2,
    xtol: float = 0.02,
    anchors: Sequence[Anchor] | None = None,
    workers: int = 1,
    device: str = "cpu",
    log: Callable[[str], object] = print,
) -> tuple[ParameterSet, dict[str, object]]:
    """Fit each fitted anchor's parameter by Brent's method, sweeping the anchors in order.

    Each evaluation simulates the anchor's arm with ``n`` patients and a fixed seed (common
    random numbers), so the objective is a deterministic step function of the parameter;
    :func:`scipy.optimize.brentq` finds the crossing of the target in log space. An anchor
    whose target lies outside what its parameter range can reach gets the nearest endpoint
    and is reported as such. Later anchors may depend on earlier ones (toxicity on how long
    responders stay on drug), so the sweep repeats.

    Anchors are grouped by the cancer type of their arm; every parameter is fitted in one
    group only. Within a group the sweep is sequential (Gauss-Seidel); with ``workers > 1``
    groups run in parallel processes (one torch thread each) and exchange their values
    between sweeps, which couples them like a Jacobi iteration (the shared toxicity rates
    are fitted on melanoma, NSCLC and RCC arms and touch the others only through holds).

    Returns
    -------
    (ParameterSet, dict)
        The fitted parameters and a record (method, per-anchor value, evaluations).
    """
    check_fit_sizes(n, sweeps, workers)
    v.seed("seed", seed)
    v.integer("days", days, low=1, high=36_500)
    v.number("xtol", xtol, low=0, low_open=True)
    current = params if params is not None else load_parameters()
    chosen = [a for a in (anchors if anchors is not None else ANCHORS) if a.fitted]
    groups: dict[str, list[Anchor]] = {}
    for anchor in chosen:
        groups.setdefault(anchor.arm.cancer_type, []).append(anchor)
    record: dict[str, object] = {
        "method": "scipy.optimize.brentq per anchor in log parameter space, "
                  f"{sweeps} sweeps (Gauss-Seidel within a cancer type's anchors), common "
                  "random numbers",
        "n_per_arm": n, "follow_up_days": days, "seed": seed, "xtol": xtol,
        "workers": workers, "anchors": {},
    }
    evaluations = 0
    for sweep in range(sweeps):
        jobs = [(current, block, n, days, seed, xtol, device) for block in groups.values()]
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = [pool.submit(_fit_block, *job, threads=1) for job in jobs]
                results = [f.result() for f in futures]
        else:
            results = [_fit_block(*job) for job in jobs]
        updates: dict[str, float] = {}
        for values, anchor_record, count, lines in results:
            updates.update(values)
            record["anchors"].update(anchor_record)
            evaluations += count
            for line in lines:
                log(f"sweep {sweep + 1} {line}")
        current = _set(current, updates)
    record["evaluations"] = evaluations
    return current, record


# --------------------------------------------------------------------------- checks
@dataclass(frozen=True)
class AnchorCheck:
    """Target vs simulated for one anchor."""

    anchor: Anchor
    simulated: float
    ci: tuple[float, float]

    @property
    def within(self) -> bool:
        return self.anchor.low <= self.simulated <= self.anchor.high


_CI_FIELDS = {"orr": "orr_ci", "grade3_ae_rate": "grade3_ae_ci",
              "grade3_irae_rate": "grade3_irae_ci", "discontinuation_rate": "discontinuation_ci",
              "treatment_death_rate": "treatment_death_ci", "median_pfs_days": "median_pfs_ci"}


def _check(anchor: Anchor, result: TrialResult) -> AnchorCheck:
    value = float(getattr(result, anchor.metric))
    ci_field = _CI_FIELDS.get(anchor.metric)
    ci = tuple(getattr(result, ci_field)) if ci_field else (value, value)
    return AnchorCheck(anchor, value, (float(ci[0]), float(ci[1])))


@dataclass(frozen=True)
class PairCheck:
    """A combination against independent action from its singles on the same patients."""

    pair: Pair
    first: float
    second: float
    combination: float
    neither_share: float

    @property
    def independent_action(self) -> float:
        return 1 - (1 - self.first) * (1 - self.second)

    @property
    def within(self) -> bool:
        ia = self.independent_action
        return (ia - IA_LOW <= self.combination <= ia + IA_HIGH
                and self.neither_share <= MAX_NEITHER_SHARE)


def _pair_check(pair: Pair, results: dict[Arm, TrialResult]) -> PairCheck:
    resp = [results[a].patients["responder"].to_numpy()
            for a in (pair.first, pair.second, pair.combination)]
    both = resp[2]
    neither = float((both & ~resp[0] & ~resp[1]).sum() / max(both.sum(), 1))
    return PairCheck(pair, float(resp[0].mean()), float(resp[1].mean()), float(both.mean()),
                     neither)


@dataclass
class CalibrationReport:
    """Every anchor, validation arm and pair check of one parameter set."""

    anchors: list[AnchorCheck]
    validation: list[AnchorCheck]
    pairs: list[PairCheck]
    n: int
    seed: int

    @property
    def missed(self) -> list[str]:
        """Labels of fitted or checked anchors outside their acceptance range."""
        return [c.anchor.label for c in self.anchors if not c.within]

    def to_json(self) -> dict[str, object]:
        def anchor_row(c: AnchorCheck) -> dict[str, object]:
            a = c.anchor
            return {"trial": a.arm.trial, "cancer_type": a.arm.cancer_type,
                    "regimen": a.arm.regimen, "driver": a.arm.driver, "metric": a.metric,
                    "target": a.target, "accept": [a.low, a.high], "simulated": c.simulated,
                    "ci95": list(c.ci), "fitted": a.fitted, "parameter": a.parameter,
                    "within": c.within, "source": a.source}

        return {
            "n": self.n, "seed": self.seed,
            "anchors": [anchor_row(c) for c in self.anchors],
            "validation": [anchor_row(c) for c in self.validation],
            "pairs": [{"population": p.pair.first.cancer_type, "driver": p.pair.first.driver,
                       "combination": p.pair.combination.regimen, "first": p.first,
                       "second": p.second, "combination_orr": p.combination,
                       "independent_action": p.independent_action,
                       "band": [p.independent_action - IA_LOW,
                                p.independent_action + IA_HIGH],
                       "neither_share": p.neither_share, "within": p.within}
                      for p in self.pairs],
        }


def check(params: ParameterSet | None = None, *, n: int = 4000, seed: int = 0,
          days: int = FOLLOW_UP_DAYS, include_validation: bool = True,
          device: str = "cpu") -> CalibrationReport:
    """Simulate every anchor, the validation arms and the pairs; compare with targets."""
    check_sizes(n, seed)
    params = params if params is not None else load_parameters()
    arms = [a.arm for a in ANCHORS]
    if include_validation:
        arms += [a.arm for a in VALIDATION]
        arms += [arm for p in PAIRS for arm in (p.first, p.second, p.combination)]
    results = simulate_arms(params, arms, n, seed, days, device)
    return CalibrationReport(
        anchors=[_check(a, results[a.arm]) for a in ANCHORS],
        validation=[_check(a, results[a.arm]) for a in VALIDATION] if include_validation
        else [],
        pairs=[_pair_check(p, results) for p in PAIRS] if include_validation else [],
        n=n, seed=seed)


def predict_combinations(params: ParameterSet | None = None, *, n: int = 1000, seed: int = 0,
                         days: int = FOLLOW_UP_DAYS, cancer_types: Sequence[str] | None = None,
                         device: str = "cpu") -> list[PairCheck]:
    """Every two-therapy combination of every cancer type against independent action.

    All five single agents and the ten pairs are given to the same patients of each cancer
    type (the natural driver prevalence, so targeted therapy helps only its carriers), with
    the default scan schedule. What the model predicts for combinations nobody fitted.
    """
    from itertools import combinations

    from immunegym.data.vocab import THERAPIES

    check_sizes(n, seed)
    params = params if params is not None else load_parameters()
    pairs = [_pair(c, a, b) for c in (cancer_types or sorted(params.cancer_types))
             for a, b in combinations(THERAPIES, 2)]
    arms = [arm for p in pairs for arm in (p.first, p.second, p.combination)]
    results = simulate_arms(params, arms, n, seed, days, device)
    return [_pair_check(p, results) for p in pairs]


def write_parameters(params: ParameterSet, record: dict[str, object], path: Path,
                     version: str, *, allow_shipped: bool = False) -> Path:
    """Write the calibrated parameter file (versioned JSON), atomically.

    The file shipped in the package is refused unless ``allow_shipped`` (what ``immunegym
    sim calibrate --fit --ship`` passes, for maintainers).
    """
    v.refuse_shipped("path", path, allow=allow_shipped, flag="--ship (allow_shipped=True)")
    v.output_path("path", path)
    data = params.to_json_dict()
    data["version"] = version
    data["meta"] = {"calibration": record,
                    "anchors": [{"label": a.label, "parameter": a.parameter,
                                 "target": a.target, "accept": [a.low, a.high],
                                 "source": a.source} for a in ANCHORS]}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def default_parameter_path() -> Path:
    """The calibrated parameter file shipped in the package (resolved from the package,
    whatever the working directory)."""
    return Path(__file__).resolve().parent / "calibrated" / PARAMETER_FILE


def plot_report(report: CalibrationReport, path: Path) -> Path:
    """Target range vs simulated (95% CI) for every rate anchor, and the IA pairs, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [c for c in report.anchors + report.validation if "days" not in c.anchor.metric]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 0.32 * len(rows) + 1.5),
                                 gridspec_kw={"width_ratios": [3, 2]})
    for i, c in enumerate(rows):
        y = len(rows) - 1 - i
        color = ("tab:orange" if c in report.validation
                 else "tab:blue" if c.anchor.fitted else "tab:green")
        ax.plot([c.anchor.low, c.anchor.high], [y, y], color="0.75", lw=6,
                solid_capstyle="butt")
        ax.plot(c.anchor.target, y, marker="|", color="k", markersize=12)
        ax.errorbar(c.simulated, y, xerr=[[max(c.simulated - c.ci[0], 0)],
                                          [max(c.ci[1] - c.simulated, 0)]],
                    fmt="o", color=color, capsize=2, markersize=4)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([c.anchor.label for c in reversed(rows)], fontsize=7)
    ax.set_xlabel("rate (tick: target; grey: accepted range; dot: simulated, 95% CI)")
    ax.set_title("anchors: fitted (blue), checked (green), validation (orange)", fontsize=9)
    for i, p in enumerate(report.pairs):
        ia = p.independent_action
        bx.plot([ia - IA_LOW, ia + IA_HIGH], [i, i], color="0.75", lw=6,
                solid_capstyle="butt")
        bx.plot(ia, i, marker="|", color="k", markersize=12)
        bx.plot(p.combination, i, "o", color="tab:green" if p.within else "tab:red")
    bx.set_yticks(range(len(report.pairs)))
    bx.set_yticklabels([f"{p.pair.combination.trial}" for p in report.pairs], fontsize=7)
    bx.set_xlabel("combination ORR (tick: independent action; grey: accepted band)")
    bx.set_title("independent action on the same patients", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def format_days(days: float) -> str:
    return "not reached" if math.isinf(days) else f"{days:.0f}"
