"""sb3-contrib's MaskablePPO in agents.sb3_ppo (``--masked``): training, acting, save / load.

sb3-contrib is a dependency of the ``rl`` extra, so it is imported plainly: a missing
install fails these tests instead of skipping them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from agents import sb3_ppo
from immunegym.env.vector import ImmuneSimVectorEnv
from immunegym.validation import ValidationError

RADIO = 3  # THERAPIES index of radiotherapy (capped at 2 courses)
TINY = {"horizon": 4, "eval_patients": 4, "train_patients": 16, "progress_bar": False,
        "n_envs": 8, "n_steps": 4, "batch_size": 16, "n_epochs": 1}


class MaskAudit(VecEnvWrapper):
    """Checks every action the algorithm sends against the env's masks at that moment."""

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        nvec = np.asarray(venv.action_space.nvec)
        self.offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        self.steps = 0
        self.masked_entries = 0  # forbidden (env, therapy, level) choices seen
        self.violations = 0

    def reset(self):
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        masks = np.stack(self.venv.env_method("action_masks"))
        chosen = masks[np.arange(len(actions))[:, None], self.offsets + np.asarray(actions)]
        self.violations += int((~chosen).sum())
        self.masked_entries += int((~masks).sum())
        self.steps += 1
        self.venv.step_async(actions)

    def step_wait(self):
        return self.venv.step_wait()


def _exhausted_radio(n: int = 8, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """ImmuneSim observations and infos after both radiotherapy courses (radio now masked)."""
    env = ImmuneSimVectorEnv(n, horizon=4, bank_size=16, terminate_on_progression=False)
    obs, infos = env.reset(seed=seed)
    radio = np.zeros((n, 5), dtype=np.int64)
    radio[:, RADIO] = 2
    for _ in range(2):
        obs, _, _, _, infos = env.step(radio)
    env.close()
    assert not infos["action_mask"][:, RADIO, 1:].any()
    return obs, infos


def test_masked_training_never_samples_a_masked_action(monkeypatch, one_torch_thread,
                                                       tmp_path: Path) -> None:
    audits: list[MaskAudit] = []
    make = sb3_ppo.make_training_env

    def audited(args: sb3_ppo.Args) -> VecEnv:
        audits.append(MaskAudit(make(args)))
        return audits[-1]

    monkeypatch.setattr(sb3_ppo, "make_training_env", audited)
    args = sb3_ppo.Args(masked=True, total_timesteps=256, log_dir=str(tmp_path), **TINY)
    model = sb3_ppo.train(args)
    assert isinstance(model, MaskablePPO)
    assert isinstance(model.policy, MaskableActorCriticPolicy)
    assert model.num_timesteps >= 256
    audit = audits[0]
    assert audit.steps >= 256 // TINY["n_envs"]
    assert audit.masked_entries > 0, "the rollouts met no mask: the check proves nothing"
    assert audit.violations == 0


def test_policy_acts_within_the_env_masks(one_torch_thread, tmp_path: Path) -> None:
    args = sb3_ppo.Args(masked=True, total_timesteps=64, log_dir=str(tmp_path), **TINY)
    policy = sb3_ppo.SB3Policy(sb3_ppo.train(args))
    assert policy.maskable
    obs, infos = _exhausted_radio()
    for _ in range(3):
        actions = policy.act(obs, infos)
        assert actions.shape == (8, 5) and not (actions[:, RADIO] > 0).any()
    # Random masks (level 0 always allowed): the untrained argmax would break some; the
    # masked policy never does.
    rng = np.random.default_rng(0)
    mask = rng.random((8, 5, 3)) < 0.4
    mask[..., 0] = True
    unmasked = policy.model.predict(obs, deterministic=True)[0]
    rows, cols = np.arange(8)[:, None], np.arange(5)[None, :]
    assert not mask[rows, cols, unmasked].all()
    masked = policy.act(obs, {"action_mask": mask})
    assert mask[rows, cols, masked].all()
    # No mask in infos: acts unmasked (the env still withholds what its rules forbid).
    np.testing.assert_array_equal(policy.act(obs, {}), unmasked)


def test_masked_main_saves_loads_and_judges(one_torch_thread, tmp_path: Path) -> None:
    save_dir = tmp_path / "masked"
    args = sb3_ppo.Args(masked=True, total_timesteps=64, save_path=str(save_dir),
                        log_dir=str(tmp_path / "runs"), **TINY)
    result = sb3_ppo.main(args)
    assert np.isfinite(result["return_sim"])
    config = json.loads((save_dir / "config.json").read_text())
    assert config["policy"]["class"] == "MaskableActorCriticPolicy"
    assert config["args"]["masked"] is True
    loaded = sb3_ppo.load(str(save_dir))
    assert isinstance(loaded, MaskableActorCriticPolicy)
    policy = sb3_ppo.SB3Policy(loaded)
    assert policy.maskable
    obs, infos = _exhausted_radio()
    actions = policy.act(obs, infos)
    assert not (actions[:, RADIO] > 0).any()
    again = sb3_ppo.main(sb3_ppo.Args(log_dir=str(tmp_path / "runs"), load_path=str(save_dir),
                                      **TINY))
    assert again["return_sim"] == pytest.approx(result["return_sim"])


def test_plain_policy_ignores_masks_and_bad_masks_are_refused(tmp_path: Path) -> None:
    from stable_baselines3.common.policies import ActorCriticPolicy

    obs, infos = _exhausted_radio()
    env = ImmuneSimVectorEnv(1, horizon=2, bank_size=16)
    space, action_space = env.single_observation_space, env.single_action_space
    env.close()
    plain = sb3_ppo.SB3Policy(ActorCriticPolicy(space, action_space, lambda _: 1e-3,
                                                net_arch=[8]))
    assert not plain.maskable
    assert plain.act(obs, infos).shape == (8, 5)
    masked = sb3_ppo.SB3Policy(MaskableActorCriticPolicy(space, action_space, lambda _: 1e-3,
                                                         net_arch=[8]))
    with pytest.raises(ValidationError, match="action_mask"):
        masked.act(obs, {"action_mask": np.ones((8, 4), dtype=bool)})
    with pytest.raises(ValidationError, match="model"):
        sb3_ppo.SB3Policy(object())
    with pytest.raises(ValidationError, match="masked"):
        sb3_ppo.Args(masked="yes", log_dir=str(tmp_path))
