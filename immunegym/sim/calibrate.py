"""Calibration of ImmuneSim to clinical anchors, and the report that checks it.

Fitted (SCIENCE.md, monotherapy only): objective response rates of the standard schedules per
cancer type, and the grade >= 3 irAE rates of anti-PD-1 and anti-CTLA-4. Each anchor has one
parameter it mainly moves (a cancer type's antigenicity, melanoma's anti-CTLA-4 depletion
efficiency, nsclc_pdl1_high's chemotherapy sensitivity, the two irAE hazards); the
parameters are fitted jointly in log space by :func:`scipy.optimize.least_squares` (trust
region, finite differences with the known sparsity of the anchor/parameter dependence, so a
Jacobian costs three simulations), with common random numbers (fixed seeds) so the objective
is a deterministic function of the parameters.

Combination arms are *validation*: they are simulated and reported next to published
figures, never fitted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import brentq

from immunegym._atomic import atomic_path
from immunegym.sim.parameters import PARAMETER_FILE, ParameterSet, load_parameters
from immunegym.sim.simulator import TRIAL_IMAGING, ImmuneSim
from immunegym.sim.trial import FOLLOW_UP_DAYS, TrialResult, summarize


@dataclass(frozen=True)
class Anchor:
    """One clinical figure the model should reproduce.

    Attributes
    ----------
    cancer_type, regimen
        The trial arm.
    metric
        ``"orr"`` or ``"grade3_irae_rate"``.
    target
        The published figure used as target.
    tolerance
        Acceptance half-width at n = 4000 (0.05 for ORR, 0.04 for irAE).
    parameter
        ``"cancer:<type>:<field>"`` or ``"rate:<name>"``: what the fit moves for this anchor;
        empty for validation anchors.
    source
        Where the figure comes from.
    """

    cancer_type: str
    regimen: str
    metric: str
    target: float
    tolerance: float
    parameter: str
    source: str

    @property
    def fitted(self) -> bool:
        return bool(self.parameter)

    @property
    def label(self) -> str:
        return f"{self.cancer_type} {self.regimen} {self.metric}"


def _orr(cancer: str, regimen: str, target: float, parameter: str, source: str) -> Anchor:
    return Anchor(cancer, regimen, "orr", target, 0.05, parameter, source)


ANCHORS: tuple[Anchor, ...] = (
    _orr("melanoma", "anti_pd1", 0.40, "cancer:melanoma:antigenicity",
         "CheckMate 067 nivolumab 43.7%, KEYNOTE-006 pembrolizumab 33%"),
    _orr("melanoma", "anti_ctla4", 0.15, "cancer:melanoma:ctla4_depletion",
         "CheckMate 067 19.0%, KEYNOTE-006 11.9%"),
    _orr("nsclc", "anti_pd1", 0.19, "cancer:nsclc:antigenicity", "pretreated, 17-20%"),
    _orr("nsclc_pdl1_high", "anti_pd1", 0.45, "cancer:nsclc_pdl1_high:antigenicity",
         "KEYNOTE-024 44.8%"),
    _orr("nsclc_pdl1_high", "chemo", 0.28, "cancer:nsclc_pdl1_high:chemo_sensitivity",
         "KEYNOTE-024 27.8%"),
    _orr("rcc", "anti_pd1", 0.25, "cancer:rcc:antigenicity", "pretreated, 21-27%"),
    _orr("urothelial", "anti_pd1", 0.21, "cancer:urothelial:antigenicity", "KEYNOTE-045"),
    _orr("hnscc", "anti_pd1", 0.16, "cancer:hnscc:antigenicity", "KEYNOTE-040 / CheckMate 141"),
    _orr("crc_msi", "anti_pd1", 0.40, "cancer:crc_msi:antigenicity", "Le 2015"),
    _orr("crc_mss", "anti_pd1", 0.02, "cancer:crc_mss:antigenicity", "0% in Le 2015"),
    _orr("tnbc", "anti_pd1", 0.05, "cancer:tnbc:antigenicity", "unselected, pretreated"),
    Anchor("melanoma", "anti_pd1", "grade3_irae_rate", 0.15, 0.04, "rate:irae_hazard_pd1",
           "14% pooled over 125 trials; 16.3% CheckMate 067"),
    Anchor("melanoma", "anti_ctla4", "grade3_irae_rate", 0.27, 0.04, "rate:irae_hazard_ctla4",
           "CheckMate 067"),
)
"""The fitted anchors (SCIENCE.md)."""

VALIDATION: tuple[Anchor, ...] = (
    Anchor("melanoma", "anti_pd1+anti_ctla4", "orr", 0.58, 0.05, "",
           "CheckMate 067 nivolumab + ipilimumab 57.6%"),
    Anchor("melanoma", "anti_pd1+anti_ctla4", "grade3_irae_rate", 0.59, 0.04, "",
           "CheckMate 067 grade 3-4 treatment-related AEs 59%"),
    Anchor("nsclc_pdl1_high", "anti_pd1+chemo", "orr", 0.62, 0.05, "",
           "KEYNOTE-189 TPS >= 50% subgroup 61.4%"),
)
"""Combination arms: reported against published figures, never fitted."""


def simulate_arms(
    params: ParameterSet,
    arms: Sequence[tuple[str, str]],
    n: int,
    seed: int,
    days: int = FOLLOW_UP_DAYS,
    device: str = "cpu",
) -> dict[tuple[str, str], TrialResult]:
    """Simulate several (cancer type, regimen) arms in one batch.

    Patients are drawn arm by arm from one seeded generator, so with the same seed and ``n``
    the same random numbers drive every evaluation (common random numbers).
    """
    sim = ImmuneSim(params, device=device, seed=seed)
    arms = list(dict.fromkeys(arms))
    cohorts = [sim.sample_patients(cancer, n) for cancer, _ in arms]
    patients = type(cohorts[0]).concat(cohorts)
    group = np.repeat(np.arange(len(arms)), n)
    course = sim.run(patients, [regimen for _, regimen in arms], days, group=group,
                     imaging=TRIAL_IMAGING)
    return {arm: summarize(course, group == k, cancer_type=arm[0], regimen=arm[1], seed=seed)
            for k, arm in enumerate(arms)}


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


_BOUNDS = {"antigenicity": (1e-3, 30.0), "ctla4_depletion": (1e-2, 200.0),
           "chemo_sensitivity": (1e-3, 10.0), "irae_hazard_pd1": (1e-6, 0.05),
           "irae_hazard_ctla4": (1e-6, 0.05)}

# Fit order: an anchor's outcome may depend on parameters fitted before it (the anti-CTLA-4
# response on melanoma antigenicity; irAE rates on how long responders stay on drug), never
# on those fitted after it, so one sweep solves the system; a second sweep absorbs the small
# feedback of irAE holds on response.
_ORDER = tuple(range(len(ANCHORS)))


def fit(
    params: ParameterSet | None = None,
    *,
    n: int = 2000,
    days: int = FOLLOW_UP_DAYS,
    seed: int = 12345,
    sweeps: int = 2,
    xtol: float = 0.01,
    device: str = "cpu",
    log=print,
) -> tuple[ParameterSet, dict[str, object]]:
    """Fit each anchor's parameter by Brent's method, sweeping the anchors in order.

    Each evaluation simulates the anchor's arm with ``n`` patients and a fixed seed (common
    random numbers), so the objective is a deterministic, monotone step function of the
    parameter; :func:`scipy.optimize.brentq` finds the crossing of the target in log space.
    An anchor whose target lies outside what its parameter range can reach gets the nearest
    endpoint and is reported as such.

    Returns
    -------
    (ParameterSet, dict)
        The fitted parameters and a record (method, per-anchor value, evaluations).
    """
    current = params if params is not None else load_parameters()
    record: dict[str, object] = {
        "method": "scipy.optimize.brentq per anchor in log parameter space, "
                  f"{sweeps} Gauss-Seidel sweeps, common random numbers",
        "n_per_arm": n, "follow_up_days": days, "seed": seed, "anchors": {},
    }
    evaluations = 0
    for sweep in range(sweeps):
        for k in _ORDER:
            anchor = ANCHORS[k]
            lo, hi = (math.log(b) for b in _BOUNDS[anchor.parameter.split(":")[-1]])
            cache: dict[float, float] = {}

            def gap(x: float, anchor: Anchor = anchor, cache=cache,
                    base: ParameterSet = current) -> float:
                nonlocal evaluations
                if x not in cache:
                    trial = _set(base, {anchor.parameter: math.exp(x)})
                    arm = (anchor.cancer_type, anchor.regimen)
                    result = simulate_arms(trial, [arm], n, seed, days, device)[arm]
                    cache[x] = getattr(result, anchor.metric) - anchor.target
                    evaluations += 1
                return cache[x]

            x_now = math.log(_get(current, anchor.parameter))
            x_now = min(max(x_now, lo), hi)
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
            record["anchors"][anchor.label] = {
                "parameter": anchor.parameter, "value": math.exp(x),
                "simulated": gap(x) + anchor.target, "target": anchor.target,
                "status": status}
            log(f"sweep {sweep + 1} {anchor.label}: {anchor.parameter} = {math.exp(x):.4g} "
                f"-> {gap(x) + anchor.target:.3f} (target {anchor.target}; {status})")
    record["evaluations"] = evaluations
    return current, record


@dataclass(frozen=True)
class AnchorCheck:
    """Target vs simulated for one anchor."""

    anchor: Anchor
    simulated: float
    ci: tuple[float, float]
    median_pfs_days: float

    @property
    def within(self) -> bool:
        return abs(self.simulated - self.anchor.target) <= self.anchor.tolerance


def check(params: ParameterSet | None = None, *, n: int = 4000, seed: int = 0,
          days: int = FOLLOW_UP_DAYS, include_validation: bool = True,
          device: str = "cpu") -> list[AnchorCheck]:
    """Simulate every anchor (and the validation arms) and compare with its target."""
    params = params if params is not None else load_parameters()
    anchors = list(ANCHORS) + (list(VALIDATION) if include_validation else [])
    arms = [(a.cancer_type, a.regimen) for a in anchors]
    results = simulate_arms(params, arms, n, seed, days, device)
    checks = []
    for a in anchors:
        r = results[(a.cancer_type, a.regimen)]
        ci = r.orr_ci if a.metric == "orr" else r.grade3_irae_ci
        checks.append(AnchorCheck(a, getattr(r, a.metric), ci, r.median_pfs_days))
    return checks


def write_parameters(params: ParameterSet, record: dict[str, object], path: Path,
                     version: str) -> Path:
    """Write the calibrated parameter file (versioned JSON), atomically."""
    data = params.to_json_dict()
    data["version"] = version
    data["meta"] = {"calibration": record,
                    "anchors": [a.__dict__ for a in ANCHORS]}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def default_parameter_path() -> Path:
    """Where the shipped calibrated parameter file lives in a source checkout."""
    return Path(__file__).parent / "calibrated" / PARAMETER_FILE


def plot_checks(checks: Sequence[AnchorCheck], path: Path) -> Path:
    """Target vs simulated (95% CI) for every anchor, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(checks) + 1.2))
    for i, c in enumerate(checks):
        y = len(checks) - 1 - i
        color = "tab:blue" if c.anchor.fitted else "tab:orange"
        ax.errorbar(c.simulated, y, xerr=[[c.simulated - c.ci[0]], [c.ci[1] - c.simulated]],
                    fmt="o", color=color, capsize=3)
        ax.plot([c.anchor.target - c.anchor.tolerance, c.anchor.target + c.anchor.tolerance],
                [y, y], color="0.7", lw=6, alpha=0.5, solid_capstyle="butt")
        ax.plot(c.anchor.target, y, marker="|", color="k", markersize=14)
    ax.set_yticks(range(len(checks)))
    ax.set_yticklabels([c.anchor.label + ("" if c.anchor.fitted else " (validation)")
                        for c in reversed(checks)], fontsize=8)
    ax.set_xlabel("rate (black tick: target; grey band: tolerance; dot: simulated, 95% CI)")
    ax.set_xlim(0, max(0.8, max(c.ci[1] for c in checks) + 0.05))
    ax.set_title("ImmuneSim calibration: fitted anchors (blue), validation (orange)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def format_pfs(days: float) -> str:
    return "not reached" if math.isinf(days) else f"{days:.0f}"


