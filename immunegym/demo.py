"""The main job behind ``make demo``.

For now: (1) the real Sade-Feldman 2018 melanoma cohort, harmonized onto the unified
ontology, pre-treatment responders vs non-responders as a table and a stacked-bar figure;
(2) one ImmuneSim virtual patient followed under two regimens from the same hidden state,
and one patient's neutrophils and toxicity events under chemotherapy next to the tumor;
(3) the pretrained world model forecasting a held-out patient from its baseline biopsy,
against ImmuneSim's truth; (4) one episode of ``ImmuneWorld-v0`` and the same patient in
``ImmuneSim-v0`` under anti-PD-1, rendered. A later issue adds the planners.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from immunegym import validation as v
from immunegym.data.distributions import sample_distributions
from immunegym.data.real import sade_feldman_cells
from immunegym.ontology import FINE_TYPES, default_ontology, harmonization_report, tree_wasserstein
from immunegym.plots import composition_bars
from immunegym.validation import ValidationError

DEMO_LEVEL: tuple[str, ...] = (
    "cd8_memory", "cd8_effector", "cd8_exhausted", "cd4_helper", "treg", "nk", "b_lineage",
    "dendritic_cell", "monocyte", "macrophage", "mdsc", "neutrophil", "mast_cell",
    "malignant", "stromal",
)
"""A readable cut: CD8 states, CD4 states, other lineages; tree nodes, not new labels."""

FINE_TYPES_INDEX = {t: i for i, t in enumerate(FINE_TYPES)}


def run_demo(out_dir: str | os.PathLike[str] = "immunegym-out",
             console: Console | None = None) -> Path:
    """Harmonize Sade-Feldman labels, print pre-treatment compositions, write a PNG.

    Returns
    -------
    pathlib.Path
        The PNG written into ``out_dir``.
    """
    v.output_path("out_dir", out_dir, directory=True)
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
    chemo_toxicity(out_dir, console=console)
    held_out_forecast(out_dir, console=console)
    env_episode(out_dir, console=console)
    planner_leaderboard(out_dir, console=console)
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


COUNTED_EVENTS: dict[str, str] = {
    "ae_count": "grade>=3 event", "fn_episodes": "febrile neutropenia",
    "delays": "chemo delayed",
}
"""Cumulative counts of :data:`~immunegym.sim.simulator.TOXICITY_TRACE` shown as events."""

TOXICITY_EVENTS: dict[str, str] = {**COUNTED_EVENTS, "unfit": "unfit: treatment stopped"}
"""Every event column of :func:`toxicity_frame` and its label; ``unfit`` is the day the
toxicity load reaches the protocol's ``unfit_load`` (all treatment stops)."""


def toxicity_frame(course, patient: int, rates: dict[str, float]):
    """One patient's recorded course as a daily table.

    Parameters
    ----------
    course
        A :class:`~immunegym.sim.simulator.Simulation` run with ``record_every=1`` and
        ``record_given=True``.
    patient
        The patient's row.
    rates
        ImmuneSim's rates (for the sum of diameters).

    Returns
    -------
    pandas.DataFrame
        Indexed by day: ``anc`` (x 1e9/L), ``grade`` (CTCAE neutropenia grade of that
        day's ANC), ``load`` (toxicity load), ``sod_mm``, ``chemo`` (dose given that day)
        and one column per :data:`TOXICITY_EVENTS` with that day's new events. A day's
        row is the state recorded at its start, so an event shows on the day after the
        step it happened in, where the ANC that caused it is; a dose shows on its own day.
    """
    import numpy as np
    import pandas as pd
    import torch

    from immunegym.data.vocab import THERAPIES
    from immunegym.sim.outcomes import sum_of_diameters
    from immunegym.sim.simulator import TOXICITY_TRACE
    from immunegym.sim.state import N_CLONES
    from immunegym.sim.toxicity import DEFAULT_RULES, neutropenia_grade

    if course.toxicity is None or course.given is None or len(course.record_days) < 2 or (
            course.record_days[1] - course.record_days[0] != 1):
        raise ValidationError("course: expected a run with record_every=1 and record_given=True")
    trace = course.toxicity[:, patient]
    anc = trace[:, TOXICITY_TRACE.index("anc")]
    load = trace[:, TOXICITY_TRACE.index("load")]
    tumor = torch.from_numpy(course.cells[:, patient, :N_CLONES].sum(-1))
    # given[d] is day d's dose; the last record day (the horizon) has none.
    chemo = np.append(course.given[patient, :, THERAPIES.index("chemo")], 0.0)
    frame = pd.DataFrame({
        "anc": anc,
        "grade": neutropenia_grade(torch.from_numpy(anc)).numpy(),
        "load": load,
        "sod_mm": sum_of_diameters(tumor, rates).numpy(),
        "chemo": chemo[:len(anc)],
    }, index=pd.Index(course.record_days, name="day"))
    for name in COUNTED_EVENTS:
        counts = trace[:, TOXICITY_TRACE.index(name)]
        frame[name] = np.diff(counts, prepend=counts[0]).round().astype(int)
    # ImmuneSim stops every therapy for good the first day the load reaches unfit_load.
    unfit = load >= DEFAULT_RULES.unfit_load
    frame["unfit"] = (unfit & (np.cumsum(unfit) == 1)).astype(int)
    return frame


