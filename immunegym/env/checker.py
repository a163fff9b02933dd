"""A checker for native vector environments, in the spirit of PettingZoo's API tests.

Gymnasium's :func:`gymnasium.utils.env_checker.check_env` checks single environments only.
:func:`check_vector_env` runs a vector environment in both autoreset modes and checks what a
vectorized learner relies on: batched spaces, the autoreset contract, finite observations
inside the space, reward/termination arrays of the right shape and dtype, the action mask,
and seeded reproducibility.

.. code-block:: python

    import gymnasium as gym
    from immunegym.env import check_vector_env

    check_vector_env(lambda **kw: gym.make_vec("ImmuneSim-v0", num_envs=4, horizon=4, **kw))
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

__all__ = ["check_vector_env"]

_MODES: tuple[AutoresetMode, ...] = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)


def check_vector_env(env_fn: Callable[..., VectorEnv], *, n_steps: int = 200,
                     seed: int = 0) -> None:
    """Check a vector environment's API and autoreset semantics in both autoreset modes.

    For each of ``AutoresetMode.NEXT_STEP`` and ``AutoresetMode.SAME_STEP``, a fresh
    environment is built with ``env_fn(autoreset_mode=mode)``, reset with ``seed`` and
    stepped ``n_steps`` times with actions sampled from its action space (seeded with
    ``seed``); a second fresh environment replays the same actions and must give the same
    rollout. The checks:

    * ``observation_space == batch_space(single_observation_space, num_envs)``, and the same
      for the action space;
    * ``metadata["autoreset_mode"]`` is the mode asked for;
    * every observation from ``reset`` and ``step`` lies in ``observation_space`` and is
      finite;
    * rewards are ``(num_envs,)`` finite floats, ``terminated`` and ``truncated``
      ``(num_envs,)`` bools;
    * ``infos`` is a dict whose ``"action_mask"`` is a ``(num_envs, *mask_shape)`` bool
      array, ``mask_shape`` being ``(n,)`` for ``Discrete(n)``, the space's shape for
      ``MultiBinary`` and ``(len(nvec), max(nvec))`` for ``MultiDiscrete``;
    * ``NEXT_STEP``: the step after an env ends returns reward 0,
      ``terminated = truncated = False`` and a first observation for it;
    * ``SAME_STEP``: an env that ends has ``infos["_final_obs"][i]`` true,
      ``infos["final_obs"][i]`` inside ``single_observation_space`` and ``infos["final_info"]``,
      while the returned observation is the new episode's first; envs that go on have
      ``infos["_final_obs"][i]`` false;
    * the same seed and actions give identical observations, rewards, terminations,
      truncations and infos (``final_obs`` and ``final_info`` included).

    A "first observation" is recognised by the observation's ``"time"`` field (cycles
    elapsed / horizon, 0 at the start of an episode and positive after a step) when the
    environment has one: a ``"time"`` key of a ``Dict`` observation, or the ``"time"`` slice
    of the flat observation's codec (``env.unwrapped._parts.observations.slices``). Without
    it, only the generic properties above are checked.

    Parameters
    ----------
    env_fn
        Builds a fresh vector environment; called with the keyword ``autoreset_mode``.
    n_steps
        Steps per rollout. At least one episode must end within them (else the autoreset
        checks would be vacuous).
    seed
        Seed of ``reset`` and of the action sampler.

    Raises
    ------
    AssertionError
        Naming the check that failed, the autoreset mode, and the step and env where it
        failed.
    ValidationError
        If ``env_fn`` is not callable, ``n_steps`` not an integer in ``1..10**6`` or
        ``seed`` not an integer in ``0..2**63-1``.
    """
    from immunegym.validation import bad, integer
    from immunegym.validation import seed as check_seed

    if not callable(env_fn):
        raise bad("env_fn", env_fn, "a callable building a vector env")
    n_steps = integer("n_steps", n_steps, low=1, high=10**6)
    seed = check_seed("seed", seed)
    for mode in _MODES:
        env = env_fn(autoreset_mode=mode)
        try:
            _check_spaces(env)
            _check_metadata(env, mode)
            actions = _actions(env, n_steps, seed)
            first = _rollout(env, mode, actions, seed)
        finally:
            env.close()
        replay = env_fn(autoreset_mode=mode)
        try:
            second = _rollout(replay, mode, actions, seed)
        finally:
            replay.close()
        _check_same(first, second, mode)


# ---------------------------------------------------------------------------- static checks
def _check_spaces(env: VectorEnv) -> None:
    n = getattr(env, "num_envs", None)
    assert isinstance(n, (int, np.integer)) and n >= 1, (
        f"num_envs: got {n!r}; expected an integer >= 1")
    for kind in ("observation", "action"):
        single = getattr(env, f"single_{kind}_space", None)
        batched = getattr(env, f"{kind}_space", None)
        assert isinstance(single, spaces.Space), (
            f"single_{kind}_space: got {single!r}; expected a gymnasium Space")
        assert isinstance(batched, spaces.Space), (
            f"{kind}_space: got {batched!r}; expected a gymnasium Space")
        expected = batch_space(single, int(n))
        assert batched == expected, (
            f"{kind}_space {batched} != batch_space(single_{kind}_space, {n}) = {expected}")


def _check_metadata(env: VectorEnv, mode: AutoresetMode) -> None:
    metadata = getattr(env, "metadata", None)
    assert isinstance(metadata, dict), f"metadata: got {metadata!r}; expected a dict"
    assert "autoreset_mode" in metadata, (
        f"metadata has no 'autoreset_mode' (asked for {mode}); keys {sorted(metadata)}")
    got = metadata["autoreset_mode"]
    assert isinstance(got, AutoresetMode) and got == mode, (
        f"metadata['autoreset_mode']: got {got!r}; expected {mode!r} (the mode asked for)")


def _actions(env: VectorEnv, n_steps: int, seed: int) -> list[Any]:
    space = env.action_space
    space.seed(seed)
    return [space.sample() for _ in range(n_steps)]


# ---------------------------------------------------------------------------- rollout
class _Rollout:
    """What a rollout returned, for the determinism comparison."""

    def __init__(self) -> None:
        self.obs: list[Any] = []
        self.rewards: list[np.ndarray] = []
        self.terminated: list[np.ndarray] = []
        self.truncated: list[np.ndarray] = []
        self.infos: list[dict[str, np.ndarray]] = []


def _rollout(env: VectorEnv, mode: AutoresetMode, actions: list[Any], seed: int) -> _Rollout:
    n = int(env.num_envs)
    time_of = _time_reader(env)
    out = _Rollout()
    where = f"[{mode.name}] reset"
    result = env.reset(seed=seed)
    assert isinstance(result, tuple) and len(result) == 2, (
        f"{where}: expected (obs, infos), got {type(result).__name__}")
    obs, infos = result
    _check_obs(env, obs, where)
    _check_infos(env, infos, where)
    if time_of is not None:
        for i in range(n):
            t = time_of(obs, i)
            assert np.all(t == 0), f"{where}: env {i} first observation has time {t}; expected 0"
    _record(out, obs, None, None, None, infos)
    ended_any = False
    pending = np.zeros(n, dtype=bool)  # NEXT_STEP: envs that ended on the previous step
    for step, action in enumerate(actions):
        where = f"[{mode.name}] step {step}"
        result = env.step(action)
        assert isinstance(result, tuple) and len(result) == 5, (
            f"{where}: expected (obs, reward, terminated, truncated, infos), got "
            f"{type(result).__name__} {result!r:.200}")
        obs, reward, terminated, truncated, infos = result
        _check_obs(env, obs, where)
        _check_array(reward, n, "reward", where, kind="f")
        assert np.all(np.isfinite(reward)), (
            f"{where}: non-finite rewards in envs {np.flatnonzero(~np.isfinite(reward))}")
        _check_array(terminated, n, "terminated", where, kind="b")
        _check_array(truncated, n, "truncated", where, kind="b")
        _check_infos(env, infos, where)
        done = np.asarray(terminated) | np.asarray(truncated)
        if mode == AutoresetMode.NEXT_STEP:
            _check_next_step(obs, reward, terminated, truncated, pending, time_of, where)
            pending = done.copy()
        else:
            _check_same_step(env, obs, infos, done, time_of, where)
        ended_any |= bool(done.any())
        _record(out, obs, reward, terminated, truncated, infos)
    assert ended_any, (
        f"[{mode.name}] no episode ended within {len(actions)} steps, so autoreset was never "
        "exercised; raise n_steps or shorten the episodes")
    return out


def _check_next_step(obs, reward, terminated, truncated, pending: np.ndarray,
                     time_of, where: str) -> None:
    for i in np.flatnonzero(pending):
        assert reward[i] == 0, (
            f"{where}: NEXT_STEP autoreset of env {i} returned reward {reward[i]}; expected 0")
        assert not terminated[i] and not truncated[i], (
            f"{where}: NEXT_STEP autoreset of env {i} returned terminated={terminated[i]}, "
            f"truncated={truncated[i]}; expected both False")
    if time_of is None:
        return
    for i in range(len(pending)):
        t = time_of(obs, i)
        if pending[i]:
            assert np.all(t == 0), (
                f"{where}: NEXT_STEP autoreset of env {i} returned an observation with time "
                f"{t}; expected a first observation (time 0)")
        else:
            assert np.all(t > 0), (
                f"{where}: env {i} stepped but its observation has time {t}; expected > 0 "
                "(only a reset observation has time 0)")


def _check_same_step(env: VectorEnv, obs, infos: dict[str, Any], done: np.ndarray, time_of,
                     where: str) -> None:
    n = len(done)
    if done.any():
        for key in ("final_obs", "_final_obs", "final_info"):
            assert key in infos, (
                f"{where}: envs {np.flatnonzero(done)} ended under SAME_STEP but infos has no "
                f"{key!r}")
    if "_final_obs" in infos:
        mask = np.asarray(infos["_final_obs"])
        assert mask.shape == (n,) and mask.dtype == np.bool_, (
            f"{where}: infos['_final_obs'] has shape {mask.shape} and dtype {mask.dtype}; "
            f"expected ({n},) bool")
        assert np.array_equal(mask, done), (
            f"{where}: infos['_final_obs'] is {mask}; expected terminated | truncated {done}")
        assert len(infos["final_obs"]) == n, (
            f"{where}: infos['final_obs'] has length {len(infos['final_obs'])}; expected {n}")
    for i in np.flatnonzero(done):
        final = infos["final_obs"][i]
        assert final is not None and env.single_observation_space.contains(final), (
            f"{where}: infos['final_obs'][{i}] = {final!r} is not in single_observation_space "
            f"{env.single_observation_space}")
        assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(final)), (
            f"{where}: infos['final_obs'][{i}] is not finite")
        if time_of is not None:
            t_final = time_of(_batch1(final), 0)
            assert np.all(t_final > 0), (
                f"{where}: infos['final_obs'][{i}] has time {t_final}; expected the last "
                "observation of the episode (time > 0)")
            t = time_of(obs, i)
            assert np.all(t == 0), (
                f"{where}: SAME_STEP env {i} ended but the returned observation has time {t}; "
                "expected the new episode's first observation (time 0)")
    if time_of is not None:
        for i in np.flatnonzero(~done):
            t = time_of(obs, i)
            assert np.all(t > 0), (
                f"{where}: env {i} stepped without ending but its observation has time {t}; "
                "expected > 0")


# ---------------------------------------------------------------------------- pieces
def _check_obs(env: VectorEnv, obs: Any, where: str) -> None:
    space = env.observation_space
    if not space.contains(obs):
        raise AssertionError(f"{where}: observation is not in observation_space {space}"
                             f"{_why_not(space, obs)}")
    for leaf in _leaves(obs):
        bad = ~np.isfinite(np.asarray(leaf, dtype=np.float64))
        assert not bad.any(), f"{where}: observation has {int(bad.sum())} non-finite values"


def _why_not(space: spaces.Space, obs: Any) -> str:
    """A hint at why ``obs`` is outside ``space`` (shape, dtype or bounds)."""
    if isinstance(space, spaces.Dict) and isinstance(obs, dict):
        for key, sub in space.spaces.items():
            if key not in obs:
                return f" (key {key!r} missing)"
            if not sub.contains(obs[key]):
                return f" (key {key!r}{_why_not(sub, obs[key])})"
        return ""
    if isinstance(space, spaces.Box):
        a = np.asarray(obs)
        if a.shape != space.shape:
            return f": shape {a.shape}, expected {space.shape}"
        if not np.can_cast(a.dtype, space.dtype):
            return f": dtype {a.dtype}, expected {space.dtype}"
        outside = (a < space.low) | (a > space.high) | np.isnan(a)
        if outside.any():
            idx = tuple(np.argwhere(outside)[0])
            return (f": value {a[idx]} at {idx} outside [{space.low[idx]}, "
                    f"{space.high[idx]}]")
    return ""


def _check_array(value: Any, n: int, name: str, where: str, *, kind: str) -> None:
    assert isinstance(value, np.ndarray), (
        f"{where}: {name} is a {type(value).__name__}; expected a numpy array")
    assert value.shape == (n,), f"{where}: {name} has shape {value.shape}; expected ({n},)"
    want = {"f": "a float dtype", "b": "bool"}[kind]
    assert value.dtype.kind == kind, f"{where}: {name} has dtype {value.dtype}; expected {want}"


def _check_infos(env: VectorEnv, infos: Any, where: str) -> None:
    assert isinstance(infos, dict), f"{where}: infos is a {type(infos).__name__}; expected dict"
    n = int(env.num_envs)
    assert "action_mask" in infos, f"{where}: infos has no 'action_mask'; keys {sorted(infos)}"
    mask = infos["action_mask"]
    want = (n, *_mask_shape(env.single_action_space))
    assert isinstance(mask, np.ndarray) and mask.shape == want, (
        f"{where}: infos['action_mask'] has shape {np.shape(mask)}; expected {want} for "
        f"{env.single_action_space}")
    assert mask.dtype == np.bool_, (
        f"{where}: infos['action_mask'] has dtype {mask.dtype}; expected bool")
    for key, value in infos.items():
        if isinstance(value, np.ndarray) and not key.startswith("_"):
            assert len(value) == n, (
                f"{where}: infos[{key!r}] has length {len(value)}; expected num_envs = {n}")


def _mask_shape(space: spaces.Space) -> tuple[int, ...]:
    if isinstance(space, spaces.Discrete):
        return (int(space.n),)
    if isinstance(space, spaces.MultiBinary):
        return tuple(int(s) for s in np.atleast_1d(space.n))
    if isinstance(space, spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec)
        return (*nvec.shape, int(nvec.max()))
    raise AssertionError(f"single_action_space {space}: no action-mask convention for "
                         f"{type(space).__name__}")


def _time_reader(env: VectorEnv) -> Callable[[Any, int], np.ndarray] | None:
    """Reads env ``i``'s ``"time"`` field from a batched observation, if the env has one."""
    single = env.single_observation_space
    if isinstance(single, spaces.Dict):
        if "time" in single.spaces:
            return lambda obs, i: np.asarray(obs["time"][i])
        return None
    parts = getattr(getattr(env, "unwrapped", env), "_parts", None)
    slices = getattr(getattr(parts, "observations", None), "slices", None)
    if isinstance(slices, dict) and isinstance(slices.get("time"), slice):
        s = slices["time"]
        return lambda obs, i: np.asarray(obs[i, s])
    return None


