"""ImmuneSim v2 realism checks: what an oncologist would find wrong in the ground truth.

These run the shipped, calibrated parameters on modest cohorts and assert with margins;
``immunegym sim calibrate`` checks the anchors and the independent-action band at n=4000.
"""

from __future__ import annotations

import numpy as np
import pytest

from immunegym.sim import ImmuneSim, run_trial
from immunegym.sim.calibrate import CM067_COMBO, CM067_NIVO, PAIRS, _pair_check, simulate_arms
from immunegym.sim.outcomes import CR, PR
from immunegym.sim.therapy import Regimen, TherapySchedule
from immunegym.sim.toxicity import STOP_REASONS

ONE_YEAR_CYCLES = 17
ALL_FIVE = Regimen(tuple(
    TherapySchedule(t, interval_days=21, n_doses=ONE_YEAR_CYCLES,
                    dose=8.0 if t == "radio" else 1.0)
    for t in ("anti_pd1", "anti_ctla4", "chemo", "radio", "targeted")), "all five")


def test_plan_regimen_gives_the_plan_cycle_by_cycle():
    from immunegym.benchmarks.realism import plan_regimen
    from immunegym.sim.therapy import dose_calendar

    regimen = plan_regimen("anti_pd1+anti_ctla4 q3w x4 -> anti_pd1", cycles=8)
    calendar = dose_calendar(regimen, 8 * 21)
    assert calendar[::21, 1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert calendar[::21, 0].tolist() == [1] * 8
    assert calendar.sum(0)[2:].tolist() == [0, 0, 0]


@pytest.fixture(scope="module")
def random_and_guideline():
    """The leaderboard's held-out patients over one year in ImmuneSim-v0
    (`immunegym bench realism` reports the same at n = 256 with paired intervals)."""
    from immunegym.benchmarks.realism import random_vs_guideline

    result = random_vs_guideline(96)
    return result["random"], result["standard_of_care"]


def test_random_dosing_does_not_beat_standard_of_care(random_and_guideline):
    random, guideline = random_and_guideline
    assert random["return"] < guideline["return"]
    assert random["grade3_events"] > guideline["grade3_events"] + 1.0


@pytest.mark.xfail(strict=True, reason=(
    "known miss (issue 15): random dosing gives chemotherapy, which the trials themselves "
    "show gives longer PFS than the pembrolizumab monotherapy that is standard of care in "
    "HNSCC and urothelial cancer (KEYNOTE-048, KEYNOTE-045); without chemotherapy the random "
    "agent's PFS is within 0.4 cycles of standard of care's. See BENCHMARKS.md, ImmuneSim "
    "v2 realism."))
def test_random_dosing_progression_free_time_and_survival(random_and_guideline):
    random, guideline = random_and_guideline
    assert random["pfs_cycles"] <= guideline["pfs_cycles"]
    assert random["alive_at_one_year"] <= guideline["alive_at_one_year"]


def test_all_five_drugs_every_cycle_cannot_continue_and_kill():
    from immunegym.benchmarks.realism import full_regimen, plan_regimen
    from immunegym.planning.regimen import STANDARD_OF_CARE
    from immunegym.sim.therapy import dose_calendar

    sim = ImmuneSim(seed=3)
    patients = sim.sample_patients("melanoma", 300)
    patients, state = sim.reset(patients)
    courses = {}
    # Against melanoma's guideline regimen (nivolumab + ipilimumab x4, then nivolumab).
    guideline = plan_regimen(STANDARD_OF_CARE["melanoma"])
    for name, regimen in (("all", ALL_FIVE), ("guideline", guideline), ("nivo", "anti_pd1")):
        sim.generator.manual_seed(4)
        courses[name] = sim.run(patients, regimen, 365, state=state, record_given=True,
                                stop_on_progression=False)
    everything = courses["all"]
    # Most patients no longer get the full regimen at cycle 7 (day 126), after six
    # cycles: a drug stopped, held, reduced or delayed, the patient unfit or dead
    # (0.41 measured; 0.56 still get it at cycle 5).
    assert full_regimen(everything.given, dose_calendar(ALL_FIVE, 365), 126) < 0.5
    # A drug stopped for toxicity, unfit or dead within four cycles (0.33 measured), and
    # unfit within the year (0.37 measured).
    stop_day = everything.state.tox.stop_day.numpy()
    death = everything.state.death_day.numpy()
    off = (((stop_day >= 0) & (stop_day <= 84)).any(-1) | ((death >= 0) & (death <= 84)))
    assert off.mean() > 0.2
    tox = everything.state.tox
    unfit = (tox.stop_reason == STOP_REASONS.index("unfit")).any(-1)
    assert unfit.float().mean() > 0.2
    deaths = {k: float(c.state.tox.treatment_death.float().mean()) for k, c in courses.items()}
    assert deaths["all"] > max(deaths["guideline"], deaths["nivo"]) + 0.02


@pytest.fixture(scope="module")
def checkmate067():
    """CheckMate 067's nivolumab and combination arms on the same 1000 patients."""
    from immunegym.sim.parameters import load_parameters

    return simulate_arms(load_parameters(), [CM067_NIVO, CM067_COMBO], 1000, 1)


def test_checkmate067_combination_response_exceeds_nivolumab(checkmate067):
    results = checkmate067
    assert results[CM067_COMBO].orr > results[CM067_NIVO].orr + 0.05
    progressive = {arm: float((r.patients["best_response"] == "PD").mean())
                   for arm, r in results.items()}
    assert progressive[CM067_COMBO] < progressive[CM067_NIVO]


@pytest.mark.xfail(strict=True, reason=(
    "known miss (issue 15): combination responders who stop for toxicity (31%) progress "
    "within two years at 56% against 17% for the same patients on nivolumab, whose PD-1 "
    "blockade continues; nivolumab's own median PFS (336 d) is above CheckMate 067's (6.9 mo) "
    "because 24% of patients hold stable disease. See BENCHMARKS.md, ImmuneSim v2."))
def test_checkmate067_combination_pfs_exceeds_nivolumab(checkmate067):
    results = checkmate067
    assert results[CM067_COMBO].median_pfs_days > results[CM067_NIVO].median_pfs_days


def test_melanoma_combination_is_near_independent_action():
    from immunegym.sim.parameters import load_parameters

    pair = PAIRS[0]
    results = simulate_arms(load_parameters(), [pair.first, pair.second, pair.combination],
                            1000, 2)
    check = _pair_check(pair, results)
    ia = check.independent_action
    # The strict band (IA - 0.03, IA + 0.08; <= 15% neither) is checked at n = 4000 by
    # `immunegym sim calibrate`; here a margin for n = 1000.
    assert ia - 0.06 <= check.combination <= ia + 0.11
    assert check.neither_share <= 0.2


def test_targeted_therapy_acts_only_in_driver_positive_patients():
    positive = run_trial("melanoma", "targeted", 300, 4, driver="BRAF_V600",
                         follow_up_days=365)
    wild = run_trial("melanoma", "targeted", 300, 4, driver="wild_type", follow_up_days=365)
    assert positive.orr > 0.4
    assert wild.orr < 0.03
    assert positive.patients["driver"].all() and not wild.patients["driver"].any()
    # Still toxic without the driver: the drug is given either way.
    assert wild.grade3_ae_rate > 0.1


def test_irradiated_lesion_leaves_the_target_sum():
    """Radiotherapy kills the treated lesion; RECIST excludes it, so a course alone is not a
    response (the other lesions keep growing)."""
    result = run_trial("melanoma", "radio", 300, 5, follow_up_days=365)
    assert result.orr < 0.1


def test_patients_are_identical_across_regimens_for_one_seed():
    a = run_trial("nsclc", "anti_pd1", 60, 7, follow_up_days=90)
    b = run_trial("nsclc", "chemo", 60, 7, follow_up_days=90)
    for column in ("phenotype", "antigenicity", "kill_reserve", "pdl1", "driver"):
        assert (a.patients[column] == b.patients[column]).all(), column
    assert (a.patients["patient"] == np.arange(60)).all()


def test_trial_result_reports_discontinuation_deaths_and_time_to_response():
    result = run_trial("melanoma", "anti_pd1+anti_ctla4", 300, 8, follow_up_days=365)
    assert 0 < result.discontinuation_rate < 1
    assert result.discontinuation_ci[0] <= result.discontinuation_rate
    assert 0 <= result.treatment_death_rate < 0.1
    responders = result.patients["responder"]
    assert result.median_time_to_response_days == pytest.approx(
        np.median(result.patients.loc[responders, "response_day"]))
    assert 40 <= result.median_time_to_response_days <= 150
    table = result.patients
    assert result.responder_progression_rate == pytest.approx(
        table.loc[responders, "pfs_event"].mean())
    summary = result.summary()
    for key in ("discontinuation_rate", "treatment_death_rate", "median_time_to_response_days",
                "grade3_ae_rate", "neutropenia_rate"):
        assert key in summary


def test_deeper_responses_do_not_progress_sooner():
    """Responders who reach CR progress no sooner than those who stay at PR."""
    sim = ImmuneSim(seed=9)
    patients = sim.sample_patients("melanoma", 800)
    course = sim.run(patients, "anti_pd1", 730)
    best = course.best_response
    pfs = course.pfs_day
    assert np.median(pfs[best == CR]) >= np.median(pfs[best == PR])
