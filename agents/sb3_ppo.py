"""Stable-Baselines3 PPO trained in ImmuneWorld-v0 (the world model), judged in ImmuneSim-v0.

PPO (``MlpPolicy``: flat 44-feature observations in, one dose level per therapy out, i.e.
``MultiDiscrete``) learns in the learned world model on the training patients
(:func:`immunegym.planning.evaluate.leaderboard_scenario` with ``held_out=False``), stepping
``n_envs`` episodes in one native vector env (:func:`immunegym.env.adapters.sb3.make_vec_env`).
It is then judged, greedy (``deterministic=True``), on the held-out patients in ImmuneSim-v0
(the ground truth) and ImmuneWorld-v0: a policy that exploits the world model's errors
shows up as a sim-to-real gap. Training shows a progress bar and logs to TensorBoard under
``--log-dir`` (the same run directory as the evaluation scalars).

``--masked`` trains sb3-contrib's ``MaskablePPO`` instead: every rollout reads the env's
action masks (:meth:`immunegym.env.adapters.sb3.ImmuneSB3VecEnv.action_masks`: course caps,
toxicity holds and stops), so a dose level the protocol forbids is never sampled or
learned from, and :class:`SB3Policy` passes the evaluation env's masks to ``predict``.

Run ``python -m agents.sb3_ppo --help``; e.g.
``python -m agents.sb3_ppo --total-timesteps 200000 --save-path runs/sb3_ppo`` and later
``python -m agents.sb3_ppo --load-path runs/sb3_ppo`` to judge it again without training.

Why not SB3's ``model.save`` ``.zip``: it stores the policy's constructor arguments, spaces
and schedules as pickled (cloudpickle) objects, and ``PPO.load`` unpickles them, which runs
whatever code the file names. The project loads no pickle from a file, so ``--save-path``
writes a directory with ``weights.safetensors`` (``model.policy.state_dict()``) and
``config.json`` (these arguments, the training env, the observation / action spaces and the
policy's architecture), atomically (:mod:`agents._checkpoint`). :func:`load` rebuilds the
``ActorCriticPolicy`` from the JSON and loads the tensors; nothing is unpickled. The
optimizer state is not saved: a loaded policy acts, it does not resume training. If you do
use ``PPO.load`` on a ``.zip``, use it only on files you made yourself.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from agents._common import CommonArgs, check_path, console, judge, mix, writer_for
from immunegym import validation as v
from immunegym.planning.evaluate import leaderboard_scenario
from immunegym.planning.policy import EpisodeStart

if TYPE_CHECKING:
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.vec_env import VecEnv

ENV_ID = "ImmuneWorld-v0"
FORMAT = "immunegym-agent-sb3-ppo"
ACTIVATIONS = ("Tanh", "ReLU")
"""Activation functions a checkpoint may name (looked up in ``torch.nn``)."""
POLICY_CLASSES = ("ActorCriticPolicy", "MaskableActorCriticPolicy")
"""Policy classes a checkpoint may name: SB3's, or sb3-contrib's for ``--masked``."""


@dataclass
class Args(CommonArgs):
    """PPO (Stable-Baselines3) trained in the world model, judged on held-out patients."""

    total_timesteps: int = 50_000
    """env steps (cycles) of training, summed over the parallel envs"""
    n_envs: int = 64
    """parallel training episodes (one native vector env)"""
    train_patients: int = 512
    """training patients in the env's bank (disjoint from the held-out patients)"""
    learning_rate: float = 3e-4
    """Adam learning rate"""
    n_steps: int = 16
    """steps per env per rollout (a rollout is n_steps * n_envs transitions)"""
    batch_size: int = 256
    """minibatch size of the PPO update"""
    n_epochs: int = 10
    """passes over each rollout"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    ent_coef: float = 0.01
    """entropy bonus coefficient"""
    net_width: int = 64
    """units per hidden layer of the policy and value networks"""
    net_layers: int = 2
    """hidden layers of the policy and value networks"""
    masked: bool = False
    """train sb3-contrib's MaskablePPO on the env's action masks (forbidden doses are never
    sampled) and act with the masks"""
    progress_bar: bool = True
    """show a progress bar while training (needs tqdm and rich)"""
    save_path: str = ""
    """directory to save the trained policy in (safetensors + JSON); empty: do not save"""
    load_path: str = ""
    """directory of a saved policy to judge instead of training one"""

    def __post_init__(self) -> None:
        super().__post_init__()
        v.integer("total_timesteps", self.total_timesteps, low=1, high=10**12)
        v.integer("n_envs", self.n_envs, low=1, high=1_000_000)
        v.integer("train_patients", self.train_patients, low=1, high=10_000_000)
        v.number("learning_rate", self.learning_rate, low=0.0, high=10.0, low_open=True)
        v.integer("n_steps", self.n_steps, low=1, high=1_000_000)
        # SB3 splits each rollout (n_steps * n_envs transitions) into minibatches.
        v.integer("batch_size", self.batch_size, low=2, high=max(2, self.n_steps * self.n_envs),
                  hint="at most n_steps * n_envs, the rollout size")
        v.integer("n_epochs", self.n_epochs, low=1, high=10_000)
        v.number("gamma", self.gamma, low=0.0, high=1.0)
        v.number("gae_lambda", self.gae_lambda, low=0.0, high=1.0)
        v.number("ent_coef", self.ent_coef, low=0.0)
        v.integer("net_width", self.net_width, low=1, high=65_536)
        v.integer("net_layers", self.net_layers, low=1, high=64)
        v.boolean("masked", self.masked)
        v.boolean("progress_bar", self.progress_bar)
        check_path("save_path", self.save_path, load=False)
        check_path("load_path", self.load_path, load=True)


class SB3Policy:
    """A trained SB3 model (or its policy network) as a :class:`Policy`.

    Acts greedily: ``model.predict(obs, deterministic=True)`` on the batch of observations
    (the most likely dose level of each therapy). A maskable model (sb3-contrib's
    ``MaskablePPO`` or its ``MaskableActorCriticPolicy``, whose ``predict`` takes
    ``action_masks``) gets the env's ``infos["action_mask"]`` in sb3-contrib's flat layout,
    so it picks the most likely *allowed* level; without a mask in ``infos`` it acts
    unmasked. A plain model does not read the mask; the env withholds what its rules forbid.

    Parameters
    ----------
    model
        ``PPO`` / ``MaskablePPO``, or an ``ActorCriticPolicy`` / ``MaskableActorCriticPolicy``
        (e.g. from :func:`load`).

    Attributes
    ----------
    maskable
        Whether ``model.predict`` takes ``action_masks``.
    """

    name = "sb3_ppo"

    def __init__(self, model: Any) -> None:
        predict = getattr(model, "predict", None)
        if not callable(predict):
            raise v.bad("model", model, "an SB3 model or policy (with predict(obs))")
        self.model = model
        self.maskable = "action_masks" in inspect.signature(predict).parameters

    def start(self, episodes: EpisodeStart) -> None:
        """Nothing to plan: the policy reacts to each cycle's observation."""

    def act(self, obs: Any, infos: dict[str, np.ndarray]) -> np.ndarray:
        """Greedy actions of every row (masked by ``infos["action_mask"]`` if maskable)."""
        masks = self.action_masks(infos) if self.maskable else None
        if masks is None:
            actions, _ = self.model.predict(obs, deterministic=True)
        else:
            actions, _ = self.model.predict(obs, deterministic=True, action_masks=masks)
        return np.asarray(actions, dtype=np.int64)

    def action_masks(self, infos: Any) -> np.ndarray | None:
        """``infos["action_mask"]`` (``(n, *mask_shape)``) in sb3-contrib's flat layout.

        Returns
        -------
        numpy.ndarray or None
            ``(n, k)`` bool (see :meth:`ImmuneSB3VecEnv.action_masks`); ``None`` when
            ``infos`` has no mask.

        Raises
        ------
        ValidationError
            If the mask does not fit the model's action space.
        """
        from immunegym.env.adapters.sb3 import _flat_masks

        raw = infos.get("action_mask") if isinstance(infos, Mapping) else None
        if raw is None:
            return None
        raw = np.asarray(raw, dtype=bool)
        n = raw.shape[0] if raw.ndim else 0
        return _flat_masks(raw.reshape(n, -1), self.model.action_space, n)


