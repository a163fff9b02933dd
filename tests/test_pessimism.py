"""Risk-aware scoring: a plan scores mean - pessimism x std over its samples (the ensemble
members in the world model), threaded through scorer_for, the planners and their Args."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from immunegym.data.vocab import THERAPIES
from immunegym.validation import ValidationError

R = len(THERAPIES)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """Tiny batches: intra-op threads only add contention on a busy 2-core machine."""


@pytest.fixture(scope="module")
def model():
    from immunegym.world_model import load

    return load()


@pytest.fixture(scope="module")
def start():
    from immunegym.planning.evaluate import episode_start, leaderboard_scenario, make_env

    scenario = leaderboard_scenario(horizon=2, n_patients=3)
    env = make_env("sim", scenario, 3)
    obs, infos = env.reset(seed=0, options={"patient": np.arange(3)})
    out = episode_start(env, obs, infos)
    env.close()
    return out


def _plans(n: int, horizon: int) -> np.ndarray:
    """No therapy, anti-PD-1 + anti-CTLA-4, chemotherapy."""
    plans = np.zeros((n, 3, horizon, R), dtype=np.float32)
    plans[:, 1, :, :2] = 1.0
    plans[:, 2, :, 2] = 1.0
    return plans


def test_zero_pessimism_is_the_plain_mean(start, model) -> None:
    from immunegym.planning.scoring import scorer_for

    default, rows = scorer_for(start, "world", model=model)
    zero, _ = scorer_for(start, "world", model=model, pessimism=0.0)
    risky, _ = scorer_for(start, "world", model=model, pessimism=1.0)
    assert default.pessimism == 0.0 and risky.pessimism == 1.0
    plans = _plans(len(rows), 2)
    mean = default(rows, plans)
    np.testing.assert_array_equal(zero(rows, plans), mean)
    # The mean over members, as before pessimism existed (sample-major rows).
    returns = default._returns(np.repeat(rows, 3), plans.reshape(-1, 2, R))
    assert returns.shape == (len(model.members), 3 * len(rows))
    np.testing.assert_allclose(mean.ravel(), returns.mean(0).numpy(), rtol=0, atol=0)
    # k = 1 subtracts the members' (population) standard deviation.
    spread = returns.std(0, correction=0).numpy().reshape(mean.shape)
    np.testing.assert_allclose(risky(rows, plans), mean - spread, rtol=1e-5, atol=1e-5)
    assert (spread > 0).any(), "the members never disagreed: the test checks nothing"


def test_a_plan_the_members_disagree_on_loses_rank(start, model, monkeypatch) -> None:
    from immunegym.planning.scoring import EngineScorer, belief_bank

    bank = belief_bank(start.cancer_type, start.composition, start.sod_mm, start.patient_id)

    def returns(self, patients, plans):
        # Plan "safe" (no anti-PD-1): 1.0 for both members; plan "bold": 0.4 or 2.0 (a
        # higher mean, 1.2, but a spread of 0.8).
        bold = torch.as_tensor(plans[:, 0, 0] > 0)
        return torch.stack([torch.where(bold, 0.4, 1.0), torch.where(bold, 2.0, 1.0)])

    monkeypatch.setattr(EngineScorer, "_returns", returns)
    plans = np.zeros((1, 2, 2, R), dtype=np.float32)
    plans[0, 1, :, 0] = 1.0  # candidate 1 is bold
    values = {k: EngineScorer("world", start.scenario, bank, model=model, n_samples=2,
                              pessimism=k)(np.array([0]), plans)[0] for k in (0.0, 0.2, 1.0)}
    np.testing.assert_allclose(values[0.0], [1.0, 1.2], rtol=1e-6)
    assert values[0.0].argmax() == 1  # the mean prefers the bold plan
    assert values[0.2].argmax() == 1  # 1.2 - 0.16 still beats 1.0
    np.testing.assert_allclose(values[1.0], [1.0, 0.4], rtol=1e-6)
    assert values[1.0].argmax() == 0  # a pessimist prefers the safe one


@pytest.mark.parametrize("value", [-0.5, -1, float("nan"), float("inf"), "1", True, None])
def test_bad_pessimism_is_refused_everywhere(start, model, value) -> None:
    from agents import beam as beam_agent
    from agents import cem as cem_agent
    from immunegym.planning.scoring import EngineScorer, belief_bank, scorer_for

    bank = belief_bank(start.cancer_type, start.composition, start.sod_mm, start.patient_id)
    calls = [
        lambda: EngineScorer("world", start.scenario, bank, model=model, pessimism=value),
        lambda: scorer_for(start, "sim", pessimism=value),
        lambda: cem_agent.CEMPlanner("world", model=model, pessimism=value),
        lambda: beam_agent.TreePlanner("world", model=model, pessimism=value),
        lambda: cem_agent.Args(pessimism=value),
        lambda: beam_agent.Args(pessimism=value),
    ]
    for call in calls:
        with pytest.raises(ValidationError, match="pessimism.*finite number >= 0"):
            call()


def test_planners_pass_pessimism_to_their_scorer(start, model, monkeypatch) -> None:
    import agents.beam as beam_agent
    import agents.cem as cem_agent

    for module, planner in (
            (cem_agent, cem_agent.CEMPlanner("world", model=model, population=2,
                                             iterations=1, n_samples=2, pessimism=1.5)),
            (beam_agent, beam_agent.TreePlanner("world", method="exhaustive", model=model,
                                                n_samples=2, pessimism=1.5))):
        seen = []
        real = module.scorer_for

        def spy(*args, real=real, seen=seen, **kwargs):
            out = real(*args, **kwargs)
            seen.append(out[0])
            return out

        monkeypatch.setattr(module, "scorer_for", spy)
        planner.start(start)
        assert [s.pessimism for s in seen] == [1.5], module.__name__
        assert planner.plans.shape == (3, 2, R)