def _batch1(obs: Any) -> Any:
    """A single observation as a batch of one (for :func:`_time_reader`)."""
    if isinstance(obs, dict):
        return {k: np.asarray(v)[None] for k, v in obs.items()}
    return np.asarray(obs)[None]


def _leaves(obs: Any) -> list[np.ndarray]:
    if isinstance(obs, dict):
        return [leaf for value in obs.values() for leaf in _leaves(value)]
    if isinstance(obs, tuple):
        return [leaf for value in obs for leaf in _leaves(value)]
    return [np.asarray(obs)]


def _record(out: _Rollout, obs, reward, terminated, truncated, infos: dict[str, Any]) -> None:
    out.obs.append(copy.deepcopy(obs))
    if reward is not None:
        out.rewards.append(np.array(reward, copy=True))
        out.terminated.append(np.array(terminated, copy=True))
        out.truncated.append(np.array(truncated, copy=True))
    out.infos.append(copy.deepcopy(infos))


def _equal(a: Any, b: Any) -> bool:
    """Exact equality of nested observations/infos (dicts, sequences, arrays, None)."""
    if isinstance(a, dict) or isinstance(b, dict):
        return (isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()
                and all(_equal(a[k], b[k]) for k in a))
    if a is None or b is None:
        return a is b
    if isinstance(a, (list, tuple)) or (isinstance(a, np.ndarray) and a.dtype == object):
        return (len(a) == len(b)) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=False)


def _check_same(a: _Rollout, b: _Rollout, mode: AutoresetMode) -> None:
    tag = f"[{mode.name}] same seed, same actions"
    for t, (x, y) in enumerate(zip(a.obs, b.obs, strict=True)):
        where = "reset" if t == 0 else f"step {t - 1}"
        assert _equal(x, y), (
            f"{tag}: observations differ at {where}; the rollout is not reproducible")
    for name in ("rewards", "terminated", "truncated"):
        for t, (x, y) in enumerate(zip(getattr(a, name), getattr(b, name), strict=True)):
            assert np.array_equal(x, y), f"{tag}: {name} differ at step {t}: {x} vs {y}"
    for t, (x, y) in enumerate(zip(a.infos, b.infos, strict=True)):
        where = "reset" if t == 0 else f"step {t - 1}"
        assert sorted(x) == sorted(y), f"{tag}: info keys differ at {where}"
        for key in x:
            assert _equal(x[key], y[key]), f"{tag}: infos[{key!r}] differ at {where}"
