"""Matplotlib figures of cell-state compositions (written atomically, headless)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the package never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from immunegym._atomic import atomic_path  # noqa: E402


def composition_bars(
    groups: Mapping[str, pd.DataFrame],
    path: str | os.PathLike[str],
    title: str = "",
    names: Mapping[str, str] | None = None,
) -> Path:
    """Stacked bars of per-sample fractions, one panel per group; writes a PNG.

    Parameters
    ----------
    groups
        Panel title -> fractions (rows: samples, columns: cell types; rows sum to 1). All
        frames share the same columns.
    path
        Output PNG path; written to a temporary file first and renamed.
    title
        Figure title.
    names
        Column id -> display name for the legend.
    """
    columns = list(next(iter(groups.values())).columns)
    cmap = plt.get_cmap("tab20")
    colors = {c: cmap(i % 20) for i, c in enumerate(columns)}
    widths = [max(len(frame), 1) for frame in groups.values()]
    fig, axes = plt.subplots(
        1, len(groups), figsize=(2.0 + 0.35 * sum(widths), 4.8), sharey=True,
        gridspec_kw={"width_ratios": widths}, squeeze=False,
    )
    for ax, (panel, frame) in zip(axes[0], groups.items(), strict=False):
        bottom = pd.Series(0.0, index=frame.index)
        for col in columns:
            label = (names or {}).get(col, col)
            ax.bar(range(len(frame)), frame[col], bottom=bottom, color=colors[col],
                   width=0.85, label=label)
            bottom += frame[col]
        ax.set_xticks(range(len(frame)), [str(i) for i in frame.index], rotation=90,
                      fontsize=7)
        ax.set_title(panel, fontsize=10)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("fraction of CD45+ cells")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
