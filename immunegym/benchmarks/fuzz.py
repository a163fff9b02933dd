"""Fuzzing the public boundaries: millions of random env steps, and thousands of bad calls.

:func:`run_fuzz` has two parts.

* **Environment steps.** Native vector envs (``gym.make_vec(..., num_envs=large)``) of
  ``ImmuneWorld-v0`` and ``ImmuneSim-v0`` over several scenarios (multidiscrete, multibinary
  and menu actions; flat and dict observations; both autoreset modes) take random actions
  from their action space (seeded), autoreset included. Every observation must lie in the
  single observation space (checked per env), rewards, costs and every float info finite,
  and no step may raise.
* **API calls.** Hypothesis strategies generate random, often bad, arguments for public
  calls: ``gym.make`` / ``gym.make_vec`` keywords, ``reset`` seeds and options, ``step``
  actions, scenario TOML files, ``parse_plan``, ``run_trial`` (tiny sizes),
  ``harmonize_labels``, ``setup_anndata``, world-model ``load`` / ``predict``. Each call
  must either succeed, with finite outputs, or raise
  :class:`~immunegym.validation.ValidationError`: anything else (a raw error from inside
  torch, h5py or pandas) is an *unclear error*. Hypothesis runs programmatically with a
  fixed seed (no example database) and every outcome is recorded, nothing stops the run.
  Sizes are tiny, or so large that validation must refuse them before allocating; a call
  that runs past :data:`CALL_TIMEOUT_S` is interrupted and counted as a hang.

``immunegym bench fuzz`` runs it and writes the report as JSON.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import platform
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from immunegym.validation import ValidationError, integer
from immunegym.validation import seed as check_seed

__all__ = ["CALL_TIMEOUT_S", "ENV_CONFIGS", "run_fuzz"]

CALL_TIMEOUT_S = 60.0
"""An API call running longer than this is interrupted and counted as a hang."""
MAX_EXAMPLES = 20
"""Failure descriptions kept in the report."""
MAX_ENV_STEPS = 10**9
MAX_API_CALLS = 10**6
MAX_NUM_ENVS = 4096
"""Envs per vector env in the step part (large batches make the Python overhead small)."""

ENV_CONFIGS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("ImmuneWorld-v0", {"action_type": "multidiscrete", "observation_type": "flat"},
     "NextStep"),
    ("ImmuneSim-v0", {"action_type": "multibinary", "observation_type": "dict",
                      "horizon": 6}, "SameStep"),
    ("ImmuneWorld-v0", {"action_type": "menu", "observation_type": "dict",
                        "cancer_types": {"nsclc": 1.0, "nsclc_pdl1_high": 1.0},
                        "reward": {"toxicity": 0.5}}, "SameStep"),
    ("ImmuneWorld-v0", {"action_type": "menu", "observation_type": "flat", "horizon": 8,
                        "menu": ("none", "PD1", "Combo", "chemo+anti_pd1", "radio",
                                 "targeted"),
                        "terminate_on_progression": False,
                        "world_options": {"sample": True}}, "NextStep"),
    ("ImmuneSim-v0", {"action_type": "multidiscrete", "observation_type": "flat",
                      "horizon": 5, "dose_levels": (0.0, 0.25, 0.5, 1.0, 1.5),
                      "cancer_types": {"melanoma": 1.0}, "biopsy_cells": 0},
     "NextStep"),
    ("ImmuneWorld-v0", {"action_type": "multibinary", "observation_type": "dict",
                        "observation_noise": False, "cycle_days": 28, "biopsy_every": 2,
                        "scan_every": 3, "horizon": 10}, "SameStep"),
)
"""``(id, keywords, autoreset mode)`` of the vector envs the step part runs, in turn."""

_FUZZ_BANK = 128


# ============================================================================ bookkeeping
@dataclass
class _Room:
    calls: int = 0
    refused: int = 0
    unclear_errors: int = 0
    nans: int = 0
    hangs: int = 0


@dataclass
class _Report:
    env_steps: int = 0
    crashes: int = 0
    nans: int = 0
    out_of_space: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)
    rooms: dict[str, _Room] = field(default_factory=dict)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def example(self, call: str, kind: str, message: str) -> None:
        # One example per (call, kind): the list shows distinct failures.
        key = (call.split("(", 1)[0], kind)
        if key in self._seen or len(self.examples) >= MAX_EXAMPLES:
            return
        self._seen.add(key)
        self.examples.append({"call": _short(call, 240), "exception": kind,
                              "message": _short(message, 400)})

    def room(self, name: str) -> _Room:
        return self.rooms.setdefault(name, _Room())


def _short(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(name: str, args: dict[str, Any]) -> str:
    inner = ", ".join(f"{k}={_short(repr(v), 80)}" for k, v in args.items())
    return f"{name}({inner})"


class _Timeout(BaseException):
    """Raised inside a call that ran past its time (a BaseException: not swallowed)."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the body after ``seconds`` (main thread on POSIX; else no limit)."""
    usable = (hasattr(signal, "setitimer") and
              threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def _raise(signum, frame):  # noqa: ARG001 - signal handler signature
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _count_nonfinite(value: Any, depth: int = 0) -> int:
    """Non-finite floats in a result (arrays, tensors, frames, dataclasses, containers)."""
    if depth > 4 or value is None or isinstance(value, (str, bytes, bool)):
        return 0
    if isinstance(value, float):
        return 0 if math.isfinite(value) else 1
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fc":
            return int((~np.isfinite(value)).sum())
        if value.dtype == object and value.size <= 10_000:
            return sum(_count_nonfinite(v, depth + 1) for v in value.ravel())
        return 0
    if isinstance(value, np.floating):
        return 0 if np.isfinite(value) else 1
    try:
        import torch

        if isinstance(value, torch.Tensor):
            if value.is_floating_point():
                return int((~torch.isfinite(value)).sum())
            return 0
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        import pandas as pd

        if isinstance(value, pd.DataFrame):
            numeric = value.select_dtypes("number")
            return int((~np.isfinite(numeric.to_numpy(dtype=float))).sum())
        if isinstance(value, pd.Series):
            return _count_nonfinite(value.to_numpy(), depth + 1) if value.dtype.kind in "fc" \
                else 0
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    if is_dataclass(value) and not isinstance(value, type):
        # Fields a class documents as undefined in some cases (a median not reached) are
        # answers, not failures.
        undefined = getattr(type(value), "UNDEFINED_WHEN_EMPTY", frozenset())
        return sum(_count_nonfinite(getattr(value, f.name), depth + 1) for f in fields(value)
                   if f.name not in undefined)
    if isinstance(value, dict):
        return sum(_count_nonfinite(v, depth + 1) for v in list(value.values())[:10_000])
    if isinstance(value, (list, tuple)):
        return sum(_count_nonfinite(v, depth + 1) for v in value[:10_000])
    return 0


def _call(report: _Report, room: str, name: str, args: dict[str, Any],
          fn: Callable[[], Any]) -> Any:
    """Run one API call and classify it: fine, refused (ValidationError), unclear, NaN."""
    stats = report.room(room)
    stats.calls += 1
    call = _describe(name, args)
    try:
        with warnings.catch_warnings(), _time_limit(CALL_TIMEOUT_S):
            warnings.simplefilter("ignore")
            result = fn()
    except ValidationError:
        stats.refused += 1
        return None
    except _Timeout:
        stats.hangs += 1
        report.example(call, "hang", f"still running after {CALL_TIMEOUT_S:g} s")
        return None
    except Exception as err:  # noqa: BLE001 - classifying every error is the point
        stats.unclear_errors += 1
        report.example(call, f"{type(err).__module__}.{type(err).__name__}", str(err))
        return None
    bad = _count_nonfinite(result)
    if bad:
        stats.nans += 1
        report.example(call, "nan", f"{bad} non-finite values in the result")
    return result


# ============================================================================ env steps
def _bad_rows(space: Any, obs: Any, n: int) -> np.ndarray:
    """``(n,)`` rows of a batched observation that ``space`` (a single space) refuses,
    vectorized; exactly ``space.contains`` for Box and Dict spaces."""
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        if not isinstance(obs, dict) or set(obs) != set(space.spaces):
            return np.ones(n, dtype=bool)
        bad = np.zeros(n, dtype=bool)
        for key, sub in space.spaces.items():
            bad |= _bad_rows(sub, obs[key], n)
        return bad
    if isinstance(space, spaces.Box):
        if (not isinstance(obs, np.ndarray) or obs.shape != (n, *space.shape)
                or not np.can_cast(obs.dtype, space.dtype)):
            return np.ones(n, dtype=bool)
        flat = obs.reshape(n, -1)
        inside = (flat >= space.low.reshape(1, -1)) & (flat <= space.high.reshape(1, -1))
        return ~inside.all(axis=1)
    return np.array([not space.contains(_row(obs, i)) for i in range(n)])


def _row(obs: Any, i: int) -> Any:
    if isinstance(obs, dict):
        return {k: v[i] for k, v in obs.items()}
    return obs[i]


def _nonfinite_rows(obs: Any, n: int) -> np.ndarray:
    if isinstance(obs, dict):
        out = np.zeros(n, dtype=bool)
        for value in obs.values():
            out |= _nonfinite_rows(value, n)
        return out
    arr = np.asarray(obs)
    if arr.dtype.kind not in "fc" or arr.shape[:1] != (n,):
        return np.zeros(n, dtype=bool)
    return ~np.isfinite(arr.reshape(n, -1)).all(axis=1)


def check_step(env: Any, obs: Any, reward: Any, terminated: Any, truncated: Any,
               infos: Any, rng: np.random.Generator) -> tuple[int, int, list[str]]:
    """Check one batched step: ``(rows out of space, rows with non-finite values,
    problems)``. Bad rows are confirmed with ``single_observation_space.contains``, and
    two random rows are always checked with it too."""
    n = env.num_envs
    space = env.single_observation_space
    problems: list[str] = []
    bad = _bad_rows(space, obs, n)
    for i in rng.integers(0, n, size=2):
        if not bad[i] and not space.contains(_row(obs, int(i))):
            bad[i] = True
    for i in np.flatnonzero(bad)[:3]:
        problems.append(f"observation of env {int(i)} is outside {space}")
    nonfinite = _nonfinite_rows(obs, n)
    reward = np.asarray(reward)
    if reward.shape != (n,) or reward.dtype.kind != "f":
        problems.append(f"reward: shape {reward.shape} dtype {reward.dtype}; expected ({n},) "
                        "floats")
    else:
        nonfinite |= ~np.isfinite(reward)
    for name, flag in (("terminated", terminated), ("truncated", truncated)):
        flag = np.asarray(flag)
        if flag.shape != (n,) or flag.dtype != bool:
            problems.append(f"{name}: shape {flag.shape} dtype {flag.dtype}; expected "
                            f"({n},) bools")
    if not isinstance(infos, dict) or "cost" not in infos:
        problems.append("infos: no 'cost'")
    else:
        for value in infos.values():
            if isinstance(value, np.ndarray) and value.dtype.kind in "fc" and \
                    value.shape[:1] == (n,):
                nonfinite |= _nonfinite_rows(value, n)
        if "final_obs" in infos:
            for i in np.flatnonzero(infos.get("_final_obs", np.zeros(n, bool))):
                if not space.contains(infos["final_obs"][i]):
                    bad[i] = True
                    problems.append(f"final_obs of env {int(i)} is outside {space}")
    if nonfinite.any():
        problems.append(f"{int(nonfinite.sum())} envs with NaN or infinity in the "
                        "observation, reward or infos")
    return int(bad.sum()), int(nonfinite.sum()), problems


def _fuzz_envs(n_env_steps: int, seed: int, report: _Report, model: Any,
               make: Callable[..., Any] | None = None) -> None:
    """The step part: ``n_env_steps`` env-steps spread over :data:`ENV_CONFIGS`."""
    import gymnasium as gym

    import immunegym  # noqa: F401  (registers the ids)

    if n_env_steps <= 0:
        return
    from immunegym.env.patients import PatientBank

    make = make or gym.make_vec
    banks: dict[tuple, Any] = {}
    per_config = math.ceil(n_env_steps / len(ENV_CONFIGS))
    for index, (env_id, kwargs, mode) in enumerate(ENV_CONFIGS):
        remaining = n_env_steps - report.env_steps
        if remaining <= 0:
            break
        budget = min(per_config, remaining)
        num_envs = int(np.clip(budget // 8, 16, MAX_NUM_ENVS))
        steps = max(1, math.ceil(budget / num_envs))
        kwargs = dict(kwargs)
        mix = kwargs.pop("cancer_types", {})
        key = tuple(sorted(mix.items()))
        if key not in banks:  # one bank per cancer-type mix (drawing one is the slow part)
            banks[key] = PatientBank.from_sim(mix, _FUZZ_BANK, seed=seed % 1000)
        kwargs["bank"] = banks[key]
        if env_id.startswith("ImmuneWorld"):
            kwargs["model"] = model
        call = _describe(f"gym.make_vec[{env_id}]", {"cancer_types": mix, **{
            k: v for k, v in kwargs.items() if k not in ("model", "bank")}})
        rng = np.random.default_rng([seed, index])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                env = make(env_id, num_envs=num_envs, autoreset_mode=mode, **kwargs)
                env.action_space.seed(int(rng.integers(2**31)))
                obs, infos = env.reset(seed=int(rng.integers(2**31)))
                out, nonfinite, problems = check_step(
                    env, obs, np.zeros(num_envs), np.zeros(num_envs, bool),
                    np.zeros(num_envs, bool), infos, rng)
                _book(report, call + " reset", out, nonfinite, problems)
                for _ in range(steps):
                    obs, reward, terminated, truncated, infos = env.step(
                        env.action_space.sample())
                    report.env_steps += num_envs
                    out, nonfinite, problems = check_step(env, obs, reward, terminated,
                                                          truncated, infos, rng)
                    raw = _raw_nonfinite(env)
                    if raw:
                        problems.append(f"{raw} envs with NaN or infinity in the raw "
                                        "observation (before the codec clips it)")
                        nonfinite = max(nonfinite, raw)
                    _book(report, call + " step", out, nonfinite, problems)
                env.close()
        except Exception as err:  # noqa: BLE001 - a crash is recorded, the next config runs
            report.crashes += 1
            report.example(call, f"crash: {type(err).__module__}.{type(err).__name__}",
                           str(err))


def _raw_nonfinite(env: Any) -> int:
    """Envs whose engine observation holds NaN or infinity: the codec replaces NaN by 0
    and clips into the space, which would hide it from the observation check."""
    engine = getattr(getattr(env, "unwrapped", env), "engine", None)
    if engine is None or not hasattr(engine, "observation_parts"):
        return 0
    import torch

    bad = None
    for part in engine.observation_parts().values():
        part = part.reshape(part.shape[0], -1)
        rows = ~torch.isfinite(part.float()).all(dim=1)
        bad = rows if bad is None else bad | rows
    return 0 if bad is None else int(bad.sum())


def _book(report: _Report, call: str, out: int, nonfinite: int, problems: list[str]) -> None:
    report.out_of_space += out
    report.nans += nonfinite
    if problems:
        if any("NaN" in p for p in problems):
            report.example(call, "nan", "; ".join(problems))
        elif out:
            report.example(call, "out_of_space", "; ".join(problems))
        else:
            report.crashes += 1
            report.example(call, "bad step output", "; ".join(problems))


# ============================================================================ API calls
def _strategies(tmp: Path, model: Any) -> list[tuple[str, str, int, Any, Callable]]:
    """``(room, name, weight, strategy, call)``; ``call(drawn, report)`` runs the calls."""
    from hypothesis import strategies as st

    from immunegym.env.scenario import ACTION_TYPES, DEFAULT_MENU

    nan, inf = float("nan"), float("inf")
    missing = str(tmp / "no-such-file.h5ad")
    csv = tmp / "cohort.csv"
    csv.write_text("patient,sample\np1,s1\n")
    empty = tmp / "empty.h5ad"
    empty.write_bytes(b"")
    # Fresh copies: a callee that mutates a bad list must not change later draws.
    anything_bad = st.sampled_from([None, "x", 3, -1, 1.5, nan, inf, True, [], {}, b"x",
                                    object()]).map(copy.deepcopy)

    def good_or(good: Any, *bad: Any) -> Any:
        """``good`` (a strategy) mostly, else one of the ``bad`` values (or strategies) or
        anything bad: calls with several arguments then still often reach the success
        path, where outputs are checked."""
        values = [b for b in bad if not isinstance(b, st.SearchStrategy)]
        options = [*(b for b in bad if isinstance(b, st.SearchStrategy)), anything_bad]
        if values:
            options.append(st.sampled_from(values).map(copy.deepcopy))
        wrong = st.one_of(*options)
        return st.integers(0, 4).flatmap(lambda i: wrong if i == 0 else good)

    cancer = ["melanoma", "nsclc", "rcc", "tnbc"]
    regimen_words = ["anti_pd1", "anti_ctla4", "chemo", "radio", "targeted", "none", "PD1",
                     "Combo", "pembrolizumab", "nivolumab", "+", "->", "@0.5", "@2", "@-1",
                     "q3w", "q6w", "q0w", "x4", "x0", "x1000000", "&", "and", "@nan",
                     "platinum_doublet", "observation", "anti_pd2", " ", "@1e400"]
    regimen_text = st.one_of(
        st.lists(st.sampled_from(regimen_words), min_size=0, max_size=8).map("".join),
        st.lists(st.sampled_from(regimen_words), min_size=0, max_size=8).map(" ".join),
        st.text(max_size=40))
    scenario_kwargs = {
        "horizon": good_or(st.integers(1, 6), 0, 101, 10**12, 2.5, "8"),
        "cycle_days": good_or(st.integers(7, 42), 6, 43, 21.0),
        "bank_seed": good_or(st.integers(0, 2**63 - 1), -1, 2**64),
        "cancer_types": good_or(
            st.dictionaries(st.sampled_from(cancer), st.floats(0.1, 5.0), max_size=3),
            {"foo": 1.0}, {"melanoma": -1.0}, {"melanoma": nan}, {"melanoma": inf},
            ["melanoma"], {1: 1.0}, {"melanoma": "1"}, {"melanoma": 0.0}),
        "patient_source": good_or(st.just("sim"), missing, str(tmp), str(csv), str(empty),
                                  ""),
        "terminate_on_progression": good_or(st.booleans(), "no", "false", 0, 1),
        "action_type": good_or(st.sampled_from(ACTION_TYPES), "continuous", "MENU"),
        "dose_levels": good_or(
            st.sampled_from([(0.0, 1.0), (0.0, 0.5, 1.0), (0.0, 0.25, 0.5, 1.0, 1.5)]),
            "ab", (0.0, 2.0), (0.5, 1.0), (0.0, 1.0, 1.0), ("0", "1"), (0.0, True),
            tuple(range(100)), (0.0, nan),
            st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=40)),
        "menu": good_or(
            st.lists(st.sampled_from([*DEFAULT_MENU, "PD1+radio", "Combo", "chemo@0.5"]),
                     min_size=1, max_size=5, unique=True),
            "anti_pd1", [1, 2], ["anti_pd1++chemo"], ["x" * 5000], ["none"] * 300,
            st.lists(regimen_text, max_size=4)),
        "observation_type": good_or(st.sampled_from(["flat", "dict"]), "image"),
        "biopsy_cells": good_or(st.integers(0, 5000), 10**7, 10**12),
        "imaging_cv": good_or(st.floats(0.0, 1.0), 1.5, -0.1),
        "biopsy_every": good_or(st.integers(1, 8), 0, 10**9),
        "scan_every": good_or(st.integers(1, 8), 0, 10**9),
        "reward": good_or(
            st.dictionaries(st.sampled_from(["tumor", "survival", "death", "progression",
                                             "toxicity"]), st.floats(-5.0, 5.0),
                            max_size=3),
            {"tumour": 1.0}, {"tumor": nan}, {"tumor": "big"}, [1], "high",
            {"tumor": True}),
    }
    env_kwargs = {
        **scenario_kwargs,
        "render_mode": good_or(st.sampled_from([None, "ansi"]), "rgb", "", "human_list"),
        "device": good_or(st.sampled_from(["cpu", "auto"]), "tpu", "cuda", "cuda:7", "gpu",
                          "cuda:x"),
        "observation_noise": good_or(st.booleans(), "no", 0),
        "world_options": good_or(
            st.sampled_from([{}, {"chunk_size": 7}, {"sample": True}, {"max_sod_mm": 500.0}]),
            [1], {"cache": True}, {"chunk_size": 0}, {"chunk_size": 10**9},
            {"sample": "no"}, {"max_sod_mm": nan}, {"max_sod_mm": -1.0}),
        "model": st.sampled_from(["x", 3]),
        "bank": st.sampled_from(["x", 3]),
        "scenario": st.sampled_from(["x", {}]),
        "horizn": st.integers(1, 3),
        "devce": st.just("cpu"),
    }
    bank_size = good_or(st.integers(1, 12), 0, -5, 10**9, 2**21, 10**15, 8.0, "8")
    make_kwargs = st.fixed_dictionaries({"bank_size": bank_size}, optional=env_kwargs)
    env_id = st.sampled_from(["ImmuneWorld-v0", "ImmuneSim-v0"])

    def _build(make: Callable, env_id: str, kwargs: dict[str, Any], **extra: Any) -> Any:
        kwargs = dict(kwargs)
        if env_id.startswith("ImmuneWorld") and "model" not in kwargs:
            kwargs["model"] = model  # the shared model: loading it is slow
        return make(env_id, **extra, **kwargs)

    def run_make(drawn: dict[str, Any], report: _Report) -> None:
        import gymnasium as gym

        env_id_, kwargs, seed_, mode = (drawn["id"], drawn["kwargs"], drawn["seed"],
                                        drawn["vector"])

        def go() -> Any:
            if mode:
                env = _build(gym.make_vec, env_id_, kwargs, num_envs=drawn["num_envs"],
                             autoreset_mode=drawn["autoreset"])
            else:
                env = _build(gym.make, env_id_, kwargs)
            try:
                obs, _ = env.reset(seed=seed_)
                env.action_space.seed(seed_)
                step = env.step(env.action_space.sample())
                frame = env.render() if kwargs.get("render_mode") else None
                return obs, step[:4], frame
            finally:
                env.close()

        name = "gym.make_vec" if mode else "gym.make"
        _call(report, "env", name, {"id": env_id_, "num_envs": drawn["num_envs"], **kwargs}
              if mode else {"id": env_id_, **kwargs}, go)

    make_strategy = st.fixed_dictionaries({
        "id": env_id, "kwargs": make_kwargs, "seed": st.integers(0, 2**31),
        "vector": st.booleans(),
        "num_envs": good_or(st.integers(1, 6), 0, -1, 1.5, "4", 2**23, 10**12),
        "autoreset": good_or(st.sampled_from(["NextStep", "SameStep", "next_step"]),
                             "sometimes", "Disabled")})

    # Prebuilt envs for reset and step calls (cheap to call many times).
    built: dict[Any, Any] = {}

    def env_for(env_id_: str, action_type: str, vector: bool) -> Any:
        import gymnasium as gym

        key = (env_id_, action_type, vector)
        if key not in built:
            if "bank" not in built:
                from immunegym.env.patients import PatientBank

                # One small ImmuneSim bank serves every prebuilt env (either simulator).
                built["bank"] = PatientBank.from_sim({}, 8, seed=0)
            kwargs = {"bank": built["bank"], "horizon": 3, "action_type": action_type}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                built[key] = (_build(gym.make_vec, env_id_, kwargs, num_envs=3) if vector
                              else _build(gym.make, env_id_, kwargs))
                built[key].reset(seed=0)
        return built[key]

    seeds = good_or(st.integers(0, 2**63 - 1), -1, 2**64, "1", [-1], [1, 2**70],
                    np.int64(-3), st.lists(st.integers(0, 10), max_size=3))
    patient = good_or(st.integers(-3, 12), "sim-0-1", "sim-0-99", "", 2.0, np.int64(2),
                      np.array([[0, 1, 2]]), st.lists(st.integers(-1, 9), max_size=4),
                      ["sim-0-1"] * 3)
    options = st.one_of(
        st.none(), anything_bad,
        st.fixed_dictionaries({}, optional={
            "patient": patient,
            "reset_mask": good_or(st.lists(st.booleans(), min_size=3, max_size=3),
                                  [2, 0, 1], "ab", [True], np.ones((3, 1), bool)),
            "patiant": st.integers(0, 3), "seed": st.integers(0, 3)}))
    reset_strategy = st.fixed_dictionaries({
        "id": env_id, "vector": st.booleans(), "seed": seeds, "options": options})

    def run_reset(drawn: dict[str, Any], report: _Report) -> None:
        env = env_for(drawn["id"], "multidiscrete", drawn["vector"])
        _call(report, "env", "env.reset", {"id": drawn["id"], "vector": drawn["vector"],
                                           "seed": drawn["seed"],
                                           "options": drawn["options"]},
              lambda: env.reset(seed=drawn["seed"], options=drawn["options"]))

    action = st.one_of(
        st.just("sample"), anything_bad,
        st.lists(st.integers(-2, 4), max_size=7),
        st.lists(st.lists(st.integers(-1, 3), min_size=5, max_size=5), min_size=1,
                 max_size=4),
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=5, max_size=5),
        st.sampled_from([[[1, 2], [3]], ["a"] * 5, np.zeros((3, 5), object), 2**70,
                         np.array([True] * 5), np.full(5, 0.5), {"anti_pd1": 1}]),
        st.integers(-2, 12))
    step_strategy = st.fixed_dictionaries({
        "id": env_id, "vector": st.booleans(), "action_type": st.sampled_from(ACTION_TYPES),
        "action": action, "sample_seed": st.integers(0, 2**31)})

    def run_step(drawn: dict[str, Any], report: _Report) -> None:
        env = env_for(drawn["id"], drawn["action_type"], drawn["vector"])
        act = drawn["action"]
        if isinstance(act, str) and act == "sample":
            env.action_space.seed(drawn["sample_seed"])
            act = env.action_space.sample()
        if not drawn["vector"] and getattr(env.unwrapped, "_needs_reset", False):
            env.reset()
        _call(report, "env", "env.step", {"id": drawn["id"], "vector": drawn["vector"],
                                          "action_type": drawn["action_type"],
                                          "action": act},
              lambda: env.step(act)[:4])

    toml_value = st.one_of(
        st.integers(-5, 10**12), st.floats(allow_nan=True), st.booleans(),
        st.text(max_size=12), st.lists(st.integers(0, 3), max_size=3),
        st.dictionaries(st.sampled_from(cancer + ["foo"]), st.floats(-1, 2), max_size=2))
    toml_keys = ["cancer_types", "source", "bank_size", "bank_seed", "horizon", "cycle_days",
                 "terminate_on_progression", "type", "dose_levels", "menu", "biopsy_cells",
                 "imaging_cv", "biopsy_every", "scan_every", "tumor", "death", "horizn"]
    toml_strategy = st.one_of(
        st.fixed_dictionaries({
            "id": st.one_of(st.just("Fuzz-Env-v0"), st.text(max_size=10), st.integers()),
            "simulator": st.sampled_from(["world", "sim", "mechanistic", 3]),
            "sections": st.dictionaries(
                st.sampled_from(["patients", "episode", "actions", "observation", "reward",
                                 "bogus"]),
                st.one_of(st.dictionaries(st.sampled_from(toml_keys), toml_value,
                                          max_size=3), toml_value), max_size=3)}),
        st.text(max_size=80), st.binary(max_size=40))

    def run_toml(drawn: Any, report: _Report) -> None:
        from immunegym.env.scenario import load_scenario_file

        path = tmp / "fuzz.toml"
        if isinstance(drawn, bytes):
            path.write_bytes(drawn)
        else:
            path.write_text(drawn if isinstance(drawn, str) else _toml(drawn),
                            encoding="utf-8", errors="surrogatepass")
        text = path.read_bytes()[:200].decode("utf-8", "replace")
        _call(report, "env", "load_scenario_file", {"text": text},
              lambda: load_scenario_file(path))

    # ------------------------------------------------------------------ other rooms
    def run_plan(drawn: dict[str, Any], report: _Report) -> None:
        from immunegym.planning.regimen import parse_plan

        def go() -> Any:
            plan = parse_plan(drawn["text"])
            return plan.cycle_doses(drawn["horizon"])

        _call(report, "planning", "parse_plan", drawn, go)

    plan_strategy = st.fixed_dictionaries({
        "text": st.one_of(regimen_text, anything_bad),
        "horizon": good_or(st.integers(1, 40), 0, -1, 10**12, 2.5)})

    def run_set(drawn: Any, report: _Report) -> None:
        from immunegym.regimen_grammar import parse_therapy_set

        _call(report, "planning", "parse_therapy_set", {"text": drawn},
              lambda: parse_therapy_set(drawn))

    def run_trial_(drawn: dict[str, Any], report: _Report) -> None:
        from immunegym.sim import run_trial

        _call(report, "sim", "run_trial", drawn, lambda: run_trial(
            drawn["cancer_type"], drawn["regimen"], drawn["n_patients"], drawn["seed"],
            follow_up_days=drawn["follow_up_days"], device=drawn["device"]))

    trial_strategy = st.fixed_dictionaries({
        "cancer_type": good_or(st.sampled_from(cancer), "melanom", ""),
        "regimen": st.one_of(st.sampled_from(["anti_pd1", "none", "chemo+anti_pd1"]),
                             regimen_text, anything_bad),
        "n_patients": good_or(st.integers(1, 3), 0, 10**12, 2.0),
        "seed": good_or(st.integers(0, 2**63 - 1), -1, 2**64),
        "follow_up_days": good_or(st.integers(1, 42), 0, -5, 10**15, 1.5),
        "device": good_or(st.just("cpu"), "tpu", "cuda", "cuda:9")})

    def run_harmonize(drawn: dict[str, Any], report: _Report) -> None:
        from immunegym.ontology import harmonize_labels

        _call(report, "ontology", "harmonize_labels", drawn, lambda: harmonize_labels(
            drawn["labels"], convention=drawn["convention"], aliases=drawn["aliases"],
            strict=drawn["strict"]))

    labels = st.one_of(
        st.lists(st.one_of(st.sampled_from(["CD8.c12.Tex.CXCL13", "Macro_SPP1", "T/NK cells",
                                            "Doublets", "B cells", "Tregs", ""]),
                           st.text(max_size=12), st.none(), st.just(nan), st.integers()),
                 max_size=8),
        anything_bad, st.text(max_size=10))
    harmonize_strategy = st.fixed_dictionaries({
        "labels": labels,
        "convention": good_or(st.sampled_from([None, "sade_feldman_2018"]), "nope"),
        "aliases": good_or(st.one_of(st.none(), st.dictionaries(
            st.text(max_size=6), st.text(max_size=8), max_size=2))),
        "strict": good_or(st.booleans(), "no")})

    def run_setup(drawn: dict[str, Any], report: _Report) -> None:
        from immunegym.data import setup_anndata

        def go() -> Any:
            adata = _tiny_adata(drawn["n_cells"], drawn["column"], drawn["values"]) \
                if drawn["adata"] else drawn["garbage"]
            return setup_anndata(adata, patient_key=drawn["patient_key"],
                                 sample_key=drawn["sample_key"], label_key=drawn["label_key"],
                                 time_key=drawn["time_key"],
                                 label_convention=drawn["label_convention"])

        _call(report, "data", "setup_anndata", drawn, go)

    setup_strategy = st.fixed_dictionaries({
        "adata": st.booleans(), "garbage": anything_bad, "n_cells": st.integers(0, 6),
        "column": st.sampled_from(["patient", "sample", "cell_type", "time"]),
        "values": st.sampled_from(["nan", "int", "empty", "mixed", "ok"]),
        "patient_key": good_or(st.just("patient"), "Patient"),
        "sample_key": good_or(st.just("sample"), "samples"),
        "label_key": good_or(st.just("cell_type"), "label"),
        "time_key": good_or(st.sampled_from([None, "time"]), "day"),
        "label_convention": good_or(st.just(None), "nope")})

    def run_load(drawn: dict[str, Any], report: _Report) -> None:
        from immunegym.world_model import load

        _call(report, "world_model", "world_model.load", drawn,
              lambda: load(drawn["path"], device=drawn["device"]))

    load_strategy = st.fixed_dictionaries({
        "path": st.sampled_from([missing, str(tmp), str(csv), str(empty), 3, b"x", ""]),
        "device": good_or(st.just("cpu"), "tpu", "cuda", "cuda:5")})

    tl_cache: list[Any] = []

    def run_predict(drawn: dict[str, Any], report: _Report) -> None:
        if not tl_cache:
            tl_cache.append(_tiny_timelines())
        tl = tl_cache[0]
        _call(report, "world_model", "WorldModel.predict", drawn,
              lambda: model.predict(tl, drawn["doses"], dt=drawn["dt"]))

    predict_strategy = st.fixed_dictionaries({
        "doses": st.one_of(
            st.lists(st.sampled_from(["anti_pd1", "chemo", "anti_pd2", "", "none"]),
                     max_size=3),
            st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=5,
                              max_size=5), min_size=2, max_size=2).map(np.array),
            st.sampled_from([np.ones((2, 4)), np.ones((3, 5)), -np.ones((2, 5)),
                             np.full((2, 5), 1e30)]),
            anything_bad),
        "dt": good_or(st.floats(1.0, 60.0), 0.0, -21.0, 1e30, np.array([21.0]),
                      np.array([21.0, nan]))})

    return [
        ("env", "gym.make", 18, make_strategy, run_make),
        ("env", "env.reset", 14, reset_strategy, run_reset),
        ("env", "env.step", 20, step_strategy, run_step),
        ("env", "load_scenario_file", 10, toml_strategy, run_toml),
        ("planning", "parse_plan", 8, plan_strategy, run_plan),
        ("planning", "parse_therapy_set", 4, st.one_of(regimen_text, anything_bad), run_set),
        ("sim", "run_trial", 5, trial_strategy, run_trial_),
        ("ontology", "harmonize_labels", 8, harmonize_strategy, run_harmonize),
        ("data", "setup_anndata", 6, setup_strategy, run_setup),
        ("world_model", "world_model.load", 2, load_strategy, run_load),
        ("world_model", "WorldModel.predict", 5, predict_strategy, run_predict),
    ]