def training_env_kwargs(args: Args) -> dict[str, Any]:
    """The training scenario's fields (JSON-friendly; ``make_vec_env`` takes them)."""
    scenario = leaderboard_scenario(held_out=False, horizon=args.horizon,
                                    n_patients=args.train_patients, cancer_types=mix(args))
    return dataclasses.asdict(scenario)


def policy_kwargs(args: Args) -> dict[str, Any]:
    """The JSON description of the policy network (see :func:`_policy_kwargs`)."""
    return {"net_arch": [int(args.net_width)] * int(args.net_layers),
            "activation_fn": "Tanh", "ortho_init": True}


def make_training_env(args: Args) -> VecEnv:
    """The training env: ``n_envs`` episodes of ImmuneWorld-v0 on the training patients.

    One native vector env (:func:`immunegym.env.adapters.sb3.make_vec_env`) in a
    ``VecMonitor`` (SB3's ``rollout/ep_rew_mean``); it has ``action_masks()`` for
    ``MaskablePPO``.
    """
    from stable_baselines3.common.vec_env import VecMonitor

    from immunegym.env.adapters.sb3 import make_vec_env

    return VecMonitor(make_vec_env(ENV_ID, n_envs=args.n_envs, seed=args.seed,
                                   device=args.device, **training_env_kwargs(args)))


