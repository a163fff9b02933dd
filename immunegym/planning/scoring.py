"""Score many candidate regimens for many patients at once by simulating them.

An :class:`EngineScorer` runs per-cycle dose plans through the same batched
:class:`~immunegym.env.engine.Engine` the environments use, so a plan is judged by the env's
own reward with its clinical rules (holds, caps, toxicity, death, RECIST). Planning in the
world model and the oracle's planning in ImmuneSim differ only in the simulator passed.

Rows are laid out sample-major: sample ``s`` of every (patient, candidate) pair is a
contiguous block, so in the world model (with ``n_samples`` equal to the ensemble size)
sample ``s`` is ensemble member ``s`` for every candidate; a plan's score is the mean over
members (the epistemic average) and every candidate meets the same members. A risk-averse
scorer (``pessimism`` k > 0) scores ``mean - k * std`` over the samples instead, so a plan the
members disagree on ranks below an equally good plan they agree on. The engine is
re-seeded for every call (common random numbers): two plans are compared under the same
draws of toxicity, death and dynamics noise.
"""

from __future__ import annotations

import numpy as np
import torch

from immunegym.env.engine import Engine
from immunegym.env.patients import PatientBank
from immunegym.env.scenario import Scenario
from immunegym.sim.parameters import load_parameters
from immunegym.sim.toxicity import typical_tox_patients, with_regimen_toxicity
from immunegym.validation import ValidationError, bad, choice, integer, number
from immunegym.validation import device as validate_device
from immunegym.validation import seed as validate_seed

SIMULATORS: tuple[str, ...] = ("world", "sim")
MAX_SAMPLES = 10_000
"""Most simulations per plan."""


