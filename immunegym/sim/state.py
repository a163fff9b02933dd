"""The simulator's state: dataclasses of tensors, one row per virtual patient.

:class:`Patients` holds what stays fixed for a patient (parameters drawn around the cancer
type's means); :class:`SimState` holds what changes day by day. Both are frozen; the step
function returns a new :class:`SimState` (brax style), so states can be kept, compared and
branched for counterfactuals.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from immunegym.ontology import FINE_TYPES

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


class _TensorTree:
    """Shared helpers for dataclasses whose fields are tensors with a leading batch axis."""

    def to(self, device: torch.device | str):
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def index(self, rows: torch.Tensor | slice):
        """The patients at ``rows`` (a slice, index tensor or boolean mask)."""
        return replace(self, **{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    @classmethod
    def concat(cls, items):
        first = items[0]
        return replace(
            first, **{f.name: torch.cat([getattr(i, f.name) for i in items]) for f in fields(first)}
        )

    @property
    def n(self) -> int:
        return int(getattr(self, fields(self)[0].name).shape[0])


@dataclass(frozen=True)
class Patients(_TensorTree):
    """Per-patient parameters, drawn around the cancer-type means.

    All tensors have shape ``(n,)``; indices refer to the cancer-type and phenotype tuples of
    the :class:`~immunegym.sim.parameters.ParameterSet` they were drawn from.
    """

    cancer: torch.Tensor            # long: index into the sorted cancer-type ids
    phenotype: torch.Tensor         # long: 0 hot, 1 excluded, 2 desert
    growth: torch.Tensor            # Gompertz coefficient r (/d): growth = r ln(K/T)
    antigenicity: torch.Tensor      # priming multiplier
    infiltration: torch.Tensor      # T/NK/B recruitment multiplier (phenotype x patient)
    contact: torch.Tensor           # fraction of T cells in contact with tumor
    cdc1: torch.Tensor              # cDC1 recruitment multiplier
    caf: torch.Tensor               # CAF density multiplier
    treg: torch.Tensor              # Treg recruitment multiplier (set by the escape phase)
    pdl1: torch.Tensor              # baseline PD-L1 signal (units of Q50)
    ctla4_depletion: torch.Tensor   # anti-CTLA-4 ADCC efficiency
    chemo_sensitivity: torch.Tensor
    targeted_sensitivity: torch.Tensor
    radio_sensitivity: torch.Tensor
    escape_fraction: torch.Tensor   # immune-escape subclone share at baseline
    irae_susceptibility: torch.Tensor
    baseline_tumor: torch.Tensor    # tumor cells at day 0


@dataclass(frozen=True)
class SimState(_TensorTree):
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
        ``(n,)`` share of tumor cells inside the irradiated field during a course.
    day
        ``(n,)`` long, days since baseline (negative during burn-in).
    alive
        ``(n,)`` bool.
    death_day
        ``(n,)`` long, day of death or -1.
    irae
        ``(n,)`` bool, a grade >= 3 irAE has occurred.
    irae_day
        ``(n,)`` long, day of the first grade >= 3 irAE or -1.
    hold_until
        ``(n, 5)`` long, a therapy is held until this day (irAE rule "hold").
    stopped
        ``(n, 5)`` bool, a therapy is permanently stopped (irAE "stop" or progression).
    """

    cells: torch.Tensor
    antibody: torch.Tensor
    chemo: torch.Tensor
    targeted: torch.Tensor
    antigen_release: torch.Tensor
    radio_boost: torch.Tensor
    field_share: torch.Tensor
    day: torch.Tensor
    alive: torch.Tensor
    death_day: torch.Tensor
    irae: torch.Tensor
    irae_day: torch.Tensor
    hold_until: torch.Tensor
    stopped: torch.Tensor

    @property
    def tumor(self) -> torch.Tensor:
        """``(n,)`` malignant cells over all subclones."""
        return self.cells[:, :N_CLONES].sum(-1)

    def fine_counts(self) -> torch.Tensor:
        """``(n, 20)`` counts over the fine ontology types."""
        return compartments_to_fine(self.cells)

    def composition(self) -> torch.Tensor:
        """``(n, 20)`` fractions over the fine ontology types."""
        counts = self.fine_counts()
        return counts / counts.sum(-1, keepdim=True).clamp_min(1.0)
