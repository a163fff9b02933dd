"""ImmuneSim: the calibrated, stochastic, mechanistic tumor-immune simulator.

* :class:`ImmuneSim` steps N virtual patients together on CPU or GPU (pure state -> state
  step in :mod:`.dynamics`, state dataclasses in :mod:`.state`, seeded generator).
* :func:`run_trial` runs a virtual trial arm (the calibration contract); :mod:`.calibrate`
  fits the parameters to clinical anchors (:mod:`.parameters` holds every rate and its
  source).
* :func:`make_cohort` / :func:`simulate_cohort` write the AnnData a lab would deliver plus
  the hidden truth; :mod:`.suite` holds the default 14-cohort suite.
"""

from immunegym.sim.cohort import Cohort, CohortSpec, HiddenTruth, make_cohort, simulate_cohort
from immunegym.sim.parameters import (
    CANCER_TYPES,
    RATES,
    CancerType,
    ParameterSet,
    Rate,
    default_parameters,
    load_parameters,
)
from immunegym.sim.simulator import ImagingSchedule, ImmuneSim, Simulation
from immunegym.sim.state import COMPARTMENTS, Patients, SimState
from immunegym.sim.suite import DEFAULT_SUITE, make_suite
from immunegym.sim.therapy import (
    STANDARD_SCHEDULES,
    Regimen,
    TherapySchedule,
    dose_calendar,
    parse_regimen,
)
from immunegym.sim.trial import TrialResult, run_trial

__all__ = [
    "CANCER_TYPES",
    "COMPARTMENTS",
    "DEFAULT_SUITE",
    "RATES",
    "STANDARD_SCHEDULES",
    "CancerType",
    "Cohort",
    "CohortSpec",
    "HiddenTruth",
    "ImagingSchedule",
    "ImmuneSim",
    "ParameterSet",
    "Patients",
    "Rate",
    "Regimen",
    "SimState",
    "Simulation",
    "TherapySchedule",
    "TrialResult",
    "default_parameters",
    "dose_calendar",
    "load_parameters",
    "make_cohort",
    "make_suite",
    "parse_regimen",
    "run_trial",
    "simulate_cohort",
]
