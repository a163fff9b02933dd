"""The Stable-Baselines3 adapter: SB3's env checker, the VecEnv contract, seeding, masks, PPO."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.vec_env import VecEnv

import immunegym  # noqa: F401  (registers the ids)
from immunegym.env.adapters.sb3 import ImmuneSB3VecEnv, make_vec_env

FAST = {"horizon": 4, "bank_size": 32}
INFO_KEYS = ("cost", "action_mask", "given", "best_response", "sod_mm")
RADIO = 3  # THERAPIES index of radiotherapy (capped at 2 courses)


@pytest.fixture
def one_thread():
    """Tiny networks train fastest on one torch thread, and so does a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _actions(venv: VecEnv, rng: np.random.Generator) -> np.ndarray:
    space = venv.action_space
    if isinstance(space, spaces.Discrete):
        return rng.integers(0, int(space.n), venv.num_envs)
    if isinstance(space, spaces.MultiBinary):
        return rng.integers(0, 2, (venv.num_envs, *space.shape))
    return rng.integers(0, space.nvec, (venv.num_envs, len(space.nvec)))


# ---------------------------------------------------------------------- SB3's env checker
@pytest.mark.parametrize("env_id", ["ImmuneWorld-v0", "ImmuneSim-v0"])
@pytest.mark.parametrize("options", [{}, {"action_type": "multibinary", "observation_type": "dict"},
                                     {"action_type": "menu"}])
def test_sb3_check_env_passes_without_warnings(env_id: str, options: dict) -> None:
    env = gym.make(env_id, bank_size=32, **options).unwrapped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    assert [str(w.message) for w in caught] == []


# ---------------------------------------------------------------------- construction
@pytest.mark.parametrize("env_id", ["ImmuneWorld-v0", "ImmuneSim-v0"])
def test_make_vec_env_builds_one_native_vector_env(env_id: str) -> None:
    venv = make_vec_env(env_id, n_envs=3, seed=0, **FAST)
    assert isinstance(venv, VecEnv) and isinstance(venv, ImmuneSB3VecEnv)
    assert venv.num_envs == 3 and venv.venv.num_envs == 3
    assert isinstance(venv.venv, gym.vector.VectorEnv)
    assert venv.observation_space == venv.venv.single_observation_space
    assert venv.observation_space == spaces.Box(venv.observation_space.low,
                                                venv.observation_space.high, dtype=np.float32)
    assert venv.observation_space.shape == (44,)
    assert venv.action_space == spaces.MultiDiscrete([3] * 5)
    obs = venv.reset()
    assert obs.shape == (3, 44) and obs.dtype == np.float32
    assert all(venv.observation_space.contains(o) for o in obs)
    obs, rewards, dones, infos = venv.step(_actions(venv, np.random.default_rng(0)))
    assert obs.shape == (3, 44)
    assert rewards.shape == (3,) and rewards.dtype == np.float32
    assert dones.shape == (3,) and dones.dtype == np.bool_
    assert isinstance(infos, list) and len(infos) == 3
    for info in infos:
        assert set(INFO_KEYS) <= set(info)
        assert info["action_mask"].shape == (5, 3) and info["given"].shape == (5,)
        assert isinstance(info["cost"], float) and isinstance(info["sod_mm"], float)
    venv.close()


def test_dict_observations_and_ppo_multiinput_policy(one_thread) -> None:
    venv = make_vec_env("ImmuneSim-v0", n_envs=4, seed=0, observation_type="dict",
                        action_type="multibinary", terminate_on_progression=False, **FAST)
    assert isinstance(venv.observation_space, spaces.Dict)
    obs = venv.reset()
    assert set(obs) == set(venv.observation_space.spaces)
    for key, space in venv.observation_space.spaces.items():
        assert obs[key].shape == (4, *space.shape) and obs[key].dtype == np.float32
    model = PPO("MultiInputPolicy", venv, n_steps=4, batch_size=8, n_epochs=1, seed=0,
                device="cpu")
    model.learn(32)
    assert model.num_timesteps >= 32
    # A done env's terminal observation is a dict of that env's fields.
    venv.reset()
    for _ in range(FAST["horizon"] - 1):
        venv.step(np.zeros((4, 5), dtype=np.int8))
    _, _, dones, infos = venv.step(np.zeros((4, 5), dtype=np.int8))
    assert dones.all()
    final = infos[0]["terminal_observation"]
    assert set(final) == set(venv.observation_space.spaces)
    assert venv.observation_space.contains(final)


