"""Matplotlib figures of cell-state compositions and patient courses (written atomically,
headless)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the package never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
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


def patient_courses(
    courses: Mapping[str, tuple[pd.DataFrame, pd.Series]],
    path: str | os.PathLike[str],
    title: str = "",
    names: Mapping[str, str] | None = None,
) -> Path:
    """One patient under several regimens: composition over time and tumor burden.

    Parameters
    ----------
    courses
        Regimen name -> (fractions indexed by day with one column per cell type, rows
        summing to 1; tumor burden in mm indexed by day).
    path
        Output PNG path (written atomically).
    title
        Figure title.
    names
        Column id -> display name for the legend.
    """
    columns = list(next(iter(courses.values()))[0].columns)
    cmap = plt.get_cmap("tab20")
    colors = [cmap(i % 20) for i in range(len(columns))]
    fig, axes = plt.subplots(2, len(courses), figsize=(5.2 * len(courses), 6.4),
                             sharex=True, height_ratios=[3, 1.4], squeeze=False)
    top = max(float(burden.max()) for _, burden in courses.values())
    for j, (regimen, (fractions, burden)) in enumerate(courses.items()):
        ax = axes[0, j]
        ax.stackplot(fractions.index, fractions.to_numpy().T, colors=colors,
                     labels=[(names or {}).get(c, c) for c in columns])
        ax.set_ylim(0, 1)
        ax.set_title(regimen)
        ax.set_ylabel("fraction of cells" if j == 0 else "")
        low = axes[1, j]
        low.plot(burden.index, burden.to_numpy(), color="k")
        low.axhline(float(burden.iloc[0]) * 0.7, color="tab:green", ls="--", lw=0.8)
        low.axhline(float(burden.iloc[0]) * 1.2, color="tab:red", ls="--", lw=0.8)
        low.set_ylim(0, top * 1.1)
        low.set_xlabel("day")
        low.set_ylabel("sum of diameters (mm)" if j == 0 else "")
    axes[0, -1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)


def forecast_vs_truth(
    truth_days, truth_comp, truth_burden, forecast_days, mean_comp, lo_comp, hi_comp,
    mean_burden, lo_burden, hi_burden, observed_days, observed_comp, scan_days, scan_burden,
    types: list[str], names: Mapping[str, str], path: str | os.PathLike[str], title: str = "",
) -> Path:
    """Panels of predicted (mean and 90% band) vs true fractions of some types, and burden.

    Arrays: ``truth_comp (D, T)``, ``mean/lo/hi_comp (H, T)``, ``observed_comp (B, T)`` over
    the ``types`` columns; burdens in mm.
    """
    n = len(types) + 1
    cols = 4
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    panels = [(t, truth_comp[:, i], mean_comp[:, i], lo_comp[:, i], hi_comp[:, i],
               observed_comp[:, i], observed_days, "fraction") for i, t in enumerate(types)]
    panels.append(("tumor burden", truth_burden, mean_burden, lo_burden, hi_burden,
                   scan_burden, scan_days, "sum of diameters (mm)"))
    for ax, (name, truth, mean, lo, hi, obs, obs_days, unit) in zip(axes.flat, panels,
                                                                   strict=False):
        ax.plot(truth_days, truth, color="black", lw=1.2, label="ImmuneSim truth")
        ax.fill_between(forecast_days, lo, hi, color="tab:blue", alpha=0.25, label="90% band")
        ax.plot(forecast_days, mean, color="tab:blue", lw=1.5, label="world model")
        ax.scatter(obs_days, obs, color="tab:red", s=14, zorder=3, label="observed")
        ax.set_title(names.get(name, name), fontsize=9)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="best")
    for ax in axes[-1]:
        ax.set_xlabel("day", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)


def neutrophils_and_burden(
    days, anc, sod_mm, dose_days, events: Mapping[str, object], path: str | os.PathLike[str],
    title: str = "", thresholds: Mapping[str, float] | None = None,
) -> Path:
    """One patient's neutrophils and tumor burden over the same days; writes a PNG.

    Parameters
    ----------
    days, anc, sod_mm
        ``(D,)`` days, absolute neutrophil count (``x 1e9/L``) and sum of diameters (mm).
    dose_days
        Days a chemotherapy dose was given (dotted lines in both panels).
    events
        Event name -> days it happened (markers on the neutrophil curve; names without
        days are left out).
    path
        Output PNG path (written atomically).
    title
        Figure title.
    thresholds
        Label -> ANC drawn as a dashed line; CTCAE grade 3 (1.0) and grade 4 (0.5) by
        default.
    """
    thresholds = thresholds or {"grade 3 (< 1.0)": 1.0, "grade 4 (< 0.5)": 0.5}
    days, anc = np.asarray(days), np.asarray(anc, dtype=float)
    fig, (top, low) = plt.subplots(2, 1, figsize=(8.0, 6.0), sharex=True,
                                   height_ratios=[3, 2])
    top.plot(days, anc, color="k", lw=1.4, label="ANC")
    for (label, value), color in zip(thresholds.items(), ("tab:orange", "tab:red"),
                                     strict=False):
        top.axhline(value, color=color, ls="--", lw=0.9, label=label)
    markers = ("v", "X", "s", "D", "o")
    for (name, when), marker in zip(events.items(), markers, strict=False):
        when = np.asarray(when, dtype=int)
        if not len(when):
            continue  # no legend entry for what did not happen
        at = np.searchsorted(days, when).clip(max=len(days) - 1)
        top.scatter(when, anc[at], marker=marker, s=42, zorder=3, label=name)
    # A log axis keeps deep nadirs and the rebound on one readable scale.
    top.set_yscale("log")
    top.set_ylim(max(float(anc.min()) * 0.7, 1e-2), float(anc.max()) * 1.5)
    plain = matplotlib.ticker.FormatStrFormatter("%g")
    top.yaxis.set_major_formatter(plain)
    top.yaxis.set_minor_formatter(plain)
    top.tick_params(axis="y", which="minor", labelsize=7)
    top.set_ylabel("neutrophils (x 1e9/L)")
    top.legend(fontsize=7, loc="best", ncol=2)
    low.plot(days, sod_mm, color="tab:blue", lw=1.4)
    low.set_ylim(0, float(np.max(sod_mm)) * 1.15)
    low.set_ylabel("sum of diameters (mm)")
    low.set_xlabel("day")
    for ax in (top, low):
        for day in dose_days:
            ax.axvline(day, color="tab:purple", ls=":", lw=0.9)
    low.plot([], [], color="tab:purple", ls=":", lw=0.9, label="chemotherapy dose")
    low.legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
