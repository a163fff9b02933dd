"""Native vector twins: every env advances in one batched simulator call per step.

``gym.make_vec("ImmuneWorld-v0", num_envs=4096)`` builds :class:`ImmuneWorldVectorEnv`;
numpy in and out, torch inside. Autoreset follows Gymnasium 1.x:

* ``NEXT_STEP`` (default): the step that ends an episode returns its last observation; the
  next call resets that env (its action is ignored) and returns the first observation with
  reward 0 and ``terminated = truncated = False``;
* ``SAME_STEP``: an env that ends is reset within the same call; the returned observation is
  the new episode's first, and ``infos["final_obs"]`` / ``infos["final_info"]`` hold the
  last ones (masked by ``infos["_final_obs"]``). On that step ``cost``, ``given``,
  ``died``, ``progressed`` and ``irae`` describe the cycle that ended (a constrained-RL
  learner needs its cost), while ``action_mask``, ``patient``, ``cycle``, ``day``,
  ``sod_mm`` and ``best_response`` already describe the new episode; ``final_info`` holds
  all of them for the episode that ended.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from immunegym.env.base import RENDER_MODES, EnvParts, row
from immunegym.env.scenario import Scenario


class ImmuneWorldVectorEnv(VectorEnv):
    """``num_envs`` ImmuneWorld episodes in one batch (see :class:`~.single.ImmuneWorldEnv`
    for the card).

    Parameters
    ----------
    num_envs
        Environments.
    autoreset_mode
        ``AutoresetMode.NEXT_STEP`` (default) or ``SAME_STEP`` (or their string values).
    render_mode
        ``"rgb_array"`` or ``"ansi"``: renders env 0.
    scenario, device, model, bank, observation_noise, world_options, **scenario_fields
        As for the single env; ``world_options`` passes ``chunk_size`` and ``sample`` to
        :class:`~.world_core.WorldCore`.
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 4,
                "autoreset_mode": AutoresetMode.NEXT_STEP}
    simulator = "world"

    def __init__(self, num_envs: int = 1, *, autoreset_mode: AutoresetMode | str =
                 AutoresetMode.NEXT_STEP, render_mode: str | None = None,
                 scenario: Scenario | None = None, device: str = "cpu", model=None, bank=None,
                 observation_noise: bool = True, world_options: dict | None = None,
                 **scenario_fields: Any) -> None:
        mode = _autoreset_mode(autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError(f"autoreset_mode: {mode} is not supported; expected NEXT_STEP "
                             "or SAME_STEP")
        integral = isinstance(num_envs, numbers.Integral) and not isinstance(num_envs, bool)
        self.num_envs = int(num_envs) if integral else num_envs  # the engine validates it
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self._parts = EnvParts(self.simulator, num_envs, scenario, device=device, model=model,
                               bank=bank, observation_noise=observation_noise,
                               world_options=world_options, render_mode=render_mode,
                               scenario_kwargs=scenario_fields)
        self.scenario = self._parts.scenario
        self.single_action_space = self._parts.actions.space
        self.single_observation_space = self._parts.observations.space
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._pending = np.zeros(num_envs, dtype=bool)
        self._started = False

    @property
    def engine(self):
        """The batched engine underneath."""
        return self._parts.engine

    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None):
        """Reset every env (or those in ``options["reset_mask"]``).

        ``seed`` seeds the one batched generator (an int; a list uses its first entry).
        ``options["patient"]`` pins a bank patient (row or id) for all envs, or one per env.
        """
        if isinstance(seed, (list, tuple, np.ndarray)):
            seed = int(seed[0])
        super().reset(seed=seed)
        engine = self.engine
        self._parts.seed_engine(seed, self.np_random)
        mask = np.ones(self.num_envs, dtype=bool)
        if options and options.get("reset_mask") is not None:
            mask = np.asarray(options["reset_mask"], dtype=bool)
            if mask.shape != (self.num_envs,):
                raise ValueError(f"options['reset_mask']: shape {mask.shape}; expected "
                                 f"({self.num_envs},)")
        rows = np.flatnonzero(mask)
        patients = self._parts.patients(options, self.num_envs)
        engine.reset_rows(torch.as_tensor(rows, device=engine.device),
                          None if patients is None else patients[torch.as_tensor(rows)])
        self._pending[rows] = False
        self._started = True
        if mask[0]:
            self._parts.record(reset=True)
        return self._parts.observation(), _with_masks(self._parts.infos(None))

    def step(self, actions):
        if not self._started:
            raise RuntimeError("step: call reset() first")
        engine, n = self.engine, self.num_envs
        levels = self._parts.actions.doses(actions, n)
        pending = self._pending.copy()
        levels[pending] = 0.0
        outcome = engine.step(torch.as_tensor(levels, device=engine.device))
        reward = outcome.reward.cpu().numpy().astype(np.float64)
        terminated = outcome.terminated.cpu().numpy()
        truncated = outcome.truncated.cpu().numpy()
        if not pending[0]:
            self._parts.record(reset=False)
        if self.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP:
            infos = self._parts.infos(outcome)
            if pending.any():
                self._reset_rows(pending)
                fresh = self._parts.infos(None)
                for key, value in fresh.items():
                    infos[key][pending] = value[pending]
                reward[pending] = 0.0
                terminated[pending] = False
                truncated[pending] = False
            self._pending = terminated | truncated
            return (self._parts.observation(), reward, terminated, truncated,
                    _with_masks(infos))
        done = terminated | truncated
        infos = self._parts.infos(outcome)
        if done.any():
            final_obs_all = self._parts.observation()
            final_obs = np.full(n, None, dtype=object)
            for i in np.flatnonzero(done):
                final_obs[i] = _index(final_obs_all, i)
            final_info = _with_masks({k: v.copy() for k, v in infos.items()}, done)
            self._reset_rows(done)
            fresh = self._parts.infos(None)
            for key in ("action_mask", "patient", "cycle", "day", "sod_mm", "best_response"):
                infos[key][done] = fresh[key][done]
            infos = _with_masks(infos)
            infos.update(final_obs=final_obs, _final_obs=done.copy(), final_info=final_info,
                         _final_info=done.copy())
        else:
            infos = _with_masks(infos)
        return self._parts.observation(), reward, terminated, truncated, infos

    def _reset_rows(self, mask: np.ndarray) -> None:
        rows = np.flatnonzero(mask)
        self.engine.reset_rows(torch.as_tensor(rows, device=self.engine.device))
        if mask[0]:
            self._parts.record(reset=True)

    def render(self):
        return self._parts.render()

    def info_of(self, infos: dict[str, Any], i: int) -> dict[str, Any]:
        """The info of env ``i`` from a batched info dict (without the masks)."""
        return row({k: v for k, v in infos.items() if not k.startswith("_")
                    and isinstance(v, np.ndarray) and v.dtype != object}, i)


class ImmuneSimVectorEnv(ImmuneWorldVectorEnv):
    """``num_envs`` ImmuneSim episodes in one batch (see :class:`~.single.ImmuneSimEnv`)."""

    simulator = "sim"


def _autoreset_mode(value: AutoresetMode | str) -> AutoresetMode:
    """An :class:`AutoresetMode` from itself, its value or its name (any case)."""
    if isinstance(value, AutoresetMode):
        return value
    for mode in AutoresetMode:
        if str(value).lower() in (mode.value.lower(), mode.name.lower()):
            return mode
    raise ValueError(f"autoreset_mode: got {value!r}; expected NEXT_STEP or SAME_STEP")


def _with_masks(infos: dict[str, np.ndarray], mask: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
    """Gymnasium's vector-info convention: every key ``k`` has a bool mask ``_k``."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        out[key] = value
        out[f"_{key}"] = (np.ones(len(value), dtype=bool) if mask is None else mask.copy())
    return out


def _index(obs, i: int):
    if isinstance(obs, dict):
        return {k: v[i].copy() for k, v in obs.items()}
    return obs[i].copy()
