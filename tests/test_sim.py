"""ImmuneSim: contracts, reproducibility, bad input, and mechanism tests.

Each mechanism test runs the same virtual patients (same seed) under two regimens and
asserts a direction with a margin.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from immunegym.sim import (
    CANCER_TYPES,
    ImmuneSim,
    TherapySchedule,
    dose_calendar,
    load_parameters,
    parse_regimen,
    run_trial,
)
from immunegym.sim.outcomes import CR, PD, PR, SD, RecistTracker, sum_of_diameters
from immunegym.sim.state import IDX, N_CLONES

LYMPHOCYTES = [IDX[k] for k in ("cd8_memory", "cd8_effector", "cd8_tpex", "cd8_tex",
                                "cd4_helper", "treg", "nk", "b_cell", "plasma_cell")]


def course(regimen: str, n: int = 120, days: int = 42, seed: int = 7,
           cancer: str = "melanoma", params=None):
    sim = ImmuneSim(params, seed=seed)
    patients = sim.sample_patients(cancer, n)
    return sim.run(patients, regimen, days, record_every=1, stop_on_progression=False)


def per_tumor(c, day: int, name: str) -> np.ndarray:
    cells = c.cells[day]
    return cells[:, IDX[name]] / cells[:, :N_CLONES].sum(-1)


# ----------------------------------------------------------------------------- contracts
def test_run_trial_contract_fields():
    result = run_trial("melanoma", "anti_pd1", 50, 0)
    assert 0 <= result.orr <= 1 and 0 <= result.grade3_irae_rate <= 1
    assert result.grade3_irae_rate <= result.grade3_ae_rate <= 1
    assert 0 <= result.discontinuation_rate <= 1 and 0 <= result.treatment_death_rate <= 1
    assert result.median_pfs_days > 0
    assert result.orr_ci[0] <= result.orr <= result.orr_ci[1]
    assert sum(result.best_response.values()) == 50
    assert len(result.patients) == 50


@pytest.mark.parametrize(("cancer", "regimen", "metric", "target", "width"), [
    ("melanoma", "anti_pd1", "orr", 0.437, 0.12),
    ("nsclc_pdl1_high", "chemo", "orr", 0.278, 0.12),
    ("crc_mss", "anti_pd1", "orr", 0.02, 0.05),
    ("melanoma", "anti_ctla4", "grade3_ae_rate", 0.273, 0.12),
])
def test_calibration_anchors_small_n(cancer, regimen, metric, target, width):
    """A few anchors at n=300 with wide bounds; `immunegym sim calibrate` checks n=4000
    with each trial's own scan schedule."""
    result = run_trial(cancer, regimen, 300, 11)
    assert abs(getattr(result, metric) - target) <= width


def test_same_seed_same_course_and_different_seed_differs():
    a = course("anti_pd1", n=20, days=30, seed=3)
    b = course("anti_pd1", n=20, days=30, seed=3)
    c = course("anti_pd1", n=20, days=30, seed=4)
    np.testing.assert_array_equal(a.cells, b.cells)
    np.testing.assert_array_equal(a.scans["sod_mm"], b.scans["sod_mm"])
    assert not np.allclose(a.cells, c.cells)


def test_shipped_parameters_are_calibrated_and_cover_every_cancer_type():
    params = load_parameters()
    assert params.version != "defaults"
    assert set(params.cancer_types) == set(CANCER_TYPES)
    for name in ("melanoma", "crc_mss"):
        assert params.cancer(name).antigenicity > 0


def test_every_rate_names_a_source():
    from immunegym.sim.parameters import RATES

    for name, rate in RATES.items():
        assert rate.source.strip(), name
        assert rate.unit.strip(), name


# ----------------------------------------------------------------------------- bad input
def test_unknown_cancer_type_lists_valid_ids():
    with pytest.raises(ValueError, match="cancer_type.*melanoma"):
        run_trial("glioma", "anti_pd1", 10, 0)


def test_unknown_therapy_lists_valid_ids():
    with pytest.raises(ValueError, match="regimen.*anti_pd2.*anti_ctla4"):
        run_trial("melanoma", "anti_pd2", 10, 0)
    with pytest.raises(ValueError, match="therapy: unknown id 'laser'"):
        TherapySchedule("laser")


def test_empty_regimen_is_rejected():
    with pytest.raises(ValueError, match="regimen"):
        parse_regimen("")


@pytest.mark.parametrize("n", [0, -3])
def test_non_positive_patients(n):
    with pytest.raises(ValueError, match="n_patients"):
        run_trial("melanoma", "anti_pd1", n, 0)


def test_negative_dose():
    with pytest.raises(ValueError, match="dose"):
        TherapySchedule("anti_pd1", dose=-1.0)
    with pytest.raises(ValueError, match="dose"):
        parse_regimen("chemo", dose=-0.5)
    with pytest.raises(ValueError, match="doses"):
        TherapySchedule("chemo", days=(0, 21), doses=(1.0, -1.0))


