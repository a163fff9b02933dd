"""Gymnasium environments: ``ImmuneWorld-v0`` (the learned world model) and ``ImmuneSim-v0``
(the mechanistic ground truth), single and native vector, with SB3 and RLlib adapters.

``import immunegym`` registers the ids (:mod:`.registration`); see :class:`ImmuneWorldEnv`
for the env card. Attributes load lazily so that registration stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Engine": "immunegym.env.engine",
    "PatientBank": "immunegym.env.patients",
    "DEFAULT_MENU": "immunegym.env.scenario",
    "RewardWeights": "immunegym.env.scenario",
    "Scenario": "immunegym.env.scenario",
    "load_scenario_file": "immunegym.env.scenario",
    "ImmuneWorldEnv": "immunegym.env.single",
    "ImmuneSimEnv": "immunegym.env.single",
    "ImmuneWorldVectorEnv": "immunegym.env.vector",
    "ImmuneSimVectorEnv": "immunegym.env.vector",
    "check_vector_env": "immunegym.env.checker",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'immunegym.env' has no attribute {name!r}")
