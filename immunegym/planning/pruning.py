"""Readable plans: prune searched dose plans until they read like protocols.

A search returns per-cycle dose plans (``(H, R)`` dose multiples) that often carry a drug
or a dose that adds nothing: a stray anti-CTLA-4 cycle, a half dose in cycle 5, a gap in a
course. :func:`prune_plans` simplifies each plan greedily, one edit per round, and keeps an
edit only when the plan's value (in the scorer that found it) does not fall by more than
``tolerance`` below the current plan's nor below the original plan's. With ``tolerance=0``
the value never falls (what a dropped drug gains is not spent on cutting a useful one); with
more, each edit may cost up to ``tolerance`` but the plan never ends more than ``tolerance``
below the original. The edits, per therapy ``t`` the plan gives:

* ``drop t``: no ``t`` at all;
* ``shorten t``: leave out the last dose of ``t`` (a course one administration shorter;
  offered when ``t`` is given at least twice);
* ``regularize t``: one regular q3w course of ``t`` from its first to its last dose, at the
  dose it got most often (ties: the one nearest the standard dose; offered when ``t``'s doses
  are not already one run of equal doses);
* ``standardize t``: every dose of ``t`` at the standard dose (offered when one differs).

Each edit makes the plan strictly simpler in the order of :func:`plan_complexity`
(therapies, then runs of equal doses, then administrations, then non-standard doses), so
pruning ends. Of the acceptable edits of a round the one leaving the simplest plan is kept
(ties: the higher value, then the earlier edit in the order above). Every round scores the
original plan, the current plan and every candidate edit of every patient in one call of
the score function; the values reported come from the last round's call, the one in which
no edit was acceptable. Should a noisy score put the pruned plan below the original's by
more than ``tolerance`` in that call, one more call scores the original and the plan after
every kept edit, and the last of those that holds is returned (the original if none does):
the values returned always satisfy ``values >= original_values - tolerance``.

The pruned plans print as protocol text with :func:`~.regimen.describe_plan`
(``"anti_pd1 q3w x8"``); :func:`cohort_scorers` builds the world-model scorer of
:func:`~.regimen_search.search` for a cohort's patients and, when the cohort was generated
by ImmuneSim, the scorer of their true outcome (``immunegym plan`` prints both).

Notes
-----
A simulator's score is noisy (:class:`~.scoring.EngineScorer` draws toxicity, death and
dynamics per row): an edit may then be kept or refused by chance. Score with enough
simulations per plan (:data:`PRUNE_SAMPLES` in :func:`cohort_scorers`), or allow a
``tolerance`` of about the noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from immunegym.planning.regimen import CYCLE_WEEKS, THERAPIES, _therapy_names, describe_plan
from immunegym.validation import ValidationError, bad, integer, number

__all__ = [
    "DEFAULT_MAX_ROUNDS",
    "EDITS",
    "PRUNE_SAMPLES",
    "TRUTH_SAMPLES",
    "CohortScorers",
    "PrunedPlans",
    "candidate_edits",
    "cohort_scorers",
    "plan_complexity",
    "prune_plans",
]

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``score(patients (P,), plans (P, C, H, R)) -> (P, C)`` values (higher is better)."""

EDITS: tuple[str, ...] = ("drop", "shorten", "regularize", "standardize")
"""The edit kinds, in the order ties are broken."""
DEFAULT_MAX_ROUNDS = 100
"""Rounds (score calls that may accept an edit) :func:`prune_plans` runs at most."""
MAX_ROUNDS = 100_000
PRUNE_SAMPLES = 32
"""Simulations per plan of :func:`cohort_scorers`' world-model scorer (the search uses the
ensemble size; pruning compares single edits, so it averages more)."""
TRUTH_SAMPLES = 16
"""Simulations per plan of :func:`cohort_scorers`' ImmuneSim scorer."""


