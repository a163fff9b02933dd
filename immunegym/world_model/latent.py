"""The torch module: a latent state-space model of the tumor immune microenvironment.

State. ``z``: standardized log absolute abundance of every fine cell type (log1p cells,
centered and scaled per type by training-data statistics), so tumor burden and composition
share one state; ``c``: a small context vector (what the composition does not say: how
responsive this tumor is, how much pressure has built up), carried along a rollout.

Dynamics (one call advances ``tau = dt / 21`` cycles under dose intensities ``u``)::

    z' = z + tau * (f_0(z, c) + sum_r u_r f_r(z, c) + sum_{r<s} u_r u_s f_rs(z, c))
         + sigma(z, c) sqrt(tau) eps

Each therapy's effect is its own dose-scaled term (additive, as in CPA), and a pair's joint
effect is an explicit interaction term whose size the training loss penalizes: a
combination is the sum of its parts unless the data pay for more.

Observation model. A biopsy is a Dirichlet-multinomial draw around ``softmax(x + b_lab)``
(``x`` the log abundance, ``b_lab`` the lab's learned labeling bias, zero for an unknown
lab), evaluated on the lab's blocks (a coarse label is the sum of its leaves: no prior split
is needed). A scan is Gaussian around ``g(x)``, the ``log1p`` sum of diameters.

Inference. A GRU reads the observed time points in order (observation, interval since the
last point, dose given over it, exposure so far, lab); its state at each point, joined to
that point's own observation (a skip past the GRU, like a Kalman update), gives the
*filtered* state (mean and spread of ``z``, and ``c``) from the past alone; a second GRU runs
backwards and, joined to the first, gives the *smoothed* state from the whole record
(reconstruction of a missing biopsy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from immunegym.validation import boolean, integer, known_keys

LOG_EPS = 1e-3
"""Floor inside log-fraction input features: rare types at 0 stay finite."""

MAX_DRIFT = 3.0
"""Bound of each drift term, in standardized log-abundance units per cycle."""

Z_LIMIT = 25.0
"""Bound of the standardized state along a rollout (keeps a runaway path finite)."""

MIN_LOG_CELLS = 1e-4
"""Floor of a type's log1p cell count in the composition logits (no log of zero cells)."""

MIN_LOG_SIGMA, MAX_LOG_SIGMA = math.log(1e-3), math.log(5.0)
MIN_LOG_CONCENTRATION, MAX_LOG_CONCENTRATION = math.log(2.0), math.log(1e5)


MAX_WIDTH = 8192
"""Largest network width (``d_hidden``, ``d_context``, ``d_dynamics``) a config may ask for."""

MAX_COLUMNS = 1024
"""Largest number of cell types, therapies, labs or cancer types a config may declare."""


def check_latent_fields(values: Mapping[str, object], prefix: str = "") -> None:
    """Check the sizes of a :class:`LatentConfig` (raises ValidationError naming the key)."""
    bounds = {"n_types": (1, MAX_COLUMNS), "n_therapies": (1, MAX_COLUMNS),
              "n_labs": (0, MAX_COLUMNS), "n_cancer_types": (0, MAX_COLUMNS),
              "d_hidden": (1, MAX_WIDTH), "d_context": (1, MAX_WIDTH),
              "d_dynamics": (1, MAX_WIDTH)}
    for key, (low, high) in bounds.items():
        if key in values:
            integer(f"{prefix}{key}", values[key], low=low, high=high)
    if "anchor_lab_bias" in values:
        boolean(f"{prefix}anchor_lab_bias", values["anchor_lab_bias"])


@dataclass(frozen=True)
class LatentConfig:
    """Sizes of the network.

    Attributes
    ----------
    n_types, n_therapies
        Fine cell types ``K`` and therapies ``R``.
    n_labs
        Labs with a learned labeling bias (one-hot inputs); others read as "unknown".
    n_cancer_types
        One-hot cancer-type inputs; 0 keeps the cancer type out of the model.
    d_hidden
        Width of the filter and smoother GRUs.
    d_context
        Size of the context ``c``.
    d_dynamics
        Width of the dynamics network.
    anchor_lab_bias
        Read the labs' labeling biases as deviations from their mean over the known labs.
        Without privileged truth, the state's composition and the labs' biases are only
        identified up to a shared per-type offset; anchoring makes the state the average
        lab's view. The privileged default leaves the biases free (the truth anchors them).
    """

    n_types: int = 20
    n_therapies: int = 5
    n_labs: int = 6
    n_cancer_types: int = 0
    d_hidden: int = 96
    d_context: int = 16
    d_dynamics: int = 128
    anchor_lab_bias: bool = False

    def __post_init__(self) -> None:
        check_latent_fields(vars(self))

    @classmethod
    def from_dict(cls, data: object, field: str = "module") -> LatentConfig:
        """A config from a mapping (a checkpoint's ``module``), every key and value checked.

        Raises
        ------
        ValidationError
            Naming ``<field>.<key>`` for an unknown key (with the nearest known one) or a
            value of the wrong type or out of range.
        """
        from dataclasses import fields

        values = known_keys(field, data, [f.name for f in fields(cls)])
        check_latent_fields(values, f"{field}.")
        return cls(**values)

    @property
    def n_pairs(self) -> int:
        return self.n_therapies * (self.n_therapies - 1) // 2

    @property
    def obs_features(self) -> int:
        # clr (K), resolved (K), comp_observed, log cells, burden, burden_observed
        return 2 * self.n_types + 4

    @property
    def time_features(self) -> int:
        # gap in cycles, dose amount over the gap (R), log1p exposure (R), day / 365
        return 2 + 2 * self.n_therapies

    @property
    def input_features(self) -> int:
        return self.obs_features + self.time_features + self.n_labs + self.n_cancer_types


