"""Counts-only synthetic cohorts for world-model training, with privileged truth on a grid.

:func:`~immunegym.sim.cohort.simulate_cohort` produces what a lab delivers: an AnnData of
cells with marker-gene counts, which :func:`~immunegym.world_model.timelines.build_timelines`
then reads back into per-sample counts. For training the world model on many cohorts the
expression is wasted work (it only feeds program scores), so :func:`simulate_counts_cohort`
runs the same simulation and draws the same observation model *at count level*: per biopsy,
a Dirichlet-multinomial sample of cells, misannotation as binomial counts moved to other
present types, labels as a multinomial per type, and the lab's labels mapped to ontology
nodes by the same harmonizer the AnnData path uses. Program scores are left unobserved.

Alongside the observed :class:`Timelines` it returns :class:`GridTruth`: ImmuneSim's hidden
cell counts and noise-free sum of diameters at every time point and every 21-day horizon
after it, the targets a forecaster is judged on.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from immunegym.data.programs import DEFAULT_PROGRAMS
from immunegym.data.vocab import THERAPIES
from immunegym.ontology import FINE_TYPES, Harmonizer, default_ontology
from immunegym.sim.cohort import CohortSpec, HiddenTruth, _biopsy_days, run_cohort
from immunegym.sim.observation import LABS, LabConvention, sample_batch_effect, sample_biopsy
from immunegym.sim.outcomes import sum_of_diameters
from immunegym.sim.parameters import ParameterSet, load_parameters
from immunegym.validation import ValidationError
from immunegym.world_model.timelines import (
    CYCLE_DAYS,
    STANDARD_CYCLE_DOSE,
    Timelines,
    _blocks,
    point_arrays,
    write_biopsy,
)

__all__ = [
    "GridTruth",
    "SyntheticCohort",
    "concat_grid_truth",
    "grid_truth",
    "simulate_counts_cohort",
]


# ---------------------------------------------------------------------------- truth
@dataclass
class GridTruth:
    """Hidden truth at every timeline point ``(p, l)`` and ``h = 0..H`` cycles after it.

    Row ``p`` and point ``l`` match a :class:`Timelines`; horizon ``h`` is the day
    ``timelines.days[p, l] + 21 h``. Entries where ``alive`` is False are 0.

    Attributes
    ----------
    log_cells
        ``(P, L, H+1, K)`` float32 ``log1p`` of true absolute cells per fine type
        (:data:`FINE_TYPES` order).
    log_sod
        ``(P, L, H+1)`` float32 ``log1p`` of the true noise-free sum of diameters (mm).
    alive
        ``(P, L, H+1)`` bool: a valid timeline point, the day within the simulated horizon
        and the patient alive on it.
    valid
        ``(P, L)`` bool, the timelines' ``valid`` (kept so that :meth:`subset` trims the
        same way :meth:`Timelines.subset` does).
    """

    log_cells: torch.Tensor
    log_sod: torch.Tensor
    alive: torch.Tensor
    valid: torch.Tensor

    @property
    def horizons(self) -> int:
        """``H``: the largest horizon in cycles."""
        return self.log_sod.shape[-1] - 1

    def subset(self, rows: Sequence[int] | np.ndarray | torch.Tensor) -> GridTruth:
        """The patients at ``rows`` (in that order), trimmed like :meth:`Timelines.subset`."""
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        length = int(self.valid[index].sum(1).max()) if len(index) else 0
        return GridTruth(self.log_cells[index, :length], self.log_sod[index, :length],
                         self.alive[index, :length], self.valid[index, :length])


def concat_grid_truth(parts: Sequence[GridTruth]) -> GridTruth:
    """Stack grid truths like :func:`concat_timelines` stacks their timelines.

    Time points are padded to the longest with ``alive`` (and ``valid``) False.
    """
    if not parts:
        raise ValidationError("parts: expected at least one GridTruth")
    horizons = {p.horizons for p in parts}
    if len(horizons) > 1:
        raise ValidationError(f"horizons: parts differ ({sorted(horizons)}); expected one H")
    n_l = max(p.valid.shape[1] for p in parts)

    def pad(value: torch.Tensor) -> torch.Tensor:
        # Zeros are both "no value" and False, so one filler serves every field.
        extra = n_l - value.shape[1]
        filler = torch.zeros((value.shape[0], extra, *value.shape[2:]), dtype=value.dtype)
        return torch.cat([value, filler], dim=1)

    return GridTruth(*(torch.cat([pad(getattr(p, name)) for p in parts])
                       for name in ("log_cells", "log_sod", "alive", "valid")))


def grid_truth(truth: HiddenTruth, tl: Timelines, horizons: int = 8,
               rates: dict[str, float] | None = None) -> GridTruth:
    """The hidden truth of a cohort on the grid of its timelines.

    Parameters
    ----------
    truth
        The cohort's daily hidden truth; needs ``truth.total_cells``.
    tl
        Timelines of (some of) the cohort's patients, matched by patient id.
    horizons
        ``H``: horizons ``0..H`` cycles of 21 days after each point.
    rates
        Simulator rates for the sum of diameters; the shipped parameters when ``None``
        (as :func:`immunegym.benchmarks.world_model.truth_by_patient` does).

    Raises
    ------
    ValueError
        If ``truth.total_cells`` is None, ``horizons`` is negative, or a timeline patient
        is not in ``truth``.
    """
    if truth.total_cells is None:
        raise ValidationError(
            "truth.total_cells: is None (a HiddenTruth saved before the field existed); "
            "absolute cell counts need it, so regenerate the cohort with simulate_cohort")
    if horizons < 0:
        raise ValidationError(f"horizons: expected >= 0, got {horizons}")
    rates = load_parameters().rates if rates is None else rates
    column = {pid: i for i, pid in enumerate(truth.patient_ids)}
    missing = [p for p in tl.patient_ids if p not in column]
    if missing:
        raise ValidationError(f"tl: patients {missing[:3]} are not in truth.patient_ids")
    cols = np.array([column[p] for p in tl.patient_ids], dtype=np.int64)

    target = (np.rint(tl.days.numpy()).astype(np.int64)[..., None]
              + CYCLE_DAYS * np.arange(horizons + 1))  # (P, L, H+1)
    index = np.searchsorted(truth.days, target)
    inside = index < len(truth.days)
    index = np.minimum(index, len(truth.days) - 1)
    inside &= truth.days[index] == target
    patient = np.broadcast_to(cols[:, None, None], target.shape)
    alive = inside & tl.valid.numpy()[..., None] & np.asarray(truth.alive, bool)[index, patient]

    # composition = fine / max(total, 1), so this inverts it exactly, tiny totals included.
    total = np.maximum(np.asarray(truth.total_cells, np.float64)[index, patient], 1.0)
    cells = np.asarray(truth.composition, np.float64)[index, patient] * total[..., None]
    sod = sum_of_diameters(torch.as_tensor(truth.tumor_cells), rates).numpy()[index, patient]
    log_cells = np.where(alive[..., None], np.log1p(cells), 0.0).astype(np.float32)
    log_sod = np.where(alive, np.log1p(sod), 0.0).astype(np.float32)
    return GridTruth(torch.from_numpy(log_cells), torch.from_numpy(log_sod),
                     torch.from_numpy(alive), tl.valid.clone())


# ---------------------------------------------------------------------------- observation
@dataclass(frozen=True)
class _LabModel:
    """A lab's labelling at count level: label probabilities and each label's node."""

    probs: np.ndarray  # (K, n_labels)
    node: np.ndarray  # (n_labels,) index into ontology ids, -1 where unmapped
    nodes: tuple[str, ...]


@functools.cache
def _lab_model(lab_name: str) -> _LabModel:
    lab = LABS[lab_name]
    labels = list(lab.label_set)
    probs = np.zeros((len(FINE_TYPES), len(labels)))
    for t, cell_type in enumerate(FINE_TYPES):
        for label, p in lab.labels[cell_type]:
            probs[t, labels.index(label)] += p
    probs /= probs.sum(1, keepdims=True)
    onto = default_ontology()
    # The same harmonizer sample_distributions builds for a cohort (no label convention),
    # so a label lands on the node the AnnData path would count it on.
    mapped = Harmonizer(onto).harmonize(labels).nodes
    node_index = {n: i for i, n in enumerate(onto.ids)}
    node = np.array([-1 if n is None else node_index[n] for n in mapped], dtype=np.int64)
    return _LabModel(probs, node, tuple(onto.ids))


def _observe(type_counts: np.ndarray, lab: LabConvention, model: _LabModel,
             rng: np.random.Generator) -> np.ndarray:
    """Direct counts per ontology node of one biopsy, as a lab would label its cells.

    The count-level twin of :func:`~immunegym.sim.observation.simulate_cells`: each cell is
    misannotated with the lab's rate to a uniformly chosen *other* present type, then draws
    a label from its (assigned) type's label distribution.
    """
    assigned = type_counts.copy()
    present = np.flatnonzero(type_counts)
    if lab.misannotation_rate > 0 and present.size > 1:
        wrong = rng.binomial(type_counts[present], lab.misannotation_rate)
        others = (1.0 - np.eye(present.size)) / (present.size - 1)
        moved = rng.multinomial(wrong, others)  # (from, to) over present types
        assigned[present] += moved.sum(0) - wrong
    labels = rng.multinomial(assigned, model.probs).sum(0)  # (n_labels,)
    direct = np.zeros(len(model.nodes))
    mapped = model.node >= 0
    np.add.at(direct, model.node[mapped], labels[mapped])
    return direct


# ---------------------------------------------------------------------------- cohorts
@dataclass
class SyntheticCohort:
    """A counts-only cohort: observed timelines and the truth on their grid."""

    spec: CohortSpec
    timelines: Timelines
    truth: GridTruth


def simulate_counts_cohort(spec: CohortSpec, *, horizons: int = 8,
                           params: ParameterSet | None = None,
                           device: str = "cpu") -> SyntheticCohort:
    """A cohort as :func:`simulate_cohort` would give it, straight to timelines.

    Patients, arms, the daily course, imaging and doses are exactly those of
    :func:`~immunegym.sim.cohort.simulate_cohort` for the same spec (same seeds). Biopsy
    days, cells per biopsy and the biopsy draw follow the same rules, but the random
    streams part after the first patient's first biopsy (the AnnData path draws
    expression in between). No expression is simulated: ``program_mask`` is all False.

    Parameters
    ----------
    spec
        The cohort.
    horizons
        ``H`` of the returned :class:`GridTruth`.
    params, device
        Simulator parameters and device.

    Returns
    -------
    SyntheticCohort
        Deterministic given ``spec.seed``.
    """
    run = run_cohort(spec, params=params, device=device)
    rng, course, truth = run.rng, run.course, run.truth
    lab = LABS[spec.lab]
    model = _lab_model(spec.lab)
    # Drawn and unused: it keeps the stream aligned with simulate_cohort up to the first
    # biopsy, so both paths pick the same biopsy days for the first patient.
    sample_batch_effect(lab, rng)

    biopsies: list[dict[float, tuple[np.ndarray, np.ndarray]]] = []
    lo, hi = spec.cells_per_biopsy
    for i in range(spec.n_patients):
        death = run.death_day[i]
        last = spec.horizon_days if death < 0 else max(int(death) - 1, 0)
        k = int(rng.integers(spec.biopsies[0], spec.biopsies[1] + 1))
        samples = {}
        for day in _biopsy_days(rng, k, last):
            n_cells = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
            counts = sample_biopsy(truth.composition[day, i], n_cells, rng)
            samples[float(day)] = _blocks(_observe(counts, lab, model, rng), model.nodes)
        biopsies.append(samples)

    # The imaging table of simulate_cohort: a baseline scan for everyone, then the course's.
    scans: list[dict[float, float]] = [{0.0: float(s)} for s in course.baseline_sod]
    for day, p, sod in zip(course.scans["day"], course.scans["patient"],
                           course.scans["sod_mm"], strict=True):
        scans[int(p)][float(day)] = float(sod)

    table = pd.DataFrame({
        "patient_id": run.ids, "cohort": spec.name, "cancer_type": spec.cancer_type,
        "lab": spec.lab, "regimen": [run.regimen_names[a] for a in run.arm],
        "response": (run.responder == "R").astype(float),
    })
    tl = _assemble(table, biopsies, scans, course.given, spec.horizon_days)
    return SyntheticCohort(spec, tl, grid_truth(truth, tl, horizons, run.sim.params.rates))


def _assemble(table: pd.DataFrame, biopsies: list[dict[float, tuple[np.ndarray, np.ndarray]]],
              scans: list[dict[float, float]], given: np.ndarray, horizon: int) -> Timelines:
    """Timelines filled as :func:`build_timelines` fills them from the AnnData."""
    points = [sorted(b.keys() | s.keys()) for b, s in zip(biopsies, scans, strict=True)]
    n_p, n_l, n_k = len(points), max(map(len, points)), len(FINE_TYPES)
    n_g = len(DEFAULT_PROGRAMS)
    arrays = point_arrays(n_p, n_l, n_k)
    for i, ds in enumerate(points):
        arrays["days"][i, :len(ds)] = ds
        arrays["valid"][i, :len(ds)] = True
        for j, day in enumerate(ds):
            if day in scans[i]:
                arrays["burden"][i, j] = np.log1p(scans[i][day])
                arrays["burden_observed"][i, j] = True
            if day in biopsies[i]:
                write_biopsy(arrays, i, j, *biopsies[i][day])

    # As _cycle_table writes and _cycle_doses reads uns["therapy_cycles"]: doses summed per
    # 21-day cycle, cycles kept up to the last observation plus one.
    n_c = int(max(d[-1] for d in points) // CYCLE_DAYS) + 2
    unit = np.array([STANDARD_CYCLE_DOSE[t] for t in THERAPIES])
    doses = np.zeros((n_p, n_c, len(THERAPIES)), np.float32)
    for c, start in enumerate(range(0, horizon, CYCLE_DAYS)):
        if c < n_c:
            doses[:, c] = given[:, start:start + CYCLE_DAYS].sum(1).astype(np.float64) / unit

    return Timelines(
        table, tuple(DEFAULT_PROGRAMS),
        **{name: torch.from_numpy(value) for name, value in arrays.items()},
        program_scores=torch.zeros(n_p, n_l, n_k, n_g),
        program_mask=torch.zeros(n_p, n_l, n_k, dtype=torch.bool),
        cycle_doses=torch.from_numpy(doses),
    )
