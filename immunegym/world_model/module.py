"""The torch module: an axial (type x time) Transformer over observed timelines.

Tokens. Every time point of a patient's timeline is ``K + 1`` tokens: one per fine cell
type (fraction, log-fraction, resolved flag, the log mass of its block, program scores and
their mask) and one clinical token (log tumor burden and its mask, the interval to the next
time point, the therapy given over that interval, cumulative exposure so far, the day).
Each type token adds a learned type embedding; all tokens of a point add a sinusoidal
embedding of the day, so irregular intervals are inputs, not assumptions.

Attention is factorized: within a time point across the ``K + 1`` tokens, then along the
patient's history for each token column, causally. Joint attention over all ``L (K + 1)``
tokens costs ``O(L^2 K^2)``; factorized costs ``O(L K^2 + L^2 K)`` and, because the type step
only looks inside one time point and the time step only looks back, a rollout can cache
the past and pay for the new point alone.

Outputs at time point ``l`` predict the next time point: a Dirichlet over the composition
(mean from per-type logits, concentration from the clinical token) and a Gaussian over
``log1p`` sum of diameters. A Dirichlet keeps every composition on the simplex; the
burden lives in ``log1p`` space: ``expm1`` of a prediction, clipped at 0, is a diameter in mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

LOG_EPS = 1e-3
"""Floor inside log-fraction features: rare types at 0 stay finite."""

SKIP_EPS = 1e-6
"""Floor of the persistence skip. It must be tiny: with a floor ``e`` an untrained step maps
``f -> (f + e) / (1 + K e)``, and a rollout feeding its output back leaks ``K e`` of the mass
into rare types at every step (1e-3 inflated a 1% type by 80% over 6 cycles)."""

MIN_LOG_CONCENTRATION, MAX_LOG_CONCENTRATION = math.log(2.0), math.log(5e4)
MIN_LOG_SIGMA, MAX_LOG_SIGMA = math.log(0.01), math.log(3.0)


@dataclass(frozen=True)
class ModuleConfig:
    """Sizes of the network.

    Attributes
    ----------
    n_types
        Fine cell types ``K``.
    n_programs
        Program scores per type token ``G``.
    n_therapies
        Therapies ``R``.
    n_cancer_types
        One-hot cancer-type inputs on the clinical token; 0 keeps the cancer type out.
    d_model, n_heads, n_layers, d_ff, dropout
        Transformer sizes.
    """

    n_types: int = 20
    n_programs: int = 8
    n_therapies: int = 5
    n_cancer_types: int = 0
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 3
    d_ff: int = 128
    dropout: float = 0.1

    @property
    def type_features(self) -> int:
        return 7 + self.n_programs

    @property
    def clinical_features(self) -> int:
        return 7 + 2 * self.n_therapies + self.n_cancer_types


@dataclass
class TokenInputs:
    """Per-time-point inputs of a batch, ``B`` patients, ``L`` points (all tensors).

    ``fractions (B, L, K)``, ``resolved (B, L, K)`` bool, ``block_log_mass (B, L, K)``,
    ``programs (B, L, K, G)``, ``program_mask (B, L, K)`` bool, ``comp_observed (B, L)``
    bool, ``burden (B, L)``, ``burden_observed (B, L)`` bool, ``predicted (B, L)`` bool
    (the point is the model's own prediction), ``days (B, L)``, ``next_dt (B, L)`` days to
    the next point, ``next_dose (B, L, R)`` dose intensity over that interval,
    ``exposure (B, L, R)`` cumulative intensity up to the point, ``cancer (B, C)`` one-hot
    (``C`` may be 0).
    """

    fractions: torch.Tensor
    resolved: torch.Tensor
    block_log_mass: torch.Tensor
    programs: torch.Tensor
    program_mask: torch.Tensor
    comp_observed: torch.Tensor
    burden: torch.Tensor
    burden_observed: torch.Tensor
    predicted: torch.Tensor
    days: torch.Tensor
    next_dt: torch.Tensor
    next_dose: torch.Tensor
    exposure: torch.Tensor
    cancer: torch.Tensor


@dataclass
class NextState:
    """Predictive distribution of the next time point.

    Attributes
    ----------
    logits
        ``(..., K)`` composition logits; the mean composition is their softmax.
    log_concentration
        ``(...)`` Dirichlet concentration (log).
    burden_mean, burden_log_sigma
        ``(...)`` Gaussian over ``log1p`` sum of diameters (mm).
    """

    logits: torch.Tensor
    log_concentration: torch.Tensor
    burden_mean: torch.Tensor
    burden_log_sigma: torch.Tensor

    @property
    def mean_composition(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=-1)

    @property
    def alpha(self) -> torch.Tensor:
        return self.mean_composition * self.log_concentration.exp().unsqueeze(-1)

    def index(self, *idx) -> NextState:
        return NextState(self.logits[idx], self.log_concentration[idx],
                         self.burden_mean[idx], self.burden_log_sigma[idx])


def type_token_features(x: TokenInputs) -> torch.Tensor:
    """``(B, L, K, F_type)`` type-token features."""
    observed = x.comp_observed.unsqueeze(-1).expand_as(x.fractions).float()
    fractions = x.fractions * observed
    return torch.cat([
        fractions.unsqueeze(-1),
        (torch.log(fractions + LOG_EPS) * observed).unsqueeze(-1),
        (x.resolved.float() * observed).unsqueeze(-1),
        (x.block_log_mass * observed).unsqueeze(-1),
        x.programs * x.program_mask.unsqueeze(-1),
        x.program_mask.float().unsqueeze(-1),
        observed.unsqueeze(-1),
        x.predicted.unsqueeze(-1).expand_as(x.fractions).float().unsqueeze(-1),
    ], dim=-1)


def clinical_token_features(x: TokenInputs) -> torch.Tensor:
    """``(B, L, F_clin)`` clinical-token features."""
    b_obs = x.burden_observed.float()
    cancer = x.cancer.unsqueeze(1).expand(-1, x.days.shape[1], -1)
    return torch.cat([
        ((x.burden - 3.5) * b_obs).unsqueeze(-1),
        b_obs.unsqueeze(-1),
        (x.next_dt / 21.0).unsqueeze(-1),
        torch.log1p(x.next_dt / 21.0).unsqueeze(-1),
        (x.days / 365.0).unsqueeze(-1),
        x.comp_observed.float().unsqueeze(-1),
        x.predicted.float().unsqueeze(-1),
        x.next_dose,
        torch.log1p(x.exposure),
        cancer,
    ], dim=-1)


def _time_embedding(days: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of days, periods from 1 week to ~5 years."""
    half = dim // 2
    periods = torch.logspace(math.log10(7.0), math.log10(2000.0), half, device=days.device)
    angle = days.unsqueeze(-1) * (2 * math.pi / periods)
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


class AxialBlock(nn.Module):
    """Attention across types within a time point, then causally along time, then a FFN."""

    def __init__(self, d: int, heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm_type = nn.LayerNorm(d)
        self.attn_type = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm_time = nn.LayerNorm(d)
        self.attn_time = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(d_ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        b, n_l, n_t, d = x.shape
        h = self.norm_type(x).reshape(b * n_l, n_t, d)
        x = x + self.drop(self.attn_type(h, h, h, need_weights=False)[0]).reshape(x.shape)
        h = self.norm_time(x).transpose(1, 2).reshape(b * n_t, n_l, d)
        out = self.attn_time(h, h, h, attn_mask=causal, need_weights=False)[0]
        x = x + self.drop(out.reshape(b, n_t, n_l, d).transpose(1, 2))
        return x + self.drop(self.ff(self.norm_ff(x)))


class WorldModelModule(nn.Module):
    """Maps a batch of timelines to next-point predictive distributions at every point."""

    def __init__(self, config: ModuleConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        # Layer constructors draw default weights from torch's global RNG; fork it so that
        # building a model leaves the caller's RNG untouched, then draw ours from `generator`.
        with torch.random.fork_rng(devices=[]):
            d = config.d_model
            self.type_in = nn.Linear(config.type_features, d)
            self.clin_in = nn.Linear(config.clinical_features, d)
            self.type_embedding = nn.Parameter(torch.randn(config.n_types + 1, d) * 0.02)
            self.time_in = nn.Linear(d, d)
            self.blocks = nn.ModuleList(
                AxialBlock(d, config.n_heads, config.d_ff, config.dropout)
                for _ in range(config.n_layers))
            self.norm = nn.LayerNorm(d)
            self.type_head = nn.Linear(d, 1)
            self.clin_head = nn.Linear(d, 3)
        self.reset_parameters(generator or torch.Generator().manual_seed(0))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Initialize every weight from ``generator`` (torch's global RNG is never used)."""
        for name, p in self.named_parameters():
            if name == "type_embedding":
                nn.init.normal_(p, std=0.02, generator=generator)
            elif p.dim() >= 2:
                nn.init.xavier_uniform_(p, generator=generator)
            elif "norm" in name and name.endswith("weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)
        for head in (self.type_head, self.clin_head):  # start near persistence
            nn.init.normal_(head.weight, std=1e-3, generator=generator)

    def forward(self, x: TokenInputs) -> NextState:
        """Predict the next point from every point ``l`` (using points ``<= l``).

        Returns a :class:`NextState` with leading dimensions ``(B, L)``.
        """
        b, n_l, n_k = x.fractions.shape
        types = self.type_in(type_token_features(x))
        clin = self.clin_in(clinical_token_features(x)).unsqueeze(2)
        h = torch.cat([types, clin], dim=2) + self.type_embedding
        h = h + self.time_in(_time_embedding(x.days, self.config.d_model)).unsqueeze(2)
        causal = torch.triu(torch.ones(n_l, n_l, dtype=torch.bool, device=h.device), 1)
        for block in self.blocks:
            h = block(h, causal)
        h = self.norm(h)
        # Residual on the last composition: without information the forecast is persistence.
        observed = x.comp_observed.unsqueeze(-1).float()
        logits = self.type_head(h[:, :, :n_k]).squeeze(-1) + observed * torch.log(
            x.fractions + SKIP_EPS)
        clin_out = self.clin_head(h[:, :, n_k])
        b_obs = x.burden_observed.float()
        burden_mean = clin_out[..., 1] + b_obs * x.burden + (1 - b_obs) * 3.5
        return NextState(
            logits=logits,
            log_concentration=clin_out[..., 0].add(4.0).clamp(MIN_LOG_CONCENTRATION,
                                                              MAX_LOG_CONCENTRATION),
            burden_mean=burden_mean,
            burden_log_sigma=clin_out[..., 2].sub(1.5).clamp(MIN_LOG_SIGMA, MAX_LOG_SIGMA),
        )


def dirichlet_multinomial_nll(pred: NextState, counts: torch.Tensor,
                              block: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of block counts under the predicted Dirichlet-multinomial.

    Parameters
    ----------
    pred
        Predictions with leading dims ``(...)``.
    counts
        ``(..., K)`` cells per block at the block's first leaf.
    block
        ``(..., K)`` first-leaf index of each leaf's block.

    Returns
    -------
    torch.Tensor
        ``(...)`` NLL without the multinomial coefficient (constant in the parameters).
    """
    alpha = pred.alpha
    alpha_block = torch.zeros_like(alpha).scatter_add_(-1, block, alpha)
    present = block == torch.arange(block.shape[-1], device=block.device)
    a_sum = alpha.sum(-1)
    n = counts.sum(-1)
    terms = torch.where(present, torch.lgamma(counts + alpha_block)
                        - torch.lgamma(alpha_block.clamp_min(1e-8)), torch.zeros_like(alpha))
    return -(torch.lgamma(a_sum) - torch.lgamma(n + a_sum) + terms.sum(-1))


def gaussian_nll(pred: NextState, burden: torch.Tensor) -> torch.Tensor:
    """``(...)`` Gaussian NLL of ``log1p`` burden (constant dropped)."""
    z = (burden - pred.burden_mean) * torch.exp(-pred.burden_log_sigma)
    return 0.5 * z.square() + pred.burden_log_sigma


def sample_next(pred: NextState, generator: torch.Generator,
                noise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw (or take the mean of) the next composition and ``log1p`` burden.

    Dirichlet draws use the gamma construction with torch's own generator, so a seeded
    generator gives the same draw on the same device.
    """
    if not noise:
        return pred.mean_composition, pred.burden_mean
    alpha = pred.alpha.clamp_min(1e-4)
    gamma = _gamma(alpha, generator)
    comp = gamma / gamma.sum(-1, keepdim=True).clamp_min(1e-30)
    comp = torch.where(torch.isfinite(comp), comp, pred.mean_composition)
    eps = torch.randn(pred.burden_mean.shape, generator=generator, device=alpha.device,
                      dtype=alpha.dtype)
    return comp, pred.burden_mean + pred.burden_log_sigma.exp() * eps


def _gamma(alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gamma(alpha, 1) draws from a seeded generator (Marsaglia-Tsang, boosted for a < 1)."""
    boost = alpha < 1
    a = torch.where(boost, alpha + 1, alpha)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.zeros_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    for _ in range(32):  # acceptance > 95% per round: 32 rounds leave ~1e-40 undecided
        z = torch.randn(a.shape, generator=generator, device=a.device, dtype=a.dtype)
        u = torch.rand(a.shape, generator=generator, device=a.device, dtype=a.dtype)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (torch.log(u.clamp_min(1e-30)) < 0.5 * z * z + d - d * v
                        + d * torch.log(v.clamp_min(1e-30)))
        take = todo & ok
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
        if not bool(todo.any()):
            break
    out = torch.where(todo, d, out)  # the mean, for the vanishing remainder
    u = torch.rand(a.shape, generator=generator, device=a.device, dtype=a.dtype)
    return torch.where(boost, out * u.clamp_min(1e-30) ** (1.0 / alpha), out)
