"""Every entry point of the environments refuses bad input with a clear ValidationError.

``gym.make`` / ``gym.make_vec`` keywords, the :class:`Scenario` fields, scenario TOML files,
``reset(seed=, options=)``, ``step(action)`` and render modes: each message names the field
(``<field>: got <value>; expected <what>``), and sizes are refused before anything is
allocated. Tiny envs only (ImmuneSim, a few patients).
"""

from __future__ import annotations

import functools
import math
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

import immunegym  # noqa: F401  (registers the ids)
from immunegym.env.patients import PatientBank
from immunegym.env.registration import register_envs
from immunegym.env.scenario import MAX_BANK_SIZE, Scenario, load_scenario_file
from immunegym.env.single import ImmuneSimEnv
from immunegym.env.vector import ImmuneSimVectorEnv
from immunegym.validation import ValidationError

TINY = {"horizon": 2, "bank_size": 4}


@functools.cache
def _model():
    from immunegym.world_model import load

    return load()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny batches: intra-op threads only add contention on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def single():
    env = ImmuneSimEnv(**TINY)
    env.reset(seed=0)
    return env


@pytest.fixture(scope="module")
def vector():
    env = ImmuneSimVectorEnv(3, **TINY)
    env.reset(seed=0)
    return env


# ============================================================================ gym.make keywords
@pytest.mark.parametrize(("kwargs", "field"), [
    ({"device": "tpu"}, "device"),
    ({"device": 3}, "device"),
    ({"device": "cuda:x"}, "device"),
    ({"imaging_cv": "x"}, "imaging_cv"),
    ({"imaging_cv": True}, "imaging_cv"),
    ({"imaging_cv": math.nan}, "imaging_cv"),
    ({"observation_noise": "no"}, "observation_noise"),
    ({"observation_noise": 0}, "observation_noise"),
    ({"terminate_on_progression": "false"}, "terminate_on_progression"),
    ({"horizon": 10**12}, "horizon"),
    ({"horizon": 2.0}, "horizon"),
    ({"cycle_days": math.nan}, "cycle_days"),
    ({"bank_seed": -1}, "bank_seed"),
    ({"bank_seed": 2**70}, "bank_seed"),
    ({"biopsy_cells": 10**12}, "biopsy_cells"),
    ({"scan_every": 10**9}, "scan_every"),
    ({"cancer_types": {"foo": 1.0}}, "cancer_types"),
    ({"cancer_types": ["melanoma"]}, "cancer_types"),
    ({"cancer_types": {"melanoma": math.inf}}, r"cancer_types\['melanoma'\]"),
    ({"dose_levels": 3}, "dose_levels"),
    ({"dose_levels": (0.0, True)}, "dose_levels"),
    ({"dose_levels": tuple(float(i) / 100 for i in range(100))}, "dose_levels"),
    ({"menu": "anti_pd1"}, "menu"),
    ({"menu": [1, 2]}, "menu"),
    ({"menu": ["none"] * 300}, "menu"),
    ({"reward": {"tumor": True}}, r"reward\.tumor"),
    ({"reward": [1]}, "reward"),
    ({"render_mode": 3}, "render_mode"),
    ({"render_mode": "rgb"}, "render_mode"),
    ({"model": "x"}, "model"),
    ({"bank": "x"}, "bank"),
    ({"scenario": {}}, "scenario"),
    ({"world_options": {"chunk_size": 4}}, "world_options"),  # ImmuneSim has no model
])
def test_make_refuses_bad_keywords(kwargs, field):
    with pytest.raises(ValidationError, match=rf"^{field}: got"):
        gym.make("ImmuneSim-v0", **{**TINY, **kwargs})


def test_make_names_unknown_keyword_with_the_nearest():
    with pytest.raises(ValidationError, match=r"unknown key 'devce'.*did you mean 'device'"):
        gym.make("ImmuneSim-v0", devce="cpu", **TINY)
    with pytest.raises(ValidationError, match=r"unknown key 'horizn'.*'horizon'"):
        gym.make_vec("ImmuneSim-v0", num_envs=2, horizn=3, **TINY)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_make_refuses_cuda_without_a_gpu():
    with pytest.raises(ValidationError, match="device: got 'cuda'.*CUDA is not available"):
        gym.make("ImmuneSim-v0", device="cuda", **TINY)