@pytest.mark.parametrize("n_envs", [0, -2, 2.5, "4", True, None])
def test_bad_n_envs_is_a_value_error(n_envs) -> None:
    with pytest.raises(ValueError, match="n_envs: got .*expected an integer in 1..4194304"):
        make_vec_env("ImmuneSim-v0", n_envs=n_envs, **FAST)


@pytest.mark.parametrize("kwarg", ["autoreset_mode", "num_envs", "vectorization_mode"])
def test_kwargs_the_adapter_fixes_are_refused(kwarg: str) -> None:
    with pytest.raises(ValueError, match=kwarg):
        make_vec_env("ImmuneSim-v0", n_envs=2, **{kwarg: "x"}, **FAST)


def test_native_env_in_next_step_mode_is_refused() -> None:
    native = gym.make_vec("ImmuneSim-v0", num_envs=2, vectorization_mode="vector_entry_point",
                          **FAST)
    with pytest.raises(ValueError, match="autoreset_mode"):
        ImmuneSB3VecEnv(native)


# ---------------------------------------------------------------------- episode ends
def test_truncation_at_the_horizon_carries_terminal_observation() -> None:
    horizon = 3
    venv = make_vec_env("ImmuneSim-v0", n_envs=4, seed=1, horizon=horizon, bank_size=32,
                        terminate_on_progression=False)
    venv.reset()
    # Untreated: no treatment-related death can end an episode before the horizon.
    untreated = np.zeros((venv.num_envs, 5), dtype=np.int64)
    for cycle in range(1, horizon):
        obs, _, dones, infos = venv.step(untreated)
        assert not dones.any(), f"no episode may end before the horizon (cycle {cycle})"
        for info in infos:
            assert "terminal_observation" not in info and "TimeLimit.truncated" not in info
            assert info["cycle"] == cycle
    last_obs = obs
    obs, _, dones, infos = venv.step(untreated)
    assert dones.all()
    time_feature = 20 + 8 + 1 + 1 + 1  # the "time" field: cycles elapsed / horizon
    for i, info in enumerate(infos):
        assert info["TimeLimit.truncated"] is True
        final = info["terminal_observation"]
        assert final.shape == (44,) and venv.observation_space.contains(final)
        assert final[time_feature] == pytest.approx(1.0)  # the last observation ...
        assert obs[i, time_feature] == 0.0  # ... and the next episode's first
        assert not np.array_equal(final, last_obs[i])
        assert info["cycle"] == horizon  # the info is the step that ended the episode
        assert set(INFO_KEYS) <= set(info)
        assert venv.reset_infos[i]["cycle"] == 0  # the new episode's info
    # The masks (and the next step) belong to the new episodes.
    assert venv.action_masks().all()


def test_terminal_keys_exactly_for_done_envs() -> None:
    # Progression and death end episodes at different cycles; the horizon truncates the rest.
    venv = make_vec_env("ImmuneSim-v0", n_envs=16, seed=3, horizon=6, bank_size=32)
    venv.reset()
    rng = np.random.default_rng(3)
    seen = {"terminated": 0, "truncated": 0}
    for _ in range(24):
        _, _, dones, infos = venv.step(_actions(venv, rng))
        for done, info in zip(dones, infos, strict=True):
            assert ("terminal_observation" in info) == bool(done)
            assert ("TimeLimit.truncated" in info) == bool(done)
            assert set(INFO_KEYS) <= set(info)
            if done:
                truncated = info["TimeLimit.truncated"]
                assert truncated == (info["cycle"] == 6 and not info["died"]
                                     and not info["progressed"])
                seen["truncated" if truncated else "terminated"] += 1
    assert seen["terminated"] > 0 and seen["truncated"] > 0, seen


