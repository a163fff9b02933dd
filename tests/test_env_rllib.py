"""RLlib adapter: the registered creator, and PPO (new API stack) stepping the native vector env."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.rllib")

import gymnasium as gym  # noqa: E402
from ray.tune.registry import ENV_CREATOR, _global_registry  # noqa: E402

from immunegym.env.adapters.rllib import EnvCreator, ppo_config, register  # noqa: E402
from immunegym.env.single import ImmuneWorldEnv  # noqa: E402
from immunegym.env.vector import ImmuneWorldVectorEnv  # noqa: E402

SMALL = {"horizon": 4, "bank_size": 32}

# RLlib re-registers its gym id for every env it builds.
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*Overriding environment rllib-single-agent-env-v0")


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _registered_creator(name: str):
    """The creator as RLlib's env runners get it: unpickled from the tune registry."""
    assert _global_registry.contains(ENV_CREATOR, name)
    return _global_registry.get(ENV_CREATOR, name)


def test_register_returns_the_name_and_a_creator_of_the_single_env():
    name = register()
    assert name == "immunegym/ImmuneWorld-v0"
    creator = _registered_creator(name)
    assert isinstance(creator, EnvCreator) and creator.env_id == "ImmuneWorld-v0"
    env = creator({})
    try:
        assert isinstance(env, gym.Env) and not isinstance(env, gym.vector.VectorEnv)
        assert type(env.unwrapped) is ImmuneWorldEnv
    finally:
        env.close()
    env = creator(dict(SMALL, action_type="menu"))
    try:
        assert env.unwrapped.scenario.horizon == 4
        assert env.action_space == gym.spaces.Discrete(len(env.unwrapped.scenario.menu))
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
    finally:
        env.close()


def test_creator_with_num_envs_returns_the_native_vector_env():
    creator = _registered_creator(register("immunegym-test/sim", env_id="ImmuneSim-v0"))
    env = creator(dict(SMALL, num_envs=4))
    try:
        assert isinstance(env.unwrapped, ImmuneWorldVectorEnv)
        assert type(env.unwrapped).__name__ == "ImmuneSimVectorEnv"
        assert not isinstance(env, gym.vector.SyncVectorEnv)
        assert env.num_envs == 4 and env.unwrapped.scenario.horizon == 4
        assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
        obs, _ = env.reset(seed=0)
        assert obs.shape == (4, *env.single_observation_space.shape)
    finally:
        env.close()
    with pytest.raises(ValueError, match="NEXT_STEP"):
        creator(dict(SMALL, num_envs=2, autoreset_mode="same_step"))


def test_register_and_ppo_config_refuse_what_rllib_cannot_run():
    with pytest.raises(gym.error.Error):
        register(env_id="NoSuchImmuneEnv-v0")
    with pytest.raises(ValueError, match="MultiBinary"):
        ppo_config(env_config=dict(SMALL, action_type="multibinary"))


def test_documented_recipe_samples_the_native_vector_env():
    from ray.rllib.algorithms.ppo import PPOConfig

    config = (
        PPOConfig()
        .environment(register(), env_config=dict(SMALL, action_type="menu"))
        .env_runners(num_env_runners=0, num_envs_per_env_runner=3,
                     gym_env_vectorize_mode="vector_entry_point")
        .training(train_batch_size_per_learner=48, minibatch_size=16, num_epochs=1)
    )
    algo = config.build_algo()
    try:
        runner = algo.env_runner
        assert type(runner.env.unwrapped) is ImmuneWorldVectorEnv
        assert runner.num_envs == 3 and runner.env.unwrapped.scenario.horizon == 4
        assert isinstance(runner.env.single_action_space, gym.spaces.Discrete)
        episodes = runner.sample(num_timesteps=12, random_actions=True)
        assert sum(len(e) for e in episodes) >= 12
        assert all(e.t <= 4 for e in episodes)
    finally:
        algo.stop()


def test_remote_env_runner_builds_the_native_vector_env():
    """A fresh worker process finds the env through the pickled creator (a plain gym id,
    never imported there, would raise ``NameNotFound``); dict observations are flattened
    for the policy by the connector that :func:`ppo_config` adds."""
    algo = ppo_config(num_env_runners=1, num_envs_per_env_runner=2,
                      env_config=dict(SMALL, observation_type="dict"),
                      train_batch_size_per_learner=32, minibatch_size=16).build_algo()
    try:
        group = algo.env_runner_group
        kinds = group.foreach_env_runner(
            lambda r: (type(r.env.unwrapped).__name__,
                       type(r.env.single_observation_space).__name__),
            local_env_runner=False)
        assert kinds == [("ImmuneWorldVectorEnv", "Dict")]
        steps = group.foreach_env_runner(
            lambda r: sum(len(e) for e in r.sample(num_timesteps=8)), local_env_runner=False)
        assert steps[0] >= 8
    finally:
        algo.stop()


def test_ppo_trains_on_the_native_vector_env():
    algo = ppo_config(num_envs_per_env_runner=4, env_config=SMALL,
                      train_batch_size_per_learner=64, minibatch_size=32,
                      num_epochs=2).build_algo()
    try:
        runner = algo.env_runner
        assert type(runner.env.unwrapped) is ImmuneWorldVectorEnv and runner.num_envs == 4
        before = {k: v.detach().clone() for k, v in algo.get_module().state_dict().items()}
        for _ in range(2):
            result = algo.train()
        after = algo.get_module().state_dict()
        assert any(not np.array_equal(before[k].numpy(), after[k].detach().numpy())
                   for k in before), "PPO updates must change the policy"
        assert result["env_runners"]["num_env_steps_sampled_lifetime"] >= 128
        assert result["env_runners"]["num_episodes_lifetime"] > 0
        learner = result["learners"]["default_policy"]
        for key in ("total_loss", "policy_loss", "vf_loss", "entropy"):
            assert np.isfinite(float(learner[key])), key
    finally:
        algo.stop()
