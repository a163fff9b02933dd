import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immunegym.ontology import (
    Harmonizer,
    UnmappedLabelError,
    default_ontology,
    harmonization_report,
    harmonize_labels,
    tokenize,
)

# Label -> expected node, by convention. Expectations follow the rule "most specific node the
# label implies; common parent for a mixture".
CASES = {
    "Sade-Feldman 2018 cluster names": {
        "B cells": "b_cell",
        "Plasma cells": "plasma_cell",
        "Monocytes/Macrophages": "myeloid",
        "Dendritic cells": "dendritic_cell",
        "Lymphocytes": "lymphoid",
        "Exhausted CD8+ T cells": "cd8_exhausted",
        "Regulatory T cells": "treg",
        "Cytotoxicity Lymphocytes": "lymphoid",  # CD8 effectors and NK cells
        "Exhausted/HS CD8+ T cells": "cd8_exhausted",
        "Memory T cells": "t_cell",  # CD4 or CD8
        "Lymphocytes exhausted/Cell cycle": "cd8_exhausted",
    },
    "Zheng 2021 T-cell clusters": {
        "CD8.c01.Tn.MAL": "cd8_memory",
        "CD8.c02.Tm.IL7R": "cd8_memory",
        "CD8.c06.Tem.GZMK": "cd8_effector",
        "CD8.c07.Temra.CX3CR1": "cd8_effector",
        "CD8.c10.Trm.ZNF683": "cd8_memory",
        "CD8.c11.Tex.PDCD1": "cd8_tex",
        "CD8.c12.Tex.CXCL13": "cd8_tex",
        "CD8.c14.Tex.TCF7": "cd8_tpex",
        "CD8.c16.MAIT.SLC4A10": "cd8_t",
        "CD4.c01.Tn.TCF7": "cd4_helper",
        "CD4.c16.Tfh.CXCR5": "cd4_helper",
        "CD4.c17.TfhTh1.CXCL13": "cd4_helper",
        "CD4.c18.Treg.RTKN2": "treg",
        "CD4.c22.ISG.IFIT1": "cd4_t",
    },
    "Cheng 2021 myeloid clusters": {
        "cDC1_CLEC9A": "cdc1",
        "cDC2_CD1C": "dc_other",
        "cDC3_LAMP3": "dc_other",
        "pDC_LILRA4": "dc_other",
        "Mono_CD14": "monocyte",
        "Mono_CD16": "monocyte",
        "Macro_SPP1": "macrophage_m2",
        "Macro_LYVE1": "macrophage_m2",
        "Macro_IL1B": "macrophage_m1",
        "Macro_INHBA": "macrophage_m1",
        "Macro_C1QC": "macrophage",  # no polarization implied
        "Mast_KIT": "mast_cell",
    },
    "CellTypist immune labels": {
        "Tem/Temra cytotoxic T cells": "cd8_effector",
        "Tcm/Naive cytotoxic T cells": "cd8_memory",
        "Tem/Trm cytotoxic T cells": "cd8_t",  # effector + memory: a mixture
        "Tcm/Naive helper T cells": "cd4_helper",
        "Regulatory T cells": "treg",
        "Follicular helper T cells": "cd4_helper",
        "CD16+ NK cells": "nk",
        "Classical monocytes": "monocyte",
        "Non-classical monocytes": "monocyte",
        "Alveolar macrophages": "macrophage",
        "DC1": "cdc1",
        "DC2": "dc_other",
        "pDC": "dc_other",
        "Migratory DCs": "dc_other",
        "Plasmablasts": "plasma_cell",
        "Memory B cells": "b_cell",
        "Germinal center B cells": "b_cell",
        "Mono-mac": "myeloid",
        "gamma-delta T cells": "t_cell",
        "Erythrocytes": "cell",  # a real cell with no TIME node: counted at the root
    },
    "Yost 2019 BCC labels": {
        "CD8_ex": "cd8_exhausted",
        "CD8_ex_T_cells": "cd8_exhausted",
        "CD8_mem_T_cells": "cd8_memory",
        "CD8_act_T_cells": "cd8_effector",
        "CD4_T_cells": "cd4_t",
        "Tregs": "treg",
        "Tfh": "cd4_helper",
        "Th17": "cd4_helper",
        "CAFs": "fibroblast",
        "Myofibroblasts": "fibroblast",
        "Endothelial": "endothelial",
        "Tumor_1": "malignant",
        "pDCs": "dc_other",
    },
    "coarse labels": {
        "T_cell": "t_cell",
        "Myeloid_cell": "myeloid",
        "Cancer_cell": "malignant",
        "B_cell": "b_cell",
        "NK_cell": "nk",
        "Fibroblast": "fibroblast",
        "Endothelial_cell": "endothelial",
        "Other immune": "immune",
    },
    "free text": {
        "TCF1+ progenitor exhausted CD8": "cd8_tpex",
        "M2-like TAM": "macrophage_m2",
        "PMN-MDSC": "mdsc",
        "M-MDSC": "mdsc",
        "terminally exhausted CD8 T cells": "cd8_tex",
        "Tumor-associated macrophages": "macrophage",
        "Cancer-associated fibroblasts": "fibroblast",
        "CD4+CD25+FOXP3+ Treg": "treg",
        "T/NK cells": "lymphoid",
        "B/Plasma": "b_lineage",
    },
    "labels nobody listed (other labs)": {
        "CD8+ PD-1+ TIM-3+": "cd8_tex",
        "CD8 TCF7+": "cd8_memory",  # TCF7 without exhaustion: memory-like
        "Exhausted CD8 T": "cd8_exhausted",
        "tumour cells": "malignant",
        "NK-cells": "nk",
        "TAM SPP1+": "macrophage_m2",
        "CD8_Tex_CXCL13": "cd8_tex",
        "Treg FOXP3 high": "treg",
        "Macrophage CD163+": "macrophage_m2",
        "Precursor exhausted CD8 T cells": "cd8_tpex",
        "CD14+ monocytes": "monocyte",
        "Neutrophils (TAN)": "neutrophil",
        "Endothelial cells (LEC)": "endothelial",
        "cytotoxic T lymphocytes": "cd8_t",
        "CD4- CD8+ T cells": "cd8_t",  # a negative marker does not count
    },
}
JUNK = ["Doublets", "Unknown", "low quality", "Unassigned", "NA", "Other", "Low-quality cells",
        "T cell doublets", ""]


