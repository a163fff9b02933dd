"""Issue 19, world-model room: every entry point refuses bad input with a clear error.

Tiny untrained models and the three-patient AnnData of ``conftest.py``; checkpoints are
copied to ``tmp_path`` before they are corrupted (shipped files are never touched).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from immunegym.benchmarks.world_model import record_evaluation
from immunegym.validation import ValidationError
from immunegym.world_model import (
    LatentConfig,
    Recipe,
    TrainConfig,
    WorldModel,
    WorldModelConfig,
    build_timelines,
    load,
)
from immunegym.world_model.checkpoint import PRETRAINED, CheckpointNotFoundError
from immunegym.world_model.model import parameter_count
from immunegym.world_model.recipe import run_recipe
from immunegym.world_model.timelines import baseline_timelines

TINY = LatentConfig(d_hidden=8, d_context=2, d_dynamics=8)


@pytest.fixture(scope="module")
def model() -> WorldModel:
    return WorldModel(WorldModelConfig(TINY, n_members=2), seed=0)


@pytest.fixture(scope="module")
def tl():
    comp = np.full((3, 20), 0.05)
    return baseline_timelines(comp, np.array([30.0, 40.0, 50.0]), ["a", "b", "c"],
                              cancer_type="melanoma", programs=())


@pytest.fixture
def saved(model, tmp_path) -> Path:
    return model.save(tmp_path / "ckpt", card={})


def _with_cycles(registered, **changes):
    """The conftest AnnData with a therapy-cycle table (one row changed)."""
    rows = [{"patient_id": p, "cycle": c, "anti_pd1": 1.0, "anti_ctla4": 0.0, "chemo": 0.0,
             "radio": 0.0, "targeted": 0.0} for p in ("p1", "p2", "p3") for c in range(3)]
    rows[0].update(changes)
    registered.uns["therapy_cycles"] = pd.DataFrame(rows)
    return registered


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_with_reversed_cell_types_names_the_first_mismatch(saved):
    config = json.loads((saved / "config.json").read_text())
    config["types"] = config["types"][::-1]
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValidationError, match=r"types: got 'endothelial' at position 0; "
                                              r"expected 'malignant' there"):
        load(saved)


def test_checkpoint_with_nan_weights_names_the_tensor(saved):
    tensors = load_file(str(saved / "weights.safetensors"))
    name = sorted(k for k, v in tensors.items() if v.is_floating_point() and v.dim() == 2)[0]
    tensors[name] = tensors[name].clone()
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(saved / "weights.safetensors"))
    with pytest.raises(ValidationError, match=rf"tensor {name} holds 1 NaN"):
        load(saved)


@pytest.mark.parametrize("key, value, message", [
    (("module", "d_hidden"), "big", r"module.d_hidden: got 'big'; expected an integer"),
    (("module", "d_modle"), 3, r"module: unknown key 'd_modle'"),
    (("n_members",), "3", r"n_members: got '3'; expected an integer"),
    (("labs",), "tme_fine", r"labs: got 'tme_fine'; expected a list of names"),
    (("privileged",), "no", r"privileged: got 'no'; expected True or False"),
    (("conformal_scale",), [1.0, float("nan")], r"conformal_scale\[1\]: got nan"),
    (("extra_key",), 1, r"config: unknown key 'extra_key'"),
])
def test_checkpoint_config_values_are_checked_by_key(saved, key, value, message):
    config = json.loads((saved / "config.json").read_text())
    target = config
    for part in key[:-1]:
        target = target[part]
    target[key[-1]] = value
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValidationError, match=message):
        load(saved)


def test_checkpoint_missing_files_bad_json_and_bad_history(saved, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="checkpoint: got .*nowhere"):
        load(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nowhere")
    (saved / "training.json").write_text('{"history": [[{"epoch": 0, "lost": 1}]]}')
    with pytest.raises(ValidationError, match="history: unknown key 'lost'"):
        load(saved)
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ValidationError, match=r"checkpoint: got .*config.json'; expected a "
                                              "JSON world-model config"):
        load(saved)
    (saved / "weights.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError, match="weights.safetensors"):
        load(saved)


def test_load_checks_path_and_device():
    with pytest.raises(ValidationError, match="device: got 'tpu'"):
        load(device="tpu")
    with pytest.raises(ValidationError, match="path: got 42"):
        load(42)  # type: ignore[arg-type]


def test_save_refuses_the_shipped_folders_and_bad_cards(model, tmp_path):
    with pytest.raises(ValidationError, match="--replace-shipped"):
        model.save(PRETRAINED)
    with pytest.raises(ValidationError, match="--replace-shipped"):
        model.save(PRETRAINED.parent / "world_model_observation_only" / "sub")
    with pytest.raises(ValidationError, match="card: got"):
        model.save(tmp_path / "c", card={"x": object()})
    assert not (tmp_path / "c").exists(), "nothing written on a refused save"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValidationError, match="path: got .*a directory"):
        model.save(tmp_path / "file")


def test_record_evaluation_refuses_the_shipped_checkpoint(model, tmp_path):
    result = {k: 0 for k in ("one_step", "rollout_6", "coverage90", "coverage90_by_horizon",
                             "n_origins", "n_patients", "main_set")}
    with pytest.raises(ValidationError, match="path: got .*--replace-shipped"):
        record_evaluation(model, result)
    with pytest.raises(ValidationError, match="result: got"):
        record_evaluation(model, {}, tmp_path / "c")
    out = record_evaluation(model, result, tmp_path / "c", quick=True)
    assert json.loads((out / "training.json").read_text())["evaluation"]["n_origins"] == 0


# ---------------------------------------------------------------------------- WorldModel()
def test_world_model_constructor_arguments():
    with pytest.raises(ValidationError, match="d_hidden: got 'big'"):
        LatentConfig(d_hidden="big")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="d_hidden: got -3"):
        LatentConfig(d_hidden=-3)
    with pytest.raises(ValidationError, match="n_members: got 0"):
        WorldModelConfig(TINY, n_members=0)
    with pytest.raises(ValidationError, match="config: got"):
        WorldModel({"n_members": 2})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="seed: got -1"):
        WorldModel(WorldModelConfig(TINY, n_members=1), seed=-1)
    with pytest.raises(ValidationError, match="device: got 'tpu'"):
        WorldModel(WorldModelConfig(TINY, n_members=1), device="tpu")


def test_world_model_memory_is_estimated_before_building(monkeypatch):
    monkeypatch.setenv("IMMUNEGYM_MAX_MEMORY_GB", "0.01")
    big = LatentConfig(d_hidden=4096)
    with pytest.raises(ValidationError, match="config: got .*GiB.*IMMUNEGYM_MAX_MEMORY_GB"):
        WorldModel(WorldModelConfig(big, n_members=3))


def test_parameter_count_matches_the_built_module(model):
    assert parameter_count(TINY) == model.num_parameters()


def test_train_config_types_and_ranges():
    with pytest.raises(ValidationError, match="epochs: got 2.5"):
        TrainConfig(epochs=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="train.lr: got 'fast'"):
        TrainConfig.from_dict({"lr": "fast"})
    with pytest.raises(ValidationError, match="train: unknown key 'epoch'.*did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    assert TrainConfig.from_dict({"lr": 1}).lr == 1.0


# ---------------------------------------------------------------------------- recipe
def test_recipe_keys_types_ranges_and_files(tmp_path):
    bad = tmp_path / "r.toml"
    cases = {
        "[modle]\n": r"config: unknown key 'modle'.*did you mean 'model'",
        "[model]\nd_hiden = 3\n": r"\[model\]: unknown key 'd_hiden'.*did you mean 'd_hidden'",
        "[model]\nd_hidden = \"big\"\n": r"model.d_hidden: got 'big'",
        "[split]\ntest_fraction = \"x\"\n": r"split.test_fraction: got 'x'",
        "[split]\ntest_fraction = 0.6\nval_fraction = 0.5\n": r"split.val_fraction: got 0.5",
        "[data]\nsuite = \"/no/such/suite\"\n": r"data.suite: got '/no/such/suite'",
        "[data]\nseed = -1\n": r"data.seed: got -1",
        "[train]\nepochs = 2.5\n": r"train.epochs: got 2.5",
        "model = 3\n": r"\[model\]: got 3; expected a TOML table",
    }
    for text, message in cases.items():
        bad.write_text(text)
        with pytest.raises(ValidationError, match=message):
            Recipe.load(bad)
    with pytest.raises(FileNotFoundError, match="config: got .*no such file"):
        Recipe.load(tmp_path / "missing.toml")


def test_run_recipe_refuses_the_shipped_folder_before_training():
    with pytest.raises(ValidationError, match="out: got .*--replace-shipped"):
        run_recipe(Recipe(suite="none", n_patients=1), PRETRAINED)


# ---------------------------------------------------------------------------- timelines
def test_build_timelines_refuses_bad_therapy_cycles(registered):
    cases = [({"anti_pd1": -1.0}, r"therapy_cycles'\]\.anti_pd1: got -1.0 for patient 'p1'"),
             ({"chemo": float("nan")}, r"therapy_cycles'\]\.chemo: got nan"),
             ({"cycle": 2.5}, r"therapy_cycles'\]\.cycle: got 2.5"),
             ({"anti_pd1": 500.0}, r"anti_pd1: got 500 in one cycle.*unit mistake"),
             ({"anti_pd_1": 1.0}, r"unknown column 'anti_pd_1'.*did you mean 'anti_pd1'")]
    for change, message in cases:
        with pytest.raises(ValidationError, match=message):
            build_timelines(_with_cycles(registered, **change))


def test_build_timelines_refuses_days_in_the_wrong_unit_before_allocating(registered):
    registered.obs["day"] = registered.obs["day"] * 1e6
    with pytest.raises(ValidationError, match=r"got 21000000\.0"):
        build_timelines(registered)


def test_build_timelines_refuses_bad_scan_days(registered):
    registered.uns["imaging"] = pd.DataFrame({"patient_id": ["p1", "p2"],
                                              "day": [0.0, 2.1e7], "sod_mm": [30.0, 20.0]})
    with pytest.raises(ValidationError, match=r"uns\['imaging'\]\.day: got 21000000\.0 for "
                                              r"a scan of patient 'p2'.*unit mistake"):
        build_timelines(registered)


def test_build_timelines_arguments(registered, monkeypatch):
    with pytest.raises(ValidationError, match="adata: got '<DataFrame>'"):
        build_timelines(registered.obs)
    with pytest.raises(ValidationError, match="horizon_days: got -1"):
        build_timelines(registered, horizon_days=-1)
    monkeypatch.setenv("IMMUNEGYM_MAX_MEMORY_GB", "0.0000001")
    with pytest.raises(ValidationError, match="adata: got .*GiB"):
        build_timelines(registered)


def test_timelines_repr_is_compact(registered):
    text = repr(build_timelines(registered))
    assert text.startswith("Timelines(patients=3") and "tensor" not in text
    assert len(text) < 200


# ---------------------------------------------------------------------------- inference
def test_predict_and_estimate_arguments(model, tl):
    with pytest.raises(ValidationError, match=r"doses: got \[-1.0"):
        model.predict(tl, -np.ones((3, 5)))
    with pytest.raises(ValidationError, match="doses: got 'anti_pd9'.*not a therapy"):
        model.predict(tl, "anti_pd9")
    with pytest.raises(ValidationError, match="dt: got 100000.0"):
        model.predict(tl, ["anti_pd1"], dt=1e5)
    with pytest.raises(ValidationError, match="timelines: got '<str>'"):
        model.estimate("cohort.h5ad")  # type: ignore[arg-type]
    negative = tl.subset(range(3))
    negative.cycle_doses[0, 0, 0] = -1.0
    with pytest.raises(ValidationError, match="timelines.cycle_doses: got .*patient 'a'"):
        model.predict(negative, ["anti_pd1"])
    text = repr(model.predict(tl, "anti_pd1@0.5"))
    assert text.startswith("Prediction(patients=3, types=20, members=2")


def test_rollout_bounds_noise_and_regimen_text(model, tl, monkeypatch):
    with pytest.raises(ValidationError, match="noise: got 'gauss'"):
        model.rollout(tl, ["anti_pd1"], 2, noise="gauss")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="n_steps: got 1000000"):
        model.rollout(tl, ["anti_pd1"], 10**6)
    with pytest.raises(ValidationError, match="n_samples: got 0"):
        model.rollout(tl, ["anti_pd1"], 2, n_samples=0, noise="both")
    with pytest.raises(ValidationError, match="n_steps: got None"):
        model.rollout(tl, "anti_pd1")
    monkeypatch.setenv("IMMUNEGYM_MAX_MEMORY_GB", "0.001")
    with pytest.raises(ValidationError, match="n_samples: got 50000; this needs about"):
        model.rollout(tl, ["anti_pd1"], 100, n_samples=50_000, noise="both")
    monkeypatch.delenv("IMMUNEGYM_MAX_MEMORY_GB")
    roll = model.rollout(tl, "chemo", 6)  # the standard course: 4 cycles, then nothing
    assert repr(roll).startswith("Rollout(samples=2, patients=3, steps=6, types=20")
    plan = model.rollout(tl, np.tile([0, 0, 1.0, 0, 0], (3, 6, 1)) *
                         (np.arange(6) < 4)[None, :, None])
    torch.testing.assert_close(roll.compositions, plan.compositions)


def test_smooth_and_fit_arguments(model, tl):
    assert repr(model.smooth(tl)).startswith("Smoothed(patients=3")
    with pytest.raises(ValidationError, match="train: got '<list>'"):
        model.fit([1, 2, 3])
    with pytest.raises(ValidationError, match="train_config: got"):
        model.fit(tl, tl, train_config={"epochs": 1})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="seed: got -2"):
        model.fit(tl, tl, seed=-2)
