"""Cell-state programs: gene sets scored per cell and averaged per sample and cell type.

A program score is the mean over the program's genes of log1p(counts per 10k) in a cell,
the simple average-expression score; genes absent from ``var_names`` are skipped and a
program with no gene present is reported as missing (NaN), never as zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from immunegym.validation import ValidationError, bad

DEFAULT_PROGRAMS: dict[str, tuple[str, ...]] = {
    "cytotoxicity": ("GZMB", "PRF1", "NKG7", "GNLY", "GZMA", "GZMH"),
    "exhaustion": ("PDCD1", "HAVCR2", "TOX", "LAG3", "TIGIT", "CXCL13", "ENTPD1"),
    "progenitor": ("TCF7", "SLAMF6", "CXCR5", "IL7R", "SELL", "CCR7"),
    "proliferation": ("MKI67", "TOP2A", "MCM2", "TYMS", "STMN1", "TUBB"),
    "ifn_response": ("ISG15", "IFIT1", "IFIT3", "MX1", "STAT1", "IFI6"),
    "antigen_presentation": ("HLA-DRA", "CD74", "HLA-A", "HLA-B", "B2M", "TAP1"),
    "m1_like": ("IL1B", "CXCL9", "CXCL10", "TNF", "NOS2", "CD80"),
    "m2_like": ("CD163", "MRC1", "SPP1", "APOE", "TREM2", "FOLR2"),
}
"""Default programs; gene symbols are matched case-insensitively."""


def score_cells(
    x: np.ndarray | sp.spmatrix,
    var_names: Sequence[str],
    programs: Mapping[str, Sequence[str]] = DEFAULT_PROGRAMS,
) -> np.ndarray:
    """Per-cell program scores.

    Parameters
    ----------
    x
        ``(n_cells, n_genes)`` raw counts (dense or sparse), non-negative.
    var_names
        Gene symbols of the columns.
    programs
        Program name -> gene symbols.

    Returns
    -------
    numpy.ndarray
        ``(n_cells, n_programs)`` float; a column is NaN when none of its genes is present.
    """
    lookup = {str(g).upper(): i for i, g in enumerate(var_names)}
    try:
        x = sp.csr_matrix(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise bad("x", type(x).__name__, "a 2-D numeric matrix (cells x genes)") from None
    if x.shape[1] != len(var_names):
        raise bad("var_names", f"<{len(var_names)} names>",
                  f"one gene symbol per column of x ({x.shape[1]})")
    if x.nnz and not np.isfinite(x.data).all():
        raise bad("x", "<matrix with non-finite values>", "finite, non-negative counts")
    if x.nnz and x.data.min() < 0:
        raise ValidationError(
            "expression: counts must be non-negative; got negative values in X"
        )
    library = np.asarray(x.sum(axis=1)).ravel()
    scale = np.divide(1e4, library, out=np.zeros_like(library), where=library > 0)
    normalized = sp.diags(scale) @ x
    normalized.data = np.log1p(normalized.data)
    scores = np.full((x.shape[0], len(programs)), np.nan)
    for j, genes in enumerate(programs.values()):
        cols = [lookup[g.upper()] for g in genes if g.upper() in lookup]
        if cols:
            scores[:, j] = np.asarray(normalized[:, cols].mean(axis=1)).ravel()
    return scores
