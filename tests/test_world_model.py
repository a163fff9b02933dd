"""World model: timelines, module, fit/filter/predict/rollout/smooth, checkpoints, recipe,
benchmark."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.special import gammaln

from immunegym.benchmarks.baselines import (
    CohortMean,
    HistoryMean,
    Persistence,
    RidgeDynamics,
    RidgeTruth,
)
from immunegym.benchmarks.world_model import LabeledCohorts, evaluate, load_cohorts, make_origins
from immunegym.ontology import FINE_TYPES, tree_wasserstein
from immunegym.sim.cohort import CohortSpec, simulate_cohort
from immunegym.world_model import (
    LatentConfig,
    Recipe,
    TrainConfig,
    WorldModel,
    WorldModelConfig,
    build_timelines,
    concat_timelines,
    load,
    simulate_counts_cohort,
    split_patients,
)
from immunegym.world_model.checkpoint import PRETRAINED
from immunegym.world_model.events import cumulative_dose, interval_dose, split_blocks
from immunegym.world_model.latent import LatentWorldModule, NextState, dirichlet_multinomial_nll
from immunegym.world_model.synthetic import concat_grid_truth

SPECS = (
    CohortSpec("t_fine", "melanoma", ("anti_pd1", "none"), "tme_fine", n_patients=10, seed=7,
               horizon_days=200),
    CohortSpec("t_panel", "nsclc", ("anti_pd1+chemo",), "clinical_panel", n_patients=8,
               seed=8, horizon_days=200),
)
SMALL = LatentConfig(d_hidden=16, d_context=4, d_dynamics=32)
TINY_TRAIN = TrainConfig(epochs=5, batch_size=8, patience=5, lr=5e-3, horizons=4)


@pytest.fixture(scope="module")
def cohorts():
    return [simulate_cohort(s) for s in SPECS]


@pytest.fixture(scope="module")
def timelines(cohorts):
    return concat_timelines([build_timelines(c.adata) for c in cohorts])


@pytest.fixture(scope="module")
def synthetic():
    """Counts-only training cohorts (new seeds) with the hidden truth on their grid."""
    from dataclasses import replace

    parts = [simulate_counts_cohort(replace(s, name=s.name + "_syn", seed=s.seed + 50),
                                    horizons=4) for s in SPECS]
    return (concat_timelines([p.timelines for p in parts]),
            concat_grid_truth([p.truth for p in parts]))


@pytest.fixture(scope="module")
def fitted(synthetic):
    tl, truth = synthetic
    model = WorldModel(WorldModelConfig(SMALL, n_members=2), seed=3)
    split = split_patients(tl.patient_ids, test_fraction=0.0, val_fraction=0.25)
    train, val = np.nonzero(split == "train")[0], np.nonzero(split == "val")[0]
    model.fit(tl.subset(train), tl.subset(val), TINY_TRAIN, seed=1,
              truth_train=truth.subset(train), truth_val=truth.subset(val))
    return model


# ---------------------------------------------------------------------------- tree W1
def test_tree_wasserstein_counts_edges_of_the_ontology():
    eye = np.eye(len(FINE_TYPES))
    effector, tex = FINE_TYPES.index("cd8_effector"), FINE_TYPES.index("cd8_tex")
    tpex = FINE_TYPES.index("cd8_tpex")
    assert tree_wasserstein(eye[effector], eye[tex]) == pytest.approx(3.0)
    assert tree_wasserstein(eye[tpex], eye[tex]) == pytest.approx(2.0)
    assert tree_wasserstein(eye[tex], eye[tex]) == 0.0
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(20), 5), rng.dirichlet(np.ones(20), 5)
    np.testing.assert_allclose(tree_wasserstein(p, q), tree_wasserstein(q, p))
    torch_value = tree_wasserstein(torch.as_tensor(p), torch.as_tensor(q))
    np.testing.assert_allclose(torch_value.numpy(), tree_wasserstein(p, q))
    # Counts are normalized: scaling a composition changes nothing.
    np.testing.assert_allclose(tree_wasserstein(p * 300, q), tree_wasserstein(p, q))


def test_tree_wasserstein_rejects_bad_input():
    with pytest.raises(ValueError, match=r"p: got shape \(3,\); expected a last dimension"):
        tree_wasserstein(np.ones(3), np.ones(20))
    with pytest.raises(ValueError, match="non-negative"):
        tree_wasserstein(-np.ones(20), np.ones(20))
    with pytest.raises(ValueError, match="sums to zero"):
        tree_wasserstein(np.zeros(20), np.ones(20))


# ---------------------------------------------------------------------------- timelines
def test_timelines_hold_biopsies_scans_and_blocks(cohorts, timelines):
    assert len(timelines) == sum(s.n_patients for s in SPECS)
    adata = cohorts[1].adata  # clinical_panel: coarse labels such as "CD8 T", "Myeloid"
    tl = build_timelines(adata)
    cells = adata.obs.groupby("sample_id", observed=True).size()
    observed = tl.counts[tl.comp_observed].sum(-1)
    # Every counted cell lands in some block (small coarse misannotation may be dropped).
    assert float(observed.sum()) <= cells.sum()
    assert float(observed.sum()) >= 0.97 * cells.sum()
    merged = tl.block[tl.comp_observed] != torch.arange(len(FINE_TYPES))
    assert bool(merged.any()), "a coarse lab must produce merged blocks"
    assert not bool(tl.resolved[tl.comp_observed][merged].any())
    # Imaging: as many observed burdens as scans in uns["imaging"].
    assert int(tl.burden_observed.sum()) == len(adata.uns["imaging"])
    # anti_pd1 + chemo: one standard cycle of each in the first cycle.
    np.testing.assert_allclose(tl.cycle_doses[:, 0, [0, 2]].numpy(), 1.0)
    fine = build_timelines(cohorts[0].adata)
    assert bool(fine.resolved[fine.comp_observed].float().mean() > 0.99)


def test_timelines_truncate_subset_and_roundtrip(timelines, tmp_path):
    cut = timelines.truncate(timelines.days[:, 0] + 30)
    assert bool((cut.days[cut.valid] <= timelines.days[:, :1].expand_as(
        timelines.days)[:, :cut.days.shape[1]][cut.valid] + 30).all())
    assert bool(cut.valid[:, 0].all())
    with pytest.raises(ValueError, match="last_day"):
        timelines.truncate(timelines.days[:, 0] - 1)
    path = timelines.save(tmp_path / "tl.safetensors")
    back = type(timelines).load(path)
    assert back.patient_ids == timelines.patient_ids
    assert torch.equal(back.counts, timelines.counts)
    assert torch.equal(back.resolved, timelines.resolved)


def test_split_is_deterministic_and_order_free():
    ids = [f"p{i}" for i in range(400)]
    a = split_patients(ids, seed=3)
    b = split_patients(ids[::-1], seed=3)[::-1]
    assert list(a) == list(b)
    assert 0.08 < np.mean(a == "test") < 0.22
    assert list(split_patients(ids, seed=4)) != list(a)
    with pytest.raises(ValueError, match="test_fraction"):
        split_patients(ids, test_fraction=1.5)


def test_dose_arithmetic():
    doses = torch.zeros(1, 4, 5)
    doses[0, 0, 0] = 1.0  # one standard anti-PD-1 cycle in days 0-21
    doses[0, 2, 0] = 2.0  # a double cycle in days 42-63
    days = torch.tensor([[0.0, 10.5, 21.0, 63.0]])
    np.testing.assert_allclose(cumulative_dose(doses, days)[0, :, 0].numpy(),
                               [0.0, 0.5, 1.0, 3.0])
    rate = interval_dose(doses, torch.tensor([[21.0]]), torch.tensor([[63.0]]))
    assert float(rate[0, 0, 0]) == pytest.approx(1.0)  # 2 cycles' worth over 2 cycles
    assert float(interval_dose(doses, torch.tensor([[5.0]]), torch.tensor([[5.0]]))
                 .abs().sum()) == 0.0


def test_block_split_follows_the_prior():
    counts = torch.zeros(20)
    block = torch.arange(20)
    block[[13, 14]] = 13  # macrophage block
    counts[13], counts[0] = 30.0, 70.0
    prior = torch.full((20,), 0.01)
    prior[13], prior[14] = 0.01, 0.03
    frac = split_blocks(counts, block, prior)
    assert float(frac.sum()) == pytest.approx(1.0)
    assert float(frac[13]) == pytest.approx(0.075)
    assert float(frac[14]) == pytest.approx(0.225)


# ---------------------------------------------------------------------------- module
def test_dirichlet_multinomial_matches_scipy_and_merges_blocks():
    rng = np.random.default_rng(1)
    alpha = rng.gamma(2.0, 1.0, 6)
    counts = rng.integers(0, 20, 6).astype(float)
    logits = torch.log(torch.tensor(alpha / alpha.sum()))
    pred = NextState(logits, torch.tensor(np.log(alpha.sum())), torch.tensor(0.0),
                     torch.tensor(0.0))
    nll = dirichlet_multinomial_nll(pred, torch.tensor(counts),
                                    torch.arange(6)).item()
    n = counts.sum()
    log_coef = gammaln(n + 1) - gammaln(counts + 1).sum()
    expected = scipy.stats.dirichlet_multinomial.logpmf(counts, alpha, n) - log_coef
    assert -nll == pytest.approx(expected, rel=1e-5)
    # Blocks: categories 1-2 observed only together == a DM over the merged categories.
    block = torch.tensor([0, 1, 1, 3, 4, 5])
    merged_counts = counts.copy()
    merged_counts[1] += merged_counts[2]
    merged_counts[2] = 0
    nll_block = dirichlet_multinomial_nll(pred, torch.tensor(merged_counts), block).item()
    a_m = np.array([alpha[0], alpha[1] + alpha[2], alpha[3], alpha[4], alpha[5]])
    c_m = np.delete(merged_counts, 2)
    coef_m = gammaln(n + 1) - gammaln(c_m + 1).sum()
    expected_m = scipy.stats.dirichlet_multinomial.logpmf(c_m, a_m, n) - coef_m
    assert -nll_block == pytest.approx(expected_m, rel=1e-5)


# ---------------------------------------------------------------------------- model
def test_fit_lowers_the_loss_and_predictions_are_valid(fitted, timelines):
    assert fitted.config.privileged
    for history in fitted.history:
        assert min(r.val_loss for r in history[1:]) < history[0].val_loss
        assert np.isfinite([r.val_state for r in history]).all()
    pred = fitted.predict(timelines, ["anti_pd1"])
    comp = pred.composition
    assert comp.shape == (len(timelines), 20)
    assert bool((comp >= 0).all())
    np.testing.assert_allclose(comp.sum(-1).numpy(), 1.0, atol=1e-5)
    assert pred.members.logits.shape[0] == 2
    assert bool(torch.isfinite(pred.burden).all())


def test_rollout_modes_and_seeding(fitted, timelines):
    doses = np.tile([1.0, 0, 0, 0, 0], (len(timelines), 4, 1))
    mean = fitted.rollout(timelines, doses)
    assert mean.compositions.shape == (2, len(timelines), 4, 20)
    a = fitted.rollout(timelines, doses, n_samples=5, noise="both", seed=11)
    b = fitted.rollout(timelines, doses, n_samples=5, noise="both", seed=11)
    c = fitted.rollout(timelines, doses, n_samples=5, noise="both", seed=12)
    assert torch.equal(a.compositions, b.compositions)
    assert not torch.equal(a.compositions, c.compositions)
    np.testing.assert_allclose(a.compositions.sum(-1).numpy(), 1.0, atol=1e-4)
    lo, hi = a.interval(0.9)
    assert bool((lo <= hi).all())
    alea = fitted.rollout(timelines, doses, n_samples=3, noise="aleatoric", seed=1)
    assert bool((alea.member == 0).all())
    # Sampled latent paths spread; the mean path does not.
    assert float(alea.compositions.std(0).mean()) > 0
    assert float(mean.days[0, 0] - timelines.days[0, timelines.lengths[0] - 1]) == 21.0
    # The first step of the mean path is predict() one cycle ahead.
    step = fitted.predict(timelines, doses[:, 0])
    np.testing.assert_allclose(mean.compositions.mean(0)[:, 0].numpy(),
                               step.composition.numpy(), atol=1e-5)


def test_filter_estimate_and_smoother(fitted, synthetic):
    tl, _ = synthetic
    today = fitted.estimate(tl)
    np.testing.assert_allclose(today.composition.sum(-1).numpy(), 1.0, atol=1e-5)
    smoothed = fitted.smooth(tl)
    assert smoothed.composition.shape == tl.fractions.shape
    assert float(smoothed.composition[~tl.valid].abs().sum()) == 0.0
    # Hiding a biopsy changes the smoother's estimate at that point, and only the data
    # (not the point itself) is lost: the point stays as a query.
    p = int(np.nonzero(tl.comp_observed.sum(1).numpy() >= 3)[0][0])
    j = int(np.nonzero(tl.comp_observed[p].numpy())[0][1])
    one = tl.subset([p])
    hidden = tl.subset([p])
    hidden.comp_observed[0, j] = False
    hidden.counts[0, j] = 0.0
    hidden.fractions[0, j] = 0.0
    a, b = fitted.smooth(one).composition[0, j], fitted.smooth(hidden).composition[0, j]
    assert not torch.allclose(a, b)
    np.testing.assert_allclose(float(b.sum()), 1.0, atol=1e-5)
    # The filter at a point ignores later points; the smoother does not.
    early = tl.subset([p]).truncate(np.array([float(tl.days[p, j])]))
    f_full = fitted.members[0].filter(fitted.inputs(tl.subset([p]))).z[0, j]
    f_early = fitted.members[0].filter(fitted.inputs(early)).z[0, j]
    torch.testing.assert_close(f_full, f_early)


def test_calibration_sets_per_horizon_scales(fitted, synthetic):
    from dataclasses import replace

    tl, truth = synthetic
    model = WorldModel(replace(fitted.config, conformal_scale=()), seed=0)
    for mine, theirs in zip(model.members, fitted.members, strict=True):
        mine.load_state_dict(theirs.state_dict())
    scales = model.calibrate(tl, truth, horizons=3, n_samples=16)
    assert len(scales) == 3 and all(np.isfinite(scales)) and min(scales) > 0
    assert model.config.conformal_scale == scales


def test_lab_handling(fitted, timelines):
    other = timelines.subset(range(2))
    other.patients["lab"] = "my_lab"
    with pytest.raises(ValueError, match="'my_lab' is not a lab this model has seen"):
        fitted.predict(other, ["anti_pd1"])
    other.patients["lab"] = "unknown"
    comp = fitted.predict(other, ["anti_pd1"]).composition
    np.testing.assert_allclose(comp.sum(-1).numpy(), 1.0, atol=1e-5)


def test_anchored_lab_biases_are_read_as_deviations_from_their_mean():
    """With ``anchor_lab_bias`` a per-type offset shared by every known lab changes no
    observation (it would otherwise trade off against the state); a lab's own deviation
    does, and the unknown lab's row is read as it is."""
    free = LatentWorldModule(LatentConfig(n_labs=3))
    anchored = LatentWorldModule(LatentConfig(n_labs=3, anchor_lab_bias=True))
    labs = torch.tensor([0, 1, 2, 3])
    z = torch.randn(4, 20, generator=torch.Generator().manual_seed(0))
    before = anchored.observe(z, labs).logits
    shift = torch.linspace(-2.0, 2.0, 20)
    with torch.no_grad():
        for module in (free, anchored):
            module.lab_bias[:3] += shift
    torch.testing.assert_close(anchored.observe(z, labs).logits, before)
    assert not torch.allclose(free.observe(z, labs).logits[:3], before[:3])
    with torch.no_grad():
        anchored.lab_bias[0, 5] += 3.0
    after = anchored.observe(z, labs).logits
    assert (after[0, 5] - before[0, 5]).item() == pytest.approx(2.0, abs=1e-5)  # 3 - 3/3
    assert (after[1, 5] - before[1, 5]).item() == pytest.approx(-1.0, abs=1e-5)
    torch.testing.assert_close(after[3], before[3])  # the unknown lab: no bias either way


