"""Pharmacokinetics shared by ImmuneSim and the environments' toxicity layer.

Drug amounts are the only thing a treatment changes directly, so both simulators keep them
the same way: checkpoint antibodies in a two-compartment model (Ahamadi 2017 for
pembrolizumab; typical IgG1 values for ipilimumab), chemotherapy as the de Pillis 2009
decaying amount, targeted therapy as an oral drug with a one-day half-life. From the amounts
come tumor receptor occupancy (efficacy: it saturates at the standard dose, so higher doses
add no efficacy, as KEYNOTE-002/-010 show) and systemic exposure relative to the standard
dose (toxicity: it keeps rising with dose). Everything here is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from immunegym.data.vocab import THERAPIES
from immunegym.regimen_grammar import RADIO_STANDARD_GY  # noqa: F401  (re-exported)

PD1, CTLA4, CHEMO, RADIO, TARGETED = range(len(THERAPIES))
ANTIBODY_COLUMNS = [PD1, CTLA4]
# RADIO_STANDARD_GY (Gy of one standard radiotherapy fraction, SBRT 8 Gy x 3: radiotherapy
# doses are in Gy) is defined once, in the regimen grammar.


@dataclass(frozen=True)
class Exposure:
    """What the drugs on board do today, each ``(n,)``.

    Attributes
    ----------
    occupancy_pd1, occupancy_ctla4
        Tumor receptor occupancy (efficacy).
    systemic_pd1, systemic_ctla4
        Central concentration over its standard-schedule mean (1 = a standard course).
    chemo_amount, chemo_effect
        de Pillis amount ``M`` (drives the marrow) and tumor effect ``1 - exp(-delta M)``.
    targeted_amount, targeted_effect
        Oral drug on board in standard daily doses (drives toxicity) and the saturating
        fraction of its maximal effect on the tumor.
    """

    occupancy_pd1: torch.Tensor
    occupancy_ctla4: torch.Tensor
    systemic_pd1: torch.Tensor
    systemic_ctla4: torch.Tensor
    chemo_amount: torch.Tensor
    chemo_effect: torch.Tensor
    targeted_amount: torch.Tensor
    targeted_effect: torch.Tensor


class Pharmacokinetics:
    """Drug kinetics with its constants as tensors on one device.

    Parameters
    ----------
    rates
        The shared rates (:data:`immunegym.sim.parameters.RATES` values).
    device
        Torch device.
    """

    def __init__(self, rates: dict[str, float], device: torch.device | str = "cpu") -> None:
        r = rates
        self.r = r
        self.device = torch.device(device)
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
        self.chemo_keep = math.exp(-r["chemo_decay"])
        self.targeted_keep = math.exp(-math.log(2) / r["targeted_half_life"])
        self.reference_amount = self._standard_course_mean()

    def _standard_course_mean(self) -> torch.Tensor:
        """``(2,)`` mean central amount over the first 12 weeks of a standard q3w course."""
        amount = torch.zeros(1, 2, 2, device=self.device)
        total = torch.zeros(2, device=self.device)
        days = 84
        for day in range(days):
            if day % 21 == 0:
                amount[:, :, 0] += self.antibody_nmol
            total += amount[0, :, 0]
            amount = self.decay_antibody(amount)
        return total / days

    def dose(self, antibody: torch.Tensor, chemo: torch.Tensor, targeted: torch.Tensor,
             given: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Add today's doses ``given`` (``(n, 5)`` standard-dose multiples) to the amounts."""
        antibody = antibody.clone()
        antibody[:, :, 0] += given[:, ANTIBODY_COLUMNS] * self.antibody_nmol
        return antibody, chemo + given[:, CHEMO], targeted + given[:, TARGETED]

    def exposure(self, antibody: torch.Tensor, chemo: torch.Tensor,
                 targeted: torch.Tensor) -> Exposure:
        """Occupancy, systemic exposure and cytotoxic effects of the amounts on board."""
        r = self.r
        central = antibody[:, :, 0]
        conc = central / self.v1 * r["tumor_partition"]  # nM in the tumor interstitium
        occ = conc / (conc + self.kd)
        systemic = central / self.reference_amount
        chemo_effect = 1 - torch.exp(-r["chemo_delta"] * chemo)
        targeted_effect = targeted / (targeted + r["targeted_ec50"])
        return Exposure(occ[:, 0], occ[:, 1], systemic[:, 0], systemic[:, 1], chemo,
                        chemo_effect, targeted, targeted_effect)

    def decay(self, antibody: torch.Tensor, chemo: torch.Tensor, targeted: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One day of elimination of every drug."""
        return (self.decay_antibody(antibody), chemo * self.chemo_keep,
                targeted * self.targeted_keep)

    def decay_antibody(self, antibody: torch.Tensor) -> torch.Tensor:
        """One day of two-compartment antibody kinetics (4 explicit sub-steps)."""
        central, peripheral = antibody[:, :, 0], antibody[:, :, 1]
        h = 0.25
        for _ in range(4):
            to_p = self.k12 * central * h
            to_c = self.k21 * peripheral * h
            central = central - self.k10 * central * h - to_p + to_c
            peripheral = peripheral + to_p - to_c
        return torch.stack([central, peripheral], dim=-1)