def weekly_toxicity(frame, every: int = 7):
    """The daily table of :func:`toxicity_frame` summed up every ``every`` days.

    Parameters
    ----------
    frame
        A :func:`toxicity_frame`.
    every
        Days per row; day 0 (before the first dose) is a row of its own.

    Returns
    -------
    pandas.DataFrame
        One row per period, indexed by its last day: ``anc`` and ``load`` that day,
        ``nadir`` and worst ``grade`` over the period, and ``events`` (what happened in it,
        as text).
    """
    import pandas as pd

    period = (frame.index.to_numpy() + every - 1) // every
    rows = []
    for _, part in frame.groupby(period, sort=True):
        happened = [f"{label} x{int(part[name].sum())}" if part[name].sum() > 1 else label
                    for name, label in TOXICITY_EVENTS.items() if part[name].sum() > 0]
        if part["chemo"].sum() > 0:
            happened.insert(0, f"chemo {part['chemo'].sum():.2f}")
        rows.append({"day": int(part.index[-1]), "anc": float(part["anc"].iloc[-1]),
                     "nadir": float(part["anc"].min()), "grade": int(part["grade"].max()),
                     "load": float(part["load"].iloc[-1]), "events": ", ".join(happened)})
    return pd.DataFrame(rows).set_index("day")


def chemo_toxicity(out_dir: str | os.PathLike[str] = "immunegym-out",
                   console: Console | None = None, cancer_type: str = "nsclc",
                   days: int = 105, n_candidates: int = 16, seed: int = 7) -> Path:
    """One ImmuneSim patient's neutrophils and toxicity under chemotherapy, next to the tumor.

    ``n_candidates`` patients (seeded) get the standard chemotherapy schedule (q3w x4); the
    one with the most grade >= 3 events and chemotherapy delays (then the deepest nadir) is
    shown: neutrophils with the grade 3 / 4 thresholds, events, and the sum of diameters
    over the same days, as a PNG and a weekly console table.

    Returns
    -------
    pathlib.Path
        The PNG written into ``out_dir``.
    """
    import numpy as np

    from immunegym.plots import neutrophils_and_burden

    v.integer("days", days, low=1, high=3_650)
    v.integer("n_candidates", n_candidates, low=1, high=100_000)
    v.seed("seed", seed)
    from immunegym.sim import ImmuneSim

    console = console or Console()
    sim = ImmuneSim(seed=seed)
    patients = sim.sample_patients(cancer_type, n_candidates)
    course = sim.run(patients, "chemo", days, record_every=1, record_given=True)
    frames = [toxicity_frame(course, i, sim.params.rates) for i in range(n_candidates)]
    # The most eventful course (then the deepest nadir): the figure has something to show.
    events = np.array([f[list(COUNTED_EVENTS)].to_numpy().sum() for f in frames])
    nadir = np.array([f["anc"].min() for f in frames])
    patient = int(np.lexsort((nadir, -events))[0])
    frame = frames[patient]
    weekly = weekly_toxicity(frame)
    table = Table(title=f"ImmuneSim: one {cancer_type} patient on chemotherapy q3w x4, by week")
    for col in ("day", "ANC (x1e9/L)", "nadir", "grade", "load", "events"):
        table.add_column(col, justify="left" if col == "events" else "right")
    for day, row in weekly.iterrows():
        table.add_row(str(day), f"{row['anc']:.2f}", f"{row['nadir']:.2f}",
                      str(row["grade"]), f"{row['load']:.1f}", row["events"])
    half_life = sim.params.rates["toxicity_load_half_life"]
    note = ("grade: worst CTCAE neutropenia grade of the week (3: ANC < 1.0, 4: < 0.5); "
            f"load: overlapping grade >= 3 events (half-life {half_life:g} days)")
    console.print(table)
    console.print(note)
    path = neutrophils_and_burden(
        frame.index.to_numpy(), frame["anc"].to_numpy(), frame["sod_mm"].to_numpy(),
        frame.index[frame["chemo"] > 0].to_numpy(),
        {label: frame.index[frame[name] > 0].to_numpy()
         for name, label in TOXICITY_EVENTS.items()},
        Path(out_dir) / "immunesim_chemo_toxicity.png",
        title=f"Virtual {cancer_type} patient under chemotherapy: neutrophils (Friberg) and "
              "tumor burden")
    console.print(f"wrote {path}")
    return path