def test_a_type_below_the_abundance_floor_keeps_its_gradient():
    """The composition logits hold a floor (no log of zero cells) but a type under it must
    still feel the likelihood: with a hard clamp, observation-only training left most types
    at zero share for good (measured: 6-14 of 20 types per member at the floor at more
    than half of the origins, docs/observation_only_diagnostic.py)."""
    module = LatentWorldModule(LatentConfig())
    z = torch.full((2, 20), -30.0)  # every type far below the floor
    z[1, 0] = 0.0  # and one patient with malignant cells
    z.requires_grad_(True)
    logits = module.composition_logits(z)
    floor = math.log(math.expm1(1e-4))
    assert logits[0].detach().allclose(torch.full((20,), floor), atol=1e-4)  # value held
    (-torch.log_softmax(logits, -1)[:, 3]).sum().backward()  # the data want cd8_tpex
    assert z.grad[0, 3] < 0 and z.grad[1, 3] < 0  # a step against it raises the type
    # And a biopsy that sees cells of a type the state holds at a tiny share pulls it up by
    # about one nat per log unit (a floor on the pseudo-counts once cut this gradient).
    share = torch.tensor([[20.0, floor, 0.0]], requires_grad=True)
    pred = NextState(share, torch.tensor([3.0]), torch.zeros(1), torch.zeros(1))
    counts = torch.tensor([[50.0, 50.0, 0.0]])
    dirichlet_multinomial_nll(pred, counts, torch.tensor([[0, 1, 2]])).sum().backward()
    assert share.grad[0, 1].item() == pytest.approx(-1.0, abs=0.01)


