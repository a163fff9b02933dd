"""ImmuneWorld's batched simulator: the pretrained world model stepped one cycle at a time.

Each row (environment) is one patient's timeline. A cycle step encodes the row's current
point (its composition, burden, day, exposure, and the therapy chosen for the cycle ahead)
and moves the row to the next point predicted by the row's ensemble member: by default the
mean of its predictive distribution (a Dirichlet over the composition, a Gaussian over
``log1p`` sum of diameters), or a draw from it with ``sample=True``. This is
:meth:`WorldModel.rollout` one step per call, for thousands of rows that start and end at
different times.

Why the mean by default: drawing the burden every cycle and feeding the draw back makes
``log1p`` SOD a random walk whose width compounds. On the same 256 ImmuneSim patients under
anti-PD-1 + anti-CTLA-4 for 8 cycles, sampling gave 130 deaths and a 99th-percentile SOD of
330 mm where ImmuneSim gave 10 and 127 mm; the mean path gave 7 and 100 mm
(BENCHMARKS.md). Randomness then comes from the ensemble member, the patient, biopsies,
scans and toxicity. The SOD never exceeds ``max_sod_mm`` (ImmuneSim's carrying capacity).

Two ways to see the past, same predictions (tested):

* with a key-value cache (:mod:`immunegym.world_model.stepper`) a step encodes only the new
  point: the fast path, ``~365 kB`` per row for a 16-cycle horizon (17 points);
* without, the row's compact history (``~2 kB``) is re-encoded every step: the path for
  very many rows (65,536 rows need ~24 GB of cache but only ~0.2 GB of history).

``cache="auto"`` takes the cache when it fits ``cache_budget_bytes``. Rows are processed in
chunks of ``chunk_size`` (small matrices stay in CPU cache), but sampling draws for the
whole batch at once, so chunking and caching never change a trajectory.

Ensemble members: each row follows one member for its whole episode (the epistemic draw).
With at least as many rows as members, rows are split into contiguous blocks (row ``i``
follows member ``i * E // n``); with fewer rows, each reset draws the member at random.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from immunegym.world_model.model import WorldModel
from immunegym.world_model.module import LOG_EPS, NextState, TokenInputs, sample_next
from immunegym.world_model.stepper import KVCache, step_point
from immunegym.world_model.timelines import CYCLE_DAYS

DEFAULT_CACHE_BUDGET = 2 * 1024**3
"""Bytes the key-value cache may take before ``cache="auto"`` re-encodes instead."""


@dataclass
class WorldRows:
    """The current (not yet encoded) point of every row, and its history.

    ``composition (n, K)``, ``burden (n,)`` (``log1p`` mm), ``predicted (n,)`` bool,
    ``day (n,)``, ``exposure (n, R)``; baseline ``programs (n, K, G)`` and
    ``program_mask (n, K)``; history ``hist_*`` with ``(n, H, ...)`` of encoded points and
    ``length (n,)`` points encoded so far.
    """

    composition: torch.Tensor
    burden: torch.Tensor
    predicted: torch.Tensor
    day: torch.Tensor
    exposure: torch.Tensor
    programs: torch.Tensor
    program_mask: torch.Tensor
    hist_composition: torch.Tensor
    hist_burden: torch.Tensor
    hist_predicted: torch.Tensor
    hist_dose: torch.Tensor
    hist_exposure: torch.Tensor
    length: torch.Tensor


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
    cache
        ``True``, ``False`` or ``"auto"`` (see the module docstring).
    cache_budget_bytes
        Memory the cache may take under ``"auto"``.
    chunk_size
        Rows per forward pass.
    sample
        Draw each step from the predictive distribution (default: take its mean).
    max_sod_mm
        Largest sum of diameters a row can reach.
    """

    def __init__(self, model: WorldModel, n: int, horizon: int, cycle_days: int = CYCLE_DAYS,
                 *, cache: bool | str = "auto", cache_budget_bytes: int = DEFAULT_CACHE_BUDGET,
                 chunk_size: int = 256, sample: bool = False,
                 max_sod_mm: float = math.expm1(8.0)) -> None:
        if cache not in (True, False, "auto"):
            raise ValueError(f"cache: got {cache!r}; expected True, False or 'auto'")
        if chunk_size < 1:
            raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")
        self.model = model
        self.device = model.device
        self.n, self.horizon, self.cycle_days = n, horizon, cycle_days
        self.chunk_size = chunk_size
        self.sample = sample
        self.max_burden = math.log1p(max_sod_mm)
        self.members = model.members
        c = model.config.module
        k, g, r = c.n_types, c.n_programs, c.n_therapies
        # One spare point: a finished row is stepped once more before an autoreset.
        self.capacity = capacity = horizon + 1
        need = n * KVCache.bytes_per_row(self.members[0], capacity)
        self.cached = bool(cache) if cache != "auto" else need <= cache_budget_bytes
        self.cache = (KVCache.empty(self.members[0], n, capacity, self.device)
                      if self.cached else None)
        dev = self.device
        self.rows = WorldRows(
            composition=torch.zeros(n, k, device=dev), burden=torch.zeros(n, device=dev),
            predicted=torch.zeros(n, dtype=torch.bool, device=dev),
            day=torch.zeros(n, device=dev), exposure=torch.zeros(n, r, device=dev),
            programs=torch.zeros(n, k, g, device=dev),
            program_mask=torch.zeros(n, k, dtype=torch.bool, device=dev),
            hist_composition=torch.zeros(n, capacity, k, device=dev),
            hist_burden=torch.zeros(n, capacity, device=dev),
            hist_predicted=torch.zeros(n, capacity, dtype=torch.bool, device=dev),
            hist_dose=torch.zeros(n, capacity, r, device=dev),
            hist_exposure=torch.zeros(n, capacity, r, device=dev),
            length=torch.zeros(n, dtype=torch.long, device=dev))
        n_members = len(self.members)
        self.block_members = n >= n_members
        self.member = (torch.arange(n, device=dev) * n_members) // n if self.block_members \
            else torch.zeros(n, dtype=torch.long, device=dev)
        self.cancer = torch.zeros(n, len(model.config.cancer_types), device=dev)

    def memory_bytes(self) -> int:
        """Bytes of the rows' state (cache included)."""
        tensors = [v for v in vars(self.rows).values()]
        if self.cache is not None:
            tensors += self.cache.keys + self.cache.values
        return sum(t.numel() * t.element_size() for t in tensors)

    # ------------------------------------------------------------------ reset
    def reset_rows(self, rows: torch.Tensor, composition: torch.Tensor, sod_mm: torch.Tensor,
                   programs: torch.Tensor, program_mask: torch.Tensor, cancer: list[str],
                   generator: torch.Generator) -> None:
        """Start ``rows`` from observed baselines (a biopsy and a scan at day 0)."""
        s = self.rows
        s.composition[rows] = composition
        s.burden[rows] = torch.log1p(sod_mm)
        s.predicted[rows] = False
        s.day[rows] = 0.0
        s.exposure[rows] = 0.0
        s.programs[rows] = programs
        s.program_mask[rows] = program_mask
        s.length[rows] = 0
        if self.cache is not None:
            self.cache.length[rows] = 0
        if not self.block_members:
            self.member[rows] = torch.randint(0, len(self.members), (len(rows),),
                                              generator=generator, device=self.device)
        types = self.model.config.cancer_types
        if types:
            onehot = torch.zeros(len(rows), len(types), device=self.device)
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
        s = self.rows
        if bool((s.length >= self.capacity).any()):
            raise RuntimeError(f"a row ran {self.capacity} steps, past the horizon; reset it")
        pred = self._predict(dose)
        comp, burden = sample_next(pred, generator, noise=self.sample)
        rows = torch.arange(self.n, device=self.device)
        pos = s.length
        s.hist_composition[rows, pos] = s.composition
        s.hist_burden[rows, pos] = s.burden
        s.hist_predicted[rows, pos] = s.predicted
        s.hist_dose[rows, pos] = dose
        s.hist_exposure[rows, pos] = s.exposure
        s.length += 1
        s.composition = comp
        s.burden = burden.clamp(0.0, self.max_burden)
        s.predicted = torch.ones_like(s.predicted)
        s.day = s.day + self.cycle_days
        s.exposure = s.exposure + dose * self.cycle_days / CYCLE_DAYS
        return comp, torch.expm1(s.burden)

    def _predict(self, dose: torch.Tensor) -> NextState:
        parts: list[tuple[torch.Tensor, NextState]] = []
        for m, module in enumerate(self.members):
            which = torch.nonzero(self.member == m).flatten()
            if not len(which):
                continue
            contiguous = self.block_members
            for start in range(0, len(which), self.chunk_size):
                idx = which[start:start + self.chunk_size]
                parts.append((idx, self._predict_rows(module, idx, dose, contiguous)))
        k = self.rows.composition.shape[1]
        out = NextState(*(torch.empty(self.n, *shape, device=self.device)
                          for shape in ((k,), (), (), ())))
        for idx, pred in parts:
            for f in ("logits", "log_concentration", "burden_mean", "burden_log_sigma"):
                getattr(out, f)[idx] = getattr(pred, f)
        return out

    def _predict_rows(self, module, idx: torch.Tensor, dose: torch.Tensor,
                      contiguous: bool) -> NextState:
        s = self.rows
        point = _point_inputs(
            s.composition[idx, None], s.burden[idx, None], s.predicted[idx, None],
            s.day[idx, None], s.exposure[idx, None], dose[idx, None],
            s.programs[idx, None], s.program_mask[idx, None] & ~s.predicted[idx, None, None],
            float(self.cycle_days), self.cancer[idx])
        if self.cache is not None:
            if contiguous:
                a, b = int(idx[0]), int(idx[-1]) + 1
                return step_point(module, self.cache.rows(a, b), point)
            sub = KVCache([k[idx] for k in self.cache.keys], [v[idx] for v in self.cache.values],
                          self.cache.length[idx].clone())
            pred = step_point(module, sub, point)
            for full, part in zip(self.cache.keys + self.cache.values, sub.keys + sub.values,
                                  strict=True):
                full[idx] = part
            self.cache.length[idx] = sub.length
            return pred
        return self._recompute(module, idx, point)

    def _recompute(self, module, idx: torch.Tensor, point: TokenInputs) -> NextState:
        """Re-encode each row's history plus the new point; read the new point's output."""
        s = self.rows
        n_l = int(s.length[idx].max()) + 1
        h = n_l - 1
        t = self.cycle_days
        days = torch.arange(h, device=self.device, dtype=torch.float32) * t
        # Programs were measured at the baseline biopsy only.
        past_mask = torch.zeros(len(idx), h, s.program_mask.shape[1], dtype=torch.bool,
                                device=self.device)
        if h:
            past_mask[:, 0] = s.program_mask[idx] & ~s.hist_predicted[idx, :1]
        past = _point_inputs(
            s.hist_composition[idx, :h], s.hist_burden[idx, :h], s.hist_predicted[idx, :h],
            days.expand(len(idx), h), s.hist_exposure[idx, :h], s.hist_dose[idx, :h],
            s.programs[idx, None].expand(-1, h, -1, -1), past_mask, float(t), self.cancer[idx])
        # Rows with a shorter history put their new point at their own length: write the
        # new point over the padded history, then read the output there.
        x = _concat(past, point)
        pos = s.length[idx]
        rows = torch.arange(len(idx), device=self.device)
        x = _place(x, point, pos)
        return module(x).index(rows, pos)


