import numpy as np
import pytest

from immunegym.ontology import FINE_TYPES, LEVEL_SPECS, NODE_SPECS, CellOntology, NodeSpec
from immunegym.ontology import default_ontology as onto

REQUIRED_LEAVES = {
    "malignant", "cd8_memory", "cd8_effector", "cd8_tpex", "cd8_tex", "cd4_helper", "treg",
    "nk", "b_cell", "plasma_cell", "cdc1", "dc_other", "monocyte", "macrophage_m1",
    "macrophage_m2", "mdsc", "neutrophil", "mast_cell", "fibroblast", "endothelial",
}
REQUIRED_PARENTS = {
    "cell", "immune", "lymphoid", "t_cell", "cd8_t", "cd8_exhausted", "cd4_t", "b_lineage",
    "myeloid", "dendritic_cell", "macrophage", "stromal",
}


def test_required_nodes_and_shape():
    o = onto()
    assert set(o.leaves) >= REQUIRED_LEAVES
    assert REQUIRED_PARENTS <= set(o.ids)
    assert all(not o.is_leaf(p) for p in REQUIRED_PARENTS)
    assert o.root == "cell"
    assert set(o.children("cd8_exhausted")) == {"cd8_tpex", "cd8_tex"}
    assert tuple(o.leaves) == FINE_TYPES


def test_every_node_has_cl_id_and_label():
    for spec in NODE_SPECS:
        assert spec.cl_id.startswith("CL:") and len(spec.cl_id) == 10, spec
        assert spec.cl_label, spec


def test_navigation():
    o = onto()
    assert o.ancestors("cd8_tpex") == ["cd8_exhausted", "cd8_t", "t_cell", "lymphoid",
                                       "immune", "cell"]
    assert o.lowest_common_ancestor(["cd8_tex", "nk"]) == "lymphoid"
    assert o.lowest_common_ancestor(["monocyte", "macrophage_m2"]) == "myeloid"
    assert o.lowest_common_ancestor(["malignant", "treg"]) == "cell"
    assert o.comparable("t_cell", "cd8_tex") and not o.comparable("cd4_t", "cd8_tex")
    assert set(o.leaves_under("b_lineage")) == {"b_cell", "plasma_cell"}
    assert o.depth("cell") == 0 and o.depth("cd8_tex") == 6
    with pytest.raises(KeyError, match="unknown ontology node 'cd9'"):
        o.node("cd9")


@pytest.mark.parametrize("level", ["fine", *LEVEL_SPECS])
def test_levels_partition_leaves(level):
    o = onto()
    covered = [leaf for node in o.level(level) for leaf in o.leaves_under(node)]
    assert sorted(covered) == sorted(o.leaves)


def test_bad_custom_level_is_rejected():
    with pytest.raises(ValueError, match="overlap"):
        onto().level(["t_cell", "cd8_t", "malignant"])
    with pytest.raises(ValueError, match="does not cover"):
        onto().level(["malignant"])
    with pytest.raises(ValueError, match=r"level: got 'tiny'; expected one of \['fine'"):
        onto().level("tiny")


def test_bad_tree_specs_are_rejected():
    with pytest.raises(ValueError, match="appears twice"):
        CellOntology([NodeSpec("cell", None, "c", "CL:0000000", "cell"),
                      NodeSpec("cell", "cell", "c", "CL:0000000", "cell")], {})
    with pytest.raises(ValueError, match="not defined before"):
        CellOntology([NodeSpec("cell", None, "c", "CL:0000000", "cell"),
                      NodeSpec("a", "b", "a", "CL:0000000", "cell")], {})


def test_aggregate_keeps_coarse_mass_visible():
    o = onto()
    counts = np.array([[2.0, 3.0, 5.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    nodes = ["cd8_tex", "cd8_tpex", "t_cell", "malignant"]
    fine, cols = o.aggregate(counts, nodes, "fine")
    assert cols[-1] == "t_cell" and len(cols) == len(o.leaves) + 1
    assert fine[0, cols.index("t_cell")] == 5.0
    assert fine.sum() == counts.sum()
    major, mcols = o.aggregate(counts, nodes, "major")
    assert "t_cell" in mcols  # T cell is above cd8_t/cd4_t: still unresolved
    assert major[0, mcols.index("cd8_t")] == 5.0
    lineage, lcols = o.aggregate(counts, nodes, "lineage")
    assert lcols == list(LEVEL_SPECS["lineage"])  # everything resolves at lineage level
    assert lineage[0, lcols.index("lymphoid")] == 10.0


def test_split_to_leaves_is_explicit_and_keeps_totals():
    o = onto()
    counts = np.array([[2.0, 6.0, 4.0]])
    nodes = ["cd8_tex", "cd8_tpex", "cd8_exhausted"]
    observed = o.split_to_leaves(counts, nodes, "observed")
    idx = {leaf: i for i, leaf in enumerate(o.leaves)}
    assert observed[0, idx["cd8_tex"]] == pytest.approx(3.0)  # 2 + 4 * 2/8
    assert observed[0, idx["cd8_tpex"]] == pytest.approx(9.0)
    uniform = o.split_to_leaves(counts, nodes, "uniform")
    assert uniform[0, idx["cd8_tex"]] == pytest.approx(4.0)
    custom = o.split_to_leaves(counts, nodes, {"cd8_tex": 1.0, "cd8_tpex": 0.0})
    assert custom[0, idx["cd8_tex"]] == pytest.approx(6.0)
    for out in (observed, uniform, custom):
        assert out.sum() == pytest.approx(counts.sum())
    with pytest.raises(ValueError, match=r"prior: got 'magic'; expected one of"):
        o.split_to_leaves(counts, nodes, "magic")
    with pytest.raises(ValueError, match="not leaves"):
        o.split_to_leaves(counts, nodes, {"t_cell": 1.0})
