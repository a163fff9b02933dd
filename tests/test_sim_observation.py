"""The observation model: biopsy sampling, per-cell counts, lab labels and harmonization."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from immunegym.data.programs import DEFAULT_PROGRAMS
from immunegym.ontology import FINE_TYPES, default_ontology, harmonize_labels
from immunegym.sim.observation import (
    IGNORED_SIGNALS,
    LABS,
    MARKER_PANEL,
    STATE_PROGRAMS,
    TYPE_PROFILES,
    LabConvention,
    expression_profiles,
    sample_batch_effect,
    sample_biopsy,
    simulate_cells,
)

T = {t: i for i, t in enumerate(FINE_TYPES)}
G = {g: j for j, g in enumerate(MARKER_PANEL)}
LAB = LABS["atlas_zheng"]


def _even_counts(n: int = 100) -> np.ndarray:
    return np.full(len(FINE_TYPES), n, dtype=np.int64)


def _type_means(true_types: np.ndarray, x: sp.csr_matrix) -> np.ndarray:
    """Per-type mean of library-normalized expression, ``(n_types, n_genes)``; NaN rows for
    types without cells."""
    dense = x.toarray().astype(float)
    dense /= dense.sum(axis=1, keepdims=True)
    out = np.full((len(FINE_TYPES), dense.shape[1]), np.nan)
    for i in np.unique(true_types):
        out[i] = dense[true_types == i].mean(axis=0)
    return out


# ---------------------------------------------------------------------------- panel, profiles
def test_panel_covers_programs_without_duplicates() -> None:
    assert 80 <= len(MARKER_PANEL) <= 150
    assert len(set(MARKER_PANEL)) == len(MARKER_PANEL)
    missing = [g for genes in DEFAULT_PROGRAMS.values() for g in genes if g not in G]
    assert missing == []
    assert {"ACTB", "GAPDH", "PTPRC", "EPCAM"} <= set(MARKER_PANEL)


def test_profiles_are_normalized_and_read_only() -> None:
    assert TYPE_PROFILES.shape == (len(FINE_TYPES), len(MARKER_PANEL))
    assert np.all(TYPE_PROFILES > 0)
    np.testing.assert_allclose(TYPE_PROFILES.sum(axis=1), 1.0, atol=1e-12)
    with pytest.raises(ValueError):
        TYPE_PROFILES[0, 0] = 1.0


MARKERS = [
    ("malignant", "EPCAM"), ("cd8_memory", "CD8A"), ("cd8_effector", "CD8A"),
    ("cd8_tpex", "CD8A"), ("cd8_tex", "CD8A"), ("cd8_effector", "GZMH"),
    ("cd8_tpex", "SLAMF6"), ("cd8_tex", "HAVCR2"), ("cd4_helper", "CD40LG"),
    ("treg", "FOXP3"), ("nk", "KLRF1"), ("b_cell", "MS4A1"), ("plasma_cell", "JCHAIN"),
    ("cdc1", "CLEC9A"), ("dc_other", "CD1C"), ("monocyte", "FCN1"),
    ("macrophage_m1", "CXCL9"), ("macrophage_m2", "CD163"), ("mdsc", "ARG1"),
    ("neutrophil", "FCGR3B"), ("mast_cell", "TPSAB1"), ("fibroblast", "COL1A1"),
    ("endothelial", "PECAM1"),
]


@pytest.mark.parametrize(("cell_type", "gene"), MARKERS)
def test_marker_is_high_in_its_type(cell_type: str, gene: str) -> None:
    column = TYPE_PROFILES[:, G[gene]]
    others = np.delete(column, T[cell_type])
    assert column[T[cell_type]] > 3 * others.mean()


def test_profiles_encode_t_cell_states() -> None:
    p = TYPE_PROFILES
    assert p[T["cd8_tpex"], G["TCF7"]] > 10 * p[T["cd8_tex"], G["TCF7"]]
    assert (p[T["cd8_tex"], G["PDCD1"]] > p[T["cd8_tpex"], G["PDCD1"]]
            > 5 * p[T["cd8_memory"], G["PDCD1"]])
    for gene in ("HAVCR2", "CXCL13", "ENTPD1", "LAG3", "TOX"):
        assert p[T["cd8_tex"], G[gene]] > p[T["cd8_tpex"], G[gene]]
    assert p[T["malignant"], G["MKI67"]] > 10 * p[T["cd8_memory"], G["MKI67"]]
    for i in range(len(FINE_TYPES)):  # housekeeping everywhere
        assert p[i, G["ACTB"]] > 0.1


def test_state_programs_reference_panel_and_types() -> None:
    assert {"ifn_gamma", "proliferation", "tgf_beta"} <= set(STATE_PROGRAMS)
    assert "pd1_occupancy" in IGNORED_SIGNALS
    for program in STATE_PROGRAMS.values():
        assert set(program.types) <= set(FINE_TYPES)
        assert set(program.genes) <= set(MARKER_PANEL)
        assert len(program.log_fold) == len(program.genes)
        assert all(f > 0 for f in program.log_fold)


@pytest.mark.parametrize("signal", sorted(STATE_PROGRAMS))
def test_signal_raises_its_genes_only_in_its_types(signal: str) -> None:
    program = STATE_PROGRAMS[signal]
    base = expression_profiles()
    on = expression_profiles({signal: 1.0})
    rows = [T[t] for t in program.types]
    cols = [G[g] for g in program.genes]
    log_ratio = np.log(on / base)
    # Per-cell renormalization dilutes every gene of a responding type a little; keep that
    # below 0.6 in log space, so the program shows and identity markers survive.
    assert np.all(log_ratio[np.ix_(rows, cols)] > np.asarray(program.log_fold) - 0.6)
    assert np.all(log_ratio > -0.6)
    untouched = [i for i in range(len(FINE_TYPES)) if i not in rows]
    np.testing.assert_allclose(on[untouched], base[untouched])
    np.testing.assert_allclose(expression_profiles(), TYPE_PROFILES)


def test_ignored_and_invalid_signals() -> None:
    np.testing.assert_allclose(expression_profiles({"pd1_occupancy": 1.0}), TYPE_PROFILES)
    with pytest.raises(ValueError, match="signals: unknown signal 'tnf'"):
        expression_profiles({"tnf": 0.5})
    with pytest.raises(ValueError, match=r"signals\['ifn_gamma'\]: got 1.5"):
        expression_profiles({"ifn_gamma": 1.5})
    with pytest.raises(ValueError, match="batch_effect"):
        expression_profiles(batch_effect=np.zeros(3))


# ---------------------------------------------------------------------------- sample_biopsy
def test_sample_biopsy_reproducible_and_sums() -> None:
    comp = np.linspace(1, 2, len(FINE_TYPES))
    a = sample_biopsy(comp, 1000, np.random.default_rng(3))
    b = sample_biopsy(comp, 1000, np.random.default_rng(3))
    c = sample_biopsy(comp, 1000, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.int64 and a.shape == (len(FINE_TYPES),)
    assert a.sum() == 1000


def test_sample_biopsy_mean_matches_composition_and_zeros_stay_zero() -> None:
    rng = np.random.default_rng(0)
    comp = rng.random(len(FINE_TYPES))
    comp[[2, 7, 19]] = 0.0
    comp /= comp.sum()
    draws = np.stack([sample_biopsy(comp, 400, rng, concentration=50.0) for _ in range(1500)])
    assert np.all(draws[:, [2, 7, 19]] == 0)
    np.testing.assert_allclose(draws.mean(axis=0) / 400, comp, atol=0.005)
    # Site heterogeneity: lower concentration means more spread than a plain multinomial.
    spread = (draws / 400).std(axis=0)
    multinomial_sd = np.sqrt(comp * (1 - comp) / 400)
    present = comp > 0.02
    assert np.all(spread[present] > 1.3 * multinomial_sd[present])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"composition": np.ones(5)}, "composition: got shape"),
        ({"composition": -np.ones(20)}, "composition: got"),
        ({"composition": np.full(20, np.nan)}, "composition: got"),
        ({"composition": np.zeros(20)}, "composition: all fractions are zero"),
        ({"n_cells": 0}, "n_cells: got 0"),
        ({"concentration": 0.0}, "concentration: got 0.0"),
    ],
)
def test_sample_biopsy_rejects_bad_inputs(kwargs: dict, match: str) -> None:
    args = {"composition": np.ones(20), "n_cells": 10, "concentration": 100.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_biopsy(args["composition"], args["n_cells"], np.random.default_rng(0),
                      concentration=args["concentration"])


# ---------------------------------------------------------------------------- simulate_cells
def test_simulate_cells_shapes_and_reproducibility() -> None:
    counts = _even_counts(30)
    counts[5] = 0
    out1 = simulate_cells(counts, LAB, np.random.default_rng(1), signals={"ifn_gamma": 0.3})
    out2 = simulate_cells(counts, LAB, np.random.default_rng(1), signals={"ifn_gamma": 0.3})
    out3 = simulate_cells(counts, LAB, np.random.default_rng(2), signals={"ifn_gamma": 0.3})
    types, labels, x = out1
    n = int(counts.sum())
    assert types.shape == (n,) and len(labels) == n
    assert isinstance(x, sp.csr_matrix) and x.shape == (n, len(MARKER_PANEL))
    assert x.dtype == np.float32 and np.all(x.data == np.round(x.data)) and x.data.min() > 0
    np.testing.assert_array_equal(np.bincount(types, minlength=len(FINE_TYPES)), counts)
    assert set(labels) <= set(LAB.label_set)
    np.testing.assert_array_equal(types, out2[0])
    assert labels == out2[1]
    assert (x != out2[2]).nnz == 0
    assert (x != out3[2]).nnz > 0


def test_simulate_cells_empty_and_bad_counts() -> None:
    types, labels, x = simulate_cells(np.zeros(20, dtype=int), LAB, np.random.default_rng(0))
    assert types.shape == (0,) and labels == [] and x.shape == (0, len(MARKER_PANEL))
    with pytest.raises(ValueError, match="type_counts: got shape"):
        simulate_cells(np.ones(3), LAB, np.random.default_rng(0))
    with pytest.raises(ValueError, match="type_counts: got"):
        simulate_cells(np.full(20, 1.5), LAB, np.random.default_rng(0))


@pytest.mark.parametrize("lab_name", sorted(LABS))
def test_labels_follow_true_type_without_misannotation(lab_name: str) -> None:
    lab = dataclasses.replace(LABS[lab_name], misannotation_rate=0.0)
    types, labels, _ = simulate_cells(_even_counts(50), lab, np.random.default_rng(0))
    for t, label in zip(types, labels, strict=True):
        assert label in {lab_ for lab_, _ in lab.labels[FINE_TYPES[t]]}


def test_split_labels_follow_their_probabilities() -> None:
    lab = dataclasses.replace(LAB, misannotation_rate=0.0)
    counts = np.zeros(20, dtype=int)
    counts[T["cd8_tex"]] = 4000
    _, labels, _ = simulate_cells(counts, lab, np.random.default_rng(0))
    share = labels.count("CD8.c12.Tex.CXCL13") / len(labels)
    assert share == pytest.approx(0.7, abs=0.03)


def test_misannotation_rate_and_only_present_types() -> None:
    lab = dataclasses.replace(LABS["tme_fine"], misannotation_rate=0.3)  # labels are 1:1
    own = {lab_: t for t, choices in lab.labels.items() for lab_, _ in choices}
    types, labels, _ = simulate_cells(_even_counts(200), lab, np.random.default_rng(0))
    wrong = np.mean([own[lab_] != FINE_TYPES[t] for t, lab_ in zip(types, labels, strict=True)])
    assert wrong == pytest.approx(0.3, abs=0.03)
    counts = np.zeros(20, dtype=int)
    counts[[T["treg"], T["fibroblast"]]] = 300
    types, labels, _ = simulate_cells(counts, lab, np.random.default_rng(0))
    assert {own[lab_] for lab_ in labels} == {"treg", "fibroblast"}


def test_expression_tracks_profiles_and_library_size() -> None:
    lab = LABS["tme_fine"]
    types, _, x = simulate_cells(_even_counts(150), lab, np.random.default_rng(0))
    library = np.asarray(x.sum(axis=1)).ravel()
    assert library.mean() == pytest.approx(lab.library_size_mean, rel=0.1)
    assert library.std() / library.mean() == pytest.approx(lab.library_size_cv, abs=0.15)
    means = _type_means(types, x)
    for cell_type, gene in MARKERS:
        r = np.corrcoef(means[:, G[gene]], TYPE_PROFILES[:, G[gene]])[0, 1]
        assert r > 0.95, (cell_type, gene, r)
        column = means[:, G[gene]]
        assert column[T[cell_type]] > 2 * np.delete(column, T[cell_type]).mean()


def test_negative_binomial_dispersion() -> None:
    lab = dataclasses.replace(LAB, library_size_cv=0.0, dispersion=2.0)
    counts = np.zeros(20, dtype=int)
    counts[T["fibroblast"]] = 5000
    _, _, x = simulate_cells(counts, lab, np.random.default_rng(0))
    col = x[:, G["COL1A1"]].toarray().ravel()
    mu = lab.library_size_mean * TYPE_PROFILES[T["fibroblast"], G["COL1A1"]]
    assert col.mean() == pytest.approx(mu, rel=0.05)
    assert col.var() == pytest.approx(mu + mu**2 / 2.0, rel=0.15)


def test_ifn_gamma_raises_cxcl9_in_tumor_and_myeloid_cells() -> None:
    counts = np.zeros(20, dtype=int)
    for t in ("malignant", "macrophage_m2", "monocyte", "fibroblast"):
        counts[T[t]] = 400
    means = {}
    for level in (0.0, 1.0):
        types, _, x = simulate_cells(counts, LAB, np.random.default_rng(5),
                                     signals={"ifn_gamma": level})
        means[level] = _type_means(types, x)[:, G["CXCL9"]]
    for t in ("malignant", "macrophage_m2", "monocyte"):
        assert means[1.0][T[t]] > 3 * means[0.0][T[t]], t
    assert means[1.0][T["fibroblast"]] < 1.5 * means[0.0][T["fibroblast"]]


def test_batch_effect_shifts_gene_means() -> None:
    counts = np.zeros(20, dtype=int)
    counts[T["cd8_effector"]] = 1500
    batch = np.zeros(len(MARKER_PANEL))
    batch[G["CD8A"]] = 1.0
    batch[G["GZMB"]] = -1.0
    rng_seed = 7
    types, _, x0 = simulate_cells(counts, LAB, np.random.default_rng(rng_seed))
    _, _, x1 = simulate_cells(counts, LAB, np.random.default_rng(rng_seed), batch_effect=batch)
    m0, m1 = _type_means(types, x0), _type_means(types, x1)
    i = T["cd8_effector"]
    assert m1[i, G["CD8A"]] > 2.0 * m0[i, G["CD8A"]]
    assert m1[i, G["GZMB"]] < 0.5 * m0[i, G["GZMB"]]
    assert m1[i, G["ACTB"]] == pytest.approx(m0[i, G["ACTB"]], rel=0.1)


def test_sample_batch_effect() -> None:
    lab = LABS["clinical_panel"]
    a = sample_batch_effect(lab, np.random.default_rng(0))
    np.testing.assert_array_equal(a, sample_batch_effect(lab, np.random.default_rng(0)))
    assert a.shape == (len(MARKER_PANEL),)
    assert a.std() == pytest.approx(lab.batch_effect_sd, rel=0.25)
    zero = dataclasses.replace(lab, batch_effect_sd=0.0)
    assert np.all(sample_batch_effect(zero, np.random.default_rng(0)) == 0)


# ---------------------------------------------------------------------------- labs
@pytest.mark.parametrize("lab_name", sorted(LABS))
def test_lab_labels_harmonize_to_their_sources(lab_name: str) -> None:
    onto = default_ontology()
    lab = LABS[lab_name]
    labels = list(lab.label_set)
    for label, node in zip(labels, harmonize_labels(labels), strict=True):
        sources = lab.sources(label)
        assert node is not None, label
        assert node != onto.root, label
        # The node is a source type itself or a common ancestor of all the sources.
        assert all(onto.is_ancestor(node, s) for s in sources), (label, node, sources)
        if len(sources) == 1 and lab_name == "tme_fine":
            assert node == sources[0], (label, node)


def test_lab_label_examples() -> None:
    # A few readings worth pinning: merged labels land on the lowest common parent.
    expected = {
        ("atlas_zheng", "CD8.c14.Tex.TCF7"): "cd8_tpex",
        ("atlas_zheng", "CD8.c11.Tex.PDCD1"): "cd8_tex",
        ("atlas_zheng", "DCs"): "dendritic_cell",
        ("sade_feldman_style", "Monocytes/Macrophages"): "myeloid",
        ("sade_feldman_style", "Exhausted CD8+ T cells"): "cd8_exhausted",
        ("broad_immune", "T cells"): "t_cell",
        ("macrophage_split", "Macro_C1QC"): "macrophage",
        ("macrophage_split", "Macro_SPP1"): "macrophage_m2",
        ("clinical_panel", "B/Plasma"): "b_lineage",
        ("clinical_panel", "Stroma"): "stromal",
    }
    for (lab_name, label), node in expected.items():
        assert label in LABS[lab_name].label_set
        assert harmonize_labels([label]) == [node], label


def test_labs_differ_in_assay() -> None:
    labs = list(LABS.values())
    assert len(labs) == 6
    for field in ("library_size_mean", "batch_effect_sd", "misannotation_rate", "dispersion"):
        assert len({getattr(lab, field) for lab in labs}) == 6, field
    assert len({lab.label_set for lab in labs}) == 6


# ---------------------------------------------------------------------------- validation
def _labels(**overrides: tuple[tuple[str, float], ...]) -> dict:
    table = {t: ((t, 1.0),) for t in FINE_TYPES}
    table.update(overrides)
    return table


def test_lab_convention_validation() -> None:
    LabConvention("ok", _labels(treg=(("Treg", 0.5), ("Tregs", 0.5))))
    with pytest.raises(ValueError, match=r"labels\['treg'\]: probabilities sum to 0.9"):
        LabConvention("x", _labels(treg=(("Treg", 0.5), ("Tregs", 0.4))))
    table = _labels()
    del table["mast_cell"]
    with pytest.raises(ValueError, match=r"labels: .*no label for fine types \['mast_cell'\]"):
        LabConvention("x", table)
    with pytest.raises(ValueError, match=r"labels: .*unknown fine types \['pericyte'\]"):
        LabConvention("x", {**_labels(), "pericyte": (("Pericytes", 1.0),)})
    with pytest.raises(ValueError, match=r"labels\['nk'\]: probability of 'NK' is 0"):
        LabConvention("x", _labels(nk=(("NK", 0.0), ("NK cells", 1.0))))
    with pytest.raises(ValueError, match=r"misannotation_rate: got -0.1; expected .*\[0, 1\)"):
        LabConvention("x", _labels(), misannotation_rate=-0.1)
    with pytest.raises(ValueError, match="misannotation_rate: got 1.0"):
        LabConvention("x", _labels(), misannotation_rate=1.0)
    with pytest.raises(ValueError, match="library_size_mean: got 0"):
        LabConvention("x", _labels(), library_size_mean=0)
    with pytest.raises(ValueError, match="dispersion: got -1"):
        LabConvention("x", _labels(), dispersion=-1)
    with pytest.raises(ValueError, match="batch_effect_sd: got -0.2"):
        LabConvention("x", _labels(), batch_effect_sd=-0.2)