def _point_inputs(composition, burden, predicted, day, exposure, dose, programs, program_mask,
                  dt: float, cancer) -> TokenInputs:
    """Token inputs of fully observed points, ``(B, L, ...)``."""
    ones = torch.ones_like(predicted, dtype=torch.bool)
    return TokenInputs(
        fractions=composition,
        resolved=ones.unsqueeze(-1).expand_as(composition),
        block_log_mass=torch.log(composition + LOG_EPS),
        programs=programs,
        program_mask=program_mask,
        comp_observed=ones,
        burden=burden,
        burden_observed=ones,
        predicted=predicted,
        days=day,
        next_dt=torch.full_like(burden, dt),
        next_dose=dose,
        exposure=exposure,
        cancer=cancer,
    )


def _concat(a: TokenInputs, b: TokenInputs) -> TokenInputs:
    return TokenInputs(**{k: v if k == "cancer" else torch.cat([v, getattr(b, k)], dim=1)
                          for k, v in vars(a).items()})


def _place(x: TokenInputs, point: TokenInputs, pos: torch.Tensor) -> TokenInputs:
    """Write ``point`` (``L = 1``) at per-row position ``pos`` of ``x``."""
    rows = torch.arange(len(pos), device=pos.device)
    out = {}
    for k, v in vars(x).items():
        if k == "cancer":
            out[k] = v
            continue
        v = v.clone()
        v[rows, pos] = getattr(point, k)[:, 0]
        out[k] = v
    return TokenInputs(**out)
