"""The cohort engine and the default suite."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from immunegym.data import build_trajectories, get_fields, sample_distributions, validate_anndata
from immunegym.ontology import FINE_TYPES, default_ontology, harmonize_labels
from immunegym.sim import DEFAULT_SUITE, CohortSpec, HiddenTruth, make_cohort, simulate_cohort
from immunegym.sim.suite import make_suite, suite_specs


@pytest.fixture(scope="module")
def cohort():
    spec = CohortSpec("tiny", "melanoma", ("anti_pd1", "none"), "atlas_zheng", n_patients=8,
                      seed=3, horizon_days=150, cells_per_biopsy=(200, 600))
    return simulate_cohort(spec)


def test_anndata_looks_like_a_lab_delivery(cohort):
    adata = cohort.adata
    validate_anndata(adata, get_fields(adata))
    assert sp.issparse(adata.X)
    assert 50 <= adata.n_vars <= 200
    x = adata.X.toarray()
    assert x.min() >= 0 and np.allclose(x, np.round(x))
    per_patient = adata.obs.groupby("patient_id", observed=True)["sample_id"].nunique()
    alive = cohort.adata.uns["patients"].set_index("patient_id")["death_day"] < 0
    assert per_patient[alive[per_patient.index]].between(2, 6).all()
    cells = adata.obs.groupby("sample_id", observed=True).size()
    assert cells.between(150, 700).all()  # multinomial totals within the drawn range
    for key in ("patients", "imaging", "therapy_cycles", "cohort"):
        assert key in adata.uns
    assert set(adata.obs["lab"].unique()) == {"atlas_zheng"}


def test_hidden_truth_stays_out_of_the_anndata(cohort):
    adata = cohort.adata
    forbidden = {"phenotype", "antigenicity", "composition", "true_type", "growth"}
    assert not forbidden & set(adata.obs.columns)
    assert not forbidden & set(adata.uns)
    assert not forbidden & set(adata.uns["patients"].columns)
    truth = cohort.truth
    assert truth.composition.shape == (151, 8, len(FINE_TYPES))
    assert np.allclose(truth.composition.sum(-1), 1.0, atol=1e-5)
    assert "antigenicity" in truth.parameters.columns


def test_lab_labels_harmonize_onto_the_ontology(cohort):
    nodes = harmonize_labels(cohort.adata.obs["cell_type"].astype(str).tolist())
    assert all(node is not None for node in nodes)
    onto = default_ontology()
    labels = cohort.adata.obs["cell_type"].astype(str).tolist()
    # Zheng's T-cell codes resolve to fine types; its "DCs" / "Macrophages" stay coarse.
    t_codes = [node for label, node in zip(labels, nodes, strict=True)
               if label.startswith(("CD8.", "CD4."))]
    assert t_codes and all(onto.is_leaf(node) for node in t_codes)
    assert sum(onto.is_leaf(node) for node in nodes) / len(nodes) > 0.8


def test_biopsy_composition_tracks_hidden_truth(cohort):
    adata = cohort.adata
    obs = adata.obs
    malignant_labels = {"Malignant", "Melanoma cells", "Tumor", "Cancer cells", "Tumor cells"}
    is_malignant = obs["cell_type"].astype(str).isin(malignant_labels).to_numpy()
    truth = cohort.truth
    index = {pid: i for i, pid in enumerate(truth.patient_ids)}
    observed, true = [], []
    for rows in obs.groupby("sample_id", observed=True).indices.values():
        first = obs.iloc[rows[0]]
        observed.append(is_malignant[rows].mean())
        true.append(truth.composition[int(first["day"]), index[first["patient_id"]], 0])
    assert np.corrcoef(observed, true)[0, 1] > 0.8


def test_trajectories_build_from_a_generated_cohort(cohort):
    dist = sample_distributions(cohort.adata)
    traj = build_trajectories(dist)
    assert traj.counts.shape[0] == 8
    assert traj.therapy.shape[-1] == 5
    assert bool(traj.mask.any())


def test_same_seed_same_cohort_and_other_seed_differs():
    kwargs = dict(n_patients=3, horizon_days=60, lab="tme_fine")
    a = make_cohort("nsclc", "anti_pd1", seed=9, **kwargs)
    b = make_cohort("nsclc", "anti_pd1", seed=9, **kwargs)
    c = make_cohort("nsclc", "anti_pd1", seed=10, **kwargs)
    assert (a.X != b.X).nnz == 0
    assert a.obs.equals(b.obs)
    assert a.shape != c.shape or (a.X != c.X).nnz > 0


def test_cohort_round_trips_through_files(cohort, tmp_path):
    h5ad, truth_path = cohort.write(tmp_path)
    back = ad.read_h5ad(h5ad)
    assert back.shape == cohort.adata.shape
    assert back.uns["patients"].shape == cohort.adata.uns["patients"].shape
    truth = HiddenTruth.load(truth_path)
    np.testing.assert_allclose(truth.composition, cohort.truth.composition, rtol=1e-6)
    assert truth.patient_ids == cohort.truth.patient_ids
    assert list(truth.parameters["phenotype"]) == list(cohort.truth.parameters["phenotype"])


@pytest.mark.parametrize(("field", "kwargs"), [
    ("lab", {"lab": "mars_lab"}),
    ("n_patients", {"n_patients": 0}),
    ("biopsies", {"biopsies": (3, 2)}),
    ("horizon_days", {"horizon_days": 5}),
    ("regimen", {"regimens": ("anti_pd1+laser",)}),
])
def test_cohort_spec_bad_input(field, kwargs):
    base = dict(name="x", cancer_type="melanoma", regimens=("anti_pd1",), lab="tme_fine")
    base.update(kwargs)
    with pytest.raises(ValueError, match=field):
        CohortSpec(**base)


def test_default_suite_spans_types_therapies_and_labs():
    assert len(DEFAULT_SUITE) == 14
    assert len({s.name for s in DEFAULT_SUITE}) == 14
    assert len({s.seed for s in DEFAULT_SUITE}) == 14
    assert len({s.cancer_type for s in DEFAULT_SUITE}) >= 8
    assert len({s.lab for s in DEFAULT_SUITE}) == 6
    regimens = {r for s in DEFAULT_SUITE for r in s.regimens}
    assert "none" in regimens
    assert any("+" in r for r in regimens)


def test_make_suite_writes_valid_files_and_manifest(tmp_path):
    specs = suite_specs(n_patients=2, horizon_days=60,
                        names=["melanoma_untreated_broad", "crc_msi_pd1_fine"])
    manifest = make_suite(tmp_path, specs)
    records = json.loads(manifest.read_text())["cohorts"]
    assert [r["name"] for r in records] == ["melanoma_untreated_broad", "crc_msi_pd1_fine"]
    for record in records:
        adata = ad.read_h5ad(tmp_path / record["h5ad"])
        validate_anndata(adata, get_fields(adata))
        assert (tmp_path / record["truth"]).is_file()
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.slow  # starting Ray takes tens of seconds on a 2-core machine
def test_make_suite_on_ray_matches_serial(tmp_path):
    ray = pytest.importorskip("ray")
    specs = suite_specs(n_patients=2, horizon_days=40, names=["rcc_pd1_zheng"])
    make_suite(tmp_path / "serial", specs)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        make_suite(tmp_path / "ray", specs, use_ray=True)
    finally:
        ray.shutdown()
    a = ad.read_h5ad(tmp_path / "serial" / "rcc_pd1_zheng.h5ad")
    b = ad.read_h5ad(tmp_path / "ray" / "rcc_pd1_zheng.h5ad")
    assert (a.X != b.X).nnz == 0 and a.obs.equals(b.obs)


def test_suite_names_are_checked():
    with pytest.raises(ValueError, match="names"):
        suite_specs(names=["no_such_cohort"])
