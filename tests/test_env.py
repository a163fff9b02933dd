"""The Gymnasium environments: API conformance, registration, reproducibility, the world
model's latent stepping, robustness to long and random runs, clinical rules, rendering and
the action codecs.

Everything runs on CPU with short horizons and small patient banks.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import math
import tracemalloc
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorWrapper
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import immunegym  # noqa: F401  (registers the ids)
from immunegym.data.vocab import THERAPIES
from immunegym.env import check_vector_env
from immunegym.env.patients import PatientBank
from immunegym.env.registration import BASE_IDS, ENTRY_POINTS, envs_dir, register_envs
from immunegym.env.scenario import ACTION_TYPES, DEFAULT_MENU, Scenario, load_scenario_file
from immunegym.env.single import ImmuneSimEnv, ImmuneWorldEnv
from immunegym.env.spaces import ActionCodec
from immunegym.env.vector import ImmuneSimVectorEnv, ImmuneWorldVectorEnv

SMALL = {"horizon": 4, "bank_size": 32}
SIMULATORS = ("world", "sim")
IDS = {"world": "ImmuneWorld-v0", "sim": "ImmuneSim-v0"}
SINGLE = {"world": ImmuneWorldEnv, "sim": ImmuneSimEnv}
VECTOR = {"world": ImmuneWorldVectorEnv, "sim": ImmuneSimVectorEnv}
PD1, CTLA4, CHEMO, RADIO, TARGETED = (THERAPIES.index(t) for t in
                                      ("anti_pd1", "anti_ctla4", "chemo", "radio", "targeted"))


@functools.cache
def _model():
    """The pretrained world model, loaded once and shared (envs never modify it)."""
    from immunegym.world_model import load

    return load()


def _single(simulator: str, **kwargs) -> ImmuneWorldEnv:
    kwargs = {**SMALL, **kwargs}
    if simulator == "world":
        kwargs.setdefault("model", _model())
    return SINGLE[simulator](**kwargs)


def _vector(simulator: str, n: int, **kwargs) -> ImmuneWorldVectorEnv:
    kwargs = {**SMALL, **kwargs}
    if simulator == "world":
        kwargs.setdefault("model", _model())
    return VECTOR[simulator](n, **kwargs)


def _allowed_from_mask(mask: np.ndarray, action_type: str, menu=DEFAULT_MENU) -> np.ndarray:
    """``(..., 5)`` therapies an action mask lets through (any positive dose)."""
    if action_type == "multidiscrete":
        return mask[..., 1:].any(-1)
    if action_type == "multibinary":
        return mask.astype(bool)
    needs = ActionCodec(Scenario(action_type="menu", menu=menu)).menu_doses > 0  # (M, 5)
    # A therapy is allowed when some allowed regimen contains it.
    return np.any(mask[..., :, None] & needs, axis=-2)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The envs here step a few rows at a time: intra-op threads only add contention (on a
    busy 2-core machine they made tiny matmuls ~7x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _time(obs: np.ndarray, env) -> np.ndarray:
    return obs[..., env.unwrapped._parts.observations.slices["time"]]


# ============================================================================ API conformance
@pytest.mark.parametrize("action_type", ACTION_TYPES)
@pytest.mark.parametrize("observation_type", ["flat", "dict"])
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_gymnasium_check_env(simulator, observation_type, action_type):
    env = gym.make(IDS[simulator], observation_type=observation_type,
                   action_type=action_type, **SMALL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    complaints = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert not complaints, complaints
    kind = {"multidiscrete": gym.spaces.MultiDiscrete, "multibinary": gym.spaces.MultiBinary,
            "menu": gym.spaces.Discrete}[action_type]
    assert isinstance(env.action_space, kind)
    obs_kind = gym.spaces.Box if observation_type == "flat" else gym.spaces.Dict
    assert isinstance(env.observation_space, obs_kind)


@pytest.mark.parametrize(("simulator", "options"), [
    ("world", {"observation_type": "flat", "action_type": "multidiscrete"}),
    ("world", {"observation_type": "dict", "action_type": "menu"}),
    ("sim", {"observation_type": "flat", "action_type": "multibinary"}),
    ("sim", {"observation_type": "dict", "action_type": "multidiscrete"}),
])
def test_check_vector_env(simulator, options):
    def env_fn(**kw):
        return gym.make_vec(IDS[simulator], num_envs=3, **SMALL, **options, **kw)

    check_vector_env(env_fn, n_steps=24, seed=3)


class _Broken(VectorWrapper):
    """A vector env with one defect, to check that :func:`check_vector_env` notices it."""

    def __init__(self, env, how: str) -> None:
        super().__init__(env)
        self.how = how
        self.rng = np.random.default_rng()
        if how == "metadata":
            self.metadata = {**env.metadata, "autoreset_mode": AutoresetMode.NEXT_STEP}
        if how == "space":
            self.observation_space = env.single_observation_space

    def reset(self, **kwargs):
        obs, infos = self.env.reset(**kwargs)
        if self.how == "nan":
            obs = obs.copy()
            obs[0, 0] = np.nan
        return obs, infos

    def step(self, actions):
        obs, reward, terminated, truncated, infos = self.env.step(actions)
        if self.how == "reward":
            reward = reward + 1.0
        elif self.how == "nondeterministic":
            infos = {**infos, "sod_mm": infos["sod_mm"] + self.rng.normal(size=reward.shape)}
        elif self.how == "outside":
            obs = obs * 10.0
        elif self.how == "dtype":
            terminated = terminated.astype(np.int64)
        elif self.how == "mask":
            infos = {**infos, "action_mask": infos["action_mask"][..., 0]}
        elif self.how == "final_obs":
            infos = {k: v for k, v in infos.items() if k != "final_obs"}
        elif self.how == "stale_reset":
            # Claims SAME_STEP but hands back the final observation instead of the reset one.
            if "final_obs" in infos:
                obs = obs.copy()
                for i in np.flatnonzero(infos["_final_obs"]):
                    obs[i] = infos["final_obs"][i]
        return obs, reward, terminated, truncated, infos


@pytest.mark.parametrize(("how", "message"), [
    ("reward", "reward"),
    ("metadata", "autoreset_mode"),
    ("nan", "observation"),
    ("outside", "not in observation_space"),
    ("dtype", "terminated has dtype"),
    ("mask", "action_mask"),
    ("final_obs", "final_obs"),
    ("stale_reset", "new episode's first observation"),
    ("nondeterministic", r"infos\['sod_mm'\] differ"),
    ("space", "batch_space"),
])
def test_check_vector_env_catches_defects(how, message):
    def env_fn(**kw):
        return _Broken(_vector("world", 3, horizon=2, **kw), how)

    with pytest.raises(AssertionError, match=message):
        check_vector_env(env_fn, n_steps=6, seed=0)


def test_check_vector_env_needs_an_episode_end():
    with pytest.raises(AssertionError, match="no episode ended"):
        check_vector_env(lambda **kw: _vector("world", 2, horizon=8, **kw), n_steps=3)


# ============================================================================ registration
def test_registered_ids_have_native_vector_envs():
    files = sorted(envs_dir().glob("*.toml"))
    assert files, f"no scenario files in {envs_dir()}"
    expected = dict(BASE_IDS)
    for path in files:
        spec_file = load_scenario_file(path)
        expected[spec_file.id] = spec_file.simulator
    for env_id, simulator in expected.items():
        assert env_id in gym.registry, env_id
        spec = gym.spec(env_id)
        assert spec.entry_point == ENTRY_POINTS[simulator][0]
        assert spec.vector_entry_point == ENTRY_POINTS[simulator][1]
    assert register_envs() == []  # importing again registers nothing twice


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_make_vec_returns_native_class(simulator):
    env = gym.make_vec(IDS[simulator], num_envs=3, **SMALL)
    assert type(env) is VECTOR[simulator]
    assert not isinstance(env, SyncVectorEnv)
    assert env.num_envs == 3
    obs, info = env.reset(seed=0)
    assert obs.shape == (3, *env.single_observation_space.shape)


def test_make_kwargs_override_scenario_fields():
    env = gym.make("ImmuneWorld-Melanoma-v0", horizon=5, bank_size=16, action_type="menu")
    sc = env.unwrapped.scenario
    assert (sc.horizon, sc.bank_size, sc.action_type) == (5, 16, "menu")
    assert sc.cancer_types == {"melanoma": 1.0}  # the file's settings survive
    assert set(env.unwrapped.engine.bank.cancer_type) == {"melanoma"}
    venv = gym.make_vec("ImmuneSim-Melanoma-v0", num_envs=2, horizon=3, bank_size=8)
    assert (venv.scenario.horizon, venv.scenario.bank_size) == (3, 8)
    assert venv.scenario.cancer_types == {"melanoma": 1.0}
    menu = gym.make("ImmuneWorld-NSCLC-Menu-v0", bank_size=8, reward={"toxicity": 2.0})
    assert menu.unwrapped.scenario.reward.toxicity == 2.0
    assert isinstance(menu.action_space, gym.spaces.Discrete)


GOOD_TOML = """\
id = "Test-Env-v0"
simulator = "sim"
[patients]
bank_size = 8
[episode]
horizon = 3
"""


@pytest.mark.parametrize(("text", "expected"), [
    (GOOD_TOML + "[bogus]\nx = 1\n", ["[bogus]"]),
    (GOOD_TOML.replace("horizon = 3", "horizn = 3"), ["[episode]", "horizn"]),
    (GOOD_TOML.replace('"Test-Env-v0"', '"TestEnv"'), ["id", "TestEnv"]),
    (GOOD_TOML.replace('"sim"', '"mechanistic"'), ["simulator", "mechanistic"]),
    (GOOD_TOML.replace("horizon = 3", "horizon = 0"), ["horizon", "0"]),
    (GOOD_TOML + "[reward]\ntumour = 1.0\n", ["reward", "tumour"]),
    (GOOD_TOML + "[reward]\ntumor = \"big\"\n", ["reward.tumor"]),
    (GOOD_TOML + "[observation]\nimaging_cv = 3.0\n", ["imaging_cv"]),
    # ImmuneSim models adverse events now: the old per-cycle table is an unknown section.
    (GOOD_TOML + "[toxicity]\nae_per_cycle = {chemo = 0.1}\n", ["[toxicity]"]),
    (GOOD_TOML + "[[[not toml\n", ["not valid TOML"]),
])
def test_bad_scenario_file_names_file_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_scenario_file(path)
    message = str(err.value)
    assert str(path) in message
    for part in expected:
        assert part in message, (part, message)
    with pytest.raises(ValueError, match="bad.toml"):
        register_envs(tmp_path)


def test_good_scenario_file_loads(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(GOOD_TOML)
    spec = load_scenario_file(path)
    assert (spec.id, spec.simulator) == ("Test-Env-v0", "sim")
    assert (spec.scenario.horizon, spec.scenario.bank_size) == (3, 8)


@pytest.mark.parametrize(("section", "key", "value"), [
    ("actions", "type", '"bogus"'),
    ("observation", "type", '"image"'),
])
def test_bad_scenario_value_names_section_and_toml_key(tmp_path, section, key, value):
    """load_scenario_file promises to name "the file, section and key of anything unknown
    or invalid"; an invalid value must be reported under the TOML names the user wrote."""
    path = tmp_path / "bad.toml"
    path.write_text(GOOD_TOML + f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ValueError) as err:
        load_scenario_file(path)
    message = str(err.value)
    assert str(path) in message
    assert f"[{section}]" in message and key in message, message


