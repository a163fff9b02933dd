"""ImmuneSim's daily step: a pure function from one :class:`SimState` to the next.

The model (one day per step, all patients at once):

Treatment
    Scheduled doses pass the protocol rules (:mod:`.toxicity`: holds after irAEs, chemo
    delays for low neutrophils, reduced doses, stops) and enter the pharmacokinetics
    (:mod:`.pk`): tumor receptor occupancy saturates at the standard dose, systemic
    exposure does not.
Tumor
    Three subclones grow by Gompertz ``r ln(K/T)``. CD8 kill is the de Pillis 2005 ratio
    form ``d S(x)``, ``S(x) = x^l / (s + x^l)``, on the *functional* effector-to-tumor ratio
    ``x``: effectors in contact with tumor times the QSP-IO suppressions
    ``(1 - H_PD1) x Treg factor x (1 - H_MDSC) x (1 - H_TGFb)`` (Jafarnejad 2019), so an
    overwhelming T-cell response overcomes suppression. The kill is bounded per patient:
    ``d = kill_reserve x intrinsic growth`` at the reference burden, where the kill reserve
    (antigen presentation, T-cell access) varies widely between patients; a patient whose
    reserve is below about 1.3 cannot respond to any immunotherapy. NK and M1 macrophages
    add small kills; the immune-escape (MHC-I-low) subclone is seen by CD8 T cells only at
    ``escape_cd8_visibility`` and fully by NK cells. Chemotherapy kills
    ``K (1 - exp(-delta M))`` (de Pillis 2009). Targeted therapy acts only in patients who
    carry the cancer type's actionable driver: it blocks and kills the sensitive clone;
    resistant clones pre-exist and arise by mutation (Bozic 2013).
CD8 T cells
    Priming (antigenicity x cDC1 x CD4 help x CTLA-4 blockade x antigen release) feeds
    TCF1+ progenitors (Tpex), which self-renew under a niche limit and differentiate into
    effectors with a proliferative burst; PD-1 blockade raises both. Tumor-specific memory
    precursors (a share of the largest Tpex pool, long-lived) re-enter the Tpex pool at a
    recall rate and set a floor of its niche, so responses persist after the drug is gone
    and when the tumor is small. Effectors exhaust at ``0.1/d x H_PD1`` (Jafarnejad 2019); exhausted
    cells never return.
Other cells
    Recruitment in proportion to the tumor burden (vasculature), modulated by phenotype and
    drugs; anti-CTLA-4 depletes Treg by ADCC (Milberg 2019); monocytes become M1 or M2
    macrophages, which interconvert at 0.25/d (M1 -> M2, IL-10) and 0.02/d (M2 -> M1, IFN-g).
Signals
    Quasi-steady IFN-g, PD-L1 (adaptive: raised by IFN-g), TGF-b, IL-10 and MDSC suppression,
    from the current cell ratios.
Toxicity and death
    Neutrophils, adverse events, protocol consequences and treatment-related death
    (:mod:`.toxicity`); tumor-related death rises with burden squared.
Noise
    Every birth, death and transition count is drawn: Poisson below
    ``langevin_threshold`` events (tau-leaping), Gaussian (chemical Langevin) above.
    Recruitment carries a small day-to-day log-normal environmental noise.

Every constant comes from :data:`immunegym.sim.parameters.RATES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from immunegym.sim.parameters import DENSITY, ParameterSet
from immunegym.sim.pk import RADIO, Exposure, Pharmacokinetics
from immunegym.sim.state import IDX, N_CLONES, N_COMPARTMENTS, Patients, SimState
from immunegym.sim.toxicity import (
    DEFAULT_RULES,
    TUMOR_DEATH,
    ProtocolRules,
    Toxicity,
)

_MS, _MR, _ME = IDX["malignant_sensitive"], IDX["malignant_resistant"], IDX["malignant_escape"]
_MEM, _EFF, _TPEX, _TEX = IDX["cd8_memory"], IDX["cd8_effector"], IDX["cd8_tpex"], IDX["cd8_tex"]
_CD4, _TREG, _NK, _B, _PC = IDX["cd4_helper"], IDX["treg"], IDX["nk"], IDX["b_cell"], IDX[
    "plasma_cell"]
_CDC1, _DC, _MONO, _M1, _M2 = IDX["cdc1"], IDX["dc_other"], IDX["monocyte"], IDX[
    "macrophage_m1"], IDX["macrophage_m2"]
_MDSC, _NEUT, _MAST, _FIB, _ENDO = IDX["mdsc"], IDX["neutrophil"], IDX["mast_cell"], IDX[
    "fibroblast"], IDX["endothelial"]

_LYMPHOCYTES = (_MEM, _EFF, _TPEX, _TEX, _CD4, _TREG, _NK, _B, _PC)
_MYELOID = (_CDC1, _DC, _MONO, _M1, _M2, _MDSC, _NEUT, _MAST)

# Transitions (source, destination); the burst multiplies arrivals of effectors.
_FLOWS: tuple[tuple[int, int], ...] = (
    (_TPEX, _EFF),   # differentiation
    (_EFF, _TEX),    # exhaustion
    (_MONO, _M1),    # monocyte -> M1-like
    (_MONO, _M2),    # monocyte -> M2-like
    (_M1, _M2),      # polarization, IL-10 driven
    (_M2, _M1),      # repolarization, IFN-g driven
    (_B, _PC),       # plasma differentiation
)


@dataclass(frozen=True)
class Signals:
    """Quasi-steady signals of one day, each ``(n,)``; useful for plots and expression."""

    occupancy_pd1: torch.Tensor
    occupancy_ctla4: torch.Tensor
    ifn_gamma: torch.Tensor
    pdl1: torch.Tensor
    h_pd1: torch.Tensor
    tgf_beta: torch.Tensor
    il10: torch.Tensor
    h_mdsc: torch.Tensor
    treg_factor: torch.Tensor
    suppression: torch.Tensor
    cd8_kill: torch.Tensor
    chemo_effect: torch.Tensor
    targeted_effect: torch.Tensor


def kill_curve(ratio: torch.Tensor, rates: dict[str, float]) -> torch.Tensor:
    """de Pillis 2005 ``S(x) = x^l / (s + x^l)`` of a functional effector:tumor ratio."""
    rl = ratio.clamp_min(0).pow(rates["cd8_kill_exponent"])
    return rl / (rates["cd8_kill_half_ratio"] + rl)


def kill_curve_inverse(level: torch.Tensor, rates: dict[str, float]) -> torch.Tensor:
    """The ratio ``x`` with ``S(x) = level`` (``level`` in (0, 1))."""
    y = level.clamp(1e-9, 1 - 1e-6)
    return (rates["cd8_kill_half_ratio"] * y / (1 - y)).pow(1 / rates["cd8_kill_exponent"])


class Dynamics:
    """The step function with its constants laid out as tensors on one device.

    Parameters
    ----------
    params
        The parameter set (rates and cancer types).
    device
        Torch device of every tensor the step touches.
    """

    def __init__(self, params: ParameterSet, device: torch.device | str = "cpu") -> None:
        self.params = params
        self.device = torch.device(device)
        r = params.rates
        self.r = r
        self.pk = Pharmacokinetics(r, self.device)
        self.toxicity = Toxicity(r, self.device)
        self.log_room_reference = math.log(r["tumor_capacity"] / r["tumor_reference"])
        death = torch.zeros(N_COMPARTMENTS)
        density = torch.zeros(N_COMPARTMENTS)
        for name, rate in {
            "cd8_memory": "memory_death", "cd4_helper": "cd4_death", "treg": "treg_death",
            "nk": "nk_death", "b_cell": "b_death", "plasma_cell": "plasma_death",
            "cdc1": "cdc1_death", "dc_other": "dc_death", "monocyte": "monocyte_death",
            "macrophage_m1": "macrophage_death", "macrophage_m2": "macrophage_death",
            "mdsc": "mdsc_death", "neutrophil": "neutrophil_death", "mast_cell": "mast_death",
            "fibroblast": "fibroblast_turnover", "endothelial": "endothelial_turnover",
            "cd8_tpex": "tpex_death", "cd8_effector": "effector_death", "cd8_tex": "tex_death",
        }.items():
            death[IDX[name]] = r[rate]
        for name, value in DENSITY.items():
            if name in IDX:
                density[IDX[name]] = value
        # Monocytes are recruited for their own death and for differentiation; macrophage
        # mass then follows from the differentiation flux (DENSITY["macrophage"] is implied).
        density[IDX["monocyte"]] = (
            DENSITY["macrophage"] * r["macrophage_death"] / r["monocyte_differentiation"]
        )
        recruit = death.clone()
        recruit[IDX["monocyte"]] = r["monocyte_death"] + r["monocyte_differentiation"]
        self.death = death.to(self.device)
        self.recruit = (recruit * density).to(self.device)  # per tumor cell per day
        chemo_kill = torch.zeros(N_COMPARTMENTS)
        chemo_kill[list(_MYELOID)] = r["chemo_kill_myeloid"]
        chemo_kill[[_MEM, _CD4, _TREG, _B, _PC, _TEX]] = r["chemo_kill_lymphocyte"]
        chemo_kill[[_TPEX, _EFF]] = 3 * r["chemo_kill_lymphocyte"]  # proliferating
        chemo_kill[_NK] = r["chemo_kill_nk"]
        self.chemo_kill = chemo_kill.to(self.device)
        alpha = torch.full((N_COMPARTMENTS,), r["radio_alpha_other"])
        alpha[list(_LYMPHOCYTES)] = r["radio_alpha_lymphocyte"]
        self.radio_alpha = alpha.to(self.device)
        self.flow_src = torch.tensor([s for s, _ in _FLOWS], device=self.device)
        self.flow_dst = torch.tensor([d for _, d in _FLOWS], device=self.device)
        self.memory_keep = math.exp(-math.log(2) / r["memory_half_life"])

    # ------------------------------------------------------------------ signals
    def exposure(self, state: SimState) -> Exposure:
        """Drug exposure of a state (occupancy, systemic exposure, cytotoxic effects)."""
        return self.pk.exposure(state.antibody, state.chemo, state.targeted)

    def signals(self, state: SimState, patients: Patients,
                exposure: Exposure | None = None) -> Signals:
        """The quasi-steady signals of ``state`` (no randomness)."""
        r = self.r
        ex = self.exposure(state) if exposure is None else exposure
        cells = state.cells
        tumor = cells[:, :N_CLONES].sum(-1).clamp_min(1.0)
        occ_pd1, occ_ctla4 = ex.occupancy_pd1, ex.occupancy_ctla4
        ifn_cells = (cells[:, _EFF] + 0.1 * cells[:, _TEX] + 0.3 * cells[:, _NK]
                     + 0.2 * cells[:, _CD4]) * patients.contact / tumor
        ifn = ifn_cells / (ifn_cells + r["ifn_half_ratio"])
        pdl1 = patients.pdl1 * (1 + r["pdl1_ifn_induction"] * ifn)
        q = pdl1 * (1 - occ_pd1) / r["pd1_half_signal"]
        h_pd1 = q * q / (1 + q * q)
        tgf_cells = (cells[:, _FIB] + 2 * cells[:, _TREG] + cells[:, _M2]) / tumor
        tgf = tgf_cells / (tgf_cells + r["tgfb_half_ratio"])
        il10_cells = (cells[:, _M2] + cells[:, _TREG]) / tumor
        il10 = il10_cells / (il10_cells + r["il10_half_ratio"])
        mdsc = cells[:, _MDSC] / tumor
        h_mdsc = r["mdsc_max_inhibition"] * mdsc / (mdsc + r["mdsc_half_ratio"])
        tconv = cells[:, [_MEM, _EFF, _TPEX, _CD4]].sum(-1).clamp_min(1.0)
        # Treg suppress at the QSP-IO strength, times the patient's potency beyond it: the
        # CTLA-4-dependent part of their suppression (CD80/86 trans-endocytosis), which
        # anti-CTLA-4 blocks as it binds (and ADCC then removes the cells).
        potency = 1 + (patients.treg_potency - 1) * (1 - occ_ctla4)
        treg_factor = 1 / (1 + r["treg_suppression"] * potency * cells[:, _TREG] / tconv)
        suppression = ((1 - h_pd1) * treg_factor * (1 - h_mdsc)
                       * (1 - r["tgfb_max_inhibition"] * tgf))
        # Effectors and Tex descend from tumor-primed Tpex: all count as tumor-reactive.
        functional = patients.contact * suppression * (
            cells[:, _EFF] + r["tex_kill_relative"] * cells[:, _TEX]) / tumor
        kill = self.kill_capacity(patients) * kill_curve(functional, r)
        return Signals(occ_pd1, occ_ctla4, ifn, pdl1, h_pd1, tgf, il10, h_mdsc, treg_factor,
                       suppression, kill, ex.chemo_effect, ex.targeted_effect)

    def kill_capacity(self, patients: Patients) -> torch.Tensor:
        """``(n,)`` most CD8 kill per tumor cell per day: kill reserve x intrinsic growth."""
        return patients.kill_reserve * patients.growth * self.log_room_reference

    def innate_kill(self, state: SimState, patients: Patients) -> tuple[torch.Tensor, ...]:
        """Per-tumor-cell daily kill by NK cells and by M1 macrophages, each ``(n,)``."""
        r = self.r
        cells = state.cells
        tumor = cells[:, :N_CLONES].sum(-1).clamp_min(1.0)
        nk_ratio = cells[:, _NK] * patients.contact / tumor
        nk_kill = r["nk_kill_max"] * nk_ratio / (nk_ratio + r["nk_kill_half_ratio"])
        m1_ratio = cells[:, _M1] / tumor
        m1_kill = r["m1_kill_max"] * m1_ratio / (m1_ratio + r["m1_kill_half_ratio"])
        return nk_kill, m1_kill

    def priming(self, state: SimState, patients: Patients,
                sig: Signals) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n,)`` Tpex inflow per day from priming, and the CD4 help factor.

        Priming grows with antigenicity, cDC1 presence and CD4 help, with CTLA-4 blockade
        (CD28 costimulation) and with antigen released by chemo/radiotherapy; primed cells
        enter the tumor in proportion to infiltration.
        """
        r = self.r
        cells = state.cells
        tumor = cells[:, :N_CLONES].sum(-1).clamp_min(1.0)
        help_ratio = cells[:, _CD4] / tumor
        help_factor = 1 + r["help_priming_boost"] * help_ratio / (
            help_ratio + DENSITY["cd4_helper"])
        release = state.antigen_release
        release_factor = 1 + r["antigen_release_boost"] * release / (release + 0.05)
        priming = (r["priming_rate"] * patients.antigenicity * patients.infiltration
                   * (cells[:, _CDC1] / tumor) / DENSITY["cdc1"]
                   * help_factor * (1 + r["ctla4_priming_boost"] * sig.occupancy_ctla4)
                   * release_factor * tumor)
        return priming, help_factor

    # ------------------------------------------------------------------ step
    @staticmethod
    def new_course(state: SimState) -> torch.Tensor:
        """``(n,)`` bool: a fraction given today would start a new radiotherapy course."""
        return state.radio_boost < 0.05

    def allowed(self, state: SimState) -> torch.Tensor:
        """``(n, 5)`` bool: therapies that may be given today (alive, not held or stopped)."""
        tox = state.tox
        return state.alive[:, None] & ~tox.stopped & (state.day[:, None] >= tox.hold_until)

    def step(
        self,
        state: SimState,
        patients: Patients,
        dose: torch.Tensor,
        generator: torch.Generator,
        irae_rules: torch.Tensor,
        *,
        rules: ProtocolRules = DEFAULT_RULES,
        hold_tumor: bool = False,
    ) -> SimState:
        """Advance every patient by one day.

        Parameters
        ----------
        state
            Today's state.
        patients
            Per-patient parameters.
        dose
            ``(n, 5)`` doses scheduled today, in THERAPIES order (multiples of the standard
            dose; Gy for radiotherapy). The protocol decides what is given.
        generator
            The seeded generator every draw comes from.
        irae_rules
            ``(n, 5)`` or ``(5,)`` long codes (0 continue, 1 hold, 2 stop): what a grade 3
            irAE does to each therapy (grade 4 and recurrences always stop).
        rules
            The protocol rules (:class:`~immunegym.sim.toxicity.ProtocolRules`).
        hold_tumor
            Keep the tumor clones fixed (used to relax the immune compartments at baseline).

        Returns
        -------
        SimState
            Tomorrow's state (dead patients are carried unchanged); its ``given`` holds the
            doses actually given today.
        """
        r = self.r
        n = state.cells.shape[0]
        rules_t = irae_rules.expand(n, -1) if irae_rules.dim() == 1 else irae_rules
        tox, given = self.toxicity.administer(state.tox, dose, state.day, state.alive, rules)
        antibody, chemo, targeted = self.pk.dose(state.antibody, state.chemo, state.targeted,
                                                 given)
        exposure = self.pk.exposure(antibody, chemo, targeted)
        pre = replace(state, antibody=antibody, chemo=chemo, targeted=targeted)
        sig = self.signals(pre, patients, exposure)

        cells = state.cells
        tumor = cells[:, :N_CLONES].sum(-1).clamp_min(1.0)
        births = torch.zeros_like(cells)
        out_rate = self.death.expand(n, -1).clone()

        # --- tumor -------------------------------------------------------------
        log_room = torch.log(r["tumor_capacity"] / tumor).clamp_min(0)
        growth = patients.growth * log_room
        # Targeted therapy reaches only driver-positive tumors: it blocks the sensitive
        # clone's proliferation and kills it (oncogene addiction).
        blocked = patients.driver * sig.targeted_effect
        depth = patients.targeted_sensitivity / (patients.targeted_sensitivity
                                                 + r["targeted_block_half"])
        divisions = growth * (1 - r["targeted_growth_block"] * depth * blocked) * cells[:, _MS]
        births[:, _MS] = divisions
        births[:, _MR] = growth * cells[:, _MR] + r["resistance_mutation"] * divisions
        births[:, _ME] = growth * cells[:, _ME] + r["escape_mutation"] * divisions
        nk_kill, m1_kill = self.innate_kill(state, patients)
        chemo_tumor = r["chemo_kill_tumor"] * patients.chemo_sensitivity * sig.chemo_effect
        common = nk_kill + m1_kill + chemo_tumor
        out_rate[:, _MS] = common + sig.cd8_kill + patients.targeted_sensitivity * blocked
        out_rate[:, _MR] = common + sig.cd8_kill
        # MHC-I-low: mostly invisible to CD8 T cells, seen by NK cells (missing self).
        out_rate[:, _ME] = common + nk_kill + r["escape_cd8_visibility"] * sig.cd8_kill

        # --- CD8 T cells ----------------------------------------------------------
        priming, help_factor = self.priming(state, patients, sig)
        capacity = r["tpex_capacity"] * tumor + state.memory
        niche = 1 - cells[:, _TPEX] / capacity.clamp_min(1.0)
        renew = r["tpex_self_renewal"] * (1 + r["pd1_tpex_boost"] * sig.occupancy_pd1)
        # Memory precursors re-enter the Tpex pool (recall), so responses outlive the drug.
        recall = r["memory_recall"] * state.memory
        births[:, _TPEX] = priming + recall + renew * niche.clamp_min(0) * cells[:, _TPEX]
        out_rate[:, _TPEX] += renew * (-niche).clamp_min(0)
        diff_rate = r["tpex_differentiation"] * (
            1 + r["pd1_differentiation_boost"] * sig.occupancy_pd1)
        antigen_contact = tumor / (tumor + cells[:, [_MEM, _EFF, _TPEX, _CD4]].sum(-1))
        exhaust_rate = r["exhaustion_rate"] * antigen_contact * sig.h_pd1

        # --- recruitment of everything else -------------------------------------
        noise = torch.randn(cells.shape, generator=generator, device=cells.device)
        sd = r["environmental_noise"]
        env = torch.exp(sd * noise - 0.5 * sd * sd)
        factor = torch.ones_like(cells)
        factor[:, [_MEM, _NK, _B]] = patients.infiltration[:, None]
        factor[:, _CD4] = patients.infiltration * (
            1 + r["ctla4_cd4_boost"] * sig.occupancy_ctla4)
        factor[:, _TREG] = patients.infiltration * patients.treg * (
            1 + r["ctla4_treg_recruitment"] * sig.occupancy_ctla4)
        factor[:, _CDC1] = patients.cdc1 * (1 + r["radio_priming_boost"] * state.radio_boost)
        factor[:, _FIB] = patients.caf
        births = births + self.recruit * factor * env * tumor[:, None]

        # Treg depletion by anti-CTLA-4 ADCC (Hill 2 in occupancy).
        occ2 = sig.occupancy_ctla4.square()
        half2 = r["treg_adcc_half_occupancy"] ** 2
        out_rate[:, _TREG] += (r["treg_adcc_max"] * patients.ctla4_depletion * occ2
                               / (occ2 + half2))
        if bool((sig.chemo_effect > 0).any()):
            out_rate = out_rate + self.chemo_kill * sig.chemo_effect[:, None]

        # --- transitions ----------------------------------------------------------
        m1_share = 0.2 + 0.6 * sig.ifn_gamma
        mono_diff = r["monocyte_differentiation"]
        flow_rates = torch.stack([
            diff_rate.expand(n),
            exhaust_rate,
            mono_diff * m1_share,
            mono_diff * (1 - m1_share),
            r["m1_to_m2"] * sig.il10,
            r["m2_to_m1"] * 2 * sig.ifn_gamma,
            r["plasma_differentiation"] * help_factor,
        ], dim=-1)

        # --- draw events ------------------------------------------------------------
        total_out = out_rate.index_add(1, self.flow_src, flow_rates)
        p_leave = -torch.expm1(-total_out)
        leave = self._draw(cells * p_leave, generator).minimum(cells)
        share = leave / total_out.clamp_min(1e-12)
        flow = share[:, self.flow_src] * flow_rates  # events per transition
        born = self._draw(births, generator)
        gained = flow.clone()
        gained[:, 0] = flow[:, 0] * r["effector_burst"]
        new_cells = (cells + born - leave).index_add(1, self.flow_dst, gained).clamp_min(0)

        # --- radiotherapy: linear-quadratic survival in the irradiated lesion ----------
        gy = given[:, RADIO]
        irradiated = gy > 0
        field_share = state.field_share
        radio_killed = torch.zeros_like(tumor)
        if bool(irradiated.any()):
            alpha_tumor = r["radio_alpha_tumor"] * patients.radio_sensitivity
            alpha = self.radio_alpha.expand(n, -1).clone()
            alpha[:, :N_CLONES] = alpha_tumor[:, None]
            beta = alpha / r["radio_alpha_beta"]
            survival = torch.exp(-(alpha * gy[:, None] + beta * gy[:, None].square()))
            # A new course (no fraction in the last ~40 days) treats a lesion holding
            # `radio_field_fraction` of the burden; later fractions of the course hit what
            # survives in it, and it keeps its share of the tumor afterwards.
            share = torch.where(self.new_course(state),
                                torch.full_like(field_share, r["radio_field_fraction"]),
                                field_share)
            radio_keep = torch.where(irradiated[:, None],
                                     1 - share[:, None] * (1 - survival),
                                     torch.ones_like(survival))
            tumor_keep = radio_keep[:, 0]
            field_share = torch.where(irradiated, share * survival[:, 0] / tumor_keep,
                                      field_share)
            before_radio = new_cells[:, :N_CLONES].sum(-1)
            new_cells = new_cells * radio_keep
            radio_killed = before_radio - new_cells[:, :N_CLONES].sum(-1)
        chemo_killed = leave[:, :N_CLONES].sum(-1) * (
            chemo_tumor / total_out[:, _MS].clamp_min(1e-12)).clamp(max=1)

        if hold_tumor:
            new_cells[:, :N_CLONES] = cells[:, :N_CLONES]

        # --- memory, drugs, signals carried to tomorrow -----------------------------------
        memory = torch.maximum(state.memory * self.memory_keep,
                               r["memory_fraction"] * new_cells[:, _TPEX])
        antibody, chemo, targeted = self.pk.decay(antibody, chemo, targeted)
        today_release = (radio_killed + chemo_killed) / tumor
        antigen_release = 0.9 * state.antigen_release + 0.1 * today_release.clamp(max=1)
        radio_boost = state.radio_boost * math.exp(-r["radio_boost_decay"]) + irradiated.float()

        # --- toxicity -------------------------------------------------------------------
        tox = self.toxicity.step(tox, patients.toxicity, exposure, given, state.day,
                                 state.alive, rules_t, rules, generator)

        # --- death ----------------------------------------------------------------------
        burden = new_cells[:, :N_CLONES].sum(-1) / r["lethal_burden"]
        death_hazard = r["death_hazard_at_lethal"] * burden.square()
        u = torch.rand(n, generator=generator, device=cells.device)
        tumor_death = (u < -torch.expm1(-death_hazard)) & state.alive & (state.day >= 0)
        tox = replace(tox, death_cause=torch.where(
            tumor_death & (tox.death_cause == 0), TUMOR_DEATH, tox.death_cause))
        dies = state.alive & (tox.death_cause > 0)
        alive = state.alive & ~dies
        death_day = torch.where(dies, state.day, state.death_day)

        keep = state.alive
        new_cells = torch.where(keep[:, None], new_cells, cells)
        return SimState(
            cells=new_cells, antibody=antibody, chemo=chemo, targeted=targeted,
            antigen_release=antigen_release, radio_boost=radio_boost, field_share=field_share,
            memory=memory, given=given, day=state.day + 1, alive=alive, death_day=death_day,
            tox=tox,
        )

    def _draw(self, mean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Event counts with the given means: Poisson when small, Langevin when large."""
        mean = mean.clamp_min(0)
        counts = (mean + mean.sqrt() * torch.randn(mean.shape, generator=generator,
                                                   device=mean.device)).clamp_min(0)
        # Poisson draws only where the means are small (most means are large in big tumors);
        # one nonzero() serves both the gather and the scatter.
        small = (mean < self.r["langevin_threshold"]).view(-1).nonzero().squeeze(1)
        flat = counts.view(-1)
        flat.index_copy_(0, small, torch.poisson(mean.reshape(-1).index_select(0, small),
                                                 generator=generator))
        return counts
