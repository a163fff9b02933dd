"""Every node's CL id is checked against the real Cell Ontology shipped offline."""

import pytest

from immunegym.ontology import CL_HIERARCHY_EXCEPTIONS, NODE_SPECS, default_ontology

ontology_parser = pytest.importorskip(
    "cellxgene_ontology_guide.ontology_parser",
    reason="dev dependency cellxgene-ontology-guide is not installed",
)


@pytest.fixture(scope="module")
def cl():
    return ontology_parser.OntologyParser()


@pytest.mark.parametrize("spec", NODE_SPECS, ids=lambda s: s.id)
def test_cl_id_exists_with_our_label(cl, spec):
    assert cl.is_valid_term_id(spec.cl_id), spec.cl_id
    assert not cl.is_term_deprecated(spec.cl_id), spec.cl_id
    assert cl.get_term_label(spec.cl_id) == spec.cl_label


@pytest.mark.parametrize("spec", [s for s in NODE_SPECS if s.parent], ids=lambda s: s.id)
def test_cl_hierarchy_agrees_with_tree(cl, spec):
    parent = default_ontology().node(spec.parent)
    ancestors = set(cl.get_term_ancestors(spec.cl_id, include_self=True))
    agrees = parent.cl_id in ancestors
    if spec.id in CL_HIERARCHY_EXCEPTIONS:
        assert not agrees, f"{spec.id} is listed as an exception but agrees with CL"
    else:
        assert agrees, f"{spec.id}: {spec.cl_id} is not under {parent.cl_id} in CL"


def test_closest_terms_carry_a_note():
    # A CL id used by two nodes can be exact for at most one of them.
    seen: dict[str, list[str]] = {}
    for spec in NODE_SPECS:
        seen.setdefault(spec.cl_id, []).append(spec.id)
    for ids in seen.values():
        specs = [s for s in NODE_SPECS if s.id in ids]
        assert sum(not s.note for s in specs) <= 1, ids
