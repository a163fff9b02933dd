"""Environment throughput: env-steps/s of the native vector envs, and a per-process reference.

Each configuration runs in a fresh Python process (``python -m
immunegym.benchmarks.env_speed '{json}'``) so that its peak resident memory is its own. A
configuration builds the vector env (one patient bank shared by all envs), resets it, takes
one warm-up step and times ``steps`` steps of random actions, autoresets included. The
reference is Gymnasium's ``SyncVectorEnv`` over single envs (the same bank and model
objects), i.e. what a generic per-process wrapper achieves. Timing covers whole episodes
(a multiple of the horizon from reset), so resets are counted at their real share. FLOPs of
the world model per env-step are counted with ``torch.utils.flop_counter`` over a whole
episode too.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from immunegym import validation as v

ENV_IDS: dict[str, str] = {"world": "ImmuneWorld-v0", "sim": "ImmuneSim-v0"}
MAX_ENVS = 10_000_000
MAX_SYNC_ENVS = 4_096
"""SyncVectorEnv steps single envs one by one (~70 env-steps/s for ImmuneSim): beyond a few
thousand a configuration would run for hours, so larger references are refused."""
ENV_BYTES_PER_ENV = 16_000
"""Peak bytes per native env (~8 kB measured at 65,536 envs, doubled for margin)."""


def check_env_speed(num_envs: Sequence[int], sync_envs: Sequence[int], *,
                    fields: tuple[str, str] = ("num_envs", "sync_envs")) -> None:
    """Refuse vector sizes :func:`env_speed` cannot run (range, memory), before any work."""
    for field, sizes, high in ((fields[0], num_envs, MAX_ENVS),
                               (fields[1], sync_envs, MAX_SYNC_ENVS)):
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
            raise v.bad(field, sizes, "a list of env counts")
        for n in sizes:
            v.integer(field, n, low=1, high=high)
            v.memory_budget(field, n, n * ENV_BYTES_PER_ENV, "the vector env")
    if not num_envs and not sync_envs:
        raise v.bad(fields[0], list(num_envs), "at least one env count")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(kind: str, n: int, *, vectorizer: str = "native", device: str = "cpu",
            target_env_steps: int = 2_000, max_episodes: int = 10,
            max_env_steps: int = 150_000, seed: int = 0,
            world_options: dict | None = None) -> dict[str, Any]:
    """Time one configuration in this process (see the module docstring).

    Times ``k`` horizons of steps from a fresh reset, ``k`` in ``1..max_episodes`` chosen to
    reach ``target_env_steps``; but at most ``max_env_steps`` env-steps, so very large
    batches time only the first steps of their episodes (``"whole_episodes": false``).
    """
    import gymnasium as gym
    import numpy as np
    import torch

    import immunegym  # noqa: F401  (registers the ids)
    from immunegym.env.patients import PatientBank
    from immunegym.env.scenario import Scenario

    scenario = Scenario()
    bank = PatientBank.from_sim(scenario.cancer_types, scenario.bank_size,
                                seed=scenario.bank_seed, device=device)
    model = None
    if kind == "world":
        from immunegym.world_model import load

        model = load(device=device)
    rss_before = _rss_mb()
    start = time.perf_counter()
    if vectorizer == "native":
        env = gym.make_vec(ENV_IDS[kind], num_envs=n, vectorization_mode="vector_entry_point",
                           device=device, model=model, bank=bank,
                           world_options=world_options if kind == "world" else None)
    else:
        env = gym.vector.SyncVectorEnv([
            lambda: gym.make(ENV_IDS[kind], device=device, model=model, bank=bank)
            for _ in range(n)])
    env.reset(seed=seed)
    build = time.perf_counter() - start
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(4)]
    env.step(actions[0])  # warm-up (first-call allocations), then a fresh start
    env.reset(seed=seed)
    horizon = scenario.horizon
    steps = horizon * max(1, min(max_episodes, math.ceil(target_env_steps / (n * horizon))))
    steps = max(1, min(steps, max_env_steps // n))
    rng = np.random.default_rng(seed)
    if device != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        env.step(actions[int(rng.integers(len(actions)))])
    if device != "cpu":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    row: dict[str, Any] = {
        "simulator": kind, "env_id": ENV_IDS[kind], "vectorizer": vectorizer, "num_envs": n,
        "device": device, "steps": steps, "whole_episodes": steps % horizon == 0,
        "seconds": elapsed,
        "env_steps_per_s": n * steps / elapsed, "build_and_reset_seconds": build,
        "rss_growth_mb": _rss_mb() - rss_before, "peak_rss_mb": _peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
    }
    if vectorizer == "native":
        engine = env.unwrapped.engine
        row["state_bytes_per_env"] = engine.memory_bytes() / n
    if device != "cpu":
        row["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
    env.close()
    return row


def world_model_flops(n: int = 64, seed: int = 0) -> float:
    """Model FLOPs per env-step of ImmuneWorld, averaged over whole 16-cycle episodes
    (the reset's filter pass included)."""
    import numpy as np
    from torch.utils.flop_counter import FlopCounterMode

    from immunegym.env.vector import ImmuneWorldVectorEnv

    env = ImmuneWorldVectorEnv(n, bank_size=64, terminate_on_progression=False)
    zeros = np.zeros((n, 5), dtype=np.int64)
    counter = FlopCounterMode(display=False)
    with counter:
        env.reset(seed=seed)
        for _ in range(env.scenario.horizon):
            env.step(zeros)
    return counter.get_total_flops() / (n * env.scenario.horizon)


def _in_subprocess(config: dict[str, Any], timeout: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "immunegym.benchmarks.env_speed",
                          json.dumps(config)], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark {config} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def env_speed(num_envs: Sequence[int] = (1, 256, 4096, 65_536),
              sync_envs: Sequence[int] = (1, 256), device: str = "cpu",
              timeout: float = 1800.0, on_row=None) -> dict[str, Any]:
    """Every configuration, each in its own process; returns the JSON-ready results.

    Parameters
    ----------
    num_envs
        Vector sizes for the native envs of both simulators.
    sync_envs
        Sizes for the ``SyncVectorEnv`` reference (single envs stepped one by one).
    device
        ``"cpu"`` or ``"cuda"``.
    on_row
        Called with each result row as it arrives (progress).
    """
    from immunegym.benchmarks.speed import machine_info, matmul_peak

    check_env_speed(num_envs, sync_envs)
    device = v.device("device", device)
    v.number("timeout", timeout, low=0, low_open=True)
    rows = []
    configs = [{"kind": k, "n": n, "vectorizer": "native", "device": device}
               for n in num_envs for k in ("world", "sim")]
    configs += [{"kind": k, "n": n, "vectorizer": "sync", "device": device}
                for n in sync_envs for k in ("world", "sim")]
    for config in configs:
        row = _in_subprocess(config, timeout)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    per_step = world_model_flops()
    peak = matmul_peak(device=device)
    for row in rows:
        if row["simulator"] == "world" and row["vectorizer"] == "native":
            row["model_flops_per_env_step"] = per_step
            row["fraction_of_matmul_peak"] = row["env_steps_per_s"] * per_step / peak
    return {"benchmark": "env_speed", "device": device, "results": rows,
            "world_model_flops_per_env_step": per_step, "matmul_peak_flops_per_s": peak,
            "machine": machine_info()}


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    result = run_one(spec["kind"], spec["n"], vectorizer=spec.get("vectorizer", "native"),
                     device=spec.get("device", "cpu"))
    print(json.dumps(result))
