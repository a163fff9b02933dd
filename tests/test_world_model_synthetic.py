"""Counts-only synthetic cohorts and the grid truth, checked against the AnnData path."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from immunegym.benchmarks.world_model import truth_by_patient
from immunegym.ontology import FINE_TYPES, default_ontology
from immunegym.sim import CohortSpec, HiddenTruth, simulate_cohort
from immunegym.sim.observation import LABS
from immunegym.world_model.synthetic import (
    GridTruth,
    _lab_model,
    _observe,
    concat_grid_truth,
    grid_truth,
    simulate_counts_cohort,
)
from immunegym.world_model.timelines import (
    _ARRAYS,
    CYCLE_DAYS,
    baseline_timelines,
    build_timelines,
    concat_timelines,
)

SPEC = CohortSpec("syn", "melanoma", ("anti_pd1", "none"), "atlas_zheng", n_patients=8,
                  seed=3, horizon_days=150, cells_per_biopsy=(200, 600))


@pytest.fixture(scope="module")
def anndata_path():
    cohort = simulate_cohort(SPEC)
    return cohort, build_timelines(cohort.adata)


@pytest.fixture(scope="module")
def counts_path():
    return simulate_counts_cohort(SPEC, horizons=4)


def _scans(tl):
    return {pid: (tl.days[p][tl.burden_observed[p]].tolist(),
                  tl.burden[p][tl.burden_observed[p]].tolist())
            for p, pid in enumerate(tl.patient_ids)}


def _block_patterns(tl) -> set[tuple[int, ...]]:
    return {tuple(b.tolist()) for b in tl.block[tl.comp_observed]}


def test_deterministic_given_seed(counts_path):
    again = simulate_counts_cohort(SPEC, horizons=4)
    for name in _ARRAYS:
        assert torch.equal(getattr(again.timelines, name), getattr(counts_path.timelines, name))
    assert torch.equal(again.truth.log_cells, counts_path.truth.log_cells)
    other = simulate_counts_cohort(replace(SPEC, seed=4), horizons=4)
    assert not torch.equal(other.timelines.days, counts_path.timelines.days)
    assert not torch.equal(other.truth.log_sod, counts_path.truth.log_sod)


def test_shares_the_simulation_with_the_anndata_path(counts_path, anndata_path):
    cohort, a = anndata_path
    b = counts_path.timelines
    assert b.patient_ids == a.patient_ids == [f"syn-P{i:03d}" for i in range(8)]
    assert b.patients.equals(a.patients)
    assert b.programs == a.programs
    assert _scans(b) == _scans(a)  # same imaging, days and log1p(sod)
    # Cycles are kept up to the last observed day + 1, which depends on biopsy days.
    n_c = min(a.cycle_doses.shape[1], b.cycle_doses.shape[1])
    assert torch.equal(b.cycle_doses[:, :n_c], a.cycle_doses[:, :n_c])
    assert b.cycle_doses.shape[1] == int(b.days.max()) // CYCLE_DAYS + 2
    assert b.cycle_doses.sum() > 0
    # The random streams agree until the first biopsy is labelled: same first biopsy days.
    assert torch.equal(b.days[0][b.comp_observed[0]], a.days[0][a.comp_observed[0]])
    # The same hidden course: its truth on the counts path's grid is what that path returns.
    shared = grid_truth(cohort.truth, b, horizons=4)
    for name in ("log_cells", "log_sod", "alive"):
        assert torch.equal(getattr(shared, name), getattr(counts_path.truth, name))


def test_timelines_are_well_formed(counts_path):
    tl = counts_path.timelines
    valid = tl.valid.numpy()
    assert np.all(valid[:, 0]) and np.all(valid[:, :-1] >= valid[:, 1:])  # a valid prefix
    assert all(np.all(np.diff(d[v]) > 0) for d, v in zip(tl.days.numpy(), valid, strict=True))
    assert bool(tl.burden_observed[:, 0].all()) and bool((tl.days[:, 0] == 0).all())
    assert not bool(tl.program_mask.any()) and float(tl.program_scores.abs().sum()) == 0.0
    assert not bool((tl.comp_observed | tl.burden_observed)[~tl.valid].any())
    obs = tl.comp_observed
    np.testing.assert_allclose(tl.fractions[obs].sum(-1), 1.0, rtol=1e-5)
    assert bool((tl.counts[~obs] == 0).all())


@pytest.mark.parametrize("lab", ["tme_fine", "clinical_panel"])
def test_cells_per_biopsy_within_range(lab):
    spec = replace(SPEC, lab=lab, n_patients=4, cells_per_biopsy=(50, 80))
    tl = simulate_counts_cohort(spec, horizons=0).timelines
    totals = tl.counts.sum(-1)[tl.comp_observed]
    # Under 100 cells a single cell is >= 1% of the sample, so no coarse label is dropped.
    assert totals.min() >= 50 and totals.max() <= 80


def test_count_level_misannotation_and_labels():
    lab = LABS["tme_fine"]  # misannotation 0.05, every label on its own leaf
    model = _lab_model("tme_fine")
    counts = np.zeros(len(FINE_TYPES), np.int64)
    counts[FINE_TYPES.index("malignant")] = 19000
    counts[FINE_TYPES.index("cd8_memory")] = 1000
    direct = _observe(counts, lab, model, np.random.default_rng(0))
    nodes = list(model.nodes)
    assert direct.sum() == 20000
    # Cells only move between types present in the biopsy.
    assert set(np.flatnonzero(direct)) == {nodes.index("malignant"), nodes.index("cd8_memory")}
    # 5% of each type moves to the other: 1000 * 0.95 + 19000 * 0.05 = 1900 (sd ~ 31).
    assert abs(direct[nodes.index("cd8_memory")] - 1900) < 150
    # Alone in a biopsy, a type has nowhere to be misannotated to.
    alone = np.zeros(len(FINE_TYPES), np.int64)
    alone[0] = 500
    assert _observe(alone, lab, model, np.random.default_rng(1))[nodes.index("malignant")] == 500


@pytest.mark.parametrize("lab", ["tme_fine", "broad_immune", "sade_feldman_style"])
def test_blocks_follow_the_labs_merges(lab):
    spec = replace(SPEC, lab=lab, n_patients=5, cells_per_biopsy=(200, 400))
    counts_tl = simulate_counts_cohort(spec, horizons=0).timelines
    anndata_tl = build_timelines(simulate_cohort(spec).adata)
    onto = default_ontology()
    model = _lab_model(lab)
    coarse = {model.nodes[i] for i in model.node if i >= 0 and not onto.is_leaf(model.nodes[i])}
    allowed = {tuple(sorted(FINE_TYPES.index(leaf) for leaf in onto.leaves_under(n)))
               for n in coarse}
    for tl in (counts_tl, anndata_tl):
        for pattern in _block_patterns(tl):
            groups = {}
            for leaf, first in enumerate(pattern):
                groups.setdefault(first, []).append(leaf)
            assert all(tuple(g) in allowed for g in groups.values() if len(g) > 1)
    if lab == "tme_fine":  # every label names a leaf: nothing merges
        assert _block_patterns(counts_tl) == _block_patterns(anndata_tl) == {
            tuple(range(len(FINE_TYPES)))}
    else:  # "T cells" / "Memory T cells" are always abundant: both paths merge
        assert bool((~counts_tl.resolved[counts_tl.comp_observed]).any(-1).all())
        assert bool((~anndata_tl.resolved[anndata_tl.comp_observed]).any(-1).all())
    if lab == "broad_immune":  # T cells and myeloid cells merge in every biopsy
        assert _block_patterns(counts_tl) == _block_patterns(anndata_tl)


def test_grid_truth_agrees_with_truth_by_patient(anndata_path):
    cohort, tl = anndata_path
    g = grid_truth(cohort.truth, tl, horizons=3)
    p, n_l = tl.days.shape
    assert g.log_cells.shape == (p, n_l, 4, len(FINE_TYPES))
    assert g.log_sod.shape == g.alive.shape == (p, n_l, 4)
    comp, burden = truth_by_patient(cohort.truth)
    checked = 0
    for i, pid in enumerate(tl.patient_ids):
        for j in range(int(tl.valid[i].sum())):
            for h in range(4):
                day = int(tl.days[i, j]) + CYCLE_DAYS * h
                alive = day <= SPEC.horizon_days and not np.isnan(burden[pid][day])
                assert bool(g.alive[i, j, h]) == alive
                if not alive:
                    assert float(g.log_cells[i, j, h].abs().sum()) == 0.0
                    continue
                cells = np.expm1(g.log_cells[i, j, h].double().numpy())
                np.testing.assert_allclose(cells / cells.sum(), comp[pid][day], atol=1e-5)
                np.testing.assert_allclose(float(g.log_sod[i, j, h]), burden[pid][day],
                                           rtol=1e-5)
                checked += 1
    assert checked > 0 and not bool(g.alive[~tl.valid].any())


def test_grid_truth_alive_and_horizon():
    """A hand-made truth: patient 1 dies on day 50, the simulation ends on day 99."""
    n_days, k = 100, len(FINE_TYPES)
    comp = np.full((n_days, 2, k), 1.0 / k)
    total = np.full((n_days, 2), 1e6)
    alive = np.ones((n_days, 2), bool)
    alive[50:, 1] = False
    tumor = np.full((n_days, 2), 1e10)
    truth = HiddenTruth(["a", "b"], np.arange(n_days), comp, tumor, np.zeros((n_days, 2, 1)),
                        alive, None, total)
    tl = baseline_timelines(np.full((2, k), 1.0), None, ["b", "a"], cancer_type="melanoma",
                            programs=())
    tl.days[:] = torch.tensor([[30.0], [0.0]])  # "b" seen on day 30, "a" on day 0
    g = grid_truth(truth, tl, horizons=5, rates={"sod_per_cube_root_gcells": 10.0,
                                                  "detection_limit": 1e8})
    # "b": days 30, 51, ... -> dead from day 50; "a": days 0..84 alive, 105 past the end.
    assert g.alive[0, 0].tolist() == [True, False, False, False, False, False]
    assert g.alive[1, 0].tolist() == [True, True, True, True, True, False]
    np.testing.assert_allclose(g.log_cells[1, 0, :5], np.log1p(1e6 / k), rtol=1e-6)
    np.testing.assert_allclose(g.log_sod[1, 0, :5], np.log1p(10.0 * 10 ** (1 / 3)), rtol=1e-6)
    assert float(g.log_cells[0, 0, 1:].abs().sum()) == 0.0 and float(g.log_sod[1, 0, 5]) == 0
    with pytest.raises(ValueError, match="not in truth"):
        grid_truth(replace(truth, patient_ids=["a", "c"]), tl)


def test_subset_and_concat_follow_timelines(counts_path, anndata_path):
    cohort, a_tl = anndata_path
    b_tl, b_truth = counts_path.timelines, counts_path.truth
    rows = [5, 0, 3]
    sub_tl, sub = b_tl.subset(rows), b_truth.subset(rows)
    assert sub.log_cells.shape[:2] == sub_tl.days.shape and torch.equal(sub.valid, sub_tl.valid)
    n_l = sub_tl.days.shape[1]
    assert torch.equal(sub.log_cells, b_truth.log_cells[rows, :n_l])
    assert not bool(b_truth.alive[rows][:, n_l:].any())  # trimming drops no truth

    a_truth = grid_truth(cohort.truth, a_tl, horizons=4)
    renamed = replace(b_tl, patients=b_tl.patients.assign(
        patient_id=[f"x{p}" for p in b_tl.patient_ids]))
    both_tl = concat_timelines([a_tl.subset([0, 1]), renamed])  # AnnData + counts paths mix
    both = concat_grid_truth([a_truth.subset([0, 1]), b_truth])
    assert isinstance(both, GridTruth)
    assert both.log_cells.shape[:2] == both_tl.days.shape
    assert torch.equal(both.valid, both_tl.valid)
    assert not bool(both.alive[~both_tl.valid].any())
    assert torch.equal(both.subset(range(2, 10)).log_sod, b_truth.log_sod)
    with pytest.raises(ValueError, match="horizons"):
        concat_grid_truth([a_truth, grid_truth(cohort.truth, a_tl, horizons=2)])


def test_hidden_truth_save_load_total_cells(anndata_path, tmp_path):
    truth = anndata_path[0].truth
    assert truth.total_cells is not None and truth.total_cells.shape == truth.tumor_cells.shape
    assert np.all(truth.total_cells >= truth.tumor_cells * (1 - 1e-9))
    loaded = HiddenTruth.load(truth.save(tmp_path / "with.truth.safetensors"))
    np.testing.assert_array_equal(loaded.total_cells, truth.total_cells)
    np.testing.assert_array_equal(loaded.composition, truth.composition.astype(np.float32))
    old = HiddenTruth.load(replace(truth, total_cells=None).save(tmp_path / "old.safetensors"))
    assert old.total_cells is None
    np.testing.assert_array_equal(old.tumor_cells, truth.tumor_cells)
    with pytest.raises(ValueError, match="total_cells"):
        grid_truth(old, anndata_path[1])
