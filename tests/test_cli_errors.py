"""Every CLI command refuses bad options before doing any work, in one clear line.

A refused command exits 1 and prints exactly one line, ``error: <option>: got <value>;
expected <what>``, with no traceback; ``immunegym --debug`` shows the traceback instead.
Shipped files (the calibrated parameters, the pretrained models) are never written unless
the maintainers' flag is given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from immunegym import validation
from immunegym.cli import app
from immunegym.validation import ValidationError

runner = CliRunner()
SHIPPED_MODEL = Path(validation.__file__).resolve().parent / "pretrained" / "world_model"
SHIPPED_PARAMS = (Path(validation.__file__).resolve().parent / "sim" / "calibrated"
                  / "immunesim-params-v2.json")


def _refused(args: list[str], *names: str, env: dict[str, str] | None = None) -> str:
    """Invoke ``immunegym args``; assert one clean error line naming ``names``; return it."""
    result = runner.invoke(app, args, env={"COLUMNS": "300", **(env or {})})
    text = result.output.strip()
    assert result.exit_code == 1, text
    assert "Traceback" not in text
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("error: "), text
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture
def blocked(tmp_path) -> Path:
    """A path below a regular file: no directory can ever be made there (root included)."""
    wall = tmp_path / "a_file"
    wall.write_text("x")
    return wall / "sub"


@pytest.fixture
def cohort_file(tmp_path) -> Path:
    """A small registered cohort (two patients) written as .h5ad."""
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame({"patient_id": ["p1", "p1", "p2"], "cancer_type": ["melanoma"] * 3},
                       index=["c0", "c1", "c2"])
    path = tmp_path / "cohort.h5ad"
    ad.AnnData(obs=obs).write_h5ad(path)
    return path


# --------------------------------------------------------------------------- the wrapper
def test_debug_shows_the_traceback_instead_of_one_line():
    result = runner.invoke(app, ["--debug", "bench", "harmonize", "--n-labels", "0"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ValidationError)
    assert "--n-labels" in str(result.exception)
    assert not result.output.startswith("error:")


def test_unexpected_exceptions_are_one_line_with_their_type(monkeypatch):
    from immunegym.benchmarks import speed

    def boom(**kwargs):
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr(speed, "harmonize_speed", boom)
    line = _refused(["bench", "harmonize", "--n-labels", "10", "--repeats", "1"],
                    "RuntimeError: first line", "(+1 more lines)")
    assert "--debug" in line


def _immunegym() -> list[str]:
    script = Path(sys.executable).with_name("immunegym")
    return [str(script)] if script.exists() else [sys.executable, "-m", "immunegym.cli"]


def test_real_subprocess_prints_one_line_and_exits_1(tmp_path):
    """The installed script, not CliRunner: what a user sees (importing the package takes
    a few seconds, most of this test)."""
    out = subprocess.run([*_immunegym(), "bench", "harmonize", "--n-labels", "0"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "IMMUNEGYM_DEBUG": "0"})
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.strip().startswith("error: --n-labels: got 0")
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


@pytest.mark.slow
def test_real_subprocess_with_debug_shows_the_traceback(tmp_path):
    debug = subprocess.run([*_immunegym(), "--debug", "bench", "harmonize", "--n-labels",
                            "0"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr + debug.stdout
    assert "--n-labels: got 0" in debug.stderr + debug.stdout


# --------------------------------------------------------------------------- one per command
def test_demo_refuses_an_unwritable_out(blocked):
    _refused(["demo", "--out", str(blocked)], "--out", "a_file")


def test_harmonize_refuses_missing_file_bad_key_and_unwritable_csv(tmp_path, cohort_file,
                                                                   blocked):
    _refused(["harmonize", str(tmp_path / "none.h5ad"), "--key", "x"], "FILE", "no such file")
    _refused(["harmonize", str(cohort_file), "--key", "celltype"], "--key", "'celltype'",
             "patient_id")
    _refused(["harmonize", str(cohort_file), "--key", "patient_id", "--csv",
              str(blocked / "r.csv")], "--csv")
    _refused(["harmonize", str(cohort_file), "--key", "patient_id", "--convention",
              "sade_feldman"], "--convention", "sade_feldman_2018")


@pytest.mark.parametrize(("args", "names"), [
    (["--n-labels", "0"], ["--n-labels", "got 0"]),
    (["--n-labels", "-5"], ["--n-labels", "got -5"]),
    (["--n-labels", "900000000"], ["--n-labels", "GiB", "IMMUNEGYM_MAX_MEMORY_GB"]),
    (["--repeats", "0"], ["--repeats"]),
    (["--repeats", "100000"], ["--repeats", "1..1000"]),
])
def test_bench_harmonize_refuses_bad_sizes(args, names):
    _refused(["bench", "harmonize", *args], *names)


def test_bench_harmonize_refuses_an_unwritable_json_before_running(monkeypatch, blocked):
    from immunegym.benchmarks import speed

    ran = []
    monkeypatch.setattr(speed, "harmonize_speed", lambda **kw: ran.append(kw) or {})
    _refused(["bench", "harmonize", "--n-labels", "10", "--json", str(blocked / "b.json")],
             "--json")
    assert ran == []


def test_data_make_suite_refuses_before_generating(monkeypatch, tmp_path, blocked):
    from immunegym.sim import suite

    ran = []
    monkeypatch.setattr(suite, "make_suite", lambda *a, **k: ran.append(a))
    _refused(["data", "make-suite", "--out", str(blocked), "--n-patients", "2"], "--out")
    _refused(["data", "make-suite", "--out", str(tmp_path), "--n-patients", "0"],
             "--n-patients")
    _refused(["data", "make-suite", "--out", str(tmp_path), "--horizon-days", "100000"],
             "--horizon-days")
    _refused(["data", "make-suite", "--out", str(tmp_path), "--cohort", "melanoma_pd1"],
             "--cohort", "did you mean 'melanoma_pd1_zheng'")
    _refused(["data", "make-suite", "--out", str(tmp_path), "--n-patients", "100000"],
             "--n-patients", "GiB")
    _refused(["data", "make-suite", "--out", str(tmp_path), "--address", "auto"],
             "--address", "--ray")
    assert ran == []


def test_bench_realism_refuses_bad_seed_and_json(monkeypatch, tmp_path, blocked):
    from immunegym.benchmarks import realism

    monkeypatch.setattr(realism, "run", lambda **kw: pytest.fail("ran"))
    _refused(["bench", "realism", "--json", str(tmp_path / "r.json"), "--seed", "-1"],
             "--seed", "non-negative")
    _refused(["bench", "realism", "--json", str(blocked / "r.json")], "--json")
    _refused(["bench", "realism", "--json", str(tmp_path)], "--json", "directory")


@pytest.mark.parametrize(("args", "names"), [
    (["--batch", "0"], ["--batch", "got 0"]),
    (["--batch", "3000000"], ["--batch", "GiB", "IMMUNEGYM_MAX_MEMORY_GB"]),
    (["--days", "0"], ["--days"]),
    (["--days", "100000"], ["--days", "1..3650"]),
    (["--device", "tpu"], ["--device", "'tpu'"]),
])
def test_bench_sim_refuses_bad_options(args, names):
    _refused(["bench", "sim", "--batch", "1", "--days", "1", *args], *names)


def test_bench_sim_memory_limit_is_the_environment_variable():
    _refused(["bench", "sim", "--batch", "200000", "--days", "1"], "--batch", "0.1 GiB",
             env={"IMMUNEGYM_MAX_MEMORY_GB": "0.1"})


@pytest.mark.parametrize(("args", "names"), [
    (["--envs", "0"], ["--envs"]),
    (["--envs", "5000000"], ["--envs", "GiB"]),
    (["--sync-envs", "100000"], ["--sync-envs", "1..4096"]),
    (["--device", "cuda:x"], ["--device"]),
])
def test_bench_speed_refuses_bad_options(args, names):
    _refused(["bench", "speed", *args], *names)


@pytest.mark.parametrize(("args", "names"), [
    (["--agent", "ppo"], ["--agent", "'ppo'", "did you mean"]),
    (["--rllib-iterations", "0", "--agent", "rllib_ppo"],
     ["--agent", "rllib_iterations is 0", "--rllib-iterations"]),
    (["--n-patients", "0"], ["--n-patients"]),
    (["--horizon", "1000"], ["--horizon"]),
    (["--cem-population", "0"], ["--cem-population"]),
    (["--cem-iterations", "5000"], ["--cem-iterations"]),
    (["--beam-width", "-1"], ["--beam-width"]),
    (["--ppo-timesteps", "-1"], ["--ppo-timesteps"]),
    (["--n-patients", "100000", "--cem-population", "50000"], ["--cem-population", "GiB"]),
    (["--seed", "-3"], ["--seed"]),
    (["--device", "gpu"], ["--device"]),
])
def test_bench_planners_refuses_bad_options(monkeypatch, args, names):
    from immunegym.benchmarks import planners

    monkeypatch.setattr(planners, "run_leaderboard", lambda *a, **k: pytest.fail("ran"))
    _refused(["bench", "planners", "--quick", *args], *names)


@pytest.mark.parametrize(("args", "names"), [
    (["--method", "greedy"], ["--method", "'greedy'", "beam"]),
    (["--budget", "1"], ["--budget", "got 1"]),
    (["--horizon", "0"], ["--horizon"]),
    (["--samples", "0"], ["--samples"]),
    (["--top", "500"], ["--top", "at most --budget"]),
    (["--seed", "-1"], ["--seed"]),
    (["--device", "tpu"], ["--device"]),
    (["--regimen", "aspirin"], ["--regimen", "'aspirin'"]),
    (["--patient", "p9"], ["--patient", "'p9'", "p1"]),
])
def test_plan_refuses_bad_options(cohort_file, args, names):
    base = {"--patient": "p1"}
    flat = ["plan", "--cohort", str(cohort_file)]
    if "--patient" not in args:
        flat += ["--patient", base["--patient"]]
    _refused([*flat, *args], *names)


def test_plan_refuses_a_cohort_that_is_not_hdf5(tmp_path):
    fake = tmp_path / "cohort.h5ad"
    fake.write_text("patient_id\np1\n")
    _refused(["plan", "--cohort", str(fake), "--patient", "p1"], "--cohort", "not HDF5")
    _refused(["plan", "--cohort", str(tmp_path / "none.h5ad"), "--patient", "p1"],
             "--cohort", "no such file")


@pytest.mark.parametrize(("args", "names"), [
    (["--n", "0"], ["--n", "got 0"]),
    (["--n", "5000000"], ["--n", "GiB"]),
    (["--seed", "-1"], ["--seed"]),
    (["--ship"], ["--ship", "--fit"]),
    (["--params-out", "p.json"], ["--params-out", "--fit"]),
    (["--fit", "--workers", "0"], ["--workers"]),
    (["--fit", "--sweeps", "0"], ["--sweeps"]),
    (["--fit", "--fit-n", "0"], ["--fit-n"]),
    (["--fit", "--version", ""], ["--version"]),
    (["--fit", "--params-out", str(SHIPPED_PARAMS)], ["--params-out", "read-only",
                                                       "--ship"]),
    (["--fit", "--ship", "--params-out", "elsewhere.json"], ["--params-out", "--ship"]),
])
def test_sim_calibrate_refuses_before_fitting(monkeypatch, args, names):
    from immunegym.sim import calibrate as cal

    monkeypatch.setattr(cal, "fit", lambda *a, **k: pytest.fail("fitted"))
    monkeypatch.setattr(cal, "check", lambda *a, **k: pytest.fail("checked"))
    _refused(["sim", "calibrate", *args], *names)


def test_sim_calibrate_fit_never_writes_the_shipped_file_by_default(monkeypatch, tmp_path):
    """``--fit`` alone writes immunegym-out/ under the working directory."""
    from immunegym.sim import calibrate as cal

    before = SHIPPED_PARAMS.read_bytes()
    written = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cal, "fit", lambda params, **k: (params, {"method": "test"}))
    monkeypatch.setattr(cal, "write_parameters",
                        lambda p, r, target, version, **k: written.append((target, k)))
    monkeypatch.setattr(cal, "check", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("stop after writing")))
    result = runner.invoke(app, ["sim", "calibrate", "--fit"])
    assert result.exit_code == 1 and "stop after writing" in result.output
    target, kwargs = written[0]
    assert Path(target) == Path("immunegym-out") / "immunesim-params-v2.json"
    assert not validation.is_shipped(tmp_path / target) and kwargs == {"allow_shipped": False}
    assert SHIPPED_PARAMS.read_bytes() == before


def test_write_parameters_refuses_the_shipped_file(tmp_path):
    from immunegym.sim import calibrate as cal
    from immunegym.sim.parameters import load_parameters

    with pytest.raises(ValidationError, match="path: .*read-only unless you pass --ship"):
        cal.write_parameters(load_parameters(), {}, SHIPPED_PARAMS, "2")
    out = cal.write_parameters(load_parameters(), {}, tmp_path / "p.json", "2")
    assert json.loads(out.read_text())["version"] == "2"


def test_parameter_target_is_a_user_path_unless_ship():
    from immunegym.sim import calibrate as cal

    assert cal.parameter_target() == cal.DEFAULT_PARAMS_OUT
    assert not cal.DEFAULT_PARAMS_OUT.is_absolute()
    assert cal.parameter_target(ship=True) == SHIPPED_PARAMS
    with pytest.raises(ValidationError, match="--params-out: .*--ship"):
        cal.parameter_target(SHIPPED_PARAMS)


@pytest.mark.parametrize(("args", "names"), [
    (["--n", "-1"], ["--n"]),
    (["--seed", "-1"], ["--seed"]),
])
def test_sim_combinations_refuses_bad_options(monkeypatch, args, names):
    from immunegym.sim import calibrate as cal

    monkeypatch.setattr(cal, "predict_combinations", lambda **k: pytest.fail("ran"))
    _refused(["sim", "combinations", *args], *names)


def test_sim_combinations_refuses_unwritable_json(monkeypatch, blocked):
    from immunegym.sim import calibrate as cal

    monkeypatch.setattr(cal, "predict_combinations", lambda **k: pytest.fail("ran"))
    _refused(["sim", "combinations", "--json", str(blocked / "c.json")], "--json")


@pytest.fixture
def no_training(monkeypatch):
    from immunegym.world_model import recipe

    monkeypatch.setattr(recipe, "run_recipe", lambda *a, **k: pytest.fail("trained"))


@pytest.mark.parametrize(("args", "names"), [
    (["--config", "nope"], ["--config", "'nope'", "default", "observation_only"]),
    (["--num-workers", "0"], ["--num-workers"]),
    (["--device", "tpu"], ["--device"]),
    (["--out", str(SHIPPED_MODEL)], ["--out", "read-only", "--replace-shipped"]),
    (["--out", "immunegym/pretrained/world_model_observation_only"], []),
])
def test_train_refuses_bad_options_and_the_shipped_model(no_training, tmp_path, monkeypatch,
                                                         args, names):
    if args[1].startswith("immunegym/"):
        # the repository path of the shipped model, from the repository root
        monkeypatch.chdir(SHIPPED_MODEL.parents[2])
        names = ["--out", "read-only"]
    base = {"--config": "default", "--out": str(tmp_path / "ckpt")}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    _refused(["train", *[x for kv in base.items() for x in kv]], *names)


def test_train_refuses_unwritable_out_and_log_dir(no_training, tmp_path, blocked):
    _refused(["train", "--config", "default", "--out", str(blocked)], "--out")
    _refused(["train", "--config", "default", "--out", str(tmp_path / "c"), "--log-dir",
              str(blocked)], "--log-dir")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nn_members = 0\n")
    _refused(["train", "--config", str(bad), "--out", str(tmp_path / "c")],
             "model.n_members")


def test_train_finds_packaged_recipes_from_any_directory(monkeypatch, tmp_path):
    """The repository path and the bare name both reach the packaged recipe."""
    from immunegym.world_model import recipe

    seen = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(recipe.Recipe, "load", classmethod(
        lambda cls, path: seen.append(Path(path)) or (_ for _ in ()).throw(
            RuntimeError("loaded"))))
    for name in ("default", "immunegym/world_model/configs/default.toml", "default.toml"):
        _refused(["train", "--config", name, "--out", str(tmp_path / "c")], "loaded")
    assert seen == [recipe.DEFAULT_RECIPE] * 3


@pytest.mark.parametrize("name", ["reconstruction", "transfer", "counterfactual",
                                  "response", "all"])
def test_evaluation_commands_refuse_before_loading(monkeypatch, tmp_path, blocked, name):
    from immunegym.benchmarks import runner as bench_runner

    monkeypatch.setattr(bench_runner, "run_benchmarks", lambda *a, **k: pytest.fail("ran"))
    json_path = str(tmp_path / "r.json")
    _refused(["bench", name, "--json", str(blocked / "r.json")], "--json")
    _refused(["bench", name, "--json", json_path, "--seed", "-1"], "--seed")
    _refused(["bench", name, "--json", json_path, "--checkpoint", str(tmp_path)],
             "--checkpoint", "config.json")
    _refused(["bench", name, "--json", json_path, "--suite", str(tmp_path / "no")],
             "--suite", "no such directory")
    _refused(["bench", name, "--json", json_path, "--out", str(blocked)], "--out")
    _refused(["bench", name, "--json", json_path, "--address", "auto"], "--address")


def test_bench_world_model_refuses_bad_options_and_recording_into_the_shipped_model(
        monkeypatch, tmp_path):
    from immunegym.benchmarks import world_model as wm

    monkeypatch.setattr(wm, "run_benchmark", lambda *a, **k: pytest.fail("ran"))
    json_path = str(tmp_path / "w.json")
    _refused(["bench", "world-model", "--json", json_path, "--record"], "--checkpoint",
             "read-only", "--replace-shipped")
    _refused(["bench", "world-model", "--json", json_path, "--record", "--checkpoint",
              str(SHIPPED_MODEL)], "--checkpoint", "--replace-shipped")
    _refused(["bench", "world-model", "--json", json_path, "--replace-shipped"],
             "--replace-shipped", "--record")
    _refused(["bench", "world-model", "--json", json_path, "--device", "tpu"], "--device")
    _refused(["bench", "world-model", "--json", json_path, "--checkpoint",
              str(tmp_path / "none")], "--checkpoint")
    _refused(["bench", "world-model", "--json", json_path, "--observation-only",
              str(tmp_path)], "--observation-only")
    _refused(["bench", "world-model", "--json", str(tmp_path)], "--json", "directory")


# --------------------------------------------------------------------------- bench fuzz
@pytest.fixture
def fake_fuzz(monkeypatch):
    """A stand-in for immunegym.benchmarks.fuzz (recorded calls; result set per test)."""
    module = types.ModuleType("immunegym.benchmarks.fuzz")
    module.calls = []
    module.result = {"env_steps": 10, "api_calls": 3, "crashes": 0, "nans": 0,
                     "out_of_space": 0, "unclear_errors": 0, "seconds": 0.1}

    def run_fuzz(n_env_steps: int, n_api_calls: int, seed: int) -> dict:
        module.calls.append((n_env_steps, n_api_calls, seed))
        return dict(module.result)

    module.run_fuzz = run_fuzz
    monkeypatch.setitem(sys.modules, "immunegym.benchmarks.fuzz", module)
    return module


def test_bench_fuzz_passes_its_sizes_and_writes_json(fake_fuzz, tmp_path):
    out = tmp_path / "sub" / "fuzz.json"
    result = runner.invoke(app, ["bench", "fuzz", "--steps", "10", "--api-calls", "3",
                                 "--seed", "4", "--json", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert fake_fuzz.calls == [(10, 3, 4)]
    assert json.loads(out.read_text()) == fake_fuzz.result
    assert "unclear_errors" in result.output
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_bench_fuzz_defaults(fake_fuzz):
    result = runner.invoke(app, ["bench", "fuzz"])
    assert result.exit_code == 0, result.output
    assert fake_fuzz.calls == [(1_000_000, 2_000, 0)]


@pytest.mark.parametrize("failure", [{"crashes": 1}, {"nans": 2}, {"out_of_space": 1},
                                     {"unclear_errors": ["ValueError('x')"]}, {"hangs": 1}])
def test_bench_fuzz_exits_1_on_any_failure(fake_fuzz, tmp_path, failure):
    fake_fuzz.result.update(failure)
    out = tmp_path / "fuzz.json"
    result = runner.invoke(app, ["bench", "fuzz", "--steps", "1", "--json", str(out)])
    assert result.exit_code == 1
    assert f"error: fuzz found failures: {next(iter(failure))}" in result.output
    assert json.loads(out.read_text())[next(iter(failure))] == failure[next(iter(failure))]


@pytest.mark.parametrize(("args", "names"), [
    (["--steps", "-1"], ["--steps"]),
    (["--steps", str(10**9 + 1)], ["--steps", "0..1000000000"]),
    (["--api-calls", "-1"], ["--api-calls"]),
    (["--seed", "-1"], ["--seed"]),
])
def test_bench_fuzz_refuses_bad_options(fake_fuzz, args, names, blocked):
    _refused(["bench", "fuzz", *args], *names)
    _refused(["bench", "fuzz", "--json", str(blocked / "f.json")], "--json")
    assert fake_fuzz.calls == []


# --------------------------------------------------------------------------- library level
def test_library_entry_points_validate_too():
    from immunegym.benchmarks.env_speed import env_speed
    from immunegym.benchmarks.planners import LeaderboardConfig, run_leaderboard
    from immunegym.benchmarks.speed import harmonize_speed, sim_speed
    from immunegym.sim.suite import suite_specs

    with pytest.raises(ValidationError, match="n_labels: got 0"):
        harmonize_speed(n_labels=0)
    with pytest.raises(ValidationError, match="batches: got 2.5"):
        sim_speed(batches=[2.5], days=1)
    with pytest.raises(ValidationError, match="batches: got 5"):
        sim_speed(batches=5, days=1)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="sync_envs: got 0"):
        env_speed([1], [0])
    with pytest.raises(ValidationError, match="cfg.n_patients: got 0"):
        run_leaderboard(LeaderboardConfig(n_patients=0), model=object())
    with pytest.raises(ValidationError, match="names: got 'x'"):
        suite_specs(names=["x"])
    with pytest.raises(ValidationError, match="n_patients: got 0"):
        suite_specs(n_patients=0)


def test_make_suite_refuses_an_unwritable_out_before_simulating(monkeypatch, blocked):
    from immunegym.sim import suite

    monkeypatch.setattr(suite, "simulate_cohort", lambda spec: pytest.fail("simulated"))
    with pytest.raises(ValidationError, match="out: .*a_file"):
        suite.make_suite(blocked, suite.suite_specs(n_patients=2, names=["rcc_pd1_zheng"]))


def test_rllib_args_and_config_are_checked_before_ray_starts():
    pytest.importorskip("ray")
    from agents import rllib_ppo
    from immunegym.env.adapters.rllib import ppo_config

    with pytest.raises(ValidationError, match="minibatch_size: got 64"):
        rllib_ppo.check_args(rllib_ppo.Args(train_batch_size=32, minibatch_size=64))
    with pytest.raises(ValidationError, match="iterations: got 0"):
        rllib_ppo.check_args(rllib_ppo.Args(iterations=0))
    with pytest.raises(ValidationError, match="num_env_runners: got -1"):
        ppo_config(num_env_runners=-1)
    config = ppo_config(num_env_runners=2)
    assert config.restart_failed_env_runners is True
    assert config.max_num_env_runner_restarts >= 1
    assert config.delay_between_env_runner_restarts_s <= 10


def test_no_stray_files_in_the_shipped_folders():
    """The refusals above left the shipped folders untouched (no temporary leftovers)."""
    for folder in validation.SHIPPED_DIRS:
        assert not [p for p in folder.rglob(".*") if p.is_file()], folder