@pytest.mark.parametrize(("field", "value"), [
    ("horizon", 0), ("horizon", 101), ("horizon", 2.5), ("cycle_days", 3), ("bank_size", 0),
    ("action_type", "continuous"), ("observation_type", "image"),
    ("dose_levels", (0.5, 1.0)), ("dose_levels", (0.0, 1.0, 1.0)), ("dose_levels", (0.0,)),
    ("dose_levels", (0.0, math.nan)), ("menu", ()), ("menu", ("anti_pd2",)),
    ("biopsy_cells", -1), ("imaging_cv", 2.0), ("biopsy_every", 0), ("scan_every", 0),
    ("cancer_types", {"melanoma": -1.0}), ("cancer_types", {"melanoma": 0.0}),
    # Above chemotherapy's allowed maximum (1.5 x the standard dose).
    ("dose_levels", (0.0, 1.0, 2.0)), ("dose_levels", (0.0, 1.6)), ("reward", "high"),
    # Not validated by Scenario (yet): a number as the patient source, and a TOML string
    # "false" that would silently mean True.
    ("patient_source", 7), ("terminate_on_progression", "false"),
])
def test_scenario_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=rf"^{field}"):
        Scenario(**{field: value})


def test_scenario_updated_rejects_unknown_and_bad_reward():
    with pytest.raises(TypeError, match="horizn"):
        Scenario().updated(horizn=3)
    with pytest.raises(ValueError, match="tumour"):
        Scenario().updated(reward={"tumour": 1.0})
    assert Scenario().updated(reward={"death": 2.0}).reward.death == 2.0


