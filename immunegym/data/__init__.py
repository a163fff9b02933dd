"""The data layer: AnnData schema, per-sample distributions, trajectories, real tables.

Flow: ``setup_anndata`` (register obs columns) -> ``sample_distributions`` (harmonize labels,
count per sample and node) -> ``build_trajectories`` (per-patient torch tensors).
"""

from immunegym.data.distributions import (
    SampleDistributions,
    from_counts_table,
    sample_distributions,
)
from immunegym.data.programs import DEFAULT_PROGRAMS, score_cells
from immunegym.data.schema import (
    AnnDataFields,
    DataValidationError,
    get_fields,
    read_h5ad,
    setup_anndata,
    validate_anndata,
)
from immunegym.data.trajectories import PatientTrajectories, build_trajectories
from immunegym.data.vocab import THERAPIES, format_regimen, parse_regimen, parse_response

__all__ = [
    "DEFAULT_PROGRAMS",
    "THERAPIES",
    "AnnDataFields",
    "DataValidationError",
    "PatientTrajectories",
    "SampleDistributions",
    "build_trajectories",
    "format_regimen",
    "from_counts_table",
    "get_fields",
    "parse_regimen",
    "parse_response",
    "read_h5ad",
    "sample_distributions",
    "score_cells",
    "setup_anndata",
    "validate_anndata",
]