def test_fit_from_observations_alone_on_a_user_cohort(cohorts):
    """``fit(adata)``: a registered AnnData, no truth, validation held out by hash."""
    model = WorldModel(WorldModelConfig(SMALL, n_members=1), seed=0)
    model.fit(cohorts[0].adata, train_config=TrainConfig(epochs=3, batch_size=4, horizons=2))
    assert not model.config.privileged
    history = model.history[0]
    assert np.isfinite([r.val_loss for r in history]).all()
    assert np.isnan([r.val_state for r in history]).all()
    assert min(r.val_loss for r in history[1:]) < history[0].val_loss
    tl = build_timelines(cohorts[0].adata)
    comp = model.predict(tl, ["anti_pd1"]).composition
    np.testing.assert_allclose(comp.sum(-1).numpy(), 1.0, atol=1e-5)
    # One biopsy per patient and nothing after it: no dynamics to learn from observations.
    single = tl.truncate(tl.days[:, 0].numpy())
    single.burden_observed[:] = False
    with pytest.raises(ValueError, match="single observation"):
        WorldModel(WorldModelConfig(SMALL, n_members=1)).fit(
            single, single, TrainConfig(epochs=1, horizons=2))


def test_predict_rejects_bad_input(fitted, timelines):
    with pytest.raises(ValueError, match=r"doses\[0\]: got 'anti_pd2'.*not a therapy"):
        fitted.predict(timelines, ["anti_pd2"])
    with pytest.raises(ValueError, match="doses: shape"):
        fitted.predict(timelines, np.ones((len(timelines), 4)))
    with pytest.raises(ValueError, match="non-negative"):
        fitted.predict(timelines, -np.ones((len(timelines), 5)))
    bad = timelines.subset(range(3))
    bad.burden[0, 0] = float("nan")
    with pytest.raises(ValueError, match="timelines.burden: contains NaN"):
        fitted.predict(bad, ["anti_pd1"])
    narrow = timelines.subset(range(3))
    narrow.fractions = narrow.fractions[..., :19]
    with pytest.raises(ValueError, match="19 composition columns"):
        fitted.predict(narrow, ["anti_pd1"])
    with pytest.raises(ValueError, match="noise"):
        fitted.rollout(timelines, ["anti_pd1"], 2, noise="gaussian")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dt"):
        fitted.predict(timelines, ["anti_pd1"], dt=0)