@pytest.mark.parametrize(
    ("label", "expected"),
    [(label, node) for table in CASES.values() for label, node in table.items()],
)
def test_label_maps_to_most_specific_node(label, expected):
    assert harmonize_labels([label]) == [expected]


@pytest.mark.parametrize("label", JUNK)
def test_junk_maps_to_none(label):
    assert harmonize_labels([label]) == [None]


def test_contract_keeps_input_order_and_length():
    labels = ["Macro_SPP1", "Doublets", "CD8.c12.Tex.CXCL13", "Macro_SPP1", None, "B cells"]
    out = harmonize_labels(labels)
    assert out == ["macrophage_m2", None, "cd8_tex", "macrophage_m2", None, "b_cell"]


def test_nan_and_none_are_missing():
    report = harmonization_report(["B cells", np.nan, None])
    assert report.nodes == ["b_cell", None, None]
    assert report.n_missing == 2
    assert report.mapped_fraction == pytest.approx(1 / 3)


def test_report_has_cl_ids_rules_and_unmapped():
    report = harmonization_report(
        ["Macro_SPP1", "Macro_SPP1", "T/NK cells", "xyzzy", "Doublets", "Erythrocytes"]
    )
    frame = report.to_frame().set_index("label")
    assert frame.loc["Macro_SPP1", "n_cells"] == 2
    assert frame.loc["Macro_SPP1", "cl_id"] == "CL:0000890"
    assert frame.loc["Macro_SPP1", "rule"] == "name+marker"
    assert frame.loc["T/NK cells", "rule"] == "mixture"
    assert frame.loc["Erythrocytes", "rule"] == "outside"
    assert frame.loc["xyzzy", "rule"] == "unmapped"
    assert report.unmapped == ["xyzzy"]
    assert report.junk == ["Doublets"]
    assert frame.loc["Macro_SPP1", "confidence"] > frame.loc["T/NK cells", "confidence"]
    assert "spp1~macrophage_m2" in frame.loc["Macro_SPP1", "evidence"]


def test_strict_mode_raises_on_unknown_label_but_not_on_junk():
    assert harmonize_labels(["B cells", "Doublets"], strict=True) == ["b_cell", None]
    with pytest.raises(UnmappedLabelError, match="'Cluster 7'"):
        harmonize_labels(["B cells", "Cluster 7"], strict=True)


def test_convention_translates_codes():
    codes = [f"G{i}" for i in range(1, 12)]
    assert harmonize_labels(codes) == [None] * 11  # codes alone mean nothing
    out = harmonize_labels(codes, convention="sade_feldman_2018")
    assert out[0] == "b_cell" and out[5] == "cd8_exhausted" and out[6] == "treg"
    with pytest.raises(ValueError,
                       match=r"convention: got 'nope'; expected one of \['sade_feldman_2018'\]"):
        harmonize_labels(codes, convention="nope")


def test_aliases_for_private_codes():
    assert harmonize_labels(["k7", "K7"], aliases={"k7": "Tregs"}) == ["treg", "treg"]


def test_tokenizer_splits_conventions():
    assert tokenize("CD4.c17.TfhTh1.CXCL13") == ["cd4", "c17", "tfh", "th1", "cxcl13"]
    assert tokenize("cDC1_CLEC9A") == ["cdc1", "clec9a"]
    assert "treg" in tokenize("Regulatory T cells")
    assert "cd4" not in tokenize("CD4- CD8+ T cells")


def test_each_distinct_label_is_resolved_once():
    h = Harmonizer()
    labels = ["Macro_SPP1", "B cells"] * 5000
    report = h.harmonize(labels)
    assert len(report.matches) == 2
    assert report.counts.tolist() == [5000, 5000]
    assert len(h._cache) == 2


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=20))
def test_any_text_gives_a_valid_node_or_none(labels):
    out = harmonize_labels(labels)
    assert len(out) == len(labels)
    valid = set(default_ontology().ids)
    assert all(node is None or node in valid for node in out)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([label for table in CASES.values() for label in table]),
    st.sampled_from(["lower", "upper", "spaces", "underscores"]),
)
def test_case_and_separators_do_not_change_the_node(label, style):
    expected = harmonize_labels([label])[0]
    variant = {
        "lower": label.lower(),
        "upper": label.upper(),
        "spaces": label.replace("_", " ").replace(".", " "),
        "underscores": label.replace(" ", "_"),
    }[style]
    if style in ("lower", "upper") and any(c.isupper() for c in label[1:]):
        return  # camelCase splitting ("TfhTh1") depends on case by design
    assert harmonize_labels([variant]) == [expected]
