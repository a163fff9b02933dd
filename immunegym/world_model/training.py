"""Training one ensemble member: teacher forcing plus a multi-step rollout loss.

Teacher forcing scores every next observation given the true history. The rollout loss
starts at a random point of each patient, feeds the model its own predicted means for the
next ``rollout_steps - 1`` points (true days and doses) and scores the observations there:
what a planner's multi-cycle rollout needs. Context observations are dropped at random
(``input_dropout``) so the model copes with the gaps of real timelines.

The same loop runs locally and on Ray Train workers (:mod:`.distributed`): with a process
group, each worker takes its shard of every batch and gradients are averaged with an
all-reduce before the step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.distributed as dist

from immunegym.world_model.batching import (
    timeline_inputs,
    write_point,
)
from immunegym.world_model.module import (
    NextState,
    TokenInputs,
    WorldModelModule,
    dirichlet_multinomial_nll,
    gaussian_nll,
)
from immunegym.world_model.timelines import Timelines


@dataclass(frozen=True)
class TrainConfig:
    """Optimization settings.

    Attributes
    ----------
    epochs
        Maximum passes over the training patients.
    batch_size
        Patients per step.
    lr, weight_decay
        AdamW settings (cosine decay to 10% of ``lr``).
    patience
        Stop after this many epochs without a better validation loss; keep the best.
    rollout_steps
        Points in the rollout loss (1 = teacher forcing only).
    rollout_weight
        Weight of the rollout loss.
    input_dropout
        Probability of hiding an observed composition or burden in the context.
    burden_weight
        Weight of the burden likelihood relative to the composition's.
    grad_clip
        Gradient-norm clip.
    """

    epochs: int = 120
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 15
    rollout_steps: int = 3
    rollout_weight: float = 0.5
    input_dropout: float = 0.1
    burden_weight: float = 1.0
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        checks = {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
                  "lr": self.lr > 0, "weight_decay": self.weight_decay >= 0,
                  "patience": self.patience >= 1, "rollout_steps": self.rollout_steps >= 1,
                  "rollout_weight": self.rollout_weight >= 0,
                  "input_dropout": 0 <= self.input_dropout < 1,
                  "burden_weight": self.burden_weight >= 0, "grad_clip": self.grad_clip > 0}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"train.{name}: invalid value {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"train: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**data)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class EpochRecord:
    """Losses of one epoch."""

    epoch: int
    train_loss: float
    val_loss: float


def next_point_loss(pred: NextState, tl: Timelines,
                    weight_burden: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL of each point's next observation, and the number of observations.

    ``pred`` has leading dims ``(B, L)`` (prediction made at point ``l`` for ``l + 1``).
    """
    comp_obs = tl.comp_observed[:, 1:]
    burden_obs = tl.burden_observed[:, 1:]
    p = pred.index(slice(None), slice(0, -1))
    comp = dirichlet_multinomial_nll(p, tl.counts[:, 1:], tl.block[:, 1:]) / tl.counts.shape[-1]
    burden = gaussian_nll(p, tl.burden[:, 1:])
    total = (comp * comp_obs).sum() + weight_burden * (burden * burden_obs).sum()
    return total, comp_obs.sum() + burden_obs.sum()


