"""The batched episode logic both environments share, in torch.

An :class:`Engine` runs ``n`` episodes at once over a simulator core (the world model or
ImmuneSim): it draws patients from the bank at reset, applies the clinical rules (course
caps, and ImmuneSim's toxicity model with its protocol rules: holds, delays, reductions,
discontinuation, treatment-related death), takes biopsies and scans on schedule, assesses
RECIST (the irradiated lesion leaves the target sum), and computes reward, cost and episode
end. Gymnasium classes (:mod:`.vector`, :mod:`.single`) convert to and from numpy around
it; nothing here is numpy except the bank's names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from immunegym.env.clinical import (
    RADIO,
    ClinicalState,
    ToxicityCore,
    biopsy,
    model_death,
    open_therapies,
    reset_tracker_rows,
)
from immunegym.env.patients import PatientBank
from immunegym.env.scenario import Scenario
from immunegym.env.sim_core import SimCore
from immunegym.env.world_core import WorldCore
from immunegym.sim import ImmuneSim
from immunegym.sim.outcomes import RecistTracker, sum_of_diameters
from immunegym.sim.toxicity import IRAE_DEATH, ToxState
from immunegym.validation import (
    ValidationError,
    bad,
    choice,
    existing_file,
    integer,
    memory_budget,
)
from immunegym.validation import device as check_device
from immunegym.validation import seed as check_seed

MAX_NUM_ENVS = 2**22
"""Most envs of one native vector env."""
BYTES_PER_ENV = 10_000
"""Estimated peak memory per env row on CPU (measured ~5 KB with either simulator; x2)."""


def check_num_envs(value: Any) -> int:
    """``num_envs`` as an int in ``1..MAX_NUM_ENVS`` whose memory estimate fits the limit."""
    n = integer("num_envs", value, low=1, high=MAX_NUM_ENVS)
    memory_budget("num_envs", n, n * BYTES_PER_ENV, "the envs' state")
    return n


@dataclass
class StepOutcome:
    """One cycle of ``n`` episodes (tensors ``(n,)`` unless noted)."""

    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    cost: torch.Tensor  # grade >= 3 treatment-related adverse events this cycle
    given: torch.Tensor  # (n, R) dose levels actually given
    died: torch.Tensor
    treatment_death: torch.Tensor
    progressed: torch.Tensor
    irae: torch.Tensor
    delayed: torch.Tensor  # chemotherapy doses delayed this cycle
    sod_mm: torch.Tensor


class Engine:
    """``n`` episodes of one scenario over one simulator.

    Parameters
    ----------
    simulator
        ``"world"`` (the world model) or ``"sim"`` (ImmuneSim).
    scenario
        The scenario.
    n
        Episodes run side by side.
    model
        The world model (``"world"`` only); the pretrained default when ``None``.
    bank
        Patients to draw from; built from the scenario when ``None``.
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    seed
        Seed of the engine's generator (patients, biopsies, scans, toxicity, dynamics).
    observation_noise
        ``False`` turns biopsy and imaging noise off (debugging).
    world_options
        Extra :class:`~.world_core.WorldCore` arguments (``chunk_size``, ``sample``,
        ``max_sod_mm``).
    """

    def __init__(self, simulator: str, scenario: Scenario, n: int, *, model=None,
                 bank: PatientBank | None = None, device: str = "cpu", seed: int = 0,
                 observation_noise: bool = True, world_options: dict | None = None) -> None:
        simulator = choice("simulator", simulator, ("world", "sim"))
        if not isinstance(scenario, Scenario):
            raise bad("scenario", scenario, "a Scenario")
        n = check_num_envs(n)
        self.device = torch.device(check_device("device", device))
        seed = check_seed("seed", seed)
        self.simulator, self.scenario, self.n = simulator, scenario, n
        self.cells = scenario.biopsy_cells if observation_noise else 0
        self.imaging_cv = scenario.imaging_cv if observation_noise else 0.0
        self.sim = ImmuneSim(device=self.device)
        self.rates = self.sim.params.rates
        self.lesion_keep = (1 - self.rates["radio_field_fraction"]) ** (1 / 3)
        if simulator == "world" and model is None:
            from immunegym.world_model import load

            model = load(device=str(self.device))
        elif model is not None:
            model.to(str(self.device))
        self.model = model
        if bank is None:
            bank = _scenario_bank(scenario, simulator, model, self.device)
        bank = bank.to(self.device)
        if simulator == "sim" and not bank.has_hidden_state:
            raise ValidationError("patient_source: ImmuneSim-v0 needs ImmuneSim patients (source "
                             "'sim'); a cohort's biopsies do not carry the hidden state")
        self.bank = bank
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        if simulator == "world":
            # No tumor outgrows ImmuneSim's carrying capacity; neither does the model's.
            capacity = float(sum_of_diameters(torch.tensor(self.rates["tumor_capacity"]),
                                              self.rates))
            options = {"max_sod_mm": capacity, **(world_options or {})}
            self.core: WorldCore | SimCore = WorldCore(
                model, n, scenario.horizon, scenario.cycle_days, **options)
            self.tox_core: ToxicityCore | None = ToxicityCore(
                self.rates, n, scenario.cycle_days, self.device)
        else:
            self.core = SimCore(self.sim, bank.sim_patients, bank.sim_state, n,
                                scenario.cycle_days)
            self.tox_core = None
        k, g = bank.composition.shape[1], bank.programs.shape[2]
        z = {"device": self.device}
        self.clinical = ClinicalState.zeros(n, self.device)
        self.tracker = RecistTracker.start(torch.ones(n, **z))
        self.patient = torch.zeros(n, dtype=torch.long, **z)
        self.comp_obs = torch.zeros(n, k, **z)
        self.programs_obs = torch.zeros(n, g, **z)
        self.programs_observed = torch.zeros(n, **z)
        self.sod_true = torch.zeros(n, **z)
        self.sod_target = torch.zeros(n, **z)
        self.sod_scan = torch.zeros(n, **z)
        self.sod_baseline = torch.zeros(n, **z)
        self.biopsy_cycle = torch.zeros(n, dtype=torch.long, **z)

    def seed(self, seed: int) -> None:
        """Re-seed the engine's generator."""
        self.generator.manual_seed(int(seed))

    @property
    def tox(self) -> ToxState:
        """Every row's toxicity and treatment-administration state."""
        if self.tox_core is not None:
            return self.tox_core.tox
        return self.core.state.tox

    def _day(self) -> torch.Tensor:
        """``(n,)`` days since each row's baseline."""
        if self.tox_core is not None:
            return self.tox_core.day
        return self.core.state.day

    # ------------------------------------------------------------------ reset
    def reset_rows(self, rows: torch.Tensor, patients: torch.Tensor | None = None) -> None:
        """Start new episodes in ``rows`` with bank patients (drawn when ``None``)."""
        if len(rows) == 0:
            return
        g = self.generator
        if patients is None:
            patients = torch.randint(0, len(self.bank), (len(rows),), generator=g,
                                     device=self.device)
        b = self.bank
        self.patient[rows] = patients
        comp = b.composition[patients]
        sod = b.sod_mm[patients]
        observed = biopsy(comp, self.cells, g)
        scanned = sod * self._noise(len(rows))
        self.comp_obs[rows] = observed
        mask = b.program_mask[patients]
        weight = observed * mask
        total = weight.sum(-1, keepdim=True)
        self.programs_obs[rows] = torch.where(
            total > 0, (weight.unsqueeze(-1) * b.programs[patients]).sum(1)
            / total.clamp_min(1e-12), torch.zeros_like(self.programs_obs[rows]))
        self.programs_observed[rows] = (total[:, 0] > 0).float()
        self.sod_true[rows] = sod
        self.sod_target[rows] = sod
        self.sod_scan[rows] = scanned
        self.sod_baseline[rows] = scanned
        self.biopsy_cycle[rows] = 0
        self.clinical.reset_rows(rows)
        reset_tracker_rows(self.tracker, rows, scanned)
        if isinstance(self.core, WorldCore):
            names = b.cancer_type[patients.cpu().numpy()].tolist()
            # The model starts from what the lab saw: the biopsy and the scan.
            self.core.reset_rows(rows, observed, scanned, b.programs[patients], mask, names, g)
            self.tox_core.reset_rows(rows, b.tox.index(patients))
        else:
            self.core.reset_rows(rows, patients)

    # ------------------------------------------------------------------ step
    def allowed(self) -> torch.Tensor:
        """``(n, R)`` therapies the course caps and the toxicity rules allow this cycle."""
        clin = self.clinical
        return clin.within_caps() & open_therapies(self.tox, clin.alive, self._day())

    def _noise(self, n: int) -> torch.Tensor:
        """Multiplicative imaging noise of one reading per row (ImmuneSim's law)."""
        if self.imaging_cv == 0:
            return torch.ones(n, device=self.device)
        z = torch.randn(n, generator=self.generator, device=self.device)
        return torch.exp(self.imaging_cv * z)

    def step(self, levels: torch.Tensor) -> StepOutcome:
        """One cycle for every row under dose ``levels`` (``(n, R)``, standard cycles).

        Therapies the rules forbid are withheld and the protocol may delay or reduce a dose
        (``StepOutcome.given`` says what was given).
        """
        sc, g, clin = self.scenario, self.generator, self.clinical
        requested = levels.to(self.device, torch.float32) * self.allowed().float()
        alive_before = clin.alive.clone()
        tox0 = self.tox
        ae0, irae0, delays0 = tox0.ae_count.clone(), tox0.irae_count.clone(), tox0.delays.clone()
        sod_before = self.sod_true.clone()
        if isinstance(self.core, WorldCore):
            given = self.tox_core.step(requested, alive_before, g)
            comp, sod = self.core.step(given, g)
            # A course is new when the last cycle gave no radiotherapy (ImmuneSim's ~40-day
            # rule: consecutive cycles continue one course on one lesion).
            new_lesion = (given[:, RADIO] > 0) & (clin.last_given[:, RADIO] == 0)
            # A course sterilizes the lesion (LQ survival of 3 x 8 Gy at ImmuneSim's mean
            # radiosensitivity is ~1e-4), so what the model predicts afterwards is the
            # disease outside it: all of it is the target sum, against a rescaled baseline.
            target = sod
            treatment_death = self.tox.death_cause >= IRAE_DEATH
            died = model_death(sod, self.rates, sc.cycle_days, g) | treatment_death
        else:
            out = self.core.step(requested, g)
            comp, sod, target, given, new_lesion = (out.composition, out.sod_mm,
                                                    out.target_sod_mm, out.given,
                                                    out.new_lesion)
            died = ~self.core.state.alive
            treatment_death = self.tox.death_cause >= IRAE_DEATH
        tox = self.tox
        died &= alive_before
        treatment_death &= died
        cost = ((tox.ae_count - ae0) * alive_before).float()
        irae = (tox.irae_count > irae0) & alive_before
        delayed = ((tox.delays - delays0) * alive_before).float()
        clin.record_cycle(given, died)
        new_lesion &= alive_before
        clin.lesion_excluded |= new_lesion
        self.tracker.exclude(new_lesion, self.lesion_keep)
        self.sod_true = torch.where(alive_before, sod, self.sod_true)
        self.sod_target = torch.where(alive_before, target, self.sod_target)
        # Biopsies and scans on schedule, for patients alive at the end of the cycle.
        alive = clin.alive
        take = alive & (clin.cycle % sc.biopsy_every == 0)
        if bool(take.any()):
            self.comp_obs = torch.where(take[:, None], biopsy(comp, self.cells, g),
                                        self.comp_obs)
            self.biopsy_cycle = torch.where(take, clin.cycle, self.biopsy_cycle)
        scan = alive & (clin.cycle % sc.scan_every == 0)
        newly = torch.zeros_like(scan)
        if bool(scan.any()):
            # One reading: every lesion for the record, the target lesions for RECIST.
            noise = self._noise(self.n)
            self.sod_scan = torch.where(scan, self.sod_true * noise, self.sod_scan)
            newly = self.tracker.update(scan, self.sod_target * noise,
                                        clin.cycle * sc.cycle_days)
            clin.progressed |= newly
        w = sc.reward
        shrink = torch.log1p(sod_before) - torch.log1p(self.sod_true)
        reward = (w.tumor * shrink * alive_before + w.survival * alive.float()
                  - w.death * died.float() - w.progression * newly.float()
                  - w.toxicity * cost)
        terminated = died | (newly & sc.terminate_on_progression)
        truncated = (clin.cycle >= sc.horizon) & ~terminated
        return StepOutcome(reward, terminated, truncated, cost, given, died, treatment_death,
                           newly, irae, delayed, self.sod_true.clone())

    # ------------------------------------------------------------------ observation
    def observation_parts(self) -> dict[str, torch.Tensor]:
        """The observation fields (:data:`~.spaces.OBSERVATION_DOC`) of every row."""
        clin, sc = self.clinical, self.scenario
        burden = torch.log1p(self.sod_scan)
        return {
            "composition": self.comp_obs,
            "programs": self.programs_obs,
            "programs_observed": self.programs_observed,
            "burden": burden,
            "burden_change": burden - torch.log1p(self.sod_baseline),
            "time": clin.cycle.float() / sc.horizon,
            "biopsy_age": (clin.cycle - self.biopsy_cycle).float() / sc.horizon,
            "last_therapy": clin.last_given,
            "exposure": clin.exposure,
            "irae": (self.tox.irae_count > 0).float(),
        }

    def best_response(self) -> torch.Tensor:
        """``(n,)`` RECIST best overall response codes so far."""
        return self.tracker.best_overall()

    def memory_bytes(self) -> int:
        """Bytes of per-row state held by the simulator core."""
        return self.core.memory_bytes()