@dataclass
class PrunedPlans:
    """Pruned plans of ``P`` patients and what pruning cost.

    Attributes
    ----------
    plans
        ``(P, H, R)`` the pruned plans (dose multiples per cycle).
    values
        ``(P,)`` their values in the score function.
    original_plans
        ``(P, H, R)`` the plans given.
    original_values
        ``(P,)`` their values, from the same call as ``values``.
    texts, original_texts
        The plans as protocol text (:func:`~.regimen.describe_plan`).
    edits
        Per patient, the edits kept, in order (``"drop anti_ctla4"``, ``"shorten chemo to
        x3"``, ...).
    rounds
        Calls of the score function.
    evaluations
        Plans scored in all (every patient, every round).
    tolerance
        The largest fall in value an edit was allowed.
    """

    plans: np.ndarray
    values: np.ndarray
    original_plans: np.ndarray
    original_values: np.ndarray
    texts: list[str]
    original_texts: list[str]
    edits: list[list[str]] = field(default_factory=list)
    rounds: int = 0
    evaluations: int = 0
    tolerance: float = 0.0

    def __repr__(self) -> str:
        n = len(self.values)
        kept = sum(len(e) for e in self.edits)
        return (f"PrunedPlans(patients={n}, edits kept={kept}, rounds={self.rounds}, "
                f"evaluations={self.evaluations}, tolerance={self.tolerance:g})")

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per patient: regimen, value, original regimen and value, edits."""
        return [{"regimen": text, "value": float(value), "original_regimen": original,
                 "original_value": float(original_value), "edits": list(edits)}
                for text, value, original, original_value, edits in zip(
                    self.texts, self.values, self.original_texts, self.original_values,
                    self.edits, strict=True)]


def _runs(column: np.ndarray) -> int:
    """Maximal runs of equal consecutive non-zero doses in one therapy's column."""
    on = column > 0
    starts = on.copy()
    starts[1:] &= ~(on[:-1] & (column[1:] == column[:-1]))
    return int(starts.sum())


def plan_complexity(doses: np.ndarray, standard_dose: float = 1.0) -> tuple[int, int, int, int]:
    """How complex a plan reads: ``(therapies, runs, administrations, non-standard doses)``.

    ``runs`` counts, over therapies, the maximal runs of equal consecutive doses (a regular
    course at one dose is one run). Tuples compare lexicographically; every pruning edit
    lowers this one.

    Parameters
    ----------
    doses
        ``(H, R)`` dose multiples per cycle.
    standard_dose
        The dose that counts as standard.
    """
    d = np.asarray(doses, dtype=np.float32)
    on = d > 0
    return (int(on.any(0).sum()), sum(_runs(d[:, r]) for r in range(d.shape[1])),
            int(on.sum()), int((on & (d != np.float32(standard_dose))).sum()))


def _regular_dose(column: np.ndarray, standard_dose: float) -> float:
    """The dose given most often (ties: nearest the standard dose, then the larger)."""
    values, counts = np.unique(column[column > 0], return_counts=True)
    best = max(zip(values.tolist(), counts.tolist(), strict=True),
               key=lambda vc: (vc[1], -abs(vc[0] - standard_dose), vc[0]))
    return float(best[0])


def candidate_edits(doses: np.ndarray, therapies: Sequence[str] = THERAPIES, *,
                    standard_dose: float = 1.0) -> list[tuple[str, np.ndarray]]:
    """Every edit pruning may try on one plan, as ``(description, edited doses)``.

    The edits of the module docstring, therapy by therapy (columns in order) and, per
    therapy, in the order of :data:`EDITS`; an edit that leaves the plan as it is, or
    repeats an earlier candidate, is left out.

    Parameters
    ----------
    doses
        ``(H, R)`` dose multiples per cycle.
    therapies
        The therapy id of each column (for the descriptions).
    standard_dose
        The dose ``standardize`` sets.
    """
    d = np.asarray(doses, dtype=np.float32)
    std = np.float32(standard_dose)
    out: list[tuple[str, np.ndarray]] = []
    seen = {d.tobytes()}

    def offer(text: str, new: np.ndarray) -> None:
        key = new.tobytes()
        if key not in seen:
            seen.add(key)
            out.append((text, new))

    for r, therapy in enumerate(therapies):
        column = d[:, r]
        given = np.flatnonzero(column > 0)
        if not len(given):
            continue
        new = d.copy()
        new[:, r] = 0
        offer(f"drop {therapy}", new)
        if len(given) >= 2:
            new = d.copy()
            new[given[-1], r] = 0
            offer(f"shorten {therapy} to x{len(given) - 1}", new)
        if _runs(column) >= 2:
            dose = _regular_dose(column, float(std))
            new = d.copy()
            new[given[0]: given[-1] + 1, r] = dose
            n = int(given[-1] - given[0] + 1)
            offer(f"regularize {therapy} to one q{CYCLE_WEEKS}w course x{n} at {dose:g}", new)
        if (column[given] != std).any():
            new = d.copy()
            new[given, r] = std
            offer(f"standardize {therapy} doses to {float(std):g}", new)
    return out


