"""Regimens, planners and counterfactuals: what a patient should get, and what would happen.

* :mod:`.regimen`: the regimen algebra (``"anti_pd1+anti_ctla4 q3w x4 -> anti_pd1"``),
  standard regimens and standard of care per cancer type;
* :mod:`.policy` / :mod:`.evaluate`: what an agent is, and how agents are judged;
* :mod:`.scoring` / :mod:`.regimen_search`: batched CEM, beam and exhaustive search;
* :mod:`.pruning`: searched plans simplified into protocols (``"anti_pd1 q3w x8"``);
* :mod:`.counterfactuals`: outcome distributions of one patient under alternative regimens.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Phase": "immunegym.planning.regimen",
    "RegimenPlan": "immunegym.planning.regimen",
    "STANDARD_OF_CARE": "immunegym.planning.regimen",
    "STANDARD_REGIMENS": "immunegym.planning.regimen",
    "describe_plan": "immunegym.planning.regimen",
    "parse_plan": "immunegym.planning.regimen",
    "standard_of_care": "immunegym.planning.regimen",
    "EpisodeStart": "immunegym.planning.policy",
    "Policy": "immunegym.planning.policy",
    "PlanFollower": "immunegym.planning.policy",
    "Evaluation": "immunegym.planning.evaluate",
    "evaluate_policy": "immunegym.planning.evaluate",
    "leaderboard_scenario": "immunegym.planning.evaluate",
    "EngineScorer": "immunegym.planning.scoring",
    "SearchResult": "immunegym.planning.regimen_search",
    "cem": "immunegym.planning.regimen_search",
    "beam": "immunegym.planning.regimen_search",
    "exhaustive": "immunegym.planning.regimen_search",
    "search": "immunegym.planning.regimen_search",
    "PrunedPlans": "immunegym.planning.pruning",
    "prune_plans": "immunegym.planning.pruning",
    "cohort_scorers": "immunegym.planning.pruning",
    "counterfactual": "immunegym.planning.counterfactuals",
    "Counterfactual": "immunegym.planning.counterfactuals",
    "plot_counterfactual_tree": "immunegym.planning.counterfactuals",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'immunegym.planning' has no attribute {name!r}")