def rollout_loss(module: WorldModelModule, x: TokenInputs, tl: Timelines, first: NextState,
                 steps: int, weight_burden: float,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """NLL of observations 2..``steps`` points after a random origin, fed own predictions."""
    n_b, n_l = tl.valid.shape
    length = tl.valid.sum(1)
    span = (length - steps).clamp_min(0)  # origins with `steps` points after them
    eligible = span > 0
    if not bool(eligible.any()):
        zero = first.logits.sum() * 0
        return zero, torch.zeros((), dtype=torch.long)
    u = torch.rand(n_b, generator=generator)
    origin = (u * span.clamp_min(1)).long().clamp_max(n_l - 1)
    rows = torch.arange(n_b)
    total = first.logits.sum() * 0
    count = torch.zeros((), dtype=torch.long)
    pred = first
    for m in range(1, steps):
        # Point origin + m takes the prediction made at origin + m - 1.
        made = (origin + m - 1).clamp_max(n_l - 1)
        step_pred = pred.index(rows, made)
        x = write_point(x, (origin + m).clamp_max(n_l - 1), step_pred.mean_composition,
                        step_pred.burden_mean, active=eligible)
        pred = module(x)
        target = (origin + m + 1).clamp_max(n_l - 1)
        at = pred.index(rows, origin + m)
        comp = dirichlet_multinomial_nll(at, tl.counts[rows, target], tl.block[rows, target])
        burden = gaussian_nll(at, tl.burden[rows, target])
        c_obs = tl.comp_observed[rows, target] & eligible
        b_obs = tl.burden_observed[rows, target] & eligible
        total = total + (comp / tl.counts.shape[-1] * c_obs).sum() + weight_burden * (
            burden * b_obs).sum()
        count = count + c_obs.sum() + b_obs.sum()
    return total, count


def _drop_inputs(x: TokenInputs, p: float, generator: torch.Generator) -> TokenInputs:
    if p <= 0:
        return x
    keep_c = torch.rand(x.comp_observed.shape, generator=generator) >= p
    keep_b = torch.rand(x.burden_observed.shape, generator=generator) >= p
    out = dict(vars(x))
    out["comp_observed"] = x.comp_observed & keep_c
    out["program_mask"] = x.program_mask & keep_c.unsqueeze(-1)
    out["burden_observed"] = x.burden_observed & keep_b
    return TokenInputs(**out)


def batch_loss(module: WorldModelModule, tl: Timelines, cancer: torch.Tensor,
               cfg: TrainConfig, generator: torch.Generator | None,
               prior: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Mean NLL per observation of a batch (dropout and rollout draws from ``generator``)."""
    x = timeline_inputs(tl, cancer, prior)
    if generator is not None:
        x = _drop_inputs(x, cfg.input_dropout, generator)
    pred = module(x)
    total, count = next_point_loss(pred, tl, cfg.burden_weight)
    if cfg.rollout_steps > 1 and cfg.rollout_weight > 0:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        r_total, r_count = rollout_loss(module, x, tl, pred, cfg.rollout_steps,
                                        cfg.burden_weight, g)
        total = total + cfg.rollout_weight * r_total
        count = count + r_count
    n = int(count)
    return total / max(n, 1), n


@torch.no_grad()
def evaluate_loss(module: WorldModelModule, tl: Timelines, cancer: torch.Tensor,
                  cfg: TrainConfig, prior: torch.Tensor | None = None,
                  batch_size: int = 256) -> float:
    """Mean validation NLL per observation (no dropout; fixed rollout origins)."""
    module.eval()
    total, count = 0.0, 0
    for start in range(0, len(tl), batch_size):
        rows = list(range(start, min(start + batch_size, len(tl))))
        loss, n = batch_loss(module, tl.subset(rows), cancer[rows], cfg, None, prior)
        total += float(loss) * n
        count += n
    return total / max(count, 1)


def train_member(
    module: WorldModelModule,
    train: Timelines,
    val: Timelines,
    cancer_train: torch.Tensor,
    cancer_val: torch.Tensor,
    cfg: TrainConfig,
    seed: int,
    *,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
    prior: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], list[EpochRecord]]:
    """Train ``module`` in place and return its best state dict (by validation loss).

    With ``world_size > 1`` (an initialized process group), every worker draws the same
    batch order, takes its ``rank``-th share of each batch, and gradients are averaged by
    all-reduce; all workers see the same validation loss, so they stop together.

    Dropout layers draw from torch's global RNG, which takes no generator; the loop runs
    inside a forked RNG seeded with ``seed``, so training is reproducible and the caller's
    RNG state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train_member(module, train, val, cancer_train, cancer_val, cfg, seed,
                             on_epoch, rank, world_size, prior)


def _train_member(module, train, val, cancer_train, cancer_val, cfg, seed, on_epoch, rank,
                  world_size, prior):
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = max(cfg.epochs * steps_per_epoch, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / total_steps, 1))))
    best = (math.inf, copy.deepcopy(module.state_dict()))
    history: list[EpochRecord] = []
    stale = 0
    for epoch in range(cfg.epochs):
        module.train()
        order = rng.permutation(len(train))
        running, seen = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start:start + cfg.batch_size][rank::world_size]
            if len(rows) == 0:
                rows = order[start:start + 1]
            loss, n = batch_loss(module, train.subset(rows), cancer_train[rows], cfg, generator,
                                 prior)
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            if world_size > 1:
                for p in module.parameters():
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                    p.grad /= world_size
            torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            running += float(loss.detach()) * n
            seen += n
        val_loss = (evaluate_loss(module, val, cancer_val, cfg, prior) if len(val)
                    else running / max(seen, 1))
        record = EpochRecord(epoch, running / max(seen, 1), val_loss)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if val_loss < best[0] - 1e-4:
            best = (val_loss, copy.deepcopy(module.state_dict()))
            stale = 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    module.load_state_dict(best[1])
    return best[1], history
