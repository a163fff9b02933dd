"""ImmuneSim's daily step: a pure function from one :class:`SimState` to the next.

The model (one day per step, all patients at once):

Tumor
    Three subclones grow by Gompertz ``r ln(K/T)``. CD8 kill is the de Pillis 2005 ratio
    form ``d (E/T)^l / (s + (E/T)^l)`` on the T cells in contact with tumor, multiplied by the
    QSP-IO suppressions ``(1 - H_PD1) x Treg factor x (1 - H_MDSC) x (1 - H_TGFb)``
    (Jafarnejad 2019). NK and M1 macrophages add small kills; the immune-escape subclone is
    invisible to CD8 and doubly visible to NK. Chemotherapy kills ``K (1 - exp(-delta M))``
    (de Pillis 2009); targeted therapy slows and kills the sensitive clone; resistant and
    escape clones arise by mutation at division.
CD8 T cells
    Priming (antigenicity x cDC1 x CD4 help x CTLA-4 blockade x antigen release) feeds
    TCF1+ progenitors (Tpex), which self-renew under a niche limit and differentiate into
    effectors with a proliferative burst; PD-1 blockade raises both. Effectors exhaust at
    ``0.1/d x H_PD1`` (Jafarnejad 2019); exhausted cells never return.
Other cells
    Recruitment in proportion to the tumor burden (vasculature), modulated by phenotype and
    drugs; anti-CTLA-4 depletes Treg by ADCC (Milberg 2019); monocytes become M1 or M2
    macrophages, which interconvert at 0.25/d (M1 -> M2, IL-10) and 0.02/d (M2 -> M1, IFN-g).
Signals
    Quasi-steady IFN-g, PD-L1 (adaptive: raised by IFN-g), TGF-b, IL-10 and MDSC suppression,
    from the current cell ratios.
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

from immunegym.data.vocab import THERAPIES
from immunegym.sim.parameters import DENSITY, ParameterSet
from immunegym.sim.state import IDX, N_CLONES, N_COMPARTMENTS, Patients, SimState

_PD1, _CTLA4, _CHEMO, _RADIO, _TARGETED = (THERAPIES.index(t) for t in THERAPIES)

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
    cd8_kill: torch.Tensor
    chemo_effect: torch.Tensor
    targeted_effect: torch.Tensor


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
        lymph = torch.zeros(N_COMPARTMENTS, dtype=torch.bool)
        lymph[list(_LYMPHOCYTES)] = True
        self.is_lymphocyte = lymph.to(self.device)
        chemo_kill = torch.zeros(N_COMPARTMENTS)
        chemo_kill[list(_MYELOID)] = r["chemo_kill_myeloid"]
        chemo_kill[[_MEM, _CD4, _TREG, _B, _PC, _TEX]] = r["chemo_kill_lymphocyte"]
        chemo_kill[[_TPEX, _EFF]] = 3 * r["chemo_kill_lymphocyte"]  # proliferating
        chemo_kill[_NK] = r["chemo_kill_nk"]
        self.chemo_kill = chemo_kill.to(self.device)
        alpha = torch.full((N_COMPARTMENTS,), r["radio_alpha_other"])
        alpha[list(_LYMPHOCYTES)] = r["radio_alpha_lymphocyte"]
        self.radio_alpha = alpha.to(self.device)
        # Antibody doses in nmol per standard dose: 200 mg pembrolizumab; 3 mg/kg ipilimumab.
        self.antibody_nmol = torch.tensor([
            200e-3 / r["pd1_molecular_weight"] * 1e9,
            3e-3 * r["body_weight"] / r["ctla4_molecular_weight"] * 1e9,
        ], device=self.device)
        pk = []
        for drug in ("pd1", "ctla4"):
            v1, v2 = r[f"{drug}_central_volume"], r[f"{drug}_peripheral_volume"]
            q, cl = r[f"{drug}_intercompartmental"], r[f"{drug}_clearance"]
            pk.append((cl / v1, q / v1, q / v2, v1))
        pk_t = torch.tensor(pk, device=self.device)
        self.k10, self.k12, self.k21, self.v1 = pk_t.unbind(-1)
        self.kd = torch.tensor([r["pd1_kd"], r["ctla4_kd"]], device=self.device)
        self.flow_src = torch.tensor([s for s, _ in _FLOWS], device=self.device)
        self.flow_dst = torch.tensor([d for _, d in _FLOWS], device=self.device)

    # ------------------------------------------------------------------ signals
    def signals(self, state: SimState, patients: Patients) -> Signals:
        """The quasi-steady signals of ``state`` (no randomness)."""
        r = self.r
        cells = state.cells
        tumor = cells[:, :N_CLONES].sum(-1).clamp_min(1.0)
        conc = state.antibody[:, :, 0] / self.v1 * r["tumor_partition"]  # nM in tumor
        occ = conc / (conc + self.kd)
        occ_pd1, occ_ctla4 = occ[:, 0], occ[:, 1]
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
        treg_factor = 1 / (1 + r["treg_suppression"] * cells[:, _TREG] / tconv)
        # Effectors and Tex descend from tumor-primed Tpex: all count as tumor-reactive.
        ratio = patients.contact * (
            cells[:, _EFF] + r["tex_kill_relative"] * cells[:, _TEX])
        ratio = ratio / tumor
        rl = ratio.clamp_min(0).pow(r["cd8_kill_exponent"])
        kill = r["cd8_kill_max"] * rl / (r["cd8_kill_half_ratio"] + rl)
        kill = kill * (1 - h_pd1) * treg_factor * (1 - h_mdsc)
        kill = kill * (1 - r["tgfb_max_inhibition"] * tgf)
        chemo_effect = 1 - torch.exp(-r["chemo_delta"] * state.chemo)
        targeted_effect = state.targeted / (state.targeted + r["targeted_ec50"])
        return Signals(occ_pd1, occ_ctla4, ifn, pdl1, h_pd1, tgf, il10, h_mdsc, treg_factor,
                       kill, chemo_effect, targeted_effect)

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
    def allowed(self, state: SimState) -> torch.Tensor:
        """``(n, 5)`` bool: therapies that may be given today (alive, not held or stopped)."""
        return (state.alive[:, None] & ~state.stopped
                & (state.day[:, None] >= state.hold_until))

    def step(
        self,
        state: SimState,
        patients: Patients,
        dose: torch.Tensor,
        generator: torch.Generator,
        irae_rules: torch.Tensor,
        *,
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
            dose; Gy for radiotherapy). Held or stopped therapies are not given.
        generator
            The seeded generator every draw comes from.
        irae_rules
            ``(n, 5)`` or ``(5,)`` long codes (0 continue, 1 hold, 2 stop) applied when a
            grade >= 3 irAE occurs.
        hold_tumor
            Keep the tumor clones fixed (used to relax the immune compartments at baseline).

        Returns
        -------
        SimState
            Tomorrow's state; dead patients are carried unchanged.
        """
        r = self.r
        dose = dose * self.allowed(state)
        antibody = state.antibody.clone()
        antibody[:, :, 0] += dose[:, [_PD1, _CTLA4]] * self.antibody_nmol
        chemo = state.chemo + dose[:, _CHEMO]
        targeted = state.targeted + dose[:, _TARGETED]
        pre = replace(state, antibody=antibody, chemo=chemo, targeted=targeted)
        sig = self.signals(pre, patients)

        cells = state.cells
        tumor = cells[:, :N_CLONES].sum(-1).clamp_min(1.0)
        n = cells.shape[0]
        births = torch.zeros_like(cells)
        out_rate = self.death.expand(n, -1).clone()

        # --- tumor -------------------------------------------------------------
        log_room = torch.log(r["tumor_capacity"] / tumor).clamp_min(0)
        growth = patients.growth * log_room
        tgt = patients.targeted_sensitivity * sig.targeted_effect
        sensitive_growth = growth * (1 - tgt.clamp(max=1))
        divisions = sensitive_growth * cells[:, _MS]
        births[:, _MS] = divisions
        births[:, _MR] = growth * cells[:, _MR] + r["resistance_mutation"] * divisions
        births[:, _ME] = growth * cells[:, _ME] + r["resistance_mutation"] * divisions
        nk_kill, m1_kill = self.innate_kill(state, patients)
        chemo_tumor = r["chemo_kill_tumor"] * patients.chemo_sensitivity * sig.chemo_effect
        common = nk_kill + m1_kill + chemo_tumor
        out_rate[:, _MS] = common + sig.cd8_kill + 0.03 * tgt
        out_rate[:, _MR] = common + sig.cd8_kill
        out_rate[:, _ME] = common + nk_kill  # MHC-I-low: missing-self NK recognition

        # --- CD8 T cells ----------------------------------------------------------
        priming, help_factor = self.priming(state, patients, sig)
        niche = 1 - cells[:, _TPEX] / (r["tpex_capacity"] * tumor)
        renew = r["tpex_self_renewal"] * (1 + r["pd1_tpex_boost"] * sig.occupancy_pd1)
        births[:, _TPEX] = priming + renew * niche.clamp_min(0) * cells[:, _TPEX]
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
        factor[:, _CD4] = patients.infiltration * (1 + r["ctla4_cd4_boost"] * sig.occupancy_ctla4)
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

        # --- radiotherapy: linear-quadratic survival in the irradiated field --------
        gy = dose[:, _RADIO]
        alpha_tumor = r["radio_alpha_tumor"] * patients.radio_sensitivity
        alpha = self.radio_alpha.expand(n, -1).clone()
        alpha[:, :N_CLONES] = alpha_tumor[:, None]
        beta = alpha / r["radio_alpha_beta"]
        survival = torch.exp(-(alpha * gy[:, None] + beta * gy[:, None].square()))
        # The field is one lesion: a new course irradiates `radio_field_fraction` of the
        # burden; later fractions of the course hit what survives in that same field.
        new_course = state.radio_boost < 0.05
        share = torch.where(new_course, torch.full_like(state.field_share,
                                                        r["radio_field_fraction"]),
                            state.field_share)
        irradiated = gy > 0
        radio_keep = torch.where(irradiated[:, None], 1 - share[:, None] * (1 - survival),
                                 torch.ones_like(survival))
        tumor_keep = radio_keep[:, 0]
        field_share = torch.where(irradiated, share * survival[:, 0] / tumor_keep,
                                  state.field_share)
        before_radio = new_cells[:, :N_CLONES].sum(-1)
        new_cells = new_cells * radio_keep
        radio_killed = before_radio - new_cells[:, :N_CLONES].sum(-1)
        chemo_killed = leave[:, :N_CLONES].sum(-1) * (
            chemo_tumor / total_out[:, _MS].clamp_min(1e-12)).clamp(max=1)

        if hold_tumor:
            new_cells[:, :N_CLONES] = cells[:, :N_CLONES]

        # --- drugs decay ------------------------------------------------------------
        antibody = self._pk(antibody)
        chemo = chemo * math.exp(-r["chemo_decay"])
        targeted = targeted * math.exp(-math.log(2) / r["targeted_half_life"])
        today_release = (radio_killed + chemo_killed) / tumor
        antigen_release = 0.9 * state.antigen_release + 0.1 * today_release.clamp(max=1)
        radio_boost = state.radio_boost * math.exp(-r["radio_boost_decay"]) + (gy > 0).float()

        # --- immune-related adverse events ----------------------------------------
        hazard = patients.irae_susceptibility * (
            r["irae_hazard_pd1"] * sig.occupancy_pd1
            + r["irae_hazard_ctla4"] * sig.occupancy_ctla4
            + r["irae_interaction"] * r["irae_hazard_ctla4"]
            * sig.occupancy_pd1 * sig.occupancy_ctla4)
        u = torch.rand(n, generator=generator, device=cells.device)
        event = (u < -torch.expm1(-hazard)) & ~state.irae & state.alive
        rules = irae_rules.expand(n, -1) if irae_rules.dim() == 1 else irae_rules
        hold_until = torch.where(
            event[:, None] & (rules == 1),
            state.day[:, None] + int(r["irae_hold_days"]), state.hold_until)
        stopped = state.stopped | (event[:, None] & (rules == 2))
        irae = state.irae | event
        irae_day = torch.where(event, state.day, state.irae_day)

        # --- tumor-related death ------------------------------------------------------
        burden = new_cells[:, :N_CLONES].sum(-1) / r["lethal_burden"]
        death_hazard = r["death_hazard_at_lethal"] * burden.square()
        u = torch.rand(n, generator=generator, device=cells.device)
        dies = (u < -torch.expm1(-death_hazard)) & state.alive & (state.day >= 0)
        alive = state.alive & ~dies
        death_day = torch.where(dies, state.day, state.death_day)

        keep = state.alive
        new_cells = torch.where(keep[:, None], new_cells, cells)
        return SimState(
            cells=new_cells, antibody=antibody, chemo=chemo, targeted=targeted,
            antigen_release=antigen_release, radio_boost=radio_boost, field_share=field_share,
            day=state.day + 1, alive=alive, death_day=death_day, irae=irae,
            irae_day=irae_day, hold_until=hold_until, stopped=stopped,
        )

    def _pk(self, antibody: torch.Tensor) -> torch.Tensor:
        """One day of two-compartment antibody kinetics (4 explicit sub-steps)."""
        central, peripheral = antibody[:, :, 0], antibody[:, :, 1]
        h = 0.25
        for _ in range(4):
            to_p = self.k12 * central * h
            to_c = self.k21 * peripheral * h
            central = central - self.k10 * central * h - to_p + to_c
            peripheral = peripheral + to_p - to_c
        return torch.stack([central, peripheral], dim=-1)

    def _draw(self, mean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Event counts with the given means: Poisson when small, Langevin when large."""
        mean = mean.clamp_min(0)
        threshold = self.r["langevin_threshold"]
        small = mean < threshold
        poisson = torch.poisson(torch.where(small, mean, torch.zeros_like(mean)),
                                generator=generator)
        gauss = mean + mean.sqrt() * torch.randn(mean.shape, generator=generator,
                                                 device=mean.device)
        return torch.where(small, poisson, gauss.clamp_min(0))