# ============================================================================ reproducibility
def _episode(env, seed: int, action_seed: int = 0):
    obs, info = env.reset(seed=seed)
    env.action_space.seed(action_seed)
    trace = [(np.array(obs), 0.0, False, False, info)]
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trace.append((np.array(obs), reward, terminated, truncated, info))
        done = terminated or truncated
    return trace


def _same(a, b) -> bool:
    if len(a) != len(b):
        return False
    for (oa, ra, ta, ua, ia), (ob, rb, tb, ub, ib) in zip(a, b, strict=True):
        if not (np.array_equal(oa, ob) and ra == rb and ta == tb and ua == ub):
            return False
        if ia.keys() != ib.keys() or not all(np.array_equal(ia[k], ib[k]) for k in ia):
            return False
    return True


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_same_seed_same_trajectory(simulator):
    kw = {"horizon": 6, "terminate_on_progression": False}
    first = _episode(_single(simulator, **kw), seed=7)
    again = _episode(_single(simulator, **kw), seed=7)
    assert len(first) > 1
    assert _same(first, again)
    other = _episode(_single(simulator, **kw), seed=8)
    assert not _same(first, other)
    # Reseeding the same env replays it too.
    env = _single(simulator, **kw)
    _episode(env, seed=1)
    assert _same(_episode(env, seed=7), first)


# ============================================================================ world model
@pytest.mark.parametrize("n", [8, 2])  # 2 < ensemble members: rows share members non-contiguously
def test_world_chunked_and_whole_batch_stepping_agree(n):
    envs = [ImmuneWorldVectorEnv(n, world_options={"chunk_size": chunk}, observation_noise=False,
                                 model=_model(), horizon=3, bank_size=16)
            for chunk in (3, 4096)]
    obs = [e.reset(seed=5)[0] for e in envs]
    np.testing.assert_allclose(obs[0], obs[1], atol=1e-4)
    space = envs[0].action_space
    space.seed(5)
    ends = 0
    for _ in range(10):
        actions = space.sample()
        out = [e.step(actions) for e in envs]
        np.testing.assert_allclose(out[0][0], out[1][0], atol=1e-4)
        np.testing.assert_allclose(out[0][1], out[1][1], atol=1e-4)
        for k in (2, 3):
            np.testing.assert_array_equal(out[0][k], out[1][k])
        ends += int((out[0][2] | out[0][3]).sum())
    assert ends > 0  # autoresets happened in between