@pytest.mark.parametrize(("options", "message"), [
    ({"world_options": [1]}, r"world_options: got \[1\]"),
    ({"world_options": {"cache": True}}, "world_options: unknown key 'cache'"),
    ({"world_options": {"sample": "no"}}, r"world_options\['sample'\]: got 'no'"),
    ({"world_options": {"chunk_size": 10**9}}, r"world_options\['chunk_size'\]"),
    ({"world_options": {"max_sod_mm": math.nan}}, r"world_options\['max_sod_mm'\]"),
])
def test_world_options_are_checked(options, message):
    with pytest.raises(ValidationError, match=message):
        gym.make("ImmuneWorld-v0", model=_model(), **TINY, **options)


def test_patient_source_file_is_checked_before_h5py(tmp_path):
    csv = tmp_path / "cohort.csv"
    csv.write_text("patient,sample\np1,s1\n")
    cases = [(tmp_path / "missing.h5ad", "no such file"), (tmp_path, "not a directory"),
             (csv, "not HDF5")]
    for path, words in cases:
        with pytest.raises(ValidationError, match=rf"^patient_source: got .*{words}"):
            gym.make("ImmuneWorld-v0", model=_model(), patient_source=str(path), **TINY)
    with pytest.raises(ValidationError, match="^patient_source: got 7"):
        gym.make("ImmuneWorld-v0", model=_model(), patient_source=7, **TINY)
    # ImmuneSim needs ImmuneSim patients, whatever the file.
    with pytest.raises(ValidationError, match="^patient_source: .*ImmuneSim-v0 needs"):
        gym.make("ImmuneSim-v0", patient_source=str(csv), **TINY)


def test_sizes_have_a_hard_upper_bound_refused_at_once():
    start = time.perf_counter()
    with pytest.raises(ValidationError, match=rf"^bank_size: got .*1\.\.{MAX_BANK_SIZE}"):
        gym.make("ImmuneSim-v0", bank_size=10**9, horizon=2)
    with pytest.raises(ValidationError, match=r"^num_envs: got 8388608"):
        gym.make_vec("ImmuneSim-v0", num_envs=2**23, **TINY)
    for bad in (0, 1.5, "4", None, True):
        with pytest.raises(ValidationError, match="^num_envs: got"):
            gym.make_vec("ImmuneSim-v0", num_envs=bad, **TINY)
    assert time.perf_counter() - start < 5.0  # refused before anything was allocated


def test_memory_is_estimated_before_allocating(monkeypatch):
    monkeypatch.setenv("IMMUNEGYM_MAX_MEMORY_GB", "0.001")  # 1 MiB
    with pytest.raises(ValidationError, match=r"^bank_size: got 1000; this needs about .*"
                       "IMMUNEGYM_MAX_MEMORY_GB"):
        gym.make("ImmuneSim-v0", bank_size=1000, horizon=2)
    with pytest.raises(ValidationError, match=r"^num_envs: got 1000; this needs .*"
                       "IMMUNEGYM_MAX_MEMORY_GB"):
        gym.make_vec("ImmuneSim-v0", num_envs=1000, **TINY)
    with pytest.raises(ValidationError, match="^n: got 1000; this needs"):
        PatientBank.from_sim({}, 1000)


def test_autoreset_mode_is_checked():
    for bad in ("sometimes", 3, "Disabled"):
        with pytest.raises(ValidationError, match="^autoreset_mode: got"):
            gym.make_vec("ImmuneSim-v0", num_envs=2, autoreset_mode=bad, **TINY)


def test_scenario_values_are_normalized():
    sc = Scenario(horizon=np.int64(3), terminate_on_progression=np.bool_(False),
                  dose_levels=[0, 1], cancer_types={"melanoma": 1}, reward={"death": 2})
    assert type(sc.horizon) is int and sc.terminate_on_progression is False
    assert sc.dose_levels == (0.0, 1.0) and sc.cancer_types == {"melanoma": 1.0}
    assert sc.reward.death == 2.0


