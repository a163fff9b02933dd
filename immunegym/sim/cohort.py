"""The cohort engine: virtual patients -> the AnnData a lab would deliver, plus hidden truth.

A cohort is one lab's study: patients of one cancer type randomized over one or more
regimens, followed for ``horizon_days``. For each patient ImmuneSim runs day by day; a lab
then sees only what labs see:

* 2-6 biopsies per patient on irregular days (a baseline biopsy, then random days while the
  patient is alive), each a Dirichlet-multinomial draw of a few hundred to a few thousand
  cells with a marker-gene panel of negative-binomial counts, labeled in the lab's own
  convention (renamed, merged and split types, some misannotation) with a per-lab batch
  effect (:mod:`immunegym.sim.observation`);
* the therapy given in every 21-day cycle, imaging every 6-9 weeks (sum of diameters), RECIST
  best overall response, progression-free survival, grade >= 3 irAEs and other
  treatment-related events, discontinuation for toxicity, death and its cause.

The hidden daily state (true compositions, tumor burden, signals, patient parameters) is
returned separately as :class:`HiddenTruth`, for evaluation only; it never enters the AnnData.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from immunegym.data.schema import setup_anndata
from immunegym.data.storage import load_arrays, save_arrays
from immunegym.data.vocab import THERAPIES, format_regimen
from immunegym.ontology import FINE_TYPES
from immunegym.regimen_grammar import RegimenPlan
from immunegym.sim.observation import (
    LABS,
    MARKER_PANEL,
    sample_batch_effect,
    sample_biopsy,
    simulate_cells,
)
from immunegym.sim.outcomes import CR, PR, RESPONSE_CODES
from immunegym.sim.parameters import CANCER_TYPES, PHENOTYPES, ParameterSet
from immunegym.sim.simulator import (
    COHORT_IMAGING,
    MAX_PATIENTS,
    RECORD_BYTES_PER_PATIENT_DAY,
    SIGNAL_NAMES,
    STATE_BYTES_PER_PATIENT,
    ImmuneSim,
    Simulation,
)
from immunegym.sim.state import compartments_to_fine
from immunegym.sim.therapy import MAX_DAYS, parse_regimen
from immunegym.sim.toxicity import DEATH_CAUSES
from immunegym.validation import bad, choice, integer, integer_range, memory_budget
from immunegym.validation import seed as check_seed

TRUTH_KIND = "immunesim_truth"
CYCLE_DAYS = 21
MAX_ARMS = 64
"""Most regimens one cohort randomizes over."""
MAX_BIOPSIES = 100
"""Most biopsies per patient (real studies take 2-6)."""
MAX_BIOPSY_CELLS = 10**6
"""Most cells per biopsy."""
TRUTH_BYTES_PER_PATIENT_DAY = RECORD_BYTES_PER_PATIENT_DAY + 20 * (8 + 4) * 2 + 5 * 4 * 2 + 24
"""Bytes per patient and day of a cohort's run: recorded states, the fine counts and
compositions (float32 and float64), the doses given, tumor and alive."""
BYTES_PER_CELL = 1024
"""Bytes per generated cell: its marker counts (dense while drawn, then sparse) and its obs
row (eleven columns of text before they become categories)."""


@dataclass(frozen=True)
class CohortSpec:
    """What one cohort is.

    Attributes
    ----------
    name
        File-safe cohort name.
    cancer_type
        Cancer-type id.
    regimens
        Regimens patients are randomized over (equal allocation).
    lab
        Lab convention id (:data:`immunegym.sim.observation.LABS`).
    n_patients
        Number of patients.
    seed
        The cohort's own seed (patients, biopsies, expression).
    horizon_days
        Follow-up in days.
    biopsies
        Inclusive range of biopsies per patient.
    cells_per_biopsy
        Inclusive range of cells per biopsy (drawn log-uniformly).
    """

    name: str
    cancer_type: str
    regimens: tuple[str, ...]
    lab: str
    n_patients: int = 60
    seed: int = 0
    horizon_days: int = 365
    biopsies: tuple[int, int] = (2, 6)
    cells_per_biopsy: tuple[int, int] = (300, 3000)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(
                c in self.name for c in "/\\ "):
            raise bad("name", self.name, "a file-safe name (no spaces or slashes)")
        choice("cancer_type", self.cancer_type, sorted(CANCER_TYPES))
        regimens = self.regimens
        if isinstance(regimens, (str, RegimenPlan)):
            regimens = (regimens,)
        if not isinstance(regimens, (tuple, list)) or not regimens:
            raise bad("regimens", self.regimens, "one regimen or a non-empty list of regimens")
        if len(regimens) > MAX_ARMS:
            raise bad("regimens", f"<{len(regimens)} regimens>", f"at most {MAX_ARMS} arms")
        for regimen in regimens:
            parse_regimen(regimen, field="regimens")  # the one grammar, one error
        # Stored as text: the spec is written into the AnnData's uns.
        object.__setattr__(self, "regimens", tuple(str(r) for r in regimens))
        choice("lab", self.lab, sorted(LABS))
        integer("n_patients", self.n_patients, low=1, high=MAX_PATIENTS,
                hint="a number of virtual patients")
        check_seed("seed", self.seed)
        integer("horizon_days", self.horizon_days, low=30, high=MAX_DAYS,
                hint=f"follow-up in days since treatment start, at most {MAX_DAYS}")
        for name, top in (("biopsies", MAX_BIOPSIES), ("cells_per_biopsy", MAX_BIOPSY_CELLS)):
            object.__setattr__(self, name, integer_range(name, getattr(self, name), low=1,
                                                         high=top))

    def expected_cells(self) -> float:
        """Expected cells of the cohort's AnnData (biopsies x log-uniform cells)."""
        lo, hi = self.cells_per_biopsy
        per_biopsy = lo if lo == hi else (hi - lo) / math.log(hi / lo)
        biopsies = min(sum(self.biopsies) / 2, self.horizon_days)
        return self.n_patients * biopsies * per_biopsy

    def check_memory(self, *, with_cells: bool = True) -> None:
        """Refuse a cohort whose estimated memory exceeds the limit, before simulating it.

        The daily hidden truth costs about :data:`TRUTH_BYTES_PER_PATIENT_DAY` per patient
        and day, each cell of the AnnData about :data:`BYTES_PER_CELL`.
        """
        days = self.horizon_days + 1
        n_bytes = self.n_patients * (STATE_BYTES_PER_PATIENT
                                     + days * TRUTH_BYTES_PER_PATIENT_DAY)
        if with_cells:
            n_bytes += self.expected_cells() * BYTES_PER_CELL
        memory_budget("n_patients", self.n_patients, n_bytes,
                      f"{self.n_patients} patients over {self.horizon_days} days"
                      + (f" and ~{self.expected_cells():,.0f} cells" if with_cells else ""))


