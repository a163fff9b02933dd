"""The single environments: ``ImmuneWorld-v0`` (learned world model) and ``ImmuneSim-v0``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from immunegym.env.base import RENDER_MODES, EnvParts, check_reset_seed, row
from immunegym.env.scenario import Scenario
from immunegym.validation import known_keys

RESET_OPTIONS = ("patient",)
"""Keys of ``reset(options=...)`` of the single environments."""


class ImmuneWorldEnv(gym.Env):
    """Treat one virtual cancer patient, one cycle at a time, inside the learned world model.

    ## Description
    A patient arrives with a baseline biopsy (the composition of the tumor over 20 cell
    types of the unified ontology) and a baseline scan (sum of target-lesion diameters,
    SOD). Every step is one treatment cycle (21 days by default): the agent chooses the
    therapies and dose levels, the pretrained latent state-space world model carries the
    tumor immune microenvironment's state through the cycle (the filter reads the baseline
    biopsy and scan at reset; each step is one ensemble member's mean dynamics, the member
    drawn per episode; ``world_options={"sample": True}`` samples the process noise
    instead), and the agent sees the next biopsy and scan. ``ImmuneSim-v0`` has the same
    interface over the mechanistic ground truth.

    ## Action space
    ``Scenario.action_type`` (``gym.make(..., action_type=...)``):

    * ``"multidiscrete"`` (default): ``MultiDiscrete([3, 3, 3, 3, 3])``, a dose level per
      therapy in the order ``anti_pd1, anti_ctla4, chemo, radio, targeted``; levels are
      ``dose_levels = (0, 0.5, 1)`` standard cycles (pembrolizumab 200 mg, ipilimumab
      3 mg/kg, platinum doublet, 8 Gy x 3 SBRT, daily oral targeted therapy);
    * ``"multibinary"``: ``MultiBinary(5)``, each therapy on at the standard dose or off;
    * ``"menu"``: ``Discrete(10)``, a regimen from ``Scenario.menu`` (none, anti_pd1,
      anti_ctla4, anti_pd1+anti_ctla4, chemo, chemo+anti_pd1, radio, radio+anti_pd1,
      targeted, targeted+anti_pd1); a custom ``menu`` lists distinct therapy sets in the
      package's regimen grammar (:func:`immunegym.regimen_grammar.parse_therapy_set`:
      ``"anti_pd1+chemo"``, ``"PD1"``, ``"Combo"``, ``"none"``), each at the standard dose.

    ``info["action_mask"]`` (the action's shape) marks what the course caps and the
    protocol rules of ImmuneSim's toxicity model allow (:mod:`immunegym.sim.toxicity`, the
    same rules in both simulators): a grade 3 immune-related adverse event (irAE) holds
    checkpoint inhibitors 42 days, a grade 4, recurrent or organ-limited one stops them for
    good; chemotherapy waits for neutrophils >= 1.5 x 1e9/L (re-checked weekly), is reduced
    by 25% after febrile neutropenia, prolonged grade 4 neutropenia or its own grade >= 3
    event and stopped after two reductions; targeted therapy is held and reduced after its
    own events; a patient whose toxicity load reaches 2 overlapping severe events is unfit
    for any further treatment. Ipilimumab is capped at 4 doses, chemotherapy at 6 cycles,
    radiotherapy at 2 courses. Doses above the standard add toxicity, not efficacy
    (checkpoint occupancy saturates). A forbidden therapy is withheld, not an error;
    ``info["given"]`` says what was actually given (delayed or reduced doses included). The
    action is the cycle's order: a chemotherapy dose still delayed at the cycle's end lapses,
    so nothing is given that the current action does not ask for.

    ## Observation space
    ``Box(44,)`` float32 (``observation_type="flat"``), or a ``Dict`` of the same fields
    (``"dict"``)::

        composition (20)       fractions over the fine cell types at the last biopsy
        programs (8)           composition-weighted program scores at the last biopsy
                               that measured them (0 if none)
        programs_observed (1)  1 if programs were measured
        burden (1)             log1p SOD (mm) at the last scan
        burden_change (1)      burden minus baseline burden
        time (1)               cycles elapsed / horizon
        biopsy_age (1)         cycles since the last biopsy / horizon
        last_therapy (5)       dose levels given last cycle
        exposure (5)           cumulative dose (standard cycles)
        irae (1)               1 after a grade >= 3 immune-related adverse event

    Biopsies count ``biopsy_cells`` cells (1000; 0 for noise-free compositions), scans have
    ImmuneSim's 5% reader noise (``imaging_cv``; ``observation_noise=False`` turns both off);
    biopsies come every ``biopsy_every`` cycles (1), scans every ``scan_every`` cycles (2).

    ## Rewards
    Per cycle, with weights ``Scenario.reward``::

        tumor * (log1p SOD before - log1p SOD after)   tumor control (1.0)
        + survival * alive                             (0.05 per cycle alive)
        - death * died                                 (5.0)
        - progression * RECIST progression             (1.0)
        - toxicity * cost                              (0.0: cost is reported apart)

    ``info["cost"]`` counts grade >= 3 treatment-related adverse events this cycle (irAEs,
    grade 3-4 neutropenia, febrile neutropenia, non-immune events of chemotherapy,
    radiotherapy and targeted therapy), for constrained RL. ``info`` also has ``irae``,
    ``delayed`` (chemotherapy doses delayed this cycle), ``held`` and ``discontinued`` (per
    therapy), ``dose_factor`` (per therapy, after reductions), ``neutrophils`` (x 1e9/L),
    ``toxicity_load``, ``died`` and ``treatment_death``.

    ## Starting state
    A patient drawn uniformly from a bank of ``bank_size`` (512) ImmuneSim virtual patients
    of the cancer-type mix (all nine calibrated types by default), or of a cohort's first
    biopsies (``patient_source="cohort.h5ad"``: digital twins). ``reset(options={"patient":
    id_or_row})`` pins one.

    ## Episode end
    Terminated on death (ImmuneSim's tumor-burden hazard applied to the SOD, or a
    treatment-related death: fatal irAE, febrile neutropenia, overlapping toxicities) or at
    RECIST 1.1 progression (target-lesion SOD up >= 20% and >= 5 mm over the nadir at a
    scan; an irradiated lesion leaves the target sum; ``terminate_on_progression=False``
    keeps going). Truncated after ``horizon`` (16) cycles.

    ## Arguments
    ``gym.make("ImmuneWorld-v0", render_mode=None, device="cpu", model=None, bank=None,
    observation_noise=True, world_options=None, **scenario_fields)``: ``device`` is
    ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (a device this machine has);
    ``model`` a :class:`~immunegym.world_model.WorldModel` (the pretrained one by default);
    ``bank`` a :class:`~immunegym.env.patients.PatientBank`; ``observation_noise`` True or
    False; ``world_options`` (ImmuneWorld only) a mapping of ``chunk_size`` (1..2**20),
    ``sample`` (bool) and ``max_sod_mm`` (> 0); any :class:`~immunegym.env.scenario.Scenario`
    field (``horizon`` 1..100, ``action_type``, ``cancer_types``, ``bank_size`` 1..2**20,
    ``reward={...}``, ...). ``render_mode`` is ``"rgb_array"`` (composition stacked over
    time with the tumor burden) or ``"ansi"``. The vector twin
    (``gym.make_vec("ImmuneWorld-v0", num_envs=4096)``, ``num_envs`` 1..2**22) runs every
    env in one batched model call per step.

    ``reset(seed=None, options=None)``: ``seed`` an integer in ``0..2**63-1``; ``options``
    may hold only ``"patient"`` (a bank row or patient id). ``step(action)`` takes an
    element of the action space.

    Every argument is checked before anything is built or changed: a wrong type, range,
    unknown keyword (with the nearest known one), missing or non-HDF5 ``patient_source``,
    a device this machine lacks, or an action outside the space raises
    :class:`~immunegym.validation.ValidationError` naming the argument, the value and what
    is accepted. Sizes (``bank_size``, ``num_envs``) are also estimated in memory first
    and refused above ``IMMUNEGYM_MAX_MEMORY_GB`` (16 GiB by default).
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 4}
    simulator = "world"

    def __init__(self, render_mode: str | None = None, *, scenario: Scenario | None = None,
                 device: str = "cpu", model=None, bank=None, observation_noise: bool = True,
                 world_options: dict | None = None, **scenario_fields: Any) -> None:
        self.render_mode = render_mode
        self._parts = EnvParts(self.simulator, 1, scenario, device=device, model=model,
                               bank=bank, observation_noise=observation_noise,
                               world_options=world_options, render_mode=render_mode,
                               scenario_kwargs=scenario_fields)
        self.scenario = self._parts.scenario
        self.action_space = self._parts.actions.space
        self.observation_space = self._parts.observations.space
        self._needs_reset = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode.

        ``seed`` is ``None`` or an integer in ``0..2**63-1``; ``options`` may hold only
        ``"patient"``: a bank row (``0..bank_size-1``) or a patient id.
        """
        seed = check_reset_seed(seed)
        options = known_keys("options", options, RESET_OPTIONS)
        patients = self._parts.patients(options, 1)  # checked before anything changes
        super().reset(seed=seed)
        engine = self._parts.engine
        self._parts.seed_engine(seed, self.np_random)
        rows = np.zeros(1, dtype=np.int64)
        engine.reset_rows(_tensor(rows, engine), patients)
        self._needs_reset = False
        self._parts.record(reset=True)
        return _first(self._parts.observation()), row(self._parts.infos(None), 0)

    def step(self, action):
        if self._needs_reset:
            raise RuntimeError("step: the episode has ended (or never began); call reset()")
        engine = self._parts.engine
        levels = self._parts.actions.doses(action, 1, single=True)
        outcome = engine.step(_tensor(levels, engine))
        self._parts.record(reset=False)
        terminated = bool(outcome.terminated[0])
        truncated = bool(outcome.truncated[0])
        self._needs_reset = terminated or truncated
        return (_first(self._parts.observation()), float(outcome.reward[0]), terminated,
                truncated, row(self._parts.infos(outcome), 0))

    def render(self):
        return self._parts.render()

    @property
    def engine(self):
        """The batched engine underneath (one row)."""
        return self._parts.engine


class ImmuneSimEnv(ImmuneWorldEnv):
    """``ImmuneSim-v0``: the same card as :class:`ImmuneWorldEnv`, over the ground truth.

    Each step runs ImmuneSim (:mod:`immunegym.sim`) for ``cycle_days`` days under the
    cycle's doses: antibodies and chemotherapy on day 0, radiotherapy 8 Gy x level on days
    0-2, targeted therapy daily. irAEs come from ImmuneSim's pharmacology and death from its
    tumor-burden hazard. Patients come from ImmuneSim only (``patient_source="sim"``); the
    same ``bank_seed`` gives the same patients as ``ImmuneWorld-v0``, so a policy can be
    trained in the model and judged here.
    """

    simulator = "sim"


def _tensor(values: np.ndarray, engine):
    import torch

    return torch.as_tensor(values, device=engine.device)


def _first(obs):
    if isinstance(obs, dict):
        return {k: v[0] for k, v in obs.items()}
    return obs[0]
