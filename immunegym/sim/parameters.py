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

PARAMETER_FILE = "immunesim-params-v1.json"
"""Name of the calibrated parameter file inside ``immunegym/sim/calibrated/``."""

PARAMETER_FORMAT_VERSION = 1


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
                              "immunoediting (Schreiber 2011): at day 0 net growth is at least "
                              "this share of intrinsic growth"),
    "resistance_mutation": Rate(1e-7, "/division",
                                "assumption: per-division rate of a targeted-therapy "
                                "resistance mutation (order of point-mutation rates)"),
    "resistant_fraction_at_baseline": Rate(1e-6, "1",
                                           "assumption: pre-existing resistant subclone"),
    "escape_fraction_at_baseline": Rate(0.003, "1",
                                        "assumption: median share of MHC-I-low cells "
                                        "(B2M/JAK loss, Zaretsky 2016; Sade-Feldman 2017)"),
    "escape_fraction_cv": Rate(1.5, "1", "assumption: escape share varies widely"),
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
    "cd8_kill_max": Rate(0.5, "/d", _DP05 + " form D = d (E/T)^l / (s + (E/T)^l); d scaled "
                                   "down from 5.80/4.23 (assumption: spatial access limits "
                                   "kill in solid tumors, so responses take weeks on CT as in "
                                   "Butner 2020)"),
    "cd8_kill_exponent": Rate(1.4, "1", _DP05 + ": l = 1.36 / 1.43"),
    "cd8_kill_half_ratio": Rate(0.05, "1", _DP05 + " s = 0.25 / 0.36, rescaled with d "
                                               "(assumption)"),
    "tex_kill_relative": Rate(0.1, "1", "assumption: terminally exhausted cells keep ~10% of "
                                        "effector cytotoxicity (Miller 2019 Nat Immunol)"),
    "treg_suppression": Rate(11.0, "1", _JAF19 + ": kill x T/(T + 11 Treg)"),
    "pd1_half_signal": Rate(1.0, "1", _JAF19 + ": H_PD1 = (Q/Q50)^2/(1+(Q/Q50)^2); Q in "
                                      "units of Q50"),
    "pdl1_ifn_induction": Rate(1.5, "1", "assumption: IFN-g raises tumor PD-L1 up to 2.5-fold "
                                         "(adaptive resistance, Taube 2012)"),
    "pdl1_max": Rate(4.0, "1", "assumption: tumor PD-L1 signal saturates at 4 x Q50; escape "
                               "beyond that is carried by faster growth"),
    "exhaustion_rate": Rate(0.1, "/d", _JAF19 + ": 0.1/d x C/(C+T) x H_PD1"),
    "tgfb_max_inhibition": Rate(0.5, "1", "assumption: TGF-b halves kill at saturation"),
    "mdsc_half_ratio": Rate(0.04, "MDSC per tumor cell",
                            "assumption: MDSC suppression half-maximal at 4 MDSC per 100 "
                            "tumor cells"),
    "mdsc_max_inhibition": Rate(0.6, "1", "assumption: MDSC suppression saturates at 60%"),
    "nk_kill_max": Rate(0.01, "/d", "assumption: NK kill saturating in NK:tumor ratio, well "
                                    "below CD8 (de Pillis 2005 NK term is small)"),
    "nk_kill_half_ratio": Rate(0.05, "1", "assumption"),
    "m1_kill_max": Rate(0.005, "/d", "assumption: M1 macrophage tumoricidal activity"),
    "m1_kill_half_ratio": Rate(0.1, "1", "assumption"),
    # --- T-cell priming, expansion, differentiation, turnover ---------------------
    "priming_rate": Rate(2e-3, "Tpex per tumor cell per d at antigenicity 1",
                         "assumption: scaled so hot tumors hold ~1-3% Tpex"),
    "ctla4_priming_boost": Rate(3.0, "1", "assumption: full CTLA-4 blockade raises priming "
                                          "4-fold (CD28 costimulation, Milberg 2019; "
                                          "repertoire broadening, Kvistborg 2014)"),
    "help_priming_boost": Rate(0.5, "1", "assumption: CD4 help raises priming up to 1.5-fold"),
    "antigen_release_boost": Rate(2.0, "1", "assumption: therapy-induced tumor death raises "
                                            "priming up to 3-fold (cancer-immunity cycle)"),
    "tpex_self_renewal": Rate(0.05, "/d", "assumption: TCF1+ Tpex self-renewal (Siddiqui "
                                          "2019, Miller 2019)"),
    "tpex_capacity": Rate(0.1, "Tpex per tumor cell", "assumption: niche limit of Tpex"),
    "pd1_tpex_boost": Rate(1.4, "1", "assumption: PD-1 blockade raises Tpex proliferation "
                                     "2.4-fold, just short of their losses, so the expansion "
                                     "scales with priming (Kamphorst 2017, Im 2016)"),
    "tpex_differentiation": Rate(0.06, "/d", "assumption: Tpex -> effector"),
    "pd1_differentiation_boost": Rate(1.0, "1", "assumption: PD-1 blockade doubles Tpex -> "
                                                "effector flux (Siddiqui 2019)"),
    "effector_burst": Rate(4.0, "effectors per differentiating Tpex",
                           "assumption: transitional proliferation burst"),
    "tpex_death": Rate(0.01, "/d", "assumption: long-lived progenitors"),
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
    "targeted_ec50": Rate(0.2, "dose units", "assumption: standard dose ~83% effect"),
    # --- immune-related adverse events (hazards fitted; see calibrate.py) -------------
    "irae_hazard_pd1": Rate(8e-4, "/d at full occupancy",
                            "fitted: grade>=3 irAE ~0.15 on anti-PD-1 (CheckMate 067 16.3%)"),
    "irae_hazard_ctla4": Rate(5e-3, "/d at full occupancy",
                              "fitted: grade>=3 irAE ~0.27 on ipilimumab (CheckMate 067)"),
    "irae_interaction": Rate(1.0, "1", "assumption, not fitted: PD-1 x CTLA-4 occupancy "
                                       "term as a multiple of the CTLA-4 hazard"),
    "irae_susceptibility_cv": Rate(0.8, "1", "assumption: wide between-patient variation in "
                                             "autoimmune susceptibility"),
    "irae_hold_days": Rate(42.0, "d", "assumption: hold 6 weeks, resume (ASCO 2021 grade 3)"),
}


