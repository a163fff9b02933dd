"""PPO-Lagrangian: PPO under a budget of severe adverse events, trained in ImmuneWorld-v0.

Constrained RL: maximise the return subject to ``E[episode cost] <= cost_target``, where the
cost is ``info["cost"]``, the grade >= 3 treatment-related adverse events of the cycle
(:class:`immunegym.env.single.ImmuneEnv`), summed over the episode. The Lagrangian
relaxation trains PPO on the reward ``r - lambda * cost`` and adjusts the multiplier
``lambda >= 0`` by dual (sub)gradient ascent after every rollout::

    lambda <- max(0, lambda + lambda_lr * (mean episode cost - cost_target))

where the mean is over the training episodes that ended since the last update (no update
when none did). Over budget, lambda grows and treatment gets dearer; under budget it
shrinks back to 0, where the agent is plain PPO.

The pieces are SB3's own extension points, not patches of its internals:
:class:`LagrangianVecEnv` (a ``VecEnvWrapper``) subtracts ``lambda * cost`` from the rewards
and sums each episode's cost; :class:`DualUpdate` (a ``BaseCallback``) updates lambda at the
end of each rollout, logs ``lagrangian/lambda`` and ``lagrangian/ep_cost_mean`` to
TensorBoard (the run directory of :func:`agents._common.writer_for` in :func:`main`) and
keeps the trajectory in a :class:`LagrangianRecord` (``model.lagrangian`` after
:func:`train`). The env, the network and the judging are :mod:`agents.sb3_ppo`'s
(``VecMonitor``'s ``rollout/ep_rew_mean`` is the unpenalised return); ``--masked`` trains
MaskablePPO the same way.

Run ``python -m agents.ppo_lagrangian --help``; e.g.
``python -m agents.ppo_lagrangian --total-timesteps 200000 --cost-target 0.5``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from agents import sb3_ppo
from agents._common import judge, writer_for
from immunegym import validation as v

if TYPE_CHECKING:
    from stable_baselines3 import PPO

NAME = "ppo_lagrangian"


@dataclass
class Args(sb3_ppo.Args):
    """PPO-Lagrangian (Stable-Baselines3): PPO under a budget of grade >= 3 adverse events
    per episode, trained in the world model, judged on held-out patients."""

    cost_target: float = 1.0
    """budget: mean grade >= 3 adverse events per training episode (>= 0)"""
    lambda_lr: float = 0.05
    """step size of the dual update of the Lagrange multiplier (> 0)"""
    lambda_init: float = 0.0
    """initial Lagrange multiplier (>= 0)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        v.number("cost_target", self.cost_target, low=0.0)
        v.number("lambda_lr", self.lambda_lr, low=0.0, low_open=True)
        v.number("lambda_init", self.lambda_init, low=0.0)


@dataclass
class LagrangianRecord:
    """The multiplier's trajectory and the training episodes' costs.

    Attributes
    ----------
    cost_target, lambda_lr, lambda_init
        The run's settings.
    timesteps
        ``model.num_timesteps`` at each dual update.
    lambdas
        Lambda after each dual update.
    mean_episode_costs
        The mean cost of the episodes each update used.
    episode_costs
        Every ended training episode's cost, in the order they ended.
    """

    cost_target: float
    lambda_lr: float
    lambda_init: float
    timesteps: list[int] = field(default_factory=list)
    lambdas: list[float] = field(default_factory=list)
    mean_episode_costs: list[float] = field(default_factory=list)
    episode_costs: list[float] = field(default_factory=list)

    @property
    def final_lambda(self) -> float:
        """Lambda at the end of training (``lambda_init`` if it was never updated)."""
        return self.lambdas[-1] if self.lambdas else self.lambda_init

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy (for a leaderboard or a report)."""
        return {**dataclasses.asdict(self), "final_lambda": self.final_lambda}


class LagrangianVecEnv(VecEnvWrapper):
    """Rewards ``r - lambda * cost``, with ``cost = info["cost"]``; sums episode costs.

    Parameters
    ----------
    venv
        An SB3 ``VecEnv`` whose step infos carry ``"cost"`` (every immunegym env does; for
        an env whose episode ended, the info of the step that ended it).
    lagrange_multiplier
        Initial lambda (>= 0); :class:`DualUpdate` sets :attr:`lagrange_multiplier` later.

    Notes
    -----
    Every step adds ``info["cost"]`` to its env's running episode cost; when the episode
    ends (``done``), the total joins :attr:`finished` (read and cleared by
    :meth:`pop_episode_costs`) and the info gets ``"episode_cost"``. :meth:`reset` drops
    the running sums of unfinished episodes. Actions, observations, masks
    (``env_method("action_masks")``) and attributes pass through.

    Raises
    ------
    ValidationError
        A negative or non-finite multiplier; an info without a finite ``"cost"``.
    """

    def __init__(self, venv: VecEnv, lagrange_multiplier: float = 0.0) -> None:
        super().__init__(venv)
        self._lambda = 0.0
        self.lagrange_multiplier = lagrange_multiplier
        self._running = np.zeros(self.num_envs, dtype=np.float64)
        self.finished: list[float] = []

    @property
    def lagrange_multiplier(self) -> float:
        """Lambda, the price of one unit of cost in reward (>= 0)."""
        return self._lambda

    @lagrange_multiplier.setter
    def lagrange_multiplier(self, value: float) -> None:
        self._lambda = v.number("lagrange_multiplier", value, low=0.0)

    def reset(self) -> VecEnvObs:
        """Reset every env; unfinished episodes' costs are dropped."""
        obs = self.venv.reset()
        self._running[:] = 0.0
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        """Step the envs; rewards become ``r - lambda * cost`` (float32)."""
        obs, rewards, dones, infos = self.venv.step_wait()
        cost = _costs(infos, self.num_envs)
        self._running += cost
        for i in np.flatnonzero(dones):
            total = float(self._running[i])
            self.finished.append(total)
            infos[i]["episode_cost"] = total
            self._running[i] = 0.0
        shaped = np.asarray(rewards, dtype=np.float64) - self._lambda * cost
        return obs, shaped.astype(np.float32), dones, infos

    def pop_episode_costs(self) -> list[float]:
        """The costs of the episodes that ended since the last call (then forgotten)."""
        out, self.finished = self.finished, []
        return out


