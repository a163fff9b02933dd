"""The regimen algebra: text <-> plan <-> per-cycle doses, names, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from immunegym.data.vocab import THERAPIES
from immunegym.planning.regimen import (
    CYCLE_WEEKS,
    STANDARD_OF_CARE,
    STANDARD_REGIMENS,
    Phase,
    RegimenPlan,
    parse_plan,
    standard_of_care,
)

PD1, CTLA4, CHEMO, RADIO, TARGETED = (THERAPIES.index(t) for t in
                                      ("anti_pd1", "anti_ctla4", "chemo", "radio", "targeted"))

TEXTS = [
    "anti_pd1 q3w x35",
    "anti_pd1+anti_ctla4 q3w x4 -> anti_pd1",
    "chemo+anti_pd1@0.5 q3w x4 -> anti_pd1 q6w x8",
    "none x2 -> anti_pd1",
    "radio@2+targeted q6w",
    "anti_pd1@0.3333333 x2 -> none",
    "none",
]


@pytest.mark.parametrize("text", TEXTS)
def test_print_parse_round_trip(text: str) -> None:
    plan = parse_plan(text)
    assert parse_plan(str(plan)) == plan
    assert str(parse_plan(str(plan))) == str(plan)


def test_canonical_text() -> None:
    # q3w is the default and is not printed; therapies print in THERAPIES order.
    assert str(parse_plan("anti_pd1 q3w x35")) == "anti_pd1 x35"
    assert (str(parse_plan("chemo+anti_pd1@0.5 q3w x4 -> anti_pd1 q6w x8"))
            == "anti_pd1@0.5+chemo x4 -> anti_pd1 q6w x8")
    assert str(parse_plan("anti_ctla4+anti_pd1 x4")) == "anti_pd1+anti_ctla4 x4"
    assert str(parse_plan("none x2 -> anti_pd1")) == "none x2 -> anti_pd1"


def test_structure() -> None:
    plan = parse_plan("chemo+anti_pd1@0.5 q3w x4 -> anti_pd1 q6w x8")
    first, second = plan.phases
    assert first == Phase((("anti_pd1", 0.5), ("chemo", 1.0)), CYCLE_WEEKS, 4)
    assert second == Phase((("anti_pd1", 1.0),), 6, 8)
    assert plan.therapies == ("anti_pd1", "chemo")
    assert parse_plan(plan) is plan
    assert parse_plan("none").phases == (Phase((), CYCLE_WEEKS, None),)


@pytest.mark.parametrize("name", sorted(STANDARD_REGIMENS))
def test_standard_names(name: str) -> None:
    assert parse_plan(name) == parse_plan(STANDARD_REGIMENS[name])


@pytest.mark.parametrize("cancer_type", sorted(STANDARD_OF_CARE))
def test_standard_of_care_parses(cancer_type: str) -> None:
    plan = standard_of_care(cancer_type)
    assert plan == parse_plan(STANDARD_REGIMENS[STANDARD_OF_CARE[cancer_type]])
    assert plan.cycle_doses(12).shape == (12, len(THERAPIES))


def test_cycle_doses_q6w_every_other_cycle_and_untreated_after() -> None:
    doses = parse_plan("anti_pd1 q6w x3").cycle_doses(8)
    assert doses.shape == (8, len(THERAPIES))
    np.testing.assert_array_equal(doses[:, PD1], [1, 0, 1, 0, 1, 0, 0, 0])
    assert doses[:, [CTLA4, CHEMO, RADIO, TARGETED]].sum() == 0


def test_cycle_doses_phases_and_cut_at_horizon() -> None:
    doses = parse_plan("chemo+anti_pd1@0.5 q3w x4 -> anti_pd1 q6w x8").cycle_doses(7)
    np.testing.assert_array_equal(doses[:, CHEMO], [1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(doses[:, PD1], [0.5, 0.5, 0.5, 0.5, 1, 0, 1])
    # Cut at the horizon: a long plan gives exactly `horizon` rows.
    assert parse_plan("anti_pd1 x35").cycle_doses(3).tolist() == \
        [[1.0, 0, 0, 0, 0]] * 3


def test_cycle_doses_open_last_phase_runs_to_horizon() -> None:
    doses = parse_plan("none x2 -> anti_pd1").cycle_doses(5)
    np.testing.assert_array_equal(doses[:, PD1], [0, 0, 1, 1, 1])
    doses = parse_plan("anti_pd1+anti_ctla4 x4 -> anti_pd1").cycle_doses(6)
    np.testing.assert_array_equal(doses[:, CTLA4], [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(doses[:, PD1], [1, 1, 1, 1, 1, 1])
    assert not parse_plan("none").cycle_doses(4).any()


def test_cycle_doses_weekly_cycles() -> None:
    # With 7-day cycles, q3w doses every third cycle.
    doses = parse_plan("anti_pd1 x2").cycle_doses(7, cycle_days=7)
    np.testing.assert_array_equal(doses[:, PD1], [1, 0, 0, 1, 0, 0, 0])


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("horizon", [1, 5, 12])
def test_from_cycle_doses_round_trip(text: str, horizon: int) -> None:
    doses = parse_plan(text).cycle_doses(horizon)
    plan = RegimenPlan.from_cycle_doses(doses)
    np.testing.assert_array_equal(plan.cycle_doses(horizon), doses)
    # Its text parses back to the same plan.
    assert parse_plan(str(plan)) == plan


def test_from_cycle_doses_merges_repeats() -> None:
    doses = np.zeros((6, len(THERAPIES)), np.float32)
    doses[:3, PD1] = doses[:3, CTLA4] = 1
    doses[3:, PD1] = 1
    assert str(RegimenPlan.from_cycle_doses(doses)) == "anti_pd1+anti_ctla4 x3 -> anti_pd1 x3"


@pytest.mark.parametrize("text, needle", [
    ("anti_pd2", "'anti_pd2'"),
    ("anti_pd1+anti_pd1", "twice"),
    ("Anti_PD2", "not a therapy"),  # case is ignored ("Anti_PD1" is anti_pd1): one grammar
    ("none+anti_pd1", "not a therapy"),
    ("anti_pd1 -> chemo", "only the last phase"),
    ("anti_pd1 q3w q6w", "'q6w'"),
    ("anti_pd1 x2 x3", "'x3'"),
    ("anti_pd1 weekly", "'weekly'"),
    ("anti_pd1@0", "dose multiples"),
    ("anti_pd1@abc", "'anti_pd1@abc'"),
    ("anti_pd1@-1", "@dose"),
    ("anti_pd1 x0", "doses"),
    ("anti_pd1 q0w", "every_weeks"),
    ("anti_pd1 x2 ->", "empty phase"),
    ("", "regimen"),
    ("   ", "regimen"),
])
def test_parse_errors(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_plan(text)
    assert needle in str(err.value)


def test_parse_rejects_non_text() -> None:
    with pytest.raises(ValueError, match="regimen"):
        parse_plan(3)  # type: ignore[arg-type]


def test_schedule_not_whole_cycles() -> None:
    plan = parse_plan("anti_pd1 q2w x4")  # parses: a 2-week schedule is valid text
    with pytest.raises(ValueError, match="every_weeks.*14 days.*21-day cycles"):
        plan.cycle_doses(4)
    # ... and lays out in weekly cycles.
    np.testing.assert_array_equal(plan.cycle_doses(4, cycle_days=7)[:, PD1], [1, 0, 1, 0])


@pytest.mark.parametrize("horizon", [0, -1, 2.5, True, "3"])
def test_bad_horizon(horizon: object) -> None:
    with pytest.raises(ValueError, match="horizon"):
        parse_plan("anti_pd1").cycle_doses(horizon)  # type: ignore[arg-type]


def test_phase_and_plan_validation() -> None:
    with pytest.raises(ValueError, match="unknown therapy"):
        Phase((("aspirin", 1.0),))
    with pytest.raises(ValueError, match="dose multiples"):
        Phase((("anti_pd1", float("nan")),))
    with pytest.raises(ValueError, match="at least one phase"):
        RegimenPlan(())
    with pytest.raises(ValueError, match="doses: shape"):
        RegimenPlan.from_cycle_doses(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="no standard of care"):
        standard_of_care("glioma")
