"""Virtual patients: parameters drawn around a cancer type's means, and their day-0 state.

Heterogeneity is what makes combinations behave as in the clinic: approved combinations are
explained by independent action plus patient-to-patient variability (Palmer & Sorger, Cell
2017; Palmer et al., Clin Cancer Res 2022). So patients differ widely, and in a correlated
way:

* a latent immune responsiveness ``z`` (standard normal) loads on the patient's kill reserve
  (the most CD8 kill possible, in units of intrinsic growth) and antigenicity, so responses
  to different checkpoint inhibitors are correlated;
* the kill reserve is wide (log-normal, ``kill_reserve_cv``) and scales with T-cell access
  (the phenotype's ``access``) and with antigenicity (``reserve_antigen_exponent``):
  patients below about 1.3 cannot respond to any immunotherapy (primary resistance);
* an MHC-I-low escape subclone pre-exists in a share of tumors (``escape_presence``; B2M /
  JAK loss, Zaretsky 2016, Sade-Feldman 2017) and otherwise arises by mutation;
* the immune phenotype (hot, excluded, desert) sets T-cell entry, contact, cDC1 and CAF
  levels on top of a patient-level infiltration factor (Kosinsky 2018);
* other continuous parameters are log-normal around the cancer-type mean with a CV of
  :data:`~immunegym.sim.parameters.PATIENT_CV` (30%) unless a rate says otherwise;
* a share ``driver_prevalence`` carries the cancer type's actionable driver (the only
  patients targeted therapy acts in).

The day-0 state starts every compartment near its recruitment/death balance and relaxes the
immune and stromal compartments for :data:`BURN_IN_DAYS` days with the tumor held at its
baseline size. Patients come to the clinic because their tumor grows (immunoediting's
escape phase, Schreiber 2011): where the relaxed kill would hold the tumor back more than
the patient's drawn escape margin allows, the tumor has escaped by adaptive PD-L1 and Treg
recruitment, each patient with its own mix (:func:`escape_phase`).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from immunegym.data.vocab import THERAPIES
from immunegym.sim.dynamics import Dynamics, kill_curve, kill_curve_inverse
from immunegym.sim.parameters import (
    DENSITY,
    PATIENT_CV,
    PHENOTYPE_EFFECTS,
    PHENOTYPES,
    WILD_TYPE,
    ParameterSet,
)
from immunegym.sim.state import ANTIBODIES, IDX, N_COMPARTMENTS, Patients, SimState
from immunegym.sim.toxicity import ToxState, sample_tox_patients
from immunegym.validation import ValidationError, integer

BURN_IN_DAYS = 120
"""Days of immune relaxation before day 0."""


def _lognormal(mean: torch.Tensor | float, cv: float, z: torch.Tensor) -> torch.Tensor:
    """Log-normal values with the given mean and coefficient of variation from normals ``z``."""
    sigma2 = math.log1p(cv * cv)
    return torch.as_tensor(mean, device=z.device) * torch.exp(math.sqrt(sigma2) * z - sigma2 / 2)


def sample_patients(
    params: ParameterSet,
    cancer_type: str,
    n: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    *,
    driver: str | None = None,
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
    driver
        ``None`` for the cancer type's natural driver prevalence; the driver's name (for
        example ``"BRAF_V600"``) for driver-positive patients only (a targeted-therapy
        trial); ``"wild_type"`` for driver-negative patients only. The same random numbers
        are drawn either way, so selections differ only in the driver.

    Raises
    ------
    ValueError
        If the cancer type or driver is unknown (the message lists the valid values) or
        ``n < 1``.
    """
    ct = params.cancer(cancer_type)
    n = integer("n_patients", n, low=1)
    valid = ([ct.driver] if ct.driver_prevalence > 0 else []) + [WILD_TYPE]
    if driver is not None and (not isinstance(driver, str) or driver not in valid):
        raise ValidationError(
            f"driver: unknown driver {driver!r} for {cancer_type}; expected one of {valid} "
            "or None (the natural prevalence)")
    device = torch.device(device)
    r = params.rates
    mix = torch.tensor(ct.phenotype_mix, device=device)
    phenotype = torch.multinomial(mix, n, replacement=True, generator=generator)
    effects = {
        key: torch.tensor([PHENOTYPE_EFFECTS[p][key] for p in PHENOTYPES], device=device)[
            phenotype]
        for key in ("infiltration", "contact", "cdc1", "caf", "access")
    }

    def normal() -> torch.Tensor:
        return torch.randn(n, generator=generator, device=device)

    def uniform() -> torch.Tensor:
        return torch.rand(n, generator=generator, device=device)

    def ln(mean, cv: float = PATIENT_CV) -> torch.Tensor:
        return _lognormal(mean, cv, normal())

    latent = normal()
    loading = r["immune_latent_loading"]

    def correlated(mean, cv: float) -> torch.Tensor:
        z = loading * latent + math.sqrt(1 - loading * loading) * normal()
        return _lognormal(mean, cv, z)

    doubling = ln(float(ct.doubling_days))
    log_room = math.log(r["tumor_capacity"] / r["tumor_reference"])
    sod = ln(float(ct.baseline_sod_mm))
    baseline_tumor = (sod / r["sod_per_cube_root_gcells"]).pow(3) * 1e9
    cancer_index = sorted(params.cancer_types).index(cancer_type)
    carries = (uniform() < ct.driver_prevalence).float()
    if driver == WILD_TYPE:
        carries = torch.zeros_like(carries)
    elif driver is not None:
        carries = torch.ones_like(carries)
    has_escape = (uniform() < r["escape_presence"]).float()
    # The checkpoint an escaping tumor leans on: CTLA-4-dependent Treg suppression for a
    # share `treg_escape` of tumors of the type, adaptive PD-L1 for the others (one dominant
    # mechanism per tumor: anti-CTLA-4 and anti-PD-1 act through distinct cells, Wei et al.
    # Cell 2017).
    via_treg = (uniform() < ct.treg_escape).float()
    # Primary resistance (antigen presentation or IFN-g pathway loss): a refractory share
    # whose kill reserve cannot outgrow the tumor whatever the therapy.
    refractory = uniform() < r["refractory_share"]
    antigenicity = correlated(float(ct.antigenicity), PATIENT_CV)
    # T-cell access (phenotype) and neoantigen load bound the kill a patient can reach.
    reachable = effects["access"] * (antigenicity / r["antigen_reference"]).pow(
        r["reserve_antigen_exponent"])
    kill_reserve = torch.where(
        refractory, _lognormal(r["refractory_kill_reserve"], r["kill_reserve_cv"], normal()),
        correlated(float(ct.kill_reserve), r["kill_reserve_cv"]) * reachable)
    return Patients(
        cancer=torch.full((n,), cancer_index, dtype=torch.long, device=device),
        phenotype=phenotype,
        growth=math.log(2) / doubling / log_room,
        kill_reserve=kill_reserve,
        antigenicity=antigenicity,
        infiltration=effects["infiltration"] * ln(1.0),
        contact=(effects["contact"] * ln(1.0)).clamp(max=1.0),
        cdc1=effects["cdc1"] * ln(1.0),
        caf=effects["caf"] * ln(1.0),
        treg=ln(1.0),
        treg_potency=torch.ones(n, device=device),
        escape_via_treg=via_treg,
        pdl1=ln(float(ct.pdl1), r["pdl1_cv"]),
        ctla4_depletion=ln(float(ct.ctla4_depletion), r["ctla4_depletion_cv"]),
        chemo_sensitivity=ln(float(ct.chemo_sensitivity), r["chemo_sensitivity_cv"]),
        targeted_sensitivity=ln(float(ct.targeted_sensitivity), r["targeted_sensitivity_cv"]),
        radio_sensitivity=ln(float(ct.radio_sensitivity)),
        driver=carries,
        escape_fraction=has_escape * ln(r["escape_fraction_at_baseline"],
                                        r["escape_fraction_cv"]).clamp(max=0.5),
        baseline_tumor=baseline_tumor,
        **(vars(sample_tox_patients(r, n, generator, device))
           | {"chemo_toxicity": torch.full((n,), ct.chemo_toxicity, device=device)}),
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
    n_therapies = len(THERAPIES)
    zeros = torch.zeros(n, device=device)
    state = SimState(
        cells=cells,
        antibody=torch.zeros(n, len(ANTIBODIES), 2, device=device),
        chemo=zeros.clone(), targeted=zeros.clone(), antigen_release=zeros.clone(),
        radio_boost=zeros.clone(), field_share=zeros.clone(), memory=zeros.clone(),
        given=torch.zeros(n, n_therapies, device=device),
        day=torch.full((n,), -burn_in_days, dtype=torch.long, device=device),
        alive=torch.ones(n, dtype=torch.bool, device=device),
        death_day=torch.full((n,), -1, dtype=torch.long, device=device),
        tox=ToxState.start(patients.toxicity),
    )
    no_dose = torch.zeros(n, n_therapies, device=device)
    rules = torch.zeros(n_therapies, dtype=torch.long, device=device)
    # Each patient's escape: a margin of net growth, and the checkpoint it escapes through
    # (drawn with the patient: `escape_via_treg`).
    margin = r["escape_net_growth"] + (1 - r["escape_net_growth"]) * torch.rand(
        n, generator=generator, device=device)
    treg_share = patients.escape_via_treg
    # Relax, put every tumor in the escape phase, relax again with the new PD-L1, re-check.
    half = burn_in_days // 2
    pdl1_drawn = patients.pdl1
    for day in range(burn_in_days):
        state = dynamics.step(state, patients, no_dose, generator, rules, hold_tumor=True)
        if day + 1 == half:
            patients = escape_phase(patients, state, dynamics, margin, treg_share, pdl1_drawn)
    patients = escape_phase(patients, state, dynamics, margin, treg_share, pdl1_drawn)
    # The burn-in is not a course: day 0 starts with a clean treatment record.
    state = replace(state, tox=ToxState.start(patients.toxicity),
                    given=torch.zeros(n, n_therapies, device=device))
    return patients, state


def escape_phase(patients: Patients, state: SimState, dynamics: Dynamics,
                 margin: torch.Tensor, treg_share: torch.Tensor,
                 pdl1_floor: torch.Tensor) -> Patients:
    """Patients whose tumors escape immune control at day 0.

    A patient's day-0 net growth is a share ``margin`` of what the tumor would grow against
    innate immunity alone. Where CD8 kill would hold it back more, the tumor has escaped by
    suppressing the functional effector ratio with its own mix of two checkpoint-dependent
    mechanisms: a share ``treg_share`` of the needed reduction (in log scale) by more potent,
    CTLA-4-dependent Treg suppression, the rest by adaptive PD-L1 (Taube 2012), up to
    ``pdl1_max``. What PD-L1 cannot cover, immunoediting removed: the kill reserve is
    lowered to fit (less immunogenic variants were selected). Where innate kill alone would
    stop the tumor, intrinsic growth is raised to outrun it. Called twice during the burn-in
    (the second call corrects for the feedback of the first on exhaustion), it moves PD-L1
    and Treg potency either way, never below the patient's drawn PD-L1 and potency 1.

    Parameters
    ----------
    margin
        ``(n,)`` share in (0, 1] of the innate-limited growth left as net growth at day 0.
    treg_share
        ``(n,)`` share in [0, 1] of the reduction carried by Treg.
    pdl1_floor
        ``(n,)`` each patient's drawn PD-L1.
    """
    r = dynamics.r
    log_room = torch.log(r["tumor_capacity"] / state.tumor.clamp_min(1.0)).clamp_min(1e-3)
    nk_kill, m1_kill = dynamics.innate_kill(state, patients)
    innate = nk_kill + m1_kill
    # Innate kill may take at most half of intrinsic growth: a tumor that NK cells and
    # macrophages alone would stop has grown faster than its draw (assumption).
    growth = torch.maximum(patients.growth, 2 * innate / log_room)
    patients = replace(patients, growth=growth)
    intrinsic = growth * log_room
    sig = dynamics.signals(state, patients)
    capacity = dynamics.kill_capacity(patients)
    allowed = (1 - margin) * (intrinsic - innate)
    target_level = (allowed / capacity).clamp(1e-9, 1 - 1e-6)
    current_level = (sig.cd8_kill / capacity).clamp(1e-12, 1 - 1e-6)
    # Change of the functional ratio that brings the kill to its allowance (< 1: reduce).
    ratio = kill_curve_inverse(target_level, r) / kill_curve_inverse(current_level, r)
    # Treg factor f = 1 / (1 + k p R / Tconv): potency p scales 1/f - 1.
    f_target = (sig.treg_factor * ratio.pow(treg_share)).clamp(max=1.0)
    scale = (1 / f_target - 1) / (1 / sig.treg_factor - 1).clamp_min(1e-9)
    potency = (patients.treg_potency * scale).clamp(1.0, r["treg_potency_max"])
    reached = 1 / (1 + (1 / sig.treg_factor - 1) * potency / patients.treg_potency)
    ratio = ratio * sig.treg_factor / reached  # what is left for PD-L1
    # 1 - H_PD1 = 1 / (1 + q^2): solve for the q that scales it by `ratio`.
    q2 = (sig.pdl1 / r["pd1_half_signal"]).square()
    q2_new = ((1 + q2) / ratio - 1).clamp_min(0)
    pdl1 = (patients.pdl1 * torch.sqrt(q2_new / q2.clamp_min(1e-12))).clamp(max=r["pdl1_max"])
    pdl1 = torch.maximum(pdl1, pdl1_floor)
    # What saturated PD-L1 cannot suppress, immunoediting removed.
    q2_reached = q2 * (pdl1 / patients.pdl1).square()
    left = ratio * (1 + q2_reached) / (1 + q2)  # remaining change of the ratio
    current = kill_curve_inverse(current_level, r) * sig.treg_factor / reached * (
        (1 + q2) / (1 + q2_reached))
    needed = (target_level / kill_curve(current, r).clamp_min(1e-12)).clamp(max=1.0)
    kill_reserve = torch.where(left < 0.999, patients.kill_reserve * needed,
                               patients.kill_reserve)
    return replace(patients, pdl1=pdl1, treg_potency=potency, kill_reserve=kill_reserve)
