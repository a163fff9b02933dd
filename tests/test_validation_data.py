"""Clear errors and no silent wrong answers at the ontology and data-layer boundaries."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pandas as pd
import pytest

from immunegym.data import (
    DataValidationError,
    PatientTrajectories,
    SampleDistributions,
    build_trajectories,
    from_counts_table,
    read_h5ad,
    sample_distributions,
    score_cells,
    setup_anndata,
)
from immunegym.ontology import (
    Harmonizer,
    default_ontology,
    harmonization_report,
    harmonize_labels,
    tree_wasserstein,
)
from immunegym.validation import ValidationError


# ----------------------------------------------------------------------------- negation
@pytest.mark.parametrize(("label", "node"), [
    ("PD1-negative CD8 T cells", "cd8_t"),   # not exhausted, but memory or effector
    ("PD-1 negative CD8 T cells", "cd8_t"),
    ("PD1 neg CD8", "cd8_t"),
    ("PD-1− CD8+ T cells", "cd8_t"),         # Unicode minus
    ("PD1lo CD8", "cd8_t"),
    ("CD8 T PD1 low", "cd8_t"),
    ("not exhausted CD8 T cells", "cd8_t"),
    ("CD8 T cells lacking PD-1", "cd8_t"),
    ("PD1hi CD8", "cd8_exhausted"),          # the positive counterpart still refines
    ("non-immune", "cell"),                  # malignant + stromal: no node of its own
    ("Non-immune cells", "cell"),
    ("non myeloid immune", "lymphoid"),      # immune = lymphoid + myeloid
    ("non-Treg CD4", "cd4_helper"),          # CD4 = helper + Treg
    ("TIM3-negative exhausted CD8 T", "cd8_tpex"),
    ("TCF7- exhausted CD8", "cd8_tex"),
    ("CD4-CD8- T cells", "t_cell"),          # double negative T cells
    ("CD4−CD8− T cells", "t_cell"),
    ("CD8-negative T cells", "t_cell"),      # DN T cells exist: not forced onto CD4
    ("CD4- CD8+ T cells", "cd8_t"),
    ("CD56dim NK", "nk"),                    # "dim" on a name keeps the type
    ("CD8-T cells", "cd8_t"),                # a hyphen inside a name is not a minus
    ("Non-classical monocytes", "monocyte"),  # a phrase, not a negation
])
def test_negation_is_read(label, node):
    assert harmonize_labels([label]) == [node]


def test_negation_never_maps_to_what_is_negated():
    out = harmonize_labels(["non-immune", "non-T cells", "not B cells", "non-malignant"])
    assert out[0] not in default_ontology().descendants("immune", include_self=True)
    assert out[1] != "t_cell" and out[2] != "b_cell" and out[3] != "malignant"


def test_self_contradicting_label_is_unmapped_and_strict_raises():
    report = harmonization_report(["CD3- CD8+"])
    assert report.nodes == [None] and report.matches[0].rule == "unmapped"
    assert "!cd3" in report.matches[0].evidence
    with pytest.raises(ValidationError, match=r"labels: 1 label\(s\) match no ontology node"):
        harmonize_labels(["CD3- CD8+"], strict=True)


def test_negation_rule_and_evidence():
    match = Harmonizer().match("non-Treg CD4")
    assert match.rule == "negation" and "!treg" in match.evidence
    assert 0 < match.confidence < 1


# ----------------------------------------------------------------------------- label inputs
def test_bytes_are_decoded():
    assert harmonize_labels([b"CD8 T cells", "CD8 T cells", np.bytes_(b"B cells")]) == [
        "cd8_t", "cd8_t", "b_cell"]
    report = harmonization_report([b"CD8 T cells", "CD8 T cells"])
    assert len(report.matches) == 1 and report.counts.tolist() == [2]


def test_undecodable_bytes_name_the_index():
    with pytest.raises(ValidationError, match=r"labels\[1\]: got b'\\xff\\xfe'; expected UTF-8"):
        harmonize_labels(["B cells", b"\xff\xfe"])


@pytest.mark.parametrize(("labels", "pattern"), [
    ([{"a": 1}], r"labels\[0\]: got \{'a': 1\}; .*not dict"),
    (["B cells", 3], r"labels\[1\]: got 3; .*not int"),
    (["B cells", ["x"]], r"labels\[1\]: got \['x'\]; .*not list"),
    ("CD8 T cells", r"labels: got 'CD8 T cells'; expected a sequence of labels, not a single"),
    ({"a": "b"}, r"labels: got .*expected a sequence of labels"),
    (np.array([["a"]]), r"labels: .*expected a 1-D sequence"),
])
def test_bad_labels_are_named(labels, pattern):
    with pytest.raises(ValidationError, match=pattern):
        harmonize_labels(labels)
    with pytest.raises(ValidationError, match=pattern):
        harmonization_report(labels)


def test_missing_labels_are_missing():
    report = harmonization_report(["B cells", None, math.nan, pd.NA, ""])
    assert report.nodes == ["b_cell", None, None, None, None]
    assert report.n_missing == 3


def test_unknown_convention_lists_the_known_ones():
    for call in (harmonize_labels, harmonization_report):
        with pytest.raises(ValidationError,
                           match=r"convention: got 'sade'; expected one of \['sade_feldman"):
            call(["G1"], convention="sade")


def test_bad_options_of_the_harmonizer():
    with pytest.raises(ValidationError, match="strict: got 'no'"):
        harmonize_labels(["B cells"], strict="no")
    with pytest.raises(ValidationError, match="aliases: got"):
        harmonize_labels(["B cells"], aliases=["k7"])
    with pytest.raises(ValidationError, match=r"aliases\['k7'\]: got 3"):
        harmonize_labels(["B cells"], aliases={"k7": 3})
    with pytest.raises(ValidationError, match="ontology: got"):
        Harmonizer(ontology="default")


def test_reprs_are_short():
    report = harmonization_report(["B cells", "Doublets", "Cluster 7", None] * 1000)
    text = repr(report)
    assert text.startswith("HarmonizationReport(4000 labels, 3 distinct")
    assert "unmapped=1" in text and "\n" not in text and len(text) < 200
    assert repr(Harmonizer()).startswith("Harmonizer(convention=None")


# ----------------------------------------------------------------------------- ontology tree
def test_unknown_level_and_bad_priors():
    onto = default_ontology()
    with pytest.raises(ValidationError, match=r"level: got 'majr'.*did you mean 'major'"):
        onto.level("majr")
    with pytest.raises(ValidationError, match=r"level\[0\]: got 'cd9'"):
        onto.level(["cd9"])
    n = len(onto.leaves)
    for prior, pattern in [
        ({"cd8_tex": -1.0}, r"prior\['cd8_tex'\]: got -1.0"),
        ({"cd8_tex": math.nan}, r"prior\['cd8_tex'\]: got nan"),
        ([1.0] * (n - 1), rf"prior: got '<{n - 1} weights>'"),
        ("magic", r"prior: got 'magic'"),
    ]:
        with pytest.raises(ValidationError, match=pattern):
            onto.check_prior(prior)
    weights = onto.check_prior(np.ones(n))
    assert set(weights) == set(onto.leaves)


def test_tree_wasserstein_accepts_lists_and_names_bad_input():
    n = len(default_ontology().leaves)
    assert float(tree_wasserstein([1.0] * n, [1.0] * n)) == pytest.approx(0.0)
    with pytest.raises(ValidationError, match=r"p: got shape \(3,\)"):
        tree_wasserstein([1.0, 2.0, 3.0], [1.0] * n)
    with pytest.raises(ValidationError, match="q: got negative or non-finite"):
        tree_wasserstein([1.0] * n, [math.nan] * n)


# ----------------------------------------------------------------------------- schema
def test_setup_anndata_checks_keys_before_columns(cells):
    with pytest.raises(DataValidationError, match=r"patient_key: got None; expected the name"):
        setup_anndata(cells, patient_key=None)
    with pytest.raises(DataValidationError, match=r"sample_key: got 3 \(int\)"):
        setup_anndata(cells, sample_key=3)
    with pytest.raises(DataValidationError,
                       match=r"patient_key='patient_id'.*did you mean 'patient'"):
        setup_anndata(cells, patient_key="patient_id")
    with pytest.raises(DataValidationError, match=r"adata: got DataFrame"):
        setup_anndata(cells.obs)
    with pytest.raises(ValidationError, match=r"convention: got 'sf'"):
        setup_anndata(cells, label_convention="sf")


@pytest.mark.parametrize(("value", "pattern"), [
    (5000.0, r"got 5000.0 for cell 'cell0'.*were the times given in hours"),
    (math.inf, r"got inf for cell 'cell0'"),
])
def test_absurd_times_are_refused(cells, value, pattern):
    cells.obs["day"] = cells.obs["day"].astype(float)
    cells.obs.loc[cells.obs["sample"] == "p1_d0", "day"] = value
    with pytest.raises(DataValidationError, match="time_key='day': " + pattern):
        setup_anndata(cells, time_key="day")


def test_count_table_times_are_checked():
    table = pd.DataFrame({"sample": ["s1", "s2"], "patient": ["a", "a"], "day": [0.0, -3.0],
                          "B cells": [3, 4]})
    with pytest.raises(DataValidationError, match=r"day: got -3.0 for sample 's2'"):
        from_counts_table(table, ["B cells"], time_col="day")
    table["day"] = [0.0, 20_000.0]
    with pytest.raises(DataValidationError, match=r"day: got 20000.0 .*10 years"):
        from_counts_table(table, ["B cells"], time_col="day")
    with pytest.raises(ValidationError, match=r"count_columns: got 'B cells'"):
        from_counts_table(table, "B cells")


def test_read_h5ad_checks_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"path: got .*no such file"):
        read_h5ad(tmp_path / "absent.h5ad")
    with pytest.raises(DataValidationError, match="path: got .*not a directory"):
        read_h5ad(tmp_path)
    with pytest.raises(DataValidationError, match="path: got 3; expected a path"):
        read_h5ad(3)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as handle:
        handle["x"] = np.arange(3)
    with pytest.warns(Warning), pytest.raises(DataValidationError,
                                              match="path: got .*could not be read as one"):
        read_h5ad(foreign)


# ----------------------------------------------------------------------------- distributions
def test_sample_distributions_arguments(registered, cells):
    with pytest.raises(DataValidationError, match="adata: got DataFrame"):
        sample_distributions(registered.obs)
    with pytest.raises(ValidationError, match="strict: got 1"):
        sample_distributions(registered, strict=1)
    with pytest.raises(ValidationError, match=r"programs\['x'\]: got 'GZMB'"):
        sample_distributions(registered, programs={"x": "GZMB"})


def test_non_text_labels_in_a_registered_column_name_the_key(registered):
    registered.obs["cell_type"] = registered.obs["cell_type"].astype(object)
    registered.obs.iloc[2, registered.obs.columns.get_loc("cell_type")] = 7
    with pytest.raises(DataValidationError, match=r"label_key='cell_type': labels\[\d+\]: got 7"):
        sample_distributions(registered)


def test_levels_masks_and_reprs(registered):
    dist = sample_distributions(registered)
    with pytest.raises(ValidationError, match=r"level: got 'mayor'"):
        dist.fractions_at("mayor")
    with pytest.raises(ValidationError, match=r"mask: got .*shape \(3,\)"):
        dist.subset([True, False, True])
    text = repr(dist)
    assert text.startswith("SampleDistributions(7 samples of 3 patients") and "\n" not in text
    traj = build_trajectories(dist)
    assert repr(traj).startswith("PatientTrajectories(3 patients, 7 samples")


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"level": "tiny"}, r"level: got 'tiny'"),
    ({"split_prior": {"cd8_tex": -1.0}}, r"split_prior\['cd8_tex'\]: got -1.0"),
    ({"split_prior": {"cd8_tex": math.nan}}, r"split_prior\['cd8_tex'\]: got nan"),
    ({"split_prior": [1.0, 2.0]}, r"split_prior: got '<2 weights>'"),
    ({"split_prior": "observd"}, r"split_prior: got 'observd'.*did you mean 'observed'"),
])
def test_build_trajectories_arguments(registered, kwargs, pattern):
    dist = sample_distributions(registered)
    with pytest.raises(ValidationError, match=pattern):
        build_trajectories(dist, **kwargs)


def test_build_trajectories_refuses_other_objects():
    with pytest.raises(ValidationError, match="distributions: got 'DataFrame'"):
        build_trajectories(pd.DataFrame())


def test_save_and_load_paths(registered, tmp_path):
    dist = sample_distributions(registered)
    traj = build_trajectories(dist)
    with pytest.raises(ValidationError, match="path: got .*this path is a directory"):
        traj.save(tmp_path)
    with pytest.raises(FileNotFoundError, match="path: got .*no such file"):
        PatientTrajectories.load(tmp_path / "absent.safetensors")
    with pytest.raises(ValidationError, match="path: got .*not a directory"):
        SampleDistributions.load(tmp_path)
    back = PatientTrajectories.load(traj.save(tmp_path / "t.safetensors"))
    assert back.patients == traj.patients


def test_score_cells_checks_shapes():
    with pytest.raises(ValidationError, match=r"var_names: got '<2 names>'"):
        score_cells(np.ones((3, 4)), ["A", "B"])
    with pytest.raises(ValidationError, match="x: got '<matrix with non-finite values>'"):
        score_cells(np.full((2, 2), np.nan), ["A", "B"])
