"""The user-facing simulator: patients, a regimen, a horizon -> a simulated course.

:class:`ImmuneSim` owns a parameter set, a device and a seeded :class:`torch.Generator`;
:meth:`ImmuneSim.run` steps every patient day by day under per-patient dose calendars,
reads imaging on each patient's scan days, assesses RECIST 1.1, stops treatment at
progression (as trials do), and can record the hidden daily state for cohorts. The pure step
function lives in :mod:`immunegym.sim.dynamics`; environments can call
:meth:`ImmuneSim.step` directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from immunegym.data.vocab import THERAPIES
from immunegym.regimen_grammar import RegimenPlan
from immunegym.sim.dynamics import Dynamics, Signals
from immunegym.sim.outcomes import CR, PR, RecistTracker, measure_sod
from immunegym.sim.parameters import ParameterSet, load_parameters
from immunegym.sim.patients import (
    BURN_IN_DAYS,
    initial_state,
    sample_patients,
)
from immunegym.sim.pk import RADIO
from immunegym.sim.state import Patients, SimState
from immunegym.sim.therapy import MAX_DAYS, Regimen, dose_calendar, parse_regimen
from immunegym.sim.toxicity import DEFAULT_RULES, STOP_PROGRESSION, ProtocolRules
from immunegym.validation import (
    ValidationError,
    bad,
    boolean,
    choice,
    integer,
    integer_range,
    memory_budget,
)
from immunegym.validation import device as check_device
from immunegym.validation import seed as check_seed

MAX_PATIENTS = 2**20
"""Most patients one simulator call takes (about a million; more is a unit mistake)."""

STATE_BYTES_PER_PATIENT = 8_000
"""Peak bytes per patient while stepping: twice the ~4 KB measured on CPU (state, signals,
toxicity and the step's temporaries), used to refuse a batch before it is drawn."""


@dataclass(frozen=True)
class ImagingSchedule:
    """When scans happen: the first on ``first_scan_day`` (or one interval after baseline
    when ``None``), then intervals drawn uniformly in ``interval_days`` (inclusive), and in
    ``late_interval_days`` after ``late_after_day``."""

    interval_days: tuple[int, int] = (42, 42)
    late_interval_days: tuple[int, int] = (84, 84)
    late_after_day: int = 364
    first_scan_day: int | None = None

    def __post_init__(self) -> None:
        for name in ("interval_days", "late_interval_days"):
            integer_range(name, getattr(self, name), low=1, high=MAX_DAYS)
        integer("late_after_day", self.late_after_day, low=0)
        if self.first_scan_day is not None:
            integer("first_scan_day", self.first_scan_day, low=1, high=365,
                    hint="days since treatment start")


TRIAL_IMAGING = ImagingSchedule()
"""Trial imaging: every 6 weeks for a year, then every 12 weeks."""

COHORT_IMAGING = ImagingSchedule((42, 63), (42, 63), 10**9)
"""Real-world imaging: every 6 to 9 weeks."""

SIGNAL_NAMES: tuple[str, ...] = ("ifn_gamma", "tgf_beta", "il10", "pdl1", "h_pd1",
                                 "occupancy_pd1", "occupancy_ctla4", "cd8_kill")
"""Signals stored with recorded states (for expression modelling and plots)."""

TOXICITY_TRACE: tuple[str, ...] = ("anc", "load", "ae_count", "irae_count", "fn_episodes",
                                   "delays")
"""Toxicity quantities stored with recorded states: neutrophils (x 1e9/L), toxicity load,
and cumulative counts of grade >= 3 events, grade >= 3 irAEs, febrile neutropenia and chemo
delays."""

RECORD_BYTES_PER_PATIENT_DAY = (22 + len(SIGNAL_NAMES) + len(TOXICITY_TRACE)) * 4 * 3
"""Bytes per patient and recorded day: compartments, signals and toxicity in float32, held
as tensors, stacked, and copied to numpy."""


@dataclass
class Simulation:
    """A simulated course for ``n`` patients.

    Attributes
    ----------
    patients
        Their parameters.
    state
        The state at the end of the horizon.
    days
        Horizon in days.
    best_response
        ``(n,)`` RECIST best overall response codes
        (:data:`~immunegym.sim.outcomes.RESPONSE_CODES`).
    response_day, pfs_day, pfs_event
        First confirmed response day (-1 if none); progression-free survival time in days and
        whether it ended in an event (progression or death) rather than censoring.
    scans
        ``(day, patient, sod_mm)`` arrays of every scan after baseline; ``baseline_sod``
        holds the day-0 reading.
    given
        ``(n, days, 5)`` doses actually given (after holds and stops), when recorded.
    record_days, cells, signals, toxicity
        Recorded hidden states: ``(R,)`` days, ``(R, n, 22)`` compartment counts, ``(R, n, S)``
        signals (:data:`SIGNAL_NAMES`) and ``(R, n, T)`` toxicity (:data:`TOXICITY_TRACE`),
        when recorded.
    """

    patients: Patients
    state: SimState
    days: int
    best_response: np.ndarray
    response_day: np.ndarray
    pfs_day: np.ndarray
    pfs_event: np.ndarray
    baseline_sod: np.ndarray
    scans: dict[str, np.ndarray]
    given: np.ndarray | None = None
    record_days: np.ndarray | None = None
    cells: np.ndarray | None = None
    signals: np.ndarray | None = None
    toxicity: np.ndarray | None = None

    def __repr__(self) -> str:
        recorded = (f", recorded {len(self.record_days)} days"
                    if self.record_days is not None else "")
        return (f"Simulation({self.patients.n} patients, {self.days} days, "
                f"{len(self.scans['day'])} scans{recorded}; "
                f"responders {int(np.isin(self.best_response, (PR, CR)).sum())})")


def _describe(value: object) -> str:
    """A tensor by its shape and dtype, not its values (for error messages)."""
    if isinstance(value, torch.Tensor):
        return f"<tensor of shape {tuple(value.shape)}, dtype {value.dtype}>"
    return f"<{type(value).__name__}>"


class ImmuneSim:
    """Batched, seeded ImmuneSim.

    Parameters
    ----------
    params
        Parameter set; the calibrated one shipped with the package by default.
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
    seed
        Seed of the simulator's own generator; same seed, same results on CPU.
    """

    def __init__(self, params: ParameterSet | None = None, device: str | torch.device = "cpu",
                 seed: int = 0) -> None:
        if params is not None and not isinstance(params, ParameterSet):
            raise bad("params", params, "a ParameterSet (immunegym.sim.load_parameters()) or "
                      "None for the calibrated one")
        seed = check_seed("seed", seed)
        device = check_device("device", device)
        self.params = params if params is not None else load_parameters()
        self.device = torch.device(device)
        self.dynamics = Dynamics(self.params, self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __repr__(self) -> str:
        return (f"ImmuneSim(device={str(self.device)!r}, parameters={self.params.version!r}, "
                f"cancer_types={len(self.params.cancer_types)})")

    def check_cancer_type(self, cancer_type: object) -> str:
        """``cancer_type`` when this parameter set knows it; else an error with the nearest."""
        return choice("cancer_type", cancer_type, sorted(self.params.cancer_types))

    @staticmethod
    def check_patient_count(field: str, n: object, *, per_patient_bytes: float = 0.0) -> int:
        """``n`` as a patient count in ``1..MAX_PATIENTS`` whose memory fits the budget.

        ``per_patient_bytes`` adds to :data:`STATE_BYTES_PER_PATIENT` (recorded states).
        """
        n = integer(field, n, low=1, high=MAX_PATIENTS,
                    hint="a number of virtual patients")
        memory_budget(field, n, n * (STATE_BYTES_PER_PATIENT + per_patient_bytes),
                      "the simulated patients")
        return n

    # ---------------------------------------------------------------- patients
    def sample_patients(self, cancer_type: str, n: int, *, driver: str | None = None
                        ) -> Patients:
        """Draw ``n`` patients of ``cancer_type`` from this simulator's generator.

        ``driver`` selects driver-positive (the driver's name) or ``"wild_type"`` patients
        (:func:`~immunegym.sim.patients.sample_patients`).
        """
        self.check_cancer_type(cancer_type)
        n = self.check_patient_count("n_patients", n)
        return sample_patients(self.params, cancer_type, n, self.generator, self.device,
                               driver=driver)

    def reset(self, patients: Patients,
              burn_in_days: int = BURN_IN_DAYS) -> tuple[Patients, SimState]:
        """Day-0 states of ``patients`` (immune compartments relaxed, no drug).

        Returns the patients too, put in the escape phase of immunoediting
        (:func:`~immunegym.sim.patients.escape_phase`).
        """
        self._check_patients(patients)
        burn_in_days = integer("burn_in_days", burn_in_days, low=1, high=MAX_DAYS)
        return initial_state(patients, self.dynamics, self.generator, burn_in_days)

    def _check_patients(self, patients: object) -> Patients:
        if not isinstance(patients, Patients):
            raise bad("patients", patients, "Patients from ImmuneSim.sample_patients")
        if patients.cancer.device.type != self.device.type:
            raise bad("patients", f"<Patients on {patients.cancer.device}>",
                      f"patients on this simulator's device {str(self.device)!r} (use "
                      "patients.to(device))")
        return patients

    def step(self, state: SimState, patients: Patients, dose: torch.Tensor,
             irae_rules: torch.Tensor, *, rules: ProtocolRules = DEFAULT_RULES) -> SimState:
        """One day for every patient (see :meth:`Dynamics.step`).

        Parameters
        ----------
        state, patients
            The ``n`` patients' state and parameters.
        dose
            ``(n, 5)`` floating doses scheduled today (:data:`THERAPIES` order; Gy for
            radiotherapy).
        irae_rules
            ``(n, 5)`` integer irAE rule codes (:meth:`Regimen.irae_rules`), or ``(5,)`` for
            everyone.

        Only shapes, dtypes and types are checked (O(1): this is the hot path); the values
        are the caller's (laid out by :func:`~immunegym.sim.therapy.dose_calendar`).
        """
        if not isinstance(state, SimState) or not isinstance(patients, Patients):
            raise bad("state", type(state).__name__, "a SimState and Patients (from "
                      "ImmuneSim.reset)")
        n = state.cells.shape[0]
        if patients.cancer.shape[0] != n:
            raise ValidationError(f"patients: got {patients.cancer.shape[0]} patients; "
                                  f"expected {n}, one per state row")
        width = len(THERAPIES)
        if not isinstance(dose, torch.Tensor) or tuple(dose.shape) != (n, width) \
                or not dose.is_floating_point():
            raise bad("dose", _describe(dose), f"a floating tensor of shape ({n}, {width})")
        if not isinstance(irae_rules, torch.Tensor) \
                or tuple(irae_rules.shape) not in ((n, width), (width,)) \
                or irae_rules.is_floating_point() or irae_rules.dtype == torch.bool:
            raise bad("irae_rules", _describe(irae_rules),
                      f"an integer tensor of shape ({n}, {width}) or ({width},)")
        if not isinstance(rules, ProtocolRules):
            raise bad("rules", rules, "a ProtocolRules")
        return self.dynamics.step(state, patients, dose, self.generator, irae_rules,
                                  rules=rules)

    def signals(self, state: SimState, patients: Patients) -> Signals:
        """Quasi-steady signals of a state."""
        return self.dynamics.signals(state, patients)

    # ---------------------------------------------------------------- courses
    def run(
        self,
        patients: Patients,
        regimens: str | Regimen | Sequence[str | Regimen],
        days: int,
        *,
        group: torch.Tensor | np.ndarray | None = None,
        state: SimState | None = None,
        imaging: ImagingSchedule = TRIAL_IMAGING,
        stop_on_progression: bool = True,
        record_every: int | None = None,
        record_given: bool = False,
        rules: ProtocolRules = DEFAULT_RULES,
    ) -> Simulation:
        """Simulate ``days`` days from day 0.

        Parameters
        ----------
        patients
            The patients.
        regimens
            One regimen for everyone, or a list indexed by ``group``.
        days
            Horizon in days (1 .. :data:`MAX_DAYS`).
        group
            ``(n,)`` index into ``regimens`` per patient (required with a list).
        state
            Day-0 state; :meth:`reset` is called when omitted.
        imaging
            Scan schedule (the baseline scan is day 0).
        stop_on_progression
            Stop every therapy at RECIST progression (treat-until-progression).
        record_every
            Record the hidden state every this many days (and on day 0).
        record_given
            Keep the doses actually given per day.
        rules
            The protocol rules for toxicity (holds, delays, reductions, stops).
        """
        days = integer("days", days, low=1, high=MAX_DAYS,
                       hint=f"days since treatment start, at most {MAX_DAYS}")
        if record_every is not None:
            record_every = integer("record_every", record_every, low=1, high=MAX_DAYS)
        stop_on_progression = boolean("stop_on_progression", stop_on_progression)
        record_given = boolean("record_given", record_given)
        if not isinstance(imaging, ImagingSchedule):
            raise bad("imaging", imaging, "an ImagingSchedule")
        if not isinstance(rules, ProtocolRules):
            raise bad("rules", rules, "a ProtocolRules")
        self._check_patients(patients)
        n = patients.n
        # Recorded states grow with patients x days: refuse before anything is allocated.
        records = days // record_every + 1 if record_every else 0
        extra = records * RECORD_BYTES_PER_PATIENT_DAY + (days * len(THERAPIES) * 4 * 2
                                                           if record_given else 0)
        memory_budget("n_patients", n, n * (STATE_BYTES_PER_PATIENT + extra),
                      f"{n} patients over {days} days"
                      + (f", recorded every {record_every} days" if record_every else ""))
        if isinstance(regimens, (str, Regimen, RegimenPlan)):
            regimens = [regimens]
            group = torch.zeros(n, dtype=torch.long)
        elif not isinstance(regimens, Sequence) or not regimens:
            raise bad("regimens", regimens, "a regimen or a non-empty list of regimens")
        parsed = [parse_regimen(r, field="regimens") for r in regimens]
        if group is None:
            raise ValidationError("group: a list of regimens needs a per-patient group index")
        group_array = np.asarray(group.cpu() if isinstance(group, torch.Tensor) else group)
        if group_array.dtype.kind not in "iu":
            raise bad("group", f"<array of dtype {group_array.dtype}>",
                      f"{n} integer indices in 0..{len(parsed) - 1}")
        group = torch.as_tensor(group_array, dtype=torch.long, device=self.device)
        if group.shape != (n,) or int(group.min()) < 0 or int(group.max()) >= len(parsed):
            raise ValidationError(
                f"group: got shape {tuple(group.shape)}; expected {n} indices in "
                f"0..{len(parsed) - 1}"
            )
        calendar = torch.as_tensor(np.stack([dose_calendar(r, days) for r in parsed]),
                                   device=self.device)
        irae_rules = torch.as_tensor(np.stack([r.irae_rules() for r in parsed]),
                                     device=self.device)[group]
        if state is None:
            patients, state = self.reset(patients)
        rates = self.params.rates
        gen = self.generator
        # An irradiated lesion leaves the target sum (RECIST 1.1): scale the baseline and
        # nadir to the lesions that remain each time a course treats a new lesion.
        lesion_keep = (1 - rates["radio_field_fraction"]) ** (1 / 3)
        baseline = measure_sod(state.target_tumor, rates, gen)
        tracker = RecistTracker.start(baseline)
        next_scan = self._next_scan(torch.zeros(n, dtype=torch.long, device=self.device),
                                    imaging)
        if imaging.first_scan_day is not None:
            next_scan = torch.full_like(next_scan, imaging.first_scan_day)
        scan_day, scan_patient, scan_sod = [], [], []
        given = (torch.zeros(n, days, len(THERAPIES), device=self.device)
                 if record_given else None)
        rec_days, rec_cells, rec_signals, rec_tox = [], [], [], []

        def record(day: int, s: SimState) -> None:
            sig = self.dynamics.signals(s, patients)
            rec_days.append(day)
            rec_cells.append(s.cells.clone())
            rec_signals.append(torch.stack([getattr(sig, k) for k in SIGNAL_NAMES], -1))
            t = s.tox
            rec_tox.append(torch.stack([t.anc, t.load, t.ae_count.float(),
                                        t.irae_count.float(), t.fn_episodes.float(),
                                        t.delays.float()], -1))

        if record_every:
            record(0, state)
        for d in range(days):
            dose = calendar[:, d][group]
            new_course = self.dynamics.new_course(state)
            state = self.dynamics.step(state, patients, dose, gen, irae_rules, rules=rules)
            if given is not None:
                given[:, d] = state.given
            lesion = new_course & (state.given[:, RADIO] > 0)
            if bool(lesion.any()):
                tracker.exclude(lesion, lesion_keep)
            today = d + 1
            due = (next_scan == today) & state.alive
            if bool(due.any()):
                sod = measure_sod(state.target_tumor, rates, gen)
                progressed = tracker.update(due, sod, state.day)
                idx = due.nonzero().squeeze(1)
                scan_day.append(torch.full_like(idx, today))
                scan_patient.append(idx)
                scan_sod.append(sod[idx])
                if stop_on_progression and bool(progressed.any()):
                    stop = progressed[:, None].expand_as(state.tox.stopped)
                    state = replace(state, tox=state.tox.stop(stop, STOP_PROGRESSION,
                                                              state.day))
                next_scan = torch.where(due, self._next_scan(next_scan, imaging), next_scan)
            if record_every and today % record_every == 0:
                record(today, state)

        pd_day = tracker.pd_day
        death_day = state.death_day
        big = torch.full_like(pd_day, days)
        event_day = torch.minimum(torch.where(pd_day >= 0, pd_day, big),
                                  torch.where(death_day >= 0, death_day, big))
        event = (pd_day >= 0) | (death_day >= 0)

        def cat(parts: list[torch.Tensor], dtype) -> np.ndarray:
            if not parts:
                return np.zeros(0, dtype=dtype)
            return torch.cat(parts).cpu().numpy().astype(dtype)

        return Simulation(
            patients=patients,
            state=state,
            days=days,
            best_response=tracker.best_overall().cpu().numpy(),
            response_day=tracker.response_day.cpu().numpy(),
            pfs_day=event_day.cpu().numpy().astype(float),
            pfs_event=event.cpu().numpy(),
            baseline_sod=baseline.cpu().numpy(),
            scans={"day": cat(scan_day, np.int64), "patient": cat(scan_patient, np.int64),
                   "sod_mm": cat(scan_sod, np.float64)},
            given=given.cpu().numpy() if given is not None else None,
            record_days=np.asarray(rec_days) if record_every else None,
            cells=torch.stack(rec_cells).cpu().numpy() if record_every else None,
            signals=torch.stack(rec_signals).cpu().numpy() if record_every else None,
            toxicity=torch.stack(rec_tox).cpu().numpy() if record_every else None,
        )

    def _next_scan(self, day: torch.Tensor, imaging: ImagingSchedule) -> torch.Tensor:
        late = day >= imaging.late_after_day
        lo = torch.where(late, imaging.late_interval_days[0], imaging.interval_days[0])
        hi = torch.where(late, imaging.late_interval_days[1], imaging.interval_days[1])
        u = torch.rand(day.shape, generator=self.generator, device=day.device)
        return day + lo + (u * (hi - lo + 1)).long().clamp(max=hi - lo)
