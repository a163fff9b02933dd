"""Patient trajectories: each patient's samples in time order, padded into torch tensors.

This is the form the world model trains on: irregular sample times, the composition at each
time, the regimen given from that time on, and masks for padding and unknowns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from immunegym.data.distributions import SampleDistributions
from immunegym.data.schema import DataValidationError
from immunegym.data.storage import load_arrays, save_arrays
from immunegym.data.vocab import THERAPIES, parse_regimen
from immunegym.ontology import CellOntology, default_ontology
from immunegym.ontology.tree import SplitPrior
from immunegym.validation import bad, memory_budget

_KIND = "PatientTrajectories"
_TENSOR_FIELDS = (
    "times", "mask", "counts", "fractions", "total_cells", "therapy", "therapy_known",
    "sample_response", "response",
)


@dataclass
class PatientTrajectories:
    """Padded per-patient trajectories of cell-state distributions.

    ``P`` patients, up to ``T`` samples each, ``K`` composition columns, ``R`` therapies.

    Attributes
    ----------
    patients
        Patient ids (length ``P``).
    sample_ids
        Per patient, the sample ids in time order (unpadded).
    nodes
        Ontology node of each composition column (length ``K``). When coarse mass was kept
        (no split prior), nodes above the level appear after the level nodes.
    therapies
        Therapy ids of the therapy columns (:data:`THERAPIES`).
    times
        ``(P, T)`` float32 days from treatment start; 0 at padding.
    mask
        ``(P, T)`` bool, True where a sample exists.
    counts
        ``(P, T, K)`` float32 cell counts.
    fractions
        ``(P, T, K)`` float32 compositions (rows sum to 1 where ``mask``; 0 at padding).
    total_cells
        ``(P, T)`` float32 counted cells per sample.
    therapy
        ``(P, T, R)`` float32 multi-hot regimen given from this sample until the next.
    therapy_known
        ``(P, T)`` bool, False where the regimen was not recorded (or padding).
    sample_response
        ``(P, T)`` float32 response recorded on each sample (some studies assess response
        per lesion): 1, 0 or NaN.
    response
        ``(P,)`` float32 patient response: that of the latest sample with one (NaN if none).
    """

    patients: list[str]
    sample_ids: list[list[str]]
    nodes: list[str]
    therapies: tuple[str, ...]
    times: torch.Tensor
    mask: torch.Tensor
    counts: torch.Tensor
    fractions: torch.Tensor
    total_cells: torch.Tensor
    therapy: torch.Tensor
    therapy_known: torch.Tensor
    sample_response: torch.Tensor
    response: torch.Tensor

    def __len__(self) -> int:
        return len(self.patients)

    def __repr__(self) -> str:
        n_samples = int(self.mask.sum())
        known = self.response[~torch.isnan(self.response)]
        responders = f", {int(known.sum())}/{len(known)} responders" if len(known) else ""
        return (
            f"PatientTrajectories({len(self.patients)} patients, {n_samples} samples "
            f"(up to {self.max_len} each), {len(self.nodes)} columns, "
            f"{len(self.therapies)} therapies{responders}; device={self.times.device})"
        )

    @property
    def max_len(self) -> int:
        """``T``: the longest trajectory."""
        return int(self.mask.shape[1])

    @property
    def lengths(self) -> torch.Tensor:
        """``(P,)`` number of samples per patient."""
        return self.mask.sum(dim=1)

    def to(self, device: str | torch.device) -> PatientTrajectories:
        """A copy with every tensor on ``device``."""
        from immunegym.validation import device as check_device

        device = check_device("device", device)
        moved = {name: getattr(self, name).to(device) for name in _TENSOR_FIELDS}
        rest = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in moved}
        return PatientTrajectories(**rest, **moved)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write to one ``.safetensors`` file with JSON metadata; atomic, no pickle."""
        arrays = {name: getattr(self, name).detach().cpu().numpy() for name in _TENSOR_FIELDS}
        meta = {
            "patients": self.patients,
            "sample_ids": self.sample_ids,
            "nodes": self.nodes,
            "therapies": list(self.therapies),
        }
        return save_arrays(path, _KIND, arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PatientTrajectories:
        """Read a file written by :meth:`save`."""
        arrays, meta = load_arrays(path, _KIND)
        try:
            return cls(
                patients=list(meta["patients"]),
                sample_ids=[list(s) for s in meta["sample_ids"]],
                nodes=list(meta["nodes"]),
                therapies=tuple(meta["therapies"]),
                **{name: torch.from_numpy(arrays[name].copy()) for name in _TENSOR_FIELDS},
            )
        except KeyError as err:
            raise bad("path", str(path), f"a complete {_KIND} file (it lacks {err})") from None


def build_trajectories(
    distributions: SampleDistributions,
    level: str | Sequence[str] = "fine",
    split_prior: SplitPrior | Mapping[str, float] | None = None,
    ontology: CellOntology | None = None,
) -> PatientTrajectories:
    """Group samples by patient, order them by time and pad them into tensors.

    Parameters
    ----------
    distributions
        Per-sample distributions with a recorded ``time`` for every sample.
    level
        Tree level of the composition columns.
    split_prior
        ``None`` keeps mass labeled above the level in columns of its own (see
        :meth:`CellOntology.aggregate`); a prior (see :meth:`CellOntology.split_to_leaves`)
        splits it over the leaves first, so the columns are exactly the level's nodes.
    ontology
        The ontology; the package default when ``None``.

    Raises
    ------
    DataValidationError
        If a sample has no time, or a patient has two samples at the same time.
    """
    if not isinstance(distributions, SampleDistributions):
        raise bad("distributions", type(distributions).__name__,
                  "a SampleDistributions (from immunegym.data.sample_distributions)")
    if ontology is not None and not isinstance(ontology, CellOntology):
        raise bad("ontology", ontology, "a CellOntology or None (the package default)")
    onto = ontology or default_ontology()
    onto.level(level)  # an unknown level is named before any work
    if split_prior is not None:
        split_prior = onto.check_prior(split_prior, "split_prior")
    table = distributions.samples
    if table["time"].isna().any():
        untimed = table.index[table["time"].isna()][0]
        raise DataValidationError(
            f"time: sample {untimed!r} has no time; trajectories need days from treatment start "
            "for every sample (register time_key in setup_anndata)"
        )
    if split_prior is None:
        frame = distributions.counts_at(level, onto)
    else:
        leaves = distributions.counts_on_leaves(split_prior, onto)
        values, columns = onto.aggregate(leaves.to_numpy(), list(leaves.columns), level)
        frame = pd.DataFrame(values, index=leaves.index, columns=columns)
    nodes = [str(c) for c in frame.columns]

    groups = table.assign(_row=np.arange(len(table))).groupby("patient", sort=False)
    patients = [str(p) for p in groups.groups]
    max_len = int(groups.size().max())
    n_patients, n_nodes, n_therapies = len(patients), len(nodes), len(THERAPIES)
    # Padding to the longest trajectory: one patient with many samples widens every row.
    memory_budget("distributions", f"<{n_patients} patients, up to {max_len} samples>",
                  n_patients * max_len * (3 * n_nodes + n_therapies + 8) * 4,
                  "the padded trajectory tensors")
    times = np.zeros((n_patients, max_len), np.float32)
    mask = np.zeros((n_patients, max_len), bool)
    counts = np.zeros((n_patients, max_len, n_nodes), np.float32)
    therapy = np.zeros((n_patients, max_len, n_therapies), np.float32)
    therapy_known = np.zeros((n_patients, max_len), bool)
    sample_response = np.full((n_patients, max_len), np.nan, np.float32)
    response = np.full(n_patients, np.nan, np.float32)
    sample_ids: list[list[str]] = []
    values = frame.to_numpy()

    for p, (patient, rows) in enumerate(groups):
        rows = rows.sort_values("time", kind="stable")
        repeated = rows["time"].duplicated()
        if repeated.any():
            raise DataValidationError(
                f"time: patient {patient!r} has two samples at day {rows['time'][repeated].iloc[0]}"
                f" ({list(rows.index[rows['time'] == rows['time'][repeated].iloc[0]])}); "
                "expected one sample per time point"
            )
        n = len(rows)
        idx = rows["_row"].to_numpy()
        times[p, :n] = rows["time"].to_numpy()
        mask[p, :n] = True
        counts[p, :n] = values[idx]
        for t, regimen in enumerate(rows["therapy"]):
            parsed = parse_regimen(regimen)
            if parsed is not None:
                therapy_known[p, t] = True
                therapy[p, t] = [float(x in parsed) for x in THERAPIES]
        sample_response[p, :n] = rows["response"].to_numpy(dtype=np.float32)
        known = rows["response"].dropna()
        if len(known):
            response[p] = known.iloc[-1]  # the latest assessment
        sample_ids.append([str(s) for s in rows.index])

    totals = counts.sum(axis=2)
    fractions = np.divide(counts, totals[..., None], out=np.zeros_like(counts),
                          where=totals[..., None] > 0)
    return PatientTrajectories(
        patients=patients,
        sample_ids=sample_ids,
        nodes=nodes,
        therapies=THERAPIES,
        times=torch.from_numpy(times),
        mask=torch.from_numpy(mask),
        counts=torch.from_numpy(counts),
        fractions=torch.from_numpy(fractions),
        total_cells=torch.from_numpy(totals),
        therapy=torch.from_numpy(therapy),
        therapy_known=torch.from_numpy(therapy_known),
        sample_response=torch.from_numpy(sample_response),
        response=torch.from_numpy(response),
    )
