"""The user-facing world model: fit, predict, rollout, save, load.

:class:`WorldModel` holds an ensemble of :class:`~.module.WorldModelModule` members (deep
ensemble: same data, different seeds). Each member's predictive distribution is the
aleatoric part; disagreement between members is the epistemic part. A rollout can sample
either or both.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from immunegym.data.vocab import THERAPIES
from immunegym.ontology import FINE_TYPES
from immunegym.world_model.batching import (
    append_point,
    cumulative_dose,
    interval_dose,
    set_query,
    timeline_inputs,
    write_point,
)
from immunegym.world_model.module import ModuleConfig, NextState, WorldModelModule, sample_next
from immunegym.world_model.timelines import CYCLE_DAYS, Timelines
from immunegym.world_model.training import EpochRecord, TrainConfig, train_member

Noise = Literal["none", "aleatoric", "epistemic", "both"]
NOISE_MODES: tuple[str, ...] = ("none", "aleatoric", "epistemic", "both")


@dataclass(frozen=True)
class WorldModelConfig:
    """Everything needed to rebuild a world model (saved as JSON beside the weights).

    Attributes
    ----------
    module
        Network sizes.
    n_members
        Ensemble size (epistemic uncertainty).
    cancer_types
        The cancer types one-hot encoded as inputs; empty (the default) keeps the cancer
        type out of the model, so a held-out type is an honest transfer test.
    programs
        Program names expected in the type tokens, in order.
    types, therapies
        Composition columns and therapy columns.
    leaf_prior
        Mean fraction of each fine type where labs resolve it; splits a coarse label's
        mass over its leaves in the inputs. Set from the training data by :meth:`fit`.
    """

    module: ModuleConfig = field(default_factory=ModuleConfig)
    n_members: int = 4
    cancer_types: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()
    types: tuple[str, ...] = FINE_TYPES
    therapies: tuple[str, ...] = THERAPIES
    leaf_prior: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        for key in ("cancer_types", "programs", "types", "therapies", "leaf_prior"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> WorldModelConfig:
        try:
            module = ModuleConfig(**data["module"])  # type: ignore[arg-type]
            return cls(module=module, n_members=int(data["n_members"]),  # type: ignore[arg-type]
                       cancer_types=tuple(data.get("cancer_types", ())),  # type: ignore[arg-type]
                       programs=tuple(data.get("programs", ())),  # type: ignore[arg-type]
                       types=tuple(data.get("types", FINE_TYPES)),  # type: ignore[arg-type]
                       therapies=tuple(data.get("therapies", THERAPIES)),  # type: ignore[arg-type]
                       leaf_prior=tuple(float(v) for v in data.get(  # type: ignore[union-attr]
                           "leaf_prior", ())))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"config: not a world-model config ({err})") from None


@dataclass
class Prediction:
    """One-step predictive distribution, ensemble members stacked first.

    Attributes
    ----------
    composition
        ``(P, K)`` ensemble-mean composition.
    burden
        ``(P,)`` ensemble-mean ``log1p`` sum of diameters (mm).
    members
        Per-member :class:`~.module.NextState` with leading dims ``(E, P)``.
    """

    composition: torch.Tensor
    burden: torch.Tensor
    members: NextState


@dataclass
class Rollout:
    """Sampled trajectories of ``H`` cycles.

    Attributes
    ----------
    days
        ``(P, H)`` day of each step.
    compositions
        ``(S, P, H, K)`` compositions over the fine types.
    burden
        ``(S, P, H)`` ``log1p`` sum of diameters (mm).
    member
        ``(S,)`` ensemble member behind each sample.
    """

    days: torch.Tensor
    compositions: torch.Tensor
    burden: torch.Tensor
    member: torch.Tensor

    @property
    def mean_composition(self) -> torch.Tensor:
        """``(P, H, K)`` mean over samples."""
        return self.compositions.mean(0)

    def interval(self, level: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """Central ``level`` interval of the compositions over samples: ``(P, H, K)`` each."""
        lo = torch.quantile(self.compositions, (1 - level) / 2, dim=0)
        hi = torch.quantile(self.compositions, (1 + level) / 2, dim=0)
        return lo, hi


class WorldModel:
    """Trajectory-aware world model of the tumor immune microenvironment.

    Parameters
    ----------
    config
        Architecture and ensemble size.
    seed
        Seed of the members' initial weights (member ``m`` uses ``seed + m``).
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).

    Examples
    --------
    >>> wm = immunegym.world_model.load()                  # the pretrained default
    >>> tl = build_timelines(adata)                        # a registered cohort
    >>> wm.predict(tl, doses=np.tile([1, 0, 0, 0, 0], (len(tl), 1))).composition
    >>> wm.rollout(tl, doses, n_samples=64, noise="both").interval(0.9)
    """

    def __init__(self, config: WorldModelConfig | None = None, *, seed: int = 0,
                 device: str = "cpu") -> None:
        self.config = config or WorldModelConfig()
        if self.config.n_members < 1:
            raise ValueError(f"n_members: expected >= 1, got {self.config.n_members}")
        self.device = _resolve_device(device)
        self.members: list[WorldModelModule] = []
        for m in range(self.config.n_members):
            generator = torch.Generator().manual_seed(seed + m)
            module = WorldModelModule(self.config.module, generator=generator)
            self.members.append(module.to(self.device).eval())
        self.history: list[list[EpochRecord]] = []
        self.card: dict[str, object] = {}

    # ------------------------------------------------------------------ inputs
    def leaf_prior(self) -> torch.Tensor | None:
        """``(K,)`` within-block split prior, or None before fitting."""
        if not self.config.leaf_prior:
            return None
        return torch.tensor(self.config.leaf_prior, dtype=torch.float32, device=self.device)

    def inputs(self, tl: Timelines):
        """Token inputs of ``tl`` (on the model's device)."""
        return timeline_inputs(tl, self.cancer_onehot(tl), self.leaf_prior())

    def cancer_onehot(self, tl: Timelines) -> torch.Tensor:
        """``(P, C)`` cancer-type inputs (``C = 0`` unless the config asks for them)."""
        types = self.config.cancer_types
        out = torch.zeros(len(tl), len(types))
        if types:
            index = {t: i for i, t in enumerate(types)}
            for row, cancer in enumerate(tl.patients["cancer_type"]):
                if cancer in index:
                    out[row, index[cancer]] = 1.0
        return out.to(self.device)

    def check_timelines(self, tl: Timelines) -> None:
        """Raise a clear error when ``tl`` does not fit this model."""
        k = self.config.module.n_types
        if tl.fractions.shape[-1] != k:
            raise ValueError(f"timelines: {tl.fractions.shape[-1]} composition columns; "
                             f"the model expects {k} ({list(self.config.types)[:3]}...)")
        if tl.programs != self.config.programs:
            raise ValueError(f"timelines: programs {list(tl.programs)}; the model expects "
                             f"{list(self.config.programs)}")
        if tl.cycle_doses.shape[-1] != len(self.config.therapies):
            raise ValueError(f"timelines: {tl.cycle_doses.shape[-1]} therapy columns; "
                             f"expected {len(self.config.therapies)}")
        for name in ("fractions", "counts", "program_scores", "burden", "days", "cycle_doses"):
            value = getattr(tl, name)
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"timelines.{name}: contains NaN or infinite values; "
                                 "expected finite numbers (mask missing data instead)")
        if not bool(tl.valid[:, 0].all()):
            raise ValueError("timelines: a patient has no observation; expected at least one")

    def _doses(self, doses: np.ndarray | torch.Tensor | Sequence[str], n: int,
               steps: int | None) -> torch.Tensor:
        """Validate doses: ``(P, R)``, ``(P, H, R)``, or therapy names for everyone."""
        therapies = self.config.therapies
        if isinstance(doses, (list, tuple)) and all(isinstance(d, str) for d in doses):
            unknown = [d for d in doses if d not in therapies]
            if unknown:
                raise ValueError(f"doses: unknown therapies {unknown}; expected some of "
                                 f"{list(therapies)}")
            doses = np.tile([float(t in doses) for t in therapies], (n, 1))
        value = torch.as_tensor(np.asarray(doses, dtype=np.float32))
        if value.dim() == 2 and steps is not None:
            value = value.unsqueeze(1).expand(-1, steps, -1)
        want = (n, len(therapies)) if steps is None else (n, steps, len(therapies))
        if tuple(value.shape) != want:
            raise ValueError(f"doses: shape {tuple(value.shape)}; expected {want} (patients, "
                             f"{'' if steps is None else 'steps, '}therapies {list(therapies)})")
        if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
            raise ValueError("doses: expected finite, non-negative dose intensities "
                             "(1.0 = one standard cycle)")
        return value.to(self.device)

    @staticmethod
    def _dt(dt: float | np.ndarray | torch.Tensor, n: int) -> torch.Tensor:
        """Validate ``dt``: a number or ``(P,)`` days, all finite and > 0; ``(P,)`` float32."""
        if isinstance(dt, torch.Tensor):
            value = dt.detach().to("cpu", torch.float32)
        else:
            try:
                value = torch.as_tensor(np.asarray(dt, dtype=np.float32))
            except (TypeError, ValueError):
                raise ValueError(f"dt: {dt!r}; expected days > 0 as a number or a ({n},) "
                                 "array") from None
        if value.dim() == 0:
            value = value.expand(n)
        if tuple(value.shape) != (n,):
            raise ValueError(f"dt: shape {tuple(value.shape)}; expected a number or ({n},) "
                             "days, one per patient")
        bad = ~(torch.isfinite(value) & (value > 0))
        if bool(bad.any()):
            first = int(torch.nonzero(bad)[0, 0])
            shown = dt if np.ndim(dt) == 0 else f"{float(value[first])} at patient {first}"
            raise ValueError(f"dt: expected days > 0, got {shown}")
        return value.clone()

    # ------------------------------------------------------------------ fit
    def fit(self, train: Timelines, val: Timelines, train_config: TrainConfig | None = None,
            *, seed: int = 0,
            on_epoch: Callable[[int, EpochRecord], None] | None = None) -> WorldModel:
        """Train every member on ``train``, early-stopping on ``val``.

        ``on_epoch(member, record)`` is called after every epoch (progress, logging).
        """
        cfg = train_config or TrainConfig()
        for tl in (train, val):
            self.check_timelines(tl)
        self.set_leaf_prior(train)
        prior = self.leaf_prior().cpu()
        self.history = []
        for m, module in enumerate(self.members):
            module.to("cpu")
            callback = None if on_epoch is None else (lambda r, m=m: on_epoch(m, r))
            _, history = train_member(module, train, val, self.cancer_onehot(train).cpu(),
                                      self.cancer_onehot(val).cpu(), cfg, seed + 1000 * m,
                                      on_epoch=callback, prior=prior)
            module.to(self.device).eval()
            self.history.append(history)
        return self

    def set_leaf_prior(self, train: Timelines) -> None:
        """Set the within-block split prior from training timelines."""
        from dataclasses import replace

        from immunegym.world_model.timelines import within_block_prior

        prior = tuple(float(v) for v in within_block_prior(train))
        self.config = replace(self.config, leaf_prior=prior)

    # ------------------------------------------------------------------ predict
    @torch.no_grad()
    def predict(self, tl: Timelines, doses: np.ndarray | torch.Tensor | Sequence[str],
                dt: float | np.ndarray | torch.Tensor = CYCLE_DAYS) -> Prediction:
        """Predictive distribution ``dt`` days after each patient's last observation.

        Parameters
        ----------
        tl
            Observed history (:func:`~.timelines.build_timelines`).
        doses
            ``(P, R)`` dose intensity per therapy over the interval (1.0 = a standard
            cycle), or a list of therapy names given to everyone.
        dt
            Days ahead (> 0): one number for everyone, or a ``(P,)`` array or tensor with
            each patient's own horizon (irregular gaps, e.g. to a left-out biopsy). Pass
            the dose intensity over each patient's own interval in ``doses``
            (:func:`~.batching.interval_dose`).
        """
        self.check_timelines(tl)
        step = self._dt(dt, len(tl))
        dose = self._doses(doses, len(tl), None)
        tl = tl.to(self.device)
        x = self.inputs(tl)
        last = tl.valid.sum(1) - 1
        x = set_query(x, last, step.to(self.device), dose)
        rows = torch.arange(len(tl), device=self.device)
        preds = [module(x).index(rows, last) for module in self.members]
        stacked = NextState(*(torch.stack([getattr(p, f) for p in preds])
                              for f in ("logits", "log_concentration", "burden_mean",
                                        "burden_log_sigma")))
        return Prediction(stacked.mean_composition.mean(0), stacked.burden_mean.mean(0),
                          stacked)

    @torch.no_grad()
    def rollout(self, tl: Timelines, doses: np.ndarray | torch.Tensor | Sequence[str],
                n_steps: int | None = None, *, n_samples: int = 1, noise: Noise = "none",
                seed: int = 0, dt: float = CYCLE_DAYS) -> Rollout:
        """Autoregressive rollout of ``H`` steps of ``dt`` days from the last observation.

        Parameters
        ----------
        tl
            Observed history.
        doses
            ``(P, H, R)`` per-step dose intensities, ``(P, R)`` repeated for ``n_steps``, or
            therapy names given every step.
        n_steps
            ``H``; taken from ``doses`` when it is ``(P, H, R)``.
        n_samples
            Trajectories per patient ``S``.
        noise
            ``"none"``: each member's mean path (``S`` is rounded to the members);
            ``"aleatoric"``: sample each step's predictive distribution with the first
            member; ``"epistemic"``: mean paths of members drawn per sample; ``"both"``.
        seed
            Seed of the sampling generator.
        dt
            Days per step.
        """
        if noise not in NOISE_MODES:
            raise ValueError(f"noise: {noise!r}; expected one of {list(NOISE_MODES)}")
        if n_samples < 1:
            raise ValueError(f"n_samples: expected >= 1, got {n_samples}")
        self.check_timelines(tl)
        given = np.asarray(doses) if not isinstance(doses, (list, tuple)) else None
        if n_steps is None:
            if given is None or given.ndim != 3:
                raise ValueError("n_steps: required unless doses is (patients, steps, therapies)")
            n_steps = given.shape[1]
        dose = self._doses(doses, len(tl), n_steps)
        n_members = len(self.members)
        if noise == "none":
            n_samples = n_members
        generator = torch.Generator(device=self.device).manual_seed(seed)
        if noise in ("epistemic", "both"):
            member = torch.randint(0, n_members, (n_samples,), generator=generator,
                                   device=self.device)
        elif noise == "none":
            member = torch.arange(n_members, device=self.device)
        else:
            member = torch.zeros(n_samples, dtype=torch.long, device=self.device)
        tl = tl.to(self.device)
        n_p = len(tl)
        comps = torch.zeros(n_samples, n_p, n_steps, len(self.config.types), device=self.device)
        burden = torch.zeros(n_samples, n_p, n_steps, device=self.device)
        base = self.inputs(tl)
        last0 = tl.valid.sum(1) - 1
        start_day = tl.days[torch.arange(n_p, device=self.device), last0]
        exposure0 = cumulative_dose(tl.cycle_doses, start_day.unsqueeze(1))[:, 0]
        sampled = noise in ("aleatoric", "both")
        for m in member.unique().tolist():
            which = torch.nonzero(member == m).flatten()
            c, b = self._rollout_member(self.members[m], base, last0, start_day, exposure0,
                                        dose, len(which), dt, sampled, generator)
            comps[which], burden[which] = c, b
        steps = torch.arange(1, n_steps + 1, device=self.device) * dt
        return Rollout(start_day[:, None] + steps, comps, burden, member)

    def _rollout_member(self, module, base, last0, start_day, exposure0, dose, n_rep, dt,
                        sampled, generator):
        """Roll ``n_rep`` copies of every patient forward with one member."""
        n_p = last0.shape[0]
        rep = torch.arange(n_p, device=self.device).repeat(n_rep)
        x = type(base)(**{k: v[rep] for k, v in vars(base).items()})
        last = last0[rep]
        day, exposure = start_day[rep], exposure0[rep]
        rows = torch.arange(len(rep), device=self.device)
        n_steps = dose.shape[1]
        comps, burdens = [], []
        for h in range(n_steps):
            step_dose = dose[rep, h]
            x = set_query(x, last, torch.full_like(day, dt), step_dose)
            pred = module(x).index(rows, last)
            comp, burden = sample_next(pred, generator, noise=sampled)
            comps.append(comp)
            burdens.append(burden)
            day = day + dt
            exposure = exposure + step_dose * dt / CYCLE_DAYS
            x, last = append_point(x, last, day, exposure)
            x = write_point(x, last, comp, burden)
        comp = torch.stack(comps, 1).reshape(n_rep, n_p, n_steps, -1)
        return comp, torch.stack(burdens, 1).reshape(n_rep, n_p, n_steps)

    def actual_doses(self, tl: Timelines, start_day: torch.Tensor, n_steps: int,
                     dt: float = CYCLE_DAYS) -> torch.Tensor:
        """``(P, H, R)`` dose intensities each patient actually got in ``H`` steps from a day."""
        offsets = torch.arange(n_steps + 1, dtype=torch.float32) * dt
        edges = torch.as_tensor(start_day, dtype=torch.float32)[:, None] + offsets
        return interval_dose(tl.cycle_doses.cpu(), edges[:, :-1], edges[:, 1:])

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str], card: dict[str, object] | None = None) -> Path:
        """Write the checkpoint directory (see :mod:`.checkpoint`)."""
        from immunegym.world_model.checkpoint import save_checkpoint

        return save_checkpoint(self, path, card if card is not None else self.card)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *,
             device: str = "cpu") -> WorldModel:
        """Read a checkpoint directory; the pretrained default when ``path`` is None."""
        from immunegym.world_model.checkpoint import load_checkpoint

        return load_checkpoint(path, device=device)

    def to(self, device: str | torch.device) -> WorldModel:
        """Move every member to ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``); returns self."""
        self.device = _resolve_device(str(device))
        self.members = [m.to(self.device) for m in self.members]
        return self

    def num_parameters(self) -> int:
        """Trainable parameters of one member."""
        return sum(p.numel() for p in self.members[0].parameters())

    def __repr__(self) -> str:
        c = self.config.module
        return (f"WorldModel(members={len(self.members)}, d_model={c.d_model}, "
                f"layers={c.n_layers}, params/member={self.num_parameters():,}, "
                f"device={self.device})")


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device: {device!r}; expected 'cpu', 'cuda' or 'auto'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but no CUDA device is available")
    return torch.device(device)
