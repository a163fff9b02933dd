"""Vocabulary for label harmonization: phrases, tokens, abbreviations and marker genes.

Labels are matched word by word, not as whole strings, so conventions nobody listed here
still resolve when they are built from the same words ("CD8_Tex_CXCL13", "Exhausted CD8 T",
"TAM SPP1+"). Three tables do the work:

``PHRASES``
    Multi-word expressions rewritten to one canonical token before splitting, e.g.
    "natural killer" -> ``nk``, "PMN-MDSC" -> ``mdsc``, "progenitor exhausted" -> ``tpex``.
``NAMES``
    Tokens that *name* a cell type or state. A name may point at several nodes when the word
    alone does not say which ("naive" is a CD8 memory-like or a CD4 helper state); the
    harmonizer then keeps the candidates compatible with the rest of the label.
``MARKERS``
    Marker genes and weak qualifiers. A marker only chooses among the children of a node
    the label already reached (``SPP1`` picks M2-like among macrophages) and never moves a
    label into another lineage; with a strength to break ties (``TCF7`` on an exhausted
    CD8 cluster means progenitor-exhausted more strongly than ``Tex`` means terminal).

Conventions that were checked while building this table: Sade-Feldman 2018 cluster names,
Zheng 2021 pan-cancer T-cell clusters, Cheng 2021 pan-cancer myeloid clusters, CellTypist
immune labels, Yost 2019 BCC labels and common coarse atlas labels.
"""

from __future__ import annotations

import re

# (pattern, replacement). Applied in order to the lower-cased label with separators kept,
# so patterns can span "-", "_", "." and spaces ("[\W_]*" matches any run of them).
_SEP = r"[\W_]*"
PHRASES: tuple[tuple[str, str], ...] = (
    # gene/protein spellings with a hyphen that would otherwise split
    # (no spaces added: \b already separates them, and "PD-1-" must keep its trailing minus)
    (rf"\bpd{_SEP}1\b", "pdcd1"),
    (rf"\bpd{_SEP}l1\b", "cd274"),
    (rf"\btim{_SEP}3\b", "havcr2"),
    (rf"\btcf{_SEP}1\b", "tcf1"),
    (rf"\bil{_SEP}7r\b", "il7r"),
    (rf"\bhla{_SEP}dr\b", "hladr"),
    # MDSC subsets before "pmn" / "mono" can claim them
    (rf"\b(?:pmn|g|m|e|poly\w*|mono\w*|granulocytic|early){_SEP}mdscs?\b", " mdsc "),
    (rf"\bmyeloid{_SEP}derived{_SEP}suppressor\b", " mdsc "),
    # exhaustion subsets
    (rf"\b(?:progenitor|precursor|stem{_SEP}like|tcf1{_SEP}\+?){_SEP}exhausted\b", " tpex "),
    (rf"\bterminal(?:ly)?{_SEP}(?:differentiated{_SEP})?exhausted\b", " texterm "),
    # T-cell subsets written out
    (rf"\bregulatory{_SEP}t\b", " treg "),
    (rf"\b(?:t{_SEP}helper|helper{_SEP}t)\b", " th "),
    (rf"\bfollicular{_SEP}(?:helper|th)\b", " tfh "),
    (rf"\bcytotoxic{_SEP}t\b", " ctl "),
    (rf"\beffector{_SEP}memory\b", " tem "),
    (rf"\bcentral{_SEP}memory\b", " tcm "),
    (rf"\b(?:tissue{_SEP})?resident{_SEP}memory\b", " trm "),
    (rf"\bgamma{_SEP}delta\b|γδ", " gdt "),
    (rf"\bnatural{_SEP}killer{_SEP}t\b", " nkt "),
    (rf"\bnatural{_SEP}killer\b", " nk "),
    (rf"\binnate{_SEP}lymphoid\b", " ilc "),
    (rf"\bgerminal{_SEP}cent(?:er|re)\b", " gc "),
    # myeloid and stromal phrases
    (rf"\bplasmacytoid{_SEP}(?:dendritic|dc)\b", " pdc "),
    (rf"\btumou?r{_SEP}associated{_SEP}macrophages?\b", " tam "),
    (rf"\bcancer{_SEP}associated{_SEP}fibroblasts?\b", " caf "),
    (rf"\bm1{_SEP}like\b|\bclassically{_SEP}activated\b", " m1 "),
    (rf"\bm2{_SEP}like\b|\balternatively{_SEP}activated\b", " m2 "),
    (rf"\bsmooth{_SEP}muscle\b", " smc "),
    # qualifiers
    (rf"\blow{_SEP}quality\b|\blow{_SEP}q\b", " lowq "),
    (rf"\bempty{_SEP}droplets?\b", " lowq "),
    (rf"\bcell{_SEP}cycle\b", " cycling "),
    (rf"\bheat{_SEP}shock\b", " hs "),
    (rf"\bnon{_SEP}classical\b", " nonclassical "),
    (rf"\bdouble{_SEP}negative\b", " dn "),
    (rf"\bnot{_SEP}applicable\b|\bn{_SEP}a\b", " na "),
)
COMPILED_PHRASES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r) for p, r in PHRASES
)

