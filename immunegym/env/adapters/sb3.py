"""Stable-Baselines3 adapter: one native vector env behind SB3's ``VecEnv`` API.

SB3's own ``make_vec_env`` builds a ``DummyVecEnv`` that steps ``n`` single envs one after
the other, which throws away the batched simulator. :func:`make_vec_env` here builds ONE
native vector env (``gym.make_vec(..., vectorization_mode="vector_entry_point")``, every
env advanced in one batched call per step) and wraps it in :class:`ImmuneSB3VecEnv`:

.. code-block:: python

    from stable_baselines3 import PPO
    from immunegym.env.adapters.sb3 import make_vec_env

    venv = make_vec_env("ImmuneSim-v0", n_envs=64, seed=0, action_type="multibinary")
    model = PPO("MlpPolicy", venv).learn(100_000)

Conversions (Gymnasium 1.x vector API -> SB3 ``VecEnv`` API):

* the native env runs in ``SAME_STEP`` autoreset mode, as SB3 expects: the observation
  returned for an env whose episode ended is already the next episode's first;
* ``dones = terminated | truncated``; rewards are float32;
* the batched info dict becomes a list of per-env dicts (``cost``, ``action_mask``,
  ``given``, ``sod_mm``, ``best_response``, ``patient``, ``cycle``, ...). For an env whose
  episode ended, its info is the native ``final_info`` row (the step that ended it, as in
  SB3's ``DummyVecEnv``) plus ``"terminal_observation"`` (the last observation) and
  ``"TimeLimit.truncated"`` (``truncated and not terminated``); these two keys are present
  for done envs only. ``reset_infos[i]`` gets the info row that came with the new episode;
* :meth:`ImmuneSB3VecEnv.action_masks` returns the masks in sb3-contrib's flat layout, so
  ``MaskablePPO`` works as is.

SB3 does not log episode returns without a ``Monitor``; wrap the result in
``stable_baselines3.common.vec_env.VecMonitor`` for ``rollout/ep_rew_mean``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from immunegym.validation import ValidationError

__all__ = ["ImmuneSB3VecEnv", "make_vec_env"]

_RESERVED_KWARGS = ("num_envs", "vectorization_mode", "autoreset_mode", "vector_kwargs")
_FINAL_KEYS = ("final_obs", "final_info")
_MISSING = object()


class ImmuneSB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` over one native Gymnasium vector env (``SAME_STEP`` autoreset).

    Parameters
    ----------
    venv
        A :class:`gymnasium.vector.VectorEnv` whose ``metadata["autoreset_mode"]`` is
        ``AutoresetMode.SAME_STEP`` and whose step infos are a dict of per-env arrays (with
        ``final_obs`` / ``final_info`` for the envs that ended), e.g.
        :class:`~immunegym.env.vector.ImmuneWorldVectorEnv`. Usually built by
        :func:`make_vec_env`.

    Attributes
    ----------
    venv
        The native vector env (shared by all ``num_envs`` envs).

    Notes
    -----
    All envs live in one object, so :meth:`get_attr`, :meth:`set_attr` and
    :meth:`env_method` act on the native env once and report the same value for every
    requested index (except ``"action_masks"``, which is per env). Seeding follows the
    native env: one batched generator, seeded with the first entry of ``self._seeds``.

    Raises
    ------
    ValueError
        If ``venv`` is not in ``SAME_STEP`` autoreset mode.
    """

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        mode = getattr(venv, "metadata", {}).get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValidationError(f"venv.metadata['autoreset_mode']: got {mode!r}; expected "
                             f"{AutoresetMode.SAME_STEP!r} (SB3 resets ended envs within "
                             "the same step)")
        self.venv = venv
        self._actions: np.ndarray | None = None
        self._masks: np.ndarray | None = None
        super().__init__(int(venv.num_envs), venv.single_observation_space,
                         venv.single_action_space)

    # ------------------------------------------------------------------ reset / step
    def reset(self) -> VecEnvObs:
        """Reset every env and return the batched first observations.

        The seed is the first non-``None`` entry of ``self._seeds`` (set by :meth:`seed`),
        the options those of :meth:`set_options` (merged across envs, see
        :meth:`_merged_options`); both are used once, as in SB3.

        Returns
        -------
        numpy.ndarray or dict of numpy.ndarray
            ``(num_envs, *obs_shape)`` observations (a dict of them for Dict spaces).
        """
        seed = next((s for s in self._seeds if s is not None), None)
        options = self._merged_options()
        obs, infos = self.venv.reset(seed=seed, options=options)
        self._reset_seeds()
        self._reset_options()
        self._actions = None
        self.reset_infos = _info_rows(infos, self.num_envs)
        self._masks = _mask_array(infos, self.num_envs)
        return self._batched_obs(obs)

    def step_async(self, actions: np.ndarray) -> None:
        """Store ``actions`` (``(num_envs, *action_shape)``) for :meth:`step_wait`."""
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        """Step every env with the stored actions, in one native batched call.

        Returns
        -------
        obs : numpy.ndarray or dict of numpy.ndarray
            The next observations; for envs that ended, the next episode's first.
        rewards : numpy.ndarray
            ``(num_envs,)`` float32.
        dones : numpy.ndarray
            ``(num_envs,)`` bool, ``terminated | truncated``.
        infos : list of dict
            One dict per env (see the module docstring).

        Raises
        ------
        RuntimeError
            If :meth:`step_async` was not called first.
        """
        if self._actions is None:
            raise RuntimeError("step_wait: no pending actions; call step_async() (or step()) "
                               "after reset()")
        actions, self._actions = self._actions, None
        obs, reward, terminated, truncated, infos = self.venv.step(actions)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        dones = terminated | truncated
        rows = _info_rows(infos, self.num_envs)
        if dones.any():
            final_obs = infos["final_obs"]
            final_rows = _info_rows(infos["final_info"], self.num_envs)
            for i in np.flatnonzero(dones):
                self.reset_infos[i] = rows[i]
                info = final_rows[i]
                info["terminal_observation"] = final_obs[i]
                info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                rows[i] = info
        self._masks = _mask_array(infos, self.num_envs)
        return (self._batched_obs(obs), np.asarray(reward, dtype=np.float32), dones, rows)

    def close(self) -> None:
        """Close the native env."""
        self.venv.close()

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seeds for the next :meth:`reset` (``[seed, seed + 1, ...]``, SB3's convention).

        The native env has one batched generator, so only the first seed is used; a
        random one is drawn when ``seed`` is ``None``.
        """
        return super().seed(seed)

    # ------------------------------------------------------------------ masks
    def action_masks(self) -> np.ndarray:
        """Allowed actions of every env, flattened as sb3-contrib's ``MaskablePPO`` expects.

        Each row is the concatenation of the per-dimension masks of that env's action:

        * ``Discrete(n)`` (``action_type="menu"``): ``(num_envs, n)``;
        * ``MultiDiscrete(nvec)`` (``"multidiscrete"``): ``(num_envs, sum(nvec))``, dose
          levels of therapy 0, then therapy 1, ... (level 0, "none", always allowed);
        * ``MultiBinary(n)`` (``"multibinary"``): ``(num_envs, 2 * n)``, an ``[off, on]``
          pair per therapy (off always allowed), the layout of sb3-contrib's masked
          Bernoulli distribution.

        The masks describe the current observations (after an autoreset, the new
        episode's). ``MaskablePPO`` reads them through ``env_method("action_masks")``.

        Returns
        -------
        numpy.ndarray
            Bool array as above.

        Raises
        ------
        RuntimeError
            Before the first :meth:`reset`.
        ValueError
            If the native mask does not fit the action space.
        """
        if self._masks is None:
            raise RuntimeError("action_masks: no observation yet; call reset() first")
        return _flat_masks(self._masks, self.action_space, self.num_envs)

    # ------------------------------------------------------------------ attributes
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The native env's attribute ``attr_name``, once per requested env.

        ``"action_masks"`` gives one callable per env returning that env's flat mask.

        Raises
        ------
        AttributeError
            If the native env has no such attribute.
        """
        idx = list(self._get_indices(indices))
        if attr_name == "action_masks":
            return [partial(self._env_action_mask, i) for i in idx]
        value = getattr(self.venv, attr_name)
        return [value for _ in idx]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set ``attr_name`` on the native env (shared by all envs).

        Raises
        ------
        ValueError
            If ``indices`` names only some of the envs: the attribute is shared.
        """
        idx = set(self._get_indices(indices))
        if idx != set(range(self.num_envs)):
            raise ValidationError(f"indices: got {sorted(idx)}; expected all {self.num_envs} envs "
                             f"(or None): {attr_name!r} is shared by the one native env")
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call the native env's method once; its result is repeated per requested env.

        ``"action_masks"`` returns each requested env's own flat mask (what sb3-contrib's
        ``get_action_masks`` stacks).
        """
        idx = list(self._get_indices(indices))
        if method_name == "action_masks":
            masks = self.action_masks(*method_args, **method_kwargs)
            return [masks[i] for i in idx]
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in idx]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper],
                       indices: VecEnvIndices = None) -> list[bool]:
        """``False`` for every env: the native vector env is not made of wrapped envs."""
        return [False for _ in self._get_indices(indices)]

    # ------------------------------------------------------------------ rendering
    def get_images(self) -> Sequence[np.ndarray | None]:
        """One RGB frame, of env 0 (the native env traces env 0 only).

        Returns ``[None] * num_envs`` with a warning unless ``render_mode="rgb_array"``.
        """
        if self.render_mode != "rgb_array":
            warnings.warn(f"get_images: render_mode is {self.render_mode!r}; expected "
                          "'rgb_array'", stacklevel=2)
            return [None for _ in range(self.num_envs)]
        return [self.venv.render()]

    def render(self, mode: str | None = None) -> np.ndarray | None:
        """Env 0's frame for ``render_mode="rgb_array"`` (see SB3's ``VecEnv.render``)."""
        return super().render(mode=mode)

    # ------------------------------------------------------------------ helpers
    def _env_action_mask(self, i: int) -> np.ndarray:
        return self.action_masks()[i]

    def _batched_obs(self, obs: Any) -> VecEnvObs:
        if isinstance(self.observation_space, spaces.Dict):
            return {key: np.asarray(obs[key]) for key in self.observation_space.spaces}
        return np.asarray(obs)

    def _merged_options(self) -> dict[str, Any] | None:
        """One options dict for the native reset from SB3's per-env ``self._options``.

        A key with the same value in every env's options is passed as is; ``"patient"``
        set per env (one id or row each, for every env) becomes the per-env list the native
        env takes. Anything else cannot be expressed in one batched reset.

        Raises
        ------
        ValueError
            Naming the key whose per-env values cannot be merged.
        """
        per_env = [dict(o or {}) for o in self._options]
        keys = sorted(set().union(*per_env))
        if not keys:
            return None
        merged: dict[str, Any] = {}
        for key in keys:
            values = [o.get(key, _MISSING) for o in per_env]
            missing = [i for i, v in enumerate(values) if v is _MISSING]
            if not missing and all(_same(values[0], v) for v in values[1:]):
                merged[key] = values[0]
            elif key == "patient" and not missing and all(np.ndim(v) == 0 for v in values):
                merged[key] = values
            elif key == "patient":
                raise ValidationError(f"options['patient']: set for some envs only (missing for "
                                 f"envs {missing}) or not one patient each; expected one "
                                 "patient (id or bank row) for every env, or the same for all")
            else:
                raise ValidationError(f"options[{key!r}]: differs between envs; expected the same "
                                 "value for every env (one batched reset)")
        return merged