def _toml(drawn: dict[str, Any]) -> str:
    """A TOML document from a drawn ``{"id", "simulator", "sections"}``."""
    lines = [f"id = {_toml_value(drawn['id'])}", f"simulator = {_toml_value(drawn['simulator'])}"]
    for section, table in drawn["sections"].items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        else:
            lines.insert(0, f"{section} = {_toml_value(table)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def _tiny_adata(n_cells: int, column: str, values: str) -> Any:
    """A small AnnData with the default obs columns, one of them spoiled by ``values``."""
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame({
        "patient": [f"p{i % 2}" for i in range(n_cells)],
        "sample": [f"s{i % 2}" for i in range(n_cells)],
        "cell_type": ["CD8.c12.Tex.CXCL13", "Macro_SPP1", "B cells"][:1] * n_cells,
        "time": [0.0] * n_cells,
    }, index=[f"c{i}" for i in range(n_cells)])
    if n_cells:
        spoiled = {"nan": [np.nan] * n_cells, "int": list(range(n_cells)),
                   "empty": [""] * n_cells, "mixed": [1, "a"] * (n_cells // 2) +
                   [None] * (n_cells % 2), "ok": obs[column].tolist()}[values]
        obs[column] = spoiled
    return ad.AnnData(X=np.ones((n_cells, 3), dtype=np.float32), obs=obs)


def _tiny_timelines() -> Any:
    """Day-0 timelines of two patients (for ``predict``)."""
    from immunegym.ontology import FINE_TYPES
    from immunegym.world_model.timelines import baseline_timelines

    comp = np.full((2, len(FINE_TYPES)), 1.0 / len(FINE_TYPES))
    return baseline_timelines(comp, np.array([40.0, 80.0]), ["a", "b"],
                              cancer_type="melanoma", programs=())


def _fuzz_api(n_api_calls: int, seed: int, report: _Report, model: Any) -> None:
    """The API part: ``n_api_calls`` calls split over the targets by weight."""
    if n_api_calls <= 0:
        return
    try:
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import seed as hypothesis_seed
    except ImportError:  # pragma: no cover - hypothesis is a dev dependency
        raise ImportError("run_fuzz's API part needs hypothesis: pip install hypothesis "
                          "(or pass n_api_calls=0)") from None
    with tempfile.TemporaryDirectory(prefix="immunegym-fuzz-") as tmp:
        targets = _strategies(Path(tmp), model)
        total = sum(weight for _, _, weight, _, _ in targets)
        budgets = [max(1, round(n_api_calls * w / total)) for _, _, w, _, _ in targets]
        # Exactly n_api_calls in all (the largest share absorbs the rounding).
        budgets[int(np.argmax(budgets))] += n_api_calls - sum(budgets)
        for (_room, _name, _w, strategy, run), budget in zip(targets, budgets, strict=True):
            if budget <= 0:
                continue
            drive = _driver(run, strategy, budget, seed, report,
                            (HealthCheck, Phase, given, settings, hypothesis_seed))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                drive()


def _driver(run: Callable, strategy: Any, budget: int, seed: int, report: _Report,
            hyp: tuple) -> Callable[[], None]:
    """A Hypothesis-driven function calling ``run`` on ``budget`` drawn examples; it never
    fails (every outcome is recorded), so Hypothesis just generates, seeded by ``seed``."""
    health_check, phase, given, settings, hypothesis_seed = hyp

    @hypothesis_seed(seed)
    @settings(max_examples=budget, database=None, deadline=None, phases=[phase.generate],
              suppress_health_check=list(health_check), derandomize=False, print_blob=False)
    @given(strategy)
    def drive(drawn: Any) -> None:
        run(drawn, report)

    return drive


@functools.cache
def _pretrained() -> Any:
    """The pretrained world model, loaded once per process (the envs never modify it)."""
    from immunegym.world_model import load

    return load()


def run_fuzz(n_env_steps: int = 1_000_000, n_api_calls: int = 2_000, seed: int = 0) -> dict:
    """Fuzz the environments with random steps and the public API with random arguments.

    Parameters
    ----------
    n_env_steps
        Env-steps of the step part (``0..10**9``; about 20-30k per second on one CPU core).
    n_api_calls
        Calls of the API part (``0..10**6``).
    seed
        Seed of the actions and of Hypothesis (the same seed gives the same run).

    Returns
    -------
    dict
        JSON-able: ``env_steps``, ``api_calls``, ``crashes`` (env steps or builds that
        raised or returned malformed output), ``nans`` (env rows with a non-finite value
        plus API calls with a non-finite output; ``env_nans``: the env rows alone),
        ``out_of_space`` (env rows whose
        observation is outside the single observation space), ``unclear_errors`` (API calls
        that raised something other than :class:`~immunegym.validation.ValidationError`),
        ``hangs`` (API calls interrupted after :data:`CALL_TIMEOUT_S`), ``examples`` (up to
        20 failures: call, exception type, message), ``rooms`` (per room of the package:
        ``calls``, ``refused``, ``unclear_errors``, ``nans``, ``hangs``), ``seconds``,
        ``env_steps_per_second`` and ``machine``.
    """
    n_env_steps = integer("n_env_steps", n_env_steps, low=0, high=MAX_ENV_STEPS)
    n_api_calls = integer("n_api_calls", n_api_calls, low=0, high=MAX_API_CALLS)
    seed = check_seed("seed", seed)
    report = _Report()
    start = time.perf_counter()
    model = _pretrained() if n_env_steps or n_api_calls else None
    env_start = time.perf_counter()
    _fuzz_envs(n_env_steps, seed, report, model)
    env_seconds = time.perf_counter() - env_start
    _fuzz_api(n_api_calls, seed, report, model)
    rooms = {name: vars(room).copy() for name, room in sorted(report.rooms.items())}
    api_nans = sum(r.nans for r in report.rooms.values())
    return {
        "env_steps": report.env_steps,
        "api_calls": sum(r.calls for r in report.rooms.values()),
        "crashes": report.crashes,
        "nans": report.nans + api_nans,
        "env_nans": report.nans,
        "out_of_space": report.out_of_space,
        "unclear_errors": sum(r.unclear_errors for r in report.rooms.values()),
        "hangs": sum(r.hangs for r in report.rooms.values()),
        "examples": list(report.examples),
        "rooms": rooms,
        "seconds": round(time.perf_counter() - start, 3),
        "env_steps_per_second": round(report.env_steps / env_seconds, 1) if env_seconds > 0
        and report.env_steps else 0.0,
        "machine": f"{platform.platform()}; {platform.processor() or platform.machine()}; "
                   f"{os.cpu_count()} CPUs",
    }