def test_world_core_steps_the_model_rollout():
    """A WorldCore row started from a baseline follows WorldModel.rollout's mean path."""
    from immunegym.env.world_core import BASELINE_CELLS, WorldCore
    from immunegym.world_model.timelines import baseline_timelines

    model = _model()
    n, horizon = 4, 3
    rng = np.random.default_rng(0)
    comp = rng.dirichlet(np.ones(20), n)
    sod = np.array([20.0, 45.0, 80.0, 130.0])
    core = WorldCore(model, n, horizon, max_sod_mm=1e9)
    gen = torch.Generator().manual_seed(0)
    core.reset_rows(torch.arange(n), torch.tensor(comp, dtype=torch.float32),
                    torch.tensor(sod, dtype=torch.float32), torch.zeros(n, 20, 0),
                    torch.zeros(n, 20, dtype=torch.bool), ["unknown"] * n, gen)
    dose = torch.tensor([[1.0, 0, 0, 0, 0]] * n)
    steps = [core.step(dose, gen) for _ in range(horizon)]
    tl = baseline_timelines(comp, sod, [f"p{i}" for i in range(n)], cancer_type="unknown",
                            programs=(), n_cells=BASELINE_CELLS)
    tl.patients["lab"] = "unknown"
    roll = model.rollout(tl, dose.numpy(), horizon, noise="none")
    for i in range(n):
        member = int(core.member[i])
        for h in range(horizon):
            np.testing.assert_allclose(steps[h][0][i].numpy(),
                                       roll.compositions[member, i, h].numpy(), atol=1e-5)
            np.testing.assert_allclose(np.log1p(steps[h][1][i].numpy()),
                                       roll.burden[member, i, h].numpy(), atol=1e-4)


# ============================================================================ long random runs
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_ten_thousand_random_steps(simulator):
    n, steps = 64, 157  # 10,048 env steps
    env = _vector(simulator, n, horizon=8, bank_size=64)
    obs, info = env.reset(seed=11)
    env.action_space.seed(11)
    pending = np.zeros(n, dtype=bool)
    ended = 0
    for _ in range(steps):
        mask = info["action_mask"]
        actions = env.action_space.sample()
        obs, reward, terminated, truncated, info = env.step(actions)
        assert env.observation_space.contains(obs)
        assert np.all(np.isfinite(obs))
        assert reward.shape == (n,) and np.all(np.isfinite(reward))
        cost = info["cost"]
        assert np.all(np.isfinite(cost)) and np.all(cost >= 0)
        live = ~pending  # rows that really stepped (pending ones were reset instead)
        assert np.all(terminated[info["died"] & live])
        allowed = _allowed_from_mask(mask, "multidiscrete")
        assert np.all(info["given"][live][~allowed[live]] == 0)
        requested = np.asarray(env.scenario.dose_levels, np.float32)[actions]
        assert np.all(info["given"][live] <= requested[live])
        slices = env._parts.observations.slices
        np.testing.assert_allclose(obs[:, slices["composition"]].sum(1), 1.0, atol=1e-4)
        np.testing.assert_allclose(obs[:, slices["time"]][:, 0], info["cycle"] / 8, atol=1e-6)
        assert set(np.unique(obs[:, slices["irae"]])) <= {0.0, 1.0}
        pending = terminated | truncated
        ended += int(pending.sum())
    assert ended > n  # every env went through several episodes


# ============================================================================ memory
def _torch_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_no_memory_growth_over_resets(simulator):
    """200 reset/step cycles (episode ends and autoresets included) hold no more memory:
    the engine's state, the live torch tensors and the Python heap stay flat."""
    kw = {"horizon": 1, "bank_size": 16, "cycle_days": 7}
    venv = _vector(simulator, 8, **kw)
    single = _single(simulator, **kw)
    zeros = np.zeros((8, len(THERAPIES)), dtype=np.int64)

    def cycle(i: int) -> None:
        venv.reset(seed=i)
        venv.step(zeros)  # ends every episode (horizon 1)
        venv.step(zeros)  # NEXT_STEP autoreset
        single.reset(seed=i)
        single.step(zeros[0])

    for i in range(20):  # warm up caches and allocators
        cycle(i)
    engine_bytes = (venv.engine.memory_bytes(), single.engine.memory_bytes())
    tensors = _torch_tensors()
    for i in range(100):
        cycle(i)
    assert _torch_tensors() <= tensors + 4
    # Python heap, allocations made from immunegym's code: torch and the interpreter keep
    # filling small caches for a while (~20 kB over these 50 cycles, flattening out), while
    # a leak as small as keeping the rendering trace across episodes adds ~150 kB.
    tracemalloc.start()
    try:
        for i in range(30):
            cycle(i)
        gc.collect()
        middle = tracemalloc.take_snapshot()
        for i in range(50):
            cycle(i)
        gc.collect()
        end = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    ours = [tracemalloc.Filter(True, "*immunegym*")]
    grown = (sum(t.size for t in end.filter_traces(ours).traces)
             - sum(t.size for t in middle.filter_traces(ours).traces))
    assert (venv.engine.memory_bytes(), single.engine.memory_bytes()) == engine_bytes
    assert _torch_tensors() <= tensors + 4
    assert grown < 64 * 1024, f"Python heap grew {grown / 1024:.1f} KiB over 50 cycles"


