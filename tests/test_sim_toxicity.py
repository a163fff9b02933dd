"""ImmuneSim v2 toxicity: neutrophils, irAEs, protocol rules, treatment deaths, bad input.

Mechanism tests run the same virtual patients (same seed) and assert a direction or a
timing with a margin; parameters that a test needs extreme are set explicitly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from immunegym.sim import ImmuneSim, load_parameters, run_trial
from immunegym.sim.simulator import TOXICITY_TRACE
from immunegym.sim.therapy import MAX_DOSE, Regimen, TherapySchedule, parse_regimen
from immunegym.sim.toxicity import (
    DEATH_CAUSES,
    STOP_REASONS,
    ProtocolRules,
    ToxState,
    neutropenia_grade,
    sample_tox_patients,
)

ANC = TOXICITY_TRACE.index("anc")


def chemo_course(n: int = 200, days: int = 42, seed: int = 3, params=None, rules=None):
    sim = ImmuneSim(params, seed=seed)
    patients = sim.sample_patients("nsclc", n)
    kwargs = {"rules": rules} if rules is not None else {}
    return sim.run(patients, Regimen((TherapySchedule("chemo", days=(0,)),), "chemo x1"),
                   days, record_every=1, record_given=True, stop_on_progression=False,
                   **kwargs)


# ----------------------------------------------------------------------------- neutrophils
def test_single_chemo_dose_gives_friberg_nadir_and_recovery():
    """Friberg 2002 (MTT ~89 h): the nadir comes about a week after the dose and counts
    recover by the next cycle (day 21)."""
    c = chemo_course()
    anc = c.toxicity[:, :, ANC]  # (days, patients)
    baseline = anc[0]
    nadir_day = anc[:22].argmin(0)
    assert 5 <= np.median(nadir_day) <= 12
    assert np.median(anc[:22].min(0) / baseline) < 0.5
    recovered = anc[21] / baseline
    assert np.median(recovered) > 0.8
    assert (anc[21] >= 1.5).mean() > 0.9  # fit for the next cycle by the label's rule


def test_higher_chemo_dose_lowers_the_nadir_more():
    sim = ImmuneSim(seed=4)
    patients = sim.sample_patients("nsclc", 200)
    patients, state = sim.reset(patients)
    nadirs = {}
    for dose in (0.5, 1.0, 1.5):
        sim.generator.manual_seed(9)
        regimen = Regimen((TherapySchedule("chemo", days=(0,), doses=(dose,)),), "chemo")
        c = sim.run(patients, regimen, 21, state=state, record_every=1)
        nadirs[dose] = np.median(c.toxicity[:, :, ANC].min(0))
    assert nadirs[0.5] > nadirs[1.0] > nadirs[1.5]


def test_chemo_is_delayed_while_neutrophils_are_low():
    # Doses every 10 days fall near the nadir: the label's rule (ANC >= 1.5) delays them.
    params = load_parameters().with_updates(rates={"fn_fatality": 0.0})
    sim = ImmuneSim(params, seed=5)
    patients = sim.sample_patients("nsclc", 100)
    regimen = Regimen((TherapySchedule("chemo", interval_days=10, n_doses=3),), "chemo q10d")
    c = sim.run(patients, regimen, 70, record_every=1, record_given=True,
                stop_on_progression=False)
    anc = c.toxicity[:-1, :, ANC]  # before each day's dose
    low = anc[10] < ProtocolRules().anc_to_dose
    assert low.mean() > 0.2
    assert not (c.given[low, 10, 2] > 0).any()  # delayed ...
    later = c.given[low, 11:40, 2].sum(1) > 0
    assert later.mean() > 0.5  # ... and given once counts recover (weekly re-check)
    delays = c.toxicity[-1, :, TOXICITY_TRACE.index("delays")]
    assert (delays > 0).mean() > 0.2
    # No dose is ever given on a day neutrophils are below the rule's threshold.
    dosed = c.given[:, :, 2].T > 0
    assert (anc[dosed] >= ProtocolRules().anc_to_dose).all()


def test_febrile_neutropenia_reduces_then_stops_chemotherapy():
    params = load_parameters().with_updates(
        rates={"chemo_marrow_slope": 6.0, "fn_hazard_severe": 0.5, "fn_fatality": 0.0})
    sim = ImmuneSim(params, seed=6)
    patients = sim.sample_patients("nsclc", 100)
    regimen = Regimen((TherapySchedule("chemo", interval_days=21, n_doses=8),), "chemo x8")
    # Isolate the reduction rule from the performance-status rule.
    rules = ProtocolRules(unfit_load=1e6)
    c = sim.run(patients, regimen, 200, record_given=True, stop_on_progression=False,
                rules=rules)
    tox = c.state.tox
    assert (tox.fn_episodes > 0).float().mean() > 0.8
    reductions = tox.reductions[:, 2]
    assert int(reductions.max()) <= ProtocolRules().max_reductions
    stopped = tox.stop_reason[:, 2] == STOP_REASONS.index("toxicity")
    assert stopped.float().mean() > 0.3
    # Reduced doses step down by the protocol's factor (100 -> 75 -> 56%), never up.
    given = c.given[:, :, 2]
    levels = np.unique(np.round(given[given > 0], 4))
    f = ProtocolRules().reduction_factor
    assert set(levels) <= {1.0, round(f, 4), round(f * f, 4)}
    assert round(f, 4) in levels
    for dose_row in given:
        doses = dose_row[dose_row > 0]
        assert (np.diff(doses) <= 1e-6).all()


def test_neutropenia_grades_follow_ctcae():
    anc = torch.tensor([2.5, 1.8, 1.2, 0.7, 0.3])
    assert neutropenia_grade(anc).tolist() == [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------- irAEs
def test_grade3_irae_holds_checkpoint_inhibitors_and_recurrence_stops_them():
    params = load_parameters().with_updates(
        rates={"irae_hazard_pd1": 0.02, "irae_stop_pd1": 0.0, "irae_grade4_fraction": 0.0,
               "irae_fatal_pd1": 0.0})
    sim = ImmuneSim(params, seed=1)
    patients = sim.sample_patients("melanoma", 200)
    c = sim.run(patients, "anti_pd1", 365, record_given=True, stop_on_progression=False)
    tox = c.state.tox
    first = tox.irae_day.numpy()
    hit = first >= 0
    assert hit.mean() > 0.6
    hold = ProtocolRules().irae_hold_days
    for i in np.flatnonzero(hit)[:60]:
        assert c.given[i, first[i] + 1:first[i] + hold, 0].sum() == 0  # held ...
    recurrent = (tox.irae_count >= 2).numpy()
    assert recurrent.any()
    stopped = (tox.stop_reason[:, 0] == STOP_REASONS.index("toxicity")).numpy()
    assert stopped[recurrent].all()  # ... a second grade >= 3 event stops for good
    resumed = hit & ~recurrent & (c.given[:, :, 0].sum(1) > 1)
    assert resumed.any()  # a single grade 3 event resumes treatment after the hold


def test_fatal_irae_is_a_treatment_death():
    params = load_parameters().with_updates(
        rates={"irae_hazard_ctla4": 0.05, "irae_fatal_ctla4": 0.5})
    result = run_trial("melanoma", "anti_ctla4", 200, 2, params=params, follow_up_days=120)
    assert result.treatment_death_rate > 0.1
    causes = result.patients["death_cause"]
    assert (causes == "irae").sum() == pytest.approx(result.treatment_death_rate * 200, abs=3)


def test_doses_above_standard_add_toxicity_not_efficacy():
    """KEYNOTE-002/-010: response flat from 2 to 10 mg/kg; toxicity rises with exposure."""
    def arm(therapy: str, dose: float):
        base = parse_regimen(therapy).schedules[0]
        regimen = Regimen((base.scaled(dose),), f"{therapy} x{dose}")
        return run_trial("melanoma", regimen, 600, 8, follow_up_days=365)

    for therapy in ("anti_pd1", "anti_ctla4"):
        standard, high = arm(therapy, 1.0), arm(therapy, 3.3)
        assert abs(high.orr - standard.orr) < 0.06, therapy
    standard, high = arm("anti_ctla4", 1.0), arm("anti_ctla4", 3.3)
    assert high.grade3_ae_rate > standard.grade3_ae_rate + 0.05


# ----------------------------------------------------------------------------- load
def test_overlapping_toxicity_makes_patients_unfit():
    sim = ImmuneSim(seed=11)
    patients = sim.sample_patients("melanoma", 200)
    everything = Regimen(tuple(
        TherapySchedule(t, interval_days=21, n_doses=17, dose=8.0 if t == "radio" else 1.0)
        for t in ("anti_pd1", "anti_ctla4", "chemo", "radio", "targeted")), "all five")
    c = sim.run(patients, everything, 365, stop_on_progression=False)
    unfit = (c.state.tox.stop_reason == STOP_REASONS.index("unfit")).any(-1)
    assert unfit.float().mean() > 0.3
    load_deaths = (c.state.tox.death_cause == DEATH_CAUSES.index("toxicity")).sum()
    assert int(load_deaths) > 0


# ----------------------------------------------------------------------------- state
def test_tox_state_is_a_tree_that_indexes_concatenates_and_puts():
    rates = load_parameters().rates
    patients = sample_tox_patients(rates, 6, torch.Generator().manual_seed(0))
    state = ToxState.start(patients)
    half = state.index(torch.arange(3))
    assert half.n == 3 and half.neutrophils.shape == (3, 5)
    both = ToxState.concat([half, half])
    assert both.n == 6
    changed = state.put(torch.tensor([1]), ToxState.start(patients.index(torch.tensor([0]))))
    assert torch.equal(changed.anc[1], state.anc[0])
    assert torch.equal(state.anc, ToxState.start(patients).anc)  # put copies


def test_same_seed_same_toxicity():
    a = chemo_course(n=40, seed=21)
    b = chemo_course(n=40, seed=21)
    np.testing.assert_array_equal(a.toxicity, b.toxicity)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("field", "value", "match"), [
    ("delay_days", -7, "delay_days.*-7"),
    ("delay_days", 0, "delay_days"),
    ("irae_hold_days", -1, "irae_hold_days"),
    ("max_reductions", 1.5, "max_reductions"),
    ("reduction_factor", 0.0, "reduction_factor"),
    ("anc_to_dose", float("nan"), "anc_to_dose"),
    ("unfit_load", -2.0, "unfit_load"),
])
def test_protocol_rules_reject_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        ProtocolRules(**{field: value})


def test_dose_above_the_allowed_maximum_is_an_error():
    with pytest.raises(ValueError, match=r"dose: got 5.0 for anti_pd1; expected at most the "
                                         r"allowed maximum of 4.0"):
        TherapySchedule("anti_pd1", dose=5.0)
    with pytest.raises(ValueError, match="doses.*chemo.*maximum of 1.5"):
        TherapySchedule("chemo", days=(0, 21), doses=(1.0, 2.0))
    with pytest.raises(ValueError, match="radio.*24.0 Gy"):
        TherapySchedule("radio", dose=30.0)
    assert all(MAX_DOSE[t] >= 1 for t in MAX_DOSE)


def test_regimen_with_a_drug_twice_is_an_error():
    with pytest.raises(ValueError,
                       match=r"regimen: got 'anti_pd1\+anti_pd1'.*'anti_pd1' appears twice"):
        parse_regimen("anti_pd1+anti_pd1")
    with pytest.raises(ValueError, match="more than once"):
        Regimen((TherapySchedule("chemo"), TherapySchedule("chemo", dose=0.5)), "chemo twice")


def test_unknown_driver_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"driver: unknown driver 'KRAS' for melanoma; "
                                         r"expected one of \['BRAF_V600', 'wild_type'\]"):
        run_trial("melanoma", "targeted", 10, 0, driver="KRAS")
    # A cancer type without an actionable driver accepts only wild type.
    with pytest.raises(ValueError, match=r"driver.*nsclc_pdl1_high.*\['wild_type'\]"):
        ImmuneSim(seed=0).sample_patients("nsclc_pdl1_high", 3, driver="EGFR")
