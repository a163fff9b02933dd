"""The RL agents: CLI help, tiny training runs, safetensors + JSON save / load round trips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

from immunegym.env.vector import ImmuneSimVectorEnv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULT_KEYS = ("return_sim", "orr_sim", "irae_sim", "return_world")
TINY = {"horizon": 2, "eval_patients": 4, "train_patients": 16, "progress_bar": False}


@pytest.fixture
def one_thread():
    """Tiny networks train fastest on one torch thread, and so does a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _observations(n: int = 8) -> np.ndarray:
    """Real flat observations: first biopsies and scans of ``n`` ImmuneSim patients."""
    env = ImmuneSimVectorEnv(n, horizon=2, bank_size=16)
    obs, _ = env.reset(seed=0)
    env.close()
    return obs


def _files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def _assert_no_pickle(directory: Path) -> None:
    assert _files(directory) == ["config.json", "weights.safetensors"]
    assert not [p for p in directory.rglob("*") if p.suffix in (".zip", ".pkl", ".pickle",
                                                                  ".pt", ".pth")]
    config = json.loads((directory / "config.json").read_text())
    assert config["env_id"] == "ImmuneWorld-v0"
    assert config["env_kwargs"]["bank_seed"] == 0  # the training patients, not the held-out
    assert config["env_kwargs"]["horizon"] == TINY["horizon"]


