"""Every public entry point of the simulator: clear errors (no raw tracebacks), nothing
silently accepted, and sizes refused before anything is allocated."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from immunegym.sim import (
    CohortSpec,
    ImagingSchedule,
    ImmuneSim,
    TherapySchedule,
    dose_calendar,
    make_cohort,
    run_trial,
    simulate_cohort,
)
from immunegym.sim.observation import LABS, sample_biopsy, simulate_cells
from immunegym.validation import ValidationError

LAB = LABS["tme_fine"]


@pytest.fixture(scope="module")
def sim() -> ImmuneSim:
    return ImmuneSim(seed=0)


@pytest.fixture(scope="module")
def day0(sim):
    patients, state = sim.reset(sim.sample_patients("melanoma", 3), burn_in_days=1)
    return patients, state


@pytest.fixture
def tiny_memory(monkeypatch):
    monkeypatch.setenv("IMMUNEGYM_MAX_MEMORY_GB", "0.001")  # 1 MiB


def _fast(call, seconds: float = 1.0) -> None:
    """``call`` raises a ValidationError quickly (nothing simulated or allocated first)."""
    start = time.perf_counter()
    with pytest.raises(ValidationError):
        call()
    assert time.perf_counter() - start < seconds


# ----------------------------------------------------------------------------- run_trial
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"seed": 2**70}, r"seed: got 1180591620717411303424; expected a non-negative"),
    ({"seed": -1}, r"seed: got -1"),
    ({"seed": 1.5}, r"seed: got 1.5"),
    ({"seed": True}, r"seed: got True"),
    ({"n_patients": 2.0}, r"n_patients: got 2.0; expected an integer"),
    ({"n_patients": True}, r"n_patients: got True"),
    ({"n_patients": 0}, r"n_patients: got 0"),
    ({"n_patients": 10**8}, r"n_patients: got 100000000; expected an integer in 1\.\."),
    ({"cancer_type": "melanom"}, r"cancer_type: got 'melanom'.*did you mean 'melanoma'"),
    ({"cancer_type": 3}, r"cancer_type: got 3"),
    ({"regimen": "anti_pd2"}, r"regimen: got 'anti_pd2'"),
    ({"follow_up_days": 730 * 10**6}, r"follow_up_days: .*days since treatment start, at "
                                      r"most 3650"),
    ({"follow_up_days": 30.0}, r"follow_up_days: got 30.0"),
    ({"device": "tpu"}, r"device: got 'tpu'"),
    ({"driver": "KRAS"}, r"driver: unknown driver 'KRAS'"),
    ({"driver": 5}, r"driver: unknown driver 5"),
    ({"params": "calibrated"}, r"params: got 'calibrated'"),
    ({"rules": "strict"}, r"rules: got 'strict'"),
])
def test_run_trial_refuses_bad_arguments_before_simulating(kwargs: dict, match: str) -> None:
    args = {"cancer_type": "melanoma", "regimen": "anti_pd1", "n_patients": 3, "seed": 0,
            **kwargs}
    start = time.perf_counter()
    with pytest.raises(ValidationError, match=match):
        run_trial(args.pop("cancer_type"), args.pop("regimen"), args.pop("n_patients"),
                  args.pop("seed"), **args)
    assert time.perf_counter() - start < 1.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_run_trial_cuda_without_gpu_is_clear() -> None:
    with pytest.raises(ValidationError, match="device: got 'cuda'.*CUDA is not available"):
        run_trial("melanoma", "anti_pd1", 3, 0, device="cuda")


def test_run_trial_memory_estimate_before_allocating(tiny_memory) -> None:
    with pytest.raises(ValidationError, match=r"n_patients: got 1000; this needs about .*"
                                              r"IMMUNEGYM_MAX_MEMORY_GB"):
        run_trial("melanoma", "anti_pd1", 1000, 0)


def test_trial_result_prints_compactly(sim, day0) -> None:
    from immunegym.sim.trial import summarize

    course = sim.run(day0[0], "none", 5, state=day0[1])
    result = summarize(course, cancer_type="melanoma", regimen="none", seed=0)
    text = repr(result)
    assert text.startswith("TrialResult(melanoma, 'none', n=3") and "\n" not in text
    assert "patient" not in text.split(".patients")[0] and len(text) < 300


# ----------------------------------------------------------------------------- ImmuneSim
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"device": "tpu"}, "device: got 'tpu'"),
    ({"device": 0}, "device: got 0"),
    ({"seed": -1}, "seed: got -1"),
    ({"seed": 2**64}, "seed: got"),
    ({"seed": "0"}, "seed: got '0'"),
    ({"params": {"rates": {}}}, "params: got"),
])
def test_immunesim_constructor(kwargs: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        ImmuneSim(**kwargs)


@pytest.mark.parametrize(("args", "match"), [
    (("melanom", 3), "cancer_type: got 'melanom'.*did you mean 'melanoma'"),
    (("melanoma", 0), "n_patients: got 0"),
    (("melanoma", 2.5), "n_patients: got 2.5"),
    (("melanoma", np.float64(3)), "n_patients: got"),
    (("melanoma", 10**9), "n_patients: got 1000000000"),
])
def test_sample_patients(sim, args: tuple, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        sim.sample_patients(*args)


def test_sample_patients_memory(sim, tiny_memory) -> None:
    _fast(lambda: sim.sample_patients("melanoma", 10_000))


def test_reset_checks_its_arguments(sim, day0) -> None:
    patients, state = day0
    with pytest.raises(ValidationError, match="patients: got"):
        sim.reset(state)  # a state is not patients
    with pytest.raises(ValidationError, match="burn_in_days: got 1.5"):
        sim.reset(patients, burn_in_days=1.5)
    with pytest.raises(ValidationError, match="burn_in_days: got -1"):
        sim.reset(patients, burn_in_days=-1)


def test_step_checks_shapes_and_dtypes(sim, day0) -> None:
    patients, state = day0
    rules = torch.zeros(3, 5, dtype=torch.long)
    dose = torch.zeros(3, 5)
    assert sim.step(state, patients, dose, rules).cells.shape == (3, 22)
    assert sim.step(state, patients, dose, rules[0]).cells.shape == (3, 22)  # broadcast
    with pytest.raises(ValidationError, match=r"dose: got '<tensor of shape \(3, 4\)"):
        sim.step(state, patients, torch.zeros(3, 4), rules)
    with pytest.raises(ValidationError, match=r"dose: .*int64.*expected a floating tensor"):
        sim.step(state, patients, torch.zeros(3, 5, dtype=torch.long), rules)
    with pytest.raises(ValidationError, match="dose: got '<ndarray>'"):
        sim.step(state, patients, np.zeros((3, 5)), rules)
    with pytest.raises(ValidationError, match="irae_rules: .*expected an integer tensor"):
        sim.step(state, patients, dose, torch.zeros(3, 5))
    with pytest.raises(ValidationError, match="patients: got 2 patients; expected 3"):
        sim.step(state, patients.index(slice(0, 2)), dose, rules)
    with pytest.raises(ValidationError, match="state: got"):
        sim.step(patients, patients, dose, rules)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"days": 30.0}, "days: got 30.0"),
    ({"days": 365 * 10**6}, "days: .*days since treatment start, at most 3650"),
    ({"record_every": 0}, "record_every: got 0"),
    ({"stop_on_progression": "no"}, "stop_on_progression: got 'no'"),
    ({"imaging": (42, 42)}, "imaging: got"),
    ({"regimens": []}, "regimens: got"),
    ({"regimens": ["none", "anti_pd1"], "group": np.array([0.0, 1.0, 0.0])}, "group: got"),
    ({"regimens": ["none", "anti_pd1"], "group": np.array([0, 1, 2])}, "group: got"),
    ({"regimens": ["none", "laser"], "group": np.array([0, 1, 0])}, "regimens: got 'laser'"),
])
def test_run_checks_its_arguments(sim, day0, kwargs: dict, match: str) -> None:
    patients, state = day0
    args = {"regimens": "anti_pd1", "days": 10, **kwargs}
    with pytest.raises(ValidationError, match=match):
        sim.run(patients, args.pop("regimens"), args.pop("days"), state=state, **args)


def test_run_memory_of_recorded_states(sim, day0, tiny_memory) -> None:
    patients, state = day0
    _fast(lambda: sim.run(patients, "none", 3650, state=state, record_every=1))


def test_state_and_results_print_sizes_not_tensors(sim, day0) -> None:
    patients, state = day0
    assert repr(patients).startswith("Patients(n=3, ") and "tensor(" not in repr(patients)
    assert repr(state).startswith("SimState(n=3, ") and "tensor(" not in repr(state)
    course = sim.run(patients, "none", 5, state=state)
    assert repr(course).startswith("Simulation(3 patients, 5 days") and "\n" not in repr(course)


# ----------------------------------------------------------------------------- schedules
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"dose": float("nan")}, "dose: got nan"),
    ({"dose": -1.0}, "dose: got -1.0"),
    ({"days": (0, 21 * 10**6)}, "days: .*days since treatment start, at most 3649"),
    ({"days": (0.0, 21.0)}, "days: got 0.0"),
    ({"n_doses": 10**9}, "n_doses: got 1000000000"),
    ({"n_doses": 4.0}, "n_doses: got 4.0"),
    ({"days": (0, 21), "doses": (1.0, float("nan"))}, "doses: got nan"),
    ({"days": (0, 21), "doses": (1.0, -0.5)}, "doses: got -0.5"),
    ({"on_irae": "ignore"}, "on_irae: got 'ignore'"),
])
def test_therapy_schedule_refuses_bad_doses_and_days(kwargs: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        TherapySchedule("anti_pd1", **kwargs)


def test_dose_calendar_and_imaging_bounds() -> None:
    with pytest.raises(ValidationError, match="n_days: .*at most"):
        dose_calendar("anti_pd1", 10**8)
    with pytest.raises(ValidationError, match="first_scan_day: got 1.5"):
        ImagingSchedule(first_scan_day=1.5)
    with pytest.raises(ValidationError, match="interval_days: got 0"):
        ImagingSchedule(interval_days=(0, 5))


# ----------------------------------------------------------------------------- cohorts
SPEC = dict(name="x", cancer_type="melanoma", regimens=("anti_pd1",), lab="tme_fine")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"biopsies": (2, 6_000_000)}, r"biopsies: got 6000000; expected an integer in 1\.\.100"),
    ({"biopsies": (2.0, 6)}, "biopsies: got 2.0"),
    ({"biopsies": 4}, "biopsies: got 4"),
    ({"cells_per_biopsy": (0, 10)}, "cells_per_biopsy: got 0"),
    ({"cells_per_biopsy": (300, 3e9)}, "cells_per_biopsy: got"),
    ({"horizon_days": 365 * 10**6}, "horizon_days: .*days since treatment start, at most "
                                    "3650"),
    ({"horizon_days": 365.0}, "horizon_days: got 365.0"),
    ({"n_patients": 2.5}, "n_patients: got 2.5"),
    ({"n_patients": 10**8}, "n_patients: got 100000000"),
    ({"seed": -1}, "seed: got -1"),
    ({"seed": 2**70}, "seed: got"),
    ({"lab": "tme_fin"}, "lab: got 'tme_fin'.*did you mean 'tme_fine'"),
    ({"cancer_type": "melanomma"}, "cancer_type: got 'melanomma'.*did you mean"),
    ({"regimens": ("anti_pd1@-1",)}, "regimens: got 'anti_pd1@-1'.*'@dose'"),
    ({"regimens": ("anti_pd1@nan",)}, "regimens: got 'anti_pd1@nan'"),
    ({"regimens": (3,)}, "regimens: got 3"),
    ({"regimens": ()}, "regimens: got ()"),
    ({"name": "a b"}, "name: got 'a b'"),
])
def test_cohort_spec(kwargs: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        CohortSpec(**{**SPEC, **kwargs})


def test_cohort_spec_reads_the_grammar() -> None:
    spec = CohortSpec(**{**SPEC, "regimens": "anti_pd1+anti_ctla4 q3w x4 -> anti_pd1"})
    assert spec.regimens == ("anti_pd1+anti_ctla4 q3w x4 -> anti_pd1",)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_patients": 0}, "n_patients: got 0"),
    ({"n_patients": 10**8}, "n_patients: got 100000000"),
    ({"regimens": 3}, "regimens: got 3"),
    ({"regimens": "nivolumab_ipilimumb"}, "did you mean 'nivolumab_ipilimumab'"),
    ({"lab": "mars"}, "lab: got 'mars'"),
    ({"seed": -1}, "seed: got -1"),
    ({"horizon_days": 10**9}, "horizon_days: got 1000000000"),
    ({"device": "tpu"}, "device: got 'tpu'"),
    ({"name": 5}, "name: got 5"),
])
def test_make_cohort_refuses_before_simulating(kwargs: dict, match: str) -> None:
    args = {"cancer_type": "melanoma", "regimens": "anti_pd1", "n_patients": 4, **kwargs}
    start = time.perf_counter()
    with pytest.raises(ValidationError, match=match):
        make_cohort(args.pop("cancer_type"), args.pop("regimens"), args.pop("n_patients"),
                    **args)
    assert time.perf_counter() - start < 1.0


def test_cohort_memory_estimate_before_allocating(tiny_memory) -> None:
    spec = CohortSpec(**{**SPEC, "n_patients": 500, "horizon_days": 3650})
    with pytest.raises(ValidationError, match="n_patients: got 500; this needs about"):
        simulate_cohort(spec)
    _fast(lambda: make_cohort("melanoma", "anti_pd1", 500, horizon_days=3650))


def test_simulate_cohort_needs_a_spec() -> None:
    with pytest.raises(ValidationError, match="spec: got"):
        simulate_cohort({"name": "x"})


# ----------------------------------------------------------------------------- observation
def test_biopsy_and_cells_refuse_bad_counts(tiny_memory) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValidationError, match="n_cells: got 2.5"):
        sample_biopsy(np.ones(20), 2.5, rng)
    with pytest.raises(ValidationError, match="n_cells: got 1000.0"):
        sample_biopsy(np.ones(20), 1000.0, rng)
    with pytest.raises(ValidationError, match="n_cells: got 100000000000"):
        sample_biopsy(np.ones(20), 10**11, rng)
    with pytest.raises(ValidationError, match="composition: got"):
        sample_biopsy(["a"] * 20, 10, rng)
    with pytest.raises(ValidationError, match="type_counts: got '<10000000 cells>'"):
        simulate_cells(np.full(20, 500_000), LAB, rng)
    with pytest.raises(ValidationError, match="lab: got 'tme_fine'"):
        simulate_cells(np.ones(20, dtype=int), "tme_fine", rng)
    with pytest.raises(ValidationError, match="type_counts: got"):
        simulate_cells(np.array(["1"] * 20), LAB, rng)