def test_checkpoint_roundtrip_and_bad_files(fitted, timelines, tmp_path):
    path = fitted.save(tmp_path / "ckpt", card={"split": {"seed": 0}})
    assert {p.name for p in path.iterdir()} == {
        "weights.safetensors", "config.json", "training.json", "MODEL_CARD.md"}
    back = load(path)
    doses = np.tile([0, 1.0, 0, 0, 0], (len(timelines), 1))
    assert torch.equal(back.predict(timelines, doses).composition,
                       fitted.predict(timelines, doses).composition)
    assert "Intended use" in (path / "MODEL_CARD.md").read_text()
    assert not list(tmp_path.glob(".ckpt*")), "no staging directory left behind"

    # A config that does not match the weights.
    config = json.loads((path / "config.json").read_text())
    config["module"]["d_hidden"] = 32
    mismatch = tmp_path / "mismatch"
    mismatch.mkdir()
    (mismatch / "config.json").write_text(json.dumps(config))
    (mismatch / "weights.safetensors").write_bytes((path / "weights.safetensors").read_bytes())
    with pytest.raises(ValueError, match="has shape .* but config.json implies"):
        load(mismatch)
    # A pickle where the weights should be: rejected, never unpickled.
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.json").write_text((path / "config.json").read_text())
    (evil / "weights.safetensors").write_bytes(pickle.dumps({"w": [1, 2, 3]}))
    with pytest.raises(ValueError, match="not a safetensors file"):
        load(evil)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nowhere")
    (mismatch / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="expected a world-model config"):
        load(mismatch)
    # Cell types in another order: the columns would be mislabeled.
    reordered = json.loads((path / "config.json").read_text())
    reordered["types"] = reordered["types"][::-1]
    (mismatch / "config.json").write_text(json.dumps(reordered))
    with pytest.raises(ValueError, match="types: got 'endothelial' at position 0; expected "
                                         "'malignant' there"):
        load(mismatch)
    # NaN weights.
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "weights.safetensors"))
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.dim() == 2)
    tensors[name] = tensors[name].clone()
    tensors[name][0, 0] = float("nan")
    (mismatch / "config.json").write_text((path / "config.json").read_text())
    save_file(tensors, str(mismatch / "weights.safetensors"))
    with pytest.raises(ValueError, match="NaN or infinite"):
        load(mismatch)


