"""Rendering an episode: an RGB frame (composition stacked over time, tumor burden) or text."""

from __future__ import annotations

import numpy as np

from immunegym.data.vocab import THERAPIES
from immunegym.env.scenario import Scenario
from immunegym.ontology import FINE_TYPES

_SHORT = {"anti_pd1": "PD1", "anti_ctla4": "CTLA4", "chemo": "chemo", "radio": "RT",
          "targeted": "TT"}


def _regimen(given: np.ndarray) -> str:
    parts = [f"{_SHORT[t]}" + ("" if g == 1 else f"x{g:g}")
             for t, g in zip(THERAPIES, given, strict=True) if g > 0]
    return "+".join(parts) or "none"


def render_ansi(trace, scenario: Scenario) -> str:
    """One line per cycle: day, SOD, change from baseline, therapy, top cell types."""
    lines = [f"patient {trace.patient} ({trace.cancer_type}), horizon {scenario.horizon} "
             f"cycles of {scenario.cycle_days} d"]
    if not trace.days:
        return lines[0] + "\n(no episode yet)\n"
    base = trace.sod_scan[0] or 1.0
    for i, day in enumerate(trace.days):
        comp = trace.compositions[i]
        top = np.argsort(-comp)[:3]
        types = " ".join(f"{FINE_TYPES[k]} {comp[k]:.2f}" for k in top)
        flags = "".join([" irAE" if trace.irae[i] else "",
                         " PD" if trace.progressed[i] else "",
                         " dead" if not trace.alive[i] else ""])
        given = "-" if i == 0 else _regimen(trace.given[i])
        lines.append(f"day {day:4d}  SOD {trace.sod_scan[i]:6.1f} mm "
                     f"({100 * (trace.sod_scan[i] / base - 1):+5.0f}%)  given {given:<14}"
                     f"{types}{flags}")
    return "\n".join(lines) + "\n"


def render_rgb(trace, scenario: Scenario, size: tuple[float, float] = (8.0, 5.0),
               dpi: int = 80) -> np.ndarray:
    """``(H, W, 3)`` uint8 frame: stacked composition over days, SOD below, therapies marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_c, ax_b) = plt.subplots(2, 1, figsize=size, dpi=dpi, sharex=True,
                                     gridspec_kw={"height_ratios": [3, 1.4]})
    days = np.asarray(trace.days, dtype=float)
    if len(days):
        comps = np.stack(trace.compositions)
        cmap = plt.get_cmap("tab20")
        x = days if len(days) > 1 else np.array([0.0, 1.0])
        y = comps.T if len(days) > 1 else np.repeat(comps.T, 2, axis=1)
        ax_c.stackplot(x, y, colors=[cmap(i % 20) for i in range(len(FINE_TYPES))],
                       labels=list(FINE_TYPES))
        ax_b.plot(days, trace.sod_true, color="black", lw=1.5, label="true SOD")
        ax_b.plot(days, trace.sod_scan, "o", color="tab:red", ms=3, label="scan")
        for i in range(1, len(days)):
            text = _regimen(trace.given[i])
            if text != "none":
                ax_b.annotate(text, (days[i - 1], 0), fontsize=6, rotation=90,
                              xytext=(0, 2), textcoords="offset points", va="bottom")
        ax_b.legend(fontsize=6, loc="upper right", frameon=False)
    ax_c.set_ylim(0, 1)
    ax_c.set_ylabel("fraction")
    ax_c.set_title(f"{trace.patient} ({trace.cancer_type})", fontsize=9)
    ax_c.legend(fontsize=5, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5),
                frameon=False)
    ax_b.set_ylabel("SOD (mm)")
    ax_b.set_xlabel("day")
    ax_b.set_xlim(0, scenario.horizon * scenario.cycle_days)
    ax_b.set_ylim(bottom=0)
    fig.tight_layout()
    fig.canvas.draw()
    frame = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return frame