# A marker written with a trailing minus ("CD4-", "CD8 neg") says the cells lack it. Kept for
# callers that want the old "drop negative markers" view; the harmonizer reads negation
# itself (see :data:`NEGATION_PREFIXES` and the qualifier tables below).
NEGATIVE_MARKER = re.compile(r"\b[a-z]*\d[a-z0-9]*(?:-|\s?neg(?:ative)?)(?=[^a-z0-9]|$|cd\d)")

# Dashes and superscript signs that labs paste from papers: read as ASCII "-" / "+".
DASH_TRANSLATION: dict[int, str] = {
    ord(c): "-" for c in "\u2212\u2010\u2011\u2012\u2013\ufe63\uff0d\u207b\u208b"
} | {ord("\u207a"): "+", ord("\u208a"): "+"}

# Words that negate the vocabulary word after them: "non-immune", "not exhausted",
# "lacking CD8", "without PD-1". "nonX" written as one word is read the same way.
NEGATION_PREFIXES: frozenset[str] = frozenset({"non", "not", "lacking", "lacks", "without"})
# Qualifiers after a vocabulary word ("PD1 negative", "CD8 neg", "TIM3lo", "PD-1 hi").
NEGATIVE_QUALIFIERS: frozenset[str] = frozenset({"negative", "neg"})
# "low" says the cells lack a *marker* (a gene that only chooses among children); on a name
# ("CD56dim NK", "CD14lo monocytes") the cell type is still the one named.
LOW_QUALIFIERS: frozenset[str] = frozenset({"lo", "low", "dim"})
POSITIVE_QUALIFIERS: frozenset[str] = frozenset({"positive", "pos", "hi", "high", "bright"})
# Qualifiers glued to a word ("PD1hi", "CD56dim", "CD45neg") are split off it when the rest is
# a vocabulary word.
GLUED_QUALIFIER = re.compile(r"\b([a-z][a-z0-9]*?)(high|hi|low|lo|dim|bright|pos|neg)\b")

# Cluster ids and numbering carry no meaning on their own ("c12", "G3", "07").
CLUSTER_ID = re.compile(r"^[a-z]?\d+[a-z]?$")


def _n(*nodes: str) -> tuple[str, ...]:
    return nodes