def _scored(score: ScoreFn, patients: np.ndarray, plans: np.ndarray) -> np.ndarray:
    """``score(patients, plans)`` as a checked ``(P, C)`` float array."""
    try:
        values = np.asarray(score(patients, plans), dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise bad("score", score, f"a function returning (P, C) numbers ({err})") from None
    if values.shape != plans.shape[:2]:
        raise ValidationError(f"score: returned shape {values.shape}; expected "
                              f"{plans.shape[:2]} (patients, candidate plans)")
    if not np.isfinite(values).all():
        raise bad("score", "<returned non-finite values>", "finite values for every plan")
    return values


def prune_plans(score: ScoreFn, patients: object, plans: object, *, tolerance: float = 0.0,
                max_rounds: int = DEFAULT_MAX_ROUNDS, therapies: Sequence[str] = THERAPIES,
                standard_dose: float = 1.0, cycle_days: int = 7 * CYCLE_WEEKS) -> PrunedPlans:
    """Simplify each patient's plan while its value does not fall by more than ``tolerance``.

    Parameters
    ----------
    score
        ``score(patients (P,), plans (P, C, H, R)) -> (P, C)`` values, higher better: the
        scorer the plans were searched in (an :class:`~.scoring.EngineScorer`, or any
        :data:`~.regimen_search.ScoreFn`).
    patients
        ``(P,)`` what ``score`` takes for each patient (bank rows); a row may repeat, to
        prune several plans of one patient.
    plans
        ``(P, H, R)`` dose multiples per cycle, one plan per patient.
    tolerance
        The largest fall an edit may cause (``>= 0``; in the units of ``score``), below
        both the current plan's value and the original's: the falls never add up to more
        than ``tolerance`` below the original.
    max_rounds
        Rounds that may keep an edit (one edit per patient and round); one more call
        scores the final plans.
    therapies
        The therapy id of each of the ``R`` columns.
    standard_dose
        The dose ``standardize`` sets (a multiple of the standard dose).
    cycle_days
        Days per cycle, for the protocol text.

    Returns
    -------
    PrunedPlans
        Pruned plans, their values and the originals', texts and the edits kept.

    Raises
    ------
    ValidationError
        Naming the argument: a negative or non-finite ``tolerance``, plans that are not
        ``(P, H, R)`` finite doses ``>= 0``, patients that do not match them, a ``score``
        that is not callable or returns the wrong shape or non-finite values.

    Examples
    --------
    >>> import numpy as np
    >>> def score(patients, plans):  # anti-PD-1 helps, everything else costs 0.1 a dose
    ...     return plans[..., 0].sum(-1) - 0.1 * (plans[..., 1:] > 0).sum((-2, -1))
    >>> plan = np.zeros((1, 4, 5), np.float32)
    >>> plan[0, :, 0] = 1.0
    >>> plan[0, 1, 2] = 0.5
    >>> prune_plans(score, np.arange(1), plan).texts
    ['anti_pd1 q3w x4']
    """
    if not callable(score):
        raise bad("score", score, "a function score(patients, plans) -> (P, C) values")
    tolerance = number("tolerance", tolerance, low=0.0)
    max_rounds = integer("max_rounds", max_rounds, low=0, high=MAX_ROUNDS)
    standard_dose = number("standard_dose", standard_dose, low=0.0, low_open=True)
    cycle_days = integer("cycle_days", cycle_days, low=7, high=3650)
    try:
        original = np.array(plans, dtype=np.float32)
    except (TypeError, ValueError):
        raise bad("plans", plans, "(patients, cycles, therapies) dose multiples") from None
    if original.ndim != 3 or 0 in original.shape:
        raise bad("plans", f"<shape {original.shape}>", "a (patients, cycles, therapies) "
                  "array with every size >= 1")
    if not np.isfinite(original).all() or (original < 0).any():
        raise bad("plans", "<negative or non-finite doses>", "finite dose multiples >= 0")
    names = _therapy_names(therapies, original.shape[2])
    patients = np.asarray(patients)
    if patients.shape != (len(original),):
        raise bad("patients", f"<shape {patients.shape}>", f"({len(original)},) patients, one "
                  "per plan")
    n_p = len(original)
    current = original.copy()
    values = np.zeros(n_p)
    original_values = np.zeros(n_p)
    edits: list[list[str]] = [[] for _ in range(n_p)]
    chain: list[list[np.ndarray]] = [[] for _ in range(n_p)]  # the plan after each edit
    recheck: list[int] = []
    active = np.ones(n_p, dtype=bool)
    rounds = evaluations = 0
    while active.any():
        last = rounds == max_rounds
        rows = np.flatnonzero(active)
        offers = [[] if last else candidate_edits(current[i], names,
                                                  standard_dose=standard_dose)
                  for i in rows]
        n_c = 2 + max(len(o) for o in offers)
        batch = np.repeat(current[rows][:, None], n_c, axis=1)
        batch[:, 0] = original[rows]
        for b, offer in enumerate(offers):
            for c, (_, new) in enumerate(offer):
                batch[b, 2 + c] = new
        scored = _scored(score, patients[rows], batch)
        rounds += 1
        evaluations += batch.shape[0] * batch.shape[1]
        for b, (i, offer) in enumerate(zip(rows, offers, strict=True)):
            floor = max(scored[b, 0], scored[b, 1]) - tolerance
            ok = [c for c in range(len(offer)) if scored[b, 2 + c] >= floor]
            if ok:
                best = min(ok, key=lambda c: (plan_complexity(offer[c][1], standard_dose),
                                              -scored[b, 2 + c], c))
                current[i] = offer[best][1]
                edits[i].append(offer[best][0])
                chain[i].append(current[i].copy())
                continue
            active[i] = False
            original_values[i] = scored[b, 0]
            # A plan left as it was has the original's value (not a second noisy draw).
            values[i] = scored[b, 0] if not edits[i] else scored[b, 1]
            if values[i] < scored[b, 0] - tolerance:
                recheck.append(i)
    if recheck:
        # A noisy score put the pruned plan below the floor in the last call: score the
        # original and every plan on the way in one call and keep the last that holds.
        rows = np.asarray(recheck)
        n_c = 1 + max(len(chain[i]) for i in rows)
        batch = np.repeat(original[rows][:, None], n_c, axis=1)
        for b, i in enumerate(rows):
            batch[b, 1: 1 + len(chain[i])] = chain[i]
        scored = _scored(score, patients[rows], batch)
        rounds += 1
        evaluations += batch.shape[0] * batch.shape[1]
        for b, i in enumerate(rows):
            floor = scored[b, 0] - tolerance
            keep = max((k for k in range(1, 1 + len(chain[i])) if scored[b, k] >= floor),
                       default=0)
            current[i] = batch[b, keep]
            del edits[i][keep:]
            original_values[i], values[i] = scored[b, 0], scored[b, keep]
    return PrunedPlans(
        plans=current, values=values, original_plans=original,
        original_values=original_values,
        texts=[describe_plan(p, names, cycle_days) for p in current],
        original_texts=[describe_plan(p, names, cycle_days) for p in original],
        edits=edits, rounds=rounds, evaluations=evaluations, tolerance=tolerance)


# --------------------------------------------------------------------------- cohort scorers
@dataclass
class CohortScorers:
    """Scorers of a cohort's patients: the world model's and, when known, ImmuneSim's.

    Attributes
    ----------
    world
        The world-model scorer (:class:`~.scoring.EngineScorer` ``"world"``) with the
        search's settings: each patient's baseline biopsy and scan, population-typical
        toxicity.
    world_rows
        ``(P,)`` bank rows of the patients asked for in ``world``.
    truth
        ImmuneSim's scorer of the same patients with their hidden state (``"sim"``), or
        ``None`` when the cohort was not generated by ImmuneSim (or not by this version).
    truth_rows
        ``(P,)`` bank rows in ``truth`` (``None`` with it).
    why_no_truth
        Why ``truth`` is ``None`` (empty otherwise).
    """

    world: Any
    world_rows: np.ndarray
    truth: Any = None
    truth_rows: np.ndarray | None = None
    why_no_truth: str = ""


def _cohort_spec(adata):
    """The :class:`~immunegym.sim.cohort.CohortSpec` a generated cohort records, or why not."""
    from immunegym.sim.cohort import CohortSpec
    from immunegym.sim.parameters import load_parameters

    info = dict(adata.uns.get("cohort") or {})
    raw = info.get("spec")
    if not isinstance(raw, dict) or not raw:
        return None, "not an ImmuneSim cohort (its uns has no cohort spec)"
    version = str(info.get("parameters_version", ""))
    if version != str(load_parameters().version):
        return None, (f"generated with ImmuneSim parameters {version or '?'}, not "
                      f"{load_parameters().version}")

    def plain(value: object) -> object:
        if isinstance(value, np.ndarray | list | tuple):
            return tuple(plain(x) for x in np.asarray(value).tolist())
        if isinstance(value, np.generic):
            return value.item()
        return value

    try:
        return CohortSpec(**{k: plain(v) for k, v in raw.items()}), ""
    except (TypeError, ValueError) as err:  # ValidationError is a ValueError
        return None, f"its cohort spec does not read back ({err})"


def _truth_bank(adata, patients: Sequence[str], device: str):
    """ImmuneSim's patients of a generated cohort at day 0 with their rows, or why not.

    :func:`~immunegym.sim.cohort.simulate_cohort` draws the patients and relaxes them to
    day 0 from a simulator seeded with the spec's seed before anything else, so repeating
    those two calls gives the same patients; their baseline scans (5% imaging noise) are
    checked against the cohort's.
    """
    import torch

    from immunegym.env.patients import PatientBank
    from immunegym.sim import ImmuneSim
    from immunegym.sim.outcomes import sum_of_diameters

    spec, why = _cohort_spec(adata)
    if spec is None:
        return None, None, why
    ids = [f"{spec.name}-P{i:03d}" for i in range(spec.n_patients)]
    missing = [p for p in patients if p not in ids]
    if missing:
        return None, None, f"patients {missing[:3]} are not among its spec's patients"
    sim = ImmuneSim(device=device, seed=spec.seed)
    drawn, state = sim.reset(sim.sample_patients(spec.cancer_type, spec.n_patients))
    sod = sum_of_diameters(state.tumor, sim.params.rates)
    table = adata.uns.get("patients")
    if table is not None and "baseline_sod_mm" in getattr(table, "columns", ()):
        recorded = np.asarray(table["baseline_sod_mm"], dtype=np.float64)
        if len(recorded) != len(ids) or not np.all(
                np.abs(np.log(recorded / sod.cpu().numpy())) < 0.25):
            return None, None, ("its recorded baseline scans do not match the regenerated "
                                "ImmuneSim patients")
    k = state.composition().shape[1]
    n = spec.n_patients
    bank = PatientBank(
        cancer_type=np.array([spec.cancer_type] * n), composition=state.composition(),
        sod_mm=sod, programs=torch.zeros(n, k, 8, device=sim.device),
        program_mask=torch.zeros(n, k, dtype=torch.bool, device=sim.device),
        tox=drawn.toxicity, patient_id=np.array(ids), sim_patients=drawn, sim_state=state)
    return bank, np.asarray([ids.index(p) for p in patients]), ""


def cohort_scorers(adata, patients: Sequence[str], *, model, horizon: int, scenario=None,
                   n_samples: int = PRUNE_SAMPLES, truth_samples: int = TRUTH_SAMPLES,
                   seed: int = 0, device: str = "cpu") -> CohortScorers:
    """The world-model scorer of :func:`~.regimen_search.search` for cohort patients, and
    ImmuneSim's scorer of their true outcome when the cohort was generated by ImmuneSim.

    Parameters
    ----------
    adata
        A registered cohort (the AnnData :func:`~.regimen_search.search` planned from).
    patients
        Patient ids (may repeat: one per plan to score).
    model
        The world model.
    horizon
        Cycles scored.
    scenario
        Reward and rules (default: :func:`~.evaluate.leaderboard_scenario`, as the search).
    n_samples, truth_samples
        Simulations per plan in the world model and in ImmuneSim.
    seed, device
        Seed of the simulations (and of the bank, as the search's) and torch device.

    Raises
    ------
    ValidationError
        For an unknown patient id or a bad count, seed or device.
    """
    from immunegym.env.patients import PatientBank
    from immunegym.planning.evaluate import leaderboard_scenario
    from immunegym.planning.scoring import EngineScorer, _typical_tox

    horizon = integer("horizon", horizon, low=1)
    if isinstance(patients, str) or not isinstance(patients, Sequence) or not patients:
        raise bad("patients", patients, "a non-empty list of patient ids")
    patients = [str(p) for p in patients]
    scenario = (scenario or leaderboard_scenario(horizon=horizon)).updated(horizon=horizon)
    bank = PatientBank.from_anndata(adata, prior=model.leaf_prior(), seed=seed, device=device)
    # As the search: the planner does not know a patient's toxicity proneness.
    bank.tox = _typical_tox(bank.cancer_type, len(bank), str(bank.sod_mm.device))
    rows = np.asarray([bank.index_of(p, field="patients") for p in patients])
    world = EngineScorer("world", scenario, bank, model=model, n_samples=n_samples, seed=seed,
                         device=device)
    truth_bank, truth_rows, why = _truth_bank(adata, patients, device)
    truth = None if truth_bank is None else EngineScorer(
        "sim", scenario, truth_bank, n_samples=truth_samples, seed=seed, device=device)
    return CohortScorers(world, rows, truth, truth_rows, why)
