"""The simulator's state: dataclasses of tensors, one row per virtual patient.

:class:`Patients` holds what stays fixed for a patient (parameters drawn around the cancer
type's means); :class:`SimState` holds what changes day by day. Both are frozen; the step
function returns a new :class:`SimState` (brax style), so states can be kept, compared and
branched for counterfactuals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from immunegym.ontology import FINE_TYPES
from immunegym.sim.toxicity import ToxPatients, ToxState
from immunegym.sim.tree import TensorTree

MALIGNANT_CLONES: tuple[str, ...] = (
    "malignant_sensitive", "malignant_resistant", "malignant_escape",
)
"""Tumor subclones: therapy-sensitive, targeted-therapy-resistant, and immune-escape
(MHC-I-low: invisible to CD8 T cells, visible to NK cells)."""

COMPARTMENTS: tuple[str, ...] = MALIGNANT_CLONES + tuple(FINE_TYPES[1:])
"""Hidden cell compartments: the tumor subclones, then the 19 non-malignant fine types."""

IDX: dict[str, int] = {name: i for i, name in enumerate(COMPARTMENTS)}
N_COMPARTMENTS = len(COMPARTMENTS)
N_CLONES = len(MALIGNANT_CLONES)

ANTIBODIES: tuple[str, ...] = ("anti_pd1", "anti_ctla4")


def compartments_to_fine(cells: torch.Tensor) -> torch.Tensor:
    """Sum the tumor subclones so a ``(..., 22)`` compartment tensor becomes ``(..., 20)``
    counts over :data:`immunegym.ontology.FINE_TYPES`."""
    malignant = cells[..., :N_CLONES].sum(-1, keepdim=True)
    return torch.cat([malignant, cells[..., N_CLONES:]], dim=-1)


@dataclass(frozen=True, repr=False)  # TensorTree.__repr__: sizes, not tensors
class Patients(TensorTree):
    """Per-patient parameters, drawn around the cancer-type means.

    All tensors have shape ``(n,)``; indices refer to the cancer-type and phenotype tuples of
    the :class:`~immunegym.sim.parameters.ParameterSet` they were drawn from.
    """

    cancer: torch.Tensor            # long: index into the sorted cancer-type ids
    phenotype: torch.Tensor         # long: 0 hot, 1 excluded, 2 desert
    growth: torch.Tensor            # Gompertz coefficient r (/d): growth = r ln(K/T)
    kill_reserve: torch.Tensor      # most CD8 kill possible, in units of intrinsic growth
    antigenicity: torch.Tensor      # priming multiplier
    infiltration: torch.Tensor      # T/NK/B recruitment multiplier (phenotype x patient)
    contact: torch.Tensor           # fraction of T cells in contact with tumor
    cdc1: torch.Tensor              # cDC1 recruitment multiplier
    caf: torch.Tensor               # CAF density multiplier
    treg: torch.Tensor              # Treg recruitment multiplier
    treg_potency: torch.Tensor      # CTLA-4-dependent Treg suppression (escape phase; >= 1)
    escape_via_treg: torch.Tensor   # 1.0: the tumor escapes through Treg, else PD-L1
    pdl1: torch.Tensor              # baseline PD-L1 signal (units of Q50)
    ctla4_depletion: torch.Tensor   # anti-CTLA-4 ADCC efficiency
    chemo_sensitivity: torch.Tensor
    targeted_sensitivity: torch.Tensor  # targeted-therapy kill of the sensitive clone (/d)
    radio_sensitivity: torch.Tensor
    driver: torch.Tensor            # 1.0: carries the cancer type's actionable driver
    escape_fraction: torch.Tensor   # immune-escape subclone share at baseline
    irae_susceptibility: torch.Tensor
    anc_baseline: torch.Tensor      # neutrophils x 1e9/L
    marrow_sensitivity: torch.Tensor
    ae_susceptibility: torch.Tensor
    chemo_toxicity: torch.Tensor  # the type's chemotherapy regimen vs docetaxel
    baseline_tumor: torch.Tensor    # tumor cells at day 0

    @property
    def toxicity(self) -> ToxPatients:
        """The toxicity parameters (:class:`~immunegym.sim.toxicity.ToxPatients`)."""
        return ToxPatients(self.irae_susceptibility, self.anc_baseline,
                           self.marrow_sensitivity, self.ae_susceptibility,
                           self.chemo_toxicity)


@dataclass(frozen=True, repr=False)  # TensorTree.__repr__: sizes, not tensors
class SimState(TensorTree):
    """Everything that changes day by day, for ``n`` patients.

    Attributes
    ----------
    cells
        ``(n, 22)`` cell counts per compartment (:data:`COMPARTMENTS`).
    antibody
        ``(n, 2, 2)`` nmol of anti-PD-1 / anti-CTLA-4 in the central / peripheral compartment.
    chemo
        ``(n,)`` chemotherapy amount (de Pillis units).
    targeted
        ``(n,)`` targeted-therapy amount (dose units).
    antigen_release
        ``(n,)`` smoothed fraction of tumor killed per day by chemo / radiotherapy.
    radio_boost
        ``(n,)`` decaying radiotherapy-induced cDC1 recruitment signal.
    field_share
        ``(n,)`` share of tumor cells inside the irradiated lesion (0 before radiotherapy);
        that lesion leaves the RECIST target sum (RECIST 1.1).
    memory
        ``(n,)`` tumor-specific memory precursors that outlive the tumor (a floor of the
        Tpex niche).
    given
        ``(n, 5)`` doses actually given on the previous day (after the protocol rules).
    day
        ``(n,)`` long, days since baseline (negative during burn-in).
    alive
        ``(n,)`` bool.
    death_day
        ``(n,)`` long, day of death or -1.
    tox
        Toxicity and treatment-administration state (:class:`ToxState`): neutrophils,
        adverse events, holds, delays, reductions, stops, cause of death.
    """

    cells: torch.Tensor
    antibody: torch.Tensor
    chemo: torch.Tensor
    targeted: torch.Tensor
    antigen_release: torch.Tensor
    radio_boost: torch.Tensor
    field_share: torch.Tensor
    memory: torch.Tensor
    given: torch.Tensor
    day: torch.Tensor
    alive: torch.Tensor
    death_day: torch.Tensor
    tox: ToxState

    @property
    def tumor(self) -> torch.Tensor:
        """``(n,)`` malignant cells over all subclones."""
        return self.cells[:, :N_CLONES].sum(-1)

    @property
    def target_tumor(self) -> torch.Tensor:
        """``(n,)`` malignant cells outside the irradiated lesion (the RECIST target sum)."""
        return self.tumor * (1 - self.field_share)

    @property
    def irae(self) -> torch.Tensor:
        """``(n,)`` bool: a grade >= 3 immune-related adverse event has occurred."""
        return self.tox.irae_count > 0

    @property
    def irae_day(self) -> torch.Tensor:
        """``(n,)`` day of the first grade >= 3 irAE, or -1."""
        return self.tox.irae_day

    @property
    def stopped(self) -> torch.Tensor:
        """``(n, 5)`` bool: a therapy is permanently stopped (toxicity or progression)."""
        return self.tox.stopped

    def fine_counts(self) -> torch.Tensor:
        """``(n, 20)`` counts over the fine ontology types."""
        return compartments_to_fine(self.cells)

    def composition(self) -> torch.Tensor:
        """``(n, 20)`` fractions over the fine ontology types."""
        counts = self.fine_counts()
        return counts / counts.sum(-1, keepdim=True).clamp_min(1.0)