# Token -> candidate nodes it names. Plurals are found by stripping a trailing "s".
NAMES: dict[str, tuple[str, ...]] = {
    # compartments and lineages
    "cell": (), "cells": (),  # filler
    "immune": _n("immune"), "leukocyte": _n("immune"), "leucocyte": _n("immune"),
    "cd45": _n("immune"), "ptprc": _n("immune"), "hematopoietic": _n("immune"),
    "lymphocyte": _n("lymphoid"), "lymphoid": _n("lymphoid"), "lympho": _n("lymphoid"),
    "lymph": _n("lymphoid"), "til": _n("lymphoid"), "ilc": _n("lymphoid"),
    "ilc1": _n("lymphoid"), "ilc2": _n("lymphoid"), "ilc3": _n("lymphoid"),
    "myeloid": _n("myeloid"), "myelo": _n("myeloid"), "granulocyte": _n("myeloid"),
    "myelocyte": _n("myeloid"), "promyelocyte": _n("myeloid"), "phagocyte": _n("myeloid"),
    "stromal": _n("stromal"), "stroma": _n("stromal"), "mesenchymal": _n("stromal"),
    "pericyte": _n("stromal"), "smc": _n("stromal"), "mural": _n("stromal"),
    # malignant
    "malignant": _n("malignant"), "tumor": _n("malignant"), "tumour": _n("malignant"),
    "cancer": _n("malignant"), "neoplastic": _n("malignant"), "carcinoma": _n("malignant"),
    "melanoma": _n("malignant"), "cnv": _n("malignant"),
    "aneuploid": _n("malignant"),
    # cells that exist in tumors but have no node: counted at the root
    "epithelial": _n("cell"), "epithelium": _n("cell"), "epi": _n("cell"),
    "keratinocyte": _n("cell"), "melanocyte": _n("cell"), "hepatocyte": _n("cell"),
    "erythrocyte": _n("cell"), "rbc": _n("cell"), "erythroid": _n("cell"),
    "platelet": _n("cell"), "megakaryocyte": _n("cell"), "hsc": _n("cell"), "mpp": _n("cell"),
    "adipocyte": _n("cell"), "neuron": _n("cell"), "glia": _n("cell"), "schwann": _n("cell"),
    "alveolar": (),  # "alveolar macrophage": the macrophage token decides
    # T cells
    "t": _n("t_cell"), "tcell": _n("t_cell"), "tcells": _n("t_cell"), "cd3": _n("t_cell"),
    "cd3d": _n("t_cell"), "cd3e": _n("t_cell"), "thymocyte": _n("t_cell"),
    "gdt": _n("t_cell"), "tgd": _n("t_cell"), "mait": _n("t_cell"), "nkt": _n("t_cell"),
    "dn": _n("t_cell"),
    "cd8": _n("cd8_t"), "cd8a": _n("cd8_t"), "cd8b": _n("cd8_t"), "ctl": _n("cd8_t"),
    "cd8t": _n("cd8_t"),
    "cd4": _n("cd4_t"), "cd4t": _n("cd4_t"),
    "treg": _n("treg"), "foxp3": _n("treg"), "regulatory": _n("treg"),
    "th": _n("cd4_helper"), "th1": _n("cd4_helper"), "th2": _n("cd4_helper"),
    "th9": _n("cd4_helper"), "th17": _n("cd4_helper"), "th22": _n("cd4_helper"),
    "tfh": _n("cd4_helper"), "tph": _n("cd4_helper"), "helper": _n("cd4_helper"),
    "tconv": _n("cd4_helper"), "conv": _n("cd4_helper"), "cd4conv": _n("cd4_helper"),
    # T-cell states: apply to CD8 or CD4 depending on the rest of the label
    "naive": _n("cd8_memory", "cd4_helper"), "tn": _n("cd8_memory", "cd4_helper"),
    "memory": _n("cd8_memory", "cd4_helper"), "mem": _n("cd8_memory", "cd4_helper"),
    "tm": _n("cd8_memory", "cd4_helper"), "tcm": _n("cd8_memory", "cd4_helper"),
    "trm": _n("cd8_memory", "cd4_helper"), "tscm": _n("cd8_memory", "cd4_helper"),
    "effector": _n("cd8_effector", "cd4_helper"), "eff": _n("cd8_effector", "cd4_helper"),
    "tem": _n("cd8_effector", "cd4_helper"), "temra": _n("cd8_effector", "cd4_helper"),
    "te": _n("cd8_effector", "cd4_helper"), "teff": _n("cd8_effector", "cd4_helper"),
    "act": _n("cd8_effector", "cd4_helper"), "activated": _n("cd8_effector", "cd4_helper"),
    # Cytotoxic lymphocytes are CD8 effectors or NK cells ("cytotoxic T" is caught as ctl).
    "cytotoxic": _n("cd8_effector", "nk"), "cytotoxicity": _n("cd8_effector", "nk"),
    "tk": _n("cd8_effector"),  # Zheng 2021 "Tk": killer-like CD8
    # Exhaustion names the exhausted CD8 branch (the TIME convention: exhausted T cells in
    # tumors are CD8 unless CD4 is named, and then nothing more specific is implied).
    "exhausted": _n("cd8_exhausted"), "exhaustion": _n("cd8_exhausted"),
    "exh": _n("cd8_exhausted"), "ex": _n("cd8_exhausted"), "tex": _n("cd8_exhausted"),
    "dysfunctional": _n("cd8_exhausted"),
    "tpex": _n("cd8_tpex"), "tpe": _n("cd8_tpex"), "progenitor": _n("cd8_tpex"),
    "texprog": _n("cd8_tpex"), "texterm": _n("cd8_tex"),
    # NK
    "nk": _n("nk"), "nkcell": _n("nk"), "ncam1": _n("nk"), "cd56": _n("nk"),
    # B lineage
    "b": _n("b_cell"), "bcell": _n("b_cell"), "bcells": _n("b_cell"), "cd19": _n("b_cell"),
    "ms4a1": _n("b_cell"), "cd20": _n("b_cell"), "gc": _n("b_cell"),
    "plasma": _n("plasma_cell"), "plasmablast": _n("plasma_cell"),
    "jchain": _n("plasma_cell"), "mzb1": _n("plasma_cell"), "antibody": _n("plasma_cell"),
    "lineage": (),
    # dendritic cells
    "dc": _n("dendritic_cell"), "dendritic": _n("dendritic_cell"),
    "cdc1": _n("cdc1"), "dc1": _n("cdc1"), "clec9a": _n("cdc1"), "xcr1": _n("cdc1"),
    "cd141": _n("cdc1"),
    "cdc2": _n("dc_other"), "dc2": _n("dc_other"), "cdc3": _n("dc_other"),
    "dc3": _n("dc_other"), "pdc": _n("dc_other"), "mregdc": _n("dc_other"),
    "migratory": _n("dc_other"), "cd1c": _n("dc_other"), "lilra4": _n("dc_other"),
    "clec4c": _n("dc_other"), "langerhans": _n("dc_other"), "modc": _n("dc_other"),
    # monocytes and macrophages
    "monocyte": _n("monocyte"), "mono": _n("monocyte"), "monolike": _n("monocyte"),
    "cd14": _n("monocyte"), "classical": _n("monocyte"), "nonclassical": _n("monocyte"),
    "macrophage": _n("macrophage"), "macro": _n("macrophage"), "mac": _n("macrophage"),
    "mph": _n("macrophage"), "tam": _n("macrophage"),
    "kupffer": _n("macrophage"), "microglia": _n("macrophage"), "histiocyte": _n("macrophage"),
    "cd68": _n("macrophage"),
    "m1": _n("macrophage_m1"), "m2": _n("macrophage_m2"),
    # other myeloid
    "mdsc": _n("mdsc"),
    "neutrophil": _n("neutrophil"), "neu": _n("neutrophil"), "neut": _n("neutrophil"),
    "pmn": _n("neutrophil"), "tan": _n("neutrophil"), "csf3r": _n("neutrophil"),
    "mast": _n("mast_cell"), "tpsab1": _n("mast_cell"), "cpa3": _n("mast_cell"),
    "basophil": _n("myeloid"), "eosinophil": _n("myeloid"),
    # stroma
    "fibroblast": _n("fibroblast"), "fibro": _n("fibroblast"), "fib": _n("fibroblast"),
    "caf": _n("fibroblast"), "myofibroblast": _n("fibroblast"), "mycaf": _n("fibroblast"),
    "icaf": _n("fibroblast"), "apcaf": _n("fibroblast"), "col1a1": _n("fibroblast"),
    "dcn": _n("fibroblast"),
    "endothelial": _n("endothelial"), "endo": _n("endothelial"), "ec": _n("endothelial"),
    "endothelium": _n("endothelial"), "lec": _n("endothelial"), "vec": _n("endothelial"),
    "pecam1": _n("endothelial"), "vwf": _n("endothelial"), "cdh5": _n("endothelial"),
}