class DualUpdate(BaseCallback):
    """After each rollout: ``lambda <- max(0, lambda + lambda_lr * (mean cost - target))``.

    Parameters
    ----------
    env
        The :class:`LagrangianVecEnv` the model trains on (its multiplier is updated).
    cost_target
        Budget of cost per episode (>= 0).
    lambda_lr
        Dual step size (> 0).
    record
        Where the trajectory goes (a new :class:`LagrangianRecord` when ``None``).

    Notes
    -----
    The mean is over the episodes that ended during the rollout (and any earlier rollouts
    in which none ended); a rollout in which none ended leaves lambda as it is.
    """

    def __init__(self, env: LagrangianVecEnv, cost_target: float, lambda_lr: float,
                 record: LagrangianRecord | None = None) -> None:
        super().__init__()
        if not isinstance(env, LagrangianVecEnv):
            raise v.bad("env", env, "a LagrangianVecEnv")
        self.env = env
        self.cost_target = v.number("cost_target", cost_target, low=0.0)
        self.lambda_lr = v.number("lambda_lr", lambda_lr, low=0.0, low_open=True)
        self.record = record if record is not None else LagrangianRecord(
            cost_target=self.cost_target, lambda_lr=self.lambda_lr,
            lambda_init=env.lagrange_multiplier)
        self._pending: list[float] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self._pending.extend(self.env.pop_episode_costs())
        if not self._pending:
            return
        costs, self._pending = self._pending, []
        mean = float(np.mean(costs))
        lam = max(0.0, self.env.lagrange_multiplier + self.lambda_lr * (mean - self.cost_target))
        self.env.lagrange_multiplier = lam
        self.record.timesteps.append(int(self.num_timesteps))
        self.record.lambdas.append(lam)
        self.record.mean_episode_costs.append(mean)
        self.record.episode_costs.extend(costs)
        self.logger.record("lagrangian/lambda", lam)
        self.logger.record("lagrangian/ep_cost_mean", mean)
        self.logger.record("lagrangian/cost_target", self.cost_target)


class LagrangianPolicy(sb3_ppo.SB3Policy):
    """A trained PPO-Lagrangian model as a :class:`Policy` (greedy, see
    :class:`agents.sb3_ppo.SB3Policy`).

    Attributes
    ----------
    record
        The model's :class:`LagrangianRecord` (``None`` for a loaded policy).
    """

    name = NAME

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self.record: LagrangianRecord | None = getattr(model, "lagrangian", None)


def train(args: Args, *, run_dir: str | None = None) -> PPO:
    """Train PPO-Lagrangian in ImmuneWorld-v0 on the training patients.

    Parameters
    ----------
    args
        The agent's arguments.
    run_dir
        TensorBoard directory of SB3's training scalars (``lagrangian/*`` included); by
        default a new run ``LOG_DIR/ppo_lagrangian-<seed>_<n>``.

    Returns
    -------
    PPO
        The model (``MaskablePPO`` with ``args.masked``); ``model.lagrangian`` is the run's
        :class:`LagrangianRecord`.
    """
    if not isinstance(args, Args):
        raise v.bad("args", args, "agents.ppo_lagrangian.Args")
    base = sb3_ppo.make_training_env(args)
    venv = LagrangianVecEnv(base, args.lambda_init)
    model = sb3_ppo.make_model(args, venv)
    dual = DualUpdate(venv, args.cost_target, args.lambda_lr)
    sb3_ppo.learn(model, args, name=NAME, run_dir=run_dir, callback=dual)
    venv.close()
    model.lagrangian = dual.record
    return model


def main(args: Args) -> dict[str, Any]:
    """Train (or load), save, judge; the result has ``lagrangian`` (the record) if trained."""
    writer = writer_for(args, NAME)
    if args.load_path:
        model: Any = sb3_ppo.load(args.load_path)
        step = 0
    else:
        model = train(args, run_dir=writer.log_dir)
        step = model.num_timesteps
    if args.save_path:
        sb3_ppo.save(model, args.save_path, args, agent=NAME)
    policy = LagrangianPolicy(model)
    result = judge(policy, args, writer=writer, step=step)
    if policy.record is not None:
        result["lagrangian"] = policy.record.to_dict()
        writer.add_scalar("eval/final_lambda", policy.record.final_lambda, step)
    writer.close()
    return result


def _costs(infos: list[dict[str, Any]], n: int) -> np.ndarray:
    """``info["cost"]`` of every env as a float array (ValidationError if missing)."""
    cost = np.empty(n, dtype=np.float64)
    for i, info in enumerate(infos):
        value = info.get("cost") if isinstance(info, dict) else None
        if value is None:
            raise v.ValidationError(f"infos[{i}]['cost']: missing; expected the env to report "
                                    "the cycle's cost (grade >= 3 adverse events)")
        cost[i] = v.number(f"infos[{i}]['cost']", value)
    return cost


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
