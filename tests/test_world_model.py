"""World model: timelines, module, fit/predict/rollout, checkpoints, recipe, benchmark."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.special import gammaln

from immunegym.benchmarks.baselines import CohortMean, Persistence, RidgeDynamics
from immunegym.benchmarks.world_model import evaluate, load_cohorts, make_origins
from immunegym.ontology import FINE_TYPES, tree_wasserstein
from immunegym.sim.cohort import CohortSpec, simulate_cohort
from immunegym.world_model import (
    ModuleConfig,
    Recipe,
    TrainConfig,
    WorldModel,
    WorldModelConfig,
    build_timelines,
    concat_timelines,
    load,
    split_patients,
)
from immunegym.world_model.batching import cumulative_dose, interval_dose, split_blocks
from immunegym.world_model.checkpoint import PRETRAINED
from immunegym.world_model.module import (
    NextState,
    _gamma,
    dirichlet_multinomial_nll,
)

SPECS = (
    CohortSpec("t_fine", "melanoma", ("anti_pd1", "none"), "tme_fine", n_patients=10, seed=7,
               horizon_days=200),
    CohortSpec("t_panel", "nsclc", ("anti_pd1+chemo",), "clinical_panel", n_patients=8,
               seed=8, horizon_days=200),
)
SMALL = ModuleConfig(n_programs=8, d_model=16, n_heads=2, n_layers=1, d_ff=32, dropout=0.0)


@pytest.fixture(scope="module")
def cohorts():
    return [simulate_cohort(s) for s in SPECS]


@pytest.fixture(scope="module")
def timelines(cohorts):
    return concat_timelines([build_timelines(c.adata) for c in cohorts])


@pytest.fixture(scope="module")
def fitted(timelines):
    model = WorldModel(WorldModelConfig(SMALL, n_members=2, programs=timelines.programs), seed=3)
    split = split_patients(timelines.patient_ids, test_fraction=0.0, val_fraction=0.25)
    train = timelines.subset(np.nonzero(split == "train")[0])
    val = timelines.subset(np.nonzero(split == "val")[0])
    model.fit(train, val, TrainConfig(epochs=6, batch_size=8, patience=6, lr=5e-3), seed=1)
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
    with pytest.raises(ValueError, match="last dimension is 3"):
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


def test_seeded_gamma_sampler_is_reproducible_and_unbiased():
    alpha = torch.tensor([0.3, 1.0, 5.0, 40.0]).expand(20000, -1)
    a = _gamma(alpha, torch.Generator().manual_seed(0))
    b = _gamma(alpha, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    np.testing.assert_allclose(a.mean(0).numpy(), [0.3, 1.0, 5.0, 40.0], rtol=0.05)
    np.testing.assert_allclose(a.var(0).numpy(), [0.3, 1.0, 5.0, 40.0], rtol=0.1)


# ---------------------------------------------------------------------------- model
def test_fit_lowers_the_loss_and_predictions_are_valid(fitted, timelines):
    for history in fitted.history:
        assert min(r.val_loss for r in history[1:]) < history[0].val_loss
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
    # Aleatoric samples spread; the mean path does not.
    assert float(alea.compositions.std(0).mean()) > 0
    assert float(mean.days[0, 0] - timelines.days[0, timelines.lengths[0] - 1]) == 21.0


def test_predict_rejects_bad_input(fitted, timelines):
    with pytest.raises(ValueError, match="unknown therapies"):
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
    config["module"]["d_model"] = 32
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
    with pytest.raises(ValueError, match="not a world-model config"):
        load(mismatch)


def test_training_is_reproducible(timelines):
    def run() -> torch.Tensor:
        model = WorldModel(WorldModelConfig(SMALL, n_members=1, programs=timelines.programs),
                           seed=5)
        cfg = TrainConfig(epochs=2, batch_size=8, patience=2)
        model.fit(timelines.subset(range(12)), timelines.subset(range(12, 18)), cfg, seed=2)
        return model.predict(timelines, ["chemo"]).composition

    state = torch.random.get_rng_state()
    assert torch.equal(run(), run())
    assert torch.equal(state, torch.random.get_rng_state()), "global RNG must be untouched"


# ---------------------------------------------------------------------------- recipe
def test_recipe_validation(tmp_path):
    good = Recipe.load(Path(__file__).parents[1] / "immunegym/world_model/configs/default.toml")
    assert good.n_members >= 1 and good.suite == "default" and not good.use_cancer_type
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nd_modle = 3\n")
    with pytest.raises(ValueError, match=r"unknown keys \['d_modle'\] in \[model\]"):
        Recipe.load(bad)
    bad.write_text("[train]\nepochs = 0\n")
    with pytest.raises(ValueError, match="train.epochs"):
        Recipe.load(bad)
    bad.write_text("[train\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        Recipe.load(bad)
    with pytest.raises(FileNotFoundError):
        Recipe.load(tmp_path / "missing.toml")


# ---------------------------------------------------------------------------- benchmark
def test_baselines_and_benchmark_sections(fitted, timelines):
    data = load_cohorts(SPECS)
    origins = make_origins(data, np.arange(len(data.timelines)), horizons=6)
    assert len(origins.rows) > 0
    assert origins.true_comp.shape[1:] == (6, 20)
    doses = np.zeros((len(origins.rows), 6, 5))
    for cls in (Persistence, RidgeDynamics, CohortMean):
        comp, burden = cls().fit(data.timelines).forecast(origins.context, doses)
        assert comp.shape == (len(origins.rows), 6, 20)
        np.testing.assert_allclose(comp.sum(-1), 1.0, atol=1e-6)
        assert np.isfinite(burden).all()
    result = evaluate(fitted, data.timelines, origins, n_samples=4)
    for key in ("one_step", "rollout_6"):
        section = result[key]
        assert {"world_model", "persistence", "ridge", "cohort_mean"} <= set(section)
        assert all(section[m] >= 0 for m in ("world_model", "persistence", "ridge"))
    assert 0.0 <= result["coverage90"] <= 1.0


def test_pretrained_default_loads_and_predicts(timelines):
    model = load()
    assert (PRETRAINED / "weights.safetensors").stat().st_size < 20 * 2**20
    assert model.config.leaf_prior, "the shipped model carries its block-split prior"
    comp = model.predict(timelines, ["anti_pd1"]).composition
    np.testing.assert_allclose(comp.sum(-1).numpy(), 1.0, atol=1e-5)
    card = (PRETRAINED / "MODEL_CARD.md").read_text()
    assert "Intended use" in card and "rollout_6" in card, "the card carries its figures"
