"""One regimen grammar: run_trial, the data vocabulary, the simulator and planning read the
same strings, refuse the same strings with the same message, and give words one meaning."""

from __future__ import annotations

import numpy as np
import pytest

from immunegym.data.vocab import parse_regimen as vocab_parse_regimen
from immunegym.planning import parse_plan
from immunegym.regimen_grammar import (
    GRAMMAR,
    STANDARD_REGIMENS,
    THERAPIES,
    parse_therapy_set,
)
from immunegym.regimen_grammar import parse_plan as grammar_parse_plan
from immunegym.sim import ImmuneSim, dose_calendar, run_trial
from immunegym.sim.therapy import parse_regimen as sim_parse_regimen
from immunegym.validation import ValidationError

CHEMO = THERAPIES.index("chemo")
PD1 = THERAPIES.index("anti_pd1")
CTLA4 = THERAPIES.index("anti_ctla4")

ACCEPTED = [
    "anti_pd1+anti_ctla4 q3w x4 -> anti_pd1",
    "nivolumab_ipilimumab",
    "chemo",
    "Combo",
    "PD1 & CTLA4",
    "Anti_PD1",
    "chemo+anti_pd1@0.5 q3w x4 -> anti_pd1 q6w x8",
    "none",
]

REJECTED = [
    "anti_pd2",
    "anti_pd1+anti_pd1",
    "none+anti_pd1",
    "anti_pd1 -> chemo",
    "anti_pd1 weekly",
    "anti_pd1@-1",
    "anti_pd1@nan",
    "anti_pd1@5",
    "chemo@2",
    "anti_pd1 x0",
    "anti_pd1 x1000000000",
    "anti_pd1 x2 ->",
]


def _message(call) -> str:
    with pytest.raises(ValidationError) as err:
        call()
    return str(err.value)


def test_plan_is_the_planning_api_and_the_grammar_module() -> None:
    assert parse_plan is grammar_parse_plan
    assert parse_plan("nivolumab_ipilimumab").cycle_doses(horizon=8).shape == (8, 5)


@pytest.mark.parametrize("text", ACCEPTED)
def test_every_reader_accepts_the_same_strings(text: str) -> None:
    plan = parse_plan(text)
    assert vocab_parse_regimen(text) == plan.therapies
    assert sim_parse_regimen(text).therapies == plan.therapies


def test_run_trial_accepts_the_planning_strings() -> None:
    # Same seed, same patients: the phased text and its standard name are the same arm.
    a = run_trial("melanoma", "anti_pd1+anti_ctla4 q3w x4 -> anti_pd1", 3, 1,
                  follow_up_days=21)
    b = run_trial("melanoma", "nivolumab_ipilimumab", 3, 1, follow_up_days=21)
    assert a.regimen == "anti_pd1+anti_ctla4 x4 -> anti_pd1"
    np.testing.assert_array_equal(a.patients["antigenicity"], b.patients["antigenicity"])
    assert a.best_response == b.best_response


@pytest.mark.parametrize("text", REJECTED)
def test_every_reader_refuses_with_the_same_message(text: str) -> None:
    messages = {
        "parse_plan": _message(lambda: parse_plan(text)),
        "vocab": _message(lambda: vocab_parse_regimen(text, field="regimen")),
        "sim": _message(lambda: sim_parse_regimen(text)),
        "run_trial": _message(lambda: run_trial("melanoma", text, 3, 0)),
    }
    assert len(set(messages.values())) == 1, messages
    message = messages["parse_plan"]
    assert message.startswith("regimen: got ")
    assert GRAMMAR in message  # the grammar and the known names, every time
    assert "nivolumab_ipilimumab" in message and "anti_ctla4" in message


def test_typo_gets_the_nearest_name() -> None:
    with pytest.raises(ValidationError, match=r"regimen: .*did you mean 'anti_pd1'"):
        run_trial("melanoma", "anti_pd2", 3, 0)
    with pytest.raises(ValidationError, match=r"did you mean 'nivolumab_ipilimumab'"):
        parse_plan("nivolumab_ipilimumb")


@pytest.mark.parametrize("value", [3, 1.5, ["anti_pd1"]])
def test_non_text_is_refused_everywhere(value: object) -> None:
    for call in (lambda: parse_plan(value), lambda: sim_parse_regimen(value),
                 lambda: vocab_parse_regimen(value, field="regimen")):
        with pytest.raises(ValidationError, match="regimen: got"):
            call()


