"""Unified tumor-immune-microenvironment cell ontology and label harmonization.

The ontology is a tree of cell types with Cell Ontology ids (:mod:`.nodes`, :mod:`.tree`);
:func:`harmonize_labels` maps any lab's labels onto it (:mod:`.harmonize`).
"""

from immunegym.ontology.conventions import CONVENTIONS, get_convention
from immunegym.ontology.distance import subtree_matrix, tree_wasserstein
from immunegym.ontology.harmonize import (
    HarmonizationReport,
    Harmonizer,
    LabelMatch,
    UnmappedLabelError,
    harmonization_report,
    harmonize_labels,
    tokenize,
)
from immunegym.ontology.nodes import CL_HIERARCHY_EXCEPTIONS, LEVEL_SPECS, NODE_SPECS, NodeSpec
from immunegym.ontology.tree import CellOntology, default_ontology

FINE_TYPES: tuple[str, ...] = tuple(default_ontology().leaves)
"""The 20 fine cell types (ontology leaves) in canonical order."""

__all__ = [
    "CL_HIERARCHY_EXCEPTIONS",
    "CONVENTIONS",
    "FINE_TYPES",
    "LEVEL_SPECS",
    "NODE_SPECS",
    "CellOntology",
    "HarmonizationReport",
    "Harmonizer",
    "LabelMatch",
    "NodeSpec",
    "UnmappedLabelError",
    "default_ontology",
    "get_convention",
    "harmonization_report",
    "harmonize_labels",
    "subtree_matrix",
    "tokenize",
    "tree_wasserstein",
]
