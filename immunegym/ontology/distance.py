"""Distances between compositions that respect the ontology.

Tree-Wasserstein: the earth mover's distance (W1) between two distributions over the
leaves when moving mass costs the path length between nodes in the tree. On a tree it has a
closed form (Evans & Matsen 2012; Le et al. 2019): the sum over edges of the edge length
times the absolute difference of the mass below that edge. Confusing CD8 effector with CD8
Tex then costs 2 (up to ``cd8_t_cell`` and down), confusing it with a fibroblast costs far
more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from immunegym.ontology.tree import CellOntology, default_ontology
from immunegym.validation import ValidationError


def subtree_matrix(
    leaves: Sequence[str] | None = None,
    ontology: CellOntology | None = None,
    edge_weights: Mapping[str, float] | None = None,
) -> np.ndarray:
    """``(n_edges, n_leaves)`` matrix: row ``e`` marks the leaves below edge ``e``, weighted.

    Every non-root node owns the edge to its parent. ``edge_weights`` (node id -> length of
    the edge above it) defaults to unit lengths.
    """
    onto = ontology or default_ontology()
    leaves = list(leaves) if leaves is not None else onto.leaves
    unknown = [leaf for leaf in leaves if leaf not in onto or not onto.is_leaf(leaf)]
    if unknown:
        raise ValidationError(
            f"leaves: got {unknown}; expected leaves of the ontology (fine types)"
        )
    column = {leaf: i for i, leaf in enumerate(leaves)}
    edges = [n for n in onto.ids if n != onto.root]
    matrix = np.zeros((len(edges), len(leaves)))
    for row, node in enumerate(edges):
        weight = 1.0 if edge_weights is None else float(edge_weights.get(node, 1.0))
        for leaf in onto.leaves_under(node):
            if leaf in column:
                matrix[row, column[leaf]] = weight
    return matrix


def tree_wasserstein(
    p: np.ndarray | torch.Tensor,
    q: np.ndarray | torch.Tensor,
    leaves: Sequence[str] | None = None,
    ontology: CellOntology | None = None,
    edge_weights: Mapping[str, float] | None = None,
) -> np.ndarray | torch.Tensor:
    """Tree-Wasserstein (W1) distance between compositions over the leaves.

    Parameters
    ----------
    p, q
        ``(..., n_leaves)`` non-negative compositions; each is normalized to sum to 1, so
        counts work too. Broadcast against each other.
    leaves
        Leaf id of each column; the ontology's leaves in order when ``None``.
    ontology
        The ontology; the package default when ``None``.
    edge_weights
        Length of the edge above each node; unit lengths when ``None``.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``(...)`` distances, same library as ``p``. 0 for identical compositions; at most
        twice the tree's height (with unit edges).

    Raises
    ------
    ValueError
        If the last dimension does not match the leaves, or a composition is negative, not
        finite or all zero.
    """
    matrix = subtree_matrix(leaves, ontology, edge_weights)
    n_leaves = matrix.shape[1]
    as_torch = isinstance(p, torch.Tensor) or isinstance(q, torch.Tensor)
    if not isinstance(p, torch.Tensor):
        p = _as_array("p", p)
    if not isinstance(q, torch.Tensor):
        q = _as_array("q", q)
    for name, x in (("p", p), ("q", q)):
        if x.ndim == 0 or x.shape[-1] != n_leaves:
            raise ValidationError(f"{name}: got shape {tuple(x.shape)}; expected a last "
                                  f"dimension of {n_leaves} leaves")
        values = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValidationError(f"{name}: got negative or non-finite values; expected "
                                  "finite, non-negative compositions")
        if np.any(values.sum(-1) <= 0):
            raise ValidationError(f"{name}: got a composition that sums to zero; expected "
                                  "positive mass")
    if as_torch:
        p_t, q_t = torch.as_tensor(p), torch.as_tensor(q)
        dtype = torch.promote_types(p_t.dtype, q_t.dtype)
        m = torch.as_tensor(matrix, dtype=dtype, device=p_t.device)
        p_t = p_t.to(dtype) / p_t.sum(-1, keepdim=True)
        q_t = q_t.to(dtype) / q_t.sum(-1, keepdim=True)
        return ((p_t - q_t) @ m.T).abs().sum(-1)
    p_n = np.asarray(p, float) / np.asarray(p, float).sum(-1, keepdims=True)
    q_n = np.asarray(q, float) / np.asarray(q, float).sum(-1, keepdims=True)
    return np.abs((p_n - q_n) @ matrix.T).sum(-1)


def _as_array(name: str, x: object) -> np.ndarray:
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise ValidationError(f"{name}: got {type(x).__name__}; expected a numeric array of "
                              "compositions") from None