FORECAST_TYPES: tuple[str, ...] = (
    "malignant", "cd8_effector", "cd8_tpex", "cd8_tex", "treg", "macrophage_m2", "fibroblast",
)


def held_out_forecast(out_dir: str | os.PathLike[str] = "immunegym-out",
                      console: Console | None = None, cycles: int = 12, seed: int = 4242,
                      checkpoint: str | os.PathLike[str] | None = None) -> Path:
    """The pretrained world model forecasts a patient it never saw; ImmuneSim says what was.

    A fresh melanoma cohort under anti-PD-1 + anti-CTLA-4 (a seed outside the training
    suite) is simulated; the model's filter reads one patient's baseline biopsy and scan
    only (the plot starts from the filter's state, not the raw biopsy) and the dynamics roll
    it ``cycles`` 21-day cycles forward under the therapy the patient actually got.

    Returns
    -------
    pathlib.Path
        The PNG of predicted (mean, 90% band) vs true trajectories.
    """
    import numpy as np
    import torch

    from immunegym.plots import forecast_vs_truth
    from immunegym.sim.cohort import CohortSpec, simulate_cohort
    from immunegym.sim.outcomes import sum_of_diameters
    from immunegym.sim.parameters import load_parameters
    from immunegym.world_model import build_timelines, load
    from immunegym.world_model.timelines import CYCLE_DAYS

    console = console or Console()
    model = load(checkpoint)
    cohort = simulate_cohort(CohortSpec("demo_heldout", "melanoma", ("anti_pd1+anti_ctla4",),
                                        "tme_fine", n_patients=8, seed=seed,
                                        horizon_days=cycles * CYCLE_DAYS + 7))
    tl = build_timelines(cohort.adata)
    truth = cohort.truth
    rates = load_parameters().rates
    sod = sum_of_diameters(torch.as_tensor(truth.tumor_cells), rates).numpy()
    # The patient whose tumor changes most: the forecast has something to get right.
    change = np.abs(np.log1p(sod[-1]) - np.log1p(sod[0]))
    patient = int(np.argmax(np.where(truth.alive[-1], change, -1)))
    context = tl.subset([patient])
    first = float(context.days[0, 0])
    context = context.truncate(np.array([first], dtype=np.float32))
    doses = model.actual_doses(context, torch.tensor([first]), cycles)
    samples = model.rollout(context, doses, n_samples=64, noise="both", seed=seed)
    mean = model.rollout(context, doses, noise="none")
    columns = [FINE_TYPES_INDEX[t] for t in FORECAST_TYPES]
    lo, hi = samples.interval(0.9)
    burden_samples = np.expm1(samples.burden[:, 0].numpy())
    full = tl.subset([patient])
    obs = full.comp_observed[0].numpy()
    observed = (full.counts[0] / full.counts[0].sum(-1, keepdim=True).clamp_min(1)).numpy()
    days = np.concatenate([[first], mean.days[0].numpy()])
    today = model.estimate(context)
    base = today.composition[0].numpy()
    path = forecast_vs_truth(
        truth.days, truth.composition[:, patient][:, columns], sod[:, patient], days,
        np.vstack([base, mean.compositions.mean(0)[0].numpy()])[:, columns],
        np.vstack([base, lo[0].numpy()])[:, columns], np.vstack([base, hi[0].numpy()])[:, columns],
        np.concatenate([[np.expm1(float(today.burden[0]))],
                        np.expm1(mean.burden.mean(0)[0].numpy())]),
        np.concatenate([[np.nan], np.quantile(burden_samples, 0.05, axis=0)]),
        np.concatenate([[np.nan], np.quantile(burden_samples, 0.95, axis=0)]),
        full.days[0].numpy()[obs], observed[obs][:, columns],
        full.days[0].numpy()[full.burden_observed[0].numpy()],
        np.expm1(full.burden[0].numpy()[full.burden_observed[0].numpy()]),
        list(FORECAST_TYPES), {t: default_ontology().node(t).name for t in FORECAST_TYPES},
        Path(out_dir) / "world_model_heldout_forecast.png",
        title=f"World model vs ImmuneSim: held-out melanoma patient, anti-PD-1 + anti-CTLA-4, "
              f"{cycles} cycles from the baseline biopsy")
    w1 = tree_wasserstein(mean.compositions.mean(0)[0].numpy() + 1e-12,
                          truth.composition[mean.days[0].numpy().astype(int), patient])
    console.print(f"world model forecast of a held-out patient: tree-W1 to the truth "
                  f"{w1[0]:.3f} (cycle 1) -> {w1[-1]:.3f} (cycle {cycles})")
    console.print(f"wrote {path}")
    return path


