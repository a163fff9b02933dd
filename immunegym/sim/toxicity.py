"""Toxicity as state, and the protocol rules oncologists apply to it.

One model serves both simulators: ImmuneSim steps it inside its daily step, and the
environments' world-model side steps it from the doses given (toxicity depends on drug
exposure and the patient, not on the tumor), so holds, delays, dose reductions,
discontinuation and treatment deaths follow the same rules everywhere.

Every day, for ``n`` patients at once:

Administration (:meth:`Toxicity.administer`)
    Scheduled doses become given doses. Checkpoint inhibitors are skipped while held after a
    grade 3 immune-related adverse event (irAE). Chemotherapy is given only when neutrophils
    are at least ``anc_to_dose`` (docetaxel label: >= 1,500/mm3); otherwise the dose waits
    and is re-checked every ``delay_days``. Chemotherapy and targeted therapy are given at
    the patient's reduced dose after reductions. Stopped therapies are never given.
Neutrophils (Friberg et al., J Clin Oncol 2002)
    A proliferating compartment, three transit compartments and circulating neutrophils
    (``x 1e9/L``) with rate ``4 / MTT`` and feedback ``(ANC0 / ANC)^gamma``; cytotoxic drugs
    lower proliferation in proportion to the amount on board. Grade 3 / 4 neutropenia is
    ANC below 1.0 / 0.5 (CTCAE). Febrile neutropenia (FN) arises with a daily hazard while
    ANC is below 0.5 and can be fatal (Kuderer 2006: 9.5% in-hospital mortality).
Immune-related adverse events
    A daily hazard from systemic antibody exposure and the patient's susceptibility; each
    event is grade 4 with a fixed probability and otherwise grade 3, it is fatal with a
    per-class probability (Wang 2018). Grade 4, recurrent grade 3, or an organ whose label
    stops treatment at grade 3 (pneumonitis, myocarditis, hepatitis) stops every checkpoint
    inhibitor for good; other grade 3 events hold them ``irae_hold_days`` (ASCO 2021).
Other grade >= 3 treatment-related events
    Chemotherapy (per dose), targeted therapy (daily, at its effect) and radiotherapy (per
    fraction) each carry a non-immune grade >= 3 event probability. Chemotherapy and
    targeted therapy are reduced after FN, grade 4 neutropenia lasting > 7 days, or their own
    grade >= 3 event; a further event after ``max_reductions`` stops the drug (docetaxel
    label: 100 -> 75 -> 60 mg/m2, then discontinue).
Toxicity load (performance status)
    Every clinical grade >= 3 event (not afebrile neutropenia, a laboratory finding) adds one
    unit of load, which recovers with a half-life. A load at or above ``unfit_load``
    (two overlapping severe toxicities: ECOG >= 3) ends all treatment, and load above one unit
    raises a death hazard.

The state is a dataclass of tensors (:class:`ToxState`); :meth:`Toxicity.step` is a pure
function of (state, exposure, generator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from immunegym.data.vocab import THERAPIES
from immunegym.sim.pk import CHEMO, CTLA4, PD1, RADIO, RADIO_STANDARD_GY, TARGETED, Exposure
from immunegym.sim.tree import TensorTree

N_THERAPIES = len(THERAPIES)
N_DRAWS = 11
"""Uniform draws per patient and day of :meth:`Toxicity.step`."""
CHECKPOINTS = [PD1, CTLA4]
REDUCIBLE = [CHEMO, TARGETED]

DEATH_CAUSES: tuple[str, ...] = ("alive", "tumor", "irae", "febrile_neutropenia",
                                 "toxicity")
"""Codes of :attr:`ToxState.death_cause`."""
ALIVE, TUMOR_DEATH, IRAE_DEATH, FN_DEATH, LOAD_DEATH = range(len(DEATH_CAUSES))

STOP_REASONS: tuple[str, ...] = ("none", "progression", "toxicity", "unfit")
"""Codes of :attr:`ToxState.stop_reason` per therapy."""
NOT_STOPPED, STOP_PROGRESSION, STOP_TOXICITY, STOP_UNFIT = range(4)

IRAE_RULES: tuple[str, ...] = ("continue", "hold", "stop")
"""What a grade 3 immune-related adverse event does to a checkpoint inhibitor."""

NEUTROPHIL_COMPARTMENTS = ("proliferating", "transit_1", "transit_2", "transit_3",
                           "circulating")


@dataclass(frozen=True)
class ProtocolRules:
    """The rules a treating team applies to toxicity (one set for a course).

    Attributes
    ----------
    anc_to_dose
        Neutrophils (``x 1e9/L``) needed on a chemotherapy day (docetaxel label: 1.5).
    delay_days
        Days before a delayed dose is re-checked.
    reduction_factor
        Dose multiple kept at each reduction (docetaxel 100 -> 75 mg/m2: 0.75).
    max_reductions
        Reductions allowed; the next qualifying event stops the drug (docetaxel label: 2).
    irae_hold_days
        Checkpoint inhibitors are held this long after a grade 3 irAE (ASCO 2021: resume at
        grade <= 1 after a >= 4-6 week steroid taper).
    targeted_hold_days
        Targeted therapy is held this long after its own grade >= 3 event.
    unfit_load
        Toxicity load at which a patient is unfit for any further treatment (1.5: a second
        grade >= 3 event before the first has half resolved, ECOG >= 3; assumption).
    """

    anc_to_dose: float = 1.5
    delay_days: int = 7
    reduction_factor: float = 0.75
    max_reductions: int = 2
    irae_hold_days: int = 42
    targeted_hold_days: int = 14
    unfit_load: float = 1.5

    def __post_init__(self) -> None:
        from immunegym.validation import bad

        for name in ("delay_days", "max_reductions", "irae_hold_days", "targeted_hold_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(name, value, "a non-negative integer number of days or steps")
        if self.delay_days < 1:
            raise bad("delay_days", self.delay_days, "an integer >= 1 (days until re-check)")
        if not (isinstance(self.anc_to_dose, (int, float)) and math.isfinite(self.anc_to_dose)
                and 0 <= self.anc_to_dose <= 10):
            raise bad("anc_to_dose", self.anc_to_dose, "a neutrophil count in 0..10 x 1e9/L")
        if not (isinstance(self.reduction_factor, (int, float))
                and 0 < self.reduction_factor <= 1):
            raise bad("reduction_factor", self.reduction_factor, "a dose multiple in (0, 1]")
        if not (isinstance(self.unfit_load, (int, float)) and self.unfit_load > 0
                and math.isfinite(self.unfit_load)):
            raise bad("unfit_load", self.unfit_load, "a positive number of overlapping events")


DEFAULT_RULES = ProtocolRules()


@dataclass(frozen=True, repr=False)  # TensorTree.__repr__: sizes, not tensors
class ToxPatients(TensorTree):
    """Per-patient toxicity parameters, each ``(n,)``.

    Attributes
    ----------
    irae_susceptibility
        Multiplier of the irAE hazard (log-normal, wide).
    anc_baseline
        Baseline neutrophils ``x 1e9/L`` (Friberg: 5.05, between-patient CV 42%).
    marrow_sensitivity
        Multiplier of the drug effect on neutrophil precursors (CV 33%).
    ae_susceptibility
        Multiplier of non-immune grade >= 3 event probabilities.
    chemo_toxicity
        Toxicity per dose of the patient's chemotherapy regimen relative to docetaxel.
    """

    irae_susceptibility: torch.Tensor
    anc_baseline: torch.Tensor
    marrow_sensitivity: torch.Tensor
    ae_susceptibility: torch.Tensor
    chemo_toxicity: torch.Tensor


def _lognormal_unit_mean(cv: float, z: torch.Tensor) -> torch.Tensor:
    sigma2 = math.log1p(cv * cv)
    return torch.exp(math.sqrt(sigma2) * z - sigma2 / 2)


def sample_tox_patients(rates: dict[str, float], n: int, generator: torch.Generator,
                        device: torch.device | str = "cpu") -> ToxPatients:
    """Toxicity parameters of ``n`` patients, drawn as ImmuneSim draws them (log-normal)."""
    def draw(cv: float) -> torch.Tensor:
        return _lognormal_unit_mean(cv, torch.randn(n, generator=generator, device=device))

    return ToxPatients(
        irae_susceptibility=draw(rates["irae_susceptibility_cv"]),
        anc_baseline=rates["anc_baseline"] * draw(rates["anc_baseline_cv"]),
        marrow_sensitivity=draw(rates["marrow_sensitivity_cv"]),
        ae_susceptibility=draw(rates["ae_susceptibility_cv"]),
        chemo_toxicity=torch.ones(n, device=device))


def with_regimen_toxicity(patients: ToxPatients, cancer_types, params) -> ToxPatients:
    """``patients`` with the chemotherapy regimen toxicity of each one's cancer type."""
    values = [params.cancer(str(c)).chemo_toxicity for c in cancer_types]
    tensor = torch.as_tensor(values, dtype=patients.anc_baseline.dtype,
                             device=patients.anc_baseline.device)
    return replace(patients, chemo_toxicity=tensor)


