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
from immunegym.sim.dynamics import Dynamics, Signals
from immunegym.sim.outcomes import RecistTracker, measure_sod
from immunegym.sim.parameters import ParameterSet, load_parameters
from immunegym.sim.patients import (
    BURN_IN_DAYS,
    initial_state,
    sample_patients,
)
from immunegym.sim.pk import RADIO
from immunegym.sim.state import Patients, SimState
from immunegym.sim.therapy import Regimen, dose_calendar, parse_regimen
from immunegym.sim.toxicity import DEFAULT_RULES, STOP_PROGRESSION, ProtocolRules

MAX_DAYS = 3650
"""Longest horizon :meth:`ImmuneSim.run` accepts (10 years)."""


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
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name}: expected 1 <= low <= high, got {(lo, hi)}")
        if self.first_scan_day is not None and not 1 <= self.first_scan_day <= 365:
            raise ValueError(f"first_scan_day: expected 1..365 days, got {self.first_scan_day}")


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
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.params = params if params is not None else load_parameters()
        self.device = torch.device(device)
        self.dynamics = Dynamics(self.params, self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))

    # ---------------------------------------------------------------- patients
    def sample_patients(self, cancer_type: str, n: int, *, driver: str | None = None
                        ) -> Patients:
        """Draw ``n`` patients of ``cancer_type`` from this simulator's generator.

        ``driver`` selects driver-positive (the driver's name) or ``"wild_type"`` patients
        (:func:`~immunegym.sim.patients.sample_patients`).
        """
        return sample_patients(self.params, cancer_type, n, self.generator, self.device,
                               driver=driver)

    def reset(self, patients: Patients,
              burn_in_days: int = BURN_IN_DAYS) -> tuple[Patients, SimState]:
        """Day-0 states of ``patients`` (immune compartments relaxed, no drug).

        Returns the patients too, put in the escape phase of immunoediting
        (:func:`~immunegym.sim.patients.escape_phase`).
        """
        return initial_state(patients, self.dynamics, self.generator, burn_in_days)

    def step(self, state: SimState, patients: Patients, dose: torch.Tensor,
             irae_rules: torch.Tensor, *, rules: ProtocolRules = DEFAULT_RULES) -> SimState:
        """One day for every patient (see :meth:`Dynamics.step`)."""
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
        if not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
            raise ValueError(f"days: expected an integer in 1..{MAX_DAYS}, got {days!r}")
        if record_every is not None and record_every < 1:
            raise ValueError(f"record_every: expected >= 1, got {record_every}")
        n = patients.n
        if isinstance(regimens, (str, Regimen)):
            regimens = [regimens]
            group = torch.zeros(n, dtype=torch.long)
        parsed = [parse_regimen(r) for r in regimens]
        if group is None:
            raise ValueError("group: a list of regimens needs a per-patient group index")
        group = torch.as_tensor(np.asarray(group), dtype=torch.long, device=self.device)
        if group.shape != (n,) or int(group.min()) < 0 or int(group.max()) >= len(parsed):
            raise ValueError(
                f"group: expected {n} indices in 0..{len(parsed) - 1}, got shape "
                f"{tuple(group.shape)}"
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