def make_vec_env(env_id: str = "ImmuneWorld-v0", n_envs: int = 8, *, seed: int | None = None,
                 **env_kwargs: Any) -> VecEnv:
    """Build an SB3 ``VecEnv`` running ``n_envs`` episodes in one native vector env.

    Parameters
    ----------
    env_id
        A registered immunegym id (``"ImmuneWorld-v0"``, ``"ImmuneSim-v0"`` or a scenario
        file's id) with a vector entry point.
    n_envs
        Number of parallel envs (>= 1).
    seed
        Seed of the first :meth:`~ImmuneSB3VecEnv.reset` (SB3 algorithms also seed the env
        themselves when given ``seed=``); ``None`` for a random one.
    **env_kwargs
        Passed to the native vector env: ``device``, ``render_mode``, ``model``, ``bank``,
        ``observation_noise``, ``world_options`` and any scenario field (``horizon``,
        ``bank_size``, ``action_type``, ``observation_type``, ``reward={...}``, ...).

    Returns
    -------
    ImmuneSB3VecEnv
        The adapter (an SB3 ``VecEnv``); its native env is ``.venv``.

    Raises
    ------
    ValidationError
        If ``env_id`` is not a registered id with a vector entry point, ``n_envs`` not an
        integer in ``1..2**22``, ``seed`` not ``None`` or an integer in ``0..2**63-1``, or
        ``env_kwargs`` sets what the adapter fixes (``num_envs``, ``vectorization_mode``,
        ``autoreset_mode``, ``vector_kwargs``); and as the native env for its keywords.
    """
    from immunegym.env.engine import MAX_NUM_ENVS
    from immunegym.validation import ValidationError, bad, integer
    from immunegym.validation import seed as check_seed

    n_envs = integer("n_envs", n_envs, low=1, high=MAX_NUM_ENVS)
    seed = check_seed("seed", seed, optional=True)
    fixed = sorted(set(env_kwargs) & set(_RESERVED_KWARGS))
    if fixed:
        raise ValidationError(f"{fixed[0]}: set by make_vec_env (one native vector env in "
                              "SAME_STEP autoreset mode); expected it not to be passed")
    import immunegym  # noqa: F401  (registers the ids)

    ids = sorted(k for k, spec in gym.registry.items() if spec.vector_entry_point is not None
                 and str(spec.vector_entry_point).startswith("immunegym."))
    if not isinstance(env_id, str) or env_id not in ids:
        raise bad("env_id", env_id, f"one of {ids}")
    venv = gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="vector_entry_point",
                        autoreset_mode=AutoresetMode.SAME_STEP.value, **env_kwargs)
    env = ImmuneSB3VecEnv(venv)
    if seed is not None:
        env.seed(seed)
    return env