def typical_tox_patients(rates: dict[str, float], n: int,
                         device: torch.device | str = "cpu") -> ToxPatients:
    """``n`` population-typical patients (what a planner assumes of an unmeasured patient)."""
    ones = torch.ones(n, device=device)
    return ToxPatients(ones, rates["anc_baseline"] * ones, ones.clone(), ones.clone(),
                       ones.clone())


@dataclass(frozen=True, repr=False)  # TensorTree.__repr__: sizes, not tensors
class ToxState(TensorTree):
    """Toxicity and treatment-administration state of ``n`` patients.

    Attributes
    ----------
    neutrophils
        ``(n, 5)`` Friberg compartments (:data:`NEUTROPHIL_COMPARTMENTS`), ``x 1e9/L``.
    severe_neutropenia_days
        ``(n,)`` consecutive days with ANC < 0.5.
    worst_neutropenia
        ``(n,)`` worst CTCAE neutropenia grade so far (0-4).
    neutropenia_episodes, fn_episodes
        ``(n,)`` grade >= 3 neutropenia episodes and febrile neutropenia episodes.
    irae_count, irae_day, irae_grade
        ``(n,)`` grade >= 3 irAE episodes, day of the first (-1 if none), worst grade.
    ae_count, ae_day
        ``(n,)`` grade >= 3 treatment-related events of any kind, day of the first.
    load
        ``(n,)`` toxicity load (overlapping severe events).
    dose_factor, reductions
        ``(n, 5)`` current dose multiple and number of reductions per therapy.
    reduced_this_cycle
        ``(n, 5)`` already reduced since the last dose: the next dose is reduced once for
        the worst toxicity of the cycle, not once per event.
    pending, retry_day
        ``(n, 5)`` delayed dose waiting to be given, and the day it is re-checked.
    delays
        ``(n,)`` chemotherapy doses delayed so far.
    hold_until
        ``(n, 5)`` a therapy is not given before this day.
    stopped, stop_reason, stop_day
        ``(n, 5)`` permanently stopped, why (:data:`STOP_REASONS`) and when (-1).
    death_cause
        ``(n,)`` :data:`DEATH_CAUSES` code (0 while alive).
    """

    neutrophils: torch.Tensor
    severe_neutropenia_days: torch.Tensor
    worst_neutropenia: torch.Tensor
    neutropenia_episodes: torch.Tensor
    fn_episodes: torch.Tensor
    irae_count: torch.Tensor
    irae_day: torch.Tensor
    irae_grade: torch.Tensor
    ae_count: torch.Tensor
    ae_day: torch.Tensor
    load: torch.Tensor
    dose_factor: torch.Tensor
    reductions: torch.Tensor
    reduced_this_cycle: torch.Tensor
    pending: torch.Tensor
    retry_day: torch.Tensor
    delays: torch.Tensor
    hold_until: torch.Tensor
    stopped: torch.Tensor
    stop_reason: torch.Tensor
    stop_day: torch.Tensor
    death_cause: torch.Tensor

    @classmethod
    def start(cls, patients: ToxPatients) -> ToxState:
        """Untreated patients at their baseline neutrophil counts."""
        anc = patients.anc_baseline
        n, device = anc.shape[0], anc.device

        def full(value, shape=(), dtype=torch.long):
            return torch.full((n, *shape), value, dtype=dtype, device=device)

        return cls(
            neutrophils=anc[:, None].expand(n, len(NEUTROPHIL_COMPARTMENTS)).clone(),
            severe_neutropenia_days=full(0), worst_neutropenia=full(0),
            neutropenia_episodes=full(0), fn_episodes=full(0), irae_count=full(0),
            irae_day=full(-1), irae_grade=full(0), ae_count=full(0), ae_day=full(-1),
            load=full(0.0, dtype=torch.float32),
            dose_factor=full(1.0, (N_THERAPIES,), torch.float32),
            reductions=full(0, (N_THERAPIES,)),
            reduced_this_cycle=full(False, (N_THERAPIES,), torch.bool),
            pending=full(0.0, (N_THERAPIES,), torch.float32),
            retry_day=full(0, (N_THERAPIES,)), delays=full(0),
            hold_until=full(0, (N_THERAPIES,)),
            stopped=full(False, (N_THERAPIES,), torch.bool),
            stop_reason=full(NOT_STOPPED, (N_THERAPIES,)),
            stop_day=full(-1, (N_THERAPIES,)), death_cause=full(ALIVE),
        )

    @property
    def anc(self) -> torch.Tensor:
        """``(n,)`` circulating neutrophils ``x 1e9/L``."""
        return self.neutrophils[:, -1]

    @property
    def discontinued(self) -> torch.Tensor:
        """``(n,)`` some therapy was stopped for toxicity (or the patient became unfit)."""
        return ((self.stop_reason == STOP_TOXICITY) | (self.stop_reason == STOP_UNFIT)).any(-1)

    @property
    def treatment_death(self) -> torch.Tensor:
        """``(n,)`` died of a treatment-related cause."""
        return self.death_cause >= IRAE_DEATH

    def stop(self, mask: torch.Tensor, reason: int, day: torch.Tensor) -> ToxState:
        """Stop the therapies in ``mask`` (``(n, 5)`` bool) for ``reason`` on ``day``."""
        if not bool(mask.any()):
            return self
        new = mask & ~self.stopped
        return replace(
            self, stopped=self.stopped | mask,
            stop_reason=torch.where(new, torch.full_like(self.stop_reason, reason),
                                    self.stop_reason),
            stop_day=torch.where(new, day[:, None].expand_as(self.stop_day), self.stop_day))