def make_model(args: Args, venv: VecEnv) -> PPO:
    """An untrained ``PPO`` (``MaskablePPO`` when ``args.masked``) on ``venv``, on the CPU.

    Raises
    ------
    ImportError
        ``args.masked`` without sb3-contrib (``pip install -e ".[rl]"`` installs it).
    """
    kwargs: dict[str, Any] = {
        "learning_rate": args.learning_rate, "n_steps": args.n_steps,
        "batch_size": args.batch_size, "n_epochs": args.n_epochs, "gamma": args.gamma,
        "gae_lambda": args.gae_lambda, "ent_coef": args.ent_coef,
        "policy_kwargs": _policy_kwargs(policy_kwargs(args)), "tensorboard_log": args.log_dir,
        "seed": args.seed, "device": "cpu", "verbose": 0}
    if args.masked:
        from sb3_contrib import MaskablePPO

        return MaskablePPO("MlpPolicy", venv, **kwargs)
    from stable_baselines3 import PPO

    return PPO("MlpPolicy", venv, **kwargs)


def learn(model: PPO, args: Args, *, name: str, run_dir: str | None = None,
          callback: BaseCallback | None = None) -> PPO:
    """Run ``model.learn(args.total_timesteps)``, logging to TensorBoard.

    Parameters
    ----------
    model
        From :func:`make_model`.
    args
        The agent's arguments.
    name
        Run name (``LOG_DIR/<name>-<seed>_<n>`` when ``run_dir`` is ``None``).
    run_dir
        TensorBoard directory of SB3's training scalars.
    callback
        An SB3 callback (e.g. a dual update after each rollout).
    """
    from stable_baselines3.common.logger import configure

    if run_dir is not None:
        model.set_logger(configure(run_dir, ["tensorboard"]))
    progress = args.progress_bar and _has_progress_bar()
    model.learn(args.total_timesteps, callback=callback, progress_bar=progress,
                tb_log_name=f"{name}-{args.seed}")
    return model


def train(args: Args, *, run_dir: str | None = None) -> PPO:
    """Train PPO (``MaskablePPO`` with ``args.masked``) in ImmuneWorld-v0 on the training
    patients.

    Parameters
    ----------
    args
        The agent's arguments.
    run_dir
        TensorBoard directory of SB3's training scalars; by default a new run
        ``LOG_DIR/sb3_ppo-<seed>_<n>``.
    """
    venv = make_training_env(args)
    model = make_model(args, venv)
    learn(model, args, name="sb3_ppo", run_dir=run_dir)
    venv.close()
    return model


