"""The user-facing world model: fit, filter, predict, rollout, smooth, save, load.

:class:`WorldModel` holds an ensemble of :class:`~.latent.LatentWorldModule` members, each
trained on its own bootstrap resample of the patients. A member's filter gives today's state
from the history; its dynamics carry the state forward under doses; its observation model
says what a lab would see. Rollouts sample the latent state (the filter's spread and the
dynamics' process noise), never biopsy draws, and a per-horizon conformal scale fitted on
validation patients keeps the sampled intervals honest (:meth:`WorldModel.calibrate`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from immunegym.data.vocab import THERAPIES
from immunegym.ontology import FINE_TYPES
from immunegym.planning.regimen import RegimenPlan, parse_plan, parse_therapy_set
from immunegym.sim.observation import LABS
from immunegym.validation import (
    MAX_SEED,
    ValidationError,
    bad,
    boolean,
    choice,
    integer,
    known_keys,
    memory_budget,
    number,
)
from immunegym.validation import device as validate_device
from immunegym.validation import seed as validate_seed
from immunegym.world_model.events import (
    event_inputs,
    grid_doses,
    interval_dose,
)
from immunegym.world_model.fitting import (
    EpochRecord,
    TrainConfig,
    advance,
    standardization,
    train_member,
    training_tensors,
)
from immunegym.world_model.latent import LatentConfig, LatentState, LatentWorldModule, NextState
from immunegym.world_model.timelines import CYCLE_DAYS, Timelines

Noise = Literal["none", "aleatoric", "epistemic", "both"]
MAX_SAMPLES = 100_000
"""Most sampled paths per patient in one rollout."""
MAX_ROLLOUT_STEPS = 10_000
"""Most steps of one rollout (575 years of 21-day cycles)."""
MAX_DT_DAYS = 3650.0
"""Longest step or forecast gap (10 years)."""
MAX_DOSE_INTENSITY = 10.0
"""Largest dose intensity per step (10 standard cycles): more is a unit mistake."""
NOISE_MODES: tuple[str, ...] = ("none", "aleatoric", "epistemic", "both")
CONFORMAL_LEVEL = 0.9
"""Central interval level the conformal scales are fitted for."""
INTERVAL_SAMPLES = 64
"""Sampled paths the conformal scales are fitted for. The 5% and 95% sample quantiles of
fewer paths sit closer together (16 paths cover ~0.04 less than 64), so intervals read
from another number of paths cover a different share; the benchmark uses this many."""


FINE_TUNE_CONFIG = TrainConfig(epochs=40, batch_size=16, lr=1e-3, patience=8,
                               privileged=False, input_dropout=0.0, bootstrap=False)
"""Default of :meth:`WorldModel.fine_tune`. The learning rate was chosen on the fine-tuning
validation loss of MORRISON-1 pairs (2e-4, 1e-3, 3e-3 tried; 1e-3 lowest), never on a
response label."""


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
    labs
        Labs with a learned labeling bias; any other lab must be called ``"unknown"``.
    types, therapies
        Composition columns and therapy columns.
    leaf_prior
        Mean fraction of each fine type where labs resolve it; splits a coarse label's
        mass over its leaves in the inputs. Set from the training data by :meth:`fit`.
    conformal_scale
        Per-horizon (1, 2, ...) multiplier of the sampled spread around the mean path,
        fitted on validation patients (:meth:`WorldModel.calibrate`); empty: 1.
    privileged
        The members were trained with ImmuneSim's hidden state as supervision.
    """

    module: LatentConfig = field(default_factory=LatentConfig)
    n_members: int = 3
    cancer_types: tuple[str, ...] = ()
    labs: tuple[str, ...] = tuple(LABS)
    types: tuple[str, ...] = FINE_TYPES
    therapies: tuple[str, ...] = THERAPIES
    leaf_prior: tuple[float, ...] = ()
    conformal_scale: tuple[float, ...] = ()
    privileged: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.module, LatentConfig):
            raise bad("module", self.module, "a LatentConfig")
        integer("n_members", self.n_members, low=1, high=MAX_MEMBERS)
        m = self.module
        for name in ("cancer_types", "labs", "types", "therapies"):
            object.__setattr__(self, name, _names(name, getattr(self, name)))
        _same_order("types", self.types, FINE_TYPES, "immunegym.ontology.FINE_TYPES")
        _same_order("therapies", self.therapies, THERAPIES, "immunegym.data.vocab.THERAPIES")
        for name, count, key in (("types", m.n_types, "n_types"),
                                 ("therapies", m.n_therapies, "n_therapies"),
                                 ("labs", m.n_labs, "n_labs"),
                                 ("cancer_types", m.n_cancer_types, "n_cancer_types")):
            if len(getattr(self, name)) != count:
                raise bad(name, list(getattr(self, name)),
                          f"{count} names, as module.{key} says")
        for name in ("leaf_prior", "conformal_scale"):
            object.__setattr__(self, name, _positive_floats(name, getattr(self, name)))
        if self.leaf_prior and len(self.leaf_prior) != m.n_types:
            raise bad("leaf_prior", f"<{len(self.leaf_prior)} values>",
                      f"{m.n_types} values, one per cell type (or none)")
        boolean("privileged", self.privileged)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        for key in ("cancer_types", "labs", "types", "therapies", "leaf_prior",
                    "conformal_scale"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: object) -> WorldModelConfig:
        """A config from its JSON form (:meth:`to_dict`), every key and value checked.

        ``format`` and ``format_version`` (a checkpoint's markers) are allowed and ignored.

        Raises
        ------
        ValidationError
            Naming the key: an unknown one (with the nearest known one), a missing
            ``module`` or ``n_members``, a value of the wrong type or out of range, cell
            types or therapies in another order than this immunegym's (the first
            mismatch), or lab and type lists whose lengths disagree with ``module``.
        """
        allowed = [f.name for f in fields(cls)] + ["format", "format_version"]
        values = known_keys("config", data, allowed)
        for key in ("module", "n_members"):
            if key not in values:
                raise ValidationError(f"{key}: missing; expected a world-model config with "
                                      f"keys {sorted(f.name for f in fields(cls))}")
        values.pop("format", None)
        values.pop("format_version", None)
        values["module"] = LatentConfig.from_dict(values["module"], "module")
        return cls(**values)