def test_schedule_past_horizon():
    from immunegym.sim.therapy import Regimen

    late = Regimen((TherapySchedule("radio", dose=8.0, days=(0, 400)),), "radio")
    with pytest.raises(ValueError, match="days.*400.*horizon"):
        dose_calendar(late, 365)
    starts_late = Regimen((TherapySchedule("chemo", start_day=500, n_doses=2),), "chemo")
    with pytest.raises(ValueError, match="start_day"):
        dose_calendar(starts_late, 365)
    # Repeating standard schedules are cut at the horizon ("up to 35 cycles").
    assert dose_calendar("anti_pd1", 100)[:, 0].sum() == 5


def test_run_rejects_bad_horizon_and_group():
    sim = ImmuneSim(seed=0)
    patients = sim.sample_patients("melanoma", 4)
    with pytest.raises(ValueError, match="days"):
        sim.run(patients, "none", 0)
    with pytest.raises(ValueError, match="group"):
        sim.run(patients, ["none", "chemo"], 10, group=np.array([0, 1, 2, 0]))


def test_custom_schedule_is_expressible_per_cycle():
    from immunegym.sim.therapy import Regimen

    custom = Regimen((TherapySchedule("anti_pd1", days=(0, 21, 63), doses=(1.0, 0.5, 2.0)),),
                     "anti_pd1 custom")
    cal = dose_calendar(custom, 90)
    assert cal[0, 0] == 1.0 and cal[21, 0] == 0.5 and cal[63, 0] == 2.0
    assert cal[:, 0].sum() == pytest.approx(3.5)


# ----------------------------------------------------------------------------- outcomes
def test_recist_confirmation_and_progression():
    tracker = RecistTracker.start(torch.tensor([100.0, 100.0, 100.0, 100.0]))
    scanned = torch.ones(4, dtype=torch.bool)
    # Scan 1 (day 42): PR, PR, SD, PD (+25 mm)
    tracker.update(scanned, torch.tensor([60.0, 65.0, 90.0, 125.0]), torch.full((4,), 42))
    # Scan 2 (day 84): CR; 80 mm is +23% and +15 mm over the nadir 65: PD; SD; -
    tracker.update(scanned, torch.tensor([0.0, 80.0, 92.0, 140.0]), torch.full((4,), 84))
    best = tracker.best_overall().tolist()
    assert best == [PR, SD, SD, PD]  # CR needs two CR scans; an unconfirmed PR is SD
    tracker.update(scanned, torch.tensor([0.0, 80.0, 115.0, 150.0]), torch.full((4,), 126))
    assert tracker.best_overall().tolist()[0] == CR
    # Progression needs +20% and +5 mm over the nadir (65 for patient 1, 90 for patient 2).
    assert tracker.pd_day.tolist() == [-1, 84, 126, 42]


def test_sum_of_diameters_detection_limit():
    rates = load_parameters().rates
    sod = sum_of_diameters(torch.tensor([3e10, 1e7]), rates)
    assert 60 < float(sod[0]) < 80 and float(sod[1]) == 0.0


# ----------------------------------------------------------------------------- mechanisms
def test_untreated_tumors_grow():
    c = course("none", n=150, days=84)
    growth = c.cells[84, :, :N_CLONES].sum(-1) / c.cells[0, :, :N_CLONES].sum(-1)
    assert np.median(growth) > 1.3
    assert (growth > 1.0).mean() > 0.9


def test_pd1_responders_concentrate_in_hot_tumors():
    result = run_trial("melanoma", "anti_pd1", 600, 5, follow_up_days=365)
    by_phenotype = result.patients.groupby("phenotype").responder.mean()
    assert by_phenotype["hot"] > by_phenotype["desert"] + 0.3
    assert by_phenotype["hot"] > by_phenotype["excluded"] + 0.2


def test_pd1_response_rises_with_antigenicity():
    # Same patients (same seed), antigenicity 3x lower or higher than melanoma's mean.
    params = load_parameters()
    mean = params.cancer("melanoma").antigenicity
    rates = {}
    for factor in (1 / 3, 3.0):
        scaled = params.with_updates(cancer_types={"melanoma": {"antigenicity": mean * factor}})
        rates[factor] = run_trial("melanoma", "anti_pd1", 400, 5, params=scaled,
                                  follow_up_days=365).orr
    assert rates[3.0] > rates[1 / 3] + 0.15


def test_pd1_releases_pd1_signalling_expands_effectors_and_tex_do_not_recover():
    none = course("none", days=28)
    pd1 = course("anti_pd1", days=28)
    day = 21
    h_none, h_pd1 = (c.signals[day, :, 4] for c in (none, pd1))  # H_PD1
    assert np.median(h_pd1) < 0.2 * np.median(h_none)
    tpex = np.median(pd1.cells[day, :, IDX["cd8_tpex"]] / none.cells[day, :, IDX["cd8_tpex"]])
    eff = np.median(pd1.cells[day, :, IDX["cd8_effector"]]
                    / none.cells[day, :, IDX["cd8_effector"]])
    tex = np.median(pd1.cells[day, :, IDX["cd8_tex"]] / none.cells[day, :, IDX["cd8_tex"]])
    # Progenitors are maintained, not depleted, while their progeny expand (Miller et al.
    # Nat Immunol 2019; Siddiqui et al. Immunity 2019); their niche shrinks with the tumor.
    assert tpex > 0.85
    assert eff > 1.1 and eff > tpex  # and feed a larger effector pool, exhausting less
    assert tex < 0.8  # exhausted cells are not reinvigorated: fewer form, none return
    from immunegym.sim.dynamics import _FLOWS

    assert all(src != IDX["cd8_tex"] for src, _ in _FLOWS)  # no Tex -> anything transition