def save(model: PPO | ActorCriticPolicy, path: str, args: Args, *,
         agent: str = "sb3_ppo") -> None:
    """Write the policy's weights (safetensors) and its config (JSON) to the directory.

    Raises
    ------
    ValidationError
        If the policy is not one of :data:`POLICY_CLASSES`.
    """
    import stable_baselines3
    import torch

    from agents._checkpoint import save_policy, space_to_json

    policy = getattr(model, "policy", model)
    cls = type(policy).__name__
    if cls not in POLICY_CLASSES:
        raise v.bad("model", cls, f"a policy of class {' or '.join(POLICY_CLASSES)}")
    config = {
        "agent": agent,
        "args": dataclasses.asdict(args),
        "env_id": ENV_ID,
        "env_kwargs": training_env_kwargs(args),
        "policy": {"class": cls, **policy_kwargs(args)},
        "observation_space": space_to_json(policy.observation_space),
        "action_space": space_to_json(policy.action_space),
        "num_timesteps": int(getattr(model, "num_timesteps", 0)),
        "versions": {"stable_baselines3": stable_baselines3.__version__,
                     "torch": torch.__version__},
    }
    save_policy(path, policy.state_dict(), config, fmt=FORMAT)
    console.print(f"saved the policy to {path}")


def load(path: str, *,
         device: str = "cpu") -> ActorCriticPolicy | MaskableActorCriticPolicy:
    """Rebuild the policy :func:`save` wrote (JSON + safetensors, no pickle).

    An ``ActorCriticPolicy``, or sb3-contrib's ``MaskableActorCriticPolicy`` for a
    ``--masked`` run (:class:`SB3Policy` then acts with the env's masks).

    Raises
    ------
    FileNotFoundError, ValueError
        A missing directory or file; a config of another format or architecture; weights
        that do not fit it.
    """
    from stable_baselines3.common.policies import ActorCriticPolicy

    from agents._checkpoint import load_policy, load_state, space_from_json

    tensors, config = load_policy(path, fmt=FORMAT)
    arch = dict(config["policy"])
    cls = arch.pop("class", None)
    if cls not in POLICY_CLASSES:
        raise v.ValidationError(
            f"load_path: {path!r}: policy class {cls!r}; expected one of "
            f"{list(POLICY_CLASSES)}")
    policy_class: type[Any] = ActorCriticPolicy
    if cls == "MaskableActorCriticPolicy":
        from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

        policy_class = MaskableActorCriticPolicy
    lr = float(config["args"]["learning_rate"])
    policy = policy_class(space_from_json(config["observation_space"]),
                          space_from_json(config["action_space"]),
                          lr_schedule=lambda _: lr, **_policy_kwargs(arch))
    load_state(policy, tensors, f"load_path: {path!r}")
    policy.set_training_mode(False)
    return policy.to(device)


def main(args: Args) -> dict[str, Any]:
    writer = writer_for(args, "sb3_ppo")
    if args.load_path:
        model: Any = load(args.load_path)
        step = 0
    else:
        model = train(args, run_dir=writer.log_dir)
        step = model.num_timesteps
    if args.save_path:
        save(model, args.save_path, args)
    result = judge(SB3Policy(model), args, writer=writer, step=step)
    writer.close()
    return result


def _policy_kwargs(raw: dict[str, Any]) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` from their JSON description (activation by name)."""
    import torch

    known = {"net_arch", "activation_fn", "ortho_init"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise v.ValidationError(
            f"policy: unknown settings {unknown}; expected some of {sorted(known)}")
    activation = raw.get("activation_fn", "Tanh")
    if activation not in ACTIVATIONS:
        raise v.ValidationError(f"policy.activation_fn: got {activation!r}; expected one of "
                         f"{list(ACTIVATIONS)}")
    return {"net_arch": [int(w) for w in raw["net_arch"]],
            "activation_fn": getattr(torch.nn, activation),
            "ortho_init": bool(raw.get("ortho_init", True))}


def _has_progress_bar() -> bool:
    try:
        import rich  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError:
        console.print("[yellow]no progress bar: SB3's needs tqdm and rich "
                      "(pip install tqdm rich)[/yellow]")
        return False
    return True


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
