"""Ray RLlib PPO (new API stack) trained in ImmuneWorld-v0, judged in ImmuneSim-v0.

PPO learns in the learned world model on the training patients
(:func:`immunegym.planning.evaluate.leaderboard_scenario` with ``held_out=False``) through
:mod:`immunegym.env.adapters.rllib`: every env runner steps one native vector env of
``num_envs_per_env_runner`` episodes. ``--num-env-runners 0`` samples in this process;
more start remote env runners on Ray workers (``--num-cpus`` of a local Ray, or the cluster
at ``--address``, whose nodes must be able to import ``immunegym``). Each iteration's
metrics go to TensorBoard under ``--log-dir`` (the same run as the evaluation scalars) and a
progress bar counts the iterations. The greedy policy (the most likely dose level of each
therapy) is then judged on the held-out patients in ImmuneSim-v0 and ImmuneWorld-v0.

Run ``python -m agents.rllib_ppo --help``; e.g.
``python -m agents.rllib_ppo --iterations 100 --save-path runs/rllib_ppo`` and later
``python -m agents.rllib_ppo --load-path runs/rllib_ppo`` (no Ray needed to judge it).

Saving without pickle: RLlib's ``algo.save()`` checkpoints pickle the algorithm's state
and config (``Algorithm.from_checkpoint`` unpickles them, which runs whatever code the
files name), so ``--save-path`` writes a directory with ``weights.safetensors`` (the
learner's RLModule ``state_dict``: encoder, policy and value heads) and ``config.json``
(these arguments, the training env, the observation / action spaces and the RLModule's
``model_config``), atomically (:mod:`agents._checkpoint`). :func:`load` rebuilds the
``DefaultPPOTorchRLModule`` from the JSON (``RLModuleSpec(...).build()``; no other module
class is accepted, so the file names no code) and loads the tensors. The optimizer state
and the connectors' state are not saved (the default PPO connectors keep none for flat
observations): a loaded module acts, it does not resume training. Only use RLlib's own
checkpoints on files you made yourself.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents._common import CommonArgs, console, judge, mix, writer_for
from immunegym.planning.evaluate import leaderboard_scenario
from immunegym.planning.policy import EpisodeStart
from immunegym.validation import ValidationError

if TYPE_CHECKING:
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module import RLModule

ENV_ID = "ImmuneWorld-v0"
FORMAT = "immunegym-agent-rllib-ppo"
MODULE_CLASS = "ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module." \
               "DefaultPPOTorchRLModule"
"""The only RLModule class a checkpoint may name (PPO's default torch module)."""


@dataclass
class Args(CommonArgs):
    """PPO (Ray RLlib, new API stack) trained in the world model, judged on held-out
    patients."""

    iterations: int = 50
    """training iterations (each samples train_batch_size env steps, then updates)"""
    num_env_runners: int = 0
    """remote env runners (0: sample in this process)"""
    num_envs_per_env_runner: int = 64
    """parallel episodes per env runner (one native vector env)"""
    train_patients: int = 512
    """training patients in the env's bank (disjoint from the held-out patients)"""
    train_batch_size: int = 4096
    """env steps per training iteration"""
    minibatch_size: int = 512
    """minibatch size of the PPO update"""
    num_epochs: int = 4
    """passes over each iteration's batch"""
    lr: float = 3e-4
    """Adam learning rate"""
    gamma: float = 0.99
    """discount factor"""
    entropy_coeff: float = 0.01
    """entropy bonus coefficient"""
    net_width: int = 64
    """units per hidden layer of the shared encoder"""
    net_layers: int = 2
    """hidden layers of the shared encoder"""
    address: str = ""
    """Ray cluster address (e.g. auto or ray://head:10001); empty: start a local Ray"""
    num_cpus: int = 2
    """CPUs of the local Ray started when no address is given"""
    progress_bar: bool = True
    """show a progress bar over the iterations"""
    save_path: str = ""
    """directory to save the trained policy in (safetensors + JSON); empty: do not save"""
    load_path: str = ""
    """directory of a saved policy to judge instead of training one"""


class RLlibPolicy:
    """An RLlib RLModule as a :class:`Policy`: greedy actions from ``forward_inference``.

    The module's action-distribution inputs are the logits of a ``TorchMultiCategorical``
    (one ``Categorical`` per therapy, consecutive chunks of ``nvec[i]`` logits, in the
    order of the ``MultiDiscrete`` space); each chunk's argmax is that therapy's dose
    level. The env withholds what its rules forbid.
    """

    name = "rllib_ppo"

    def __init__(self, module: RLModule) -> None:
        from gymnasium import spaces

        space = module.action_space
        if isinstance(space, spaces.MultiDiscrete):
            self.sizes = [int(n) for n in space.nvec.reshape(-1)]
        elif isinstance(space, spaces.Discrete):
            self.sizes = [int(space.n)]
        else:
            raise ValidationError(f"action_space: {space}; expected MultiDiscrete or Discrete")
        self.discrete = isinstance(space, spaces.Discrete)
        self.module = module

    def start(self, episodes: EpisodeStart) -> None:
        """Nothing to plan: the policy reacts to each cycle's observation."""

    def act(self, obs: Any, infos: dict[str, np.ndarray]) -> np.ndarray:
        import torch
        from ray.rllib.core.columns import Columns

        if isinstance(obs, dict):
            raise ValidationError("obs: a dict; this policy was trained on flat observations "
                             "(observation_type='flat')")
        batch = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        with torch.no_grad():
            logits = self.module.forward_inference({Columns.OBS: batch})[
                Columns.ACTION_DIST_INPUTS]
        levels = [chunk.argmax(dim=-1) for chunk in torch.split(logits, self.sizes, dim=-1)]
        actions = torch.stack(levels, dim=-1).numpy().astype(np.int64)
        return actions[:, 0] if self.discrete else actions


def check_args(args: Args) -> Args:
    """Refuse settings RLlib cannot run, before Ray starts (names the argument)."""
    from immunegym import validation as v

    v.integer("iterations", args.iterations, low=1, high=1_000_000)
    v.integer("num_env_runners", args.num_env_runners, low=0, high=10_000)
    v.integer("num_envs_per_env_runner", args.num_envs_per_env_runner, low=1, high=1_000_000)
    v.integer("train_patients", args.train_patients, low=1, high=10_000_000)
    v.integer("train_batch_size", args.train_batch_size, low=1, high=100_000_000)
    v.integer("minibatch_size", args.minibatch_size, low=1, high=args.train_batch_size,
              hint="at most train_batch_size")
    v.integer("num_epochs", args.num_epochs, low=1, high=10_000)
    v.number("lr", args.lr, low=0, low_open=True)
    v.number("gamma", args.gamma, low=0, high=1)
    v.number("entropy_coeff", args.entropy_coeff, low=0)
    v.integer("net_width", args.net_width, low=1, high=65_536)
    v.integer("net_layers", args.net_layers, low=1, high=64)
    v.integer("num_cpus", args.num_cpus, low=1, high=100_000)
    v.seed("seed", args.seed)
    v.device("device", args.device)
    if args.load_path:
        load_dir = Path(args.load_path)
        if not load_dir.is_dir():
            raise v.bad("load_path", args.load_path, "an existing directory from save_path")
    if args.save_path:
        v.output_path("save_path", args.save_path, directory=True)
    return args


def training_env_kwargs(args: Args) -> dict[str, Any]:
    """The training scenario's fields (JSON-friendly; the env creator takes them)."""
    scenario = leaderboard_scenario(held_out=False, horizon=args.horizon,
                                    n_patients=args.train_patients, cancer_types=mix(args))
    return {**dataclasses.asdict(scenario), "device": args.device}


def algo_config(args: Args) -> PPOConfig:
    """The PPO config: :func:`immunegym.env.adapters.rllib.ppo_config` with these args."""
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from immunegym.env.adapters.rllib import ppo_config

    config = ppo_config(ENV_ID, num_envs_per_env_runner=args.num_envs_per_env_runner,
                        num_env_runners=args.num_env_runners,
                        env_config=training_env_kwargs(args),
                        train_batch_size_per_learner=args.train_batch_size,
                        minibatch_size=args.minibatch_size, num_epochs=args.num_epochs,
                        lr=args.lr, gamma=args.gamma, entropy_coeff=args.entropy_coeff)
    hiddens = [int(args.net_width)] * int(args.net_layers)
    return (config.rl_module(model_config=DefaultModelConfig(fcnet_hiddens=hiddens))
            .debugging(seed=args.seed))


def train(args: Args, *, writer=None) -> tuple[Any, int]:
    """Train PPO for ``args.iterations`` iterations.

    Returns the (running) Algorithm (stop it when done) and the env steps sampled.
    Ray must be initialized (``main`` does it). Iteration metrics (episode returns and
    lengths, losses, entropy, KL, ...) go to ``writer`` as ``train/...`` scalars at the
    sampled env-step count.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    check_args(args)
    algo = algo_config(args).build_algo()
    step = 0
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not args.progress_bar) as progress:
        task = progress.add_task("rllib_ppo", total=args.iterations)
        for _ in range(args.iterations):
            result = algo.train()
            runners = result.get("env_runners", {})
            step = int(runners.get("num_env_steps_sampled_lifetime", 0))
            if writer is not None:
                for key, value in _scalars(runners, "train/env_runners"):
                    writer.add_scalar(key, value, step)
                for key, value in _scalars(result.get("learners", {}), "train/learners"):
                    writer.add_scalar(key, value, step)
            ret = runners.get("episode_return_mean")
            text = "-" if ret is None or not np.isfinite(ret) else f"{ret:.2f}"
            progress.update(task, advance=1, description=f"rllib_ppo return {text}")
    return algo, step


def module_state(algo) -> dict[str, Any]:
    """The learner's RLModule weights (name -> CPU torch tensor)."""
    import torch
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID

    state = algo.learner_group.get_state(
        components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}/{DEFAULT_MODULE_ID}")
    weights = state[COMPONENT_LEARNER][COMPONENT_RL_MODULE][DEFAULT_MODULE_ID]
    return {k: torch.as_tensor(np.asarray(v)) for k, v in weights.items()}


def build_module(observation_space, action_space, model_config: dict[str, Any]) -> RLModule:
    """A fresh ``DefaultPPOTorchRLModule`` (full: encoder, policy and value heads)."""
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import (
        DefaultPPOTorchRLModule,
    )
    from ray.rllib.core.rl_module import RLModuleSpec

    spec = RLModuleSpec(module_class=DefaultPPOTorchRLModule,
                        observation_space=observation_space, action_space=action_space,
                        model_config=dict(model_config), inference_only=False)
    return spec.build()


def trained_module(algo) -> RLModule:
    """A standalone copy of the algorithm's RLModule with the learner's latest weights."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    from agents._checkpoint import load_state

    live = algo.get_module()
    spec = algo.config.get_rl_module_spec(
        spaces={DEFAULT_MODULE_ID: (live.observation_space, live.action_space)})
    module = build_module(live.observation_space, live.action_space, dict(spec.model_config))
    load_state(module, module_state(algo), "trained module")
    module.eval()
    return module


def save(module: RLModule, path: str, args: Args) -> None:
    """Write the RLModule's weights (safetensors) and config (JSON) to the directory."""
    import ray
    import torch

    from agents._checkpoint import save_policy, space_to_json

    config = {
        "agent": "rllib_ppo",
        "args": dataclasses.asdict(args),
        "env_id": ENV_ID,
        "env_kwargs": training_env_kwargs(args),
        "module_class": MODULE_CLASS,
        "model_config": dict(module.model_config),
        "observation_space": space_to_json(module.observation_space),
        "action_space": space_to_json(module.action_space),
        "versions": {"ray": ray.__version__, "torch": torch.__version__},
    }
    save_policy(path, module.state_dict(), config, fmt=FORMAT)
    console.print(f"saved the policy to {path}")


def load(path: str) -> RLModule:
    """Rebuild the RLModule :func:`save` wrote (JSON + safetensors, no pickle, no Ray).

    Raises
    ------
    FileNotFoundError, ValueError
        A missing directory or file; a config of another format or module class; weights
        that do not fit it.
    """
    from agents._checkpoint import load_policy, load_state, space_from_json

    tensors, config = load_policy(path, fmt=FORMAT)
    if config.get("module_class") != MODULE_CLASS:
        raise ValidationError(f"load_path: {path!r}: module_class {config.get('module_class')!r}; "
                         f"expected {MODULE_CLASS!r}")
    module = build_module(space_from_json(config["observation_space"]),
                          space_from_json(config["action_space"]), config["model_config"])
    load_state(module, tensors, f"load_path: {path!r}")
    module.eval()
    return module


def train_policy(args: Args, *, writer=None) -> tuple[RLModule, int]:
    """Start Ray if needed (``args.address`` or local), train, and return the trained
    module and the env steps sampled; Ray is shut down again if this call started it."""
    import ray

    check_args(args)
    started = not ray.is_initialized()
    if started:
        if args.address:
            ray.init(address=args.address)
        else:
            ray.init(num_cpus=args.num_cpus, include_dashboard=False)
    try:
        algo, step = train(args, writer=writer)
        try:
            return trained_module(algo), step
        finally:
            _stop(algo)
    finally:
        if started:
            ray.shutdown()


def main(args: Args) -> dict[str, Any]:
    check_args(args)
    writer = writer_for(args, "rllib_ppo")
    step = 0
    if args.load_path:
        module = load(args.load_path)
    else:
        module, step = train_policy(args, writer=writer)
    if args.save_path:
        save(module, args.save_path, args)
    result = judge(RLlibPolicy(module), args, writer=writer, step=step)
    writer.close()
    return result


def _stop(algo) -> None:
    """Stop the algorithm and remove the empty log directory RLlib made for it."""
    logdir = getattr(algo, "logdir", None)
    algo.stop()
    if logdir:
        try:
            os.rmdir(logdir)  # only if empty: RLlib's own files are kept
        except OSError:
            pass


def _scalars(tree: Any, prefix: str):
    """``(tag, float)`` for every finite number in a nested result dict (RLlib's own
    timers and connector internals left out)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if "timer" in str(key) or str(key).endswith("_connector"):
                continue
            yield from _scalars(value, f"{prefix}/{key}")
    elif isinstance(tree, (int, float, np.integer, np.floating)) \
            and not isinstance(tree, bool) and np.isfinite(tree):
        yield prefix, float(tree)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
