"""What the single and vector environments share: building the engine, spaces, infos, traces."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import torch

from immunegym.data.vocab import THERAPIES
from immunegym.env.engine import Engine, StepOutcome
from immunegym.env.patients import PatientBank
from immunegym.env.scenario import Scenario
from immunegym.env.spaces import ActionCodec, ObservationCodec
from immunegym.sim.toxicity import STOP_TOXICITY
from immunegym.validation import (
    ValidationError,
    bad,
    boolean,
    integer,
    known_keys,
    number,
)
from immunegym.validation import device as check_device
from immunegym.validation import seed as check_seed


class _RenderModes(list):
    """The render modes. ``in`` holds for any non-string, so that ``gym.make`` hands a bad
    ``render_mode`` such as ``3`` to the constructor, which names it (Gymnasium's own code
    would fail on ``3.endswith``); strings are matched as usual."""

    def __contains__(self, item: object) -> bool:
        return not isinstance(item, str) or list.__contains__(self, item)


RENDER_MODES = _RenderModes(["rgb_array", "ansi"])
ENV_ARGUMENTS = ("render_mode", "scenario", "device", "model", "bank", "observation_noise",
                 "world_options")
"""Keywords of both environments besides the :class:`~.scenario.Scenario` fields."""
WORLD_OPTIONS = ("chunk_size", "sample", "max_sod_mm")
"""Keys of ``world_options`` (:class:`~.world_core.WorldCore` arguments)."""
MAX_CHUNK_SIZE = 2**20


def check_reset_seed(seed: Any) -> int | None:
    """A reset seed: ``None``, an int, or a non-empty list whose first entry is used."""
    if isinstance(seed, (list, tuple, np.ndarray)):
        entries = list(np.asarray(seed, dtype=object).ravel()) if isinstance(
            seed, np.ndarray) else list(seed)
        if not entries or (isinstance(seed, np.ndarray) and seed.ndim != 1):
            raise bad("seed", seed, "None, an integer, or a non-empty list of integers "
                      "(the first is used)")
        checked = [check_seed(f"seed[{i}]", s, optional=True) for i, s in enumerate(entries)]
        return checked[0]
    return check_seed("seed", seed, optional=True)


def check_env_arguments(simulator: str, *, render_mode: Any, scenario: Any, device: Any,
                        model: Any, bank: Any, observation_noise: Any, world_options: Any,
                        scenario_kwargs: dict[str, Any],
                        extra_arguments: tuple[str, ...] = ()) -> dict[str, Any]:
    """Validate the constructor's keywords before anything is built.

    Returns the normalized ``device``, ``observation_noise`` and ``world_options``.
    """
    # The constructor's own keywords never reach here; they are listed for "did you mean".
    known_keys("env argument", scenario_kwargs,
               [*(f.name for f in fields(Scenario)), *ENV_ARGUMENTS, *extra_arguments])
    if render_mode is not None and (not isinstance(render_mode, str)
                                    or not list.__contains__(RENDER_MODES, render_mode)):
        raise bad("render_mode", render_mode, f"one of {list(RENDER_MODES)} or None")
    if scenario is not None and not isinstance(scenario, Scenario):
        raise bad("scenario", scenario, "a Scenario or None")
    resolved = check_device("device", device)
    if model is not None:
        from immunegym.world_model.model import WorldModel

        if not isinstance(model, WorldModel):
            raise bad("model", model, "an immunegym.world_model.WorldModel or None (the "
                      "pretrained default)")
    if bank is not None and not isinstance(bank, PatientBank):
        raise bad("bank", bank, "an immunegym.env.PatientBank or None")
    options = known_keys("world_options", world_options, WORLD_OPTIONS)
    if options and simulator != "world":
        raise bad("world_options", world_options, "None: ImmuneSim-v0 has no world model")
    if "chunk_size" in options:
        options["chunk_size"] = integer("world_options['chunk_size']", options["chunk_size"],
                                        low=1, high=MAX_CHUNK_SIZE)
    if "sample" in options:
        options["sample"] = boolean("world_options['sample']", options["sample"])
    if "max_sod_mm" in options:
        options["max_sod_mm"] = number("world_options['max_sod_mm']", options["max_sod_mm"],
                                       low=0.0, low_open=True)
    return {"device": resolved,
            "observation_noise": boolean("observation_noise", observation_noise),
            "world_options": options or None}


class EnvParts:
    """The engine plus the codecs, for ``n`` rows of one scenario.

    ``scenario_kwargs`` override :class:`~.scenario.Scenario` fields (e.g. ``horizon=8``).
    Every argument is validated (:func:`check_env_arguments`) before anything is built.
    """

    def __init__(self, simulator: str, n: int, scenario: Scenario | None, *, device: str,
                 model, bank, observation_noise: bool, world_options: dict | None,
                 render_mode: str | None, scenario_kwargs: dict[str, Any],
                 extra_arguments: tuple[str, ...] = ()) -> None:
        checked = check_env_arguments(
            simulator, render_mode=render_mode, scenario=scenario, device=device, model=model,
            bank=bank, observation_noise=observation_noise, world_options=world_options,
            scenario_kwargs=scenario_kwargs, extra_arguments=extra_arguments)
        scenario = (scenario or Scenario()).updated(**scenario_kwargs)
        self.scenario = scenario
        self.engine = Engine(simulator, scenario, n, model=model, bank=bank, **checked)
        self.actions = ActionCodec(scenario)
        self.observations = ObservationCodec(scenario, self.engine.bank.programs.shape[2])
        self.trace = Trace()
        self.render_mode = render_mode
        self._engine_seeded = False

    def seed_engine(self, seed: int | None, np_random: np.random.Generator) -> None:
        """Seed the engine with ``seed``; on a first reset without one, from ``np_random``
        (which Gymnasium seeds from entropy), so unseeded runs differ and seeded ones repeat."""
        if seed is not None:
            self.engine.seed(seed)
        elif not self._engine_seeded:
            self.engine.seed(int(np_random.integers(2**31 - 1)))
        self._engine_seeded = True

    def render(self):
        """Row 0's course as an RGB frame or text, per ``render_mode`` (None otherwise)."""
        from immunegym.env.render import render_ansi, render_rgb

        if self.render_mode == "rgb_array":
            return render_rgb(self.trace, self.scenario)
        if self.render_mode == "ansi":
            return render_ansi(self.trace, self.scenario)
        return None

    def patients(self, options: dict[str, Any], n: int) -> torch.Tensor | None:
        """Bank rows pinned by ``options["patient"]`` (one id/row, or one per env)."""
        chosen = options.get("patient")
        if chosen is None:
            return None
        field = "options['patient']"
        bank = self.engine.bank
        if isinstance(chosen, (list, tuple, np.ndarray)):
            if isinstance(chosen, np.ndarray) and chosen.ndim != 1:
                raise bad(field, chosen, f"one patient for all envs or a list of {n} (one "
                          "per env)")
            items = list(chosen)
            if len(items) != n:
                raise ValidationError(f"{field}: got {len(items)} patients; expected one "
                                      f"for all or one per env ({n})")
            rows = [bank.index_of(p, field=f"{field}[{i}]") for i, p in enumerate(items)]
        else:
            rows = [bank.index_of(chosen, field=field)] * n
        return torch.as_tensor(rows, dtype=torch.long, device=self.engine.device)

    def observation(self):
        return self.observations.encode(self.engine.observation_parts())

    def infos(self, outcome: StepOutcome | None) -> dict[str, np.ndarray]:
        """Per-row info arrays (``(n, ...)``)."""
        e = self.engine
        allowed = e.allowed().cpu().numpy()
        info = {
            "action_mask": self.actions.mask(allowed),
            # Copies: on CPU .numpy() shares memory with tensors the next step overwrites.
            "patient": e.patient.cpu().numpy().copy(),
            "cycle": e.clinical.cycle.cpu().numpy().copy(),
            "day": (e.clinical.cycle * self.scenario.cycle_days).cpu().numpy(),
            "sod_mm": e.sod_true.cpu().numpy().astype(np.float64),
            "best_response": e.best_response().cpu().numpy(),
        }
        tox = e.tox
        info.update(
            # ImmuneSim's toxicity state and protocol consequences (both simulators).
            held=(tox.hold_until > e._day()[:, None]).cpu().numpy(),
            discontinued=(tox.stop_reason >= STOP_TOXICITY).cpu().numpy(),
            dose_factor=tox.dose_factor.cpu().numpy().copy(),
            neutrophils=tox.anc.cpu().numpy().astype(np.float64),
            toxicity_load=tox.load.cpu().numpy().astype(np.float64),
        )
        if outcome is None:
            zeros = np.zeros(e.n)
            info.update(cost=zeros, given=np.zeros((e.n, len(THERAPIES)), np.float32),
                        died=zeros.astype(bool), treatment_death=zeros.astype(bool),
                        progressed=zeros.astype(bool), irae=zeros.astype(bool),
                        delayed=zeros)
        else:
            info.update(cost=outcome.cost.cpu().numpy().astype(np.float64),
                        given=outcome.given.cpu().numpy().copy(),
                        died=outcome.died.cpu().numpy().copy(),
                        treatment_death=outcome.treatment_death.cpu().numpy().copy(),
                        progressed=outcome.progressed.cpu().numpy().copy(),
                        irae=outcome.irae.cpu().numpy().copy(),
                        delayed=outcome.delayed.cpu().numpy().astype(np.float64))
        return info

    def record(self, reset: bool) -> None:
        """Keep row 0's course for rendering."""
        e = self.engine
        if reset:
            self.trace = Trace(patient=str(e.bank.patient_id[int(e.patient[0])]),
                               cancer_type=str(e.bank.cancer_type[int(e.patient[0])]))
        self.trace.append(int(e.clinical.cycle[0]) * self.scenario.cycle_days,
                          e.comp_obs[0].cpu().numpy(), float(e.sod_true[0]),
                          float(e.sod_scan[0]), e.clinical.last_given[0].cpu().numpy(),
                          bool(e.tox.irae_count[0] > 0), bool(e.clinical.alive[0]),
                          bool(e.clinical.progressed[0]))


class Trace:
    """Row 0's course: one entry per cycle (for rendering)."""

    def __init__(self, patient: str = "", cancer_type: str = "") -> None:
        self.patient, self.cancer_type = patient, cancer_type
        self.days: list[int] = []
        self.compositions: list[np.ndarray] = []
        self.sod_true: list[float] = []
        self.sod_scan: list[float] = []
        self.given: list[np.ndarray] = []
        self.irae: list[bool] = []
        self.alive: list[bool] = []
        self.progressed: list[bool] = []

    def append(self, day, composition, sod_true, sod_scan, given, irae, alive,
               progressed) -> None:
        self.days.append(day)
        self.compositions.append(composition)
        self.sod_true.append(sod_true)
        self.sod_scan.append(sod_scan)
        self.given.append(given)
        self.irae.append(irae)
        self.alive.append(alive)
        self.progressed.append(progressed)


def row(info: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    """The info of row ``i`` (scalars as Python/numpy scalars)."""
    return {k: (v[i].item() if v[i].ndim == 0 else v[i].copy()) for k, v in info.items()}