@dataclass
class EventInputs:
    """Per-time-point inputs of ``B`` patients, ``L`` points.

    ``obs (B, L, F_obs)``, ``time (B, L, F_time)``, ``lab (B, n_labs)``, ``lab_index (B,)``
    (``n_labs`` for an unknown lab), ``cancer (B, C)``, ``valid (B, L)`` bool.
    """

    obs: torch.Tensor
    time: torch.Tensor
    lab: torch.Tensor
    lab_index: torch.Tensor
    cancer: torch.Tensor
    valid: torch.Tensor


@dataclass
class LatentState:
    """A distribution over the latent state: ``z`` mean ``(..., K)``, its log spread
    ``log_sigma (..., K)`` and the context ``c (..., d_context)``."""

    z: torch.Tensor
    log_sigma: torch.Tensor
    c: torch.Tensor

    def index(self, *idx) -> LatentState:
        return LatentState(self.z[idx], self.log_sigma[idx], self.c[idx])


@dataclass
class NextState:
    """Predictive distribution of an observation.

    Attributes
    ----------
    logits
        ``(..., K)`` log abundance (up to a constant): the state's composition is their
        softmax.
    log_concentration
        ``(...)`` Dirichlet concentration of a biopsy around it (log).
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


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_hidden),
                         nn.GELU(), nn.Linear(d_hidden, d_out))


class LatentWorldModule(nn.Module):
    """One ensemble member: filter, smoother, dynamics and observation model."""

    def __init__(self, config: LatentConfig, generator: torch.Generator | None = None
                 ) -> None:
        super().__init__()
        self.config = c = config
        k, r, h = c.n_types, c.n_therapies, c.d_hidden
        # torch's layer constructors draw from the global RNG: fork it, so building a model
        # leaves the caller's RNG untouched, then draw every weight from `generator`.
        with torch.random.fork_rng(devices=[]):
            self.embed = nn.Sequential(nn.Linear(c.input_features, h), nn.GELU())
            self.forward_rnn = nn.GRU(h, h, batch_first=True)
            self.backward_rnn = nn.GRU(h, h, batch_first=True)
            # The heads also read the point's own observation directly (a skip past the
            # GRU): today's biopsy and scan are the sharpest evidence of today's state.
            self.filter_head = _mlp(h + c.obs_features, h, 2 * k + c.d_context)
            self.smooth_head = _mlp(2 * h + c.obs_features, h, 2 * k + c.d_context)
            self.n_terms = 1 + r + c.n_pairs
            self.dynamics = _mlp(k + 1 + c.d_context + c.n_cancer_types, c.d_dynamics,
                                 k * self.n_terms + k + c.d_context * (1 + r))
            self.burden_head = _mlp(k, 32, 1)
        self.lab_bias = nn.Parameter(torch.zeros(c.n_labs + 1, k))
        self.log_concentration = nn.Parameter(torch.full((c.n_labs + 1,), math.log(200.0)))
        self.log_scan_sigma = nn.Parameter(torch.tensor(math.log(0.1)))
        pairs = torch.combinations(torch.arange(r), 2) if r > 1 else torch.zeros(0, 2)
        self.register_buffer("pairs", pairs.long(), persistent=False)
        # Standardization of log1p cells (set from training data before fitting).
        self.register_buffer("center", torch.zeros(k))
        self.register_buffer("scale", torch.ones(k))
        self.reset_parameters(generator or torch.Generator().manual_seed(0))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Initialize every layer from ``generator`` (torch's global RNG is never used)."""
        layers = (self.embed, self.forward_rnn, self.backward_rnn, self.filter_head,
                  self.smooth_head, self.dynamics, self.burden_head)
        with torch.no_grad():
            for layer in layers:
                for p in layer.parameters():
                    fan_in = p.shape[1] if p.dim() >= 2 else p.shape[0]
                    bound = 1.0 / math.sqrt(fan_in)
                    p.uniform_(-bound, bound, generator=generator)
            # An untrained step holds the state: zero drift, small process noise.
            last = self.dynamics[-1]
            last.weight.mul_(0.01)
            last.bias.zero_()
            k = self.config.n_types
            last.bias[k * self.n_terms:k * (self.n_terms + 1)] = math.log(0.05)
            self.lab_bias.zero_()

    # ------------------------------------------------------------------ state <-> cells
    def log_cells(self, z: torch.Tensor) -> torch.Tensor:
        """``log1p`` absolute cells per type from the standardized state."""
        return self.center + self.scale * z

    def standardize(self, log_cells: torch.Tensor) -> torch.Tensor:
        return (log_cells - self.center) / self.scale

    def burden(self, z: torch.Tensor) -> torch.Tensor:
        """``(...)`` ``log1p`` sum of diameters (mm) of a state."""
        return self.burden_head(z).squeeze(-1)

    def sod_readout(self, z: torch.Tensor) -> torch.Tensor:
        """``(...)`` ``log1p`` sum of diameters a user sees: :meth:`burden` floored at 0 (a sum
        of diameters is never negative; the linear head can dip below 0 for a regressed
        tumor, and training keeps its gradient there)."""
        return self.burden(z).clamp_min(0.0)

    def composition_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Log abundance: its softmax is the state's composition."""
        # log(expm1(y)) = y + log(1 - exp(-y)): no overflow for large y.
        y = self.log_cells(z)
        floor = y.clamp_min(MIN_LOG_CELLS)
        logits = floor + torch.log(-torch.expm1(-floor))
        # Below the floor the value is held but the gradient passes (slope 1): a type pushed
        # under it with no truth to pull it back (observation-only training) would
        # otherwise have no gradient and stay at zero share for good.
        return torch.where(y < MIN_LOG_CELLS, logits + (y - y.detach()), logits)

    # ------------------------------------------------------------------ inference
    def _embed(self, x: EventInputs) -> torch.Tensor:
        n_b, n_l = x.valid.shape
        lab = x.lab.unsqueeze(1).expand(n_b, n_l, -1)
        cancer = x.cancer.unsqueeze(1).expand(n_b, n_l, -1)
        feats = torch.cat([x.obs, x.time, lab, cancer], -1)
        return self.embed(feats) * x.valid.unsqueeze(-1)

    def _split(self, out: torch.Tensor) -> LatentState:
        k = self.config.n_types
        return LatentState(out[..., :k],
                           out[..., k:2 * k].clamp(MIN_LOG_SIGMA, MAX_LOG_SIGMA),
                           out[..., 2 * k:])

    def filter(self, x: EventInputs) -> LatentState:
        """``(B, L, ...)`` state at every point from the points up to it."""
        hidden, _ = self.forward_rnn(self._embed(x))
        return self._split(self.filter_head(torch.cat([hidden, x.obs], -1)))

    def smooth(self, x: EventInputs) -> LatentState:
        """``(B, L, ...)`` state at every point from the whole record."""
        e = self._embed(x)
        forward, _ = self.forward_rnn(e)
        # Reverse each row's valid points (padding stays at the end).
        lengths = x.valid.sum(1)
        n_l = x.valid.shape[1]
        idx = torch.arange(n_l, device=e.device).expand(len(lengths), n_l)
        rev = torch.where(idx < lengths[:, None], lengths[:, None] - 1 - idx, idx)
        gather = rev.unsqueeze(-1).expand_as(e)
        backward, _ = self.backward_rnn(torch.gather(e, 1, gather))
        backward = torch.gather(backward, 1, gather)
        return self._split(self.smooth_head(torch.cat([forward, backward, x.obs], -1)))

    # ------------------------------------------------------------------ dynamics
    def _dynamics(self, z: torch.Tensor, c: torch.Tensor, cancer: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Drift terms ``(..., terms, K)``, process log-sigma ``(..., K)`` and context
        update terms ``(..., 1 + R, d_context)`` at a state."""
        k, r = self.config.n_types, self.config.n_therapies
        log_cells = self.log_cells(z)
        total = torch.logsumexp(log_cells, -1, keepdim=True)
        feats = [log_cells - total, (total - 20.0) / 5.0, c]
        if self.config.n_cancer_types:
            feats.append(cancer)
        out = self.dynamics(torch.cat(feats, -1))
        # At most MAX_DRIFT standardized units per cycle per term: one cycle cannot move a
        # type's log abundance by more than that, whatever the network does early in training.
        drift = MAX_DRIFT * torch.tanh(
            out[..., :k * self.n_terms].reshape(*z.shape[:-1], self.n_terms, k) / MAX_DRIFT)
        log_sigma = out[..., k * self.n_terms:k * (self.n_terms + 1)].clamp(
            MIN_LOG_SIGMA, MAX_LOG_SIGMA)
        dc = out[..., k * (self.n_terms + 1):].reshape(*z.shape[:-1], 1 + r, -1)
        return drift, log_sigma, dc

    def step(self, z: torch.Tensor, c: torch.Tensor, tau: torch.Tensor, dose: torch.Tensor,
             cancer: torch.Tensor | None = None, noise: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance ``tau`` cycles (``(N,)``, may be 0) under ``dose`` (``(N, R)``).

        Returns the new ``z``, ``c`` and the step's process log-sigma ``(N, K)``. ``noise``
        (``(N, K)`` standard normal) draws the process noise; ``None`` takes the mean.
        """
        drift, log_sigma, dc = self._dynamics(z, c, cancer)
        one = torch.ones_like(dose[..., :1])
        pair = dose[..., self.pairs[:, 0]] * dose[..., self.pairs[:, 1]]
        weights = torch.cat([one, dose, pair], -1)  # (N, terms)
        t = tau.unsqueeze(-1)
        z_new = z + t * (weights.unsqueeze(-1) * drift).sum(-2)
        if noise is not None:
            z_new = z_new + torch.exp(log_sigma) * torch.sqrt(t) * noise
        # A standardized state beyond +-Z_LIMIT is far outside anything ImmuneSim makes.
        z_new = z_new.clamp(-Z_LIMIT, Z_LIMIT)
        c_new = c + t * torch.tanh((torch.cat([one, dose], -1).unsqueeze(-1) * dc).sum(-2))
        return z_new, c_new, log_sigma

    def interaction(self, z: torch.Tensor, c: torch.Tensor,
                    cancer: torch.Tensor | None = None) -> torch.Tensor:
        """``(..., pairs, K)`` interaction terms at a state (the penalized part)."""
        drift, _, _ = self._dynamics(z, c, cancer)
        return drift[..., 1 + self.config.n_therapies:, :]

    # ------------------------------------------------------------------ observations
    def observe(self, z: torch.Tensor, lab_index: torch.Tensor) -> NextState:
        """Predictive distribution of a biopsy by lab ``lab_index`` and of a scan."""
        table = self.lab_bias
        if self.config.anchor_lab_bias:
            known = table[:self.config.n_labs]
            table = torch.cat([known - known.mean(0, keepdim=True), table[self.config.n_labs:]])
        bias = table[lab_index]
        while bias.dim() < z.dim():
            bias = bias.unsqueeze(-2)
        log_k = self.log_concentration[lab_index].clamp(MIN_LOG_CONCENTRATION,
                                                        MAX_LOG_CONCENTRATION)
        while log_k.dim() < z.dim() - 1:
            log_k = log_k.unsqueeze(-1)
        logits = self.composition_logits(z) + bias
        sigma = self.log_scan_sigma.clamp(MIN_LOG_SIGMA, MAX_LOG_SIGMA)
        burden = self.burden(z)
        return NextState(logits, log_k.expand(burden.shape), burden, sigma.expand(burden.shape))


def dirichlet_multinomial_nll(pred: NextState, counts: torch.Tensor,
                              block: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of block counts under a Dirichlet-multinomial.

    ``counts (..., K)`` cells per block at the block's first leaf, ``block (..., K)`` the
    first-leaf index of each leaf's block. The Dirichlet-multinomial is closed under merging
    categories, so a coarse label is scored on its block total. Returns ``(...)`` without
    the multinomial coefficient (constant in the parameters).
    """
    alpha = pred.alpha
    # A floor: a block whose expected share underflows to 0 would give lgamma(0) = inf. It
    # sits far below any share a state makes: a floor at 1e-8 held a block the state had
    # pushed under it there with no gradient (lgamma(n + a) - lgamma(a) pulls a block seen
    # with n cells up by about one nat per log unit, however small a is).
    alpha_block = torch.zeros_like(alpha).scatter_add_(-1, block, alpha).clamp_min(1e-30)
    present = block == torch.arange(block.shape[-1], device=block.device)
    a_sum = alpha.sum(-1)
    n = counts.sum(-1)
    terms = torch.where(present, torch.lgamma(counts + alpha_block)
                        - torch.lgamma(alpha_block), torch.zeros_like(alpha))
    return -(torch.lgamma(a_sum) - torch.lgamma(n + a_sum) + terms.sum(-1))


def gaussian_nll(mean: torch.Tensor, log_sigma: torch.Tensor,
                 value: torch.Tensor) -> torch.Tensor:
    """Elementwise Gaussian NLL (constant dropped)."""
    zed = (value - mean) * torch.exp(-log_sigma)
    return 0.5 * zed.square() + log_sigma
