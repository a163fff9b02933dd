"""Fine-tuning the world model on real pairs: composition timelines, WorldModel.fine_tune,
and the MORRISON-1 pre -> on protocol of immunegym.benchmarks.real_finetune."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from immunegym.benchmarks.real_finetune import (
    ON_TREATMENT_DAY,
    fine_tune_without,
    morrison1_pairs,
    pair_timelines,
)
from immunegym.benchmarks.response_real import ReferenceBank, fit_without
from immunegym.data.real import morrison1_samples
from immunegym.data.vocab import THERAPIES
from immunegym.ontology import FINE_TYPES
from immunegym.validation import ValidationError
from immunegym.world_model import WorldModel, load
from immunegym.world_model.model import FINE_TUNE_CONFIG
from immunegym.world_model.timelines import baseline_timelines, composition_timelines

TINY = replace(FINE_TUNE_CONFIG, epochs=2, patience=2)


@pytest.fixture(scope="module")
def model() -> WorldModel:
    return load()


@pytest.fixture(scope="module")
def samples():
    return morrison1_samples()


@pytest.fixture(scope="module")
def reference() -> ReferenceBank:
    return ReferenceBank.from_sim(120, seed=3)


def _random_comp(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.dirichlet(np.ones(len(FINE_TYPES)), size=shape)


def _two_point(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    doses = np.zeros((n, 2, len(THERAPIES)), np.float32)
    doses[:, 0, 1] = 1.0
    return composition_timelines(_random_comp(rng, (n, 2)), np.tile([0.0, 21.0], (n, 1)),
                                 [f"p{i}" for i in range(n)], cycle_doses=doses,
                                 cancer_type="melanoma", programs=())


# ------------------------------------------------------------------ composition timelines
def test_composition_timelines_holds_every_point_and_the_doses():
    tl = _two_point(5)
    assert tl.days.shape == (5, 2)
    assert torch.equal(tl.days[0], torch.tensor([0.0, 21.0]))
    assert bool(tl.comp_observed.all()) and not bool(tl.burden_observed.any())
    assert torch.allclose(tl.fractions.sum(-1), torch.ones(5, 2))
    assert float(tl.cycle_doses[:, 0, 1].sum()) == 5.0


def test_baseline_timelines_is_the_one_point_case():
    rng = np.random.default_rng(1)
    comp = _random_comp(rng, (3,))
    one = baseline_timelines(comp, np.array([40.0, 50.0, 60.0]), ["a", "b", "c"],
                             cancer_type="melanoma", programs=())
    many = composition_timelines(comp[:, None], np.zeros((3, 1)), ["a", "b", "c"],
                                 sod_mm=np.array([[40.0], [50.0], [60.0]]),
                                 cancer_type="melanoma", programs=())
    for name in ("days", "counts", "fractions", "burden", "burden_observed", "cycle_doses"):
        assert torch.equal(getattr(one, name), getattr(many, name)), name


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"days": np.array([[0.0, 0.0]])}, "days"),
    ({"days": np.array([[0.0]])}, "days"),
    ({"composition": -np.ones((1, 2, len(FINE_TYPES)))}, "composition"),
    ({"sod_mm": np.array([[10.0, -1.0]])}, "sod_mm"),
    ({"cycle_doses": np.ones((1, 2, 3))}, "cycle_doses"),
])
def test_composition_timelines_names_the_bad_field(kwargs, field):
    args = {"composition": np.full((1, 2, len(FINE_TYPES)), 0.05),
            "days": np.array([[0.0, 21.0]])}
    extra = {k: v for k, v in kwargs.items() if k not in args}
    args.update({k: v for k, v in kwargs.items() if k in args})
    with pytest.raises(ValidationError, match=field):
        composition_timelines(args["composition"], args["days"], ["p"], cancer_type="melanoma",
                              programs=(), **extra)


# ------------------------------------------------------------------ WorldModel.fine_tune
def test_fine_tune_returns_a_changed_copy_and_leaves_the_model_alone(model):
    before = {k: v.clone() for k, v in model.members[0].state_dict().items()}
    tuned = model.fine_tune(_two_point(40), train_config=TINY, seed=0)
    after = model.members[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    moved = [k for k, v in tuned.members[0].state_dict().items()
             if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert moved, "fine-tuning changed no weight"
    # The standardization and the leaf prior keep their meaning.
    assert torch.equal(tuned.members[0].center, model.members[0].center)
    assert tuned.leaf_prior().tolist() == model.leaf_prior().tolist()
    assert tuned.card["fine_tuned"]["patients"] + tuned.card["fine_tuned"]["val_patients"] == 40


def test_fine_tune_is_reproducible(model):
    tl = _two_point(30, seed=4)
    a = model.fine_tune(tl, train_config=TINY, seed=5)
    b = model.fine_tune(tl, train_config=TINY, seed=5)
    for x, y in zip(a.members[0].parameters(), b.members[0].parameters(), strict=True):
        assert torch.equal(x, y)


def test_fine_tune_refuses_single_points_an_unfitted_model_and_a_bad_config(model):
    one = baseline_timelines(np.full((20, len(FINE_TYPES)), 0.05), None,
                             [f"p{i}" for i in range(20)], cancer_type="melanoma", programs=())
    with pytest.raises(ValidationError, match="at least two time points"):
        model.fine_tune(one, train_config=TINY)
    with pytest.raises(ValidationError, match="not trained yet"):
        WorldModel().fine_tune(_two_point(20), train_config=TINY)
    with pytest.raises(ValidationError, match="train_config"):
        model.fine_tune(_two_point(20), train_config={"epochs": 2})


# ------------------------------------------------------------------ MORRISON-1 pairs
def test_morrison1_pairs_are_the_68_subjects_with_pre_and_on(samples):
    pairs = morrison1_pairs(samples)
    assert len(pairs) == 68 and pairs["subject_id"].is_unique
    assert set(pairs["cohort"]) == {"038", "064", "gide"}
    by_id = samples.set_index("sample_id")
    assert set(by_id.loc[pairs["pre_sample"], "timepoint"]) == {"pre"}
    assert set(by_id.loc[pairs["on_sample"], "timepoint"]) == {"on"}


def test_morrison1_pairs_names_a_missing_column_and_an_unknown_regimen(samples):
    with pytest.raises(ValidationError, match="'regimen'"):
        morrison1_pairs(samples.drop(columns=["regimen"]))
    broken = samples.copy()
    broken.loc[broken["timepoint"] == "pre", "regimen"] = "radiotherapy"
    with pytest.raises(ValidationError, match="radiotherapy"):
        morrison1_pairs(broken)


def test_pair_timelines_place_the_on_sample_one_cycle_later(model, samples, reference):
    pairs = morrison1_pairs(samples).head(6)
    obs = fit_without(samples[samples["timepoint"] == "pre"], "va", reference)
    tl = pair_timelines(model, obs, samples, pairs)
    assert tl.days[:, 1].tolist() == [ON_TREATMENT_DAY] * 6
    assert tl.patient_ids == [str(s) for s in pairs["subject_id"]]
    # The regimen's first cycle is dosed: everyone in the head got anti-PD-1 first or CTLA-4.
    assert bool((tl.cycle_doses[:, 0].sum(-1) > 0).all())
    with pytest.raises(ValidationError, match="on_day"):
        pair_timelines(model, obs, samples, pairs, on_day=0.0)


def test_fine_tune_without_never_sees_the_test_cohort(model, samples, reference, monkeypatch):
    import immunegym.world_model.model as wm_model

    monkeypatch.setattr(wm_model, "FINE_TUNE_CONFIG", TINY)
    tuned, info = fine_tune_without(model, reference, "gide", samples=samples)
    assert "gide" not in info["pairs_by_cohort"]
    assert info["pairs"] == 68 - int((morrison1_pairs(samples)["cohort"] == "gide").sum())
    assert tuned is not model


def test_morrison1_benchmark_scores_the_fine_tuned_model_per_fold(model, samples, reference,
                                                                  monkeypatch):
    import immunegym.world_model.model as wm_model
    from immunegym.benchmarks.response_real import evaluate_morrison1

    monkeypatch.setattr(wm_model, "FINE_TUNE_CONFIG", TINY)
    out = evaluate_morrison1(model, reference, samples=samples, calibrated=False,
                             finetuned=True, n_bootstrap=50)
    assert "world_model_finetuned" in out["pooled_auroc"]
    assert all("world_model_finetuned" in b for b in out["per_cohort"].values())
    delta = out["deltas"]["world_model_finetuned"]["world_model"]
    assert delta["value"] == pytest.approx(out["pooled_auroc"]["world_model_finetuned"]
                                           - out["pooled_auroc"]["world_model"])
    pairs = {c: r["pairs"] for c, r in out["finetune"].items()}
    # A cohort without pairs of its own trains on all 68; one with pairs leaves them out.
    assert pairs["va"] == 68 and pairs["038"] == 68 - 42