def env_episode(out_dir: str | os.PathLike[str] = "immunegym-out",
                console: Console | None = None, patient: int = 0, seed: int = 0) -> Path:
    """One episode in ``ImmuneWorld-v0`` and the same patient in ``ImmuneSim-v0``.

    The policy gives anti-PD-1 at the standard dose every cycle it is allowed. Both episodes
    are printed (``render_mode="ansi"``) and the world-model episode's last frame
    (``"rgb_array"``) is written as a PNG.

    Returns
    -------
    pathlib.Path
        The PNG of the ImmuneWorld episode.
    """
    import gymnasium as gym
    import matplotlib.pyplot as plt
    import numpy as np

    from immunegym._atomic import atomic_path
    from immunegym.sim.outcomes import RESPONSE_CODES

    console = console or Console()
    frame = None
    for env_id in ("ImmuneWorld-v0", "ImmuneSim-v0"):
        env = gym.make(env_id, render_mode="ansi" if env_id == "ImmuneSim-v0" else "rgb_array",
                       action_type="multibinary", terminate_on_progression=False)
        obs, info = env.reset(seed=seed, options={"patient": patient})
        total, done = 0.0, False
        while not done:
            action = np.array([1, 0, 0, 0, 0]) * info["action_mask"]
            obs, reward, terminated, truncated, info = env.step(action)
            total += reward
            done = terminated or truncated
        if env_id == "ImmuneWorld-v0":
            frame = env.render()
            console.print(f"{env_id}: return {total:.2f}, best response "
                          f"{RESPONSE_CODES[int(info['best_response'])]}, "
                          f"{int(info['cycle'])} cycles")
        else:
            console.print(env.render(), soft_wrap=True, highlight=False)
            console.print(f"{env_id}: return {total:.2f}, best response "
                          f"{RESPONSE_CODES[int(info['best_response'])]}")
        env.close()
    path = Path(out_dir) / "immuneworld_episode.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        plt.imsave(tmp, frame, format="png")
    console.print(f"wrote {path}")
    return path



