"""RLlib adapter: train on the native vector envs with RLlib's new API stack (Ray 2.60).

RLlib's ``SingleAgentEnvRunner`` builds its env with ``gym.make_vec(...,
vectorization_mode=config.gym_env_vectorize_mode)``. With ``"vector_entry_point"`` and an env
registered through :func:`register`, the runner steps one :class:`~immunegym.env.vector.
ImmuneWorldVectorEnv` (one batched simulator call for all ``num_envs_per_env_runner`` envs)
instead of RLlib's default ``SyncVectorEnv`` of single envs. The recipe::

    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from immunegym.env.adapters.rllib import register

    ray.init()                         # a cluster: ray.init(address="auto") or
                                       # ray.init(address="ray://<head>:10001")  (--address)
    env = register()                   # "immunegym/ImmuneWorld-v0" (register_env under the hood)
    config = (
        PPOConfig()
        .environment(env, env_config={"horizon": 16, "action_type": "multidiscrete"})
        .env_runners(num_env_runners=0, num_envs_per_env_runner=64,
                     gym_env_vectorize_mode="vector_entry_point")
    )
    algo = config.build_algo()
    algo.train()
    type(algo.env_runner.env.unwrapped)  # ImmuneWorldVectorEnv

or, the same with small defaults, ``algo = ppo_config(env_config={...}).build_algo()``.

How RLlib 2.x gets there (``SingleAgentEnvRunner.make_env``): a tune-registered name is
re-registered with gymnasium as ``"rllib-single-agent-env-v0"`` with
``entry_point=lambda: creator(env_ctx)`` and ``vector_entry_point=lambda num_envs:
creator(env_ctx | {"num_envs": num_envs})``; ``gym.make_vec`` then calls the vector entry
point, so the creator receives ``env_config`` plus ``num_envs`` and must return the vector
env itself, which is what :class:`EnvCreator` does. The env is then wrapped in gymnasium's
``DictInfoToList``; RLlib's episode bookkeeping assumes ``NEXT_STEP`` autoreset (our
default; ``autoreset_mode="same_step"`` is refused).

Notes:

* ``config.environment("ImmuneWorld-v0", env_config={...})`` (the gym id, not registered
  with tune) also reaches the native vector env, since RLlib then calls
  ``gym.make_vec("ImmuneWorld-v0", vectorization_mode=..., **env_config)``; but remote env
  runners (``num_env_runners > 0``) start in fresh processes where ``immunegym`` has not
  registered its ids: use ``"immunegym:ImmuneWorld-v0"`` there, or better :func:`register`,
  whose creator is pickled by reference and imports ``immunegym`` wherever it runs.
* On a cluster every node must be able to import ``immunegym`` (install it, or pass
  ``runtime_env={"py_modules": [immunegym]}`` / ``{"working_dir": ...}`` to ``ray.init``).
* Without ``gym_env_vectorize_mode="vector_entry_point"`` RLlib (default ``"sync"``) steps a
  ``SyncVectorEnv`` of single envs: correct, but one simulator call per env per step.
* RLlib's default models do not support ``MultiBinary`` actions: use the default
  ``action_type="multidiscrete"`` or ``"menu"``. ``observation_type="dict"`` needs a
  ``FlattenObservations`` env-to-module connector (:func:`ppo_config` adds it).
* ``device="cuda"`` in ``env_config`` runs the simulator on the env runner's GPU: give
  remote runners one with ``env_runners(num_gpus_per_env_runner=...)``.
* Fault tolerance: :func:`ppo_config` restarts a remote env runner that dies (its actor
  killed, its node lost) after :data:`RESTART_DELAY_S` seconds, up to
  :data:`MAX_ENV_RUNNER_RESTARTS` times; training goes on with the healthy runners
  meanwhile (tested by killing one mid-run).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode

import immunegym  # noqa: F401  (registers the gym ids)
from immunegym.validation import ValidationError

PREFIX = "immunegym/"
"""Default tune name of a registered id: ``PREFIX + env_id``."""

PPO_DEFAULTS: dict[str, Any] = {
    "train_batch_size_per_learner": 1024,
    "minibatch_size": 128,
    "num_epochs": 4,
    "lr": 3e-4,
    "gamma": 0.99,
    "lambda_": 0.95,
    "entropy_coeff": 0.01,
    "vf_clip_param": 20.0,
}
"""What :func:`ppo_config` passes to ``PPOConfig.training`` unless overridden."""

MAX_ENV_RUNNER_RESTARTS = 100
"""Restarts of failed remote env runners before training gives up."""
RESTART_DELAY_S = 5.0
"""Seconds between a runner's failure and its restart (RLlib's default is 60)."""
MAX_ENVS_PER_RUNNER = 1_000_000
MAX_ENV_RUNNERS = 10_000


class EnvCreator:
    """RLlib env creator for one gym id (picklable by reference, so remote env runners
    import ``immunegym`` and find the id registered).

    ``creator(config)`` returns ``gym.make(env_id, **config)`` (the single env) or, when
    ``config`` has ``num_envs``, ``gym.make_vec(env_id, num_envs=...,
    vectorization_mode="vector_entry_point", **rest)`` (the native vector env).
    """

    def __init__(self, env_id: str) -> None:
        self.env_id = env_id

    def __call__(self, config: dict[str, Any] | None = None) -> gym.Env | gym.vector.VectorEnv:
        kwargs = dict(config or {})
        num_envs = kwargs.pop("num_envs", None)
        if num_envs is None:
            return gym.make(self.env_id, **kwargs)
        mode = kwargs.get("autoreset_mode")
        if mode is not None and _not_next_step(mode):
            raise ValidationError(f"autoreset_mode: got {mode!r}; RLlib's env runners expect "
                             "NEXT_STEP autoreset (the default)")
        return gym.make_vec(self.env_id, num_envs=int(num_envs),
                            vectorization_mode="vector_entry_point", **kwargs)

    def __repr__(self) -> str:
        return f"EnvCreator({self.env_id!r})"


def register(name: str | None = None, env_id: str = "ImmuneWorld-v0") -> str:
    """Register ``env_id`` with RLlib (``ray.tune.registry.register_env``).

    Parameters
    ----------
    name
        The tune name; ``"immunegym/<env_id>"`` by default.
    env_id
        A gym id registered by ``immunegym`` (``"ImmuneWorld-v0"``, ``"ImmuneSim-v0"`` or a
        scenario file's id).

    Returns
    -------
    str
        The name to pass to ``config.environment(...)``.
    """
    from ray.tune.registry import register_env

    gym.spec(env_id)  # fail here, not inside an env runner, for an unknown id
    name = name or PREFIX + env_id
    register_env(name, EnvCreator(env_id))
    return name


def ppo_config(env_id: str = "ImmuneWorld-v0", *, num_envs_per_env_runner: int = 8,
               num_env_runners: int = 0, env_config: dict[str, Any] | None = None,
               max_env_runner_restarts: int = MAX_ENV_RUNNER_RESTARTS,
               restart_delay_s: float = RESTART_DELAY_S, **training: Any):
    """A small new-API-stack PPO config (torch) stepping the native vector env.

    Parameters
    ----------
    env_id
        The gym id (registered with tune through :func:`register`).
    num_envs_per_env_runner
        The vector env's ``num_envs`` in each env runner.
    num_env_runners
        Remote env runners (0: sample in the driver).
    env_config
        Env kwargs (``horizon``, ``bank_size``, ``action_type``, ``device``, ...).
    max_env_runner_restarts, restart_delay_s
        A remote env runner that dies is restarted after ``restart_delay_s`` seconds, at
        most ``max_env_runner_restarts`` times (RLlib's ``fault_tolerance``); sampling
        continues on the healthy runners meanwhile.
    **training
        ``PPOConfig.training`` arguments, over :data:`PPO_DEFAULTS`.

    Returns
    -------
    ray.rllib.algorithms.ppo.PPOConfig
        Build it with ``.build_algo()``; chain further settings as usual.
    """
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from immunegym import validation as v

    v.integer("num_envs_per_env_runner", num_envs_per_env_runner, low=1,
              high=MAX_ENVS_PER_RUNNER)
    v.integer("num_env_runners", num_env_runners, low=0, high=MAX_ENV_RUNNERS)
    v.integer("max_env_runner_restarts", max_env_runner_restarts, low=0, high=1_000_000)
    v.number("restart_delay_s", restart_delay_s, low=0)
    if env_config is not None and not isinstance(env_config, dict):
        raise v.bad("env_config", env_config, "a dict of env kwargs")
    env_config = dict(env_config or {})
    if env_config.get("action_type") == "multibinary":
        raise ValidationError("action_type: RLlib's default models do not support MultiBinary "
                         "actions; use 'multidiscrete' (the same choices, levels 0/1 with "
                         "dose_levels=(0, 1)) or 'menu'")
    name = register(env_id=env_id)
    config = (
        PPOConfig()
        .api_stack(enable_rl_module_and_learner=True,
                   enable_env_runner_and_connector_v2=True)
        .framework("torch")
        .environment(name, env_config=env_config, is_atari=False)
        .env_runners(num_env_runners=num_env_runners,
                     num_envs_per_env_runner=num_envs_per_env_runner,
                     gym_env_vectorize_mode="vector_entry_point",
                     env_to_module_connector=(
                         _flatten_observations
                         if env_config.get("observation_type") == "dict" else None))
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[64, 64]))
        .training(**{**PPO_DEFAULTS, **training})
        .fault_tolerance(restart_failed_env_runners=True,
                         max_num_env_runner_restarts=max_env_runner_restarts,
                         delay_between_env_runner_restarts_s=restart_delay_s)
    )
    return config


def _flatten_observations(env=None, spaces=None, device=None):
    """Env-to-module connector for ``observation_type="dict"``."""
    from ray.rllib.connectors.env_to_module import FlattenObservations

    return FlattenObservations()


def _not_next_step(mode: Any) -> bool:
    if isinstance(mode, AutoresetMode):
        return mode != AutoresetMode.NEXT_STEP
    return str(mode).lower() not in (AutoresetMode.NEXT_STEP.value.lower(),
                                     AutoresetMode.NEXT_STEP.name.lower())