# ============================================================================ fuzzing
@functools.cache
def _fuzz_env(simulator: str, action_type: str):
    return _single(simulator, action_type=action_type, horizon=6, bank_size=16,
                   terminate_on_progression=False)


def _action_strategy(env, action_type: str):
    dtype = st.sampled_from([np.int64, np.int32, np.float32])
    if action_type == "menu":
        value = st.integers(0, env.action_space.n - 1)
        return st.tuples(value, dtype).map(lambda t: np.asarray(t[0], dtype=t[1]))
    high = len(env.scenario.dose_levels) - 1 if action_type == "multidiscrete" else 1
    values = st.lists(st.integers(0, high), min_size=len(THERAPIES), max_size=len(THERAPIES))
    return st.tuples(values, dtype).map(lambda t: np.asarray(t[0], dtype=t[1]))


@pytest.mark.parametrize("action_type", ACTION_TYPES)
@pytest.mark.parametrize("simulator", SIMULATORS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_action_sequences(simulator, action_type, data):
    env = _fuzz_env(simulator, action_type)
    codec = env._parts.actions
    seed = data.draw(st.integers(0, 2**20), label="seed")
    actions = data.draw(st.lists(_action_strategy(env, action_type), min_size=1, max_size=6),
                        label="actions")
    obs, info = env.reset(seed=seed)
    assert env.observation_space.contains(obs)
    for action in actions:
        assert env.action_space.contains(action.astype(np.int64))
        mask = info["action_mask"]
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs)
        assert np.all(np.isfinite(obs))
        assert math.isfinite(reward)
        assert info["cost"] >= 0
        given_ = info["given"]
        forbidden = ~_allowed_from_mask(mask, action_type, env.scenario.menu)
        assert np.all(given_[forbidden] == 0), (mask, given_)
        if action_type == "multidiscrete":
            # Level l > 0 of therapy r masked => therapy r not given at all.
            for r in range(len(THERAPIES)):
                if not mask[r, 1:].any():
                    assert given_[r] == 0
        assert np.all(given_ <= codec.doses(action, 1)[0])
        if terminated or truncated:
            break


# ============================================================================ invalid input
BAD_ACTIONS = {
    "multidiscrete": [
        (np.zeros(4, np.int64), "shape"), (np.zeros((2, 5), np.int64), "shape"),
        (np.array([3, 0, 0, 0, 0]), "out of range"), (np.array([-1, 0, 0, 0, 0]), "out of range"),
        (np.array([np.nan, 0, 0, 0, 0]), "NaN"), (np.array([0.5, 0, 0, 0, 0]), "non-integer"),
        (np.array(["a"] * 5), "dtype"),
    ],
    "multibinary": [
        (np.zeros(6, np.int64), "shape"), (np.array([2, 0, 0, 0, 0]), "out of range"),
        (np.array([np.inf, 0, 0, 0, 0]), "NaN or infinity"),
        (np.array([0.25, 0, 0, 0, 0]), "non-integer"),
    ],
    "menu": [
        (np.array([1, 2]), "shape"), (np.array(10), "out of range"), (-1, "out of range"),
        (np.nan, "NaN"), (1.5, "non-integer"),
    ],
}


