"""Per-sample cell-state distributions over the unified ontology.

A :class:`SampleDistributions` holds, for each biopsy, the *direct* cell counts on every
ontology node (a cell labeled "T cell" counts on ``t_cell``, not on a leaf), the cells that
were excluded (junk or unmapped labels), optional per-type program scores, and the
sample's patient, time, therapy and response. Read it at any level of the tree with
:meth:`SampleDistributions.counts_at` / :meth:`SampleDistributions.fractions_at`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from immunegym.data.programs import DEFAULT_PROGRAMS, score_cells
from immunegym.data.schema import (
    DataValidationError,
    check_days,
    get_fields,
    validate_anndata,
)
from immunegym.data.storage import load_arrays, save_arrays
from immunegym.data.vocab import format_regimen, parse_regimen, parse_response
from immunegym.ontology import (
    CellOntology,
    Harmonizer,
    UnmappedLabelError,
    default_ontology,
)
from immunegym.ontology.tree import SplitPrior
from immunegym.validation import ValidationError, bad, boolean

SAMPLE_COLUMNS = ("patient", "time", "therapy", "response")
_KIND = "SampleDistributions"


@dataclass
class SampleDistributions:
    """Cell-state distributions of a set of samples.

    Attributes
    ----------
    samples
        One row per sample (index: sample id) with columns ``patient`` (str), ``time``
        (days, float, NaN when not recorded), ``therapy`` (canonical regimen text or
        ``None``), ``response`` (1.0/0.0/NaN).
    nodes
        Ontology node ids of the count columns: every node of the ontology, in its order.
    counts
        ``(n_samples, n_nodes)`` direct counts per node.
    n_excluded
        ``(n_samples,)`` cells whose label mapped to no node (junk or unmapped).
    programs
        Names of the program scores (empty when no expression was scored).
    program_scores
        ``(n_samples, n_nodes, n_programs)`` mean program score of the cells labeled at each
        node; NaN where a sample has no such cells or a program had no genes. ``None`` when
        no expression was scored.
    """

    samples: pd.DataFrame
    nodes: list[str]
    counts: np.ndarray
    n_excluded: np.ndarray
    programs: tuple[str, ...] = ()
    program_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.float64)
        self.n_excluded = np.asarray(self.n_excluded, dtype=np.float64)
        n, k = len(self.samples), len(self.nodes)
        if self.counts.shape != (n, k):
            raise ValidationError(f"counts has shape {self.counts.shape}, expected {(n, k)}")
        if self.n_excluded.shape != (n,):
            raise ValidationError(f"n_excluded has shape {self.n_excluded.shape}, expected {(n,)}")
        missing = [c for c in SAMPLE_COLUMNS if c not in self.samples.columns]
        if missing:
            raise ValidationError(
                f"samples lacks columns {missing}; expected {list(SAMPLE_COLUMNS)}")
        _check_counts(self.counts, list(self.samples.index), self.nodes, "counts")
        if self.program_scores is not None and self.program_scores.shape != (
            n, k, len(self.programs)
        ):
            raise ValidationError(
                f"program_scores has shape {self.program_scores.shape}, expected "
                f"{(n, k, len(self.programs))}"
            )

    def __repr__(self) -> str:
        n_patients = self.samples["patient"].nunique()
        timed = int(self.samples["time"].notna().sum())
        programs = f", {len(self.programs)} programs" if self.programs else ""
        return (
            f"SampleDistributions({len(self.samples)} samples of {n_patients} patients, "
            f"{len(self.nodes)} nodes, {int(self.counts.sum()):,} cells counted + "
            f"{int(self.n_excluded.sum()):,} excluded, {timed} timed{programs})"
        )

    # ------------------------------------------------------------------ views
    @property
    def sample_ids(self) -> list[str]:
        """Sample ids in row order."""
        return [str(s) for s in self.samples.index]

    @property
    def total_cells(self) -> np.ndarray:
        """Cells counted per sample (excluded cells not included)."""
        return self.counts.sum(axis=1)

    def counts_at(
        self, level: str | Sequence[str] = "fine", ontology: CellOntology | None = None
    ) -> pd.DataFrame:
        """Counts read at a level of the tree (see :meth:`CellOntology.aggregate`).

        Mass labeled above the level keeps a column of its own, named by its node.
        """
        values, columns = (ontology or default_ontology()).aggregate(
            self.counts, self.nodes, level
        )
        return pd.DataFrame(values, index=self.samples.index, columns=columns)

    def fractions_at(
        self, level: str | Sequence[str] = "fine", ontology: CellOntology | None = None
    ) -> pd.DataFrame:
        """Fractions of counted cells at a level; rows sum to 1."""
        counts = self.counts_at(level, ontology)
        return counts.div(counts.sum(axis=1), axis=0)

    def counts_on_leaves(
        self, prior: SplitPrior | Mapping[str, float], ontology: CellOntology | None = None
    ) -> pd.DataFrame:
        """Counts over the leaves with coarse mass split by an explicit prior.

        See :meth:`CellOntology.split_to_leaves` for the priors.
        """
        onto = ontology or default_ontology()
        values = onto.split_to_leaves(self.counts, self.nodes, prior)
        return pd.DataFrame(values, index=self.samples.index, columns=onto.leaves)

    def subset(self, mask: np.ndarray | Sequence[bool]) -> SampleDistributions:
        """A new object with the samples where ``mask`` is true."""
        raw = np.asarray(mask)
        if raw.shape != (len(self.samples),) or raw.dtype.kind not in "b":
            raise bad("mask", f"<{raw.dtype} array of shape {raw.shape}>",
                      f"a boolean mask of shape ({len(self.samples)},), one per sample")
        mask = raw.astype(bool)
        if not mask.any():
            raise bad("mask", "<all False>", "at least one sample kept")
        return SampleDistributions(
            samples=self.samples[mask].copy(),
            nodes=list(self.nodes),
            counts=self.counts[mask],
            n_excluded=self.n_excluded[mask],
            programs=self.programs,
            program_scores=None if self.program_scores is None else self.program_scores[mask],
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write to one ``.safetensors`` file (arrays) with JSON metadata; atomic."""
        arrays = {
            "counts": self.counts,
            "n_excluded": self.n_excluded,
            "time": self.samples["time"].to_numpy(dtype=np.float64),
            "response": self.samples["response"].to_numpy(dtype=np.float64),
        }
        if self.program_scores is not None:
            arrays["program_scores"] = self.program_scores
        meta = {
            "sample_ids": self.sample_ids,
            "patients": [str(p) for p in self.samples["patient"]],
            "therapy": [None if t is None else str(t) for t in self.samples["therapy"]],
            "nodes": list(self.nodes),
            "programs": list(self.programs),
        }
        return save_arrays(path, _KIND, arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SampleDistributions:
        """Read a file written by :meth:`save` (no pickle involved)."""
        arrays, meta = load_arrays(path, _KIND)
        try:
            samples = pd.DataFrame(
                {
                    "patient": meta["patients"],
                    "time": arrays["time"],
                    "therapy": np.array(meta["therapy"], dtype=object),
                    "response": arrays["response"],
                },
                index=pd.Index(meta["sample_ids"], name="sample"),
            )
            return cls(
                samples=samples,
                nodes=meta["nodes"],
                counts=arrays["counts"],
                n_excluded=arrays["n_excluded"],
                programs=tuple(meta["programs"]),
                program_scores=arrays.get("program_scores"),
            )
        except KeyError as err:
            raise bad("path", str(path), f"a complete {_KIND} file (it lacks {err})") from None


def _check_counts(counts: np.ndarray, samples: Sequence[str], columns: Sequence[str],
                  field: str) -> None:
    if not np.all(np.isfinite(counts)):
        row, col = np.argwhere(~np.isfinite(counts))[0]
        raise DataValidationError(
            f"{field}: sample {samples[row]!r}, column {columns[col]!r} is {counts[row, col]}; "
            "expected finite non-negative counts"
        )
    if np.any(counts < 0):
        row, col = np.argwhere(counts < 0)[0]
        raise DataValidationError(
            f"{field}: sample {samples[row]!r}, column {columns[col]!r} has negative count "
            f"{counts[row, col]:g}; expected non-negative counts"
        )
    empty = counts.sum(axis=1) == 0
    if np.any(empty):
        raise DataValidationError(
            f"{field}: sample {samples[int(np.flatnonzero(empty)[0])]!r} has zero cells "
            f"({int(empty.sum())} such samples); every sample needs at least one counted cell"
        )


def _samples_frame(
    table: pd.DataFrame,
    sample_ids: Sequence[str],
    patient_col: str,
    time_col: str | None,
    therapy_col: str | None,
    response_col: str | None,
) -> pd.DataFrame:
    """The per-sample attribute frame (:data:`SAMPLE_COLUMNS`) from one row per sample.

    Therapies and responses are normalized to the shared vocabulary; times must be
    non-negative numbers when a time column is given.
    """
    out = pd.DataFrame(index=pd.Index([str(s) for s in sample_ids], name="sample"))
    out["patient"] = table[patient_col].astype(str).to_numpy()
    if time_col:
        times = pd.to_numeric(table[time_col], errors="coerce").to_numpy(float)
        check_days(time_col, times, list(out.index), what="sample")
        out["time"] = times
    else:
        out["time"] = np.nan
    regimens = [parse_regimen(v, therapy_col) for v in table[therapy_col]] if therapy_col \
        else [None] * len(out)
    out["therapy"] = np.array(
        [None if r is None else format_regimen(r) for r in regimens], dtype=object
    )
    out["response"] = (
        [parse_response(v, response_col) for v in table[response_col]]
        if response_col else np.nan
    )
    return out


def sample_distributions(
    adata: ad.AnnData,
    *,
    strict: bool = False,
    programs: Mapping[str, Sequence[str]] | None = None,
    aliases: Mapping[str, str] | None = None,
    ontology: CellOntology | None = None,
) -> SampleDistributions:
    """Harmonize the labels of a registered AnnData and count cells per sample and node.

    Parameters
    ----------
    adata
        Cells, registered with :func:`immunegym.data.setup_anndata`.
    strict
        Raise when any label is unrecognised instead of excluding those cells.
    programs
        Gene programs to score when ``adata`` has expression (``n_vars > 0``); the
        defaults (:data:`DEFAULT_PROGRAMS`) when ``None``. Pass ``{}`` to skip scoring.
    aliases
        Extra label translations (see :class:`immunegym.ontology.Harmonizer`).
    ontology
        The ontology; the package default when ``None``.

    Returns
    -------
    SampleDistributions
        Samples in order of first appearance.

    Raises
    ------
    DataValidationError
        On schema errors (see :func:`setup_anndata`) or a sample left with zero counted cells.
    UnmappedLabelError
        In strict mode, naming the label column and the unrecognised labels.
    """
    if not isinstance(adata, ad.AnnData):
        raise DataValidationError(
            f"adata: got {type(adata).__name__}; expected an anndata.AnnData registered with "
            "immunegym.data.setup_anndata"
        )
    strict = boolean("strict", strict)
    if programs is not None:
        _check_programs(programs)
    registry = get_fields(adata)
    validate_anndata(adata, registry)
    onto = ontology or default_ontology()
    harmonizer = Harmonizer(onto, convention=registry.label_convention, aliases=aliases)
    labels = adata.obs[registry.label_key].astype(object).to_numpy()
    try:
        report = harmonizer.harmonize(labels, strict=strict)
    except UnmappedLabelError as err:
        raise UnmappedLabelError(f"label_key={registry.label_key!r}: {err}") from None
    except ValidationError as err:
        raise DataValidationError(f"label_key={registry.label_key!r}: {err}") from None

    node_index = {n: i for i, n in enumerate(onto.ids)}
    per_unique = np.array(
        [node_index[m.node] if m.node is not None else -1 for m in report.matches] + [-1]
    )
    cell_node = per_unique[report.codes]
    sample_codes, sample_ids = pd.factorize(adata.obs[registry.sample_key].astype(str))
    n_samples, n_nodes = len(sample_ids), len(onto.ids)
    counted = cell_node >= 0
    counts = np.zeros((n_samples, n_nodes))
    np.add.at(counts, (sample_codes[counted], cell_node[counted]), 1.0)
    n_excluded = np.bincount(sample_codes[~counted], minlength=n_samples).astype(float)
    order = [str(s) for s in sample_ids]
    # Per-sample attributes are constant within a sample (validated), so any cell speaks.
    first_per_sample = adata.obs.iloc[np.unique(sample_codes, return_index=True)[1]]
    _check_counts(counts, order, onto.ids, f"label_key={registry.label_key!r}")

    program_table = DEFAULT_PROGRAMS if programs is None else programs
    program_names: tuple[str, ...] = ()
    program_scores = None
    if adata.n_vars > 0 and program_table:
        program_names = tuple(program_table)
        cell_scores = score_cells(adata.X, list(adata.var_names), program_table)
        program_scores = _mean_by_sample_node(
            cell_scores[counted], sample_codes[counted], cell_node[counted], n_samples, n_nodes
        )

    return SampleDistributions(
        samples=_samples_frame(
            first_per_sample, order, registry.patient_key, registry.time_key,
            registry.therapy_key, registry.response_key,
        ),
        nodes=list(onto.ids),
        counts=counts,
        n_excluded=n_excluded,
        programs=program_names,
        program_scores=program_scores,
    )


def _check_programs(programs: object) -> None:
    if not isinstance(programs, Mapping):
        raise bad("programs", programs, "a mapping program name -> gene symbols ({} to skip)")
    for name, genes in programs.items():
        if not isinstance(name, str):
            raise bad("programs", name, "str program names")
        if isinstance(genes, str | bytes) or not isinstance(genes, Sequence | np.ndarray):
            raise bad(f"programs[{name!r}]", genes, "a sequence of gene symbols (a list, "
                      "not one string)")
        if not all(isinstance(g, str) for g in genes):
            raise bad(f"programs[{name!r}]", list(genes), "gene symbols as str")


def _mean_by_sample_node(
    scores: np.ndarray, sample: np.ndarray, node: np.ndarray, n_samples: int, n_nodes: int
) -> np.ndarray:
    """Mean of per-cell scores per (sample, node), ignoring NaN; NaN where no cell."""
    out = np.zeros((n_samples, n_nodes, scores.shape[1]))
    seen = np.zeros((n_samples, n_nodes, scores.shape[1]))
    valid = ~np.isnan(scores)
    np.add.at(out, (sample, node), np.where(valid, scores, 0.0))
    np.add.at(seen, (sample, node), valid.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen > 0, out / seen, np.nan)


def from_counts_table(
    table: pd.DataFrame,
    count_columns: Sequence[str],
    *,
    sample_col: str = "sample",
    patient_col: str = "patient",
    time_col: str | None = None,
    therapy_col: str | None = None,
    response_col: str | None = None,
    convention: str | None = None,
    aliases: Mapping[str, str] | None = None,
    strict: bool = True,
    ontology: CellOntology | None = None,
) -> SampleDistributions:
    """Build distributions from a per-sample count table (one column per cell-type label).

    Columns whose label maps to the same node are summed; columns mapping to no node
    (junk) are counted as excluded cells.

    Raises
    ------
    DataValidationError
        If a named column is missing, sample ids repeat, a count is negative or not finite,
        or a sample has zero counted cells.
    UnmappedLabelError
        In strict mode (the default), when a count column's label is unrecognised.
    """
    if not isinstance(table, pd.DataFrame):
        raise bad("table", type(table).__name__, "a pandas DataFrame, one row per sample")
    if isinstance(count_columns, str | bytes) or not isinstance(count_columns, Sequence | pd.Index
                                                                 | np.ndarray):
        raise bad("count_columns", count_columns, "a sequence of column names (a list, not one "
                  "string)")
    if len(count_columns) == 0:
        raise bad("count_columns", list(count_columns), "at least one count column")
    for name, col in (("sample_col", sample_col), ("patient_col", patient_col)):
        if not isinstance(col, str):
            raise bad(name, col, "a column name (str)")
    strict = boolean("strict", strict)
    required = [sample_col, patient_col, *count_columns]
    required += [c for c in (time_col, therapy_col, response_col) if c]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataValidationError(
            f"count table has no column(s) {missing}; available: {list(table.columns)}"
        )
    samples = table[sample_col].astype(str)
    if samples.duplicated().any():
        raise DataValidationError(
            f"{sample_col}: sample id {samples[samples.duplicated()].iloc[0]!r} appears more "
            "than once; expected one row per sample"
        )
    raw = table[list(count_columns)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    _check_counts(raw, list(samples), list(count_columns), "counts")
    onto = ontology or default_ontology()
    harmonizer = Harmonizer(onto, convention=convention, aliases=aliases)
    try:
        report = harmonizer.harmonize(list(count_columns), strict=strict)
    except UnmappedLabelError as err:
        raise UnmappedLabelError(f"count columns: {err}") from None
    except ValidationError as err:
        raise DataValidationError(f"count_columns: {err}") from None
    node_index = {n: i for i, n in enumerate(onto.ids)}
    counts = np.zeros((len(samples), len(onto.ids)))
    n_excluded = np.zeros(len(samples))
    for j, node in enumerate(report.nodes):
        if node is None:
            n_excluded += raw[:, j]
        else:
            counts[:, node_index[node]] += raw[:, j]
    _check_counts(counts, list(samples), onto.ids, "counts")
    out = _samples_frame(table, list(samples), patient_col, time_col, therapy_col,
                         response_col)
    return SampleDistributions(out, list(onto.ids), counts, n_excluded)