@dataclass(frozen=True)
class CancerType:
    """Per-cancer-type means; patients vary around them.

    Attributes
    ----------
    doubling_days
        Intrinsic tumor volume doubling time at the reference burden (days).
    antigenicity
        Relative neoantigen load (TMB / clonality proxy) scaling T-cell priming. Fitted.
    phenotype_mix
        Probabilities of the hot / excluded / desert immune phenotypes.
    pdl1
        Baseline tumor PD-L1 signal in units of the PD-1 half-signal.
    ctla4_depletion
        Efficiency of anti-CTLA-4 Treg depletion (ADCC), 0-1+. Fitted for melanoma.
    chemo_sensitivity
        Multiplier on the de Pillis tumor chemo kill. Fitted for nsclc_pdl1_high.
    targeted_sensitivity
        Growth inhibition of the sensitive clone at full targeted-therapy effect (0-1).
    radio_sensitivity
        Multiplier on the tumor radiosensitivity alpha.
    baseline_sod_mm
        Median baseline sum of target-lesion diameters.
    source
        Where the means come from.
    """

    doubling_days: float
    antigenicity: float
    phenotype_mix: tuple[float, float, float]
    pdl1: float
    ctla4_depletion: float = 4.0
    chemo_sensitivity: float = 0.15
    targeted_sensitivity: float = 0.5
    radio_sensitivity: float = 1.5
    baseline_sod_mm: float = 70.0
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.phenotype_mix) != 3 or abs(sum(self.phenotype_mix) - 1.0) > 1e-6:
            raise ValueError(
                f"phenotype_mix: expected 3 probabilities (hot, excluded, desert) summing to "
                f"1, got {self.phenotype_mix}"
            )
        for name in ("doubling_days", "antigenicity", "pdl1", "baseline_sod_mm"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name}: expected a positive finite number, got {value}")