def test_training_is_reproducible(synthetic):
    tl, truth = synthetic

    def run() -> torch.Tensor:
        model = WorldModel(WorldModelConfig(SMALL, n_members=1), seed=5)
        cfg = TrainConfig(epochs=2, batch_size=8, patience=2, horizons=4)
        model.fit(tl.subset(range(12)), tl.subset(range(12, 18)), cfg, seed=2,
                  truth_train=truth.subset(range(12)), truth_val=truth.subset(range(12, 18)))
        return model.predict(tl, ["chemo"]).composition

    state = torch.random.get_rng_state()
    assert torch.equal(run(), run())
    assert torch.equal(state, torch.random.get_rng_state()), "global RNG must be untouched"


# ---------------------------------------------------------------------------- recipe
def test_recipe_validation(tmp_path):
    good = Recipe.load(Path(__file__).parents[1] / "immunegym/world_model/configs/default.toml")
    assert good.n_members >= 1 and not good.use_cancer_type
    assert good.n_patients >= 10 * 573, "the default trains on 10x the suite's patients"
    assert good.counts_only and good.train.privileged
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nd_modle = 3\n")
    with pytest.raises(ValueError, match=r"\[model\]: unknown key 'd_modle'"):
        Recipe.load(bad)
    bad.write_text("[train]\nepochs = 0\n")
    with pytest.raises(ValueError, match="train.epochs: got 0"):
        Recipe.load(bad)
    bad.write_text("[train\n")
    with pytest.raises(ValueError, match="config: got .*not valid TOML"):
        Recipe.load(bad)
    bad.write_text("[data]\nsuite = \"none\"\nn_patients = 0\n")
    with pytest.raises(ValueError, match="data.n_patients: got 0; expected an integer >= 1 when"):
        Recipe.load(bad)
    bad.write_text("[data]\nn_patients = -5\n")
    with pytest.raises(ValueError, match="data.n_patients: got -5; expected an integer in 0.."):
        Recipe.load(bad)
    for value in ("1.5", "-0.1", "true", "\"half\""):
        bad.write_text(f"[data]\nrandomized_fraction = {value}\n")
        with pytest.raises(ValueError,
                           match="data.randomized_fraction: got .*; expected a finite number"):
            Recipe.load(bad)
    bad.write_text("[model]\nanchor_lab_bias = 1\n")
    with pytest.raises(ValueError, match="model.anchor_lab_bias: got 1; expected True or False"):
        Recipe.load(bad)
    only_obs = Recipe.load(Path(__file__).parents[1]
                           / "immunegym/world_model/configs/observation_only.toml")
    assert only_obs.module["anchor_lab_bias"] is True and not only_obs.train.privileged
    bad.write_text("[model]\nd_hidden = \"big\"\n")
    with pytest.raises(ValueError, match="model.d_hidden: got 'big'; expected an integer"):
        Recipe.load(bad)
    with pytest.raises(FileNotFoundError):
        Recipe.load(tmp_path / "missing.toml")


