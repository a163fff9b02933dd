"""The fuzz harness (:func:`immunegym.benchmarks.fuzz.run_fuzz`), short version.

One run (20k env-steps, 150 API calls) is shared by the checks below: the environment part
must be clean, the environments' own API calls must fail only with ValidationError, and the
other rooms' API calls are asserted per room in a separate test so that a failure says
which room. A deliberately broken env shows that the harness can fail.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from immunegym.benchmarks.fuzz import ENV_CONFIGS, run_fuzz
from immunegym.validation import ValidationError

OTHER_ROOMS = ("planning", "sim", "ontology", "data", "world_model")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Modest batches on a shared 2-core machine: one intra-op thread is fastest."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def _report() -> dict:
    return run_fuzz(n_env_steps=20_000, n_api_calls=150, seed=0)


def _failures(report: dict, room: str) -> list[dict]:
    return [e for e in report["examples"] if e["call"].startswith(
        ("gym.", "env.", "load_scenario_file")) == (room == "env")]


def test_report_shape_and_env_part_is_clean():
    report = _report()
    json.dumps(report)  # JSON-able as is
    for key in ("env_steps", "api_calls", "crashes", "nans", "out_of_space",
                "unclear_errors", "examples", "seconds", "env_steps_per_second", "machine"):
        assert key in report, key
    assert report["env_steps"] >= 20_000
    assert report["api_calls"] == 150
    assert len(report["examples"]) <= 20
    env_problems = [e for e in report["examples"] if e["call"].startswith("gym.make_vec[")]
    assert report["crashes"] == 0, env_problems
    assert report["env_nans"] == 0, env_problems
    assert report["out_of_space"] == 0, env_problems


def test_env_room_api_calls_fail_only_with_validation_errors():
    env = _report()["rooms"]["env"]
    assert env["calls"] > 50
    assert env["refused"] > 0  # the strategies do reach the validation
    failures = _failures(_report(), "env")
    assert env["unclear_errors"] == 0, failures
    assert env["nans"] == 0, failures
    assert env["hangs"] == 0, failures


@pytest.mark.parametrize("room", OTHER_ROOMS)
def test_other_rooms_api_calls_fail_only_with_validation_errors(room):
    """Other rooms of the package (reported per room for the lead)."""
    stats = _report()["rooms"].get(room)
    assert stats is not None and stats["calls"] > 0, room
    failures = [e for e in _report()["examples"] if not e["call"].startswith(
        ("gym.", "env.", "load_scenario_file"))]
    problems = stats["unclear_errors"] + stats["nans"] + stats["hangs"]
    assert problems == 0, (room, stats, failures)


def test_same_seed_same_report():
    a = run_fuzz(n_env_steps=0, n_api_calls=20, seed=3)
    b = run_fuzz(n_env_steps=0, n_api_calls=20, seed=3)
    for key in ("api_calls", "unclear_errors", "nans", "rooms"):
        assert a[key] == b[key], key


def test_arguments_are_validated():
    for kwargs, field in [({"n_env_steps": -1}, "n_env_steps"),
                          ({"n_api_calls": 1.5}, "n_api_calls"),
                          ({"seed": -1}, "seed")]:
        with pytest.raises(ValidationError, match=f"^{field}: got"):
            run_fuzz(**kwargs)


@pytest.mark.parametrize("breakage", ["nan", "outside"])
def test_a_broken_env_is_counted(monkeypatch, breakage):
    """NaN or out-of-space observations must show up in the report."""
    from immunegym.env.vector import ImmuneWorldVectorEnv

    original = ImmuneWorldVectorEnv.step

    def broken(self, actions):
        obs, reward, terminated, truncated, infos = original(self, actions)
        value = np.nan if breakage == "nan" else 1e6
        obs = obs.copy()  # the first config has flat observations
        obs[:, 0] = value  # every env, every step
        return obs, reward, terminated, truncated, infos

    monkeypatch.setattr(ImmuneWorldVectorEnv, "step", broken)
    monkeypatch.setattr("immunegym.benchmarks.fuzz.ENV_CONFIGS", ENV_CONFIGS[:1])
    report = run_fuzz(n_env_steps=200, n_api_calls=0, seed=0)
    assert report["env_steps"] >= 200
    assert report["out_of_space"] == report["env_steps"]
    if breakage == "nan":
        assert report["nans"] == report["env_steps"] == report["env_nans"]
    else:
        assert report["nans"] == 0
    assert report["examples"] and report["examples"][0]["call"].startswith("gym.make_vec[")
