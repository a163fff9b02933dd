"""ImmuneSim's parameter table: every rate with its unit and its source.

Two tables:

* :data:`RATES` holds the rates shared by all patients (kill, exhaustion, turnover,
  polarization, pharmacokinetics, radiobiology, toxicity). Each entry names its source, or
  says ``"assumption"`` and why the value was chosen.
* :data:`CANCER_TYPES` holds the per-cancer-type means (growth, antigenicity, immune
  phenotype mix, drug-effect parameters). Patients vary around them (log-normal, CV 30%; see
  :mod:`immunegym.sim.patients`).

The entries marked ``fitted`` in :data:`CANCER_TYPES` and the toxicity hazards in
:data:`RATES` are calibrated to clinical anchors by :mod:`immunegym.sim.calibrate`; the
fitted values live in a versioned JSON file shipped with the package and are applied on top
of these defaults by :func:`load_parameters`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from immunegym.validation import ValidationError, choice, known_keys, number

PARAMETER_FILE = "immunesim-params-v2.json"
"""Name of the calibrated parameter file inside ``immunegym/sim/calibrated/``."""

PARAMETER_FORMAT_VERSION = 2

WILD_TYPE = "wild_type"
"""Driver selection of driver-negative patients only."""


@dataclass(frozen=True)
class Rate:
    """One shared model parameter.

    Attributes
    ----------
    value
        The number used by the simulator.
    unit
        Physical unit ("/d", "cells", "L/d", "1" for dimensionless, ...).
    source
        Publication the value comes from, or ``"assumption: <why>"``.
    """

    value: float
    unit: str
    source: str


_DP05 = "de Pillis et al. 2005 Cancer Res 65:7950 (patients 9/10 averaged)"
_DP09 = "de Pillis et al. 2009 (BIOMD0000000779)"
_JAF19 = "Jafarnejad et al. 2019 AAPS J (Popel QSP-IO)"
_MIL19 = "Milberg et al. 2019 Sci Rep (Popel QSP-IO)"

RATES: dict[str, Rate] = {
    # --- tumor ---------------------------------------------------------------------
    "tumor_capacity": Rate(1e12, "cells", "assumption: Gompertz plateau ~1 kg of tumor"),
    "tumor_reference": Rate(3e10, "cells",
                            "assumption: median burden at diagnosis; sum of diameters ~70 mm"),
    "escape_net_growth": Rate(0.5, "1",
                              "assumption: patients present in the escape phase of "
                              "immunoediting (Schreiber 2011): at day 0 net growth is a share "
                              "of the growth against innate immunity alone, drawn uniformly "
                              "between this and 1 (untreated melanoma grows ~0.01/d net, "
                              "Bozic 2013)"),
    "treg_potency_max": Rate(1000.0, "1", "assumption: a numerical bound on the escape "
                                          "phase's CTLA-4-dependent Treg potency"),
    "resistance_mutation": Rate(5e-8, "/division",
                                "Bozic et al. 2013 eLife 2:e00747: point-mutation rate ~1e-9 "
                                "per base per division x ~50 resistance mutations per "
                                "targeted agent"),
    "resistant_fraction_at_baseline": Rate(1e-6, "1",
                                           "assumption: a pre-existing resistant subclone is "
                                           "always present in large tumors (Bozic 2013, "
                                           "citing Diaz 2012)"),
    "escape_presence": Rate(0.25, "1",
                            "assumption informed by Sade-Feldman 2017 Nat Commun (B2M loss in "
                            "~30% of non-responders, ~10% of responders) and Ribas 2016 JAMA "
                            "(~25% of anti-PD-1 responders progress by 21 months): share of "
                            "tumors with a pre-existing MHC-I-low subclone"),
    "escape_fraction_at_baseline": Rate(0.01, "1",
                                        "assumption: median share of MHC-I-low cells where "
                                        "such a subclone exists (B2M/JAK loss, Zaretsky "
                                        "2016)"),
    "escape_fraction_cv": Rate(1.5, "1", "assumption: escape share varies widely"),
    "escape_mutation": Rate(1e-12, "/division",
                            "assumption: acquired MHC-I loss is mostly selection of "
                            "pre-existing subclones (Zaretsky 2016); de novo loss is rare"),
    "escape_cd8_visibility": Rate(0.3, "1",
                                  "assumption: MHC-I loss is mostly partial (B2M LOH, "
                                  "Sade-Feldman 2017); CD8 kill of the escape clone is this "
                                  "share of the full kill"),
    "imaging_cv": Rate(0.05, "1", "assumption: RECIST inter-reader variability ~5%"),
    "sod_per_cube_root_gcells": Rate(22.5, "mm",
                                     "assumption: sum of target-lesion diameters = 22.5 mm x "
                                     "(tumor cells / 1e9)^(1/3); 3e10 cells -> ~70 mm"),
    "detection_limit": Rate(1e8, "cells",
                            "assumption: below ~0.1 cm^3 no target lesion is measurable (CR)"),
    "lethal_burden": Rate(5e11, "cells", "assumption: death hazard reaches 1/d scale near "
                                         "0.5 kg of tumor"),
    "death_hazard_at_lethal": Rate(0.02, "/d", "assumption: tumor-related death hazard at the "
                                                "lethal burden, rising with burden squared"),
    # --- T-cell killing and exhaustion -------------------------------------------
    "refractory_share": Rate(0.15, "1",
                             "derived: B2M loss in ~30% of non-responders (Sade-Feldman 2017) "
                             "x ~50% non-response, with JAK1/2 loss (Shin 2017): share of "
                             "patients with primary resistance to T-cell killing"),
    "refractory_kill_reserve": Rate(0.3, "1",
                                    "assumption: kill reserve of refractory tumors (T cells "
                                    "kill them at a third of their growth at most)"),
    "kill_reserve_cv": Rate(0.5, "1",
                            "assumption: the most CD8 kill a patient can reach (d of "
                            + _DP05 + ", in units of intrinsic growth) varies widely: "
                            "infiltration and kill separate responders (Butner 2020) and "
                            "combinations act by patient heterogeneity (Palmer & Sorger "
                            "2017)"),
    "reserve_antigen_exponent": Rate(0.5, "1",
                                     "assumption: the kill reserve scales as (antigenicity / "
                                     "antigen_reference)^k: more neoantigens, more "
                                     "tumor-reactive clones; response to PD-1 blockade rises "
                                     "with tumor mutational burden across cancer types "
                                     "(Yarchoan NEJM 2017, r = 0.74 with log TMB)"),
    "antigen_reference": Rate(1.0, "1", "definition: antigenicity at which the kill reserve "
                                        "is the cancer type's kill_reserve"),
    "immune_latent_loading": Rate(0.55, "1",
                                  "assumption: a shared immune responsiveness loads on kill "
                                  "reserve and antigenicity, giving a drug-to-drug response "
                                  "correlation of ~0.3 (Palmer & Sorger 2017 report modest "
                                  "positive correlations)"),
    "cd8_kill_exponent": Rate(1.4, "1", _DP05 + ": l = 1.36 / 1.43"),
    "cd8_kill_half_ratio": Rate(3e-4, "1", _DP05 + " form with s = 0.25 / 0.36 on total "
                                               "lymphocytes; rescaled (assumption) to the "
                                               "functional CD8 effector:tumor ratios of this "
                                               "model, which are 1-10% of cells"),
    "tex_kill_relative": Rate(0.1, "1", "assumption: terminally exhausted cells keep ~10% of "
                                        "effector cytotoxicity (Miller 2019 Nat Immunol)"),
    "treg_suppression": Rate(11.0, "1", _JAF19 + ": kill x T/(T + 11 Treg)"),
    "pd1_half_signal": Rate(1.0, "1", _JAF19 + ": H_PD1 = (Q/Q50)^2/(1+(Q/Q50)^2); Q in "
                                      "units of Q50"),
    "pdl1_ifn_induction": Rate(1.5, "1", "assumption: IFN-g raises tumor PD-L1 up to 2.5-fold "
                                         "(adaptive resistance, Taube 2012)"),
    "pdl1_max": Rate(8.0, "1", "assumption: tumor PD-L1 signal saturates at 8 x Q50; escape "
                               "beyond that is immunoediting (a lower kill reserve)"),
    "pdl1_cv": Rate(0.6, "1", "assumption: PD-L1 expression varies widely between patients "
                              "(TPS 0-100%)"),
    "exhaustion_rate": Rate(0.1, "/d", _JAF19 + ": 0.1/d x C/(C+T) x H_PD1"),
    "tgfb_max_inhibition": Rate(0.5, "1", "assumption: TGF-b halves kill at saturation"),
    "mdsc_half_ratio": Rate(0.04, "MDSC per tumor cell",
                            "assumption: MDSC suppression half-maximal at 4 MDSC per 100 "
                            "tumor cells"),
    "mdsc_max_inhibition": Rate(0.6, "1", "assumption: MDSC suppression saturates at 60%"),
    "nk_kill_max": Rate(0.004, "/d", "assumption: NK kill saturating in NK:tumor ratio, well "
                                     "below CD8 (de Pillis 2005 NK term is small)"),
    "nk_kill_half_ratio": Rate(0.05, "1", "assumption"),
    "m1_kill_max": Rate(0.002, "/d", "assumption: M1 macrophage tumoricidal activity, below "
                                     "NK"),
    "m1_kill_half_ratio": Rate(0.1, "1", "assumption"),
    # --- T-cell priming, expansion, differentiation, turnover ---------------------
    "priming_rate": Rate(2e-3, "Tpex per tumor cell per d at antigenicity 1",
                         "assumption: scaled so hot tumors hold ~1-3% Tpex"),
    "ctla4_priming_boost": Rate(0.3, "1", "assumption: full CTLA-4 blockade raises priming "
                                          "1.3-fold (CD28 costimulation, Milberg 2019; "
                                          "repertoire broadening, Kvistborg 2014); its main "
                                          "action is on Treg and CD4 (Wei et al. Cell 2017)"),
    "help_priming_boost": Rate(0.5, "1", "assumption: CD4 help raises priming up to 1.5-fold"),
    "antigen_release_boost": Rate(2.0, "1", "assumption: therapy-induced tumor death raises "
                                            "priming up to 3-fold (cancer-immunity cycle)"),
    "tpex_self_renewal": Rate(0.05, "/d", "assumption: TCF1+ Tpex self-renewal (Siddiqui "
                                          "2019, Miller 2019)"),
    "tpex_capacity": Rate(0.1, "Tpex per tumor cell", "assumption: niche limit of Tpex"),
    "pd1_tpex_boost": Rate(0.3, "1", "assumption: PD-1 blockade raises Tpex proliferation "
                                     "1.3-fold (Kamphorst 2017, Im 2016); its main action is "
                                     "releasing PD-1 signalling on exhausted-like CD8 (Wei et "
                                     "al. Cell 2017)"),
    "tpex_differentiation": Rate(0.06, "/d", "assumption: Tpex -> effector"),
    "pd1_differentiation_boost": Rate(0.2, "1", "assumption: PD-1 blockade raises Tpex -> "
                                                "effector flux 1.2-fold (Siddiqui 2019)"),
    "effector_burst": Rate(4.0, "effectors per differentiating Tpex",
                           "assumption: transitional proliferation burst"),
    "tpex_death": Rate(0.01, "/d", "assumption: long-lived progenitors"),
    "memory_fraction": Rate(0.2, "1", "assumption: tumor-specific memory precursors keep this "
                                      "share of the largest Tpex pool (a floor of the niche)"),
    "memory_recall": Rate(0.05, "/d", "assumption: memory precursors re-enter the Tpex pool "
                                      "at the Tpex self-renewal rate (Siddiqui 2019)"),
    "memory_half_life": Rate(365.0, "d", "assumption: memory T cells persist for years "
                                         "(Hammarlund 2003); one year for tumor-specific "
                                         "precursors"),
    "effector_death": Rate(0.1, "/d", "assumption: effector half-life ~7 d"),
    "tex_death": Rate(0.03, "/d", "assumption: exhausted cells persist weeks, no recovery "
                                  "(Pauken 2016)"),
    "memory_death": Rate(0.01, "/d", "assumption: bystander memory turnover"),
    "cd4_death": Rate(0.03, "/d", "assumption"),
    "treg_death": Rate(0.03, "/d", "assumption"),
    "treg_adcc_max": Rate(0.1, "/d", _MIL19 + ": anti-CTLA-4 ADCC 0.1/d"),
    "treg_adcc_half_occupancy": Rate(0.5, "1", _MIL19 + ": half-maximal at 1000 bound "
                                                 "molecules, Hill 2; mapped to 50% occupancy "
                                                 "(assumption)"),
    "ctla4_depletion_cv": Rate(1.0, "1", "assumption: ADCC efficiency varies widely (FCGR3A "
                                         "V158F polymorphism, Arce Vargas 2018 Cancer Cell)"),
    "ctla4_treg_recruitment": Rate(0.5, "1", "assumption: CTLA-4 blockade raises Treg "
                                             "proliferation (the Treg paradox, Marangoni 2018)"),
    "ctla4_cd4_boost": Rate(0.5, "1", "assumption: ICOS+ CD4 expansion under ipilimumab"),
    "nk_death": Rate(0.05, "/d", "assumption"),
    "b_death": Rate(0.02, "/d", "assumption"),
    "plasma_differentiation": Rate(0.01, "/d", "assumption: B -> plasma, raised by CD4 help"),
    "plasma_death": Rate(0.02, "/d", "assumption"),
    # --- myeloid and stroma -------------------------------------------------------
    "cdc1_death": Rate(0.1, "/d", "assumption: cDC1 emigrate to lymph nodes within ~10 d"),
    "dc_death": Rate(0.1, "/d", "assumption"),
    "monocyte_differentiation": Rate(0.2, "/d", "assumption: monocyte -> macrophage"),
    "monocyte_death": Rate(0.1, "/d", "assumption"),
    "m1_to_m2": Rate(0.25, "/d", _JAF19 + ": M1 -> M2 0.25/d, driven by IL-10/TGF-b"),
    "m2_to_m1": Rate(0.02, "/d", _JAF19 + ": M2 -> M1 0.02/d, driven by IFN-g"),
    "macrophage_death": Rate(0.02, "/d", "assumption"),
    "mdsc_death": Rate(0.1, "/d", "assumption"),
    "neutrophil_death": Rate(0.5, "/d", "assumption: short-lived granulocytes"),
    "mast_death": Rate(0.01, "/d", "assumption"),
    "fibroblast_turnover": Rate(0.01, "/d", "assumption"),
    "endothelial_turnover": Rate(0.01, "/d", "assumption"),
    "ifn_half_ratio": Rate(0.05, "IFN-producing cells per tumor cell", "assumption"),
    "tgfb_half_ratio": Rate(0.3, "TGF-b-producing cells per tumor cell", "assumption"),
    "il10_half_ratio": Rate(0.1, "IL-10-producing cells per tumor cell", "assumption"),
    "environmental_noise": Rate(0.1, "1", "assumption: day-to-day log-normal fluctuation of "
                                          "recruitment (extrinsic noise)"),
    "langevin_threshold": Rate(1000.0, "events", "assumption: Poisson (tau-leap) below, "
                                                 "chemical Langevin above"),
    # --- chemotherapy (de Pillis 2009) --------------------------------------------
    "chemo_kill_tumor": Rate(0.9, "/d", _DP09 + ": K_T"),
    "chemo_kill_nk": Rate(0.0675, "/d", _DP09 + ": K_N"),
    "chemo_kill_lymphocyte": Rate(0.0486, "/d", _DP09 + ": K_L (applied x3 to proliferating "
                                                        "T cells, assumption)"),
    "chemo_kill_myeloid": Rate(0.034, "/d", _DP09 + ": K_C (circulating cells)"),
    "chemo_delta": Rate(1.8328, "/unit", _DP09 + ": delta"),
    "chemo_decay": Rate(0.5199, "/d", _DP09 + ": gamma"),
    "chemo_sensitivity_cv": Rate(0.8, "1", "assumption: tumor chemosensitivity varies widely "
                                           "between patients (a few respond, most do not)"),
    # --- radiotherapy -------------------------------------------------------------
    "radio_alpha_tumor": Rate(0.146, "/Gy", "Kosinsky et al. 2018 JITC (mouse); per-cancer "
                                           "multiplier in CANCER_TYPES"),
    "radio_alpha_beta": Rate(10.0, "Gy", "standard tumor alpha/beta"),
    "radio_alpha_lymphocyte": Rate(0.5, "/Gy", "assumption: lymphocytes are the most "
                                               "radiosensitive cells (D37 ~2 Gy)"),
    "radio_alpha_other": Rate(0.05, "/Gy", "assumption: stroma and myeloid are radioresistant"),
    "radio_field_fraction": Rate(0.5, "1", "assumption: the irradiated lesion holds half the "
                                           "burden (radiotherapy acts locally)"),
    "radio_priming_boost": Rate(1.5, "1", "assumption: immunogenic cell death raises cDC1 "
                                          "recruitment up to 2.5-fold (Kosinsky 2018)"),
    "radio_boost_decay": Rate(0.1, "/d", "assumption: the priming window lasts ~2 weeks"),
    # --- pharmacokinetics (two-compartment, concentrations in nM) -----------------
    "pd1_clearance": Rate(0.22, "L/d", "Ahamadi et al. 2017 CPT:PSP (pembrolizumab popPK)"),
    "pd1_central_volume": Rate(3.48, "L", "Ahamadi et al. 2017"),
    "pd1_peripheral_volume": Rate(4.06, "L", "Ahamadi et al. 2017"),
    "pd1_intercompartmental": Rate(0.795, "L/d", "Ahamadi et al. 2017"),
    "pd1_molecular_weight": Rate(149e3, "g/mol", "pembrolizumab"),
    "pd1_kd": Rate(4.0, "nM", _JAF19 + ": anti-PD-1 Kd"),
    "ctla4_clearance": Rate(0.32, "L/d", "assumption: chosen for the 15 d ipilimumab "
                                         "half-life in SCIENCE.md"),
    "ctla4_central_volume": Rate(3.5, "L", "assumption: typical IgG1"),
    "ctla4_peripheral_volume": Rate(3.5, "L", "assumption: typical IgG1"),
    "ctla4_intercompartmental": Rate(0.8, "L/d", "assumption: typical IgG1"),
    "ctla4_molecular_weight": Rate(148e3, "g/mol", "ipilimumab"),
    "ctla4_kd": Rate(18.2, "nM", _MIL19 + ": anti-CTLA-4 Kd"),
    "tumor_partition": Rate(0.3, "1", "assumption: interstitial/plasma antibody ratio"),
    "body_weight": Rate(75.0, "kg", "assumption: for mg/kg dosing"),
    "targeted_half_life": Rate(1.0, "d", "assumption: oral small molecule, daily dosing"),
    "targeted_ec50": Rate(0.2, "dose units", "assumption: the standard dose is near-saturating "
                                             "(~85-90% effect), so higher doses add toxicity, "
                                             "not efficacy"),
    "targeted_sensitivity_cv": Rate(0.8, "1", "assumption: depth of oncogene addiction varies "
                                              "widely between driver-positive tumors"),
    "targeted_growth_block": Rate(1.0, "1", "assumption: full target inhibition of a deeply "
                                            "addicted tumor stops the proliferation of its "
                                            "sensitive clone"),
    "targeted_block_half": Rate(0.01, "/d", "assumption: the growth block scales with the depth "
                                            "of addiction (the kill rate): half-maximal at "
                                            "0.01/d"),
    # --- immune-related adverse events (see calibrate.py for the fitted ones) ---------
    "irae_hazard_pd1": Rate(4.3e-4, "/d at standard exposure",
                            "fitted: grade 3-4 TRAE 16.3% on nivolumab (CheckMate 067)"),
    "irae_hazard_ctla4": Rate(4e-3, "/d at standard exposure",
                              "fitted: grade 3-4 TRAE 27.3% on ipilimumab (CheckMate 067)"),
    "irae_interaction": Rate(1.0, "1", "assumption carried from v1, not fitted: the CTLA-4 "
                                       "hazard rises with PD-1 exposure (loss of two "
                                       "peripheral-tolerance checkpoints)"),
    "irae_exposure_half_pd1": Rate(0.4, "standard exposures",
                                   "derived: grade 3-4 TRAE 11% at 2 mg/kg vs 14% at 10 mg/kg "
                                   "pembrolizumab (KEYNOTE-002) -> half-maximal at 0.4 x the "
                                   "standard exposure"),
    "irae_exposure_half_ctla4": Rate(1.75, "standard exposures",
                                     "derived: grade 3-4 TRAE 18% at 3 mg/kg vs 34% at 10 "
                                     "mg/kg ipilimumab (Ascierto 2017 Lancet Oncol, CA184-169; "
                                     "figure unverified here)"),
    "irae_grade4_fraction": Rate(0.14, "1", "EORTC 18071 (Eggermont 2016): grade 4 are 5.7 of "
                                            "41.6 percentage points of grade 3-4 irAEs"),
    "irae_stop_pd1": Rate(0.3, "1", "fitted: share of grade 3 events under anti-PD-1 whose "
                                    "organ rules stop treatment (pneumonitis, myocarditis, "
                                    "hepatitis; Keytruda label) -> discontinuation 7.7% on "
                                    "nivolumab (CheckMate 067)"),
    "irae_stop_ctla4": Rate(0.3, "1", "fitted: the same for anti-CTLA-4 -> discontinuation "
                                      "14.8% on ipilimumab (CheckMate 067)"),
    "irae_fatal_pd1": Rate(0.024, "1", "fitted: fatal share of anti-PD-1 grade >= 3 irAEs -> "
                                       "0.36% of treated patients (Wang 2018 JAMA Oncol)"),
    "irae_fatal_ctla4": Rate(0.04, "1", "fitted: fatal share of anti-CTLA-4 grade >= 3 irAEs "
                                        "-> 1.08% of treated patients (Wang 2018)"),
    "irae_susceptibility_cv": Rate(0.8, "1", "assumption: wide between-patient variation in "
                                             "autoimmune susceptibility"),
    # --- myelosuppression (Friberg et al. 2002 J Clin Oncol 20:4713, docetaxel) -----
    "neutrophil_mtt_hours": Rate(89.3, "h", "Friberg 2002 Table 4 (docetaxel): mean transit "
                                            "time of the maturation chain"),
    "neutrophil_feedback": Rate(0.163, "1", "Friberg 2002 Table 4: feedback exponent gamma"),
    "anc_baseline": Rate(5.05, "x1e9/L", "Friberg 2002 Table 4: baseline neutrophils"),
    "anc_baseline_cv": Rate(0.42, "1", "Friberg 2002 Table 4: between-patient variability"),
    "marrow_sensitivity_cv": Rate(0.33, "1", "Friberg 2002 Table 4: variability of the drug "
                                             "effect (Emax IIV 33%)"),
    "chemo_marrow_slope": Rate(0.8, "/unit of chemo on board",
                               "fitted: Friberg's linear drug effect on proliferating "
                               "precursors, per de Pillis chemo unit -> grade 3-4 neutropenia "
                               "in ~35% of patients on docetaxel q3w (30-40%)"),
    "targeted_marrow_slope": Rate(0.05, "/standard daily dose on board",
                                  "assumption: TKIs (sunitinib) cause mild neutropenia"),
    "fn_hazard_severe": Rate(0.1, "/d at ANC < 0.5",
                             "fitted: febrile neutropenia in ~10% of docetaxel patients"),
    "fn_moderate_relative": Rate(0.2, "1", "assumption: the febrile neutropenia hazard at ANC "
                                           "0.5-1.0 is a fifth of that below 0.5"),
    "fn_fatality": Rate(0.095, "1", "Kuderer et al. 2006 Cancer 106:2258: in-hospital "
                                    "mortality of febrile neutropenia 9.5%"),
    # --- other grade >= 3 treatment-related events and performance status -----------
    "chemo_ae_per_dose": Rate(0.1, "/standard dose",
                              "fitted: non-haematological and other grade >= 3 events -> "
                              "grade 3-5 TRAE 53.3% on platinum doublet (KEYNOTE-024)"),
    "radio_ae_per_fraction": Rate(0.017, "/8 Gy fraction",
                                  "assumption: ~5% grade >= 3 toxicity per SBRT course of 3 "
                                  "fractions"),
    "targeted_ae_hazard": Rate(0.005, "/d per standard daily dose on board",
                               "fitted: grade 3-4 TRAE 63% on sunitinib (CheckMate 214)"),
    "ae_susceptibility_cv": Rate(0.5, "1", "assumption: patients differ in frailty"),
    "toxicity_load_half_life": Rate(28.0, "d", "assumption: a grade >= 3 event resolves over "
                                               "2-6 weeks"),
    "toxicity_death_hazard": Rate(0.002, "/d per (load - 1)^2",
                                  "assumption: overlapping severe toxicities can kill; sized so "
                                  "that single agents rarely do"),
}


@dataclass(frozen=True)
class CancerType:
    """Per-cancer-type means; patients vary around them.

    Attributes
    ----------
    doubling_days
        Intrinsic tumor volume doubling time at the reference burden (days).
    antigenicity
        Relative neoantigen load (TMB / clonality proxy) scaling T-cell priming. Fitted to
        the type's anti-PD-1 response rate.
    phenotype_mix
        Probabilities of the hot / excluded / desert immune phenotypes.
    pdl1
        Baseline tumor PD-L1 signal in units of the PD-1 half-signal.
    kill_reserve
        Median most CD8 kill possible, in units of intrinsic growth (patients vary widely).
    treg_escape
        Share of tumors that escape through CTLA-4-dependent Treg suppression (the others
        through adaptive PD-L1). Fitted for melanoma to the anti-CTLA-4 response rate.
    ctla4_depletion
        Efficiency of anti-CTLA-4 Treg depletion (ADCC), 0-1+. Fitted for melanoma.
    chemo_sensitivity
        Multiplier on the de Pillis tumor chemo kill. Fitted where a chemotherapy arm is an
        anchor.
    chemo_toxicity
        Toxicity per dose of the type's chemotherapy regimen relative to docetaxel q3w
        (1.0), on the marrow and on other grade >= 3 events: "chemo" is a platinum doublet
        in NSCLC, FOLFOX/FOLFIRI every two weeks in CRC. Fitted where a chemotherapy arm's
        grade >= 3 toxicity is an anchor.
    driver, driver_prevalence
        The actionable driver targeted therapy needs, and its prevalence (0: none).
    targeted_sensitivity
        Kill rate (/d) of the driver-positive sensitive clone at full targeted effect.
        Fitted to the driver-positive response rate.
    radio_sensitivity
        Multiplier on the tumor radiosensitivity alpha.
    baseline_sod_mm
        Median baseline sum of target-lesion diameters.
    source
        Where the means come from.
    driver_source
        Where the driver's prevalence and the targeted anchor come from.
    """

    doubling_days: float
    antigenicity: float
    phenotype_mix: tuple[float, float, float]
    pdl1: float
    kill_reserve: float = 3.0
    treg_escape: float = 0.3
    ctla4_depletion: float = 4.0
    chemo_sensitivity: float = 0.15
    chemo_toxicity: float = 1.0
    driver: str = "none"
    driver_prevalence: float = 0.0
    targeted_sensitivity: float = 0.03
    radio_sensitivity: float = 1.5
    baseline_sod_mm: float = 70.0
    source: str = ""
    driver_source: str = ""

    def __post_init__(self) -> None:
        if len(self.phenotype_mix) != 3 or abs(sum(self.phenotype_mix) - 1.0) > 1e-6:
            raise ValidationError(
                f"phenotype_mix: expected 3 probabilities (hot, excluded, desert) summing to "
                f"1, got {self.phenotype_mix}"
            )
        for name in ("doubling_days", "antigenicity", "pdl1", "baseline_sod_mm",
                     "kill_reserve"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValidationError(f"{name}: expected a positive finite number, got {value}")
        if not 0 <= self.treg_escape <= 1:
            raise ValidationError(
                f"treg_escape: expected a share in [0, 1], got {self.treg_escape}")
        if not 0 <= self.driver_prevalence <= 1:
            raise ValidationError(f"driver_prevalence: expected a share in [0, 1], got "
                             f"{self.driver_prevalence}")
        if self.driver_prevalence > 0 and self.driver in ("none", WILD_TYPE):
            raise ValidationError(f"driver: a prevalence of {self.driver_prevalence} needs a "
                             f"driver name, got {self.driver!r}")


_MIX = "phenotype mix: assumption informed by Bagaev 2021 (IE/F/D) and Chen & Mellman 2017"
CANCER_TYPES: dict[str, CancerType] = {
    "melanoma": CancerType(
        35, 1.03, (0.45, 0.30, 0.25), 0.2, baseline_sod_mm=70, treg_escape=0.39,
        source="high TMB; " + _MIX,
        driver="BRAF_V600", driver_prevalence=0.385,
        driver_source="BRAF in 38.5% of melanomas (meta-analysis, 6,299 patients, "
                      "PMC6940026); dabrafenib + trametinib ORR 64% (COMBI-v, Robert NEJM "
                      "2015)"),
    "nsclc": CancerType(
        60, 0.04, (0.35, 0.35, 0.30), 0.16, chemo_sensitivity=0.087, source=_MIX,
        driver="EGFR", driver_prevalence=0.15,
        driver_source="assumption: sensitizing EGFR mutations in ~15% of Western NSCLC "
                      "(10-20%); osimertinib ORR 80% (FLAURA, Soria NEJM 2018)"),
    "nsclc_pdl1_high": CancerType(
        60, 0.21, (0.50, 0.30, 0.20), 0.5, chemo_sensitivity=0.26,
        source="PD-L1 TPS >= 50% (KEYNOTE-024); " + _MIX,
        driver_source="KEYNOTE-024 excluded EGFR/ALK-altered tumors: no actionable driver"),
    "rcc": CancerType(
        80, 0.6, (0.45, 0.30, 0.25), 0.16, chemo_sensitivity=0.1,
        source="low TMB but inflamed; " + _MIX,
        driver="VHL", driver_prevalence=0.86,
        driver_source="biallelic VHL inactivation in 86% of clear-cell RCC (PMC2795746); "
                      "sunitinib ORR 27% unselected (CheckMate 214, Motzer NEJM 2018)"),
    "urothelial": CancerType(
        50, 0.7, (0.30, 0.40, 0.30), 0.16, source=_MIX,
        driver="FGFR3", driver_prevalence=0.20,
        driver_source="FGFR alterations in up to 20% of advanced urothelial cancer; "
                      "erdafitinib ORR 40% (BLC2001, Loriot NEJM 2019)"),
    "hnscc": CancerType(
        50, 0.6, (0.35, 0.35, 0.30), 0.16, source=_MIX,
        driver="EGFR_expression", driver_prevalence=0.9,
        driver_source="assumption: ~90% of HNSCC express EGFR; cetuximab monotherapy ORR 13% "
                      "(Vermorken JCO 2007)"),
    "crc_msi": CancerType(
        70, 0.18, (0.60, 0.25, 0.15), 0.2, chemo_sensitivity=0.14,
        source="hypermutated MSI-H (Le 2015); " + _MIX,
        driver="BRAF_V600E", driver_prevalence=0.35,
        driver_source="assumption: BRAF V600E in ~35% of MSI-H CRC (39% of sporadic MSI in "
                      "one series); encorafenib + cetuximab ORR 20% (BEACON, Kopetz NEJM "
                      "2019)"),
    "crc_mss": CancerType(
        70, 0.3, (0.10, 0.40, 0.50), 0.12, source="low TMB, excluded/desert (Le 2015); " + _MIX,
        driver="RAS_wild_type", driver_prevalence=0.45,
        driver_source="assumption: extended RAS wild type in ~45% (KRAS exon 2 wild type "
                      "57%); panitumumab ORR 17% in KRAS wild type (Amado JCO 2008)"),
    "tnbc": CancerType(
        40, 0.5, (0.25, 0.35, 0.40), 0.16, source=_MIX,
        driver="gBRCA", driver_prevalence=0.112,
        driver_source="germline BRCA1/2 in 11.2% of TNBC (Couch JCO 2015); olaparib ORR "
                      "59.9% (OlympiAD, Robson NEJM 2017)"),
}

PHENOTYPES: tuple[str, ...] = ("hot", "excluded", "desert")

# Phenotype effects on T-cell entry, cDC1 recruitment and CAF density. Hot tumors are
# inflamed; excluded ones keep T cells at a CAF-rich margin; deserts lack priming.
# "infiltration" scales T/NK/B recruitment and the entry of primed T cells; "contact" is the
# share of T cells that reach tumor cells (excluded tumors hold them in CAF-rich stroma).
PHENOTYPE_EFFECTS: dict[str, dict[str, float]] = {
    "hot": {"infiltration": 1.0, "contact": 1.0, "cdc1": 1.0, "caf": 1.0, "access": 1.0},
    "excluded": {"infiltration": 0.6, "contact": 0.3, "cdc1": 0.7, "caf": 2.5,
                 "access": 0.5},
    "desert": {"infiltration": 0.15, "contact": 0.8, "cdc1": 0.3, "caf": 1.0,
               "access": 0.3},
}
PHENOTYPE_SOURCE = ("assumption: relative entry / contact / cDC1 / CAF factors, and T-cell "
                    "access as a factor of the kill reserve: inflamed tumors respond to "
                    "checkpoint blockade, excluded and desert ones rarely (Chen & Mellman "
                    "2017)")

# Steady-state abundance per tumor cell in a hot tumor without therapy, before feedbacks:
# recruitment of type j is (death_j x density_j x tumor cells), so the burden sets the
# immune and stromal mass (assumption, informed by pan-cancer scRNA compositions).
DENSITY: dict[str, float] = {
    "cd8_memory": 0.04, "cd4_helper": 0.08, "treg": 0.01, "nk": 0.03, "b_cell": 0.04,
    "cdc1": 0.004, "dc_other": 0.01, "monocyte": 0.03, "macrophage": 0.15, "mdsc": 0.03,
    "neutrophil": 0.03, "mast_cell": 0.01, "fibroblast": 0.15, "endothelial": 0.08,
}

PATIENT_CV = 0.3
"""Between-patient coefficient of variation of the log-normal patient parameters."""


@dataclass(frozen=True)
class ParameterSet:
    """The complete parameter set the simulator runs with.

    Attributes
    ----------
    rates
        Shared rates (name -> value).
    cancer_types
        Per-cancer-type means.
    version
        Version string of the calibrated file these came from ("defaults" otherwise).
    """

    rates: dict[str, float]
    cancer_types: dict[str, CancerType]
    version: str = "defaults"
    meta: dict[str, Any] = field(default_factory=dict)

    def cancer(self, cancer_type: str) -> CancerType:
        """The means of one cancer type; a clear error lists the valid ids."""
        choice("cancer_type", cancer_type, sorted(self.cancer_types))
        return self.cancer_types[cancer_type]

    def with_updates(
        self, rates: dict[str, float] | None = None,
        cancer_types: dict[str, dict[str, float]] | None = None,
    ) -> ParameterSet:
        """A copy with some shared rates and per-cancer fields replaced."""
        new_rates = dict(self.rates)
        for name, value in known_keys("rates", rates, new_rates).items():
            new_rates[name] = number(f"rates[{name!r}]", value)
        new_types = dict(self.cancer_types)
        for cancer_type, fields in (cancer_types or {}).items():
            new_types[cancer_type] = replace(self.cancer(cancer_type), **fields)
        return ParameterSet(new_rates, new_types, self.version, dict(self.meta))

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the calibrated parameter file format)."""
        return {
            "format_version": PARAMETER_FORMAT_VERSION,
            "version": self.version,
            "rates": self.rates,
            "cancer_types": {k: asdict(v) for k, v in self.cancer_types.items()},
            "meta": self.meta,
        }


