"""Training one ensemble member of the latent world model.

Two modes share one loss:

* **privileged** (synthetic cohorts): ImmuneSim's hidden state on a grid (every point, then
  every 21 days for ``horizons`` cycles, :class:`~.synthetic.GridTruth`) supervises the
  filtered and smoothed state and the model's own multi-step rollouts from every point,
  under the doses actually given;
* **observations only** (a user's cohort): the Dirichlet-multinomial likelihood of every
  biopsy and the Gaussian likelihood of every scan, under the filtered state (the point's own
  observation), the state advanced from the previous points (1-3 points back: multi-step),
  and the smoothed state at points whose observation was hidden from the input.

The observation terms stay in the privileged mode (with a smaller weight), so the lab biases,
the biopsy concentration and the scan noise are always fitted, and the same model can be
fine-tuned from observations alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from immunegym.validation import ValidationError, boolean, integer, known_keys, number
from immunegym.world_model.events import grid_doses, index_inputs, interval_dose, mask_points
from immunegym.world_model.latent import (
    EventInputs,
    LatentState,
    LatentWorldModule,
    dirichlet_multinomial_nll,
    gaussian_nll,
)
from immunegym.world_model.timelines import CYCLE_DAYS, Timelines

MAX_SUBSTEPS = 4
"""Most dynamics steps used to bridge one irregular gap (a gap longer than 4 cycles is
bridged by 4 longer steps)."""


MAX_EPOCHS = 100_000
MAX_BATCH = 1_000_000
MAX_HORIZONS = 64
"""Most rollout cycles scored in training (the grid truth holds that many per point)."""


def check_train_fields(values: Mapping[str, object], prefix: str = "") -> None:
    """Check :class:`TrainConfig` settings (raises ValidationError naming the key)."""
    ints = {"epochs": (1, MAX_EPOCHS), "batch_size": (1, MAX_BATCH),
            "patience": (1, MAX_EPOCHS), "horizons": (1, MAX_HORIZONS)}
    for key, (low, high) in ints.items():
        if key in values:
            integer(f"{prefix}{key}", values[key], low=low, high=high)
    if "lr" in values:
        number(f"{prefix}lr", values["lr"], low=0.0, high=10.0, low_open=True)
    if "input_dropout" in values:
        number(f"{prefix}input_dropout", values["input_dropout"], low=0.0, high=1.0,
               high_open=True)
    for key in ("weight_decay", "observation_weight", "interaction_penalty",
                "composition_weight"):
        if key in values:
            number(f"{prefix}{key}", values[key], low=0.0, high=1e6)
    for key in ("privileged", "bootstrap"):
        if key in values:
            boolean(f"{prefix}{key}", values[key])


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer and loss settings of one member.

    Attributes
    ----------
    epochs, batch_size, lr, weight_decay, patience
        Adam-W with early stopping on the validation loss.
    horizons
        Cycles of the model's own rollouts scored against the truth (privileged mode).
    privileged
        Supervise the latent with the hidden truth when the data carry it.
    input_dropout
        Share of biopsies and scans hidden from the inputs (the smoother learns to fill
        them, the filter learns sparse histories).
    observation_weight
        Weight of the observation likelihood in the privileged mode (1 without truth).
    interaction_penalty
        L2 penalty on the drug-pair interaction terms.
    composition_weight
        Weight of the composition KL divergence in the privileged state loss (beside the
        Gaussian likelihood of every type's log abundance).
    bootstrap
        Train on a bootstrap resample of the patients (ensemble diversity).
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 5
    horizons: int = 8
    privileged: bool = True
    input_dropout: float = 0.25
    observation_weight: float = 0.05
    interaction_penalty: float = 1.0
    composition_weight: float = 25.0
    bootstrap: bool = True

    def __post_init__(self) -> None:
        check_train_fields(vars(self))

    @classmethod
    def from_dict(cls, data: object, field: str = "train") -> TrainConfig:
        """Settings from a mapping (a recipe's ``[train]``), every key and value checked.

        Raises
        ------
        ValidationError
            Naming ``<field>.<key>``: an unknown key (with the nearest known one), or a
            value of the wrong type (``epochs = 2.5``, ``lr = "fast"``) or out of range.
        """
        values = known_keys(field, data, [f.name for f in fields(cls)])
        check_train_fields(values, f"{field}.")
        defaults = cls()
        for key, value in values.items():
            if isinstance(getattr(defaults, key), float):
                values[key] = float(value)  # type: ignore[arg-type]  # TOML ``lr = 1``
        return cls(**values)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class EpochRecord:
    """Losses of one epoch (``val_state``: the privileged forecast part; NaN without truth)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_state: float
    seconds: float


@dataclass
class TrainingTensors:
    """Everything a batch needs, precomputed once for a data set (``P`` patients)."""

    inputs: EventInputs
    counts: torch.Tensor  # (P, L, K)
    block: torch.Tensor  # (P, L, K)
    comp_observed: torch.Tensor  # (P, L)
    burden: torch.Tensor  # (P, L)
    burden_observed: torch.Tensor  # (P, L)
    gap_dose: torch.Tensor  # (P, L, L, R) intensity over (day_i, day_j]
    gap: torch.Tensor  # (P, L, L) cycles from i to j
    grid_dose: torch.Tensor  # (P, L, H, R)
    truth_z: torch.Tensor | None  # (P, L, H + 1, K) standardized
    truth_comp: torch.Tensor | None  # (P, L, H + 1, K)
    truth_sod: torch.Tensor | None  # (P, L, H + 1)
    alive: torch.Tensor | None  # (P, L, H + 1)

    def __len__(self) -> int:
        return self.counts.shape[0]


def training_tensors(module: LatentWorldModule, tl: Timelines, inputs: EventInputs,
                     truth=None, horizons: int = 8) -> TrainingTensors:
    """Precompute a data set's tensors (``truth``: a :class:`~.synthetic.GridTruth`)."""
    days = tl.days
    n_p, n_l = days.shape
    start = days.unsqueeze(2).expand(n_p, n_l, n_l)
    end = days.unsqueeze(1).expand(n_p, n_l, n_l)
    gap_dose = interval_dose(tl.cycle_doses, start.reshape(n_p, -1), end.reshape(n_p, -1))
    gap_dose = gap_dose.reshape(n_p, n_l, n_l, -1)
    gap = (end - start) / CYCLE_DAYS
    grid = grid_doses(tl.cycle_doses, days, horizons)
    truth_z = truth_comp = truth_sod = alive = None
    if truth is not None:
        log_cells = torch.as_tensor(truth.log_cells[:, :, :horizons + 1], dtype=torch.float32)
        if log_cells.shape[:2] != (n_p, n_l):
            raise ValidationError(f"truth: shape {tuple(log_cells.shape[:2])} does not match the "
                             f"timelines ({n_p}, {n_l})")
        truth_z = module.standardize(log_cells)
        cells = torch.expm1(log_cells)
        truth_comp = cells / cells.sum(-1, keepdim=True).clamp_min(1.0)
        truth_sod = torch.as_tensor(truth.log_sod[:, :, :horizons + 1], dtype=torch.float32)
        alive = torch.as_tensor(truth.alive[:, :, :horizons + 1]) & tl.valid.unsqueeze(-1)
    return TrainingTensors(inputs, tl.counts, tl.block, tl.comp_observed & tl.valid,
                           tl.burden, tl.burden_observed & tl.valid, gap_dose, gap, grid,
                           truth_z, truth_comp, truth_sod, alive)


def _rows(data: TrainingTensors, rows: torch.Tensor) -> TrainingTensors:
    pick = {}
    for f in fields(TrainingTensors):
        value = getattr(data, f.name)
        if f.name == "inputs":
            pick[f.name] = index_inputs(value, rows)
        else:
            pick[f.name] = None if value is None else value[rows]
    return TrainingTensors(**pick)


def advance(module: LatentWorldModule, z: torch.Tensor, c: torch.Tensor, tau: torch.Tensor,
            dose: torch.Tensor, cancer: torch.Tensor | None = None,
            max_substeps: int = MAX_SUBSTEPS
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean path over ``tau`` cycles (``(N,)``, irregular) in steps of at most one cycle
    (at most ``max_substeps`` of them); also returns the accumulated process variance."""
    n_sub = torch.ceil(tau.clamp_min(0)).clamp(1, max_substeps)
    sub = tau.clamp_min(0) / n_sub
    var = torch.zeros_like(z)
    for i in range(int(n_sub.max()) if len(n_sub) else 0):
        t = torch.where(n_sub > i, sub, torch.zeros_like(sub))
        z, c, log_sigma = module.step(z, c, t, dose, cancer)
        var = var + torch.exp(2 * log_sigma) * t.unsqueeze(-1)
    return z, c, var


def _observation_nll(module: LatentWorldModule, z: torch.Tensor, lab: torch.Tensor,
                     data: TrainingTensors, comp_mask: torch.Tensor, burden_mask: torch.Tensor,
                     at: tuple) -> torch.Tensor:
    """Mean per-cell biopsy NLL plus scan NLL at the masked points ``at`` of ``data``.

    Only the selected points are scored (indexing, not multiplying by the mask): a padded
    point has no cells, and its likelihood must not reach the sum even as ``0 * inf``.
    """
    comp_mask, burden_mask = comp_mask.bool(), burden_mask.bool()
    total = z.new_zeros(())
    if bool(comp_mask.any()):
        pred = module.observe(z[comp_mask], lab[comp_mask])
        counts, block = data.counts[at][comp_mask], data.block[at][comp_mask]
        dm = dirichlet_multinomial_nll(pred, counts, block) / counts.sum(-1).clamp_min(1.0)
        total = total + dm.mean()
    if bool(burden_mask.any()):
        pred = module.observe(z[burden_mask], lab[burden_mask])
        scan = gaussian_nll(pred.burden_mean, pred.burden_log_sigma,
                            data.burden[at][burden_mask])
        total = total + scan.mean()
    return total


def _state_loss(module: LatentWorldModule, state: LatentState, z_true: torch.Tensor,
                comp_true: torch.Tensor, sod_true: torch.Tensor, log_var: torch.Tensor,
                mask: torch.Tensor, composition_weight: float = 25.0) -> torch.Tensor:
    """Privileged loss of a state distribution against the truth, mean over ``mask``."""
    nll = gaussian_nll(state.z, 0.5 * log_var, z_true).mean(-1)
    logits = module.composition_logits(state.z)
    ce = -(comp_true * torch.log_softmax(logits, -1)).sum(-1)
    ce = ce + (comp_true * torch.log(comp_true.clamp_min(1e-8))).sum(-1)  # KL, not CE
    burden = (module.burden(state.z) - sod_true).square() / 0.1
    per = nll + composition_weight * ce + burden
    return (per * mask).sum() / mask.sum().clamp_min(1)


def batch_loss(module: LatentWorldModule, data: TrainingTensors, cfg: TrainConfig,
               generator: torch.Generator | None, privileged: bool
               ) -> tuple[torch.Tensor, float]:
    """The training loss of a batch and its privileged forecast part (NaN without truth)."""
    x = data.inputs
    k = module.config.n_types
    valid = x.valid
    keep_c = torch.ones_like(valid)
    keep_b = torch.ones_like(valid)
    if generator is not None and cfg.input_dropout > 0:
        u = torch.rand(valid.shape, generator=generator)
        v = torch.rand(valid.shape, generator=generator)
        keep_c = u >= cfg.input_dropout
        keep_b = v >= cfg.input_dropout
        keep_c[:, 0] = True  # every history keeps its first biopsy
        x = mask_points(x, keep_c, keep_b, k)
    filt = module.filter(x)
    smooth = module.smooth(x)
    lab = x.lab_index
    n_p, n_l = valid.shape
    lab_pl = lab.unsqueeze(1).expand(n_p, n_l)
    comp_obs, burden_obs = data.comp_observed, data.burden_observed

    # Observations: the point's own (filter, when shown), hidden ones (smoother), and the
    # state carried 1-3 points ahead (multi-step).
    all_at = (slice(None), slice(None))
    obs_loss = _observation_nll(module, filt.z, lab_pl, data, (comp_obs & keep_c).float(),
                                (burden_obs & keep_b).float(), all_at)
    obs_loss = obs_loss + _observation_nll(module, smooth.z, lab_pl, data,
                                           (comp_obs & ~keep_c).float(),
                                           (burden_obs & ~keep_b).float(), all_at)
    cancer = x.cancer.unsqueeze(1).expand(n_p, n_l, -1)
    has_truth = privileged and data.truth_z is not None
    # Multi-step observation terms matter most without truth; one lag keeps the privileged
    # mode cheap.
    for lag in ((1,) if has_truth else (1, 2, 3)):
        if n_l <= lag:
            break
        src = (slice(None), slice(0, n_l - lag))
        dst = (slice(None), slice(lag, n_l))
        i = torch.arange(n_l - lag)
        tau = data.gap[:, i, i + lag]
        dose = data.gap_dose[:, i, i + lag]
        z, _, _ = advance(module, filt.z[src].flatten(0, 1), filt.c[src].flatten(0, 1),
                          tau.reshape(-1), dose.flatten(0, 1),
            cancer[src].flatten(0, 1))
        z = z.reshape(n_p, n_l - lag, k)
        # Gaps longer than MAX_SUBSTEPS cycles would need steps longer than a cycle.
        ok = valid[dst] & valid[src] & (tau <= MAX_SUBSTEPS)
        obs_loss = obs_loss + _observation_nll(
            module, z, lab_pl[src], data, (comp_obs[dst] & ok).float(),
            (burden_obs[dst] & ok).float(), dst) / lag

    if not has_truth:
        return obs_loss, float("nan")

    # Privileged: filtered and smoothed state at every point, then the model's own rollout
    # from every point for `horizons` cycles under the doses actually given.
    alive = data.alive & valid.unsqueeze(-1)
    w = cfg.composition_weight
    loss = _state_loss(module, filt, data.truth_z[:, :, 0], data.truth_comp[:, :, 0],
                       data.truth_sod[:, :, 0], 2 * filt.log_sigma, alive[:, :, 0].float(), w)
    loss = loss + _state_loss(module, smooth, data.truth_z[:, :, 0], data.truth_comp[:, :, 0],
                              data.truth_sod[:, :, 0], 2 * smooth.log_sigma,
                              alive[:, :, 0].float(), w)
    z = filt.z.reshape(-1, k)
    c = filt.c.reshape(-1, filt.c.shape[-1])
    var = torch.exp(2 * filt.log_sigma).reshape(-1, k)
    flat_cancer = cancer.flatten(0, 1)
    forecast = torch.zeros(())
    penalty = torch.zeros(())
    n_h = data.grid_dose.shape[2]
    one = torch.ones(z.shape[0])
    for h in range(n_h):
        dose = data.grid_dose[:, :, h].reshape(-1, data.grid_dose.shape[-1])
        if cfg.interaction_penalty > 0 and h == 0:
            penalty = module.interaction(z, c, flat_cancer).square().mean()
        z, c, log_sigma = module.step(z, c, one, dose, flat_cancer)
        var = var + torch.exp(2 * log_sigma)
        state = LatentState(z, torch.zeros_like(z), c)
        forecast = forecast + _state_loss(
            module, state, data.truth_z[:, :, h + 1].reshape(-1, k),
            data.truth_comp[:, :, h + 1].reshape(-1, k),
            data.truth_sod[:, :, h + 1].reshape(-1), torch.log(var),
            alive[:, :, h + 1].reshape(-1).float(), w)
    forecast = forecast / n_h
    total = loss + forecast + cfg.observation_weight * obs_loss
    total = total + cfg.interaction_penalty * penalty
    return total, float(forecast.detach())


@torch.no_grad()
def evaluate_loss(module: LatentWorldModule, data: TrainingTensors, cfg: TrainConfig,
                  privileged: bool, batch_size: int = 256) -> tuple[float, float]:
    """Mean loss and privileged forecast part over a data set (no dropout)."""
    module.eval()
    total, state, n = 0.0, 0.0, 0
    for start in range(0, len(data), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(data)))
        loss, part = batch_loss(module, _rows(data, rows), cfg, None, privileged)
        total += float(loss) * len(rows)
        state += part * len(rows)
        n += len(rows)
    return total / max(n, 1), state / max(n, 1)


def train_member(module: LatentWorldModule, train: TrainingTensors, val: TrainingTensors,
                 cfg: TrainConfig, seed: int,
                 on_epoch: Callable[[EpochRecord], None] | None = None
                 ) -> list[EpochRecord]:
    """Fit one member in place; keeps the weights of the best validation epoch."""
    generator = torch.Generator().manual_seed(seed)
    privileged = cfg.privileged and train.truth_z is not None
    n = len(train)
    pool = (torch.randint(0, n, (n,), generator=generator) if cfg.bootstrap
            else torch.arange(n))
    optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps,
                                                          eta_min=cfg.lr * 0.05)
    best, best_state, bad = math.inf, None, 0
    history: list[EpochRecord] = []
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        module.train()
        order = pool[torch.randperm(n, generator=generator)]
        running, count = 0.0, 0
        for i in range(0, n, cfg.batch_size):
            rows = order[i:i + cfg.batch_size]
            loss, _ = batch_loss(module, _rows(train, rows), cfg, generator, privileged)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 5.0)
            optimizer.step()
            schedule.step()
            running += float(loss.detach()) * len(rows)
            count += len(rows)
        val_loss, val_state = evaluate_loss(module, val, cfg, privileged)
        record = EpochRecord(epoch, running / max(count, 1), val_loss,
                             val_state if privileged else float("nan"),
                             time.perf_counter() - start)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if val_loss < best - 1e-4:
            best, bad = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history


def standardization(truth_log_cells: np.ndarray | None, tl: Timelines,
                    mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-type center and scale of log1p cells: from the truth when there is one, else
    from the biopsies' log fractions (a relative scale: the observation-only model then
    lives in log-composition space)."""
    if truth_log_cells is not None:
        values = np.asarray(truth_log_cells)[mask] if mask is not None else truth_log_cells
        values = values.reshape(-1, values.shape[-1])
    else:
        comp = tl.fractions[tl.comp_observed].numpy()
        values = np.log1p(comp * 1e6)
    center = values.mean(0)
    scale = values.std(0).clip(0.25, None)
    return torch.tensor(center, dtype=torch.float32), torch.tensor(scale, dtype=torch.float32)