@pytest.mark.parametrize("action_type", ACTION_TYPES)
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_invalid_actions_single(simulator, action_type):
    env = _single(simulator, action_type=action_type)
    env.reset(seed=0)
    for action, message in BAD_ACTIONS[action_type]:
        with pytest.raises(ValueError, match=message):
            env.step(action)
    # A rejected action leaves the episode untouched.
    _, _, _, _, info = env.step(env.action_space.sample())
    assert info["cycle"] == 1


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_invalid_actions_vector(action_type):
    n = 3
    env = _vector("world", n, action_type=action_type)
    env.reset(seed=0)
    good = env.action_space.sample()
    wrong_shape = good[:2]
    out_of_range = np.array(good, dtype=np.int64)
    out_of_range[-1] = -1 if action_type != "menu" else env.single_action_space.n
    nan = np.array(good, dtype=np.float64)
    nan[0] = np.nan
    half = np.array(good, dtype=np.float64) + 0.5
    for action, message in [(wrong_shape, "shape"), (out_of_range, "out of range"),
                            (nan, "NaN"), (half, "non-integer")]:
        with pytest.raises(ValueError, match=message):
            env.step(action)
    _, _, _, _, info = env.step(good)
    assert np.all(info["cycle"] == 1)


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_step_outside_an_episode_raises(simulator):
    env = _single(simulator, horizon=1)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())
    env.reset(seed=0)
    _, _, terminated, truncated, _ = env.step(env.action_space.sample())
    assert terminated or truncated
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())
    env.reset()
    env.step(env.action_space.sample())  # a new episode steps again
    venv = _vector(simulator, 2)
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(venv.action_space.sample())


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match="autoreset_mode"):
        _vector("sim", 2, autoreset_mode="sometimes")
    with pytest.raises(ValueError, match="autoreset_mode"):
        _vector("sim", 2, autoreset_mode=AutoresetMode.DISABLED)
    with pytest.raises(ValueError, match="render_mode"):
        _vector("sim", 2, render_mode="human")
    with pytest.raises(ValueError, match="render_mode"):
        _single("world", render_mode="human")
    with pytest.raises(ValueError, match="num_envs"):
        _vector("sim", 0)
    with pytest.raises(ValueError, match="num_envs"):
        gym.make_vec("ImmuneWorld-v0", num_envs=0, **SMALL)
    with pytest.raises(TypeError, match="horizn"):
        gym.make("ImmuneSim-v0", horizn=4)
    with pytest.raises(TypeError, match="horizn"):
        gym.make_vec("ImmuneSim-v0", num_envs=2, horizn=4)
    with pytest.raises(ValueError, match="chunk_size"):
        _vector("world", 2, world_options={"chunk_size": 0})
    with pytest.raises(TypeError, match="cache"):
        _vector("world", 2, world_options={"cache": True})
    # ImmuneSim needs ImmuneSim patients: a bank without hidden state is refused.
    bank = PatientBank.from_sim({}, 4, seed=0)
    with pytest.raises(ValueError, match="patient_source"):
        _single("sim", bank=dataclasses.replace(bank, sim_state=None, sim_patients=None))


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_patient_option(simulator):
    env = _single(simulator, terminate_on_progression=False)
    _, info = env.reset(seed=0, options={"patient": 3})
    assert info["patient"] == 3
    first = env.engine.bank.composition[3]
    *_, info = env.step(env.action_space.sample())
    assert info["patient"] == 3
    env.reset(seed=5, options={"patient": 3})
    torch.testing.assert_close(env.engine.bank.composition[env.engine.patient[0]], first)
    pid = str(env.engine.bank.patient_id[5])
    _, info = env.reset(seed=1, options={"patient": pid})
    assert info["patient"] == 5
    with pytest.raises(ValueError, match="unknown id"):
        env.reset(options={"patient": "no-such-patient"})
    with pytest.raises(ValueError, match="out of range"):
        env.reset(options={"patient": 10_000})
    venv = _vector(simulator, 3)
    _, info = venv.reset(seed=0, options={"patient": [1, 2, 3]})
    np.testing.assert_array_equal(info["patient"], [1, 2, 3])
    with pytest.raises(ValueError, match="one per env"):
        venv.reset(options={"patient": [1, 2]})


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_vector_partial_reset(simulator):
    env = _vector(simulator, 4, horizon=4, terminate_on_progression=False)
    env.reset(seed=0, options={"patient": [0, 1, 2, 3]})
    obs, *_, info = env.step(np.ones((4, len(THERAPIES)), np.int64))
    mask = np.array([False, True, False, True])
    new_obs, info = env.reset(options={"reset_mask": mask, "patient": [4, 5, 6, 7]})
    np.testing.assert_array_equal(info["cycle"], [1, 0, 1, 0])
    np.testing.assert_array_equal(info["patient"], [0, 5, 2, 7])
    np.testing.assert_array_equal(_time(new_obs, env)[:, 0], [0.25, 0, 0.25, 0])
    np.testing.assert_array_equal(new_obs[~mask], obs[~mask])  # the others go on untouched
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": [True, False]})


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_vector_returns_are_not_changed_by_later_steps(simulator):
    """What reset/step hand out belongs to the caller (e.g. a replay buffer): later steps
    and resets must not rewrite it in place."""
    env = _vector(simulator, 3, horizon=2, terminate_on_progression=False)
    kept = []
    obs, info = env.reset(seed=0, options={"patient": [1, 2, 3]})
    kept.append((obs, info))
    for _ in range(3):  # the last step autoresets every env
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        kept.append((obs, info))
    snapshot = [(o.copy(), {k: np.array(v, copy=True) for k, v in i.items()})
                for o, i in kept]
    for _ in range(3):
        env.step(env.action_space.sample())
    env.reset(options={"patient": [4, 5, 6]})
    for t, ((obs, info), (obs0, info0)) in enumerate(zip(kept, snapshot, strict=True)):
        np.testing.assert_array_equal(obs, obs0, err_msg=f"observation {t} changed")
        for key, value in info0.items():
            np.testing.assert_array_equal(info[key], value,
                                          err_msg=f"infos[{key!r}] of call {t} changed")