# ---------------------------------------------------------------------- --help
@pytest.mark.parametrize(("module", "fields"), [
    ("agents.sb3_ppo", ["--total-timesteps", "--n-envs", "--learning-rate", "--n-steps",
                        "--batch-size", "--n-epochs", "--gamma", "--ent-coef", "--net-width",
                        "--save-path", "--load-path", "--eval-patients"]),
    ("agents.rllib_ppo", ["--iterations", "--num-env-runners", "--num-envs-per-env-runner",
                          "--train-batch-size", "--lr", "--address", "--save-path",
                          "--load-path", "--eval-patients"]),
])
def test_help_lists_the_arguments(module: str, fields: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    for field in fields:
        assert field in done.stdout, field
    assert "held-out" in done.stdout


# ---------------------------------------------------------------------- SB3
def test_sb3_ppo_trains_saves_loads_and_judges(tmp_path: Path, one_thread,
                                               monkeypatch) -> None:
    from agents import sb3_ppo

    trained = {}
    train = sb3_ppo.train

    def keep(args, **kwargs):
        trained["model"] = train(args, **kwargs)
        return trained["model"]

    monkeypatch.setattr(sb3_ppo, "train", keep)
    save_dir = tmp_path / "policy"
    args = sb3_ppo.Args(total_timesteps=64, n_envs=4, n_steps=8, batch_size=16, n_epochs=1,
                        net_width=16, log_dir=str(tmp_path / "runs"), save_path=str(save_dir),
                        **TINY)
    result = sb3_ppo.main(args)
    for key in RESULT_KEYS:
        assert np.isfinite(result[key]), key
    model = trained["model"]
    assert model.num_timesteps >= 64
    _assert_no_pickle(save_dir)
    assert list((tmp_path / "runs").iterdir())  # TensorBoard run

    loaded = sb3_ppo.load(str(save_dir))
    for key, value in model.policy.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    obs = _observations()
    original = sb3_ppo.SB3Policy(model).act(obs, {})
    assert original.shape == (8, 5) and original.dtype == np.int64
    np.testing.assert_array_equal(sb3_ppo.SB3Policy(loaded).act(obs, {}), original)

    # Judging the loaded policy (no training) gives the same scores: same actions, same seeds.
    again = sb3_ppo.main(sb3_ppo.Args(log_dir=str(tmp_path / "runs"), load_path=str(save_dir),
                                      **TINY))
    for key in RESULT_KEYS:
        assert again[key] == pytest.approx(result[key]), key


def test_sb3_load_refuses_a_foreign_or_tampered_checkpoint(tmp_path: Path) -> None:
    from agents import sb3_ppo

    with pytest.raises(FileNotFoundError, match="load_path"):
        sb3_ppo.load(str(tmp_path / "missing"))
    from stable_baselines3.common.policies import ActorCriticPolicy

    env = ImmuneSimVectorEnv(1, horizon=2, bank_size=16)
    net = ActorCriticPolicy(env.single_observation_space, env.single_action_space,
                            lr_schedule=lambda _: 1e-3, net_arch=[8])
    env.close()
    args = sb3_ppo.Args(net_width=8, net_layers=1, **TINY)
    sb3_ppo.save(net, str(tmp_path / "ok"), args)
    assert sb3_ppo.load(str(tmp_path / "ok")).mlp_extractor.policy_net[0].out_features == 8
    # Weights of another run beside this config: refused.
    sb3_ppo.save(ActorCriticPolicy(net.observation_space, net.action_space,
                                   lr_schedule=lambda _: 1e-3, net_arch=[8]),
                 str(tmp_path / "other"), args)
    (tmp_path / "ok" / "weights.safetensors").write_bytes(
        (tmp_path / "other" / "weights.safetensors").read_bytes())
    with pytest.raises(ValueError, match="SHA-256"):
        sb3_ppo.load(str(tmp_path / "ok"))
    # A config of another agent: refused.
    config = json.loads((tmp_path / "other" / "config.json").read_text())
    config["format"] = "something-else"
    (tmp_path / "other" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format"):
        sb3_ppo.load(str(tmp_path / "other"))


# ---------------------------------------------------------------------- RLlib
def test_rllib_ppo_trains_saves_loads_and_judges(tmp_path: Path, one_thread,
                                                 monkeypatch) -> None:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.rllib")
    from agents import rllib_ppo

    obs = _observations()
    seen = {}
    trained_module = rllib_ppo.trained_module

    def keep(algo):
        # The env runner's module (synced after the update) acts like the learner's.
        seen["live"] = rllib_ppo.RLlibPolicy(algo.get_module()).act(obs, {})
        seen["module"] = trained_module(algo)
        return seen["module"]

    monkeypatch.setattr(rllib_ppo, "trained_module", keep)
    save_dir = tmp_path / "policy"
    args = rllib_ppo.Args(iterations=1, num_envs_per_env_runner=4, train_batch_size=32,
                          minibatch_size=16, num_epochs=1, net_width=16,
                          log_dir=str(tmp_path / "runs"), save_path=str(save_dir), **TINY)
    assert not ray.is_initialized()
    result = rllib_ppo.main(args)
    assert not ray.is_initialized()  # main shut down the Ray it started
    for key in RESULT_KEYS:
        assert np.isfinite(result[key]), key
    _assert_no_pickle(save_dir)
    assert list((tmp_path / "runs").iterdir())  # TensorBoard run

    loaded = rllib_ppo.load(str(save_dir))  # no Ray needed
    original = rllib_ppo.RLlibPolicy(seen["module"]).act(obs, {})
    assert original.shape == (8, 5) and original.dtype == np.int64
    assert ((original >= 0) & (original < 3)).all()
    np.testing.assert_array_equal(seen["live"], original)
    np.testing.assert_array_equal(rllib_ppo.RLlibPolicy(loaded).act(obs, {}), original)
    for key, value in seen["module"].state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)

    again = rllib_ppo.main(rllib_ppo.Args(log_dir=str(tmp_path / "runs"),
                                          load_path=str(save_dir), **TINY))
    assert not ray.is_initialized()
    for key in RESULT_KEYS:
        assert again[key] == pytest.approx(result[key]), key


def test_rllib_policy_takes_the_argmax_of_each_therapy_s_logits() -> None:
    pytest.importorskip("ray.rllib")
    from gymnasium import spaces

    from agents.rllib_ppo import RLlibPolicy

    class Fixed:
        action_space = spaces.MultiDiscrete([3, 2, 4])

        def forward_inference(self, batch):
            n = batch["obs"].shape[0]
            logits = torch.tensor([0.0, 5.0, 1.0, 2.0, 1.0, -1.0, 0.0, 3.0, 2.0])
            return {"action_dist_inputs": logits.repeat(n, 1)}

    actions = RLlibPolicy(Fixed()).act(np.zeros((2, 4), dtype=np.float32), {})
    np.testing.assert_array_equal(actions, [[1, 0, 2], [1, 0, 2]])