@dataclass
class HiddenTruth:
    """ImmuneSim's hidden state of a cohort, for evaluation only.

    Attributes
    ----------
    patient_ids
        ``(n,)`` patient ids, matching ``obs["patient_id"]``.
    days
        ``(D,)`` days since baseline (daily).
    composition
        ``(D, n, 20)`` true fractions over :data:`FINE_TYPES`.
    tumor_cells
        ``(D, n)`` true malignant cell counts.
    signals
        ``(D, n, S)`` signals (:data:`~immunegym.sim.simulator.SIGNAL_NAMES`).
    alive
        ``(D, n)`` bool.
    parameters
        Per-patient parameter table (phenotype, antigenicity, ...).
    total_cells
        ``(D, n)`` true cells summed over all fine types, so that ``composition *
        total_cells`` gives absolute counts; ``None`` in files written before it existed.
    """

    patient_ids: list[str]
    days: np.ndarray
    composition: np.ndarray
    tumor_cells: np.ndarray
    signals: np.ndarray
    alive: np.ndarray
    parameters: pd.DataFrame
    total_cells: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"HiddenTruth({len(self.patient_ids)} patients x {len(self.days)} days; "
                f"composition {self.composition.shape}, signals {self.signals.shape})")

    def save(self, path: str | Path) -> Path:
        """Write as safetensors + JSON metadata, atomically."""
        numeric = self.parameters.drop(columns=["phenotype"])
        arrays = {
            "days": self.days.astype(np.int64),
            "composition": self.composition.astype(np.float32),
            "tumor_cells": self.tumor_cells.astype(np.float64),
            "signals": self.signals.astype(np.float32),
            "alive": self.alive.astype(np.uint8),
            "parameters": numeric.to_numpy(np.float64),
        }
        if self.total_cells is not None:
            arrays["total_cells"] = self.total_cells.astype(np.float64)
        meta = {"patient_ids": self.patient_ids, "fine_types": list(FINE_TYPES),
                "signal_names": list(SIGNAL_NAMES),
                "parameter_columns": list(numeric.columns),
                "phenotype": self.parameters["phenotype"].tolist()}
        return save_arrays(path, TRUTH_KIND, arrays, meta)

    @classmethod
    def load(cls, path: str | Path) -> HiddenTruth:
        """Read a file written by :meth:`save`."""
        arrays, meta = load_arrays(path, TRUTH_KIND)
        parameters = pd.DataFrame(arrays["parameters"], columns=meta["parameter_columns"])
        parameters.insert(0, "phenotype", meta["phenotype"])
        return cls(list(meta["patient_ids"]), arrays["days"], arrays["composition"],
                   arrays["tumor_cells"], arrays["signals"], arrays["alive"].astype(bool),
                   parameters, arrays.get("total_cells"))


