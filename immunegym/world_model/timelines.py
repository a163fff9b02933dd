"""Data registration for the world model: observed patient timelines.

A timeline is what a lab knows about one patient, in time order: biopsies (a composition
over the 20 fine types, with program scores), imaging (sum of diameters), and the therapy
given in every 21-day cycle. Biopsy and scan days are merged into one sequence of time
points; each point may have a composition, a burden, or both (masks say which).

A lab that labels coarser than the fine types (say "Myeloid") does not tell us how that mass
splits over its leaves. Such a sample is kept honestly: the leaves under the coarse label
form one *block* whose total is observed, and the likelihood is evaluated on blocks (the
Dirichlet-multinomial is closed under merging categories), never on an invented split.

This module only reads what a lab would have: AnnData cells, ``uns["imaging"]`` and
``uns["therapy_cycles"]``. ImmuneSim's hidden truth never enters.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

from immunegym.data.distributions import SampleDistributions, sample_distributions
from immunegym.data.schema import DataValidationError, get_fields
from immunegym.data.storage import load_arrays, save_arrays
from immunegym.data.vocab import THERAPIES, parse_regimen
from immunegym.ontology import FINE_TYPES, default_ontology
from immunegym.validation import ValidationError, bad, did_you_mean, integer, memory_budget

CYCLE_DAYS = 21
"""Days per treatment cycle: one world-model step in a rollout."""

COARSE_MIN_FRACTION = 0.01
"""Cells labeled at a coarse node below this fraction of a sample are dropped as
misannotation rather than merging a whole subtree into one block."""

STANDARD_CYCLE_DOSE: dict[str, float] = {
    "anti_pd1": 1.0, "anti_ctla4": 1.0, "chemo": 1.0, "radio": 24.0, "targeted": 21.0,
}
"""Amount given in one standard cycle (dose multiples; Gy for radiotherapy; daily doses for
targeted therapy): dose intensity 1.0 means one standard cycle of that therapy."""

MAX_DAY = 36_500
"""Largest |day| since treatment start a timeline accepts (100 years); beyond is a unit
mistake (hours or seconds read as days)."""

MAX_CYCLE_INTENSITY = 10.0
"""Largest dose intensity of one therapy in one 21-day cycle (10 standard cycles)."""

_KIND = "WorldModelTimelines"
_ARRAYS = (
    "days", "valid", "comp_observed", "counts", "block", "fractions", "resolved",
    "program_scores", "program_mask", "burden", "burden_observed", "cycle_doses",
)


@dataclass
class Timelines:
    """Padded observed timelines of ``P`` patients, ``L`` time points, ``K`` fine types.

    Attributes
    ----------
    patients
        One row per patient: ``patient_id``, ``cohort``, ``cancer_type``, ``lab``,
        ``regimen``, ``response`` (1/0/NaN).
    programs
        Program names of ``program_scores``.
    days
        ``(P, L)`` float32 days since treatment start.
    valid
        ``(P, L)`` bool, False at padding.
    comp_observed
        ``(P, L)`` bool, a biopsy exists at this time point.
    counts
        ``(P, L, K)`` float32 cells per block, stored at the block's first leaf (0 elsewhere).
    block
        ``(P, L, K)`` int64 index of the first leaf of each leaf's block (itself when the
        leaf was resolved).
    fractions
        ``(P, L, K)`` float32 input composition: resolved leaves as observed, a block's mass
        spread evenly over its leaves (flagged by ``resolved``).
    resolved
        ``(P, L, K)`` bool, the leaf was counted on its own.
    program_scores
        ``(P, L, K, G)`` float32 mean program score of the cells labeled at each leaf (0 where
        ``program_mask`` is False).
    program_mask
        ``(P, L, K)`` bool.
    burden
        ``(P, L)`` float32 ``log1p`` of the sum of diameters in mm (0 where unobserved).
    burden_observed
        ``(P, L)`` bool, a scan exists at this time point.
    cycle_doses
        ``(P, C, R)`` float32 dose intensity of each therapy in each 21-day cycle (1.0 = a
        standard cycle, :data:`STANDARD_CYCLE_DOSE`).
    """

    patients: pd.DataFrame
    programs: tuple[str, ...]
    days: torch.Tensor
    valid: torch.Tensor
    comp_observed: torch.Tensor
    counts: torch.Tensor
    block: torch.Tensor
    fractions: torch.Tensor
    resolved: torch.Tensor
    program_scores: torch.Tensor
    program_mask: torch.Tensor
    burden: torch.Tensor
    burden_observed: torch.Tensor
    cycle_doses: torch.Tensor

    types: tuple[str, ...] = FINE_TYPES
    therapies: tuple[str, ...] = THERAPIES

    def __len__(self) -> int:
        return len(self.patients)

    def __repr__(self) -> str:
        n_obs = int(self.valid.sum())
        return (f"Timelines(patients={len(self)}, points={n_obs} (up to "
                f"{self.days.shape[1]} per patient), biopsies={int(self.comp_observed.sum())}, "
                f"scans={int(self.burden_observed.sum())}, cycles={self.cycle_doses.shape[1]}, "
                f"types={len(self.types)}, programs={len(self.programs)})")

    @property
    def patient_ids(self) -> list[str]:
        """Patient ids in row order."""
        return [str(p) for p in self.patients["patient_id"]]

    @property
    def lengths(self) -> torch.Tensor:
        """``(P,)`` number of time points per patient."""
        return self.valid.sum(1)

    def subset(self, rows: Sequence[int] | np.ndarray | torch.Tensor) -> Timelines:
        """The patients at ``rows`` (in that order), trimmed to their longest timeline."""
        try:
            index = torch.as_tensor(np.asarray(rows, dtype=np.int64)).reshape(-1)
        except (TypeError, ValueError):
            raise bad("rows", rows, "patient row indices (integers)") from None
        if len(index) and (int(index.min()) < -len(self) or int(index.max()) >= len(self)):
            raise bad("rows", rows, f"row indices in 0..{len(self) - 1}")
        length = int(self.valid[index].sum(1).max()) if len(index) else 0
        out = {}
        for name in _ARRAYS:
            value = getattr(self, name)[index]
            out[name] = value if name == "cycle_doses" else value[:, :length]
        return Timelines(self.patients.iloc[index.numpy()].reset_index(drop=True),
                         self.programs, **out)

    def truncate(self, last_day: torch.Tensor | np.ndarray) -> Timelines:
        """Observations up to and including ``last_day`` per patient (``(P,)`` days).

        Points after the day become padding; every patient keeps at least one point.
        """
        last = torch.as_tensor(np.asarray(last_day, dtype=np.float32)).reshape(-1)
        if last.shape != (len(self),) or not bool(torch.isfinite(last).all()):
            raise bad("last_day", last_day, f"{len(self)} finite days, one per patient")
        keep = self.valid & (self.days <= last[:, None])
        if not bool(keep[:, 0].all()):
            first = int(torch.nonzero(~keep[:, 0])[0, 0])
            raise ValidationError(
                f"last_day: patient {self.patient_ids[first]!r} has no observation on or "
                f"before day {float(last[first])}; expected a day at or after its first "
                "observation"
            )
        out = {name: getattr(self, name).clone() for name in _ARRAYS}
        out["valid"] = keep
        for name in ("comp_observed", "resolved", "program_mask", "burden_observed"):
            value = out[name]
            out[name] = value & (keep if value.dim() == 2 else keep[..., None])
        return Timelines(self.patients.copy(), self.programs, **out).subset(range(len(self)))

    def to(self, device: str | torch.device) -> Timelines:
        """A copy with every tensor on ``device``."""
        moved = {name: getattr(self, name).to(device) for name in _ARRAYS}
        return Timelines(self.patients, self.programs, **moved)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write to one safetensors file with JSON metadata (atomic, no pickle)."""
        arrays = {name: getattr(self, name).cpu().numpy() for name in _ARRAYS}
        arrays = {k: v.astype(np.uint8) if v.dtype == bool else v for k, v in arrays.items()}
        table = self.patients.astype({"response": float})
        meta = {"programs": list(self.programs), "types": list(self.types),
                "therapies": list(self.therapies),
                "patients": {c: table[c].tolist() for c in table.columns}}
        return save_arrays(path, _KIND, arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Timelines:
        """Read a file written by :meth:`save`."""
        arrays, meta = load_arrays(path, _KIND)
        if tuple(meta["types"]) != FINE_TYPES or tuple(meta["therapies"]) != THERAPIES:
            raise ValidationError(
                f"file {str(path)!r} was written for other cell types or therapies")
        bools = {"valid", "comp_observed", "resolved", "program_mask", "burden_observed"}
        tensors = {k: torch.from_numpy(v.astype(bool) if k in bools else v.copy())
                   for k, v in arrays.items()}
        return cls(pd.DataFrame(meta["patients"]), tuple(meta["programs"]), **tensors)


def within_block_prior(tl: Timelines) -> np.ndarray:
    """``(K,)`` mean leaf fractions over samples where the leaf was resolved."""
    resolved = tl.resolved & tl.comp_observed.unsqueeze(-1)
    total = tl.counts.sum(-1, keepdim=True).clamp_min(1)
    frac = torch.where(resolved, tl.counts / total, torch.zeros_like(tl.counts))
    mean = frac.sum((0, 1)) / resolved.sum((0, 1)).clamp_min(1)
    return (mean.clamp_min(1e-4) / mean.clamp_min(1e-4).sum()).numpy()



# ---------------------------------------------------------------------------- building
def _blocks(direct: np.ndarray, nodes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Block counts and block index per leaf for one sample's direct node counts."""
    onto = default_ontology()
    leaf_col = {leaf: i for i, leaf in enumerate(FINE_TYPES)}
    total = direct.sum()
    coarse = [n for n, c in zip(nodes, direct, strict=True)
              if c > 0 and not onto.is_leaf(n) and c >= COARSE_MIN_FRACTION * total]
    # Only the highest labeled node of a subtree makes a block; nested ones merge into it.
    tops = [n for n in coarse if not any(onto.is_ancestor(a, n) for a in coarse if a != n)]
    block = np.arange(len(FINE_TYPES))
    for node in tops:
        members = [leaf_col[leaf] for leaf in onto.leaves_under(node)]
        block[members] = min(members)
    counts = np.zeros(len(FINE_TYPES))
    for n, c in zip(nodes, direct, strict=True):
        if c <= 0:
            continue
        if onto.is_leaf(n):
            counts[block[leaf_col[n]]] += c
        elif any(onto.is_ancestor(t, n) or t == n for t in tops):
            counts[block[leaf_col[onto.leaves_under(n)[0]]]] += c
        # else: a small coarse count dropped as misannotation (COARSE_MIN_FRACTION)
    return counts, block


def point_arrays(n_p: int, n_l: int, n_k: int) -> dict[str, np.ndarray]:
    """Empty per-point arrays of ``n_p`` timelines of ``n_l`` points (the fields a biopsy or a
    scan fills; every block starts as its own leaf)."""
    return {
        "days": np.zeros((n_p, n_l), np.float32), "valid": np.zeros((n_p, n_l), bool),
        "comp_observed": np.zeros((n_p, n_l), bool),
        "counts": np.zeros((n_p, n_l, n_k), np.float32),
        "block": np.tile(np.arange(n_k), (n_p, n_l, 1)),
        "fractions": np.zeros((n_p, n_l, n_k), np.float32),
        "resolved": np.zeros((n_p, n_l, n_k), bool),
        "burden": np.zeros((n_p, n_l), np.float32),
        "burden_observed": np.zeros((n_p, n_l), bool),
    }


def write_biopsy(arrays: dict[str, np.ndarray], i: int, j: int, counts: np.ndarray,
                 block: np.ndarray) -> None:
    """Point ``(i, j)`` of :func:`point_arrays` gets a biopsy: block counts (at each block's
    first leaf), the block of each leaf, a block's mass spread evenly over its leaves."""
    size = np.bincount(block, minlength=len(block))[block]
    arrays["comp_observed"][i, j] = True
    arrays["counts"][i, j], arrays["block"][i, j] = counts, block
    arrays["fractions"][i, j] = counts[block] / counts.sum() / size
    arrays["resolved"][i, j] = size == 1


def _cycle_doses(adata: ad.AnnData, patients: list[str], dist: SampleDistributions,
                 n_cycles: int) -> np.ndarray:
    """``(P, C, R)`` per-cycle dose intensities from ``uns["therapy_cycles"]``.

    Without that table, each sample's recorded regimen is taken as given at standard
    intensity from that sample until the next.
    """
    out = np.zeros((len(patients), n_cycles, len(THERAPIES)), np.float32)
    row = {p: i for i, p in enumerate(patients)}
    unit = np.array([STANDARD_CYCLE_DOSE[t] for t in THERAPIES])
    table = adata.uns.get("therapy_cycles")
    if table is not None:
        table = pd.DataFrame(table)
        missing = [c for c in ("patient_id", "cycle", *THERAPIES) if c not in table.columns]
        if missing:
            raise DataValidationError(
                f"uns['therapy_cycles']: missing columns {missing}; expected patient_id, "
                f"cycle and one dose column per therapy {list(THERAPIES)}")
        _check_cycle_table(table)
        table = table[table["patient_id"].astype(str).isin(row)]
        cycles = table["cycle"].to_numpy(np.float64).astype(np.int64)
        keep = cycles < n_cycles
        rows = table["patient_id"].astype(str).map(row).to_numpy()[keep]
        intensity = table[list(THERAPIES)].to_numpy(np.float64)[keep] / unit
        if len(intensity) and intensity.max() > MAX_CYCLE_INTENSITY:
            at = np.argwhere(intensity > MAX_CYCLE_INTENSITY)[0]
            raise DataValidationError(
                f"uns['therapy_cycles'].{THERAPIES[at[1]]}: got "
                f"{intensity[at[0], at[1]] * unit[at[1]]:g} in one cycle for patient "
                f"{patients[rows[at[0]]]!r}; expected at most "
                f"{MAX_CYCLE_INTENSITY * unit[at[1]]:g} ({MAX_CYCLE_INTENSITY:g} standard "
                f"cycles of {unit[at[1]]:g}; a unit mistake?)")
        out[rows, cycles[keep]] = intensity
        return out
    samples = dist.samples
    for patient, group in samples.groupby("patient", sort=False):
        group = group.sort_values("time")
        for day, regimen in zip(group["time"], group["therapy"], strict=True):
            parsed = parse_regimen(regimen) or ()
            start = int(day // CYCLE_DAYS)
            out[row[str(patient)], start:] = [float(t in parsed) for t in THERAPIES]
    return out


def _check_cycle_table(table: pd.DataFrame) -> None:
    """Refuse a therapy-cycle table with unknown columns, bad cycles or bad doses.

    A negative or NaN dose would reach the model and give NaN forecasts; a typo in a
    therapy column would be silently dropped.
    """
    allowed = ("patient_id", "cycle", "day", *THERAPIES)
    for column in table.columns:
        if column not in allowed:
            tip = did_you_mean(column, allowed)
            raise DataValidationError(
                f"uns['therapy_cycles']: unknown column {column!r}; expected patient_id, "
                f"cycle, day and one dose column per therapy {list(THERAPIES)}{tip}")
    cycles = pd.to_numeric(table["cycle"], errors="coerce").to_numpy(np.float64)
    wrong = ~(np.isfinite(cycles) & (cycles == np.round(cycles)) & (cycles >= 0)
              & (cycles <= MAX_DAY // CYCLE_DAYS))
    if wrong.any():
        i = int(np.nonzero(wrong)[0][0])
        raise DataValidationError(
            f"uns['therapy_cycles'].cycle: got {_plain(table['cycle'].iloc[i])!r} for patient "
            f"{str(table['patient_id'].iloc[i])!r}; expected a whole cycle number in "
            f"0..{MAX_DAY // CYCLE_DAYS} (21-day cycles from treatment start)")
    twice = table.duplicated(["patient_id", "cycle"])
    if twice.any():
        i = int(np.nonzero(twice.to_numpy())[0][0])
        raise DataValidationError(
            f"uns['therapy_cycles']: got patient {str(table['patient_id'].iloc[i])!r} cycle "
            f"{_plain(table['cycle'].iloc[i])!r} twice; expected one row per patient and cycle")
    for therapy in THERAPIES:
        dose = pd.to_numeric(table[therapy], errors="coerce").to_numpy(np.float64)
        wrong = ~(np.isfinite(dose) & (dose >= 0))
        if wrong.any():
            i = int(np.nonzero(wrong)[0][0])
            raise DataValidationError(
                f"uns['therapy_cycles'].{therapy}: got {_plain(table[therapy].iloc[i])!r} "
                f"for patient {str(table['patient_id'].iloc[i])!r} in cycle "
                f"{_plain(table['cycle'].iloc[i])!r}; expected a finite dose >= 0 (0 when not "
                "given)")


def _plain(value: object) -> object:
    """A numpy scalar as the Python value (so messages read 2.5, not np.float64(2.5))."""
    return value.item() if isinstance(value, np.generic) else value


def _check_days(field: str, days: np.ndarray, names: Sequence[object], what: str) -> None:
    """Refuse non-finite days or days outside +-:data:`MAX_DAY` (a unit mistake)."""
    wrong = ~(np.isfinite(days) & (np.abs(days) <= MAX_DAY))
    if wrong.any():
        i = int(np.nonzero(wrong)[0][0])
        raise DataValidationError(
            f"{field}: got {float(days[i])!r} for {what} {names[i]!r}; expected days since "
            f"treatment start in -{MAX_DAY}..{MAX_DAY} (a value this large is usually a unit "
            "mistake: days, not hours or seconds)")


def _patient_column(adata: ad.AnnData, column: str, patients: list[str], key: str,
                    default: str) -> list[str]:
    if column in adata.obs.columns:
        first = adata.obs.groupby(key, observed=True)[column].first()
        return [str(first.get(p, default)) for p in patients]
    return [default] * len(patients)


def build_timelines(adata: ad.AnnData, *, horizon_days: int | None = None) -> Timelines:
    """Register a cohort's observations as world-model timelines.

    Parameters
    ----------
    adata
        Cells registered with :func:`immunegym.data.setup_anndata` (patient, sample, label
        and time keys; therapy and response optional). Optional ``uns["imaging"]``
        (patient_id, day, sod_mm) gives the burden, ``uns["therapy_cycles"]`` (patient_id,
        cycle, one dose column per therapy) the exact doses per 21-day cycle.
    horizon_days
        Days of therapy record to keep; the latest observation when ``None``.

    Returns
    -------
    Timelines

    Raises
    ------
    DataValidationError
        If a sample has no time, or the imaging table lacks a column or has a negative or
        non-finite diameter.
    """
    if not isinstance(adata, ad.AnnData):
        raise bad("adata", f"<{type(adata).__name__}>",
                  "an AnnData registered with immunegym.data.setup_anndata")
    if horizon_days is not None:
        horizon_days = integer("horizon_days", horizon_days, low=0, high=MAX_DAY)
    registry = get_fields(adata)
    if registry.time_key is None:
        raise DataValidationError(
            "time_key: not registered; timelines need days from treatment start (register "
            "time_key in setup_anndata)")
    dist = sample_distributions(adata)
    samples = dist.samples
    if samples["time"].isna().any():
        missing = samples.index[samples["time"].isna()][0]
        raise DataValidationError(f"time: sample {missing!r} has no time; expected days")
    _check_days("time", samples["time"].to_numpy(np.float64), list(samples.index), "sample")
    node_index = [dist.nodes.index(t) for t in FINE_TYPES]
    patients = list(dict.fromkeys(str(p) for p in samples["patient"]))

    imaging = adata.uns.get("imaging")
    scans: dict[str, list[tuple[float, float]]] = {p: [] for p in patients}
    if imaging is not None:
        imaging = pd.DataFrame(imaging)
        missing = [c for c in ("patient_id", "day", "sod_mm") if c not in imaging.columns]
        if missing:
            raise DataValidationError(
                f"uns['imaging']: missing columns {missing}; expected patient_id, day, sod_mm")
        _check_days("uns['imaging'].day",
                    pd.to_numeric(imaging["day"], errors="coerce").to_numpy(np.float64),
                    list(imaging["patient_id"].astype(str)), "a scan of patient")
        sod = imaging["sod_mm"].to_numpy(float)
        if not np.all(np.isfinite(sod)) or np.any(sod < 0):
            raise DataValidationError(
                "uns['imaging']: sod_mm must be finite and >= 0 (mm); got "
                f"{sod[~(np.isfinite(sod) & (sod >= 0))][:3].tolist()}")
        for p, day, value in zip(imaging["patient_id"].astype(str), imaging["day"], sod,
                                 strict=True):
            if p in scans:
                scans[p].append((float(day), float(value)))

    points: list[list[float]] = []
    for p in patients:
        days = set(samples.loc[samples["patient"].astype(str) == p, "time"].astype(float))
        days |= {d for d, _ in scans[p]}
        points.append(sorted(days))
    n_p, n_l, n_k = len(patients), max(len(d) for d in points), len(FINE_TYPES)
    n_g = len(dist.programs)
    last_day = max(d[-1] for d in points)
    n_cycles = int((horizon_days if horizon_days is not None else last_day) // CYCLE_DAYS) + 2
    # Padded arrays grow with patients x points x types x programs and cycles: estimate
    # the bytes before allocating any of them.
    n_bytes = 4 * (n_p * n_l * n_k * (n_g + 6) + n_p * n_cycles * len(THERAPIES))
    memory_budget("adata", f"<{n_p} patients, up to {n_l} time points, {n_cycles} cycles>",
                  n_bytes, "the padded timelines")

    arrays = point_arrays(n_p, n_l, n_k)
    days_a, valid = arrays["days"], arrays["valid"]
    resolved, burden, burden_obs = (arrays["resolved"], arrays["burden"],
                                    arrays["burden_observed"])
    prog = np.zeros((n_p, n_l, n_k, n_g), np.float32)
    prog_mask = np.zeros((n_p, n_l, n_k), bool)

    slot = {(p, d): (i, j) for i, (p, ds) in enumerate(zip(patients, points, strict=True))
            for j, d in enumerate(ds)}
    for i, ds in enumerate(points):
        days_a[i, :len(ds)] = ds
        valid[i, :len(ds)] = True
    for p, entries in scans.items():
        for day, value in entries:
            i, j = slot[(p, day)]
            burden[i, j] = np.log1p(value)
            burden_obs[i, j] = True
    for s, (patient, day) in enumerate(zip(samples["patient"].astype(str),
                                           samples["time"].astype(float), strict=True)):
        i, j = slot[(patient, day)]
        write_biopsy(arrays, i, j, *_blocks(dist.counts[s], dist.nodes))
        if dist.program_scores is not None:
            scores = dist.program_scores[s][node_index]  # (K, G)
            ok = np.isfinite(scores).all(1) & resolved[i, j]
            prog[i, j][ok] = scores[ok]
            prog_mask[i, j] = ok

    key = registry.patient_key
    table = pd.DataFrame({
        "patient_id": patients,
        "cohort": [str((adata.uns.get("cohort") or {}).get("name", "cohort"))] * n_p,
        "cancer_type": _patient_column(adata, "cancer_type", patients, key, "unknown"),
        "lab": _patient_column(adata, "lab", patients, key, "unknown"),
    })
    regimen = {}
    if "patients" in adata.uns and "regimen" in pd.DataFrame(adata.uns["patients"]).columns:
        info = pd.DataFrame(adata.uns["patients"])
        regimen = dict(zip(info["patient_id"].astype(str), info["regimen"].astype(str),
                           strict=True))
    table["regimen"] = [regimen.get(p, "unknown") for p in patients]
    response = samples.groupby("patient", sort=False)["response"].last()
    table["response"] = [float(response.get(p, np.nan)) for p in patients]
    return Timelines(
        table, tuple(dist.programs),
        **{name: torch.from_numpy(value) for name, value in arrays.items()},
        program_scores=torch.from_numpy(prog), program_mask=torch.from_numpy(prog_mask),
        cycle_doses=torch.from_numpy(_cycle_doses(adata, patients, dist, n_cycles)),
    )


def concat_timelines(parts: Sequence[Timelines]) -> Timelines:
    """Stack timelines of several cohorts (padding to the longest)."""
    if not parts:
        raise ValidationError("parts: expected at least one Timelines")
    programs = parts[0].programs
    for part in parts[1:]:
        if part.programs != programs:
            raise ValidationError(f"programs: cohorts scored different programs "
                             f"({programs} vs {part.programs})")
    n_l = max(p.days.shape[1] for p in parts)
    n_c = max(p.cycle_doses.shape[1] for p in parts)
    out = {}
    for name in _ARRAYS:
        pieces = []
        for part in parts:
            value = getattr(part, name)
            width = n_c if name == "cycle_doses" else n_l
            pad = width - value.shape[1]
            if pad:
                shape = (value.shape[0], pad, *value.shape[2:])
                filler = (torch.arange(value.shape[-1]).expand(shape) if name == "block"
                          else torch.zeros(shape, dtype=value.dtype))
                value = torch.cat([value, filler.to(value.dtype)], dim=1)
            pieces.append(value)
        out[name] = torch.cat(pieces)
    table = pd.concat([p.patients for p in parts], ignore_index=True)
    if table["patient_id"].duplicated().any():
        dup = table["patient_id"][table["patient_id"].duplicated()].iloc[0]
        raise ValidationError(f"patient_id: {dup!r} appears in two cohorts; ids must be unique")
    return Timelines(table, programs, **out)


def split_patients(patient_ids: Sequence[str], *, test_fraction: float = 0.15,
                   val_fraction: float = 0.15, seed: int = 0) -> np.ndarray:
    """Assign each patient to ``"train"``, ``"val"`` or ``"test"``.

    The assignment hashes ``seed`` and the patient id, so a patient lands in the same split
    whatever else is in the data set and in whatever order.
    """
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValidationError(f"{name}: expected a fraction in [0, 1), got {value}")
    if test_fraction + val_fraction >= 1.0:
        raise ValidationError("test_fraction + val_fraction must leave patients for training")
    out = np.empty(len(patient_ids), dtype=object)
    for i, pid in enumerate(patient_ids):
        digest = hashlib.sha256(f"{seed}:{pid}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        out[i] = "test" if u < test_fraction else (
            "val" if u < test_fraction + val_fraction else "train")
    return out


def baseline_timelines(composition: np.ndarray, sod_mm: np.ndarray | None,
                       patient_ids: Sequence[str], *, cancer_type: str | Sequence[str],
                       programs: Sequence[str], n_cells: float = 1000.0,
                       cohort: str = "baseline", regimen: str | Sequence[str] = "unknown"
                       ) -> Timelines:
    """Timelines of one day-0 observation per patient, from fine-type fractions.

    For data that arrive as compositions rather than cells (a bulk deconvolution, a
    harmonized cluster table, an observation model's output): every leaf is resolved, no
    program is measured and no therapy has been given yet.

    Parameters
    ----------
    composition
        ``(P, K)`` fractions over :data:`FINE_TYPES` (rows are renormalized).
    sod_mm
        ``(P,)`` baseline sum of diameters in mm, or ``None`` for no scan.
    patient_ids
        ``P`` unique ids.
    cancer_type, regimen
        One value for everyone or one per patient.
    programs
        Program names (the model's, so the timelines fit it).
    n_cells
        Cells the fractions stand for (the biopsy size the model sees).
    """
    comp = np.asarray(composition, dtype=np.float64)
    if comp.ndim != 2:
        raise ValidationError(f"composition: expected shape ({len(patient_ids)}, "
                              f"{len(FINE_TYPES)}), got {comp.shape}")
    sod = None if sod_mm is None else np.asarray(sod_mm, dtype=np.float64)[:, None]
    if sod is not None and sod.shape[0] != len(comp):
        raise ValidationError(f"sod_mm: expected {len(comp)} finite values >= 0 (mm)")
    return composition_timelines(comp[:, None], np.zeros((len(comp), 1)), patient_ids,
                                 sod_mm=sod, cancer_type=cancer_type, programs=programs,
                                 n_cells=n_cells, cohort=cohort, regimen=regimen)


def composition_timelines(composition: np.ndarray, days: np.ndarray,
                          patient_ids: Sequence[str], *, sod_mm: np.ndarray | None = None,
                          cycle_doses: np.ndarray | None = None,
                          cancer_type: str | Sequence[str], programs: Sequence[str],
                          n_cells: float = 1000.0, cohort: str = "baseline",
                          regimen: str | Sequence[str] = "unknown") -> Timelines:
    """Timelines of ``L`` observed compositions per patient (every leaf resolved).

    The multi-point form of :func:`baseline_timelines`, for real data whose samples arrive
    as compositions through an observation model: a pre-treatment and an on-treatment
    sample, say, with the doses given in between. No program is measured.

    Parameters
    ----------
    composition
        ``(P, L, K)`` fractions over :data:`FINE_TYPES` (rows are renormalized).
    days
        ``(P, L)`` days since treatment start, increasing along ``L``.
    patient_ids
        ``P`` unique ids.
    sod_mm
        ``(P, L)`` sum of diameters in mm (NaN: no scan at that point), or ``None``.
    cycle_doses
        ``(P, C, R)`` dose intensity of each therapy in each 21-day cycle (1.0 = a standard
        cycle); no therapy when ``None``.
    cancer_type, regimen
        One value for everyone or one per patient.
    programs
        Program names (the model's, so the timelines fit it).
    n_cells
        Cells each composition stands for (the biopsy size the model sees).

    Raises
    ------
    ValidationError
        If a shape does not match, a fraction is negative or not finite, or days do not
        increase.
    """
    n_p = len(patient_ids)
    n_k = len(FINE_TYPES)
    comp = np.asarray(composition, dtype=np.float64)
    if comp.ndim != 3 or comp.shape[0] != n_p or comp.shape[2] != n_k or comp.shape[1] < 1:
        raise ValidationError(f"composition: expected shape ({n_p}, L >= 1, {n_k}), got "
                              f"{comp.shape}")
    n_l = comp.shape[1]
    if not np.all(np.isfinite(comp)) or np.any(comp < 0) or np.any(comp.sum(-1) <= 0):
        raise ValidationError("composition: expected finite, non-negative rows with a positive sum")
    comp = comp / comp.sum(-1, keepdims=True)
    day = np.asarray(days, dtype=np.float64)
    if day.shape != (n_p, n_l) or not np.all(np.isfinite(day)):
        raise ValidationError(f"days: expected shape ({n_p}, {n_l}) of finite days, got "
                              f"{day.shape}")
    if n_l > 1 and np.any(np.diff(day, axis=1) <= 0):
        raise ValidationError("days: expected strictly increasing days along each timeline")
    burden = np.zeros((n_p, n_l), np.float32)
    burden_obs = np.zeros((n_p, n_l), bool)
    if sod_mm is not None:
        sod = np.asarray(sod_mm, dtype=np.float64)
        seen = ~np.isnan(sod) if sod.shape == (n_p, n_l) else None
        if seen is None or not np.all(np.isfinite(sod[seen])) or np.any(sod[seen] < 0):
            raise ValidationError(f"sod_mm: expected shape ({n_p}, {n_l}) of values >= 0 mm "
                                  "(NaN: no scan)")
        burden[seen], burden_obs = np.log1p(sod[seen]), seen
    n_r = len(THERAPIES)
    if cycle_doses is None:
        doses = np.zeros((n_p, 2, n_r), np.float32)
    else:
        doses = np.asarray(cycle_doses, dtype=np.float32)
        if (doses.ndim != 3 or doses.shape[0] != n_p or doses.shape[2] != n_r
                or not np.all(np.isfinite(doses)) or np.any(doses < 0)):
            raise ValidationError(f"cycle_doses: expected shape ({n_p}, C, {n_r}) of finite "
                                  f"doses >= 0, got {doses.shape}")
    n_g = len(programs)

    def per_patient(value: str | Sequence[str]) -> list[str]:
        return [value] * n_p if isinstance(value, str) else [str(v) for v in value]

    table = pd.DataFrame({"patient_id": [str(p) for p in patient_ids], "cohort": cohort,
                          "cancer_type": per_patient(cancer_type), "lab": "fractions",
                          "regimen": per_patient(regimen), "response": np.nan})
    return Timelines(
        table, tuple(programs),
        days=torch.from_numpy(day.astype(np.float32)),
        valid=torch.ones(n_p, n_l, dtype=torch.bool),
        comp_observed=torch.ones(n_p, n_l, dtype=torch.bool),
        counts=torch.from_numpy((comp * n_cells).astype(np.float32)),
        block=torch.arange(n_k).expand(n_p, n_l, n_k).clone(),
        fractions=torch.from_numpy(comp.astype(np.float32)),
        resolved=torch.ones(n_p, n_l, n_k, dtype=torch.bool),
        program_scores=torch.zeros(n_p, n_l, n_k, n_g),
        program_mask=torch.zeros(n_p, n_l, n_k, dtype=torch.bool),
        burden=torch.from_numpy(burden), burden_observed=torch.from_numpy(burden_obs),
        cycle_doses=torch.from_numpy(doses),
    )
