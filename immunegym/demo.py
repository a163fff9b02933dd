"""The main job behind ``make demo``.

For now: (1) the real Sade-Feldman 2018 melanoma cohort, harmonized onto the unified
ontology, pre-treatment responders vs non-responders as a table and a stacked-bar figure;
(2) one ImmuneSim virtual patient followed under two regimens from the same hidden state.
Later issues grow this into the full pipeline (world model, environment, planners).
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from immunegym.data.distributions import sample_distributions
from immunegym.data.real import sade_feldman_cells
from immunegym.ontology import default_ontology, harmonization_report
from immunegym.plots import composition_bars

DEMO_LEVEL: tuple[str, ...] = (
    "cd8_memory", "cd8_effector", "cd8_exhausted", "cd4_helper", "treg", "nk", "b_lineage",
    "dendritic_cell", "monocyte", "macrophage", "mdsc", "neutrophil", "mast_cell",
    "malignant", "stromal",
)
"""A readable cut: CD8 states, CD4 states, other lineages; tree nodes, not new labels."""


def run_demo(out_dir: str | os.PathLike[str] = "immunegym-out",
             console: Console | None = None) -> Path:
    """Harmonize Sade-Feldman labels, print pre-treatment compositions, write a PNG.

    Returns
    -------
    pathlib.Path
        The PNG written into ``out_dir``.
    """
    console = console or Console()
    onto = default_ontology()
    adata = sade_feldman_cells()
    report = harmonization_report(adata.obs["cluster"].astype(str),
                                  convention="sade_feldman_2018")
    mapping = Table(title="Sade-Feldman 2018 clusters -> unified ontology")
    for col in ("label", "paper name", "node", "CL id", "rule", "cells"):
        mapping.add_column(col)
    for _, row in report.to_frame().iterrows():
        mapping.add_row(row["label"], row["translated"], str(row["node"]), str(row["cl_id"]),
                        row["rule"], str(row["n_cells"]))
    console.print(mapping)

    dist = sample_distributions(adata)
    pre = dist.subset(adata.obs.groupby("sample", observed=True)["timepoint"].first()
                      .loc[dist.sample_ids].eq("Pre").to_numpy())
    fractions = pre.fractions_at(DEMO_LEVEL)
    fractions = fractions.loc[:, fractions.sum() > 0]
    responder = pre.samples["response"] == 1.0
    groups = {
        f"Responders (n={int(responder.sum())})": fractions[responder],
        f"Non-responders (n={int((~responder).sum())})": fractions[~responder],
    }
    # Mass labeled at a coarser node than the cut ("Lymphocytes", "Memory T cells") keeps a
    # column of its own, marked with *, rather than being guessed onto a finer type.
    names = {c: onto.node(c).name + ("*" if c not in DEMO_LEVEL else "")
             for c in fractions.columns}

    table = Table(title="Pre-treatment biopsies: composition (% of CD45+ cells)")
    table.add_column("sample", no_wrap=True, min_width=8)
    table.add_column("resp.", no_wrap=True)
    for col in fractions.columns:
        table.add_column(names[col], justify="right")
    for panel, frame in groups.items():
        tag = "R" if panel.startswith("Responders") else "NR"
        for sample, row in frame.iterrows():
            table.add_row(str(sample), tag, *[f"{100 * v:.0f}" for v in row])
        mean = frame.mean()
        table.add_row(f"[bold]mean {tag}[/bold]", tag,
                      *[f"[bold]{100 * v:.1f}[/bold]" for v in mean], end_section=True)
    console.print(table)
    console.print("* labeled only at this coarser node by the study (kept there, not split)")
    diff = (groups[list(groups)[0]].mean() - groups[list(groups)[1]].mean()) * 100
    top = diff.abs().sort_values(ascending=False).index[:3]
    console.print("Largest responder - non-responder differences (percentage points): "
                  + ", ".join(f"{names[c]} {diff[c]:+.1f}" for c in top))

    path = composition_bars(
        groups, Path(out_dir) / "sadefeldman_pre_treatment_composition.png",
        title="Sade-Feldman 2018 melanoma, pre-treatment biopsies (harmonized)", names=names,
    )
    console.print(f"wrote {path}")
    simulated_patient(out_dir, console=console)
    return path


def simulated_patient(out_dir: str | os.PathLike[str] = "immunegym-out",
                      console: Console | None = None,
                      regimens: tuple[str, str] = ("anti_pd1", "anti_pd1+anti_ctla4"),
                      cancer_type: str = "melanoma", seed: int = 2) -> Path:
    """One virtual patient under two regimens (same patient, same hidden state, same seed).

    Returns
    -------
    pathlib.Path
        The PNG of composition over time and tumor burden under each regimen.
    """
    import pandas as pd
    import torch

    from immunegym.plots import patient_courses
    from immunegym.sim import ImmuneSim
    from immunegym.sim.outcomes import RESPONSE_CODES, sum_of_diameters
    from immunegym.sim.parameters import PHENOTYPES
    from immunegym.sim.state import compartments_to_fine

    console = console or Console()
    onto = default_ontology()
    days = 364
    courses = {}
    table = Table(title=f"ImmuneSim: one {cancer_type} patient, two regimens")
    for col in ("regimen", "best response (RECIST)", "PFS (days)", "grade>=3 irAE",
                "tumor day 0 -> 364 (mm)"):
        table.add_column(col)
    for regimen in regimens:
        sim = ImmuneSim(seed=seed)  # same seed: the same patient and the same noise
        patients = sim.sample_patients(cancer_type, 1)
        course = sim.run(patients, regimen, days, record_every=7)
        fine = compartments_to_fine(torch.from_numpy(course.cells[:, 0])).numpy()
        lineage, columns = onto.aggregate(fine, list(onto.leaves), DEMO_LEVEL)
        fractions = pd.DataFrame(lineage / lineage.sum(-1, keepdims=True),
                                 index=course.record_days, columns=columns)
        burden = pd.Series(sum_of_diameters(torch.from_numpy(course.cells[:, 0, :3].sum(-1)),
                                            sim.params.rates).numpy(),
                           index=course.record_days)
        courses[regimen] = (fractions, burden)
        pfs = "censored" if not course.pfs_event[0] else f"{course.pfs_day[0]:.0f}"
        table.add_row(regimen, RESPONSE_CODES[course.best_response[0]], pfs,
                      "yes" if bool(course.state.irae[0]) else "no",
                      f"{burden.iloc[0]:.0f} -> {burden.iloc[-1]:.0f}")
    phenotype = PHENOTYPES[int(patients.phenotype[0])]
    console.print(table)
    names = {c: onto.node(c).name for c in DEMO_LEVEL}
    path = patient_courses(courses, Path(out_dir) / "immunesim_patient_two_regimens.png",
                           title=f"Virtual {cancer_type} patient ({phenotype} phenotype): "
                                 f"{' vs '.join(regimens)}", names=names)
    console.print(f"wrote {path}")
    return path