def test_ctla4_lowers_treg_fraction():
    none = course("none", days=42)
    ctla4 = course("anti_ctla4", days=42)

    def treg_fraction(c):
        return c.cells[42, :, IDX["treg"]] / c.cells[42].sum(-1)

    assert np.median(treg_fraction(ctla4) / treg_fraction(none)) < 0.7


def test_chemo_transiently_lowers_lymphocytes():
    # Tumor-insensitive chemotherapy isolates the direct effect on lymphocytes.
    params = load_parameters().with_updates(
        cancer_types={"melanoma": {"chemo_sensitivity": 1e-6}})
    none = course("none", days=200, params=params, n=60)
    chemo = course("chemo", days=200, params=params, n=60)

    def lymph(c, day):
        return c.cells[day][:, LYMPHOCYTES].sum(-1)

    early = np.median(lymph(chemo, 3) / lymph(none, 3))
    late = np.median(lymph(chemo, 200) / lymph(none, 200))
    assert early < 0.9
    assert late > 0.9 and late > early + 0.1


def test_radiotherapy_kills_locally_and_raises_priming():
    none = course("none", days=14)
    radio = course("radio", days=14)
    tumor_ratio = (radio.cells[3, :, :N_CLONES].sum(-1) / none.cells[3, :, :N_CLONES].sum(-1))
    field = load_parameters().rates["radio_field_fraction"]
    # Most cells in the field die, none outside it: the burden falls by about the field share.
    assert np.all(tumor_ratio > 1 - field - 0.05)
    assert np.median(tumor_ratio) < 1 - 0.8 * field
    assert np.median(per_tumor(radio, 10, "cdc1") / per_tumor(none, 10, "cdc1")) > 1.3
    sim = ImmuneSim(seed=7)
    patients = sim.sample_patients("melanoma", 120)
    patients, state = sim.reset(patients)
    rules = torch.zeros(5, dtype=torch.long)
    dose_radio = torch.zeros(120, 5)
    dose_radio[:, 3] = 8.0
    zero = torch.zeros(120, 5)
    s_radio, s_none = state, state
    for d in range(10):
        s_radio = sim.step(s_radio, patients, dose_radio if d < 3 else zero, rules)
        s_none = sim.step(s_none, patients, zero, rules)
    prime_radio, _ = sim.dynamics.priming(s_radio, patients, sim.signals(s_radio, patients))
    prime_none, _ = sim.dynamics.priming(s_none, patients, sim.signals(s_none, patients))
    tumor_radio, tumor_none = s_radio.tumor, s_none.tumor
    assert float(((prime_radio / tumor_radio) / (prime_none / tumor_none)).median()) > 1.5


def test_irae_holds_or_stops_drugs_per_schedule_rule():
    from immunegym.sim.therapy import Regimen

    params = load_parameters().with_updates(
        rates={"irae_hazard_pd1": 0.05, "irae_hazard_ctla4": 0.05})
    sim = ImmuneSim(params, seed=1)
    patients = sim.sample_patients("melanoma", 200)
    # A grade 3 event stops CTLA-4 under this schedule's rule and holds PD-1 (standard).
    stop_ipi = TherapySchedule("anti_ctla4", interval_days=21, n_doses=4, on_irae="stop")
    regimen = Regimen((parse_regimen("anti_pd1").schedules[0], stop_ipi), "pd1+ipi stop")
    c = sim.run(patients, regimen, 120, record_given=True)
    irae_day = c.state.irae_day.numpy()
    hit = irae_day >= 0
    assert hit.mean() > 0.5
    # CTLA-4 ("stop"): never given after the event; PD-1 ("hold"): not within 42 days.
    for i in np.nonzero(hit)[0][:50]:
        day = irae_day[i]
        assert c.given[i, day + 1:, 1].sum() == 0
        assert c.given[i, day + 1:day + 42, 0].sum() == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_gpu_course_matches_cpu_statistics():
    cpu = run_trial("melanoma", "anti_pd1", 2000, 0, device="cpu")
    gpu = run_trial("melanoma", "anti_pd1", 2000, 0, device="cuda")
    assert abs(cpu.orr - gpu.orr) < 0.05
    assert abs(cpu.grade3_irae_rate - gpu.grade3_irae_rate) < 0.04
    assert abs(cpu.discontinuation_rate - gpu.discontinuation_rate) < 0.04