class EngineScorer:
    """Expected (or risk-adjusted) return of dose plans in one simulator.

    Parameters
    ----------
    simulator
        ``"world"`` (the planner's model) or ``"sim"`` (ImmuneSim: the oracle's model).
    scenario
        Horizon, cycle length, reward and clinical rules of the episodes scored.
    bank
        The patients (for ``"sim"``, with their hidden state).
    model
        World model (``"world"``; the pretrained default when ``None``).
    n_samples
        Simulations per plan (default: the ensemble size for the world model, 2 for
        ImmuneSim, whose dynamics are stochastic).
    seed
        Seed of the simulations (the same for every call).
    device
        Torch device.
    max_rows
        Rows simulated at once (memory bound).
    pessimism
        ``k >= 0``: a plan scores the mean over its samples minus ``k`` times their standard
        deviation (over ensemble members in the world model: epistemic risk; over noise
        draws in ImmuneSim). 0 (the default) is the plain mean; about 1 is a sensible
        risk-averse setting for the world model, whose members disagree most where it has
        seen little data.

    Raises
    ------
    ValidationError
        Naming the argument: unknown simulator, not a Scenario or PatientBank, ``n_samples``
        or ``max_rows`` out of range, ``pessimism`` negative or not finite.
    """

    def __init__(self, simulator: str, scenario: Scenario, bank: PatientBank, *, model=None,
                 n_samples: int | None = None, seed: int = 0, device: str = "cpu",
                 max_rows: int = 4096, pessimism: float = 0.0) -> None:
        choice("simulator", simulator, SIMULATORS)
        if not isinstance(scenario, Scenario):
            raise bad("scenario", scenario, "a Scenario")
        if not isinstance(bank, PatientBank):
            raise bad("bank", bank, "a PatientBank")
        if n_samples is not None:
            n_samples = integer("n_samples", n_samples, low=1, high=MAX_SAMPLES)
        seed = validate_seed("seed", seed)
        device = validate_device("device", device)
        max_rows = integer("max_rows", max_rows, low=1, high=10_000_000)
        self.pessimism = number("pessimism", pessimism, low=0.0)
        if simulator == "world" and model is None:
            from immunegym.world_model import load

            model = load(device=device)
        if simulator == "world" and not hasattr(model, "members"):
            raise bad("model", model, "a WorldModel or None (the pretrained default)")
        self.simulator, self.scenario, self.bank, self.model = simulator, scenario, bank, model
        if n_samples is None:
            n_samples = len(model.members) if simulator == "world" else 2
        self.n_samples, self.seed, self.device = int(n_samples), int(seed), device
        self.max_rows = max(int(max_rows), self.n_samples)
        self.simulated = 0  # patient-cycles simulated so far (the compute spent)
        self._engines: dict[int, Engine] = {}

    def _engine(self, n: int) -> Engine:
        if n not in self._engines:
            self._engines = {n: Engine(self.simulator, self.scenario, n, model=self.model,
                                       bank=self.bank, device=self.device, seed=self.seed,
                                       observation_noise=False)}
        return self._engines[n]

    def __call__(self, patients: np.ndarray, plans: np.ndarray) -> np.ndarray:
        """Mean return (minus ``pessimism`` x its spread over samples) of ``plans``
        (``(P, C, H, R)`` dose multiples) for bank rows ``patients`` (``(P,)``): ``(P, C)``."""
        try:
            plans = np.asarray(plans, dtype=np.float32)
        except (TypeError, ValueError):
            raise bad("plans", plans, "(P, C, H, R) dose multiples") from None
        if plans.ndim != 4:
            raise bad("plans", f"<shape {plans.shape}>", "(patients, candidates, cycles, "
                      "therapies) dose multiples")
        p, c, h, r = plans.shape
        if h > self.scenario.horizon:
            raise ValidationError(f"plans: {h} cycles; the scenario's horizon is "
                             f"{self.scenario.horizon}")
        if not np.isfinite(plans).all() or (plans < 0).any():
            raise bad("plans", "<negative or non-finite doses>", "finite dose multiples >= 0")
        patients = np.asarray(patients)
        if patients.shape != (p,):
            raise bad("patients", f"<shape {patients.shape}>", f"({p},) bank rows, one per "
                      "row of plans")
        if p and (patients.min() < 0 or patients.max() >= len(self.bank)):
            raise bad("patients", patients.tolist()[:5], f"bank rows in 0..{len(self.bank) - 1}")
        pairs_patient = np.repeat(np.asarray(patients), c)
        pairs_plan = plans.reshape(p * c, h, r)
        s = self.n_samples
        group = max(1, min(len(pairs_plan), self.max_rows // s))
        values = np.zeros(p * c)
        for start in range(0, len(pairs_plan), group):
            idx = np.arange(start, min(start + group, len(pairs_plan)))
            # Pad the last group so every call uses one engine size (same member blocks).
            pad = np.concatenate([idx, np.full(group - len(idx), idx[-1])])
            values[idx] = self._score(pairs_patient[pad], pairs_plan[pad])[: len(idx)]
        return values.reshape(p, c)

    def _score(self, patients: np.ndarray, plans: np.ndarray) -> np.ndarray:
        returns = self._returns(patients, plans)
        value = returns.mean(0)
        if self.pessimism > 0:
            # Population std over samples (one sample has no spread to be wary of).
            value = value - self.pessimism * returns.std(0, correction=0)
        return value.cpu().numpy()

    def _returns(self, patients: np.ndarray, plans: np.ndarray) -> torch.Tensor:
        """``(n_samples, G)`` returns of each sample of ``G`` (patient, plan) pairs."""
        s, g = self.n_samples, len(patients)
        engine = self._engine(s * g)
        engine.seed(self.seed)
        dev = engine.device
        rows = torch.arange(s * g, device=dev)
        engine.reset_rows(rows, torch.as_tensor(np.tile(patients, s), device=dev))
        doses = torch.as_tensor(np.tile(plans, (s, 1, 1)), device=dev)
        total = torch.zeros(s * g, device=dev)
        running = torch.ones(s * g, dtype=torch.bool, device=dev)
        for cycle in range(plans.shape[1]):
            out = engine.step(doses[:, cycle])
            total += out.reward * running
            running &= ~(out.terminated | out.truncated)
            self.simulated += int(running.sum())
            if not bool(running.any()):
                break
        return total.reshape(s, g)


def belief_bank(cancer_type: np.ndarray, composition: np.ndarray, sod_mm: np.ndarray,
                patient_id: np.ndarray, *, n_programs: int = 8,
                device: str = "cpu") -> PatientBank:
    """A bank of what the clinic observed at baseline (biopsy fractions, scanned SOD).

    This is the planner's belief about its patients: no hidden state, and population-typical
    toxicity parameters (:func:`~immunegym.sim.toxicity.typical_tox_patients`) since nobody
    measures them.
    """
    comp = torch.as_tensor(np.asarray(composition, dtype=np.float32), device=device)
    n, k = comp.shape
    return PatientBank(
        cancer_type=np.asarray(cancer_type).astype(str), composition=comp,
        sod_mm=torch.as_tensor(np.asarray(sod_mm, dtype=np.float32), device=device),
        programs=torch.zeros(n, k, n_programs, device=device),
        program_mask=torch.zeros(n, k, dtype=torch.bool, device=device),
        tox=_typical_tox(np.asarray(cancer_type).astype(str), n, device),
        patient_id=np.asarray(patient_id).astype(str))


def _typical_tox(cancer_type: np.ndarray, n: int, device: str):
    """Population-typical toxicity parameters, with each cancer type's chemo regimen."""
    params = load_parameters()
    tox = typical_tox_patients(params.rates, n, device)
    if all(c in params.cancer_types for c in cancer_type):
        tox = with_regimen_toxicity(tox, cancer_type, params)
    return tox


def scorer_for(episodes, simulator: str = "world", *, model=None, n_samples: int | None = None,
               seed: int = 0, device: str = "cpu", max_rows: int = 4096,
               pessimism: float = 0.0) -> tuple[EngineScorer, np.ndarray]:
    """A scorer for the patients of an :class:`~.policy.EpisodeStart`, and their rows.

    ``"world"`` plans from what was observed (:func:`belief_bank`); ``"sim"`` is the oracle:
    it is handed ImmuneSim's own patients, hidden state included (the same bank the
    scenario's ``bank_seed`` draws for the evaluation env). A mid-episode belief
    (:func:`~.policy.episode_now`: the latest biopsy and scan, the remaining horizon) takes
    the same ``"world"`` path. ``pessimism`` is :class:`EngineScorer`'s.
    """
    from immunegym.planning.policy import EpisodeStart

    choice("simulator", simulator, SIMULATORS)
    if not isinstance(episodes, EpisodeStart):
        raise bad("episodes", episodes, "an EpisodeStart")
    number("pessimism", pessimism, low=0.0)  # before the (costly) oracle bank is drawn
    sc = episodes.scenario
    if simulator == "world":
        bank = belief_bank(episodes.cancer_type, episodes.composition, episodes.sod_mm,
                           episodes.patient_id, device=device)
        rows = np.arange(len(bank))
    elif simulator == "sim":
        bank = PatientBank.from_sim(sc.cancer_types, sc.bank_size, seed=sc.bank_seed,
                                    device=device)
        rows = np.asarray([bank.index_of(str(p)) for p in episodes.patient_id])
    else:
        raise bad("simulator", simulator, "'world' or 'sim'")
    scorer = EngineScorer(simulator, sc, bank, model=model, n_samples=n_samples, seed=seed,
                          device=device, max_rows=max_rows, pessimism=pessimism)
    return scorer, rows