# ---------------------------------------------------------------------------- benchmark
def test_baselines_and_benchmark_sections(fitted, timelines):
    data = load_cohorts(SPECS)
    origins = make_origins(data, np.arange(len(data.timelines)), horizons=6)
    assert len(origins.rows) > 0
    assert origins.true_comp.shape[1:] == (6, 20)
    assert (~origins.is_biopsy).any(), "scan days are origins too"
    doses = np.zeros((len(origins.rows), 6, 5))
    for cls in (Persistence, RidgeDynamics, CohortMean, HistoryMean):
        comp, burden = cls().fit(data.timelines).forecast(origins.context, doses)
        assert comp.shape == (len(origins.rows), 6, 20)
        np.testing.assert_allclose(comp.sum(-1), 1.0, atol=1e-6)
        assert np.isfinite(burden).all()
    ridge = RidgeTruth().fit(data.timelines, data.truth_composition, data.truth_burden, 6)
    comp, _ = ridge.forecast(origins.context, doses)
    np.testing.assert_allclose(comp.sum(-1), 1.0, atol=1e-6)
    result = evaluate(fitted, data.timelines, origins, n_samples=4, train_truth=data)
    for key in ("one_step", "rollout_6"):
        section = result[key]
        assert {"world_model", "persistence", "ridge", "cohort_mean", "history_mean",
                "ridge_truth", "noise_floor", "oracle_persistence",
                "estimate_today"} <= set(section)
        assert all(section[m] >= 0 for m in ("world_model", "persistence", "ridge"))
        assert set(section["difference_ci95"]) >= {"persistence", "ridge_truth"}
        assert section["best_baseline"] != "ridge_truth", "a privileged reference, not a rival"
    assert 0.0 <= result["coverage90"] <= 1.0
    assert len(result["coverage90_by_horizon"]) == 6
    assert len(result["crps_by_horizon"]["composition"]) == 6
    assert {"lab", "history_biopsies", "treated", "origin"} <= set(result["strata_rollout_6"])
    assert isinstance(data, LabeledCohorts)


