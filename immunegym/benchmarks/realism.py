"""Realism checks of the ground truth: what an oncologist would find wrong in ImmuneSim.

``immunegym bench realism --json realism.json`` runs four checks with the shipped
parameters and reports their figures (the tests assert the same properties on smaller
cohorts):

* ``random_vs_guideline``: the leaderboard's random agent (random dose levels of every
  therapy each cycle) against guideline standard of care in ImmuneSim-v0 over one year (17
  cycles) on the leaderboard's held-out patients: return, progression-free cycles, one-year
  survival, grade >= 3 events, treatment deaths, with paired bootstrap intervals of the
  differences (random minus guideline, patients resampled).
* ``all_five``: every therapy at the standard dose every cycle for a year (treated through
  progression) against each cancer type's guideline regimen, on the same patients: share
  with a therapy stopped for toxicity, unfit or dead by day 84; share still given the full
  regimen (every planned drug at its full dose) at cycles 5, 6 and 7; treatment-related
  deaths.
* ``neutrophils``: one standard chemotherapy dose: day of the nadir, nadir and day-21
  counts relative to baseline (Friberg 2002: nadir about a week after the dose, recovery by
  the next cycle).
* ``checkmate067_pfs``: median PFS of nivolumab and of nivolumab + ipilimumab on the same
  simulated patients, with CheckMate 067's scan schedule.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ONE_YEAR_CYCLES = 17


def paired_difference(a: np.ndarray, b: np.ndarray, *, seed: int = 0,
                      n_boot: int = 2000) -> dict[str, Any]:
    """Mean of ``a - b`` over the same patients with a patient-bootstrap 95% interval."""
    from immunegym.benchmarks.common import bootstrap_mean

    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return {"mean": float(diff.mean()), "ci95": bootstrap_mean(diff, seed=seed, n=n_boot),
            "n": len(diff)}


def random_vs_guideline(n_patients: int = 256, *, seed: int = 0) -> dict[str, Any]:
    """The random agent and standard of care in ImmuneSim-v0 over one year."""
    from agents.random import RandomAgent
    from agents.standard_of_care import StandardOfCare
    from immunegym.planning.evaluate import evaluate_policy, leaderboard_scenario

    scenario = leaderboard_scenario(held_out=True, horizon=ONE_YEAR_CYCLES,
                                    n_patients=n_patients)
    runs = {name: evaluate_policy(agent, "sim", scenario, seed=seed)
            for name, agent in (("random", RandomAgent(seed)),
                                ("standard_of_care", StandardOfCare()))}
    metrics = {
        "return": lambda e: e.returns,
        "pfs_cycles": lambda e: e.pfs_cycles,
        "alive_at_one_year": lambda e: ~e.died,
        "grade3_events": lambda e: e.cost,
    }
    out: dict[str, Any] = {"n_patients": n_patients, "cycles": ONE_YEAR_CYCLES}
    for name, run in runs.items():
        out[name] = {k: float(np.mean(f(run))) for k, f in metrics.items()}
        out[name]["orr"] = float(run.responder.mean())
    out["random_minus_guideline"] = {
        k: paired_difference(f(runs["random"]), f(runs["standard_of_care"]), seed=seed)
        for k, f in metrics.items()}
    return out


def plan_regimen(plan: str, cycles: int = ONE_YEAR_CYCLES, cycle_days: int = 21):
    """An ImmuneSim :class:`~immunegym.sim.therapy.Regimen` that gives a planning-grammar
    plan (``"anti_pd1+anti_ctla4 q3w x4 -> anti_pd1"``) cycle by cycle, as the env does."""
    from immunegym.data.vocab import THERAPIES
    from immunegym.planning.regimen import parse_plan
    from immunegym.sim.pk import RADIO_STANDARD_GY
    from immunegym.sim.therapy import Regimen, TherapySchedule

    doses = parse_plan(plan).cycle_doses(cycles, cycle_days)
    schedules = []
    for column, therapy in enumerate(THERAPIES):
        given = np.flatnonzero(doses[:, column] > 0)
        if not len(given):
            continue
        if therapy == "radio":
            days = [c * cycle_days + d for c in given for d in range(3)]
            amounts = [float(doses[c, column]) * RADIO_STANDARD_GY for c in given for _ in
                       range(3)]
        elif therapy == "targeted":
            days = [c * cycle_days + d for c in given for d in range(cycle_days)]
            amounts = [float(doses[c, column]) for c in given for _ in range(cycle_days)]
        else:
            days = [int(c) * cycle_days for c in given]
            amounts = [float(doses[c, column]) for c in given]
        schedules.append(TherapySchedule(therapy, days=tuple(days), doses=tuple(amounts)))
    return Regimen(tuple(schedules), plan)


def full_regimen(given: np.ndarray, planned: np.ndarray, day: int) -> float:
    """Share of patients given every drug ``planned`` for ``day`` at its full dose.

    ``given`` is ``(n, days, 5)`` as recorded by ``ImmuneSim.run(record_given=True)``;
    ``planned`` is the ``(days, 5)`` :func:`~immunegym.sim.therapy.dose_calendar`. NaN
    when nothing is planned on ``day``.
    """
    want = np.asarray(planned)[day]
    got = np.asarray(given)[:, day]
    on = want > 0
    if not on.any():
        return float("nan")  # nothing planned that day (e.g. a guideline's induction ended)
    return float((got[:, on] >= want[on] * (1 - 1e-4)).all(-1).mean())


def all_five_vs_guideline(n_per_type: int = 200, *, seed: int = 0) -> dict[str, Any]:
    """Every therapy every cycle against each type's guideline regimen, same patients."""
    from immunegym.planning.regimen import STANDARD_OF_CARE
    from immunegym.sim import ImmuneSim, load_parameters
    from immunegym.sim.therapy import Regimen, TherapySchedule, dose_calendar
    from immunegym.sim.toxicity import STOP_REASONS

    everything = Regimen(tuple(
        TherapySchedule(t, interval_days=21, n_doses=ONE_YEAR_CYCLES,
                        dose=8.0 if t == "radio" else 1.0)
        for t in ("anti_pd1", "anti_ctla4", "chemo", "radio", "targeted")), "all five")
    out: dict[str, Any] = {"n_per_type": n_per_type, "types": {}}
    for k, cancer in enumerate(sorted(load_parameters().cancer_types)):
        sim = ImmuneSim(seed=seed + k)
        patients, state = sim.reset(sim.sample_patients(cancer, n_per_type))
        row: dict[str, Any] = {}
        guideline = plan_regimen(STANDARD_OF_CARE[cancer])
        for name, regimen in (("all_five", everything), ("guideline", guideline)):
            sim.generator.manual_seed(seed + 100 + k)
            course = sim.run(patients, regimen, 365, state=state, record_given=True,
                             stop_on_progression=False)
            tox = course.state.tox
            planned = dose_calendar(regimen, 365)
            stopped = ((tox.stop_day >= 0) & (tox.stop_day <= 84)
                       & (tox.stop_reason != STOP_REASONS.index("progression"))).any(-1)
            dead = (course.state.death_day >= 0) & (course.state.death_day <= 84)
            row[name] = {
                "off_treatment_by_day_84": float((stopped | dead).float().mean()),
                "unfit": float((tox.stop_reason == STOP_REASONS.index("unfit")).any(-1)
                               .float().mean()),
                "treatment_deaths": float(tox.treatment_death.float().mean()),
                "grade3_events_per_patient": float(tox.ae_count.float().mean()),
                **{f"full_regimen_at_cycle_{c + 1}": full_regimen(course.given, planned,
                                                                  c * 21)
                   for c in (4, 5, 6)},
            }
        row["guideline_regimen"] = guideline.name
        out["types"][cancer] = row
    return out