@dataclass
class Cohort:
    """A generated cohort: the lab's AnnData and the hidden truth."""

    spec: CohortSpec
    adata: ad.AnnData
    truth: HiddenTruth = field(repr=False)

    def __repr__(self) -> str:
        return (f"Cohort({self.spec.name!r}: {self.spec.cancer_type}, "
                f"{len(self.spec.regimens)} arms, {self.spec.n_patients} patients, "
                f"{self.adata.n_obs} cells x {self.adata.n_vars} genes, "
                f"{self.spec.horizon_days} days; .adata, .truth)")

    def write(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``<name>.h5ad`` and ``<name>.truth.safetensors`` atomically."""
        from immunegym._atomic import atomic_path

        directory = Path(directory)
        h5ad = directory / f"{self.spec.name}.h5ad"
        with atomic_path(h5ad) as tmp:
            self.adata.write_h5ad(tmp, compression="gzip")
        truth = self.truth.save(directory / f"{self.spec.name}.truth.safetensors")
        return h5ad, truth


def _biopsy_days(rng: np.random.Generator, k: int, last_day: int) -> list[int]:
    """A baseline biopsy, then ``k - 1`` distinct random days up to ``last_day``."""
    first = 0 if rng.random() < 0.85 else int(rng.integers(1, 15))
    later = np.arange(7, max(last_day, 8) + 1)
    later = later[later != first]
    take = min(k - 1, later.size)
    chosen = rng.choice(later, size=take, replace=False) if take else np.zeros(0, int)
    return sorted({first, *map(int, chosen)})


@dataclass
class CohortRun:
    """The simulation shared by :func:`simulate_cohort` and the counts-only path.

    ``rng`` has drawn only the arm shuffle; every later draw (batch effect, biopsies) is up
    to the caller, so that both paths start from the same stream.
    """

    spec: CohortSpec
    sim: ImmuneSim
    rng: np.random.Generator
    course: Simulation
    arm: np.ndarray
    ids: list[str]
    regimen_names: list[str]
    responder: np.ndarray
    death_day: np.ndarray
    truth: HiddenTruth

    def __repr__(self) -> str:
        return (f"CohortRun({self.spec.name!r}: {len(self.ids)} patients, "
                f"{self.course.days} days, arms {self.regimen_names})")


def run_cohort(spec: CohortSpec, *, params: ParameterSet | None = None,
               device: str = "cpu") -> CohortRun:
    """Patients, arms and the daily course of a cohort, with its hidden truth."""
    if not isinstance(spec, CohortSpec):
        raise bad("spec", spec, "a CohortSpec")
    spec.check_memory(with_cells=False)
    sim = ImmuneSim(params, device=device, seed=spec.seed)
    sim.check_cancer_type(spec.cancer_type)
    rng = np.random.default_rng(spec.seed)
    n = spec.n_patients
    patients = sim.sample_patients(spec.cancer_type, n)
    arm = np.arange(n) % len(spec.regimens)
    rng.shuffle(arm)
    course = sim.run(patients, list(spec.regimens), spec.horizon_days, group=arm,
                     imaging=COHORT_IMAGING, record_every=1, record_given=True)
    fine = compartments_to_fine(torch.from_numpy(course.cells)).numpy()
    total = fine.sum(-1)
    composition = fine / np.clip(total[..., None], 1.0, None)
    tumor = course.cells[:, :, :3].sum(-1)
    death_day = course.state.death_day.cpu().numpy()
    days = course.record_days
    alive = (death_day[None, :] < 0) | (days[:, None] < death_day[None, :])
    ids = [f"{spec.name}-P{i:03d}" for i in range(n)]
    responder = np.where(np.isin(course.best_response, (PR, CR)), "R", "NR")
    regimen_names = [parse_regimen(r).name for r in spec.regimens]
    truth = HiddenTruth(ids, days, composition, tumor, course.signals, alive,
                        _parameter_table(course.patients), total)
    return CohortRun(spec, sim, rng, course, arm, ids, regimen_names, responder, death_day,
                     truth)


def simulate_cohort(spec: CohortSpec, *, params: ParameterSet | None = None,
                    device: str = "cpu") -> Cohort:
    """Generate one cohort (deterministic given ``spec.seed``).

    Raises
    ------
    ValidationError
        If ``spec`` is not a :class:`CohortSpec`, the device or parameters are invalid, or
        the cohort's estimated memory (:meth:`CohortSpec.check_memory`) is above the limit;
        all before anything is simulated.
    """
    if not isinstance(spec, CohortSpec):
        raise bad("spec", spec, "a CohortSpec")
    spec.check_memory()
    run = run_cohort(spec, params=params, device=device)
    sim, rng, course, arm, ids = run.sim, run.rng, run.course, run.arm, run.ids
    regimen_names, responder, death_day = run.regimen_names, run.responder, run.death_day
    composition, tumor = run.truth.composition, run.truth.tumor_cells
    days = run.truth.days
    lab = LABS[spec.lab]
    n = spec.n_patients
    batch_effect = sample_batch_effect(lab, rng)

    x_parts, obs_parts = [], []
    signal_index = {name: i for i, name in enumerate(SIGNAL_NAMES)}
    for i in range(n):
        last = spec.horizon_days if death_day[i] < 0 else max(int(death_day[i]) - 1, 0)
        k = int(rng.integers(spec.biopsies[0], spec.biopsies[1] + 1))
        for j, day in enumerate(_biopsy_days(rng, k, last)):
            lo, hi = spec.cells_per_biopsy
            n_cells = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
            counts = sample_biopsy(composition[day, i], n_cells, rng)
            sig = course.signals[day, i]
            growth = float(np.log(max(tumor[min(day + 1, len(days) - 1), i], 1.0)
                                  / max(tumor[day, i], 1.0)))
            signals = {"ifn_gamma": float(sig[signal_index["ifn_gamma"]]),
                       "tgf_beta": float(sig[signal_index["tgf_beta"]]),
                       "proliferation": float(np.clip(0.5 + 20 * growth, 0, 1))}
            _, labels, x = simulate_cells(counts, lab, rng, signals=signals,
                                          batch_effect=batch_effect)
            window = course.given[i, max(day - CYCLE_DAYS, 0):day]
            therapy = format_regimen(tuple(t for c, t in enumerate(THERAPIES)
                                           if window[:, c].sum() > 0))
            sample_id = f"{ids[i]}-B{j + 1}"
            obs_parts.append(pd.DataFrame({
                "patient_id": ids[i], "sample_id": sample_id, "day": float(day),
                "cycle": day // CYCLE_DAYS, "cell_type": labels, "therapy": therapy,
                "regimen": regimen_names[arm[i]], "response": responder[i],
                "cancer_type": spec.cancer_type, "lab": spec.lab, "batch": spec.name,
            }))
            x_parts.append(sp.csr_matrix(x))
    obs = pd.concat(obs_parts, ignore_index=True)
    obs.index = [f"{spec.name}-c{i:07d}" for i in range(len(obs))]
    for col in ("patient_id", "sample_id", "cell_type", "therapy", "regimen", "response",
                "cancer_type", "lab", "batch"):
        obs[col] = obs[col].astype("category")
    adata = ad.AnnData(X=sp.vstack(x_parts).tocsr().astype(np.float32), obs=obs,
                       var=pd.DataFrame(index=list(MARKER_PANEL)))
    setup_anndata(adata, patient_key="patient_id", sample_key="sample_id",
                  label_key="cell_type", time_key="day", therapy_key="therapy",
                  response_key="response")
    adata.uns["cohort"] = {
        "name": spec.name, "cancer_type": spec.cancer_type, "lab": spec.lab,
        "regimens": list(regimen_names), "seed": spec.seed,
        "horizon_days": spec.horizon_days, "parameters_version": sim.params.version,
        "spec": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(spec).items()},
    }
    adata.uns["patients"] = _patient_table(ids, arm, regimen_names, course, responder)
    adata.uns["imaging"] = _imaging_table(ids, course)
    adata.uns["therapy_cycles"] = _cycle_table(ids, course.given, spec.horizon_days)
    return Cohort(spec, adata, run.truth)


def make_cohort(
    cancer_type: str,
    regimens: str | Sequence[str],
    n_patients: int = 60,
    *,
    lab: str = "tme_fine",
    seed: int = 0,
    horizon_days: int = 365,
    name: str | None = None,
    params: ParameterSet | None = None,
    device: str = "cpu",
) -> ad.AnnData:
    """The AnnData of a generated cohort, as a lab would deliver it.

    Parameters
    ----------
    cancer_type
        Cancer-type id, e.g. ``"melanoma"``.
    regimens
        One regimen (``"anti_pd1"``) or several that patients are randomized over.
    n_patients
        Number of patients.
    lab
        Lab label convention and batch (:data:`immunegym.sim.observation.LABS`).
    seed
        The cohort's seed; same seed, same cohort.
    horizon_days
        Follow-up.
    name
        Cohort name (prefix of patient and cell ids).
    params, device
        Simulator parameters and device.

    Returns
    -------
    anndata.AnnData
        Cells x marker genes (sparse counts) with ``obs`` patient_id, sample_id, day, cycle,
        cell_type (lab label), therapy, regimen, response, cancer_type, lab, batch; fields
        registered with :func:`immunegym.data.setup_anndata`; ``uns`` patients, imaging,
        therapy_cycles and cohort. The hidden truth is not included: use
        :func:`simulate_cohort` for it.
    """
    if name is not None and not isinstance(name, str):
        raise bad("name", name, "a file-safe cohort name or None")
    if isinstance(regimens, (str, RegimenPlan)):
        regimens = (regimens,)
    elif not isinstance(regimens, (tuple, list)):
        raise bad("regimens", regimens, "one regimen or a list of regimens")
    spec = CohortSpec(name or f"{cancer_type}-{lab}-{seed}", cancer_type, regimens, lab,
                      n_patients, seed, horizon_days)
    return simulate_cohort(spec, params=params, device=device).adata


def _patient_table(ids, arm, regimen_names, course, responder) -> pd.DataFrame:
    state = course.state
    return pd.DataFrame({
        "patient_id": ids,
        "regimen": [regimen_names[a] for a in arm],
        "best_response": [RESPONSE_CODES[b] for b in course.best_response],
        "response": responder,
        "pfs_days": course.pfs_day,
        "pfs_event": course.pfs_event,
        "grade3_irae": state.irae.cpu().numpy(),
        "irae_day": state.irae_day.cpu().numpy(),
        "grade3_ae": (state.tox.ae_count > 0).cpu().numpy(),
        "discontinued": state.tox.discontinued.cpu().numpy(),
        "death_day": state.death_day.cpu().numpy(),
        "death_cause": [DEATH_CAUSES[i] for i in state.tox.death_cause.cpu().numpy()],
        "baseline_sod_mm": course.baseline_sod,
    })


def _imaging_table(ids, course) -> pd.DataFrame:
    scans = course.scans
    base = pd.DataFrame({"patient_id": ids, "day": 0, "sod_mm": course.baseline_sod})
    later = pd.DataFrame({"patient_id": [ids[p] for p in scans["patient"]],
                          "day": scans["day"], "sod_mm": scans["sod_mm"]})
    table = pd.concat([base, later], ignore_index=True) if len(later) else base
    return table.sort_values(["patient_id", "day"], kind="stable").reset_index(drop=True)


def _cycle_table(ids, given: np.ndarray, horizon: int) -> pd.DataFrame:
    rows = []
    for cycle, start in enumerate(range(0, horizon, CYCLE_DAYS)):
        window = given[:, start:start + CYCLE_DAYS].sum(1)  # (n, 5)
        for i, pid in enumerate(ids):
            row = {"patient_id": pid, "cycle": cycle, "day": start}
            row.update({t: float(window[i, c]) for c, t in enumerate(THERAPIES)})
            rows.append(row)
    return pd.DataFrame(rows)


def _parameter_table(patients) -> pd.DataFrame:
    table = {"phenotype": [PHENOTYPES[i] for i in patients.phenotype.cpu().numpy()]}
    for f in fields(patients):
        if f.name in ("phenotype", "cancer"):
            continue
        table[f.name] = getattr(patients, f.name).cpu().numpy().astype(float)
    return pd.DataFrame(table)