def test_pretrained_default_loads_and_predicts(timelines):
    model = load()
    assert (PRETRAINED / "weights.safetensors").stat().st_size < 20 * 2**20
    assert model.config.leaf_prior, "the shipped model carries its block-split prior"
    assert model.config.privileged and model.config.conformal_scale
    comp = model.predict(timelines, ["anti_pd1"]).composition
    np.testing.assert_allclose(comp.sum(-1).numpy(), 1.0, atol=1e-5)
    card = (PRETRAINED / "MODEL_CARD.md").read_text()
    assert "Intended use" in card and "rollout_6" in card, "the card carries its figures"


def test_recipe_data_synthetic_patients_never_reach_the_test_split():
    from immunegym.world_model.recipe import load_training_data, split_rows

    recipe = Recipe(suite="none", n_patients=28, data_seed=3)
    data = load_training_data(recipe, horizons=2)
    assert len(data.timelines) == 28 and data.synthetic.all()
    assert data.truth is not None and data.truth.log_cells.shape[:2] == data.timelines.days.shape
    assert all("_syn3" in c for c in data.timelines.patients["cohort"])
    train, val, record = split_rows(data, recipe)
    assert record["n_test"] == 0 and len(train) + len(val) == 28
    again = load_training_data(recipe, horizons=2)
    assert torch.equal(again.timelines.counts, data.timelines.counts), "seeded, reproducible"


def test_randomized_twin_cohorts_cover_every_regimen_in_every_design():
    from immunegym.sim.suite import DEFAULT_SUITE
    from immunegym.world_model.recipe import RANDOMIZED_REGIMENS, synthetic_specs

    plain = synthetic_specs(140, 0)
    assert [s.regimens for s in plain] == [s.regimens for s in DEFAULT_SUITE]
    mixed = synthetic_specs(140, 0, randomized_fraction=0.5)
    assert sum(s.n_patients for s in mixed) == 140 and len(mixed) == 2 * len(DEFAULT_SUITE)
    twins = [s for s in mixed if s.regimens == RANDOMIZED_REGIMENS]
    assert {(s.cancer_type, s.lab) for s in twins} == {
        (s.cancer_type, s.lab) for s in DEFAULT_SUITE}, "every design gets a randomized twin"
    assert len({s.seed for s in mixed}) == len(mixed), "every cohort has its own seed"
    assert {s.seed for s in plain} <= {s.seed for s in mixed}, "the observational part is kept"
    assert "anti_ctla4" in RANDOMIZED_REGIMENS and "anti_pd1+anti_ctla4" in RANDOMIZED_REGIMENS
    only = synthetic_specs(28, 1, randomized_fraction=1.0)
    assert all(s.regimens == RANDOMIZED_REGIMENS for s in only)