def default_parameters() -> ParameterSet:
    """The uncalibrated defaults of :data:`RATES` and :data:`CANCER_TYPES`."""
    return ParameterSet({k: r.value for k, r in RATES.items()}, dict(CANCER_TYPES))


def parameters_from_json(data: dict[str, Any]) -> ParameterSet:
    """Build a :class:`ParameterSet` from a calibrated file's contents, checking the format."""
    if data.get("format_version") != PARAMETER_FORMAT_VERSION:
        raise ValidationError(
            f"format_version: expected {PARAMETER_FORMAT_VERSION}, got "
            f"{data.get('format_version')!r}"
        )
    base = default_parameters()
    types = {}
    for name, fields in data["cancer_types"].items():
        fields = dict(fields)
        fields["phenotype_mix"] = tuple(fields["phenotype_mix"])
        types[name] = CancerType(**fields)
    rates = dict(base.rates)
    unknown = sorted(set(data["rates"]) - set(rates))
    if unknown:
        raise ValidationError(f"rates: unknown rates {unknown} in parameter file")
    rates.update({k: float(v) for k, v in data["rates"].items()})
    return ParameterSet(rates, types, str(data["version"]), dict(data.get("meta", {})))


def save_parameters(params: ParameterSet, path: str | Path) -> Path:
    """Write a parameter set as JSON, atomically."""
    from immunegym._atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(params.to_json_dict(), indent=2, sort_keys=True) + "\n")
    return Path(path)


@lru_cache(maxsize=1)
def load_parameters() -> ParameterSet:
    """The calibrated parameters shipped with the package (defaults if none is shipped)."""
    resource = resources.files("immunegym.sim").joinpath("calibrated").joinpath(PARAMETER_FILE)
    if not resource.is_file():
        return default_parameters()
    return parameters_from_json(json.loads(resource.read_text()))
