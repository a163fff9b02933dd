"""The ImmuneSim commands of the CLI: tables, JSON output and bad input (the heavy
simulations are replaced by small stand-ins; the science is tested elsewhere)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from immunegym.cli import app
from immunegym.sim import calibrate as cal


def _difference(mean: float) -> dict:
    return {"mean": mean, "ci95": [mean - 0.1, mean + 0.1], "n": 8}


@pytest.fixture
def small_realism(monkeypatch):
    from immunegym.benchmarks import realism

    result = {"random_vs_guideline": {
        "n_patients": 8, "cycles": 17,
        "random": {"return": -1.5, "pfs_cycles": 10.0, "alive_at_one_year": 0.9,
                   "grade3_events": 2.5, "orr": 0.4},
        "standard_of_care": {"return": -0.5, "pfs_cycles": 9.0, "alive_at_one_year": 0.95,
                             "grade3_events": 0.8, "orr": 0.3},
        "random_minus_guideline": {"return": _difference(-1.0),
                                   "pfs_cycles": _difference(1.0),
                                   "alive_at_one_year": _difference(-0.05),
                                   "grade3_events": _difference(1.7)}}}
    calls = []
    monkeypatch.setattr(realism, "run", lambda **kw: calls.append(kw) or result)
    return calls


def test_bench_realism_writes_json_and_prints_differences(small_realism, tmp_path):
    out = tmp_path / "realism.json"
    res = CliRunner().invoke(app, ["bench", "realism", "--quick", "--seed", "3",
                                   "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert small_realism == [{"quick": True, "seed": 3}]
    written = json.loads(out.read_text())
    assert written["random_vs_guideline"]["random"]["return"] == -1.5
    assert "-1.000 [-1.100, -0.900]" in res.output


def test_bench_realism_requires_json():
    res = CliRunner().invoke(app, ["bench", "realism"])
    assert res.exit_code != 0
    assert "--json" in res.output


def test_sim_combinations_table_and_json(monkeypatch, tmp_path):
    pair = cal.PAIRS[0]
    check = cal.PairCheck(pair, first=0.4, second=0.2, combination=0.55, neither_share=0.05)
    monkeypatch.setattr(cal, "predict_combinations", lambda n, seed: [check])
    out = tmp_path / "combos.json"
    res = CliRunner().invoke(app, ["sim", "combinations", "--n", "10", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["pairs"]
    assert rows[0]["combination_orr"] == 0.55
    assert rows[0]["independent_action"] == 0.52
    assert "+0.030" in res.output


@pytest.mark.parametrize("command", [["sim", "combinations", "--n", "0"],
                                     ["sim", "calibrate", "--n", "0"]])
def test_sim_commands_reject_non_positive_cohorts(command):
    res = CliRunner().invoke(app, command)
    assert res.exit_code == 1
    assert res.output.startswith("error: --n: got 0; expected an integer in 1..")