MAX_MEMBERS = 64
"""Largest ensemble a config may ask for."""


def _names(field: str, value: object) -> tuple[str, ...]:
    """A list of names as a tuple (a bare string is refused: it is not a list of names)."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise bad(field, value, "a list of names")
    for item in value:
        if not isinstance(item, str):
            raise bad(field, list(value), "a list of names (strings)")
    return tuple(value)


def _same_order(field: str, got: Sequence[str], expected: Sequence[str], where: str) -> None:
    """Refuse names in another order or set than ``expected``, naming the first mismatch."""
    if tuple(got) == tuple(expected):
        return
    for i, (a, b) in enumerate(zip(got, expected, strict=False)):
        if a != b:
            raise ValidationError(
                f"{field}: got {a!r} at position {i}; expected {b!r} there: the columns "
                f"must be exactly {where} in its order ({len(expected)} names), or every "
                "column after it would be mislabeled")
    raise ValidationError(f"{field}: got {len(got)} names; expected {len(expected)}, "
                          f"exactly {where}")


def _positive_floats(field: str, value: object) -> tuple[float, ...]:
    """A list of finite positive numbers as a tuple of floats."""
    if isinstance(value, str) or not isinstance(value, Sequence | np.ndarray):
        raise bad(field, value, "a list of finite numbers > 0")
    return tuple(number(f"{field}[{i}]", v, low=0.0, low_open=True)
                 for i, v in enumerate(value))


@dataclass
class Prediction:
    """Predictive distribution ``dt`` days ahead, ensemble members stacked first.

    Attributes
    ----------
    composition
        ``(P, K)`` ensemble-mean composition of the state.
    burden
        ``(P,)`` ensemble-mean ``log1p`` sum of diameters (mm).
    members
        Per-member :class:`~.latent.NextState` with leading dims ``(E, P)`` (the logits
        are the state's log abundance; a biopsy would add its lab's bias).
    """

    composition: torch.Tensor
    burden: torch.Tensor
    members: NextState

    def __repr__(self) -> str:
        n_p, k = self.composition.shape[-2:] if self.composition.dim() >= 2 else (0, 0)
        return (f"Prediction(patients={n_p}, types={k}, "
                f"members={self.members.logits.shape[0]}, device={self.composition.device})")


@dataclass
class Rollout:
    """Sampled trajectories of ``H`` steps.

    Attributes
    ----------
    days
        ``(P, H)`` day of each step.
    compositions
        ``(S, P, H, K)`` compositions of the state over the fine types.
    burden
        ``(S, P, H)`` ``log1p`` sum of diameters (mm).
    member
        ``(S,)`` ensemble member behind each sample.
    """

    days: torch.Tensor
    compositions: torch.Tensor
    burden: torch.Tensor
    member: torch.Tensor

    def __repr__(self) -> str:
        s, p, h, k = self.compositions.shape
        return (f"Rollout(samples={s}, patients={p}, steps={h}, types={k}, "
                f"members={sorted(set(self.member.tolist()))}, "
                f"device={self.compositions.device})")

    @property
    def mean_composition(self) -> torch.Tensor:
        """``(P, H, K)`` mean over samples."""
        return self.compositions.mean(0)

    def interval(self, level: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """Central ``level`` interval of the compositions over samples: ``(P, H, K)`` each."""
        level = number("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
        lo = torch.quantile(self.compositions, (1 - level) / 2, dim=0)
        hi = torch.quantile(self.compositions, (1 + level) / 2, dim=0)
        return lo, hi


@dataclass
class Smoothed:
    """The state at every time point from the whole record (:meth:`WorldModel.smooth`).

    ``composition (P, L, K)`` and ``burden (P, L)`` (``log1p`` mm), ensemble means; zero at
    padding.
    """

    composition: torch.Tensor
    burden: torch.Tensor

    def __repr__(self) -> str:
        p, n_l, k = self.composition.shape
        return f"Smoothed(patients={p}, points={n_l}, types={k}, device={self.composition.device})"


class WorldModel:
    """Latent state-space world model of the tumor immune microenvironment.

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
    >>> wm.predict(tl, doses=["anti_pd1"]).composition     # 21 days ahead
    >>> wm.rollout(tl, ["anti_pd1"], 6, n_samples=64, noise="both").interval(0.9)
    >>> wm.smooth(tl).composition                          # reconstruction at every point
    """

    def __init__(self, config: WorldModelConfig | None = None, *, seed: int = 0,
                 device: str = "cpu") -> None:
        if config is not None and not isinstance(config, WorldModelConfig):
            raise bad("config", config, "a WorldModelConfig or None (the default sizes)")
        self.config = config or WorldModelConfig()
        n = self.config.n_members
        seed_ = validate_seed("seed", seed)
        if seed_ + n - 1 > MAX_SEED:  # member m is seeded with seed + m
            raise bad("seed", seed, f"a seed <= {MAX_SEED - n + 1} (member m uses seed + m)")
        self.device = _resolve_device(device)
        # Weights plus the init's temporaries, before anything is built.
        memory_budget("config", f"<{n} members of {parameter_count(self.config.module):,} "
                      "parameters>", 3 * 4 * n * parameter_count(self.config.module),
                      "the members' weights")
        self.members: list[LatentWorldModule] = []
        for m in range(self.config.n_members):
            generator = torch.Generator().manual_seed(seed + m)
            module = LatentWorldModule(self.config.module, generator=generator)
            self.members.append(module.to(self.device).eval())
        self.history: list[list[EpochRecord]] = []
        self.card: dict[str, object] = {}

    # ------------------------------------------------------------------ inputs
    def leaf_prior(self) -> torch.Tensor | None:
        """``(K,)`` within-block split prior, or None before fitting."""
        if not self.config.leaf_prior:
            return None
        return torch.tensor(self.config.leaf_prior, dtype=torch.float32)

    def inputs(self, tl: Timelines):
        """Per-point inputs of ``tl`` (on the model's device)."""
        x = event_inputs(tl.to("cpu"), self.config.labs, self.cancer_onehot(tl).cpu(),
                         self.leaf_prior())
        return type(x)(**{k: v.to(self.device) for k, v in vars(x).items()})

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

    def check_timelines(self, tl: Timelines, field: str = "timelines") -> None:
        """Raise a clear error when ``tl`` does not fit this model.

        Checks the type (an AnnData must go through :func:`~.timelines.build_timelines`
        first), the columns, finite values, non-negative doses and that every patient has an
        observation.
        """
        if not isinstance(tl, Timelines):
            raise bad(field, f"<{type(tl).__name__}>",
                      "Timelines (build them from a registered AnnData with "
                      "immunegym.world_model.build_timelines(adata))")
        k = self.config.module.n_types
        if tl.fractions.shape[-1] != k:
            raise ValidationError(f"timelines: {tl.fractions.shape[-1]} composition columns; "
                             f"the model expects {k} ({list(self.config.types)[:3]}...)")
        _same_order(f"{field}.types", tuple(tl.types), tuple(self.config.types),
                    "the model's cell types")
        if tl.cycle_doses.shape[-1] != len(self.config.therapies):
            raise ValidationError(f"timelines: {tl.cycle_doses.shape[-1]} therapy columns; "
                             f"expected {len(self.config.therapies)}")
        if len(tl) == 0:
            raise ValidationError("timelines: no patients; expected at least one")
        for name in ("fractions", "counts", "burden", "days", "cycle_doses"):
            value = getattr(tl, name)
            if not bool(torch.isfinite(value).all()):
                raise ValidationError(f"timelines.{name}: contains NaN or infinite values; "
                                 "expected finite numbers (mask missing data instead)")
        if bool((tl.cycle_doses < 0).any()):
            row = int(torch.nonzero(tl.cycle_doses < 0)[0, 0])
            raise bad(f"{field}.cycle_doses", f"<negative dose for patient "
                      f"{tl.patient_ids[row]!r}>", "dose intensities >= 0")
        if not bool(tl.valid[:, 0].all()):
            raise ValidationError("timelines: a patient has no observation; expected at least one")

    def _doses(self, doses: np.ndarray | torch.Tensor | Sequence[str], n: int,
               steps: int | None) -> torch.Tensor:
        """Validate doses: ``(P, R)``, ``(P, H, R)``, or therapy names for everyone."""
        therapies = self.config.therapies
        if isinstance(doses, (str, RegimenPlan)):
            # Regimen text in the package's one grammar, laid out per 21-day cycle (a plan
            # with schedules and counts; for ``predict``, its first cycle).
            plan = parse_plan(doses, "doses")
            laid = plan.cycle_doses(1 if steps is None else steps)
            doses = np.array(np.broadcast_to(laid[0] if steps is None else laid,
                                             (n, *laid.shape[(1 if steps is None else 0):])))
        elif isinstance(doses, (list, tuple)) and doses and all(
                isinstance(d, str) for d in doses):
            # Therapy names (the grammar's words), each given in full every step.
            given = {t for i, d in enumerate(doses)
                     for t in parse_therapy_set(d, f"doses[{i}]")}
            doses = np.tile([float(t in given) for t in therapies], (n, 1))
        try:
            value = torch.as_tensor(np.asarray(doses, dtype=np.float32))
        except (TypeError, ValueError):
            raise bad("doses", doses, "dose intensities (patients, [steps,] therapies), "
                      "therapy names, or regimen text such as 'anti_pd1 q3w x4'") from None
        if value.dim() == 2 and steps is not None:
            value = value.unsqueeze(1).expand(-1, steps, -1)
        want = (n, len(therapies)) if steps is None else (n, steps, len(therapies))
        if tuple(value.shape) != want:
            raise ValidationError(f"doses: shape {tuple(value.shape)}; expected {want} (patients, "
                             f"{'' if steps is None else 'steps, '}therapies {list(therapies)})")
        if not bool(torch.isfinite(value).all()) or bool((value < 0).any()) or bool(
                (value > MAX_DOSE_INTENSITY).any()):
            worst = value[~(torch.isfinite(value) & (value >= 0)
                            & (value <= MAX_DOSE_INTENSITY))][:3].tolist()
            raise bad("doses", worst, "finite, non-negative dose intensities (1.0 = one "
                      f"standard cycle) of at most {MAX_DOSE_INTENSITY:g}")
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
                raise ValidationError(f"dt: {dt!r}; expected days > 0 as a number or a ({n},) "
                                 "array") from None
        if value.dim() == 0:
            value = value.expand(n)
        if tuple(value.shape) != (n,):
            raise ValidationError(f"dt: shape {tuple(value.shape)}; expected a number or ({n},) "
                             "days, one per patient")
        wrong = ~(torch.isfinite(value) & (value > 0) & (value <= MAX_DT_DAYS))
        if bool(wrong.any()):
            first = int(torch.nonzero(wrong)[0, 0])
            shown = dt if np.ndim(dt) == 0 else f"{float(value[first])} at patient {first}"
            raise bad("dt", shown, f"days > 0 and <= {MAX_DT_DAYS}")
        return value.clone()

    # ------------------------------------------------------------------ fit
    def fit(self, train, val=None, train_config: TrainConfig | None = None, *,
            truth_train=None, truth_val=None, seed: int = 0,
            on_epoch: Callable[[int, EpochRecord], None] | None = None) -> WorldModel:
        """Train every member on ``train``, early-stopping on ``val``.

        Parameters
        ----------
        train, val
            :class:`~.timelines.Timelines`, or a registered AnnData of a user's cohort
            (biopsies, optional ``uns["imaging"]`` and ``uns["therapy_cycles"]``). Without
            ``val``, 15% of the training patients (by a hash of the id) are held out.
        train_config
            Optimizer and loss settings.
        truth_train, truth_val
            ImmuneSim's hidden state on the points' grid (:class:`~.synthetic.GridTruth`)
            for privileged training; without it the members learn from observations alone
            (what real data allows).
        seed
            Seed of the bootstrap resamples, batches and input dropout.
        on_epoch
            ``on_epoch(member, record)`` after every epoch.
        """
        if train_config is not None and not isinstance(train_config, TrainConfig):
            raise bad("train_config", train_config, "a TrainConfig or None")
        cfg = train_config or TrainConfig()
        seed = validate_seed("seed", seed)
        if on_epoch is not None and not callable(on_epoch):
            raise bad("on_epoch", on_epoch, "a function on_epoch(member, record) or None")
        train = _as_timelines("train", train)
        if truth_train is not None and len(truth_train.valid) != len(train):
            raise bad("truth_train", f"<truth of {len(truth_train.valid)} patients>",
                      f"the hidden truth of the {len(train)} training patients")
        if val is None:
            rows_train, rows_val = _hold_out_validation(train, seed)
            if truth_train is not None:
                truth_val = truth_train.subset(rows_val)
                truth_train = truth_train.subset(rows_train)
            train, val = train.subset(rows_train), train.subset(rows_val)
        else:
            val = _as_timelines("val", val)
            if truth_val is not None and len(truth_val.valid) != len(val):
                raise bad("truth_val", f"<truth of {len(truth_val.valid)} patients>",
                          f"the hidden truth of the {len(val)} validation patients")
        for name, tl in (("train", train), ("val", val)):
            self.check_timelines(tl, name)
        # training_tensors holds an (L, L, R) gap-dose table per patient: bound it first.
        n_bytes = sum(len(t) * t.days.shape[1] ** 2 * (len(self.config.therapies) + 2) * 4
                      for t in (train, val))
        memory_budget("train", f"<{len(train) + len(val)} patients, up to "
                      f"{max(train.days.shape[1], val.days.shape[1])} points each>",
                      2 * n_bytes, "the training tensors")
        if int(train.comp_observed.sum()) == 0:
            raise ValidationError("train: no biopsy in the training timelines")
        privileged = cfg.privileged and truth_train is not None and truth_val is not None
        if not privileged and int(train.lengths.max()) < 2:
            raise ValidationError(
                "train: every patient has a single observation; learning dynamics from "
                "observations alone needs patients with at least two time points (a biopsy "
                "and a later biopsy or scan)")
        self.set_leaf_prior(train)
        center, scale = standardization(
            truth_train.log_cells if privileged else None, train,
            truth_train.alive if privileged else None)
        self.config = replace(self.config, privileged=privileged, conformal_scale=())
        self.history = []
        x_train, x_val = self.inputs(train), self.inputs(val)
        for m, module in enumerate(self.members):
            module.to("cpu")
            module.center.copy_(center)
            module.scale.copy_(scale)
            data_t = training_tensors(module, train, _cpu(x_train),
                                      truth_train if privileged else None, cfg.horizons)
            data_v = training_tensors(module, val, _cpu(x_val),
                                      truth_val if privileged else None, cfg.horizons)
            callback = None if on_epoch is None else (lambda r, m=m: on_epoch(m, r))
            history = train_member(module, data_t, data_v, cfg, seed + 1000 * m,
                                   on_epoch=callback)
            module.to(self.device).eval()
            self.history.append(history)
        return self

    def fine_tune(self, train, val=None, train_config: TrainConfig | None = None, *,
                  seed: int = 0,
                  on_epoch: Callable[[int, EpochRecord], None] | None = None) -> WorldModel:
        """A copy of this model fine-tuned on observations alone; ``self`` is unchanged.

        Unlike :meth:`fit`, the members keep their weights, their standardization and the
        leaf prior (so the latent space keeps its meaning) and learn only from the
        observation likelihood of ``train``: what real longitudinal samples allow (a
        pre-treatment and an on-treatment biopsy under the recorded regimen, say).

        Parameters
        ----------
        train, val
            :class:`~.timelines.Timelines` (or registered AnnData) whose patients have at
            least two time points. Without ``val``, 15% of the patients (by a hash of the
            id) are held out for early stopping.
        train_config
            Optimizer settings; :data:`FINE_TUNE_CONFIG` (up to 40 epochs at half the
            pretraining learning rate in batches of 16, early stopping after 8 epochs
            without progress, no bootstrap, no input dropout) when ``None``.
            ``privileged`` is ignored: there is no hidden truth here.
        seed
            Seed of the batches.
        on_epoch
            ``on_epoch(member, record)`` after every epoch.

        Returns
        -------
        WorldModel
            The fine-tuned copy (its card records ``fine_tuned``: patients and epochs).
        """
        import copy

        if train_config is not None and not isinstance(train_config, TrainConfig):
            raise bad("train_config", train_config, "a TrainConfig or None")
        cfg = replace(train_config or FINE_TUNE_CONFIG, privileged=False)
        seed = validate_seed("seed", seed)
        if on_epoch is not None and not callable(on_epoch):
            raise bad("on_epoch", on_epoch, "a function on_epoch(member, record) or None")
        if self.leaf_prior() is None:
            raise ValidationError("model: not trained yet; fine_tune() starts from a fitted "
                                  "model (use fit() to train from scratch)")
        train = _as_timelines("train", train)
        if val is None:
            rows_train, rows_val = _hold_out_validation(train, seed)
            train, val = train.subset(rows_train), train.subset(rows_val)
        else:
            val = _as_timelines("val", val)
        for name, tl in (("train", train), ("val", val)):
            self.check_timelines(tl, name)
            if int(tl.lengths.max()) < 2:
                raise ValidationError(
                    f"{name}: every patient has a single observation; fine-tuning dynamics "
                    "needs patients with at least two time points")
        tuned = copy.deepcopy(self)
        tuned.history = []
        x_train, x_val = tuned.inputs(train), tuned.inputs(val)
        for m, module in enumerate(tuned.members):
            module.to("cpu")
            data_t = training_tensors(module, train, _cpu(x_train), None, cfg.horizons)
            data_v = training_tensors(module, val, _cpu(x_val), None, cfg.horizons)
            callback = None if on_epoch is None else (lambda r, m=m: on_epoch(m, r))
            tuned.history.append(train_member(module, data_t, data_v, cfg, seed + 1000 * m,
                                              on_epoch=callback))
            module.to(tuned.device).eval()
        tuned.card = {**self.card, "fine_tuned": {
            "patients": len(train), "val_patients": len(val),
            "epochs": [len(h) for h in tuned.history], "config": cfg.to_dict()}}
        return tuned

    def set_leaf_prior(self, train: Timelines) -> None:
        """Set the within-block split prior from training timelines."""
        from immunegym.world_model.timelines import within_block_prior

        prior = tuple(float(v) for v in within_block_prior(train))
        self.config = replace(self.config, leaf_prior=prior)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def filter(self, tl: Timelines) -> list[LatentState]:
        """Each member's filtered state at each patient's last point (``(P, ...)``)."""
        self.check_timelines(tl)
        x = self.inputs(tl)
        last = tl.valid.sum(1).to(self.device) - 1
        rows = torch.arange(len(tl), device=self.device)
        return [module.filter(x).index(rows, last) for module in self.members]

    def _check_size(self, tl: Timelines, n_samples: int, n_steps: int, field: str,
                    value: object) -> None:
        """Refuse a rollout whose sampled paths would not fit the memory limit."""
        k = len(self.config.types)
        # compositions and burden, the per-step list stacked once more, and the numpy copy
        # a caller usually takes: about 3 copies of (S, P, H, K + 1) float32.
        n_bytes = 3 * 4 * n_samples * len(tl) * n_steps * (k + 1)
        memory_budget(field, value, n_bytes, f"{n_samples} x {len(tl)} x {n_steps} sampled "
                      "states")

    @torch.no_grad()
    def estimate(self, tl: Timelines) -> Prediction:
        """Today's state: the filter's estimate at each patient's last point (``h = 0``).

        The composition is the state's (no lab bias); ensemble means, members stacked.
        """
        return self._state_prediction([s.z for s in self.filter(tl)],
                                      self.inputs(tl).lab_index)

    @torch.no_grad()
    def smooth(self, tl: Timelines) -> Smoothed:
        """The state at every time point of ``tl`` from the whole record (past and future).

        To reconstruct a day without a biopsy (a left-out or a missed one), give ``tl`` a
        point on that day without a composition (``comp_observed`` False).
        """
        self.check_timelines(tl)
        x = self.inputs(tl)
        comps, burdens = [], []
        for module in self.members:
            state = module.smooth(x)
            comps.append(torch.softmax(module.composition_logits(state.z), -1))
            burdens.append(module.sod_readout(state.z))
        valid = tl.valid.to(self.device)
        comp = torch.stack(comps).mean(0) * valid.unsqueeze(-1)
        return Smoothed(comp, torch.stack(burdens).mean(0) * valid)

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
            cycle, at most :data:`MAX_DOSE_INTENSITY`), a list of therapy names given to
            everyone, or regimen text (:func:`~immunegym.planning.parse_plan`; its first
            cycle).
        dt
            Days ahead (> 0): one number for everyone, or a ``(P,)`` array or tensor with
            each patient's own horizon (irregular gaps, e.g. to a left-out biopsy). Pass
            the dose intensity over each patient's own interval in ``doses``
            (:func:`~.events.interval_dose`).
        """
        self.check_timelines(tl)
        step = self._dt(dt, len(tl)).to(self.device) / CYCLE_DAYS
        dose = self._doses(doses, len(tl), None)
        states = self.filter(tl)
        cancer = self.cancer_onehot(tl)
        ahead = [advance(m, s.z, s.c, step, dose, cancer, max_substeps=64)[0]
                 for m, s in zip(self.members, states, strict=True)]
        return self._state_prediction(ahead, self.inputs(tl).lab_index)

    def _state_prediction(self, zs: list[torch.Tensor], lab: torch.Tensor) -> Prediction:
        """Each member's observation model at its state ``zs[m]``, with the logits of the
        state's own composition (no lab bias); ensemble means, members stacked."""
        preds = [module.observe(z, lab) for module, z in zip(self.members, zs, strict=True)]
        logits = torch.stack([m.composition_logits(z)
                              for m, z in zip(self.members, zs, strict=True)])
        stacked = NextState(logits, *(torch.stack([getattr(p, f) for p in preds])
                                      for f in ("log_concentration", "burden_mean",
                                                "burden_log_sigma")))
        return Prediction(stacked.mean_composition.mean(0), stacked.burden_mean.mean(0),
                          stacked)

    @torch.no_grad()
    def rollout(self, tl: Timelines, doses: np.ndarray | torch.Tensor | Sequence[str],
                n_steps: int | None = None, *, n_samples: int = 1, noise: Noise = "none",
                seed: int = 0, dt: float = CYCLE_DAYS) -> Rollout:
        """Roll the state ``H`` steps of ``dt`` days forward from each last observation.

        Parameters
        ----------
        tl
            Observed history.
        doses
            ``(P, H, R)`` per-step dose intensities, ``(P, R)`` repeated for ``n_steps``,
            therapy names given every step (``["anti_pd1", "chemo"]``), or regimen text in
            the package's grammar laid out one step per cycle
            (``"anti_pd1+anti_ctla4 x4 -> anti_pd1"``: a bare ``"chemo"`` is its standard
            course, 4 cycles).
        n_steps
            ``H`` (1 to :data:`MAX_ROLLOUT_STEPS`); taken from ``doses`` when it is
            ``(P, H, R)``.
        n_samples
            Trajectories per patient ``S`` (1 to :data:`MAX_SAMPLES`; the paths must fit
            the memory limit, :func:`immunegym.validation.memory_budget`).
        noise
            ``"none"``: each member's mean path (``S`` is the number of members);
            ``"aleatoric"``: sampled state paths of the first member; ``"epistemic"``: mean
            paths of members drawn per sample; ``"both"``: sampled paths of members drawn
            per sample.
        seed
            Seed of the sampling generator.
        dt
            Days per step.
        """
        choice("noise", noise, NOISE_MODES)
        n_samples = integer("n_samples", n_samples, low=1, high=MAX_SAMPLES)
        seed = validate_seed("seed", seed)
        dt = number("dt", dt, low=0.0, high=MAX_DT_DAYS, low_open=True)
        self.check_timelines(tl)
        if n_steps is None:
            given = (None if isinstance(doses, (str, list, tuple, RegimenPlan))
                     else np.asarray(doses))
            if given is None or given.ndim != 3:
                raise bad("n_steps", None, "the number of steps (required unless doses is "
                          "(patients, steps, therapies))")
            n_steps = given.shape[1]
        n_steps = integer("n_steps", n_steps, low=1, high=MAX_ROLLOUT_STEPS)
        if noise == "none":  # one mean path per member, whatever n_samples says
            self._check_size(tl, len(self.members), n_steps, "n_steps", n_steps)
        else:
            self._check_size(tl, n_samples, n_steps, "n_samples", n_samples)
        dose = self._doses(doses, len(tl), int(n_steps))
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
        states = self.filter(tl)
        cancer = self.cancer_onehot(tl)
        n_p, k = len(tl), len(self.config.types)
        comps = torch.zeros(n_samples, n_p, int(n_steps), k, device=self.device)
        burden = torch.zeros(n_samples, n_p, int(n_steps), device=self.device)
        sampled = noise in ("aleatoric", "both")
        for m in member.unique().tolist():
            which = torch.nonzero(member == m).flatten()
            c, b = self._rollout_member(self.members[m], states[m], cancer, dose, len(which),
                                        dt, sampled, generator)
            comps[which], burden[which] = c, b
        last = tl.valid.sum(1) - 1
        start_day = tl.days[torch.arange(n_p), last].to(self.device)
        steps = torch.arange(1, int(n_steps) + 1, device=self.device) * dt
        return Rollout(start_day[:, None] + steps, comps, burden, member)

    def _rollout_member(self, module: LatentWorldModule, state: LatentState,
                        cancer: torch.Tensor, dose: torch.Tensor, n_rep: int, dt: float,
                        sampled: bool, generator: torch.Generator
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n_rep`` paths of every patient with one member: ``(n_rep, P, H, K)``, ``(n_rep,
        P, H)``. A sampled path's deviation from the member's mean path is scaled by the
        horizon's conformal factor."""
        n_p, n_steps = dose.shape[0], dose.shape[1]
        rep = torch.arange(n_p, device=self.device).repeat(n_rep)
        z_mean, c_mean = state.z[rep], state.c[rep]
        z, c = z_mean, c_mean
        if sampled:
            eps = torch.randn(z.shape, generator=generator, device=self.device)
            z = z + torch.exp(state.log_sigma[rep]) * eps
        tau = torch.full((len(rep),), dt / CYCLE_DAYS, device=self.device)
        scales = self.config.conformal_scale
        comps, burdens = [], []
        for h in range(n_steps):
            step_dose = dose[rep, h]
            z_mean, c_mean, _ = module.step(z_mean, c_mean, tau, step_dose, cancer[rep])
            if sampled:
                eps = torch.randn(z.shape, generator=generator, device=self.device)
                z, c, _ = module.step(z, c, tau, step_dose, cancer[rep], noise=eps)
                s = scales[min(h, len(scales) - 1)] if scales else 1.0
                out = z_mean + s * (z - z_mean)
            else:
                out = z_mean
            comps.append(torch.softmax(module.composition_logits(out), -1))
            burdens.append(module.sod_readout(out))
        comp = torch.stack(comps, 1).reshape(n_rep, n_p, n_steps, -1)
        return comp, torch.stack(burdens, 1).reshape(n_rep, n_p, n_steps)

    @torch.no_grad()
    def calibrate(self, tl: Timelines, truth, horizons: int = 6,
                  n_samples: int = INTERVAL_SAMPLES, seed: int = 0) -> tuple[float, ...]:
        """Fit the per-horizon conformal scales on validation patients with known truth.

        For every point of ``tl`` with the patient alive ``h`` cycles on, ``n_samples``
        sampled paths under the doses actually given are compared with the true composition
        and burden; the scale of horizon ``h`` is the smallest one whose central 90%
        intervals (sample quantiles of ``n_samples`` paths) cover 90% of the true values.
        Intervals read from the same number of paths are calibrated (see
        :data:`INTERVAL_SAMPLES`). Returns the scales (also stored in the config).
        """
        self.check_timelines(tl)
        horizons = integer("horizons", horizons, low=1, high=MAX_ROLLOUT_STEPS)
        n_samples = integer("n_samples", n_samples, low=2, high=MAX_SAMPLES)
        seed = validate_seed("seed", seed)
        alive = np.asarray(truth.alive)
        if alive.shape[:2] != tuple(tl.valid.shape):
            raise bad("truth", f"<truth of shape {alive.shape[:2]}>",
                      f"the hidden truth on the timelines' points {tuple(tl.valid.shape)}")
        log_cells, log_sod = np.asarray(truth.log_cells), np.asarray(truth.log_sod)
        if alive.shape[2] <= horizons:
            raise ValidationError(f"horizons: {horizons}; the truth holds only "
                             f"{alive.shape[2] - 1} horizons")
        rows, days = np.nonzero(alive[:, :, horizons] & tl.valid.numpy())
        if len(rows) == 0:
            raise ValidationError("calibrate: no point has the patient alive "
                             f"{horizons} cycles later")
        ctx = tl.subset(rows).truncate(tl.days[rows, days].numpy())
        doses = grid_doses(tl.cycle_doses[rows], tl.days[rows, days][:, None], horizons)[:, 0]
        self.config = replace(self.config, conformal_scale=())
        cells = np.expm1(log_cells[rows, days, 1:horizons + 1].astype(np.float64))
        true_c = cells / np.clip(cells.sum(-1, keepdims=True), 1.0, None)
        true_b = log_sod[rows, days, 1:horizons + 1]
        mean = self.rollout(ctx, doses.numpy(), noise="none")
        samples = self.rollout(ctx, doses.numpy(), n_samples=n_samples, noise="both",
                               seed=seed)
        m_c = mean.compositions.mean(0).cpu().numpy()
        m_b = mean.burden.mean(0).cpu().numpy()
        # Sample quantiles are equivariant under a positive scale and a shift, so the
        # interval of m + s * d is m + s * (the interval of d): one quantile per horizon.
        q_c = np.quantile(samples.compositions.cpu().numpy() - m_c, [0.05, 0.95], axis=0)
        q_b = np.quantile(samples.burden.cpu().numpy() - m_b, [0.05, 0.95], axis=0)
        scales = []
        for h in range(horizons):
            def coverage(s: float, h: int = h) -> float:
                lo_c, hi_c = m_c[:, h] + s * q_c[0, :, h], m_c[:, h] + s * q_c[1, :, h]
                lo_b, hi_b = m_b[:, h] + s * q_b[0, :, h], m_b[:, h] + s * q_b[1, :, h]
                inside = np.concatenate([((true_c[:, h] >= lo_c) & (true_c[:, h] <= hi_c)),
                                         ((true_b[:, h] >= lo_b) & (true_b[:, h] <= hi_b))[
                                             :, None]], 1)
                return float(inside.mean())
            lo, hi = 0.05, 20.0
            for _ in range(30):
                mid = (lo * hi) ** 0.5
                lo, hi = (mid, hi) if coverage(mid) < CONFORMAL_LEVEL else (lo, mid)
            scales.append(float(hi))
        self.config = replace(self.config, conformal_scale=tuple(scales))
        return tuple(scales)

    def actual_doses(self, tl: Timelines, start_day: torch.Tensor, n_steps: int,
                     dt: float = CYCLE_DAYS) -> torch.Tensor:
        """``(P, H, R)`` dose intensities each patient actually got in ``H`` steps from a day."""
        n_steps = integer("n_steps", n_steps, low=1, high=MAX_ROLLOUT_STEPS)
        dt = number("dt", dt, low=0.0, high=MAX_DT_DAYS, low_open=True)
        offsets = torch.arange(n_steps + 1, dtype=torch.float32) * dt
        edges = torch.as_tensor(start_day, dtype=torch.float32)[:, None] + offsets
        return interval_dose(tl.cycle_doses.cpu(), edges[:, :-1], edges[:, 1:])

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str], card: dict[str, object] | None = None, *,
             allow_shipped: bool = False) -> Path:
        """Write the checkpoint directory (see :mod:`.checkpoint`), atomically.

        Parameters
        ----------
        path
            Checkpoint directory (replaced as a whole if it exists).
        card
            Training record for ``training.json`` and the model card (default: the
            model's own).
        allow_shipped
            Allow writing into the package's pretrained folders (maintainers only: the
            CLI's ``--replace-shipped``). Without it the shipped defaults are read-only.

        Raises
        ------
        ValidationError
            A shipped folder without ``allow_shipped``, an unwritable path, or a card that
            is not JSON; nothing is written then.
        """
        from immunegym.world_model.checkpoint import save_checkpoint

        if card is not None and not isinstance(card, dict):
            raise bad("card", card, "a dict (the training record) or None")
        return save_checkpoint(self, path, card if card is not None else self.card,
                               allow_shipped=allow_shipped)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *,
             device: str = "cpu") -> WorldModel:
        """Read a checkpoint directory; the pretrained default when ``path`` is None.

        ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``. The checkpoint is
        checked before use (:func:`~.checkpoint.load_checkpoint`).
        """
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
        return (f"WorldModel(members={len(self.members)}, d_hidden={c.d_hidden}, "
                f"d_dynamics={c.d_dynamics}, params/member={self.num_parameters():,}, "
                f"privileged={self.config.privileged}, device={self.device})")