# ============================================================================ menus
def test_menu_reads_the_regimen_grammar():
    env = ImmuneSimEnv(action_type="menu", menu=("none", "PD1", "Combo"), **TINY)
    np.testing.assert_array_equal(env._parts.actions.menu_doses,
                                  [[0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    with pytest.raises(ValidationError, match=r"^menu: got \('anti_pd1', 'PD1'\).*same"):
        Scenario(menu=("anti_pd1", "PD1"))
    for bad in ("chemo x4", "anti_pd1@0.5", "anti_pd1 -> chemo", "anti_pd2", ""):
        with pytest.raises(ValidationError, match="^menu: got"):
            Scenario(menu=(bad,))


# ============================================================================ TOML files
GOOD = 'id = "Test-Env-v0"\nsimulator = "sim"\n\n[patients]\nbank_size = 4\n'


@pytest.mark.parametrize(("text", "words"), [
    (GOOD + "[episode]\nhorizn = 3\n", ["[episode] horizn", "did you mean 'horizon'"]),
    (GOOD + "[episode]\nhorizon = \"8\"\n", ["[episode] horizon", "horizon: got '8'"]),
    (GOOD + "[episode]\nterminate_on_progression = \"false\"\n",
     ["[episode] terminate_on_progression"]),
    (GOOD + "[observation]\nimaging_cv = nan\n", ["[observation] imaging_cv"]),
    (GOOD.replace("bank_size = 4", "bank_size = 1000000000"), ["[patients] bank_size"]),
    (GOOD.replace("bank_size = 4", "cancer_types = [\"melanoma\"]"),
     ["[patients] cancer_types"]),
    (GOOD + "[patients.cancer_types]\nmelanoma = \"1\"\n", ["cancer_types['melanoma']"]),
    (GOOD + "reward = 3\n", ["reward"]),
    (GOOD.replace("[patients]", "patients = 3\n[episode]"), ["[patients]", "table"]),
    (GOOD + "[reward]\ntumor = true\n", ["reward.tumor"]),
    (GOOD + "[actions]\nmenu = [\"PD1\", \"anti_pd1\"]\n", ["[actions] menu"]),
    ('id = 3\n', ["id: got 3"]),
])
def test_scenario_file_errors_name_file_section_and_key(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValidationError) as err:
        load_scenario_file(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    for word in words:
        assert word in message, (word, message)


def test_scenario_file_missing_or_not_text(tmp_path):
    with pytest.raises(ValidationError, match="^path: got .*no such file"):
        load_scenario_file(tmp_path / "none.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00id")
    with pytest.raises(ValidationError, match="not a UTF-8 text file"):
        load_scenario_file(binary)


def test_register_envs_refuses_duplicate_ids_and_missing_folders(tmp_path):
    (tmp_path / "a.toml").write_text(GOOD)
    (tmp_path / "b.toml").write_text(GOOD)
    with pytest.raises(ValidationError, match=r"b\.toml: id: got 'Test-Env-v0'.*a\.toml"):
        register_envs(tmp_path)
    (tmp_path / "b.toml").write_text(GOOD.replace("Test-Env-v0", "ImmuneSim-v0"))
    with pytest.raises(ValidationError, match="already claimed by a base id"):
        register_envs(tmp_path)
    with pytest.raises(ValidationError, match="^directory: got .*folder"):
        register_envs(tmp_path / "nowhere")


# ============================================================================ reset
@pytest.mark.parametrize("seed", [-1, 1.5, "1", 2**70, True])
def test_reset_seed_is_checked(single, vector, seed):
    with pytest.raises(ValidationError, match=r"^seed: got"):
        single.reset(seed=seed)
    with pytest.raises(ValidationError, match=r"^seed(\[0\])?: got"):
        vector.reset(seed=[seed] if not isinstance(seed, bool) else seed)
    with pytest.raises(ValidationError, match=r"^seed: got \[\]"):
        vector.reset(seed=[])


@pytest.mark.parametrize(("options", "message"), [
    ({"patiant": 3}, "options: unknown key 'patiant'.*did you mean 'patient'"),
    ({"reset_mask": [True]}, "options: unknown key 'reset_mask'"),  # single env
    ([1], r"options: got \[1\]; expected a mapping"),
    ({"patient": -1}, r"options\['patient'\]: got -1; expected a bank row in 0..3"),
    ({"patient": 4}, r"options\['patient'\]: got 4.*out of range"),
    ({"patient": 1.5}, r"options\['patient'\]: got 1.5"),
    ({"patient": True}, r"options\['patient'\]: got True"),
    ({"patient": "sim-0-99"}, r"options\['patient'\]: got 'sim-0-99'.*unknown id"),
])
def test_reset_options_are_checked(single, options, message):
    with pytest.raises(ValidationError, match=message):
        single.reset(options=options)
    # A refused reset changes nothing: the episode goes on.
    single.reset(seed=0, options={"patient": 2})
    assert single.engine.patient.tolist() == [2]


@pytest.mark.parametrize(("options", "message"), [
    ({"reset_mask": [2, 0, 1]}, r"options\['reset_mask'\]: got \[2, 0, 1\]"),
    ({"reset_mask": "ab"}, r"options\['reset_mask'\]: got 'ab'"),
    ({"reset_mask": np.ones((3, 1), bool)}, r"options\['reset_mask'\]"),
    ({"patient": [0, 1.5, 2]}, r"options\['patient'\]\[1\]: got 1.5"),
    ({"patient": np.zeros((3, 1), int)}, r"options\['patient'\]: got"),
    ({"patient": [0, 1]}, r"options\['patient'\]: got 2 patients"),
])
def test_vector_reset_options_are_checked(vector, options, message):
    with pytest.raises(ValidationError, match=message):
        vector.reset(options=options)


def test_first_vector_reset_must_reset_every_env():
    env = ImmuneSimVectorEnv(2, **TINY)
    with pytest.raises(ValidationError, match=r"reset_mask.*every env on the first reset"):
        env.reset(options={"reset_mask": [True, False]})
    env.reset(seed=0, options={"reset_mask": [1, 1]})  # 0/1 integers are fine


# ============================================================================ step
@pytest.mark.parametrize(("action", "words"), [
    ("a", "shape (5,)"), (None, "shape (5,)"), ({"a": 1}, "shape (5,)"),
    (["a"] * 5, "dtype <U1"), ([[1, 2], [3]], "an array of shape"),
    ([0, 0, 0, 0, 3], "values [3] out of range"), ([0, 0, 0, 0, 0.5], "non-integer"),
    ([0, 0, 0, 0, math.nan], "NaN or infinity"), (np.zeros((1, 5), int), "got shape (1, 5)"),
])
def test_step_names_the_action_and_the_space(single, action, words):
    single.reset(seed=0)
    with pytest.raises(ValidationError) as err:
        single.step(action)
    message = str(err.value)
    assert message.startswith("action: got ") and "MultiDiscrete" in message, message
    assert words in message, message


def test_vector_step_names_the_batch(vector):
    vector.reset(seed=0)
    with pytest.raises(ValidationError, match=r"^action: got .*shape \(3, 5\) for 3 actions "
                       r"of MultiDiscrete"):
        vector.step(np.zeros((2, 5), int))


def test_gym_make_wrappers_pass_the_errors_through():
    env = gym.make("ImmuneSim-v0", **TINY)
    with pytest.raises(ValidationError, match="^seed: got -1"):
        env.reset(seed=-1)
    env.reset(seed=0)
    with pytest.raises(ValidationError, match="^action: got"):
        env.step(np.array([9, 0, 0, 0, 0]))
    env.step(env.action_space.sample())


def test_render_modes_work_when_valid():
    env = gym.make("ImmuneSim-v0", render_mode="ansi", **TINY)
    env.reset(seed=0)
    assert "patient" in env.render()


# ============================================================================ adapters, checker
def test_sb3_make_vec_env_checks_its_own_arguments():
    pytest.importorskip("stable_baselines3")
    from immunegym.env.adapters.sb3 import make_vec_env

    with pytest.raises(ValidationError, match="^env_id: got 'ImmuneSim-v9'; expected one of"):
        make_vec_env("ImmuneSim-v9", n_envs=2, **TINY)
    with pytest.raises(ValidationError, match="^seed: got -1"):
        make_vec_env("ImmuneSim-v0", n_envs=2, seed=-1, **TINY)
    with pytest.raises(ValidationError, match="^n_envs: got 8388608"):
        make_vec_env("ImmuneSim-v0", n_envs=2**23, **TINY)


def test_check_vector_env_checks_its_arguments():
    from immunegym.env import check_vector_env

    with pytest.raises(ValidationError, match="^env_fn: got 3"):
        check_vector_env(3)
    with pytest.raises(ValidationError, match="^n_steps: got 0"):
        check_vector_env(lambda **kw: None, n_steps=0)
    with pytest.raises(ValidationError, match="^seed: got -1"):
        check_vector_env(lambda **kw: None, seed=-1)
