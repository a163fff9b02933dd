"""PPO-Lagrangian (agents.ppo_lagrangian): the shaped reward, the dual update, the agent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv

from agents import ppo_lagrangian as pl
from immunegym.env.adapters.sb3 import make_vec_env
from immunegym.validation import ValidationError

ROOT = Path(__file__).resolve().parents[1]
TINY = {"horizon": 2, "eval_patients": 4, "train_patients": 16, "progress_bar": False,
        "n_envs": 8, "n_steps": 4, "batch_size": 16, "n_epochs": 1}


class CostlyVecEnv(VecEnv):
    """Episodes of ``length`` steps; env ``i`` earns reward ``i`` and cost ``cost`` a step."""

    def __init__(self, n: int = 4, length: int = 2, cost: float = 1.0,
                 drop_cost: bool = False) -> None:
        self.render_mode = None
        super().__init__(n, gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
                         gym.spaces.Discrete(2))
        self.length, self.cost, self.drop_cost = length, cost, drop_cost
        self.t = 0

    def reset(self) -> np.ndarray:
        self.t = 0
        return np.zeros((self.num_envs, 3), np.float32)

    def step_async(self, actions: np.ndarray) -> None:
        self.actions = actions

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        self.t += 1
        done = self.t % self.length == 0
        obs = np.full((self.num_envs, 3), 0.1 * (self.t % self.length), np.float32)
        rewards = np.arange(self.num_envs, dtype=np.float32)
        infos: list[dict[str, Any]] = [{} if self.drop_cost else {"cost": self.cost * (i + 1)}
                                       for i in range(self.num_envs)]
        if done:
            for info in infos:
                info["terminal_observation"] = obs[0].copy()
        return obs, rewards, np.full(self.num_envs, done), infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None,
                   **kwargs: Any) -> list[Any]:
        return [getattr(self, method_name)(*args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: Any, indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def _train_on_fake(cost_target: float, lambda_init: float = 0.0,
                   lambda_lr: float = 0.05) -> pl.LagrangianRecord:
    """PPO on :class:`CostlyVecEnv` (episode cost 2, 4, 6, 8: mean 5) for 4 rollouts."""
    venv = pl.LagrangianVecEnv(CostlyVecEnv(), lambda_init)
    model = PPO("MlpPolicy", venv, n_steps=4, batch_size=16, n_epochs=1, seed=0,
                device="cpu", policy_kwargs={"net_arch": [8]})
    dual = pl.DualUpdate(venv, cost_target, lambda_lr)
    model.learn(64, callback=dual)
    return dual.record


# ---------------------------------------------------------------------- the wrapper
def test_reward_is_r_minus_lambda_cost_on_a_fake_env() -> None:
    venv = pl.LagrangianVecEnv(CostlyVecEnv(length=3), lagrange_multiplier=0.5)
    venv.reset()
    for step in range(1, 7):
        _, rewards, dones, infos = venv.step(np.zeros(4, dtype=np.int64))
        cost = np.arange(1, 5, dtype=np.float64)
        np.testing.assert_allclose(rewards, np.arange(4) - 0.5 * cost)
        assert rewards.dtype == np.float32
        assert dones.all() == (step % 3 == 0)
        assert ("episode_cost" in infos[0]) == (step % 3 == 0)
    assert venv.pop_episode_costs() == [3.0, 6.0, 9.0, 12.0] * 2
    assert venv.pop_episode_costs() == []
    venv.lagrange_multiplier = 2.0
    _, rewards, _, _ = venv.step(np.zeros(4, dtype=np.int64))
    np.testing.assert_allclose(rewards, np.arange(4) - 2.0 * np.arange(1, 5))


def test_reward_is_r_minus_lambda_cost_in_the_real_env() -> None:
    """Same seed, same fixed (aggressive, toxic) actions: the shaped env's rewards are the
    plain env's minus lambda times the cycle's grade >= 3 adverse events."""
    kwargs = {"n_envs": 16, "horizon": 3, "bank_size": 32}
    plain = make_vec_env("ImmuneSim-v0", seed=7, **kwargs)
    shaped = pl.LagrangianVecEnv(make_vec_env("ImmuneSim-v0", seed=7, **kwargs), 1.5)
    plain.reset()
    shaped.reset()
    all_on = np.full((16, 5), 2, dtype=np.int64)
    total_cost, sums = 0.0, np.zeros(16)
    ended: list[float] = []
    for _ in range(5):
        _, r_plain, d_plain, i_plain = plain.step(all_on)
        _, r_shaped, d_shaped, i_shaped = shaped.step(all_on)
        cost = np.array([info["cost"] for info in i_plain])
        np.testing.assert_array_equal(d_plain, d_shaped)
        np.testing.assert_allclose(r_shaped, r_plain - 1.5 * cost, rtol=1e-6, atol=1e-5)
        total_cost += cost.sum()
        sums += cost
        for i in np.flatnonzero(d_plain):
            ended.append(sums[i])
            assert i_shaped[i]["episode_cost"] == sums[i]
            sums[i] = 0.0
    assert total_cost > 0, "no adverse event: the test shows nothing"
    assert shaped.pop_episode_costs() == ended
    # Masks pass through the wrapper (MaskablePPO reads them with env_method).
    np.testing.assert_array_equal(np.stack(shaped.env_method("action_masks")),
                                  plain.action_masks())


def test_wrapper_refuses_bad_multipliers_and_missing_costs() -> None:
    with pytest.raises(ValidationError, match="lagrange_multiplier"):
        pl.LagrangianVecEnv(CostlyVecEnv(), -0.1)
    venv = pl.LagrangianVecEnv(CostlyVecEnv())
    with pytest.raises(ValidationError, match="lagrange_multiplier"):
        venv.lagrange_multiplier = float("nan")
    venv = pl.LagrangianVecEnv(CostlyVecEnv(drop_cost=True))
    venv.reset()
    with pytest.raises(ValidationError, match=r"infos\[0\]\['cost'\]: missing"):
        venv.step(np.zeros(4, dtype=np.int64))
    with pytest.raises(ValidationError, match="env"):
        pl.DualUpdate(CostlyVecEnv(), 1.0, 0.05)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the dual update
def test_lambda_grows_when_over_budget(one_torch_thread) -> None:
    record = _train_on_fake(cost_target=0.0)
    # Every rollout (4 steps, episodes of 2) ends 8 episodes of mean cost 5: +0.05 * 5.
    assert record.timesteps == [16, 32, 48, 64]
    np.testing.assert_allclose(record.mean_episode_costs, [5.0] * 4)
    np.testing.assert_allclose(record.lambdas, [0.25, 0.5, 0.75, 1.0])
    assert len(record.episode_costs) == 32


def test_lambda_is_clamped_at_zero_under_budget(one_torch_thread) -> None:
    record = _train_on_fake(cost_target=1e6)
    assert record.lambdas == [0.0] * 4
    record = _train_on_fake(cost_target=6.0, lambda_init=0.12)  # down 0.05 a rollout
    np.testing.assert_allclose(record.lambdas, [0.07, 0.02, 0.0, 0.0], atol=1e-12)
    assert record.final_lambda == 0.0


# ---------------------------------------------------------------------- the agent
def test_tiny_run_through_the_leaderboard_interface(one_torch_thread, tmp_path: Path) -> None:
    args = pl.Args(seed=0, horizon=2, device="cpu", total_timesteps=128, cost_target=0.0,
                   progress_bar=False, log_dir=str(tmp_path),
                   **{k: v for k, v in TINY.items() if k not in ("horizon", "progress_bar")})
    policy = pl.LagrangianPolicy(pl.train(args))
    assert policy.name == "ppo_lagrangian"
    record = policy.record
    assert record is not None and record.cost_target == 0.0
    assert len(record.lambdas) == 4 and record.timesteps[-1] == 128
    # The world model's patients do have severe adverse events: over a budget of 0,
    # lambda only grows.
    assert all(c > 0 for c in record.mean_episode_costs)
    assert all(b > a for a, b in zip([0.0, *record.lambdas], record.lambdas, strict=False))
    assert record.to_dict()["final_lambda"] == record.lambdas[-1]
    env = make_vec_env("ImmuneSim-v0", n_envs=4, seed=0, horizon=2, bank_size=16)
    obs = env.reset()
    actions = policy.act(obs, {})
    assert actions.shape == (4, 5) and env.action_space.contains(actions[0])
    assert list(tmp_path.glob("ppo_lagrangian-0_*")), "no TensorBoard run"


def test_main_judges_and_reports_the_multiplier(one_torch_thread, tmp_path: Path) -> None:
    args = pl.Args(total_timesteps=64, cost_target=0.5, log_dir=str(tmp_path),
                   save_path=str(tmp_path / "saved"), **TINY)
    result = pl.main(args)
    assert np.isfinite(result["return_sim"])
    lag = result["lagrangian"]
    assert lag["cost_target"] == 0.5 and len(lag["lambdas"]) == 2
    assert all(x >= 0 for x in lag["lambdas"])
    again = pl.main(pl.Args(log_dir=str(tmp_path), load_path=str(tmp_path / "saved"), **TINY))
    assert again["return_sim"] == pytest.approx(result["return_sim"])
    assert "lagrangian" not in again


@pytest.mark.parametrize(("field", "value"), [
    ("cost_target", -1.0), ("cost_target", float("inf")), ("lambda_lr", 0.0),
    ("lambda_lr", -0.05), ("lambda_init", -0.5), ("lambda_init", float("nan")),
])
def test_bad_arguments_are_refused(field: str, value: float, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=rf"{field}: got .*expected a finite number"):
        pl.Args(log_dir=str(tmp_path), **{field: value})


def test_help_lists_the_constraint_arguments() -> None:
    done = subprocess.run([sys.executable, "-m", "agents.ppo_lagrangian", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    for flag in ("--cost-target", "--lambda-lr", "--lambda-init", "--masked",
                 "--total-timesteps", "--n-envs"):
        assert flag in done.stdout, flag
    assert "held-out" in done.stdout
