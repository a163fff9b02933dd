"""The ground-truth diagnostic: baseline cell states as response predictors in ImmuneSim."""

from __future__ import annotations

import math

import pytest

from immunegym.benchmarks.truth_diagnostics import cd8_state_auroc
from immunegym.ontology import FINE_TYPES
from immunegym.validation import ValidationError


def test_cd8_state_auroc_scores_every_type_and_the_ratio():
    out = cd8_state_auroc(40, seed=3)
    assert out["n_patients"] == 40
    assert 0 < out["n_responders"] < 40
    assert set(FINE_TYPES) <= set(out["auroc"])
    for key in ("memory_tpex_vs_tex", "cd8_total", "malignant"):
        assert 0.0 <= out["auroc"][key] <= 1.0
    # The malignant share and the immune share rank patients in opposite directions.
    assert out["auroc"]["malignant"] < 0.5 < out["auroc"]["cd8_total"]
    assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in out["auroc"].values())


def test_cd8_state_auroc_is_seeded():
    assert cd8_state_auroc(20, seed=5) == cd8_state_auroc(20, seed=5)


def test_cd8_state_auroc_refuses_a_tiny_cohort():
    with pytest.raises(ValidationError, match="n_patients"):
        cd8_state_auroc(3)
