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

from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from immunegym.env.base import RENDER_MODES, EnvParts, check_reset_seed, row
from immunegym.env.engine import check_num_envs
from immunegym.env.scenario import Scenario
from immunegym.validation import ValidationError, bad, known_keys

RESET_OPTIONS = ("patient", "reset_mask")
"""Keys of ``reset(options=...)`` of the vector environments."""


class ImmuneWorldVectorEnv(VectorEnv):
    """``num_envs`` ImmuneWorld episodes in one batch (see :class:`~.single.ImmuneWorldEnv`
    for the card).

    Parameters
    ----------
    num_envs
        Environments, ``1..2**22`` (about 10 KB each is estimated first and refused above
        ``IMMUNEGYM_MAX_MEMORY_GB``).
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
            raise bad("autoreset_mode", mode, "NEXT_STEP or SAME_STEP")
        num_envs = check_num_envs(num_envs)  # before anything is allocated
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self._parts = EnvParts(self.simulator, num_envs, scenario, device=device, model=model,
                               bank=bank, observation_noise=observation_noise,
                               world_options=world_options, render_mode=render_mode,
                               scenario_kwargs=scenario_fields,
                               extra_arguments=("num_envs", "autoreset_mode"))
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

        ``seed`` seeds the one batched generator (``None``, an integer in ``0..2**63-1``, or
        a non-empty list of them whose first entry is used). ``options`` may hold
        ``"patient"`` (a bank row or id for all envs, or a list of one per env) and
        ``"reset_mask"`` (``num_envs`` booleans; the first reset must reset every env).
        """
        seed = check_reset_seed(seed)
        options = known_keys("options", options, RESET_OPTIONS)
        mask = self._reset_mask(options.get("reset_mask"))
        patients = self._parts.patients(options, self.num_envs)  # checked before any change
        super().reset(seed=seed)
        engine = self.engine
        self._parts.seed_engine(seed, self.np_random)
        rows = np.flatnonzero(mask)
        engine.reset_rows(torch.as_tensor(rows, device=engine.device),
                          None if patients is None else patients[torch.as_tensor(rows)])
        self._pending[rows] = False
        self._started = True
        if mask[0]:
            self._parts.record(reset=True)
        return self._parts.observation(), _with_masks(self._parts.infos(None))

    def _reset_mask(self, value: Any) -> np.ndarray:
        """``options["reset_mask"]`` as ``(num_envs,)`` bools (all when ``None``)."""
        n = self.num_envs
        if value is None:
            return np.ones(n, dtype=bool)
        expected = f"{n} booleans (one per env)"
        try:
            mask = np.asarray(value)
        except (ValueError, TypeError):
            raise bad("options['reset_mask']", value, expected) from None
        if mask.shape != (n,):
            raise bad("options['reset_mask']", value, f"{expected}, shape ({n},)")
        if mask.dtype.kind == "i" or mask.dtype.kind == "u":
            if not np.isin(mask, (0, 1)).all():
                raise bad("options['reset_mask']", value, f"{expected}: 0/1 or True/False")
        elif mask.dtype.kind != "b":
            raise bad("options['reset_mask']", value, expected)
        mask = mask.astype(bool)
        if not self._started and not mask.all():
            raise ValidationError(f"options['reset_mask']: got {int(mask.sum())} of {n} envs; "
                                  "expected every env on the first reset (the others would "
                                  "start from no patient)")
        return mask

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
    raise bad("autoreset_mode", value, "NEXT_STEP or SAME_STEP (an AutoresetMode or its "
              "name)")


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