def _scenario_bank(scenario: Scenario, simulator: str, model, device) -> PatientBank:
    if scenario.patient_source == "sim":
        return PatientBank.from_sim(scenario.cancer_types, scenario.bank_size,
                                    seed=scenario.bank_seed, device=device, field="bank_size")
    if simulator == "sim":
        raise bad("patient_source", scenario.patient_source, "'sim': ImmuneSim-v0 needs "
                  "ImmuneSim patients (a cohort's biopsies do not carry its hidden state)")
    path = existing_file("patient_source", scenario.patient_source, hdf5=True)
    prior = model.leaf_prior() if model is not None else None
    bank = PatientBank.from_anndata(path, prior=prior, seed=scenario.bank_seed, device=device)
    if scenario.cancer_types:
        keep = np.isin(bank.cancer_type, list(scenario.cancer_types))
        if not keep.any():
            raise bad("cancer_types", scenario.cancer_types, "cancer types present in "
                      f"{scenario.patient_source} ({sorted(set(bank.cancer_type.tolist()))})")
        rows = torch.as_tensor(np.flatnonzero(keep), device=device)
        bank = PatientBank(bank.cancer_type[keep], bank.composition[rows], bank.sod_mm[rows],
                           bank.programs[rows], bank.program_mask[rows],
                           bank.tox.index(rows), bank.patient_id[keep])
    return bank

