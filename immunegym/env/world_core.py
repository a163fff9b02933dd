"""ImmuneWorld's batched simulator: the world model's latent state stepped one cycle at a time.

Each row (environment) is one patient. A reset reads the row's baseline biopsy and scan
through the row's ensemble member's filter (lab "unknown": the bank's compositions carry no
lab bias) and keeps the filtered state: the standardized log abundance ``z`` of every fine
type and the context ``c``. A cycle step applies the member's dynamics under the cycle's
dose: by default the mean path, or with ``sample=True`` a draw of the process noise (the
latent is sampled, never a biopsy). The row's composition is the state's, its sum of
diameters the state's read-out, capped at ``max_sod_mm`` (ImmuneSim's carrying capacity).

The state is all a step needs (``K + d_context`` floats per row, about 150 bytes), so there
is no history to cache or re-encode: a step costs one small MLP per row.

Ensemble members: each row follows one member for its whole episode (the epistemic draw).
With at least as many rows as members, rows are split into contiguous blocks (row ``i``
follows member ``i * E // n``); with fewer rows, each reset draws the member at random.
"""

from __future__ import annotations

import math

import torch

from immunegym.validation import ValidationError
from immunegym.world_model.model import WorldModel
from immunegym.world_model.timelines import CYCLE_DAYS, baseline_timelines

BASELINE_CELLS = 1000.0
"""Cells a bank composition stands for when the filter reads it as a biopsy."""


