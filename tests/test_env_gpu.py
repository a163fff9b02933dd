"""GPU path of the vector envs: runs when CUDA is present, reported as skipped otherwise."""

import numpy as np
import pytest
import torch

from immunegym.env.patients import PatientBank
from immunegym.env.vector import ImmuneSimVectorEnv, ImmuneWorldVectorEnv

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.mark.parametrize("cls", [ImmuneWorldVectorEnv, ImmuneSimVectorEnv])
def test_cuda_vector_env_runs_and_returns_numpy(cls):
    env = cls(512, device="cuda", bank_size=64, horizon=4)
    obs, info = env.reset(seed=0)
    assert env.engine.device.type == "cuda"
    rewards = []
    for _ in range(8):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert isinstance(obs, np.ndarray) and env.observation_space.contains(obs)
        rewards.append(reward)
    assert np.isfinite(np.stack(rewards)).all()


def test_cuda_world_model_matches_cpu_predictions():
    """Mean (noise-free) world-model steps agree between devices to float tolerance."""
    bank = PatientBank.from_sim({"melanoma": 1.0}, 16, seed=0)
    kwargs = {"bank": bank, "horizon": 4, "observation_noise": False,
              "terminate_on_progression": False, "world_options": {"sample": False}}
    cpu = ImmuneWorldVectorEnv(16, **kwargs)
    gpu = ImmuneWorldVectorEnv(16, device="cuda", **kwargs)
    patients = list(range(16))
    a, _ = cpu.reset(seed=0, options={"patient": patients})
    b, _ = gpu.reset(seed=0, options={"patient": patients})
    # Chemotherapy: no irAE draws, whose streams differ between devices, change the doses.
    action = np.tile([0, 0, 2, 0, 0], (16, 1))
    for _ in range(3):
        a = cpu.step(action)[0]
        b = gpu.step(action)[0]
    comp = cpu._parts.observations.slices["composition"]
    np.testing.assert_allclose(a[:, comp], b[:, comp], atol=1e-3)