# ---------------------------------------------------------------------- module helpers
def _info_rows(infos: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Per-env info dicts from Gymnasium's batched infos (``_key`` masks respected).

    Mask keys, ``final_obs`` / ``final_info`` and object arrays are left out; 1-D arrays
    give Python scalars, others per-env numpy arrays.
    """
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in infos.items():
        if key.startswith("_") or key in _FINAL_KEYS or not isinstance(value, np.ndarray) \
                or value.dtype == object or value.shape[:1] != (n,):
            continue
        mask = infos.get(f"_{key}")
        present = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        items = value.tolist() if value.ndim == 1 else list(value.copy())
        for i in np.flatnonzero(present):
            rows[i][key] = items[i]
    return rows


def _mask_array(infos: dict[str, Any], n: int) -> np.ndarray | None:
    mask = infos.get("action_mask")
    return None if mask is None else np.asarray(mask, dtype=bool).reshape(n, -1).copy()


def _flat_masks(masks: np.ndarray, space: spaces.Space, n: int) -> np.ndarray:
    """``(n, k)`` native masks (flattened per env) -> sb3-contrib's layout for ``space``."""
    if isinstance(space, spaces.Discrete):
        expected = int(space.n)
    elif isinstance(space, spaces.MultiDiscrete):
        expected = int(np.sum(space.nvec))
    elif isinstance(space, spaces.MultiBinary):
        expected = int(np.prod(space.shape))
    else:
        raise ValidationError(f"action_space: {space} has no action masks; expected Discrete, "
                         "MultiDiscrete or MultiBinary")
    if masks.shape != (n, expected):
        raise ValidationError(f"info['action_mask']: {masks.shape[1]} entries per env; expected "
                         f"{expected} for {space}")
    if isinstance(space, spaces.MultiBinary):
        off = np.ones_like(masks)
        return np.stack([off, masks], axis=-1).reshape(n, 2 * expected)
    return masks.copy()


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object)))
    except (TypeError, ValueError):
        return False
