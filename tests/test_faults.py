"""Fault tolerance: distributed work survives a worker killed mid-run.

* RLlib PPO with two remote env runners keeps training when one runner's actor is killed,
  and RLlib restarts the runner (:func:`immunegym.env.adapters.rllib.ppo_config` sets the
  fault-tolerance options).
* ``make_suite(..., use_ray=True)`` retries a cohort task whose worker process was killed;
  every cohort is written, identical to a serial run, and no temporary file is left.

Both start Ray and take a minute or more: ``pytest -m slow tests/test_faults.py``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings(
    "ignore:.*Overriding environment rllib-single-agent-env-v0")]


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (from /proc: only processes this test's Ray started)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# --------------------------------------------------------------------------- RLlib
def test_rllib_training_survives_a_killed_env_runner():
    pytest.importorskip("ray.rllib")
    from immunegym.env.adapters.rllib import ppo_config

    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    algo = None
    try:
        config = ppo_config(num_env_runners=2, num_envs_per_env_runner=2,
                            env_config={"horizon": 4, "bank_size": 16}, restart_delay_s=0.5,
                            train_batch_size_per_learner=64, minibatch_size=32, num_epochs=1)
        algo = config.build_algo()
        group = algo.env_runner_group
        assert group.num_healthy_remote_workers() == 2
        first = algo.train()
        steps_before = first["env_runners"]["num_env_steps_sampled_lifetime"]

        _, victim = sorted(group._worker_manager.actors().items())[0]
        # A crash, as Ray sees it: the actor's process dies; Ray brings the actor back
        # (RLlib created it with max_restarts) and RLlib's probe restores its state.
        ray.kill(victim, no_restart=False)

        steps, iterations = steps_before, 0
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            result = algo.train()
            iterations += 1
            steps = result["env_runners"]["num_env_steps_sampled_lifetime"]
            recovered = (group.num_healthy_remote_workers() == 2
                         and group.num_remote_worker_restarts() >= 1)
            if iterations >= 3 and recovered:
                break
        assert iterations >= 3, "training iterations must keep completing"
        assert steps > steps_before, "env steps must keep increasing after the kill"
        assert group.num_remote_worker_restarts() >= 1, "the killed runner was not restarted"
        assert group.num_healthy_remote_workers() == 2, "the runner count did not recover"
        # and the restarted runner samples again
        sampled = group.foreach_env_runner(lambda r: sum(len(e) for e in r.sample(
            num_timesteps=8)), local_env_runner=False)
        assert len(sampled) == 2 and min(sampled) >= 8
    finally:
        if algo is not None:
            algo.stop()
        ray.shutdown()


# --------------------------------------------------------------------------- make-suite
def _kill_first_cohort_worker(stop: threading.Event, killed: list[int]) -> None:
    """Kill (SIGKILL) the first Ray worker seen running a cohort task."""
    me = os.getpid()
    while not stop.is_set() and not killed:
        for pid in _descendants(me):
            if "ray::_write_one" in _cmdline(pid):
                # let it get into the simulation (and maybe the write) first
                time.sleep(0.5)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed.append(pid)
                return
        time.sleep(0.05)


def test_make_suite_on_ray_survives_a_killed_worker(tmp_path):
    import anndata as ad

    from immunegym.sim.suite import make_suite, suite_specs

    specs = suite_specs(n_patients=12, horizon_days=200,
                        names=["melanoma_pd1_zheng", "rcc_pd1_zheng", "nsclc_pd1_macro"])
    serial = make_suite(tmp_path / "serial", specs)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_cohort_worker, args=(stop, killed))
    killer.start()
    try:
        on_ray = make_suite(tmp_path / "ray", specs, use_ray=True)
    finally:
        stop.set()
        killer.join()
        ray.shutdown()
    assert killed, "no cohort worker was seen to kill (the test did not test anything)"

    assert json.loads(on_ray.read_text()) == json.loads(serial.read_text())
    for spec in specs:
        a = ad.read_h5ad(tmp_path / "serial" / f"{spec.name}.h5ad")
        b = ad.read_h5ad(tmp_path / "ray" / f"{spec.name}.h5ad")
        assert a.obs.equals(b.obs) and a.var.equals(b.var)
        assert (a.X != b.X).nnz == 0 if hasattr(a.X, "nnz") else np.array_equal(a.X, b.X)
        truth = f"{spec.name}.truth.safetensors"
        assert (tmp_path / "ray" / truth).read_bytes() == \
            (tmp_path / "serial" / truth).read_bytes()
    leftovers = [p.name for p in (tmp_path / "ray").iterdir() if p.name.startswith(".")]
    assert leftovers == [], "a killed attempt's temporary files must be cleaned up"
