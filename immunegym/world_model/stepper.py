"""Incremental inference: encode one new time point per call, reusing the past.

The module's type attention looks only inside a time point and its time attention only
looks back (see :mod:`.module`), so the prediction from a new point needs the new point's
tokens and, per layer, the keys and values of the past points: a key-value cache. A step
then costs one point instead of the whole history, which is what makes the world model fast
enough to serve as an environment.

:class:`KVCache` holds, per layer, ``(B, T, H, L, d_head)`` keys and values for ``B``
independent rows (environments) of up to ``L`` points; rows have their own lengths, so one
row can restart (an episode reset) while the others go on. :func:`step_point` encodes each
row's next point at its own position and returns the same prediction the full forward pass
gives at that position (tested to float tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from immunegym.world_model.module import (
    MAX_LOG_CONCENTRATION,
    MAX_LOG_SIGMA,
    MIN_LOG_CONCENTRATION,
    MIN_LOG_SIGMA,
    SKIP_EPS,
    AxialBlock,
    NextState,
    TokenInputs,
    WorldModelModule,
    _time_embedding,
    clinical_token_features,
    type_token_features,
)


@dataclass
class KVCache:
    """Per-layer keys and values of the past points of ``B`` rows.

    Attributes
    ----------
    keys, values
        One ``(B, T, H, L, d_head)`` tensor per layer (``T = K + 1`` tokens per point).
    length
        ``(B,)`` long: points cached per row; the next point is written at this index.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: torch.Tensor

    @classmethod
    def empty(cls, module: WorldModelModule, n_rows: int, max_points: int,
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
              ) -> KVCache:
        """A cache for ``n_rows`` rows of at most ``max_points`` points each."""
        c = module.config
        shape = (n_rows, c.n_types + 1, c.n_heads, max_points, c.d_model // c.n_heads)
        return cls([torch.zeros(shape, device=device, dtype=dtype) for _ in module.blocks],
                   [torch.zeros(shape, device=device, dtype=dtype) for _ in module.blocks],
                   torch.zeros(n_rows, dtype=torch.long, device=device))

    @staticmethod
    def bytes_per_row(module: WorldModelModule, max_points: int,
                      dtype: torch.dtype = torch.float32) -> int:
        """Memory one row takes."""
        c = module.config
        per = (c.n_types + 1) * c.d_model * max_points * torch.finfo(dtype).bits // 8
        return 2 * len(module.blocks) * per

    @property
    def max_points(self) -> int:
        return self.keys[0].shape[3]

    def clear(self, rows: torch.Tensor) -> None:
        """Forget the past of ``rows`` (a bool mask or indices): they start again at 0."""
        self.length[rows] = 0

    def rows(self, start: int, stop: int) -> KVCache:
        """A view of rows ``start:stop`` (writes go through to this cache)."""
        return KVCache([k[start:stop] for k in self.keys], [v[start:stop] for v in self.values],
                       self.length[start:stop])


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``(B, T, d) -> (B, T, H, 1, d_head)``."""
    b, t, d = x.shape
    return x.reshape(b, t, n_heads, 1, d // n_heads)


def _type_attention(attn: torch.nn.MultiheadAttention, h: torch.Tensor) -> torch.Tensor:
    """Self-attention across the ``T`` tokens of each row's point: ``(B, T, d)``."""
    b, t, d = h.shape
    n_h = attn.num_heads
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (z.reshape(b, t, n_h, d // n_h).transpose(1, 2) for z in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, d))


def _time_attention(attn: torch.nn.MultiheadAttention, h: torch.Tensor, keys: torch.Tensor,
                    values: torch.Tensor, position: torch.Tensor, rows: torch.Tensor
                    ) -> torch.Tensor:
    """Attend from the new point to the cached past and itself; writes its keys/values."""
    b, t, d = h.shape
    n_h = attn.num_heads
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    keys[rows, :, :, position] = k.reshape(b, t, n_h, d // n_h).to(keys.dtype)
    values[rows, :, :, position] = v.reshape(b, t, n_h, d // n_h).to(values.dtype)
    # Read only the slots some row uses: rows of an env batch are mostly early in episodes.
    n_used = int(position.max()) + 1
    visible = torch.arange(n_used, device=h.device) <= position.unsqueeze(1)
    mask = visible[:, None, None, None, :]  # (B, 1, 1, 1, L)
    out = F.scaled_dot_product_attention(_heads(q, n_h), keys[..., :n_used, :].to(q.dtype),
                                         values[..., :n_used, :].to(q.dtype), attn_mask=mask)
    return attn.out_proj(out.reshape(b, t, d))


def _block_step(block: AxialBlock, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                position: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    x = x + _type_attention(block.attn_type, block.norm_type(x))
    x = x + _time_attention(block.attn_time, block.norm_time(x), keys, values, position, rows)
    return x + block.ff(block.norm_ff(x))


@torch.no_grad()
def step_point(module: WorldModelModule, cache: KVCache, point: TokenInputs) -> NextState:
    """Encode each row's next point and predict the point after it.

    Parameters
    ----------
    module
        A member in eval mode (dropout is not applied here).
    cache
        The rows' past; the new point is written at ``cache.length`` and lengths grow by 1.
    point
        Inputs of one point per row: every :class:`~.module.TokenInputs` field with ``L = 1``
        (its ``next_dt`` / ``next_dose`` are the query: the interval and therapy ahead).

    Returns
    -------
    NextState
        Leading dimension ``(B,)``: the predictive distribution of the next point.
    """
    position = cache.length
    if bool((position >= cache.max_points).any()):
        raise ValueError(f"cache: a row already holds {cache.max_points} points; "
                         "make the cache longer or clear the row")
    n_k = module.config.n_types
    types = module.type_in(type_token_features(point))
    clin = module.clin_in(clinical_token_features(point)).unsqueeze(2)
    h = torch.cat([types, clin], dim=2) + module.type_embedding
    h = h + module.time_in(_time_embedding(point.days, module.config.d_model)).unsqueeze(2)
    h = h[:, 0]  # (B, T, d)
    rows = torch.arange(h.shape[0], device=h.device)
    for block, keys, values in zip(module.blocks, cache.keys, cache.values, strict=True):
        h = _block_step(block, h, keys, values, position, rows)
    cache.length += 1
    h = module.norm(h)
    observed = point.comp_observed[:, 0].unsqueeze(-1).float()
    logits = module.type_head(h[:, :n_k]).squeeze(-1) + observed * torch.log(
        point.fractions[:, 0] + SKIP_EPS)
    clin_out = module.clin_head(h[:, n_k])
    b_obs = point.burden_observed[:, 0].float()
    return NextState(
        logits=logits,
        log_concentration=clin_out[..., 0].add(4.0).clamp(MIN_LOG_CONCENTRATION,
                                                          MAX_LOG_CONCENTRATION),
        burden_mean=clin_out[..., 1] + b_obs * point.burden[:, 0] + (1 - b_obs) * 3.5,
        burden_log_sigma=clin_out[..., 2].sub(1.5).clamp(MIN_LOG_SIGMA, MAX_LOG_SIGMA),
    )