# ---------------------------------------------------------------------- seeding, options
@pytest.mark.parametrize("env_id", ["ImmuneWorld-v0", "ImmuneSim-v0"])
def test_same_seed_same_observations(env_id: str) -> None:
    def rollout(seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        venv = make_vec_env(env_id, n_envs=4, seed=seed, **FAST)
        rng = np.random.default_rng(0)
        observations, rewards = [venv.reset()], []
        for _ in range(6):  # crosses the horizon: autoresets are seeded too
            obs, reward, _, _ = venv.step(_actions(venv, rng))
            observations.append(obs)
            rewards.append(reward)
        return observations, rewards

    obs_a, rew_a = rollout(11)
    obs_b, rew_b = rollout(11)
    obs_c, _ = rollout(12)
    for a, b in zip(obs_a, obs_b, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.stack(rew_a), np.stack(rew_b))
    assert not all(np.array_equal(a, c) for a, c in zip(obs_a, obs_c, strict=True))


def test_seed_is_used_once_per_reset() -> None:
    venv = make_vec_env("ImmuneSim-v0", n_envs=4, **FAST)
    assert venv.seed(5) == [5, 6, 7, 8]
    first = venv.reset()
    assert venv._seeds == [None] * 4  # consumed, as in SB3
    venv.seed(5)
    np.testing.assert_array_equal(venv.reset(), first)
    assert not np.array_equal(venv.reset(), first)  # unseeded: the generator goes on


def test_options_pin_patients() -> None:
    venv = make_vec_env("ImmuneSim-v0", n_envs=4, seed=0, **FAST)
    venv.set_options({"patient": 5})
    venv.reset()
    assert [info["patient"] for info in venv.reset_infos] == [5, 5, 5, 5]
    venv.set_options([{"patient": p} for p in (3, 1, 4, 1)])
    venv.reset()
    assert [info["patient"] for info in venv.reset_infos] == [3, 1, 4, 1]
    venv.reset()  # options are used once
    assert [info["patient"] for info in venv.reset_infos] != [3, 1, 4, 1]
    venv.set_options([{"patient": 2}, {}, {}, {}])
    with pytest.raises(ValueError, match=r"options\['patient'\]"):
        venv.reset()


# ---------------------------------------------------------------------- action masks
@pytest.mark.parametrize(("action_type", "width", "radio_off_cols", "radio_on_cols"), [
    ("multidiscrete", 15, [3 * RADIO], [3 * RADIO + 1, 3 * RADIO + 2]),
    ("multibinary", 10, [2 * RADIO], [2 * RADIO + 1]),
    ("menu", 10, [0], [6, 7]),  # "none"; "radio", "radio+anti_pd1"
])
def test_action_masks_in_maskable_ppo_layout(action_type: str, width: int,
                                             radio_off_cols: list[int],
                                             radio_on_cols: list[int]) -> None:
    venv = make_vec_env("ImmuneSim-v0", n_envs=3, seed=0, action_type=action_type,
                        terminate_on_progression=False, **FAST)
    with pytest.raises(RuntimeError, match="reset"):
        venv.action_masks()
    venv.reset()
    masks = venv.action_masks()
    assert masks.shape == (3, width) and masks.dtype == np.bool_ and masks.all()
    radio = {"multidiscrete": np.array([0, 0, 0, 2, 0]), "multibinary": np.array([0, 0, 0, 1, 0]),
             "menu": np.array(6)}[action_type]
    for _ in range(2):  # radiotherapy is capped at 2 courses
        venv.step(np.stack([radio] * 3))
    masks = venv.action_masks()
    assert masks[:, radio_off_cols].all()
    assert not masks[:, radio_on_cols].any()
    assert masks.sum() == 3 * (width - len(radio_on_cols))
    # What sb3-contrib's MaskablePPO reads (get_action_masks / is_masking_supported).
    np.testing.assert_array_equal(np.stack(venv.env_method("action_masks")), masks)
    np.testing.assert_array_equal(venv.env_method("action_masks", indices=[2])[0], masks[2])
    assert venv.has_attr("action_masks")
    np.testing.assert_array_equal(venv.get_attr("action_masks", indices=1)[0](), masks[1])


@pytest.mark.parametrize("action_type", ["multidiscrete", "multibinary", "menu"])
def test_maskable_ppo_never_picks_a_masked_action(action_type: str, one_thread) -> None:
    # A plain import: sb3-contrib is a dependency of the `rl` extra, so its absence fails.
    import sb3_contrib as contrib
    from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported

    venv = make_vec_env("ImmuneSim-v0", n_envs=8, seed=0, action_type=action_type,
                        terminate_on_progression=False, **FAST)
    assert is_masking_supported(venv)
    model = contrib.MaskablePPO("MlpPolicy", venv, n_steps=8, batch_size=32, seed=0,
                                device="cpu")
    model.learn(128)
    obs = venv.reset()
    radio = {"multidiscrete": np.array([0, 0, 0, 2, 0]), "multibinary": np.array([0, 0, 0, 1, 0]),
             "menu": np.array(6)}[action_type]
    for _ in range(2):  # radiotherapy is capped at 2 courses
        obs, *_ = venv.step(np.stack([radio] * 8))
    masks = get_action_masks(venv)
    actions = np.stack([model.predict(obs, action_masks=masks)[0] for _ in range(20)])
    if action_type == "menu":
        assert not np.isin(actions, [6, 7]).any()
    else:
        assert not (actions[..., RADIO] > 0).any()


# ---------------------------------------------------------------------- attributes, render
def test_attributes_methods_and_wrappers() -> None:
    venv = make_vec_env("ImmuneSim-v0", n_envs=3, seed=0, **FAST)
    scenarios = venv.get_attr("scenario")
    assert len(scenarios) == 3 and scenarios[0].horizon == FAST["horizon"]
    assert len(venv.get_attr("scenario", indices=[0, 2])) == 2
    assert not venv.has_attr("no_such_attribute")
    venv.set_attr("custom_flag", 7)
    assert venv.get_attr("custom_flag") == [7, 7, 7]
    with pytest.raises(ValueError, match="indices"):
        venv.set_attr("custom_flag", 8, indices=[1])
    assert venv.env_is_wrapped(gym.Wrapper) == [False, False, False]
    assert venv.env_is_wrapped(gym.Wrapper, indices=[1]) == [False]
    with pytest.raises(RuntimeError, match="step_async"):
        venv.step_wait()


def test_render_rgb_array_and_ansi() -> None:
    venv = make_vec_env("ImmuneSim-v0", n_envs=2, seed=0, render_mode="rgb_array", **FAST)
    venv.reset()
    venv.step(np.zeros((2, 5), dtype=np.int64))
    frame = venv.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    assert len(venv.get_images()) == 1
    text = make_vec_env("ImmuneSim-v0", n_envs=2, seed=0, render_mode="ansi", **FAST)
    text.reset()
    rendered = text.env_method("render")
    assert len(rendered) == 2 and "patient" in rendered[0]


# ---------------------------------------------------------------------- learning
def test_ppo_learns_to_beat_a_random_policy(one_thread) -> None:
    """PPO trained for 8192 steps beats a uniform-random policy on the same 128 patients.

    ImmuneSim with on/off therapies and a reward that charges each grade >= 3 adverse event
    (``toxicity=1``) besides death and progression: every therapy shrinks tumors, but
    anti-CTLA-4 and chemotherapy barely pay for their toxicity. Mean episode return (6
    cycles) of the deterministic trained policy against the uniform-random policy, both
    on every bank patient once with the same simulator seed: the random policy scores
    ~1.5, "all on" ~2.1, "none" ~-1.0. Over 24 training seeds the trained policy beat
    the random one by 0.35 to 0.84, mean 0.60 (~6 s each on one CPU thread).
    """
    random_return, trained_return = _ppo_returns(seed=0)
    assert trained_return > random_return + 0.15, (trained_return, random_return)


def _ppo_returns(seed: int) -> tuple[float, float]:
    """Mean episode returns of the uniform-random policy and of PPO trained with ``seed``."""
    horizon, n_eval = 6, 128
    kwargs = {"horizon": horizon, "bank_size": n_eval, "action_type": "multibinary",
              "reward": {"tumor": 1.0, "survival": 0.0, "death": 5.0, "progression": 1.0,
                         "toxicity": 1.0}}
    evaluation = make_vec_env("ImmuneSim-v0", n_envs=n_eval, **kwargs)

    def mean_return(act, action_seed: int = 0) -> float:
        evaluation.seed(1234)  # the same patients, scans and toxicity draws for every policy
        evaluation.set_options({"patient": list(range(n_eval))})  # every patient once
        obs = evaluation.reset()
        total, running = np.zeros(n_eval), np.ones(n_eval, dtype=bool)
        rng = np.random.default_rng(action_seed)
        for _ in range(horizon):
            obs, reward, dones, _ = evaluation.step(act(obs, rng))
            total += reward * running  # first episode of each env only
            running &= ~dones
        return float(total.mean())

    random_return = float(np.mean([
        mean_return(lambda obs, rng: rng.integers(0, 2, (n_eval, 5)), action_seed)
        for action_seed in range(5)]))
    venv = make_vec_env("ImmuneSim-v0", n_envs=32, seed=seed, **kwargs)
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=128, n_epochs=4, learning_rate=3e-3,
                gamma=0.9, seed=seed, device="cpu", policy_kwargs={"net_arch": [32, 32]})
    model.learn(8192)
    trained_return = mean_return(lambda obs, rng: model.predict(obs, deterministic=True)[0])
    return random_return, trained_return