def neutropenia_grade(anc: torch.Tensor) -> torch.Tensor:
    """CTCAE v5 neutropenia grade of an ANC in ``x 1e9/L`` (lower limit of normal 2.0)."""
    grade = torch.zeros_like(anc, dtype=torch.long)
    for threshold, g in ((2.0, 1), (1.5, 2), (1.0, 3), (0.5, 4)):
        grade = torch.where(anc < threshold, torch.full_like(grade, g), grade)
    return grade


class Toxicity:
    """The toxicity model with its constants (one device).

    Parameters
    ----------
    rates
        Shared rates (toxicity entries of :data:`immunegym.sim.parameters.RATES`).
    device
        Torch device.
    """

    def __init__(self, rates: dict[str, float], device: torch.device | str = "cpu") -> None:
        self.r = rates
        self.device = torch.device(device)
        self.ktr = 4.0 / (rates["neutrophil_mtt_hours"] / 24.0)
        self.load_keep = math.exp(-math.log(2) / rates["toxicity_load_half_life"])

    # ------------------------------------------------------------------ administration
    def administer(self, tox: ToxState, scheduled: torch.Tensor, day: torch.Tensor,
                   alive: torch.Tensor, rules: ProtocolRules
                   ) -> tuple[ToxState, torch.Tensor]:
        """Turn today's scheduled doses (``(n, 5)``) into given doses.

        Returns the new state (pending and delayed doses) and the ``(n, 5)`` doses given.
        """
        today = day[:, None]
        open_ = alive[:, None] & ~tox.stopped & (today >= tox.hold_until)
        # Chemotherapy waits for neutrophil recovery: a new cycle replaces a missed one.
        pending = torch.where(scheduled > 0, torch.maximum(tox.pending, scheduled),
                              tox.pending)
        due = (pending > 0) & (today >= tox.retry_day) & open_
        ready = tox.anc[:, None] >= rules.anc_to_dose
        waits = torch.zeros_like(due)
        waits[:, CHEMO] = due[:, CHEMO] & ~ready[:, 0]
        give_pending = due & ~waits
        given = torch.where(give_pending, pending, torch.zeros_like(pending))
        # Only chemotherapy is delayed; other drugs are given on their day or not at all.
        delayable = torch.zeros_like(due)
        delayable[:, CHEMO] = True
        given = torch.where(delayable, given, scheduled * open_)
        pending = torch.where(delayable & ~give_pending & open_, pending,
                              torch.zeros_like(pending))
        retry = torch.where(waits, today + rules.delay_days, tox.retry_day)
        given = given * tox.dose_factor
        # A delay is counted once per dose: on its scheduled day, not at every re-check.
        delays = tox.delays + (waits[:, CHEMO] & (scheduled[:, CHEMO] > 0)).long()
        return replace(tox, pending=pending, retry_day=retry, delays=delays,
                       reduced_this_cycle=tox.reduced_this_cycle & ~(given > 0)), given

    # ------------------------------------------------------------------ daily toxicity
    def step(self, tox: ToxState, patients: ToxPatients, exposure: Exposure,
             given: torch.Tensor, day: torch.Tensor, alive: torch.Tensor,
             irae_rules: torch.Tensor, rules: ProtocolRules,
             generator: torch.Generator) -> ToxState:
        """One day of toxicity for every patient; dead patients are carried unchanged.

        Parameters
        ----------
        tox
            Today's toxicity state.
        patients
            Toxicity parameters.
        exposure
            Today's drug exposure (after today's doses).
        given
            ``(n, 5)`` doses given today.
        day
            ``(n,)`` today's day.
        alive
            ``(n,)`` alive at the start of the day.
        irae_rules
            ``(n, 5)`` :data:`IRAE_RULES` codes: what a grade 3 irAE does to each therapy.
        rules
            The protocol.
        generator
            Seeded generator of every draw.
        """
        r = self.r
        n = alive.shape[0]
        dev = alive.device

        # Every draw of the day at once (one call keeps the step cheap at large batches).
        draws = iter(torch.rand(N_DRAWS, n, generator=generator, device=dev).unbind(0))

        def uniform() -> torch.Tensor:
            return next(draws)

        # --- neutrophils (Friberg 2002), 4 explicit sub-steps per day --------------
        marrow = patients.marrow_sensitivity * (
            r["chemo_marrow_slope"] * patients.chemo_toxicity * exposure.chemo_amount
            + r["targeted_marrow_slope"] * exposure.targeted_amount)
        neut = _friberg(tox.neutrophils, patients.anc_baseline, marrow, self.ktr,
                        r["neutrophil_feedback"])
        anc = neut[:, -1]
        grade = neutropenia_grade(anc)
        new_g3 = (anc < 1.0) & (tox.anc >= 1.0) & alive
        severe_days = torch.where(anc < 0.5, tox.severe_neutropenia_days + 1,
                                  torch.zeros_like(tox.severe_neutropenia_days))
        fn_hazard = r["fn_hazard_severe"] * torch.where(
            anc < 0.5, 1.0, torch.where(anc < 1.0, r["fn_moderate_relative"], 0.0))
        fn = (uniform() < -torch.expm1(-fn_hazard)) & alive
        fn_death = fn & (uniform() < r["fn_fatality"])
        prolonged = severe_days == 8  # grade 4 lasting > 7 days

        # --- immune-related adverse events ------------------------------------------
        e_pd1 = _saturating(exposure.systemic_pd1, r["irae_exposure_half_pd1"])
        e_ctla4 = _saturating(exposure.systemic_ctla4, r["irae_exposure_half_ctla4"])
        h_pd1 = r["irae_hazard_pd1"] * e_pd1
        h_ctla4 = r["irae_hazard_ctla4"] * e_ctla4 * (1 + r["irae_interaction"] * e_pd1)
        hazard = patients.irae_susceptibility * (h_pd1 + h_ctla4)
        irae = (uniform() < -torch.expm1(-hazard)) & alive
        # Attribute the event to a drug class by its share of the hazard.
        from_ctla4 = uniform() * (h_pd1 + h_ctla4).clamp_min(1e-30) < h_ctla4
        fatal_p = torch.where(from_ctla4, r["irae_fatal_ctla4"], r["irae_fatal_pd1"])
        stop_p = torch.where(from_ctla4, r["irae_stop_ctla4"], r["irae_stop_pd1"])
        irae_death = irae & (uniform() < fatal_p)
        grade4 = irae & (uniform() < r["irae_grade4_fraction"])
        organ_stop = irae & (uniform() < stop_p)
        recurrent = irae & (tox.irae_count >= 1)

        # --- other grade >= 3 treatment-related events ------------------------------
        susceptible = patients.ae_susceptibility
        per_dose = (r["chemo_ae_per_dose"] * patients.chemo_toxicity).clamp(max=0.99)
        chemo_p = 1 - torch.pow(1 - per_dose, given[:, CHEMO].clamp_min(0))
        radio_p = 1 - torch.pow(1 - r["radio_ae_per_fraction"],
                                given[:, RADIO].clamp_min(0) / RADIO_STANDARD_GY)
        other_chemo = (uniform() < (chemo_p * susceptible).clamp(max=1)) & alive
        other_radio = (uniform() < (radio_p * susceptible).clamp(max=1)) & alive
        targeted_p = -torch.expm1(-r["targeted_ae_hazard"] * exposure.targeted_amount
                                  * susceptible)
        other_targeted = (uniform() < targeted_p) & alive

        # --- counts, load, reductions and stops ------------------------------------
        # Every grade >= 3 event counts; afebrile neutropenia is a laboratory event that
        # delays chemotherapy but does not lower performance status, so it adds no load.
        clinical = (fn.long() + irae.long() + other_chemo.long() + other_radio.long()
                    + other_targeted.long())
        events = clinical + new_g3.long()
        first = (tox.ae_count == 0) & (events > 0)
        load = tox.load * self.load_keep + clinical.float()
        tox = replace(
            tox, neutrophils=neut, severe_neutropenia_days=severe_days,
            worst_neutropenia=torch.maximum(tox.worst_neutropenia, grade),
            neutropenia_episodes=tox.neutropenia_episodes + new_g3.long(),
            fn_episodes=tox.fn_episodes + fn.long(),
            irae_count=tox.irae_count + irae.long(),
            irae_day=torch.where(irae & (tox.irae_day < 0), day, tox.irae_day),
            irae_grade=torch.maximum(tox.irae_grade,
                                     torch.where(grade4, 4, torch.where(irae, 3, 0))),
            ae_count=tox.ae_count + events, ae_day=torch.where(first, day, tox.ae_day),
            load=load)
        # Dose reductions: chemotherapy after FN / prolonged grade 4 / its own event,
        # targeted therapy after its own event (then held until it resolves).
        reduce = torch.zeros(n, N_THERAPIES, dtype=torch.bool, device=dev)
        # Marrow events reduce chemotherapy only in patients who have it on board.
        on_chemo = exposure.chemo_amount > 1e-4
        reduce[:, CHEMO] = ((fn | prolonged) & on_chemo) | other_chemo
        reduce[:, TARGETED] = other_targeted
        reduce &= ~tox.stopped & ~tox.reduced_this_cycle
        exhausted = reduce & (tox.reductions >= rules.max_reductions)
        reductions = tox.reductions + (reduce & ~exhausted).long()
        dose_factor = torch.where(reduce & ~exhausted, tox.dose_factor * rules.reduction_factor,
                                  tox.dose_factor)
        hold = tox.hold_until.clone()
        hold[:, TARGETED] = torch.where(other_targeted, day + rules.targeted_hold_days,
                                        hold[:, TARGETED])
        tox = replace(tox, reductions=reductions, dose_factor=dose_factor, hold_until=hold,
                      reduced_this_cycle=tox.reduced_this_cycle | reduce)
        tox = tox.stop(exhausted, STOP_TOXICITY, day)
        # irAE rules: grade 4, recurrence or an organ rule stop checkpoint inhibitors;
        # otherwise each therapy's grade 3 rule (hold or stop) applies.
        checkpoint = torch.zeros(n, N_THERAPIES, dtype=torch.bool, device=dev)
        checkpoint[:, CHECKPOINTS] = True
        permanent = (grade4 | recurrent | organ_stop)[:, None] & checkpoint
        by_rule = irae[:, None] & checkpoint
        stop = permanent | (by_rule & (irae_rules == 2))
        held = by_rule & (irae_rules == 1) & ~stop
        tox = replace(tox, hold_until=torch.where(
            held, day[:, None] + rules.irae_hold_days, tox.hold_until))
        tox = tox.stop(stop, STOP_TOXICITY, day)
        unfit = (tox.load >= rules.unfit_load) & alive
        tox = tox.stop(unfit[:, None].expand(n, N_THERAPIES), STOP_UNFIT, day)

        # --- treatment-related death ----------------------------------------------------
        excess = (tox.load - 1).clamp_min(0)
        load_death = (uniform() < -torch.expm1(-r["toxicity_death_hazard"] * excess.square())
                      ) & alive
        cause = torch.where(load_death, LOAD_DEATH, ALIVE)
        cause = torch.where(fn_death, FN_DEATH, cause)
        cause = torch.where(irae_death, IRAE_DEATH, cause)
        tox = replace(tox, death_cause=torch.where(
            (tox.death_cause == ALIVE) & alive, cause, tox.death_cause))
        return tox


def _saturating(exposure: torch.Tensor, half: float) -> torch.Tensor:
    """Exposure effect normalized to 1 at the standard dose: ``e (1 + h) / (e + h)``."""
    return exposure * (1 + half) / (exposure + half)


def _friberg(compartments: torch.Tensor, baseline: torch.Tensor, drug: torch.Tensor,
             ktr: float, gamma: float, substeps: int = 4) -> torch.Tensor:
    """One day of the Friberg neutrophil model; ``drug`` lowers proliferation.

    Each compartment relaxes at ``ktr`` towards its inflow: proliferation
    ``prol (1 - drug) (ANC0 / ANC)^gamma`` for the proliferating pool, the previous
    compartment for the others (explicit Euler, ``substeps`` per day).
    """
    x = compartments
    rate = ktr / substeps
    base = baseline.clamp_min(1e-3)
    keep = 1 - drug
    for _ in range(substeps):
        feedback = (base / x[:, -1].clamp_min(1e-3)).pow(gamma)
        inflow = torch.cat([x[:, :1] * (keep * feedback)[:, None], x[:, :-1]], dim=1)
        x = (x + rate * (inflow - x)).clamp_min(1e-4)
    return x
