"""The node table of the unified tumor-immune-microenvironment (TIME) cell ontology.

One row per node: id, parent, display name, Cell Ontology (CL) id and label, and a note where
the CL term is the closest available rather than an exact match. The table is data; the tree
logic lives in :mod:`immunegym.ontology.tree`.

The 20 leaves are the fine cell types that ImmuneSim simulates and the world model predicts.
Coarse parents let labels that name a mixture or a lineage ("T cells", "Myeloid") keep their
mass at the right depth instead of being forced onto a leaf.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeSpec:
    """One node of the ontology.

    Attributes
    ----------
    id
        Stable snake_case identifier used everywhere in immunegym.
    parent
        Id of the parent node; ``None`` only for the root.
    name
        Human-readable name for tables and plots.
    cl_id
        Cell Ontology id (``CL:nnnnnnn``) of the exact or closest term.
    cl_label
        The CL label of ``cl_id`` exactly as the Cell Ontology spells it.
    note
        Why the CL term is only the closest one; empty when the match is exact.
    """

    id: str
    parent: str | None
    name: str
    cl_id: str
    cl_label: str
    note: str = ""


NODE_SPECS: tuple[NodeSpec, ...] = (
    NodeSpec("cell", None, "Cell", "CL:0000000", "cell"),
    # Malignant compartment
    NodeSpec("malignant", "cell", "Malignant", "CL:0001064", "malignant cell"),
    # Immune compartment
    NodeSpec("immune", "cell", "Immune", "CL:0000738", "leukocyte",
             "CL uses 'leukocyte' for immune cells (CD45+); 'immune cell' is its synonym."),
    NodeSpec("lymphoid", "immune", "Lymphoid", "CL:0000542", "lymphocyte"),
    NodeSpec("t_cell", "lymphoid", "T cell", "CL:0000084", "T cell"),
    NodeSpec("cd8_t", "t_cell", "CD8 T", "CL:0000625", "CD8-positive, alpha-beta T cell"),
    NodeSpec("cd8_memory", "cd8_t", "CD8 memory/naive", "CL:0000909",
             "CD8-positive, alpha-beta memory T cell",
             "Also holds naive and stem-like (TCF7+) non-exhausted CD8 cells, which CL keeps "
             "under separate terms."),
    NodeSpec("cd8_effector", "cd8_t", "CD8 effector", "CL:0001050",
             "effector CD8-positive, alpha-beta T cell",
             "Also holds effector-memory (Tem) and TEMRA cytotoxic CD8 cells."),
    NodeSpec("cd8_exhausted", "cd8_t", "CD8 exhausted", "CL:0020031",
             "CD8-positive exhausted alpha-beta T cell"),
    NodeSpec("cd8_tpex", "cd8_exhausted", "CD8 Tpex", "CL:0020031",
             "CD8-positive exhausted alpha-beta T cell",
             "CL has no term for TCF1+ progenitor-exhausted CD8 T cells (Tpex); closest is "
             "the exhausted CD8 parent term."),
    NodeSpec("cd8_tex", "cd8_exhausted", "CD8 Tex", "CL:0020031",
             "CD8-positive exhausted alpha-beta T cell",
             "CL has no separate term for terminally exhausted CD8 T cells (Tex); closest is "
             "the exhausted CD8 parent term."),
    NodeSpec("cd4_t", "t_cell", "CD4 T", "CL:0000624", "CD4-positive, alpha-beta T cell"),
    NodeSpec("cd4_helper", "cd4_t", "CD4 helper", "CL:0000492", "CD4-positive helper T cell",
             "Holds all conventional (non-regulatory) CD4 T cells: naive, memory, Th1, Th17, "
             "Tfh."),
    NodeSpec("treg", "cd4_t", "Treg", "CL:0000815", "regulatory T cell"),
    NodeSpec("nk", "lymphoid", "NK", "CL:0000623", "natural killer cell"),
    NodeSpec("b_lineage", "lymphoid", "B lineage", "CL:0000945", "lymphocyte of B lineage"),
    NodeSpec("b_cell", "b_lineage", "B cell", "CL:0000236", "B cell"),
    NodeSpec("plasma_cell", "b_lineage", "Plasma cell", "CL:0000786", "plasma cell"),
    NodeSpec("myeloid", "immune", "Myeloid", "CL:0000766", "myeloid leukocyte"),
    NodeSpec("dendritic_cell", "myeloid", "Dendritic cell", "CL:0000451", "dendritic cell"),
    NodeSpec("cdc1", "dendritic_cell", "cDC1", "CL:0002394",
             "CD141-positive myeloid dendritic cell",
             "CL's name for conventional type-1 DC (CLEC9A+, XCR1+, CD141+)."),
    NodeSpec("dc_other", "dendritic_cell", "DC other", "CL:0000451", "dendritic cell",
             "A mixture with no single CL term: cDC2, plasmacytoid DC and mature/migratory "
             "(LAMP3+ mregDC) dendritic cells; closest is the dendritic cell parent term."),
    NodeSpec("monocyte", "myeloid", "Monocyte", "CL:0000576", "monocyte"),
    NodeSpec("macrophage", "myeloid", "Macrophage", "CL:0000235", "macrophage"),
    NodeSpec("macrophage_m1", "macrophage", "Macrophage M1-like", "CL:0000863", "M1 macrophage",
             "Tumor-associated macrophages form a continuum; 'M1-like' (IL1B+, CXCL9+) TAMs "
             "are mapped to CL's M1 term."),
    NodeSpec("macrophage_m2", "macrophage", "Macrophage M2-like", "CL:0000890", "M2 macrophage",
             "Tumor-associated macrophages form a continuum; 'M2-like' (CD163+, SPP1+, "
             "TREM2+) TAMs are mapped to CL's M2 term."),
    NodeSpec("mdsc", "myeloid", "MDSC", "CL:0000889", "myeloid suppressor cell",
             "Holds both PMN-MDSC and M-MDSC."),
    NodeSpec("neutrophil", "myeloid", "Neutrophil", "CL:0000775", "neutrophil"),
    NodeSpec("mast_cell", "myeloid", "Mast cell", "CL:0000097", "mast cell"),
    # Stromal compartment
    NodeSpec("stromal", "cell", "Stromal", "CL:0000499", "stromal cell"),
    NodeSpec("fibroblast", "stromal", "Fibroblast", "CL:0000057", "fibroblast",
             "Includes cancer-associated fibroblasts (CAFs) and myofibroblasts."),
    NodeSpec("endothelial", "stromal", "Endothelial", "CL:0000115", "endothelial cell"),
)
"""All nodes, parents before children."""


# Named cuts through the tree: each is an antichain that covers every leaf exactly once, so a
# composition read at that level partitions the cells. "fine" is computed (the leaves).
LEVEL_SPECS: dict[str, tuple[str, ...]] = {
    "compartment": ("malignant", "immune", "stromal"),
    "lineage": ("malignant", "lymphoid", "myeloid", "stromal"),
    "major": (
        "malignant", "cd8_t", "cd4_t", "nk", "b_lineage", "dendritic_cell", "monocyte",
        "macrophage", "mdsc", "neutrophil", "mast_cell", "fibroblast", "endothelial",
    ),
}


# Where our tree and CL's is_a graph disagree, on purpose. Everywhere else a node's CL term
# is its parent's CL term or a descendant of it (checked by the test suite against CL).
CL_HIERARCHY_EXCEPTIONS: dict[str, str] = {
    "treg": "CL's 'regulatory T cell' also covers rare CD8+ Tregs; in tumors Tregs are "
    "FOXP3+ CD4 cells, so the tree places them under cd4_t.",
    "dendritic_cell": "CL does not place all dendritic cells (e.g. plasmacytoid DC) under "
    "'myeloid leukocyte'; immunegym groups DCs with the myeloid compartment as TIME atlases do.",
    "endothelial": "CL does not file endothelial cells under 'stromal cell'; TIME atlases count "
    "them in the non-immune, non-malignant stroma.",
}


# Nodes whose children partition them: every cell of the node is one of its children. Only
# there does a label that rules out all children but one name the last one ("non-Treg CD4"
# -> CD4 helper). Elsewhere cells are also counted on the node itself (double-negative and
# MAIT T cells on ``t_cell``/``cd8_t``, ILCs on ``lymphoid``, pericytes on ``stromal``,
# normal epithelium on ``cell``; TAMs between the M1 and M2 poles), so "CD8-negative T
# cells" stays ``t_cell``.
CLOSED_NODES: frozenset[str] = frozenset({
    "immune", "cd4_t", "cd8_exhausted", "b_lineage", "dendritic_cell",
})