_MIX = "phenotype mix: assumption informed by Bagaev 2021 (IE/F/D) and Chen & Mellman 2017"
CANCER_TYPES: dict[str, CancerType] = {
    "melanoma": CancerType(60, 0.3, (0.45, 0.30, 0.25), 0.5, baseline_sod_mm=70,
                           source="high TMB; " + _MIX),
    "nsclc": CancerType(90, 0.7, (0.35, 0.35, 0.30), 0.4, source=_MIX),
    "nsclc_pdl1_high": CancerType(90, 0.8, (0.50, 0.30, 0.20), 1.2,
                                  source="PD-L1 TPS >= 50% (KEYNOTE-024); " + _MIX),
    "rcc": CancerType(120, 0.6, (0.45, 0.30, 0.25), 0.4, chemo_sensitivity=0.1,
                      source="low TMB but inflamed; " + _MIX),
    "urothelial": CancerType(70, 0.7, (0.30, 0.40, 0.30), 0.4, source=_MIX),
    "hnscc": CancerType(70, 0.6, (0.35, 0.35, 0.30), 0.4, source=_MIX),
    "crc_msi": CancerType(100, 1.2, (0.60, 0.25, 0.15), 0.5,
                          source="hypermutated MSI-H (Le 2015); " + _MIX),
    "crc_mss": CancerType(100, 0.3, (0.10, 0.40, 0.50), 0.3,
                          source="low TMB, excluded/desert (Le 2015); " + _MIX),
    "tnbc": CancerType(55, 0.5, (0.25, 0.35, 0.40), 0.4, source=_MIX),
}

PHENOTYPES: tuple[str, ...] = ("hot", "excluded", "desert")

# Phenotype effects on T-cell entry, cDC1 recruitment and CAF density. Hot tumors are
# inflamed; excluded ones keep T cells at a CAF-rich margin; deserts lack priming.
# "infiltration" scales T/NK/B recruitment and the entry of primed T cells; "contact" is the
# share of T cells that reach tumor cells (excluded tumors hold them in CAF-rich stroma).
PHENOTYPE_EFFECTS: dict[str, dict[str, float]] = {
    "hot": {"infiltration": 1.0, "contact": 1.0, "cdc1": 1.0, "caf": 1.0},
    "excluded": {"infiltration": 0.6, "contact": 0.3, "cdc1": 0.7, "caf": 2.5},
    "desert": {"infiltration": 0.15, "contact": 0.8, "cdc1": 0.3, "caf": 1.0},
}
PHENOTYPE_SOURCE = ("assumption: relative entry / contact / cDC1 / CAF factors "
                    "(Chen & Mellman 2017)")

# Steady-state abundance per tumor cell in a hot tumor without therapy, before feedbacks:
# recruitment of type j is (death_j x density_j x tumor cells), so the burden sets the
# immune and stromal mass (assumption, informed by pan-cancer scRNA compositions).
DENSITY: dict[str, float] = {
    "cd8_memory": 0.04, "cd4_helper": 0.08, "treg": 0.03, "nk": 0.03, "b_cell": 0.04,
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
        if cancer_type not in self.cancer_types:
            raise ValueError(
                f"cancer_type: unknown id {cancer_type!r}; expected one of "
                f"{sorted(self.cancer_types)}"
            )
        return self.cancer_types[cancer_type]

    def with_updates(
        self, rates: dict[str, float] | None = None,
        cancer_types: dict[str, dict[str, float]] | None = None,
    ) -> ParameterSet:
        """A copy with some shared rates and per-cancer fields replaced."""
        new_rates = dict(self.rates)
        for name, value in (rates or {}).items():
            if name not in new_rates:
                raise ValueError(f"rates: unknown rate {name!r}")
            new_rates[name] = float(value)
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
        raise ValueError(
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
        raise ValueError(f"rates: unknown rates {unknown} in parameter file")
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
