"""The envs' clinical layer on ImmuneSim's toxicity model, in both simulators.

Everything at the top dose every cycle is toxic: grade >= 3 events, holds, stops, delays,
reductions and neutropenia show up in the infos; the action mask follows the stops; the same
seed replays the same infos; a treatment-related death ends the episode; radiotherapy takes
the irradiated lesion out of the RECIST target sum. Banks of 32 patients, 4 cycles.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch

import immunegym  # noqa: F401  (registers the ids)
from immunegym.data.vocab import THERAPIES
from immunegym.env.patients import PatientBank
from immunegym.env.vector import ImmuneSimVectorEnv, ImmuneWorldVectorEnv
from immunegym.sim.parameters import load_parameters
from immunegym.sim.toxicity import ALIVE, IRAE_DEATH, TUMOR_DEATH

N, HORIZON = 32, 4
SIMULATORS = ("world", "sim")
VECTOR = {"world": ImmuneWorldVectorEnv, "sim": ImmuneSimVectorEnv}
PD1, CTLA4, CHEMO, RADIO, TARGETED = range(len(THERAPIES))
TOP = 2  # action index of the top dose level (1.0 standard doses)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """Tiny batches: one torch thread is fastest and leaves a core to the machine."""


@functools.cache
def _model():
    """The pretrained world model, loaded once (envs never modify it)."""
    from immunegym.world_model import load

    return load()


def _env(simulator: str, n: int = N, **kwargs):
    kwargs = {"horizon": HORIZON, "bank_size": N, "terminate_on_progression": False,
              **kwargs}
    if simulator == "world":
        kwargs.setdefault("model", _model())
    return VECTOR[simulator](n, **kwargs)


def _run(env, action: np.ndarray, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Reset on bank rows ``0..n-1`` and step ``action`` every cycle; the infos, reset's
    first (episodes end together, at the horizon, unless a patient dies)."""
    obs, info = env.reset(seed=seed, options={"patient": np.arange(env.num_envs)})
    infos = [info]
    for _ in range(env.scenario.horizon):
        *_, info = env.step(action)
        infos.append(info)
    return infos


def _everything(n: int = N) -> np.ndarray:
    return np.full((n, len(THERAPIES)), TOP, dtype=np.int64)