def _hold_out_validation(train: Timelines, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the training and the validation patients: 15% held out by a hash of the id."""
    from immunegym.world_model.timelines import split_patients

    split = split_patients(train.patient_ids, test_fraction=0.0, val_fraction=0.15, seed=seed)
    rows_train, rows_val = np.nonzero(split == "train")[0], np.nonzero(split == "val")[0]
    if len(rows_val) == 0 or len(rows_train) == 0:
        raise ValidationError(f"train: {len(train)} patients are too few to hold out "
                              "validation patients; pass val explicitly")
    return rows_train, rows_val


def _cpu(x):
    return type(x)(**{k: v.cpu() for k, v in vars(x).items()})


def _resolve_device(device: str | torch.device) -> torch.device:
    return torch.device(validate_device("device", device))


def _as_timelines(field: str, value: object) -> Timelines:
    """``value`` as Timelines: built from a registered AnnData, refused otherwise."""
    from immunegym.world_model.timelines import build_timelines

    if isinstance(value, Timelines):
        return value
    if hasattr(value, "obs") and hasattr(value, "uns"):
        return build_timelines(value)  # type: ignore[arg-type]
    raise bad(field, f"<{type(value).__name__}>", "Timelines or an AnnData registered with "
              "immunegym.data.setup_anndata")


def parameter_count(c: LatentConfig) -> int:
    """Parameters of one :class:`~.latent.LatentWorldModule` of config ``c`` (no build)."""
    def mlp(d_in: int, d_hidden: int, d_out: int) -> int:
        return d_in * d_hidden + d_hidden + d_hidden * d_hidden + d_hidden \
            + d_hidden * d_out + d_out

    k, r, h = c.n_types, c.n_therapies, c.d_hidden
    terms = 1 + r + c.n_pairs
    gru = 2 * (3 * h * h) + 2 * (3 * h)
    return (c.input_features * h + h + 2 * gru
            + mlp(h + c.obs_features, h, 2 * k + c.d_context)
            + mlp(2 * h + c.obs_features, h, 2 * k + c.d_context)
            + mlp(k + 1 + c.d_context + c.n_cancer_types, c.d_dynamics,
                  k * terms + k + c.d_context * (1 + r))
            + mlp(k, 32, 1) + (c.n_labs + 1) * k + (c.n_labs + 1) + 1)
