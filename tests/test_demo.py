"""Pieces of ``make demo`` that run in seconds (the whole demo runs in test_cli)."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from immunegym.demo import TOXICITY_EVENTS, chemo_toxicity, toxicity_frame, weekly_toxicity

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """A few patients: one torch thread is fastest and leaves a core to the machine."""


def test_chemo_toxicity_writes_png_and_weekly_table(tmp_path):
    console = Console(record=True, width=160)
    path = chemo_toxicity(tmp_path / "out", console=console, days=63, n_candidates=4)
    assert path == tmp_path / "out" / "immunesim_chemo_toxicity.png"
    assert path.read_bytes()[:8] == PNG
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left
    text = console.export_text()
    assert "on chemotherapy q3w x4, by week" in text and "ANC (x1e9/L)" in text
    rows = [line for line in text.splitlines()
            if line.startswith("│") and line.split("│")[1].strip().isdigit()]
    assert [int(r.split("│")[1]) for r in rows] == list(range(0, 64, 7))
    assert "chemo 1.00" in rows[0]  # the first dose, in full


def test_toxicity_frame_follows_the_recorded_course():
    from immunegym.sim import ImmuneSim
    from immunegym.sim.simulator import TOXICITY_TRACE

    sim = ImmuneSim(seed=3)
    course = sim.run(sim.sample_patients("nsclc", 3), "chemo", 42, record_every=1,
                     record_given=True)
    for i in range(3):
        frame = toxicity_frame(course, i, sim.params.rates)
        assert list(frame.index) == list(range(43))
        assert set(TOXICITY_EVENTS) <= set(frame.columns)
        assert frame.loc[0, "chemo"] == 1.0 and frame["chemo"].iloc[1:21].eq(0).all()
        # Event columns add up to the recorded cumulative counts.
        end = course.toxicity[-1, i]
        for name in ("ae_count", "fn_episodes", "delays"):
            assert frame[name].sum() == round(float(end[TOXICITY_TRACE.index(name)])), name
        expected = np.select([frame["anc"] < 0.5, frame["anc"] < 1.0, frame["anc"] < 1.5,
                              frame["anc"] < 2.0], [4, 3, 2, 1], 0)
        np.testing.assert_array_equal(frame["grade"], expected)
        assert frame["sod_mm"].gt(0).all()
        weekly = weekly_toxicity(frame)
        assert list(weekly.index) == [0, 7, 14, 21, 28, 35, 42]
        assert weekly.loc[14, "nadir"] == pytest.approx(frame.loc[8:14, "anc"].min())
        assert weekly["grade"].max() == frame["grade"].max()
    # Chemotherapy lowers neutrophils below baseline within the first cycle.
    low = [toxicity_frame(course, i, sim.params.rates)["anc"] for i in range(3)]
    assert all(a.loc[1:20].min() < a.loc[0] for a in low)
    with pytest.raises(ValueError, match="record_every=1"):
        toxicity_frame(sim.run(sim.sample_patients("nsclc", 1), "chemo", 14), 0,
                       sim.params.rates)
