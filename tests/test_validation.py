"""The shared validation layer: every check names the field, the value and what was expected."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from immunegym import validation as v
from immunegym.validation import ValidationError


def test_validation_error_is_caught_as_value_and_type_error():
    with pytest.raises(ValueError):
        raise v.bad("x", 1, "two")
    with pytest.raises(TypeError):
        raise v.bad("x", 1, "two")


def test_bad_message_form_and_long_values_are_shortened():
    err = v.bad("n_patients", "x" * 500, "an integer")
    text = str(err)
    assert text.startswith("n_patients: got 'xxx")
    assert text.endswith("; expected an integer")
    assert len(text) < 140


@pytest.mark.parametrize("value", [True, 2.0, "3", None, np.float64(1)])
def test_integer_refuses_non_integers(value):
    with pytest.raises(ValidationError, match=r"^horizon: got .*; expected an integer in 1\.\.10"):
        v.integer("horizon", value, low=1, high=10)


def test_integer_bounds_and_numpy_ints():
    assert v.integer("n", np.int64(5), low=1) == 5
    assert isinstance(v.integer("n", np.int64(5), low=1), int)
    with pytest.raises(ValidationError, match="expected an integer >= 1 .*raise"):
        v.integer("n", 0, low=1, hint="raise it with X")
    with pytest.raises(ValidationError, match="expected an integer <= 3"):
        v.integer("n", 4, high=3)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "0.1", True, None])
def test_number_refuses_non_finite_and_non_numbers(value):
    with pytest.raises(ValidationError, match=r"^imaging_cv: got"):
        v.number("imaging_cv", value, low=0, high=1)


def test_number_open_bounds():
    assert v.number("cv", 0.5, low=0, high=1) == 0.5
    assert v.number("cv", 0, low=0) == 0.0
    with pytest.raises(ValidationError, match=r"> 0"):
        v.number("cv", 0, low=0, low_open=True)
    with pytest.raises(ValidationError, match=r"\[0, 1\)"):
        v.number("cv", 1, low=0, high=1, high_open=True)


@pytest.mark.parametrize("value", ["no", "false", 0, 1, None])
def test_boolean_refuses_truthy_stand_ins(value):
    with pytest.raises(ValidationError, match="observation_noise: got .*; expected True or False"):
        v.boolean("observation_noise", value)


def test_boolean_accepts_numpy_bool():
    assert v.boolean("flag", np.bool_(True)) is True


def test_choice_names_the_nearest_option():
    assert v.choice("method", "cem", ["beam", "cem"]) == "cem"
    with pytest.raises(ValidationError, match="did you mean 'beam'"):
        v.choice("method", "bream", ["beam", "cem"])
    with pytest.raises(ValidationError, match="method: got 3"):
        v.choice("method", 3, ["beam", "cem"])


def test_known_keys_names_the_typo():
    assert v.known_keys("options", {"patient": 3}, {"patient", "cancer_type"}) == {"patient": 3}
    assert v.known_keys("options", None, {"patient"}) == {}
    typo = "options: unknown key 'patiant'.*did you mean 'patient'"
    with pytest.raises(ValidationError, match=typo):
        v.known_keys("options", {"patiant": 3}, {"patient", "cancer_type"})
    with pytest.raises(ValidationError, match="options: got \\[1\\]; expected a mapping"):
        v.known_keys("options", [1], {"patient"})


@pytest.mark.parametrize("value", [-1, 2**70, 1.0, "0", True])
def test_seed_range(value):
    with pytest.raises(ValidationError, match="seed: got .*non-negative integer below 2\\*\\*63"):
        v.seed("seed", value)


def test_seed_optional():
    assert v.seed("seed", None, optional=True) is None
    assert v.seed("seed", 2**63 - 1) == 2**63 - 1


def test_device_resolution_and_errors():
    assert v.device("device", "cpu") == "cpu"
    assert v.device("device", torch.device("cpu")) == "cpu"
    assert v.device("device", "auto") in ("cpu", "cuda")
    with pytest.raises(ValidationError, match="device: got 'tpu'"):
        v.device("device", "tpu")
    with pytest.raises(ValidationError, match="device: got 'cuda:x'"):
        v.device("device", "cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(ValidationError, match="CUDA is not available"):
            v.device("device", "cuda")


def test_memory_budget_names_limit_and_how_to_raise(monkeypatch):
    monkeypatch.setenv(v.MEMORY_LIMIT_ENV, "1")
    v.memory_budget("bank_size", 10, 2**29)
    expected = (r"bank_size: got 1000000000; this needs about 4\.0 GiB for the bank, above the "
                r"limit of 1\.0 GiB \(set IMMUNEGYM_MAX_MEMORY_GB")
    with pytest.raises(ValidationError, match=expected):
        v.memory_budget("bank_size", 10**9, 4 * 2**30, "the bank")
    monkeypatch.setenv(v.MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(ValidationError, match="IMMUNEGYM_MAX_MEMORY_GB: got 'lots'"):
        v.memory_limit_bytes()


def test_finite_array_for_numpy_and_torch():
    v.finite_array("w", np.ones(3))
    v.finite_array("w", torch.ones(3))
    v.finite_array("w", np.arange(3))
    with pytest.raises(ValidationError, match="w: got '<array with 1 non-finite values>'"):
        v.finite_array("w", np.array([1.0, np.nan]))
    with pytest.raises(ValidationError, match="w: got '<tensor with 2 non-finite values>'"):
        v.finite_array("w", torch.tensor([np.inf, np.nan, 1.0]))


def test_existing_file_classes(tmp_path):
    with pytest.raises(ValidationError, match="no such file"):
        v.existing_file("patient_source", tmp_path / "missing.h5ad", hdf5=True)
    with pytest.raises(ValidationError, match="not a directory"):
        v.existing_file("patient_source", tmp_path, hdf5=True)
    text = tmp_path / "cells.h5ad"
    text.write_text("a,b\n1,2\n")
    with pytest.raises(ValidationError, match="this file is not HDF5"):
        v.existing_file("patient_source", text, hdf5=True)
    with pytest.raises(ValidationError, match="ending in .toml"):
        v.existing_file("config", text, suffixes={".toml"})
    with pytest.raises(ValidationError, match="a path to a file"):
        v.existing_file("config", 3)
    assert v.existing_file("config", str(text)) == text


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere; permissions cannot fail")
def test_output_path_unwritable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ValidationError, match="is not writable"):
            v.output_path("out", locked / "suite", directory=True)
    finally:
        locked.chmod(0o700)


def test_output_path_kinds(tmp_path):
    file = tmp_path / "f.json"
    file.write_text("{}")
    with pytest.raises(ValidationError, match="a directory \\(this path is a file\\)"):
        v.output_path("out", file, directory=True)
    with pytest.raises(ValidationError, match="a path under a directory"):
        v.output_path("out", file / "x.json")
    with pytest.raises(ValidationError, match="a file path \\(this path is a directory\\)"):
        v.output_path("json", tmp_path)
    assert v.output_path("json", tmp_path / "new" / "x.json") == tmp_path / "new" / "x.json"


def test_shipped_dirs_refused_unless_allowed(tmp_path):
    shipped = v.SHIPPED_DIRS[0] / "world_model"
    assert v.is_shipped(shipped)
    assert not v.is_shipped(tmp_path)
    with pytest.raises(ValidationError, match="read-only unless you pass --replace-shipped"):
        v.refuse_shipped("out", shipped, allow=False, flag="--replace-shipped")
    assert v.refuse_shipped("out", shipped, allow=True, flag="--replace-shipped") == shipped
