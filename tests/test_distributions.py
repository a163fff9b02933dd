import numpy as np
import pandas as pd
import pytest
import torch

from immunegym.data import (
    PatientTrajectories,
    SampleDistributions,
    build_trajectories,
    from_counts_table,
    sample_distributions,
)
from immunegym.data.schema import DataValidationError
from immunegym.ontology import default_ontology


def test_counts_per_sample_and_node(registered):
    dist = sample_distributions(registered)
    assert dist.sample_ids == ["p1_d0", "p1_d21", "p1_d63", "p2_d0", "p2_d30", "p3_d0",
                               "p3_d14"]
    nodes = dist.nodes
    row = dist.counts[0]
    assert row[nodes.index("cd8_tex")] == 5 and row[nodes.index("cd8_tpex")] == 3
    assert row[nodes.index("t_cell")] == 4  # coarse label stays coarse
    assert dist.total_cells[0] == 20
    assert dist.n_excluded.tolist() == [0, 2, 0, 0, 1, 0, 0]  # Doublets, Unknown
    assert dist.counts[5, nodes.index("lymphoid")] == 3  # "T/NK cells"
    samples = dist.samples
    assert samples.loc["p2_d0", "therapy"] == "anti_pd1+anti_ctla4"
    assert samples.loc["p3_d14", "therapy"] is None
    assert samples.loc["p1_d21", "time"] == 21.0
    assert samples.loc["p1_d0", "response"] == 1.0 and samples.loc["p2_d0", "response"] == 0.0


def test_fractions_sum_to_one_at_every_level(registered):
    dist = sample_distributions(registered)
    for level in ("fine", "major", "lineage", "compartment"):
        frac = dist.fractions_at(level)
        np.testing.assert_allclose(frac.sum(axis=1), 1.0)
    assert "t_cell" in dist.fractions_at("fine").columns
    assert list(dist.fractions_at("lineage").columns) == ["malignant", "lymphoid", "myeloid",
                                                          "stromal"]


def test_program_scores_when_expression_present(registered):
    dist = sample_distributions(registered)
    assert dist.programs[0] == "cytotoxicity"
    scores = dist.program_scores
    assert scores.shape == (7, len(dist.nodes), len(dist.programs))
    tex = dist.nodes.index("cd8_tex")
    assert np.isfinite(scores[0, tex, 0]) and scores[0, tex, 0] > 0
    assert np.isnan(scores[0, dist.nodes.index("nk"), 0])  # no NK cells there
    assert np.isnan(scores[0, tex, dist.programs.index("m1_like")])  # no m1 genes in var
    assert sample_distributions(registered, programs={}).program_scores is None


def test_save_load_round_trip(registered, tmp_path):
    dist = sample_distributions(registered)
    path = dist.save(tmp_path / "dist.safetensors")
    back = SampleDistributions.load(path)
    np.testing.assert_array_equal(back.counts, dist.counts)
    np.testing.assert_array_equal(back.program_scores, dist.program_scores)
    pd.testing.assert_frame_equal(back.samples, dist.samples, check_dtype=False)
    assert back.nodes == dist.nodes and back.programs == dist.programs
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_load_rejects_other_files(tmp_path, registered):
    junk = tmp_path / "x.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="is not a safetensors file"):
        SampleDistributions.load(junk)
    traj = build_trajectories(sample_distributions(registered).subset([True] * 6 + [False]))
    traj_path = traj.save(tmp_path / "traj.safetensors")
    with pytest.raises(ValueError, match="holds a 'PatientTrajectories', expected"):
        SampleDistributions.load(traj_path)


def test_failed_write_leaves_no_file(registered, tmp_path, monkeypatch):
    import immunegym.data.storage as storage

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(storage, "save_file", boom)
    target = tmp_path / "dist.safetensors"
    with pytest.raises(OSError, match="disk full"):
        sample_distributions(registered).save(target)
    assert list(tmp_path.iterdir()) == []


def test_trajectories_keep_coarse_columns_without_prior(registered):
    traj = build_trajectories(sample_distributions(registered))
    assert traj.patients == ["p1", "p2", "p3"]
    assert traj.times.shape == (3, 3) and traj.mask.sum().item() == 7
    assert traj.sample_ids[0] == ["p1_d0", "p1_d21", "p1_d63"]
    assert traj.nodes[:20] == default_ontology().leaves and "t_cell" in traj.nodes
    assert torch.equal(traj.lengths, torch.tensor([3, 2, 2]))
    frac_sum = traj.fractions.sum(-1)
    assert torch.allclose(frac_sum[traj.mask], torch.ones(7))
    assert torch.all(frac_sum[~traj.mask] == 0)
    pd1 = traj.therapies.index("anti_pd1")
    assert traj.therapy[1, 0, pd1] == 1 and traj.therapy[1, 0, 1] == 1  # combination
    assert traj.therapy[0, 2].sum() == 0 and traj.therapy_known[0, 2]  # "none" is known
    assert not traj.therapy_known[2, 1]  # not recorded
    assert traj.response.tolist() == [1.0, 0.0, 0.0]


def test_trajectories_with_split_prior_are_pure_level(registered):
    dist = sample_distributions(registered)
    traj = build_trajectories(dist, level="fine", split_prior="observed")
    assert traj.nodes == default_ontology().leaves
    assert torch.allclose(traj.total_cells[traj.mask],
                          torch.tensor(dist.total_cells, dtype=torch.float32))
    major = build_trajectories(dist, level="major", split_prior="uniform")
    assert len(major.nodes) == len(default_ontology().level("major"))


def test_trajectories_sorted_by_time_and_round_trip(registered, tmp_path):
    registered.obs = registered.obs.iloc[::-1]  # reversed sample order
    traj = build_trajectories(sample_distributions(registered))
    p1 = traj.patients.index("p1")
    assert traj.times[p1].tolist() == [0.0, 21.0, 63.0]
    back = PatientTrajectories.load(traj.save(tmp_path / "t.safetensors"))
    for name in ("times", "mask", "counts", "fractions", "therapy", "response"):
        assert torch.equal(getattr(back, name).nan_to_num(-1), getattr(traj, name).nan_to_num(-1))
    assert back.sample_ids == traj.sample_ids and back.nodes == traj.nodes


def test_trajectories_need_times():
    table = pd.DataFrame({"sample": ["s1"], "patient": ["a"], "B cells": [3]})
    dist = from_counts_table(table, ["B cells"])
    with pytest.raises(DataValidationError, match=r"sample 's1' has no time"):
        build_trajectories(dist)


def test_two_samples_at_one_time_are_rejected():
    table = pd.DataFrame({"sample": ["s1", "s2"], "patient": ["a", "a"], "day": [0, 0],
                          "B cells": [3, 4]})
    dist = from_counts_table(table, ["B cells"], time_col="day")
    with pytest.raises(DataValidationError, match=r"patient 'a' has two samples at day 0"):
        build_trajectories(dist)


def test_same_input_same_output(registered):
    a = build_trajectories(sample_distributions(registered))
    b = build_trajectories(sample_distributions(registered))
    assert torch.equal(a.counts, b.counts) and a.nodes == b.nodes