def test_chemo_means_four_cycles_everywhere() -> None:
    expected = [1, 1, 1, 1, 0, 0, 0, 0]
    # Planning (the envs' per-cycle layout).
    assert parse_plan("chemo").cycle_doses(8)[:, CHEMO].tolist() == expected
    # The simulator's day-by-day calendar, summed per 21-day cycle.
    calendar = dose_calendar("chemo", 8 * 21)
    assert calendar[:, CHEMO].reshape(8, 21).sum(1).tolist() == expected
    # The named standard regimen is the same regimen.
    assert np.array_equal(dose_calendar("platinum_doublet", 365), dose_calendar("chemo", 365))
    assert np.array_equal(parse_plan("platinum_doublet").cycle_doses(8),
                          parse_plan("chemo").cycle_doses(8))
    # The data layer reads it as the chemo therapy.
    assert vocab_parse_regimen("chemo") == ("chemo",)
    assert parse_therapy_set("chemo") == ("chemo",)


def test_chemo_every_cycle_must_be_written_out() -> None:
    doses = parse_plan("chemo x8").cycle_doses(8)[:, CHEMO]
    assert doses.tolist() == [1] * 8


@pytest.mark.parametrize("name", sorted(STANDARD_REGIMENS))
def test_standard_regimens_equal_their_bare_sets(name: str) -> None:
    bare = "+".join(parse_plan(name).therapies) or "none"
    assert np.array_equal(parse_plan(name).cycle_doses(40), parse_plan(bare).cycle_doses(40))
    assert np.array_equal(dose_calendar(name, 730), dose_calendar(bare, 730))


def test_run_trial_simulates_a_phased_regimen() -> None:
    text = "anti_pd1+anti_ctla4 q3w x4 -> anti_pd1"
    calendar = dose_calendar(text, 8 * 21)
    per_cycle = calendar.reshape(8, 21, -1).sum(1)
    np.testing.assert_array_equal(per_cycle, parse_plan(text).cycle_doses(8))
    assert per_cycle[:, CTLA4].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert per_cycle[:, PD1].tolist() == [1] * 8
    # The simulator gives it: anti-CTLA-4 on days 0, 21, 42, 63 and never after.
    sim = ImmuneSim(seed=0)
    patients, state = sim.reset(sim.sample_patients("melanoma", 3), burn_in_days=1)
    course = sim.run(patients, text, 90, state=state, record_given=True,
                     stop_on_progression=False)
    ctla4_days = np.flatnonzero(course.given[:, :, CTLA4].max(0) > 0)
    assert set(ctla4_days) <= {0, 21, 42, 63} and 0 in ctla4_days
    assert (course.given[:, 84, PD1] > 0).any()


def test_a_later_phase_differs_from_the_first() -> None:
    text = "chemo x2 -> anti_pd1 x2"
    per_cycle = dose_calendar(text, 6 * 21).reshape(6, 21, -1).sum(1)
    assert per_cycle[:, CHEMO].tolist() == [1, 1, 0, 0, 0, 0]
    assert per_cycle[:, PD1].tolist() == [0, 0, 1, 1, 0, 0]


@pytest.mark.parametrize("text", ["anti_pd1+chemo", "Combo", "none", "radio+anti_pd1",
                                  "pembrolizumab", "nivolumab_ipilimumab", "Chemo_Pembrolizumab"])
def test_therapy_sets_for_menus(text: str) -> None:
    assert parse_therapy_set(text, field="menu") == parse_plan(text).therapies


@pytest.mark.parametrize("text", ["chemo x4", "anti_pd1 -> chemo x2", "anti_pd1@0.5",
                                  "anti_pd1 q6w", "laser"])
def test_therapy_sets_refuse_schedules_and_unknown_words(text: str) -> None:
    with pytest.raises(ValidationError, match="menu: got"):
        parse_therapy_set(text, field="menu")


def test_vocab_missing_values_stay_missing() -> None:
    assert vocab_parse_regimen(None) is None
    assert vocab_parse_regimen(float("nan")) is None
    assert vocab_parse_regimen("  ") is None


@pytest.mark.parametrize("dose", ["1", True, float("nan"), -1.0, 0.0, 5.0])
def test_phase_refuses_bad_dose_multiples(dose: object) -> None:
    from immunegym.planning import Phase

    with pytest.raises(ValidationError, match="therapies: .*anti_pd1"):
        Phase((("anti_pd1", dose),))


@pytest.mark.parametrize("value", [float("nan"), -1.0])
def test_cycle_doses_refuse_nan_and_negative(value: float) -> None:
    from immunegym.planning import RegimenPlan

    doses = np.zeros((3, len(THERAPIES)), np.float32)
    doses[1, PD1] = value
    with pytest.raises(ValidationError, match="doses: got negative or non-finite"):
        RegimenPlan.from_cycle_doses(doses)


def test_huge_horizon_is_refused_not_allocated() -> None:
    with pytest.raises(ValidationError, match="horizon: got 1000000000000"):
        parse_plan("anti_pd1").cycle_doses(10**12)
