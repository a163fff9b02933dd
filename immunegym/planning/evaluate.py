"""Run a policy over a fixed set of patients in ImmuneWorld or ImmuneSim and score it.

Every agent and planner is judged the same way (the leaderboard, ``python -m agents.*``):
one native vector env with one row per patient, each row pinned to its bank patient, run for
one episode. A :class:`Policy` sees, at the start, only what a clinic knows
(:class:`EpisodeStart`: the cancer type, the baseline biopsy and scan) and then, every
cycle, the observation and the info (action mask included). :func:`evaluate_policy` returns
per-patient outcomes (:class:`Evaluation`): return, RECIST best response, grade >= 3 irAE
and adverse events, progression-free survival, death (and whether it was treatment-related),
and discontinuation for toxicity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from immunegym.env.scenario import RewardWeights, Scenario
from immunegym.planning.policy import EpisodeStart, Policy
from immunegym.sim.outcomes import RESPONSE_CODES
from immunegym.validation import bad, boolean, choice, integer
from immunegym.validation import device as validate_device
from immunegym.validation import seed as validate_seed

SIMULATORS: tuple[str, ...] = ("world", "sim")
"""``"world"``: ImmuneWorld-v0 (the world model); ``"sim"``: ImmuneSim-v0 (ground truth)."""

ONE_YEAR_DAYS = 365
"""Overall survival "at one year" is survival to the end of the last whole cycle within it
(``365 // cycle_days`` cycles: 17 cycles, day 357, with 3-week cycles)."""


@dataclass
class Evaluation:
    """Per-patient outcomes of one policy in one simulator.

    Attributes
    ----------
    policy, simulator
        Who acted and where (``"world"`` or ``"sim"``).
    patient_id, cancer_type
        ``(n,)`` the patients.
    returns
        ``(n,)`` undiscounted episode returns.
    best_response
        ``(n,)`` RECIST best overall response (:data:`RESPONSE_CODES` names).
    irae
        ``(n,)`` a grade >= 3 immune-related adverse event happened.
    cost
        ``(n,)`` grade >= 3 adverse events of any kind (``info["cost"]`` summed).
    pfs_cycles
        ``(n,)`` cycles to progression or death, or to the episode's end (censored).
    pfs_event
        ``(n,)`` progression or death was observed (not censored).
    died
        ``(n,)`` the patient died in the episode.
    given
        ``(n, H, R)`` dose multiples actually given per cycle (zeros after the end).
    death_cycle
        ``(n,)`` the cycle (1-based) in which the patient died, 0 if alive at the episode's
        end; ``None`` when unknown (then only ``died`` is).
    treatment_death
        ``(n,)`` the death was treatment-related (the env's ``info["treatment_death"]``:
        fatal irAE, febrile neutropenia or overwhelming toxicity load), not the tumor's;
        ``None`` when unknown.
    discontinued
        ``(n,)`` some therapy was stopped for toxicity by the episode's end (the env's
        ``info["discontinued"]``: a protocol stop after an irAE or exhausted dose
        reductions, or the patient unfit from toxicity load); ``None`` when unknown.
    cycle_days
        Days per cycle of the scenario (fixes which cycle ends the first year).
    """

    policy: str
    simulator: str
    patient_id: np.ndarray
    cancer_type: np.ndarray
    returns: np.ndarray
    best_response: np.ndarray
    irae: np.ndarray
    cost: np.ndarray
    pfs_cycles: np.ndarray
    pfs_event: np.ndarray
    died: np.ndarray
    given: np.ndarray
    death_cycle: np.ndarray | None = None
    treatment_death: np.ndarray | None = None
    discontinued: np.ndarray | None = None
    cycle_days: int = 21

    def __repr__(self) -> str:
        return (f"Evaluation(policy={self.policy!r}, simulator={self.simulator!r}, "
                f"patients={len(self.returns)}, mean return {float(np.mean(self.returns)):.3g}, "
                f"cycles={self.given.shape[1] if self.given.ndim == 3 else 0})")

    @property
    def responder(self) -> np.ndarray:
        """``(n,)`` best response PR or CR."""
        return np.isin(self.best_response, ("PR", "CR"))

    @property
    def ae3(self) -> np.ndarray:
        """``(n,)`` at least one grade >= 3 adverse event of any kind (``cost > 0``)."""
        return np.asarray(self.cost) > 0

    @property
    def one_year_cycles(self) -> int:
        """Cycles that end within one year (:data:`ONE_YEAR_DAYS` ``// cycle_days``)."""
        return ONE_YEAR_DAYS // int(self.cycle_days)

    def alive_at_one_year(self) -> np.ndarray | None:
        """``(n,)`` not dead by the end of cycle :attr:`one_year_cycles`; ``None`` when the
        episodes are shorter than that (a year not followed).

        Deaths are seen only within the episode: with ``terminate_on_progression`` (the
        leaderboard's scenario) an episode ends at RECIST progression, so a death after
        progression but within the year is not seen and the patient counts as alive.
        """
        horizon = int(self.given.shape[1]) if np.ndim(self.given) == 3 else 0
        year = self.one_year_cycles
        died = np.asarray(self.died, dtype=bool)
        if self.death_cycle is not None:
            if horizon < year:
                return None
            cycle = np.asarray(self.death_cycle)
            return ~(died & (cycle >= 1) & (cycle <= year))
        # Only "died in the episode" is known: that is one-year survival iff H == a year.
        return ~died if horizon == year else None

    def summary(self, *, seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
        """Means with bootstrap 95% CIs over patients, and the Kaplan-Meier PFS median.

        Parameters
        ----------
        seed
            Seed of the bootstrap resampling (the same resamples for every metric).
        n_boot
            Bootstrap resamples.

        Returns
        -------
        dict
            ``return``, ``orr``, ``irae``, ``ae3`` (share with any grade >= 3 adverse event),
            ``os_1y`` (:meth:`alive_at_one_year`; ``None`` for shorter episodes),
            ``discontinuation`` (share with a therapy stopped for toxicity), ``deaths``
            (share with a treatment-related death) and ``death_rate`` (any death), each with
            ``<name>_ci95`` (``None`` where the metric is unknown), plus
            ``adverse_events_per_patient``, ``pfs_median_cycles`` and its CI.
        """
        from immunegym.sim.trial import km_median

        n_boot = integer("n_boot", n_boot, low=1, high=1_000_000)
        rng = np.random.default_rng(validate_seed("seed", seed))
        n = len(self.returns)
        boot = rng.integers(0, n, (n_boot, n))

        def mean_ci(x: np.ndarray) -> tuple[float, list[float]]:
            x = np.asarray(x, dtype=float)
            lo, hi = np.quantile(x[boot].mean(1), [0.025, 0.975])
            return float(x.mean()), [float(lo), float(hi)]

        def maybe(x: np.ndarray | None) -> tuple[float | None, list[float] | None]:
            return (None, None) if x is None else mean_ci(x)

        ret, ret_ci = mean_ci(self.returns)
        orr, orr_ci = mean_ci(self.responder)
        irae, irae_ci = mean_ci(self.irae)
        ae3, ae3_ci = mean_ci(self.ae3)
        os_1y, os_1y_ci = maybe(self.alive_at_one_year())
        disc, disc_ci = maybe(self.discontinued)
        deaths, deaths_ci = maybe(self.treatment_death)
        death_rate, death_rate_ci = mean_ci(self.died)
        if self.pfs_event.any():
            median, median_ci = km_median(self.pfs_cycles.astype(float), self.pfs_event)
        else:  # nobody progressed or died: the median is not reached
            median, median_ci = np.inf, (np.inf, np.inf)
        return {
            "n_patients": n,
            "return": ret, "return_ci95": ret_ci,
            "orr": orr, "orr_ci95": orr_ci,
            "irae": irae, "irae_ci95": irae_ci,
            "ae3": ae3, "ae3_ci95": ae3_ci,
            "adverse_events_per_patient": float(self.cost.mean()),
            "pfs_median_cycles": _finite(median),
            "pfs_median_ci95": [_finite(v) for v in median_ci],
            "os_1y": os_1y, "os_1y_ci95": os_1y_ci,
            "discontinuation": disc, "discontinuation_ci95": disc_ci,
            "deaths": deaths, "deaths_ci95": deaths_ci,
            "death_rate": death_rate, "death_rate_ci95": death_rate_ci,
        }


def episode_start(env, obs: Any, infos: dict[str, np.ndarray]) -> EpisodeStart:
    """The :class:`EpisodeStart` of a freshly reset native vector env (observations only)."""
    parts = env._parts.observations
    if isinstance(obs, dict):
        composition, burden = obs["composition"], obs["burden"][:, 0]
    else:
        composition = obs[:, parts.slices["composition"]]
        burden = obs[:, parts.slices["burden"]][:, 0]
    bank = env.engine.bank
    rows = np.asarray(infos["patient"])
    return EpisodeStart(cancer_type=bank.cancer_type[rows].astype(str),
                        patient_id=bank.patient_id[rows].astype(str),
                        composition=np.asarray(composition, dtype=np.float32).copy(),
                        sod_mm=np.expm1(np.asarray(burden, dtype=np.float64)),
                        scenario=env.scenario)


def make_env(simulator: str, scenario: Scenario, n_envs: int, *, model=None,
             device: str = "cpu", bank=None):
    """A native vector env of ``simulator`` (NEXT_STEP autoreset)."""
    from immunegym.env.vector import ImmuneSimVectorEnv, ImmuneWorldVectorEnv

    choice("simulator", simulator, SIMULATORS)
    if not isinstance(scenario, Scenario):
        raise bad("scenario", scenario, "a Scenario")
    n_envs = integer("n_envs", n_envs, low=1, high=10_000_000)
    cls = ImmuneWorldVectorEnv if simulator == "world" else ImmuneSimVectorEnv
    return cls(n_envs, scenario=scenario, model=model if simulator == "world" else None,
               device=device, bank=bank)


def evaluate_policy(policy: Policy, simulator: str, scenario: Scenario, *,
                    n_patients: int | None = None, model=None, seed: int = 0,
                    device: str = "cpu") -> Evaluation:
    """One episode per patient of the scenario's bank, all rows in one vector env.

    Parameters
    ----------
    policy
        The agent (:class:`Policy`).
    simulator
        ``"world"`` (ImmuneWorld-v0) or ``"sim"`` (ImmuneSim-v0, the ground truth).
    scenario
        The scenario; its ``bank_seed`` and ``bank_size`` fix the patients, so the same
        scenario gives the same patients in both simulators.
    n_patients
        The first ``n_patients`` of the bank (all when ``None``).
    model
        World model for ``"world"`` (the pretrained default when ``None``).
    seed
        Seed of the env (biopsies, scans, toxicity, dynamics).
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    """
    if not isinstance(policy, Policy):
        raise bad("policy", policy, "a Policy (an object with name, start(episodes) and "
                  "act(obs, infos))")
    choice("simulator", simulator, SIMULATORS)
    if not isinstance(scenario, Scenario):
        raise bad("scenario", scenario, "a Scenario (e.g. leaderboard_scenario())")
    n = scenario.bank_size if n_patients is None else integer(
        "n_patients", n_patients, low=1, high=scenario.bank_size,
        hint="the scenario's bank_size")
    seed = validate_seed("seed", seed)
    device = validate_device("device", device)
    env = make_env(simulator, scenario, n, model=model, device=device)
    obs, infos = env.reset(seed=seed, options={"patient": np.arange(n)})
    start = episode_start(env, obs, infos)
    policy.start(start)
    h, r = scenario.horizon, infos["given"].shape[1]
    returns = np.zeros(n)
    cost = np.zeros(n)
    irae = np.zeros(n, dtype=bool)
    died = np.zeros(n, dtype=bool)
    death_cycle = np.zeros(n, dtype=np.int64)
    treatment_death = np.zeros(n, dtype=bool)
    discontinued = np.zeros(n, dtype=bool)
    event = np.zeros(n, dtype=bool)
    pfs = np.full(n, h, dtype=np.int64)
    best = np.zeros(n, dtype=np.int64)
    given = np.zeros((n, h, r), dtype=np.float32)
    done = np.zeros(n, dtype=bool)
    for cycle in range(h):
        actions = policy.act(obs, infos)
        obs, reward, terminated, truncated, infos = env.step(actions)
        live = ~done
        returns[live] += reward[live]
        cost[live] += infos["cost"][live]
        irae |= live & infos["irae"]
        death_cycle[live & infos["died"] & ~died] = cycle + 1
        died |= live & infos["died"]
        treatment_death |= live & infos["treatment_death"]
        # Stops are permanent: the flag of a row's last step is its episode's.
        discontinued |= live & np.asarray(infos["discontinued"]).reshape(n, -1).any(-1)
        given[live, cycle] = infos["given"][live]
        ended = live & ~event & (infos["died"] | infos["progressed"])
        pfs[ended] = cycle + 1
        event |= ended
        finishing = live & (terminated | truncated)
        best[finishing] = infos["best_response"][finishing]
        done |= terminated | truncated
        if done.all():
            break
    env.close()
    return Evaluation(policy.name, simulator, start.patient_id, start.cancer_type, returns,
                      np.asarray(RESPONSE_CODES)[best], irae, cost, pfs, event, died, given,
                      death_cycle=death_cycle, treatment_death=treatment_death,
                      discontinued=discontinued, cycle_days=scenario.cycle_days)


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


HELD_OUT_BANK_SEED = 20_261
"""Bank seed of the held-out evaluation patients (training envs use other seeds)."""

LEADERBOARD_REWARD = RewardWeights(toxicity=1.0)
"""The leaderboard's reward: the env default, and a grade >= 3 adverse event costs as much
as a RECIST progression (with the env's default 0, more therapy is never worse)."""


def leaderboard_scenario(*, held_out: bool = True, horizon: int = 8, n_patients: int = 64,
                         cancer_types: dict[str, float] | None = None) -> Scenario:
    """The scenario agents are trained (``held_out=False``) and judged (``True``) in.

    Every calibrated cancer type in equal shares, ``horizon`` 3-week cycles, the
    :data:`LEADERBOARD_REWARD`; held-out patients come from :data:`HELD_OUT_BANK_SEED`.
    """
    boolean("held_out", held_out)
    n_patients = integer("n_patients", n_patients, low=1)
    horizon = integer("horizon", horizon, low=1)
    if cancer_types is not None and not isinstance(cancer_types, dict):
        raise bad("cancer_types", cancer_types, "a mapping of cancer type -> weight or None")
    # Scenario checks the horizon, bank size and cancer types (names the field).
    return Scenario(cancer_types=dict(cancer_types or {}), bank_size=n_patients,
                    bank_seed=HELD_OUT_BANK_SEED if held_out else 0, horizon=horizon,
                    reward=LEADERBOARD_REWARD)


def leaderboard_entry(results: dict[str, Evaluation]) -> dict[str, Any]:
    """One agent's leaderboard keys from its evaluations in ``"sim"`` (and ``"world"``).

    ``return_sim``, ``orr_sim``, ``irae_sim``, ``ae3_sim`` (any grade >= 3 adverse event),
    ``pfs_median_sim``, ``os_1y_sim`` (alive at the end of the first year's last cycle, seen
    within the episode; ``None`` for episodes shorter than a year), ``discontinuation_sim``
    (a therapy stopped for toxicity), ``deaths_sim`` (treatment-related deaths),
    ``death_rate_sim`` (any death), ``return_by_cancer_type_sim``; with a world evaluation
    also ``return_world`` and ``sim_to_real_gap`` (world minus sim). Full summaries, with
    every 95% bootstrap CI as ``<metric>_ci95``, sit under ``"sim"`` / ``"world"``.
    """
    if not isinstance(results, dict) or "sim" not in results or not all(
            isinstance(v, Evaluation) for v in results.values()):
        raise bad("results", results, "a dict of Evaluation with a 'sim' entry (and "
                  "optionally 'world')")
    sim_eval = results["sim"]
    sim = sim_eval.summary()
    by_type = {c: float(sim_eval.returns[sim_eval.cancer_type == c].mean())
               for c in np.unique(sim_eval.cancer_type)}
    out: dict[str, Any] = {
        "return_sim": sim["return"], "orr_sim": sim["orr"], "irae_sim": sim["irae"],
        "ae3_sim": sim["ae3"], "pfs_median_sim": sim["pfs_median_cycles"],
        "os_1y_sim": sim["os_1y"], "discontinuation_sim": sim["discontinuation"],
        "deaths_sim": sim["deaths"], "death_rate_sim": sim["death_rate"],
        "return_by_cancer_type_sim": by_type, "sim": sim,
    }
    if "world" in results:
        world = results["world"].summary()
        out.update(return_world=world["return"],
                   sim_to_real_gap=world["return"] - sim["return"], world=world)
    return out
