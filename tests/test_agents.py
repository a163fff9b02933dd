"""The baseline agents: random and standard of care (main, masks, plans, seeding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents import random as random_agent
from agents import standard_of_care as soc
from immunegym.data.vocab import THERAPIES
from immunegym.planning.evaluate import episode_start, leaderboard_scenario, make_env
from immunegym.planning.policy import Policy

RESULT_KEYS = ("return_sim", "orr_sim", "irae_sim", "pfs_median_sim", "death_rate_sim",
               "return_world", "sim_to_real_gap", "sim", "world")
TINY = {"horizon": 2, "eval_patients": 4}
PD1, CTLA4 = THERAPIES.index("anti_pd1"), THERAPIES.index("anti_ctla4")


def _scores(result: dict) -> dict:
    return {k: v for k, v in result.items() if not isinstance(v, dict)}


@pytest.mark.parametrize("module", [random_agent, soc])
def test_main_returns_the_leaderboard_keys_and_repeats_with_the_seed(module,
                                                                     tmp_path: Path) -> None:
    args = module.Args(log_dir=str(tmp_path), seed=3, **TINY)
    result = module.main(args)
    assert set(RESULT_KEYS) <= set(result)
    assert np.isfinite(result["return_sim"]) and np.isfinite(result["return_world"])
    assert 0 <= result["orr_sim"] <= 1 and 0 <= result["irae_sim"] <= 1
    assert result["sim"]["n_patients"] == TINY["eval_patients"]
    assert list(tmp_path.iterdir())  # a TensorBoard run
    assert _scores(module.main(args)) == _scores(result)


def test_agents_follow_the_policy_protocol() -> None:
    assert isinstance(random_agent.RandomAgent(0), Policy)
    assert isinstance(soc.StandardOfCare(), Policy)


def test_random_agent_picks_only_allowed_levels() -> None:
    n, horizon = 16, 8
    scenario = leaderboard_scenario(held_out=False, horizon=horizon, n_patients=32)
    env = make_env("sim", scenario, n)
    obs, infos = env.reset(seed=0)
    agent = random_agent.RandomAgent(seed=0)
    agent.start(episode_start(env, obs, infos))
    masked_seen = False
    for _ in range(2 * horizon):  # crosses autoresets
        mask = np.asarray(infos["action_mask"], dtype=bool)  # (n, R, L)
        actions = agent.act(obs, infos)
        assert actions.shape == (n, len(THERAPIES)) and actions.dtype == np.int64
        chosen = np.take_along_axis(mask, actions[..., None], axis=-1)[..., 0]
        assert chosen.all(), "a masked dose level was picked"
        masked_seen |= not mask.all()
        obs, _, _, _, infos = env.step(actions)
    env.close()
    assert masked_seen, "the test never saw a masked level (radiotherapy caps, irAE holds)"


def test_random_agent_same_seed_same_actions() -> None:
    mask = np.ones((5, len(THERAPIES), 3), dtype=bool)
    mask[:, 3, 1:] = False
    infos = {"action_mask": mask}

    def run(seed: int) -> np.ndarray:
        agent = random_agent.RandomAgent(seed)
        agent.start(None)
        return np.stack([agent.act(None, infos) for _ in range(4)])

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))
    assert (run(1)[..., 3] == 0).all()


def test_standard_of_care_melanoma_is_nivolumab_ipilimumab_x4_then_nivolumab() -> None:
    n, horizon = 4, 6
    scenario = leaderboard_scenario(horizon=horizon, n_patients=n,
                                    cancer_types={"melanoma": 1.0})
    env = make_env("sim", scenario, n)
    obs, infos = env.reset(seed=0, options={"patient": np.arange(n)})
    start = episode_start(env, obs, infos)
    env.close()
    assert (start.cancer_type == "melanoma").all()
    policy = soc.StandardOfCare()
    policy.start(start)
    plans = policy.plans  # (n, H, R) dose multiples
    assert plans.shape == (n, horizon, len(THERAPIES))
    combo = np.zeros(len(THERAPIES))
    combo[[PD1, CTLA4]] = 1.0
    mono = np.zeros(len(THERAPIES))
    mono[PD1] = 1.0
    np.testing.assert_array_equal(plans[:, :4], np.broadcast_to(combo, (n, 4, len(combo))))
    np.testing.assert_array_equal(plans[:, 4:],
                                  np.broadcast_to(mono, (n, horizon - 4, len(mono))))
    # As actions: the full dose (level 2 of 0 / 0.5 / 1) of each planned therapy.
    full = list(scenario.dose_levels).index(1.0)
    for cycle in range(horizon):
        actions = policy.act(obs, {"cycle": np.full(n, cycle)})
        assert (actions[:, PD1] == full).all()
        assert (actions[:, CTLA4] == (full if cycle < 4 else 0)).all()
        others = np.delete(actions, [PD1, CTLA4], axis=1)
        assert (others == 0).all()
