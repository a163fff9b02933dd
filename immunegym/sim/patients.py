"""Virtual patients: parameters drawn around a cancer type's means, and their day-0 state.

Continuous parameters are log-normal with the cancer-type mean and a coefficient of variation
of :data:`~immunegym.sim.parameters.PATIENT_CV` (30%); the immune phenotype (hot, excluded,
desert) is drawn from the cancer type's mix and sets T-cell entry, contact, cDC1 and CAF
levels, on top of a patient-level infiltration factor (Kosinsky 2018: infiltration is the main
source of between-subject variation).

The day-0 state starts every compartment near its recruitment/death balance and then relaxes
the immune and stromal compartments for :data:`BURN_IN_DAYS` days with the tumor held at its
baseline size, so that feedbacks (priming, exhaustion, polarization) settle before day 0.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from immunegym.sim.dynamics import Dynamics
from immunegym.sim.parameters import (
    DENSITY,
    PATIENT_CV,
    PHENOTYPE_EFFECTS,
    PHENOTYPES,
    ParameterSet,
)
from immunegym.sim.state import ANTIBODIES, IDX, N_COMPARTMENTS, Patients, SimState

BURN_IN_DAYS = 120
"""Days of immune relaxation before day 0."""


def _lognormal(mean: torch.Tensor | float, cv: float, n: int, generator: torch.Generator,
               device: torch.device) -> torch.Tensor:
    """Log-normal draws with the given mean and coefficient of variation."""
    sigma2 = math.log1p(cv * cv)
    z = torch.randn(n, generator=generator, device=device)
    return torch.as_tensor(mean, device=device) * torch.exp(math.sqrt(sigma2) * z - sigma2 / 2)


def sample_patients(
    params: ParameterSet,
    cancer_type: str,
    n: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> Patients:
    """Draw ``n`` virtual patients of one cancer type.

    Parameters
    ----------
    params
        The parameter set.
    cancer_type
        A cancer-type id (see :data:`~immunegym.sim.parameters.CANCER_TYPES`).
    n
        Number of patients, >= 1.
    generator
        Seeded generator on ``device``.
    device
        Where the tensors live.

    Raises
    ------
    ValueError
        If the cancer type is unknown (the message lists the valid ids) or ``n < 1``.
    """
    ct = params.cancer(cancer_type)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n_patients: expected a positive integer, got {n!r}")
    device = torch.device(device)
    r = params.rates
    mix = torch.tensor(ct.phenotype_mix, device=device)
    phenotype = torch.multinomial(mix, n, replacement=True, generator=generator)
    effects = {
        key: torch.tensor([PHENOTYPE_EFFECTS[p][key] for p in PHENOTYPES], device=device)[
            phenotype]
        for key in ("infiltration", "contact", "cdc1", "caf")
    }

    def ln(mean, cv: float = PATIENT_CV) -> torch.Tensor:
        return _lognormal(mean, cv, n, generator, device)

    doubling = ln(float(ct.doubling_days))
    log_room = math.log(r["tumor_capacity"] / r["tumor_reference"])
    sod = ln(float(ct.baseline_sod_mm))
    baseline_tumor = (sod / r["sod_per_cube_root_gcells"]).pow(3) * 1e9
    cancer_index = sorted(params.cancer_types).index(cancer_type)
    return Patients(
        cancer=torch.full((n,), cancer_index, dtype=torch.long, device=device),
        phenotype=phenotype,
        growth=math.log(2) / doubling / log_room,
        antigenicity=ln(float(ct.antigenicity)),
        infiltration=effects["infiltration"] * ln(1.0),
        contact=(effects["contact"] * ln(1.0)).clamp(max=1.0),
        cdc1=effects["cdc1"] * ln(1.0),
        caf=effects["caf"] * ln(1.0),
        treg=ln(1.0),
        pdl1=ln(float(ct.pdl1)),
        ctla4_depletion=ln(float(ct.ctla4_depletion)),
        chemo_sensitivity=ln(float(ct.chemo_sensitivity)),
        targeted_sensitivity=ln(float(ct.targeted_sensitivity)),
        radio_sensitivity=ln(float(ct.radio_sensitivity)),
        escape_fraction=ln(r["escape_fraction_at_baseline"], r["escape_fraction_cv"]).clamp(
            max=0.5),
        irae_susceptibility=ln(1.0, r["irae_susceptibility_cv"]),
        baseline_tumor=baseline_tumor,
    )


def initial_state(
    patients: Patients,
    dynamics: Dynamics,
    generator: torch.Generator,
    burn_in_days: int = BURN_IN_DAYS,
) -> tuple[Patients, SimState]:
    """The day-0 state of each patient: no drug on board, immune compartments relaxed.

    Returns the patients too, put in the escape phase (:func:`escape_phase`).

    Parameters
    ----------
    patients
        Per-patient parameters.
    dynamics
        The step function (its device is used).
    generator
        Seeded generator for the burn-in noise.
    burn_in_days
        Relaxation days with the tumor held fixed (0 to skip).
    """
    device = dynamics.device
    n = patients.n
    r = dynamics.r
    tumor = patients.baseline_tumor
    cells = torch.zeros(n, N_COMPARTMENTS, device=device)
    resistant = r["resistant_fraction_at_baseline"]
    cells[:, IDX["malignant_resistant"]] = tumor * resistant
    cells[:, IDX["malignant_escape"]] = tumor * patients.escape_fraction
    cells[:, IDX["malignant_sensitive"]] = tumor * (1 - resistant - patients.escape_fraction)
    # Start near balance; the burn-in settles the nonlinear parts.
    cells += dynamics.recruit / dynamics.death.clamp_min(1e-6) * tumor[:, None] * (
        dynamics.recruit > 0)
    for name in ("cd8_memory", "cd4_helper", "treg", "nk", "b_cell"):
        cells[:, IDX[name]] *= patients.infiltration
    cells[:, IDX["cdc1"]] *= patients.cdc1
    cells[:, IDX["fibroblast"]] *= patients.caf
    cells[:, IDX["macrophage_m1"]] = 0.2 * DENSITY["macrophage"] * tumor
    cells[:, IDX["macrophage_m2"]] = 0.8 * DENSITY["macrophage"] * tumor
    t_scale = patients.infiltration * patients.antigenicity * tumor
    cells[:, IDX["cd8_tpex"]] = 0.01 * t_scale
    cells[:, IDX["cd8_effector"]] = 0.01 * t_scale
    cells[:, IDX["cd8_tex"]] = 0.03 * t_scale
    n_therapies = 5
    state = SimState(
        cells=cells,
        antibody=torch.zeros(n, len(ANTIBODIES), 2, device=device),
        chemo=torch.zeros(n, device=device),
        targeted=torch.zeros(n, device=device),
        antigen_release=torch.zeros(n, device=device),
        radio_boost=torch.zeros(n, device=device),
        field_share=torch.zeros(n, device=device),
        day=torch.full((n,), -burn_in_days, dtype=torch.long, device=device),
        alive=torch.ones(n, dtype=torch.bool, device=device),
        death_day=torch.full((n,), -1, dtype=torch.long, device=device),
        irae=torch.zeros(n, dtype=torch.bool, device=device),
        irae_day=torch.full((n,), -1, dtype=torch.long, device=device),
        hold_until=torch.zeros(n, n_therapies, dtype=torch.long, device=device),
        stopped=torch.zeros(n, n_therapies, dtype=torch.bool, device=device),
    )
    no_dose = torch.zeros(n, n_therapies, device=device)
    rules = torch.zeros(n_therapies, dtype=torch.long, device=device)
    # Relax, put every tumor in the escape phase, relax again with the new PD-L1, re-check.
    half = burn_in_days // 2
    for day in range(burn_in_days):
        state = dynamics.step(state, patients, no_dose, generator, rules, hold_tumor=True)
        if day + 1 == half:
            share = torch.rand(n, generator=generator, device=device)
            patients = escape_phase(patients, state, dynamics, treg_share=share)
    return escape_phase(patients, state, dynamics), state


def escape_phase(patients: Patients, state: SimState, dynamics: Dynamics,
                 *, treg_share: torch.Tensor | None = None) -> Patients:
    """Patients whose tumors escape immune control at day 0.

    Patients come to the clinic because their tumor grows: immunoediting's escape phase
    (Schreiber 2011). Where the relaxed immune kill would leave a patient's net growth below
    ``escape_net_growth`` x intrinsic growth, CD8 kill is brought down to that bound by the
    two suppressive axes that checkpoint blockade later releases: a share ``treg_share`` of
    the needed reduction (in log scale) by recruiting more Treg (Treg-rich tumors), the rest
    by adaptive PD-L1 (Taube 2012), up to ``pdl1_max``. What neither covers, faster intrinsic
    growth must outrun.

    Parameters
    ----------
    treg_share
        ``(n,)`` share in [0, 1] of the reduction carried by Treg; ``None`` for PD-L1 only
        (the final check after the Treg compartment has relaxed).
    """
    r = dynamics.r
    log_room = torch.log(r["tumor_capacity"] / state.tumor.clamp_min(1.0)).clamp_min(1e-3)
    intrinsic = patients.growth * log_room
    budget = (1 - r["escape_net_growth"]) * intrinsic
    nk_kill, m1_kill = dynamics.innate_kill(state, patients)
    sig = dynamics.signals(state, patients)
    cd8_budget = (budget - nk_kill - m1_kill).clamp_min(1e-9)
    ratio = (cd8_budget / sig.cd8_kill.clamp_min(1e-12)).clamp(max=1.0)
    treg = patients.treg
    if treg_share is not None:
        # Treg factor f = 1 / (1 + k R / Tconv): scale Treg recruitment so f drops by
        # ratio^share; the compartment relaxes to it during the rest of the burn-in.
        f_target = sig.treg_factor * ratio.pow(treg_share)
        scale = (1 / f_target - 1) / (1 / sig.treg_factor - 1).clamp_min(1e-9)
        treg = treg * scale.clamp(1.0, 10.0)
        ratio = ratio.pow(1 - treg_share)
    # CD8 kill scales with 1 - H_PD1 = 1 / (1 + q^2); solve for the q that gives `ratio`.
    q2 = (sig.pdl1 / r["pd1_half_signal"]).square()
    q2_new = (1 + q2) / ratio - 1
    scale = torch.sqrt(q2_new / q2.clamp_min(1e-12))
    pdl1 = torch.maximum(patients.pdl1, (patients.pdl1 * scale).clamp(max=r["pdl1_max"]))
    # What saturated PD-L1 cannot suppress, faster growth must outrun.
    q2_reached = q2 * (pdl1 / patients.pdl1).square()
    growth = patients.growth
    if treg_share is None:
        cd8_kill = sig.cd8_kill * (1 + q2) / (1 + q2_reached)
        needed = (nk_kill + m1_kill + cd8_kill + r["escape_net_growth"] * intrinsic) / log_room
        growth = torch.maximum(growth, needed)
    return replace(patients, pdl1=pdl1, growth=growth, treg=treg)