def planner_leaderboard(out_dir: str | os.PathLike[str] = "immunegym-out",
                        console: Console | None = None) -> Path:
    """Standard of care vs CEM vs MPC vs a short PPO (and random), judged in ImmuneSim.

    The pretrained world model plans (CEM, and MPC replanning every 2 cycles from the
    latest biopsy and scan) and trains (PPO, 30k steps); 48 held-out ImmuneSim patients
    judge them over 8 cycles; the oracle is CEM with ImmuneSim as its model. Prints the
    leaderboard and writes ``leaderboard.md`` / ``leaderboard.png`` / ``pareto.png`` into
    ``out_dir``, then :func:`mpc_vs_standard_of_care`.

    Returns
    -------
    pathlib.Path
        The leaderboard plot.
    """
    from immunegym.benchmarks.planners import (
        LeaderboardConfig,
        run_leaderboard,
        show_and_write,
    )

    console = console or Console()
    cfg = LeaderboardConfig(n_patients=48, horizon=8, cem_population=32, cem_iterations=3,
                            beam_width=0, ppo_timesteps=30_000, rllib_iterations=0,
                            replan_every=2)
    agents = ["random", "standard_of_care", "sb3_ppo", "cem", "mpc"]
    console.print("planner leaderboard: random, standard of care, PPO (30k steps in the world "
                  "model), CEM and MPC, on 48 held-out ImmuneSim patients")
    result = run_leaderboard(cfg, only=agents, log=console.print)
    show_and_write(result, out=Path(out_dir), console=console)
    mpc_vs_standard_of_care(out_dir, console=console)
    return Path(out_dir) / "leaderboard.png"


class _Recorder:
    """A policy that remembers what its episodes started from (the demo's history)."""

    def __init__(self, policy) -> None:
        self.policy, self.name, self.episodes = policy, policy.name, None

    def start(self, episodes) -> None:
        self.episodes = episodes
        self.policy.start(episodes)

    def act(self, obs, infos):
        return self.policy.act(obs, infos)


def mpc_vs_standard_of_care(out_dir: str | os.PathLike[str] = "immunegym-out",
                            console: Console | None = None, *, n_patients: int = 8,
                            horizon: int = 8, seed: int = 0) -> Path:
    """One held-out patient: what MPC gave against standard of care, as a counterfactual tree.

    Both policies act on the same ``n_patients`` held-out ImmuneSim patients (MPC plans in
    the world model and replans every 2 cycles from the latest biopsy and scan); the patient
    where the two differ most in true return is shown. The doses each actually gave are
    written as protocols (:func:`~immunegym.planning.regimen.describe_plan`) and branched
    from that patient's baseline biopsy and scan in the world model
    (:func:`~immunegym.planning.counterfactuals.counterfactual`); ImmuneSim's own outcome
    of each is printed beside the prediction.

    Returns
    -------
    pathlib.Path
        The counterfactual tree PNG.
    """
    import numpy as np

    from agents.mpc import MPCPlanner
    from agents.standard_of_care import StandardOfCare
    from immunegym.planning.counterfactuals import counterfactual, plot_counterfactual_tree
    from immunegym.planning.evaluate import evaluate_policy, leaderboard_scenario
    from immunegym.planning.regimen import describe_plan
    from immunegym.world_model import load
    from immunegym.world_model.timelines import baseline_timelines

    console = console or Console()
    model = load()
    scenario = leaderboard_scenario(n_patients=n_patients, horizon=horizon)
    policies = {"standard of care": _Recorder(StandardOfCare()),
                "MPC": _Recorder(MPCPlanner("world", model=model, population=32, iterations=3,
                                            replan_every=2, pessimism=1.0, seed=seed))}
    runs = {k: evaluate_policy(p, "sim", scenario, model=model, seed=seed)
            for k, p in policies.items()}
    gap = runs["MPC"].returns - runs["standard of care"].returns
    i = int(np.argmax(np.abs(gap)))
    start = policies["standard of care"].episodes
    texts = {k: describe_plan(r.given[i]) or "none" for k, r in runs.items()}
    pid = str(start.patient_id[i])
    history = baseline_timelines(start.composition[i:i + 1], start.sod_mm[i:i + 1], [pid],
                                 cancer_type=str(start.cancer_type[i]), programs=())
    regimens = list(dict.fromkeys(texts.values()))
    cf = counterfactual(history, regimens, 32, model=model, horizon=horizon, seed=seed)
    table = Table(title=f"MPC vs standard of care for held-out patient {pid} "
                        f"({start.cancer_type[i]}, {horizon} cycles)")
    for col in ("policy", "what it gave", "return (ImmuneSim)", "best response (ImmuneSim)"):
        table.add_column(col)
    for k, r in runs.items():
        table.add_row(k, texts[k], f"{r.returns[i]:+.2f}", str(r.best_response[i]))
    console.print(table)
    path = plot_counterfactual_tree(
        cf, Path(out_dir) / "mpc_vs_standard_of_care_tree.png",
        title=f"{pid}: standard of care vs MPC, world-model branches")
    console.print(f"wrote {path}")
    return path