def neutrophils(n_patients: int = 400, *, seed: int = 0) -> dict[str, Any]:
    """Nadir timing and recovery after one standard chemotherapy dose (NSCLC patients)."""
    from immunegym.sim import ImmuneSim
    from immunegym.sim.simulator import TOXICITY_TRACE
    from immunegym.sim.therapy import Regimen, TherapySchedule

    sim = ImmuneSim(seed=seed)
    patients = sim.sample_patients("nsclc", n_patients)
    course = sim.run(patients, Regimen((TherapySchedule("chemo", days=(0,)),), "chemo x1"),
                     42, record_every=1, stop_on_progression=False)
    anc = course.toxicity[:, :, TOXICITY_TRACE.index("anc")]
    baseline = anc[0]
    nadir_day = anc[:22].argmin(0)
    return {
        "n_patients": n_patients,
        "nadir_day_median": float(np.median(nadir_day)),
        "nadir_day_iqr": [float(q) for q in np.quantile(nadir_day, [0.25, 0.75])],
        "nadir_relative_median": float(np.median(anc[:22].min(0) / baseline)),
        "day21_relative_median": float(np.median(anc[21] / baseline)),
        "fit_for_next_cycle_day21": float((anc[21] >= 1.5).mean()),
        "grade3_4": float((anc[:22].min(0) < 1.0).mean()),
        "grade4": float((anc[:22].min(0) < 0.5).mean()),
    }


def checkmate067_pfs(n_patients: int = 2000, *, seed: int = 0) -> dict[str, Any]:
    """Median PFS (days) of nivolumab and of the combination, same patients."""
    from immunegym.sim import load_parameters
    from immunegym.sim.calibrate import CM067_COMBO, CM067_NIVO, simulate_arms

    results = simulate_arms(load_parameters(), [CM067_NIVO, CM067_COMBO], n_patients, seed)
    return {name: {"median_pfs_days": results[arm].median_pfs_days,
                   "median_pfs_ci": list(results[arm].median_pfs_ci),
                   "orr": results[arm].orr,
                   "responder_progression_rate": results[arm].responder_progression_rate}
            for name, arm in (("nivolumab", CM067_NIVO),
                              ("nivolumab_ipilimumab", CM067_COMBO))} | {
        "n_patients": n_patients}


def run(*, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Every realism check (smaller cohorts with ``quick``)."""
    scale = 4 if quick else 1
    return {
        "random_vs_guideline": random_vs_guideline(256 // scale, seed=seed),
        "all_five": all_five_vs_guideline(200 // scale, seed=seed),
        "neutrophils": neutrophils(400 // scale, seed=seed),
        "checkmate067_pfs": checkmate067_pfs(2000 // scale, seed=seed),
    }