# ============================================================================ clinical rules
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_irae_holds_or_stops_checkpoint_inhibitors(simulator):
    """A grade 3 irAE holds both checkpoint inhibitors 42 days, then they resume; grade 4 or
    a recurrence stops them for good. The mask follows ``held`` and ``discontinued``."""
    n, horizon = 128, 8
    env = _vector(simulator, n, horizon=horizon, terminate_on_progression=False)
    obs, info = env.reset(seed=2)
    action = np.zeros((n, len(THERAPIES)), dtype=np.int64)
    action[:, [PD1, CTLA4]] = 2
    checkpoints = [PD1, CTLA4]
    in_episode = np.ones(n, dtype=bool)
    ever_held = np.zeros(n, dtype=bool)
    resumed = stopped = irae = 0
    for _ in range(horizon):
        prev_mask, prev_discontinued = info["action_mask"], info["discontinued"]
        obs, reward, terminated, truncated, info = env.step(action)
        live = in_episode & ~info["died"]
        # Forbidden therapies are withheld.
        assert np.all(info["given"][in_episode][~prev_mask[in_episode][..., 1:].any(-1)] == 0)
        # A stop is for good.
        assert np.all(info["discontinued"][in_episode] >= prev_discontinued[in_episode])
        held, discontinued = info["held"][live], info["discontinued"][live]
        allowed = info["action_mask"][live][..., 1:].any(-1)
        # anti-PD-1 has no course cap: the toxicity rules alone decide it.
        np.testing.assert_array_equal(allowed[:, PD1], ~held[:, PD1] & ~discontinued[:, PD1])
        assert not np.any(allowed[:, CTLA4] & (held[:, CTLA4] | discontinued[:, CTLA4]))
        # An irAE this cycle leaves both checkpoint inhibitors held or stopped.
        new = info["irae"][live]
        off = held[:, checkpoints] | discontinued[:, checkpoints]
        assert off[new].all()
        # The hold lasts 42 days from the event, within this cycle.
        days = env.engine._day()[torch.as_tensor(live)].numpy()
        np.testing.assert_array_equal(days, info["day"][live])
        until = env.engine.tox.hold_until[torch.as_tensor(live)].numpy()[:, PD1]
        wait = until - days
        on_hold = held[:, PD1] & ~discontinued[:, PD1]
        assert np.all((wait[on_hold] > 0) & (wait[on_hold] <= 42))
        resumed += int(np.sum(ever_held[live] & allowed[:, PD1]))
        ever_held[np.flatnonzero(live)[on_hold]] = True
        stopped += int(np.sum(new & discontinued[:, PD1]))
        irae += int(new.sum())
        in_episode &= ~(terminated | truncated)
    assert irae > 0, "no irAE happened; the test did not exercise the rules"
    assert resumed > 0, "no held checkpoint inhibitor resumed; the hold was not exercised"
    assert stopped > 0, "no irAE stopped the checkpoint inhibitors for good"


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_ctla4_capped_at_four_doses_and_radio_at_two(simulator):
    env = _single(simulator, horizon=7, terminate_on_progression=False)
    action = np.zeros(len(THERAPIES), dtype=np.int64)
    action[[CTLA4, RADIO]] = 2
    for seed in range(40):
        obs, info = env.reset(seed=seed)
        masks, given, clean = [info["action_mask"]], [], True
        for _ in range(7):
            obs, reward, terminated, truncated, info = env.step(action)
            if info["irae"] or info["died"]:
                clean = False
                break
            masks.append(info["action_mask"])
            given.append(info["given"])
        if clean:
            break
    else:
        pytest.fail("no episode without an irAE or death in 40 seeds")
    given = np.array(given)
    masks = np.array(masks)
    np.testing.assert_array_equal(given[:, CTLA4], [1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(given[:, RADIO], [1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(masks[:, CTLA4, 1:].any(-1), [1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(masks[:, RADIO, 1:].any(-1), [1, 1, 0, 0, 0, 0, 0, 0])
    assert masks[:, PD1, 1:].all()  # untouched therapies stay allowed
    exposure = obs[env._parts.observations.slices["exposure"]]
    assert exposure[CTLA4] == 4.0 and exposure[RADIO] == 2.0


def _doomed_bank(n: int = 4, sod_mm: float = 600.0) -> PatientBank:
    bank = PatientBank.from_sim({}, n, seed=0)
    return dataclasses.replace(bank, sod_mm=torch.full_like(bank.sod_mm, sod_mm))


# 600 mm is past ImmuneSim's carrying capacity (225 mm), where the world core caps tumors.
UNCAPPED = {"world_options": {"max_sod_mm": 1e4}}


def test_death_terminates(monkeypatch):
    # The engine's handling of a death is under test, not the world model's extrapolation
    # past anything it was trained on: the tumor-death draw says "dead" for everyone.
    import immunegym.env.engine as engine_module

    monkeypatch.setattr(engine_module, "model_death",
                        lambda sod, rates, days, g: torch.ones_like(sod, dtype=torch.bool))
    env = _single("world", bank=_doomed_bank(), horizon=8, terminate_on_progression=False,
                  **UNCAPPED)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(np.zeros(len(THERAPIES), np.int64))
    assert info["died"] and terminated and not truncated
    # The death penalty is charged (the tumor term is whatever the model's shrinkage was).
    w = env.scenario.reward
    assert reward <= -w.death + w.tumor * np.log1p(600.0) + w.survival
    assert not info["action_mask"][:, 1:].any()  # nothing can be given to the dead
    with pytest.raises(RuntimeError):
        env.step(np.zeros(len(THERAPIES), np.int64))
    venv = _vector("world", 4, bank=_doomed_bank(), horizon=8, terminate_on_progression=False,
                   **UNCAPPED)
    venv.reset(seed=0)
    zeros = np.zeros((4, len(THERAPIES)), np.int64)
    _, reward, terminated, _, info = venv.step(zeros)
    assert info["died"].all() and terminated.all()
    obs, reward, terminated, truncated, info = venv.step(zeros)  # NEXT_STEP autoreset
    assert np.all(reward == 0) and not terminated.any() and not truncated.any()
    assert np.all(_time(obs, venv) == 0) and np.all(info["cycle"] == 0)


# ============================================================================ rendering
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_render_rgb_array(simulator):
    # The action space is seeded and progression does not end the episode, so the three
    # steps are the same on every run (an unseeded sample once ended it after one cycle).
    env = _single(simulator, render_mode="rgb_array", horizon=4, terminate_on_progression=False)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(3):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:  # a treatment death still ends it: draw what there is
            break
    frame = env.render()
    assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8
    assert frame.ndim == 3 and frame.shape[2] == 3 and min(frame.shape[:2]) > 50
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 10
    venv = _vector(simulator, 2, render_mode="rgb_array")
    venv.reset(seed=0)
    venv.action_space.seed(0)
    venv.step(venv.action_space.sample())
    vframe = venv.render()
    assert vframe.dtype == np.uint8 and vframe.ndim == 3 and vframe.std() > 0


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_render_ansi_one_line_per_cycle(simulator):
    env = _single(simulator, render_mode="ansi", horizon=4, terminate_on_progression=False)
    env.reset(seed=0, options={"patient": 2})
    for _ in range(3):
        env.step(np.array([2, 0, 0, 0, 0]))
    text = env.render()
    assert isinstance(text, str)
    lines = [line for line in text.splitlines() if line.strip()]
    days = [line for line in lines if line.startswith("day")]
    assert len(days) == 4  # day 0 and three cycles
    assert [int(line.split()[1]) for line in days] == [0, 21, 42, 63]
    assert lines[0].startswith("patient") and str(env.engine.bank.patient_id[2]) in lines[0]
    assert all("PD1" in line for line in days[1:])
    assert env.reset(seed=1)[0] is not None and env.render().count("\nday") == 1


# ============================================================================ codecs
def test_multidiscrete_levels_to_doses():
    codec = ActionCodec(Scenario(dose_levels=(0.0, 0.25, 1.0, 1.5)))
    assert codec.space == gym.spaces.MultiDiscrete([4] * len(THERAPIES))
    doses = codec.doses(np.array([[0, 1, 2, 3, 1], [3, 3, 0, 0, 2]]), 2)
    np.testing.assert_array_equal(doses, [[0, 0.25, 1, 1.5, 0.25], [1.5, 1.5, 0, 0, 1]])
    assert doses.dtype == np.float32
    allowed = np.array([[True, False, True, True, True]])
    mask = codec.mask(allowed)
    assert mask.shape == (1, len(THERAPIES), 4)
    assert mask[0, :, 0].all() and not mask[0, CTLA4, 1:].any() and mask[0, PD1].all()


def test_menu_regimens_to_doses():
    codec = ActionCodec(Scenario(action_type="menu"))
    assert codec.space == gym.spaces.Discrete(len(DEFAULT_MENU))
    chosen = [DEFAULT_MENU.index(r) for r in ("none", "anti_pd1+anti_ctla4", "chemo+anti_pd1",
                                              "radio")]
    doses = codec.doses(np.array(chosen), len(chosen))
    np.testing.assert_array_equal(doses, [[0, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 0, 1, 0, 0],
                                          [0, 0, 0, 1, 0]])
    allowed = np.ones((1, len(THERAPIES)), dtype=bool)
    allowed[0, CTLA4] = False
    mask = codec.mask(allowed)[0]
    for i, regimen in enumerate(DEFAULT_MENU):
        assert mask[i] == ("anti_ctla4" not in regimen), regimen
    custom = ActionCodec(Scenario(action_type="menu", menu=("none", "radio+targeted")))
    np.testing.assert_array_equal(custom.doses(np.array(1), 1), [[0, 0, 0, 1, 1]])
    binary = ActionCodec(Scenario(action_type="multibinary"))
    np.testing.assert_array_equal(binary.doses(np.array([1, 0, 1, 0, 1], dtype=bool), 1),
                                  [[1, 0, 1, 0, 1]])


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_action_codecs_in_the_env(simulator):
    env = _single(simulator, dose_levels=(0.0, 0.5, 1.0))
    env.reset(seed=0)
    *_, info = env.step(np.array([2, 1, 0, 0, 0]))
    np.testing.assert_array_equal(info["given"], [1.0, 0.5, 0, 0, 0])
    menu = _single(simulator, action_type="menu")
    menu.reset(seed=0)
    *_, info = menu.step(DEFAULT_MENU.index("chemo+anti_pd1"))
    np.testing.assert_array_equal(info["given"], [1, 0, 1, 0, 0])