# Token -> ((node, strength), ...). A marker only decides between a node's children.
MARKERS: dict[str, tuple[tuple[str, int], ...]] = {
    # exhaustion: on CD8 reach the exhausted branch, then lean terminal
    "pdcd1": (("cd8_exhausted", 1),), "tox": (("cd8_exhausted", 1),),
    "lag3": (("cd8_exhausted", 1),), "tigit": (("cd8_exhausted", 1),),
    "ctla4": (("cd8_exhausted", 1),),
    "havcr2": (("cd8_exhausted", 1), ("cd8_tex", 1)),
    "cxcl13": (("cd8_exhausted", 1), ("cd8_tex", 1)),
    "entpd1": (("cd8_exhausted", 1), ("cd8_tex", 1)),
    "cd39": (("cd8_exhausted", 1), ("cd8_tex", 1)),
    "layn": (("cd8_exhausted", 1), ("cd8_tex", 1)),
    "terminal": (("cd8_tex", 2),), "tex": (("cd8_tex", 1),),
    # progenitor/stem-like: TCF7 means Tpex inside the exhausted branch, memory outside it
    "tcf7": (("cd8_tpex", 2), ("cd8_memory", 1)),
    "tcf1": (("cd8_tpex", 2), ("cd8_memory", 1)),
    "slamf6": (("cd8_tpex", 2),), "stem": (("cd8_tpex", 1), ("cd8_memory", 1)),
    "precursor": (("cd8_tpex", 2),),
    # memory / naive vs effector inside CD8
    "il7r": (("cd8_memory", 1),), "sell": (("cd8_memory", 1),),
    "ccr7": (("cd8_memory", 1),), "lef1": (("cd8_memory", 1),),
    "znf683": (("cd8_memory", 1),), "itgae": (("cd8_memory", 1),),
    "gzmb": (("cd8_effector", 1),), "gzmk": (("cd8_effector", 1),),
    "gzma": (("cd8_effector", 1),), "gzmh": (("cd8_effector", 1),),
    "prf1": (("cd8_effector", 1),), "nkg7": (("cd8_effector", 1),),
    "cx3cr1": (("cd8_effector", 1),), "klrg1": (("cd8_effector", 1),),
    "ifng": (("cd8_effector", 1),),
    # CD4
    "il2ra": (("treg", 1),), "cd25": (("treg", 1),), "rtkn2": (("treg", 1),),
    "ikzf2": (("treg", 1),),
    "cxcr5": (("cd4_helper", 1),), "il17a": (("cd4_helper", 1),),
    "il21": (("cd4_helper", 1),), "cd40lg": (("cd4_helper", 1),),
    # macrophage polarization (TAMs are a continuum; these are the conventional poles)
    "il1b": (("macrophage_m1", 1),), "cxcl9": (("macrophage_m1", 1),),
    "cxcl10": (("macrophage_m1", 1),), "nos2": (("macrophage_m1", 1),),
    "inhba": (("macrophage_m1", 1),), "nlrp3": (("macrophage_m1", 1),),
    "tnf": (("macrophage_m1", 1),), "cd80": (("macrophage_m1", 1),),
    "inflammatory": (("macrophage_m1", 1),),
    "cd163": (("macrophage_m2", 1),), "mrc1": (("macrophage_m2", 1),),
    "cd206": (("macrophage_m2", 1),), "spp1": (("macrophage_m2", 1),),
    "trem2": (("macrophage_m2", 1),), "lyve1": (("macrophage_m2", 1),),
    "folr2": (("macrophage_m2", 1),), "f13a1": (("macrophage_m2", 1),),
    "selenop": (("macrophage_m2", 1),), "stab1": (("macrophage_m2", 1),),
    "apoe": (("macrophage_m2", 1),), "il10": (("macrophage_m2", 1),),
    # dendritic cells
    "lamp3": (("dc_other", 1),), "ccr7dc": (("dc_other", 1),), "fcer1a": (("dc_other", 1),),
    "clec10a": (("dc_other", 1),), "batf3": (("cdc1", 1),),
    # B lineage
    "igha": (("plasma_cell", 1),), "ighg": (("plasma_cell", 1),), "igg": (("plasma_cell", 1),),
    "xbp1": (("plasma_cell", 1),), "cd79a": (("b_cell", 1),), "cd79b": (("b_cell", 1),),
    # stroma
    "acta2": (("fibroblast", 1),), "pdgfra": (("fibroblast", 1),),
    "pdgfrb": (("fibroblast", 1),), "fap": (("fibroblast", 1),),
    "col1a2": (("fibroblast", 1),),
    "kit": (("mast_cell", 1),), "tpsb2": (("mast_cell", 1),),
    "s100a8": (("neutrophil", 1),), "fcgr3b": (("neutrophil", 1),),
    "fcgr3a": (("nk", 1),), "cd16": (("nk", 1),),
}

# Junk that means "do not count this cell", whatever else the label says.
STRONG_JUNK: frozenset[str] = frozenset({
    "doublet", "doublets", "multiplet", "multiplets", "lowq", "debris", "dying", "dead",
    "damaged", "contaminant", "contamination", "artifact", "artefact", "mito", "mt",
    "apoptotic", "filtered", "exclude", "excluded", "discard", "removed",
})
# Words that mean "no call was made"; junk only when the label says nothing else.
WEAK_JUNK: frozenset[str] = frozenset({
    "unknown", "unassigned", "unclassified", "undetermined", "unidentified", "ambiguous",
    "unresolved", "other", "others", "misc", "na", "nan", "none", "null", "undefined",
    "unlabeled", "unlabelled", "not", "low", "quality",
})
