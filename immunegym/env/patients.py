"""Virtual patients an episode can start from: a bank drawn once, picked at every reset.

A :class:`PatientBank` holds each patient's baseline: the true composition of the tumor at
day 0, its sum of diameters, program scores where a lab measured them, and the toxicity
parameters of ImmuneSim's toxicity model (irAE susceptibility, baseline neutrophils, marrow
sensitivity, frailty). Banks come from ImmuneSim (:meth:`PatientBank.from_sim`, which also keeps
the hidden state so ImmuneSim-v0 can continue the same patient) or from a cohort's first
biopsies (:meth:`PatientBank.from_anndata`: digital twins of real or generated patients,
for ImmuneWorld-v0). Drawing the bank once keeps resets cheap: ImmuneSim's 120-day burn-in
runs for the whole bank in one batched call, not per episode.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch

from immunegym.sim import ImmuneSim
from immunegym.sim.outcomes import sum_of_diameters
from immunegym.sim.state import Patients, SimState
from immunegym.sim.toxicity import ToxPatients, sample_tox_patients, with_regimen_toxicity
from immunegym.validation import (
    ValidationError,
    bad,
    choice,
    existing_file,
    integer,
    memory_budget,
)
from immunegym.validation import seed as check_seed

BANK_BYTES_PER_PATIENT = 8192
"""Estimated peak memory per ImmuneSim bank patient while it is drawn and relaxed (measured
~4 KB on CPU, x2)."""


@dataclass
class PatientBank:
    """Baselines of ``N`` patients (tensors on one device).

    Attributes
    ----------
    cancer_type
        ``(N,)`` cancer-type ids (numpy strings).
    composition
        ``(N, K)`` baseline composition over the fine types.
    sod_mm
        ``(N,)`` baseline sum of target-lesion diameters (mm).
    programs, program_mask
        ``(N, K, G)`` program scores and ``(N, K)`` where they were measured.
    tox
        ``(N,)`` toxicity parameters (:class:`~immunegym.sim.toxicity.ToxPatients`).
    patient_id
        ``(N,)`` identifiers (numpy strings).
    sim_patients, sim_state
        ImmuneSim's hidden parameters and day-0 state (``None`` for cohort banks).
    """

    cancer_type: np.ndarray
    composition: torch.Tensor
    sod_mm: torch.Tensor
    programs: torch.Tensor
    program_mask: torch.Tensor
    tox: ToxPatients
    patient_id: np.ndarray
    sim_patients: Patients | None = None
    sim_state: SimState | None = None

    def __len__(self) -> int:
        return int(self.composition.shape[0])

    @property
    def has_hidden_state(self) -> bool:
        return self.sim_state is not None

    @classmethod
    def from_sim(cls, cancer_types: dict[str, float], n: int, *, seed: int = 0,
                 sim: ImmuneSim | None = None, n_programs: int = 8,
                 device: str | torch.device = "cpu", field: str = "n") -> PatientBank:
        """Draw ``n`` ImmuneSim patients of a cancer-type mix and relax them to day 0.

        Parameters
        ----------
        cancer_types
            Cancer type -> weight; empty for every calibrated type equally.
        n
            Patients (split over the types by largest remainder).
        seed
            Seed of the simulator that draws them.
        sim
            The simulator (its parameters); a fresh calibrated one when ``None``.
        n_programs
            Program columns (none are measured: ImmuneSim's hidden state has no biopsy).
        field
            The name ``n`` has in error messages (``"bank_size"`` for a scenario's bank).

        Raises
        ------
        ValidationError
            For a size outside ``1..MAX_BANK_SIZE`` or above the memory limit (estimated
            before anything is drawn), an unknown cancer type, or a bad weight or seed.
        """
        from immunegym.env.scenario import MAX_BANK_SIZE, _cancer_types

        n = integer(field, n, low=1, high=MAX_BANK_SIZE)
        memory_budget(field, n, n * BANK_BYTES_PER_PATIENT, "the patient bank")
        seed = check_seed("seed", seed)
        n_programs = integer("n_programs", n_programs, low=0, high=64)
        weights = _cancer_types(cancer_types)
        if sim is not None and not isinstance(sim, ImmuneSim):
            raise bad("sim", sim, "an ImmuneSim or None")
        sim = ImmuneSim(params=None if sim is None else sim.params, device=device, seed=seed)
        known = sorted(sim.params.cancer_types)
        for cancer in weights:
            choice("cancer_types", cancer, known)
        mix = weights or {c: 1.0 for c in known}
        counts = _split(n, mix)
        drawn = [sim.sample_patients(c, k) for c, k in counts.items() if k]
        patients, state = sim.reset(Patients.concat(drawn))
        composition = state.composition()
        sod = sum_of_diameters(state.tumor, sim.params.rates)
        k = composition.shape[1]
        names = np.concatenate([[c] * k_ for c, k_ in counts.items() if k_]).astype(str)
        return cls(
            cancer_type=names, composition=composition, sod_mm=sod,
            programs=torch.zeros(n, k, n_programs, device=sim.device),
            program_mask=torch.zeros(n, k, dtype=torch.bool, device=sim.device),
            tox=patients.toxicity,
            patient_id=np.array([f"sim-{seed}-{i}" for i in range(n)]),
            sim_patients=patients, sim_state=state)

    @classmethod
    def from_anndata(cls, adata, *, prior: torch.Tensor | None = None, seed: int = 0,
                     device: str | torch.device = "cpu") -> PatientBank:
        """Baselines from the first biopsy of every patient of a registered cohort.

        Parameters
        ----------
        adata
            An AnnData registered with :func:`immunegym.data.setup_anndata`, or a path to
            an ``.h5ad`` file.
        prior
            ``(K,)`` split of coarse labels over their leaves (the world model's leaf prior);
            even when ``None``.
        seed
            Seed of the toxicity parameters (drawn as ImmuneSim draws them: nobody measured
            them).
        """
        from immunegym.sim.parameters import load_parameters
        from immunegym.world_model.events import split_blocks
        from immunegym.world_model.timelines import build_timelines

        if isinstance(adata, str) or hasattr(adata, "__fspath__"):
            import anndata as ad

            adata = ad.read_h5ad(existing_file("adata", adata, hdf5=True))
        tl = build_timelines(adata)
        first = tl.comp_observed.float().argmax(1)
        has_biopsy = tl.comp_observed.any(1)
        if not bool(has_biopsy.all()):
            missing = tl.patients["patient_id"].to_numpy()[~has_biopsy.numpy()][:5]
            raise ValidationError(f"adata: patients {list(missing)} have no biopsy; a baseline "
                             "needs a composition")
        rows = torch.arange(len(tl))
        counts = tl.counts[rows, first]
        block = tl.block[rows, first]
        k = counts.shape[1]
        weights = prior if prior is not None else torch.ones(k)
        composition = split_blocks(counts, block, weights)
        # Baseline burden: the patient's first scan, else the cohort median (a patient
        # without imaging still needs a starting size).
        scanned = tl.burden_observed.float()
        first_scan = scanned.argmax(1)
        sod = torch.expm1(tl.burden[rows, first_scan]).clamp_min(0)
        has_scan = tl.burden_observed.any(1)
        fallback = sod[has_scan].median() if bool(has_scan.any()) else torch.tensor(70.0)
        sod = torch.where(has_scan, sod, fallback)
        generator = torch.Generator().manual_seed(int(seed))
        params = load_parameters()
        names = tl.patients["cancer_type"].astype(str).to_numpy()
        known = [c if c in params.cancer_types else None for c in names]
        tox = sample_tox_patients(params.rates, len(tl), generator)
        if all(known):
            tox = with_regimen_toxicity(tox, known, params)
        return cls(
            cancer_type=tl.patients["cancer_type"].astype(str).to_numpy(),
            composition=composition.to(device), sod_mm=sod.to(device),
            programs=tl.program_scores[rows, first].to(device),
            program_mask=tl.program_mask[rows, first].to(device),
            tox=tox.to(device),
            patient_id=tl.patients["patient_id"].astype(str).to_numpy())

    def to(self, device: str | torch.device) -> PatientBank:
        """The same patients with every tensor on ``device``."""
        return PatientBank(
            self.cancer_type, self.composition.to(device), self.sod_mm.to(device),
            self.programs.to(device), self.program_mask.to(device),
            self.tox.to(device), self.patient_id,
            None if self.sim_patients is None else self.sim_patients.to(device),
            None if self.sim_state is None else self.sim_state.to(device))

    def index_of(self, patient: int | str, *, field: str = "patient") -> int:
        """Row of a patient given by row number or identifier.

        Raises
        ------
        ValidationError
            Naming ``field``: a row out of range, an unknown id, or neither an integer nor
            a string (floats and booleans are refused).
        """
        n = len(self)
        examples = self.patient_id[:3].tolist()
        if isinstance(patient, numbers.Integral) and not isinstance(patient, (bool, np.bool_)):
            if not 0 <= int(patient) < n:
                raise ValidationError(
                    f"{field}: got {int(patient)}; expected a bank row in 0..{n - 1} (row out "
                    f"of range: the bank holds {n} patients) or a patient id")
            return int(patient)
        if not isinstance(patient, str):
            raise bad(field, patient, f"a bank row (an integer in 0..{n - 1}) or a patient "
                      f"id (a string such as {examples})")
        hits = np.flatnonzero(self.patient_id == patient)
        if not len(hits):
            raise ValidationError(f"{field}: got {patient!r}; expected a row number or a "
                                  f"known patient id such as {examples} (unknown id)")
        return int(hits[0])


def _split(n: int, weights: dict[str, float]) -> dict[str, int]:
    """Largest-remainder split of ``n`` over weighted keys."""
    keys = list(weights)
    w = np.asarray([weights[k] for k in keys], dtype=float)
    share = n * w / w.sum()
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return dict(zip(keys, counts.tolist(), strict=True))