class WorldCore:
    """Batched world-model simulator of ``n`` rows.

    Parameters
    ----------
    model
        The world model (its device is used).
    n
        Rows.
    horizon
        Most steps a row takes before it must be reset.
    cycle_days
        Days per step.
    chunk_size
        Rows per forward pass (small matrices stay in CPU cache).
    sample
        Draw the process noise each step (default: the mean path).
    max_sod_mm
        Largest sum of diameters a row can reach.
    """

    def __init__(self, model: WorldModel, n: int, horizon: int, cycle_days: int = CYCLE_DAYS,
                 *, chunk_size: int = 4096, sample: bool = False,
                 max_sod_mm: float = math.expm1(8.0)) -> None:
        if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
            raise ValidationError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
        self.model = model
        self.device = model.device
        self.n, self.horizon, self.cycle_days = n, horizon, cycle_days
        self.chunk_size = int(chunk_size)
        self.sample = sample
        self.max_burden = math.log1p(max_sod_mm)
        self.members = model.members
        c = model.config.module
        dev = self.device
        self.z = torch.zeros(n, c.n_types, device=dev)
        self.c = torch.zeros(n, c.d_context, device=dev)
        self.steps = torch.zeros(n, dtype=torch.long, device=dev)
        n_members = len(self.members)
        self.block_members = n >= n_members
        self.member = (torch.arange(n, device=dev) * n_members) // n if self.block_members \
            else torch.zeros(n, dtype=torch.long, device=dev)
        self.cancer = torch.zeros(n, len(model.config.cancer_types), device=dev)
        self.tau = torch.full((n,), cycle_days / CYCLE_DAYS, device=dev)

    def memory_bytes(self) -> int:
        """Bytes of the rows' state."""
        tensors = [self.z, self.c, self.steps, self.member, self.cancer, self.tau]
        return sum(t.numel() * t.element_size() for t in tensors)

    # ------------------------------------------------------------------ reset
    @torch.no_grad()
    def reset_rows(self, rows: torch.Tensor, composition: torch.Tensor, sod_mm: torch.Tensor,
                   programs: torch.Tensor, program_mask: torch.Tensor, cancer: list[str],
                   generator: torch.Generator) -> None:
        """Start ``rows`` from observed baselines (a biopsy and a scan at day 0).

        ``programs`` and ``program_mask`` are accepted for the engine's interface; the latent
        model does not read program scores.
        """
        del programs, program_mask
        if not self.block_members:
            self.member[rows] = torch.randint(0, len(self.members), (len(rows),),
                                              generator=generator, device=self.device)
        n = len(rows)
        tl = baseline_timelines(
            composition.double().cpu().numpy().clip(0, None) + 1e-12,
            sod_mm.double().cpu().numpy().clip(0, None), [f"row{i}" for i in range(n)],
            cancer_type=list(cancer) if len(cancer) == n else "unknown", programs=(),
            n_cells=BASELINE_CELLS)
        tl.patients["lab"] = "unknown"
        x = self.model.inputs(tl)
        members = self.member[rows]
        for m in members.unique().tolist():
            which = torch.nonzero(members == m).flatten()
            sub = type(x)(**{k: v[which] for k, v in vars(x).items()})
            state = self.members[m].filter(sub).index(slice(None), 0)
            self.z[rows[which]] = state.z
            self.c[rows[which]] = state.c
        self.steps[rows] = 0
        types = self.model.config.cancer_types
        if types:
            onehot = torch.zeros(n, len(types), device=self.device)
            for i, cancer_type in enumerate(cancer):
                if cancer_type in types:
                    onehot[i, types.index(cancer_type)] = 1.0
            self.cancer[rows] = onehot

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, dose: torch.Tensor, generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance every row one cycle under ``dose`` (``(n, R)`` intensities).

        Returns the new composition ``(n, K)`` and sum of diameters ``(n,)`` in mm.
        """
        if bool((self.steps > self.horizon).any()):
            raise RuntimeError(f"a row ran {self.horizon + 1} steps, past the horizon; reset it")
        noise = (torch.randn(self.z.shape, generator=generator, device=self.device)
                 if self.sample else None)
        comp = torch.empty_like(self.z)
        burden = torch.empty(self.n, device=self.device)
        for m, module in enumerate(self.members):
            if self.block_members:
                lo = (m * self.n + len(self.members) - 1) // len(self.members)
                hi = ((m + 1) * self.n + len(self.members) - 1) // len(self.members)
                blocks = [torch.arange(a, min(a + self.chunk_size, hi), device=self.device)
                          for a in range(lo, hi, self.chunk_size)]
            else:
                which = torch.nonzero(self.member == m).flatten()
                blocks = [which[a:a + self.chunk_size]
                          for a in range(0, len(which), self.chunk_size)]
            for idx in blocks:
                if not len(idx):
                    continue
                z, c, _ = module.step(self.z[idx], self.c[idx], self.tau[idx], dose[idx],
                                      self.cancer[idx],
                                      noise=None if noise is None else noise[idx])
                b = module.sod_readout(z)
                if bool((b > self.max_burden).any()):
                    z = _cap_tumor(module, z, b, self.max_burden)
                    b = module.sod_readout(z).clamp(max=self.max_burden)
                self.z[idx], self.c[idx] = z, c
                comp[idx] = torch.softmax(module.composition_logits(z), -1)
                burden[idx] = b.clamp(0.0, self.max_burden)
        self.steps += 1
        return comp, torch.expm1(burden)


def _cap_tumor(module, z: torch.Tensor, burden: torch.Tensor, max_burden: float
               ) -> torch.Tensor:
    """Hold rows past the carrying capacity at their previous malignant abundance scale:
    shrink the malignant log abundance until the read-out is at the cap (a few bisection
    steps on the rows that overshoot)."""
    over = burden > max_burden
    lo = torch.zeros(int(over.sum()), device=z.device)
    hi = torch.full_like(lo, 10.0)
    base = z[over]
    for _ in range(12):
        mid = (lo + hi) / 2
        trial = base.clone()
        trial[:, 0] = base[:, 0] - mid
        too_big = module.burden(trial) > max_burden
        lo = torch.where(too_big, mid, lo)
        hi = torch.where(too_big, hi, mid)
    out = z.clone()
    fixed = base.clone()
    fixed[:, 0] = base[:, 0] - hi
    out[over] = fixed
    return out


__all__ = ["BASELINE_CELLS", "WorldCore"]