def _live(infos: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Per step, rows that stepped in their first episode (not dead before the step)."""
    alive = np.ones(len(infos[0]["patient"]), dtype=bool)
    rows = []
    for info in infos[1:]:
        rows.append(alive.copy())
        alive &= ~info["died"]
    return rows


# ============================================================================ (a) toxicity
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_everything_at_the_top_dose_is_toxic(simulator):
    env = _env(simulator)
    infos = _run(env, _everything())
    live = _live(infos)
    baseline = env.engine.bank.tox.anc_baseline.numpy()[infos[0]["patient"]]
    np.testing.assert_allclose(infos[0]["neutrophils"], baseline, rtol=1e-6)
    cost = held = discontinued = short = delayed = neutropenic = reduced = 0
    for before, info, rows in zip(infos[:-1], infos[1:], live, strict=True):
        # Doses the mask allowed at the cycle's start, against what the protocol gave.
        allowed = before["action_mask"][..., TOP].astype(np.float32)
        given = info["given"][rows]
        assert np.all(given <= allowed[rows] + 1e-6)
        short += int(np.sum((given < allowed[rows] - 1e-6).any(-1)))
        cost += int(np.sum(info["cost"][rows] > 0))
        held += int(np.sum(info["held"][rows].any(-1)))
        discontinued += int(np.sum(info["discontinued"][rows].any(-1)))
        delayed += int(np.sum(info["delayed"][rows] > 0))
        neutropenic += int(np.sum(info["neutrophils"][rows] < baseline[rows]))
        factor = info["dose_factor"][rows]
        reduced += int(np.sum(factor[:, [CHEMO, TARGETED]] < 1))
        # Only chemotherapy and targeted therapy are reduced, by 25% a step (at most twice).
        assert np.all(factor[:, [PD1, CTLA4, RADIO]] == 1)
        assert np.all(np.isin(factor, np.float32([1.0, 0.75, 0.75**2])))
        # Costs count grade >= 3 events; an irAE is one of them.
        assert np.all(info["cost"][rows] >= info["irae"][rows])
    assert cost > 0, "no grade >= 3 event under every therapy at the top dose"
    assert held > 0 and discontinued > 0, "no therapy held or discontinued"
    assert short > 0, "the protocol gave every allowed dose in full (no delay, hold, stop)"
    assert delayed > 0, "no chemotherapy dose delayed for neutrophils"
    assert reduced > 0, "no dose reduction"
    assert neutropenic > 0, "chemotherapy left every patient's neutrophils at baseline"


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_no_myelosuppression_without_chemotherapy(simulator):
    """anti-PD-1 alone does not touch the marrow: neutrophils stay at baseline."""
    action = np.zeros((N, len(THERAPIES)), dtype=np.int64)
    action[:, PD1] = TOP
    env = _env(simulator)
    infos = _run(env, action)
    baseline = env.engine.bank.tox.anc_baseline.numpy()[infos[0]["patient"]]
    for info, rows in zip(infos[1:], _live(infos), strict=True):
        np.testing.assert_allclose(info["neutrophils"][rows], baseline[rows], rtol=1e-4)
        assert np.all(info["delayed"][rows] == 0)


# ============================================================================ (b) the mask
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_mask_forbids_discontinued_therapies(simulator):
    env = _env(simulator, horizon=6)
    infos = _run(env, _everything())
    stops = 0
    for before, info, rows in zip(infos[:-1], infos[1:], _live(infos), strict=True):
        after = rows & ~info["died"]
        open_ = info["action_mask"][after][..., 1:].any(-1)  # some positive dose allowed
        off = info["discontinued"][after]
        assert not open_[off].any()
        assert not open_[info["held"][after]].any()
        # Discontinued at the cycle's start: nothing of it was given, and it stays stopped.
        was_off = before["discontinued"][rows]
        assert np.all(info["given"][rows][was_off] == 0)
        assert np.all(info["discontinued"][rows] >= was_off)
        stops += int(off.sum())
    assert stops > 0, "no therapy was discontinued; the rule was not exercised"


# ============================================================================ (c) seeds
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_same_seed_same_infos(simulator):
    first = _run(_env(simulator), _everything(), seed=5)
    again = _run(_env(simulator), _everything(), seed=5)
    other = _run(_env(simulator), _everything(), seed=6)
    for a, b in zip(first, again, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    toxicity = ("neutrophils", "toxicity_load", "cost", "given", "held", "discontinued")
    assert any(not np.array_equal(a[k], b[k]) for a, b in zip(first, other, strict=True)
               for k in toxicity), "another seed gave the same toxicity"


# ============================================================================ (d) death
def _toxic_bank(n: int = 8) -> PatientBank:
    """ImmuneSim patients a thousand times as prone to irAEs as the most prone ones."""
    bank = PatientBank.from_sim({}, n, seed=0)
    prone = torch.full_like(bank.sim_patients.irae_susceptibility, 1e4)
    patients = dataclasses.replace(bank.sim_patients, irae_susceptibility=prone)
    return dataclasses.replace(bank, sim_patients=patients, tox=patients.toxicity)


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_treatment_death_terminates(simulator):
    n = 8
    env = _env(simulator, n, bank=_toxic_bank(n), horizon=6)
    env.reset(seed=0, options={"patient": np.arange(n)})
    action = np.zeros((n, len(THERAPIES)), dtype=np.int64)
    action[:, [PD1, CTLA4]] = TOP
    deaths = np.zeros(n, dtype=bool)
    for _ in range(3):
        _, reward, terminated, truncated, info = env.step(action)
        # Autoreset rows (NEXT_STEP) report nothing; the others report their cycle.
        fresh = info["cycle"] == 0
        assert not (info["died"] & fresh).any()
        assert np.all(info["died"][info["treatment_death"]])
        assert np.all(terminated[info["died"]])
        cause = env.engine.tox.death_cause.numpy()
        assert np.all(cause[info["treatment_death"]] >= IRAE_DEATH)
        assert np.all(np.isin(cause[info["died"] & ~info["treatment_death"]],
                              [ALIVE, TUMOR_DEATH]))
        assert np.all(reward[info["died"]] <= -env.scenario.reward.death + 1.0)
        deaths |= info["treatment_death"] & ~fresh
    assert deaths.sum() >= n // 2, "irAEs this frequent should kill most patients"


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_treatment_death_implies_death(simulator):
    env = _env(simulator, horizon=6)
    infos = _run(env, _everything())
    for info in infos:
        assert np.all(info["died"][info["treatment_death"]])


# ============================================================================ (e) RECIST
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_radiotherapy_takes_the_lesion_out_of_the_target_sum(simulator):
    n = 8
    env = _env(simulator, n)
    env.reset(seed=0, options={"patient": np.arange(n)})
    rates = load_parameters().rates
    keep = (1 - rates["radio_field_fraction"]) ** (1 / 3)
    radio = np.arange(n) % 2 == 0
    action = np.zeros((n, len(THERAPIES)), dtype=np.int64)
    action[radio, RADIO] = TOP
    tracker = env.engine.tracker
    before = tracker.baseline.numpy().copy()
    *_, info = env.step(action)
    assert np.all((info["given"][:, RADIO] > 0) == radio)
    expected = np.where(radio, before * keep, before)
    np.testing.assert_allclose(tracker.baseline.numpy(), expected, rtol=1e-6)
    # A second course treats the same lesion: it left the target sum once.
    *_, info = env.step(action)
    assert np.all((info["given"][:, RADIO] > 0) == radio)
    np.testing.assert_allclose(tracker.baseline.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_delayed_chemotherapy_lapses_with_its_cycle(simulator):
    """The action is the cycle's order: a chemotherapy dose still waiting for neutrophils
    at the cycle's end is not given in a next cycle that does not order chemotherapy."""
    env = _env(simulator, horizon=8, cycle_days=7)
    ordered = np.zeros((N, len(THERAPIES)), dtype=np.int64)
    ordered[:, CHEMO] = TOP
    env.reset(seed=0, options={"patient": np.arange(N)})
    late = 0
    for cycle in range(env.scenario.horizon):
        order = cycle % 2 == 0
        *_, info = env.step(ordered if order else 0 * ordered)
        if order:
            # Still waiting at the cycle's end.
            late += int(np.sum(env.engine.tox.pending[:, CHEMO].numpy() > 0))
        else:
            assert np.all(info["given"][:, CHEMO] == 0)
    assert late > 0, "no delay outlived its cycle; the rule was not exercised"
