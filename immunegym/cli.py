"""The ``immunegym`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="immunegym: a world simulator of the tumor immune microenvironment.",
    no_args_is_help=True,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks; each writes JSON with --json.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
data_app = typer.Typer(help="Data: generated cohorts.", no_args_is_help=True)
app.add_typer(data_app, name="data")
sim_app = typer.Typer(help="ImmuneSim: the mechanistic ground truth.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")
console = Console()


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Directory for figures.")] = Path("immunegym-out"),
) -> None:
    """Run the main job on the bundled real data (what `make demo` runs)."""
    from immunegym.demo import run_demo

    run_demo(out, console=console)


@app.command()
def ontology() -> None:
    """Print the unified cell ontology with its Cell Ontology ids."""
    from immunegym.ontology import default_ontology

    console.print(default_ontology().render(), highlight=False)


@app.command()
def harmonize(
    file: Annotated[Path, typer.Argument(help="An .h5ad file of cells.")],
    key: Annotated[str, typer.Option("--key", help="obs column with cell-type labels.")],
    convention: Annotated[
        str | None, typer.Option(help="Label code convention, e.g. sade_feldman_2018.")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Fail on unrecognised labels.")] = False,
    csv: Annotated[Path | None, typer.Option(help="Also write the report as CSV.")] = None,
) -> None:
    """Map the labels in one obs column onto the ontology and print the report."""
    from immunegym._atomic import atomic_path
    from immunegym.data import DataValidationError, read_h5ad
    from immunegym.ontology import UnmappedLabelError, harmonization_report

    try:
        adata = read_h5ad(file)
    except (FileNotFoundError, DataValidationError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    if key not in adata.obs.columns:
        console.print(f"[red]error:[/red] --key {key!r}: {str(file)!r} has no obs column "
                      f"{key!r}; available: {list(adata.obs.columns)}")
        raise typer.Exit(2)
    labels = adata.obs[key].astype(object).to_numpy()
    try:
        report = harmonization_report(labels, convention=convention, strict=strict)
    except (UnmappedLabelError, ValueError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None
    frame = report.to_frame().sort_values("n_cells", ascending=False)
    table = Table(title=f"{file.name}: obs[{key!r}] -> unified ontology")
    for col in ("label", "node", "cl_id", "cl_label", "rule", "confidence", "n_cells"):
        table.add_column(col, justify="right" if col in ("confidence", "n_cells") else "left")
    for _, row in frame.iterrows():
        table.add_row(str(row["label"]), str(row["node"]), str(row["cl_id"]),
                      str(row["cl_label"]), row["rule"], f"{row['confidence']:.1f}",
                      str(row["n_cells"]))
    console.print(table)
    console.print(
        f"{len(frame)} distinct labels, {report.mapped_fraction:.1%} of cells mapped; "
        f"junk: {report.junk or 'none'}; unmapped: {report.unmapped or 'none'}"
    )
    if csv is not None:
        with atomic_path(csv) as tmp:
            frame.to_csv(tmp, index=False)
        console.print(f"wrote {csv}")


@bench_app.command("harmonize")
def bench_harmonize(
    n_labels: Annotated[int, typer.Option(help="Per-cell labels to harmonize.")] = 1_000_000,
    repeats: Annotated[int, typer.Option(help="Timed repetitions (best is reported).")] = 3,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """Time harmonize_labels on N per-cell labels drawn from real atlas conventions."""
    from immunegym.benchmarks.speed import harmonize_speed

    result = harmonize_speed(n_labels=n_labels, repeats=repeats)
    console.print_json(json.dumps(result))
    if json_path is not None:
        from immunegym._atomic import atomic_path

        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")


@data_app.command("make-suite")
def data_make_suite(
    out: Annotated[Path, typer.Option(help="Output directory.")],
    use_ray: Annotated[bool, typer.Option("--ray", help="Generate cohorts as Ray tasks.")] = False,
    address: Annotated[str | None, typer.Option(help="Address of an existing Ray cluster.")
                       ] = None,
    n_patients: Annotated[int | None, typer.Option(help="Patients per cohort (default 60).")
                          ] = None,
    horizon_days: Annotated[int | None, typer.Option(help="Follow-up (default 365).")] = None,
    cohort: Annotated[list[str] | None, typer.Option(help="Only these cohorts (repeatable).")
                      ] = None,
) -> None:
    """Write the default 14-cohort suite: <name>.h5ad + <name>.truth.safetensors + suite.json."""
    from rich.progress import Progress

    from immunegym.sim.suite import make_suite, suite_specs

    try:
        specs = suite_specs(n_patients=n_patients, horizon_days=horizon_days, names=cohort)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    with Progress(console=console) as progress:
        task = progress.add_task("cohorts", total=len(specs))
        manifest = make_suite(out, specs, use_ray=use_ray, address=address,
                              progress=lambda name: progress.advance(task))
    console.print(f"wrote {len(specs)} cohorts and {manifest}")


@bench_app.command("realism")
def bench_realism(
    json_path: Annotated[Path, typer.Option("--json", help="Write results here.")],
    quick: Annotated[bool, typer.Option(help="Quarter-size cohorts.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of patients and bootstraps.")] = 0,
) -> None:
    """Realism checks of ImmuneSim: random dosing vs standard of care over a year, every drug
    every cycle, neutrophil nadir and recovery, CheckMate 067 PFS."""
    from immunegym._atomic import atomic_path
    from immunegym.benchmarks import realism

    result = realism.run(quick=quick, seed=seed)
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=float) + "\n")
    rg = result["random_vs_guideline"]
    table = Table(title=f"ImmuneSim-v0, {rg['cycles']} cycles, {rg['n_patients']} held-out "
                  "patients: random minus guideline (95% CI)")
    for col in ("metric", "random", "guideline", "difference"):
        table.add_column(col)
    for key, diff in rg["random_minus_guideline"].items():
        table.add_row(key, f"{rg['random'][key]:.3f}", f"{rg['standard_of_care'][key]:.3f}",
                      f"{diff['mean']:+.3f} [{diff['ci95'][0]:+.3f}, {diff['ci95'][1]:+.3f}]")
    console.print(table)
    console.print(f"wrote {json_path}")


@bench_app.command("sim")
def bench_sim(
    batch: Annotated[list[int] | None, typer.Option(help="Batch sizes (repeatable).")] = None,
    days: Annotated[int, typer.Option(help="Timed days per batch.")] = 30,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """ImmuneSim throughput (patient-days/s) and memory per patient at several batch sizes."""
    import torch

    from immunegym.benchmarks.speed import sim_speed

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    result = sim_speed(batches=batch or [1, 1_000, 100_000], days=days, device=device)
    table = Table(title=f"ImmuneSim step on {device} ({result['torch_threads']} threads)")
    for col in ("batch", "patient-days/s", "state bytes/patient"):
        table.add_column(col, justify="right")
    for row in result["results"]:
        table.add_row(f"{row['batch']:,}", f"{row['patient_days_per_s']:,.0f}",
                      f"{row['state_bytes_per_patient']:,.0f}")
    console.print(table)
    if json_path is not None:
        from immunegym._atomic import atomic_path

        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")


@bench_app.command("speed")
def bench_speed(
    envs: Annotated[list[int] | None, typer.Option(
        "--envs", help="Vector sizes (repeatable); default 1, 256, 4096, 65536.")] = None,
    sync_envs: Annotated[list[int] | None, typer.Option(
        "--sync-envs", help="SyncVectorEnv reference sizes (repeatable); default 1, 256.")] = None,
    quick: Annotated[bool, typer.Option(help="Only 1 and 256 envs, reference at 1.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """Env-steps/s of the ImmuneWorld-v0 and ImmuneSim-v0 vector envs, memory, model FLOPs."""
    import torch

    from immunegym.benchmarks.env_speed import env_speed

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = envs or ([1, 256] if quick else [1, 256, 4096, 65_536])
    sync = sync_envs or ([1] if quick else [1, 256])

    def progress(row: dict) -> None:
        console.print(f"{row['env_id']:<15} {row['vectorizer']:<6} {row['num_envs']:>6,} envs: "
                      f"{row['env_steps_per_s']:>10,.0f} env-steps/s, peak RSS "
                      f"{row['peak_rss_mb']:,.0f} MB")

    result = env_speed(sizes, sync, device=device, on_row=progress)
    table = Table(title=f"Vector env throughput on {device}")
    for col in ("env id", "vectorizer", "envs", "env-steps/s", "kB/env", "peak RSS MB",
                "% peak"):
        table.add_column(col, justify="right", no_wrap=True)
    for row in result["results"]:
        frac = row.get("fraction_of_matmul_peak")
        state = row.get("state_bytes_per_env")
        table.add_row(row["env_id"], row["vectorizer"], f"{row['num_envs']:,}",
                      f"{row['env_steps_per_s']:,.0f}",
                      "-" if state is None else f"{state / 1e3:,.1f}",
                      f"{row['peak_rss_mb']:,.0f}", "-" if frac is None else f"{100 * frac:.1f}")
    console.print(table)
    if json_path is not None:
        from immunegym._atomic import atomic_path

        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")


@bench_app.command("planners")
def bench_planners(
    quick: Annotated[bool, typer.Option(
        help="64 patients, smaller searches, 30k PPO steps: minutes on 2 CPUs.")] = False,
    n_patients: Annotated[int | None, typer.Option(help="Held-out patients.")] = None,
    horizon: Annotated[int | None, typer.Option(help="Cycles per episode.")] = None,
    ppo_timesteps: Annotated[int | None, typer.Option(
        help="SB3 PPO training steps (0 leaves PPO out).")] = None,
    rllib_iterations: Annotated[int | None, typer.Option(
        help="RLlib PPO iterations (0 leaves it out; the full run has 0).")] = None,
    cem_population: Annotated[int | None, typer.Option(
        help="CEM plans per patient and iteration (the oracle uses the same).")] = None,
    cem_iterations: Annotated[int | None, typer.Option(
        help="CEM iterations (the oracle uses the same).")] = None,
    beam_width: Annotated[int | None, typer.Option(
        help="Beam search width (0 leaves beam out).")] = None,
    agent: Annotated[list[str] | None, typer.Option(
        "--agent", help="Run only these agents (repeatable); the oracle always runs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of agents and envs.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Directory for leaderboard.md and leaderboard.png.")] = None,
) -> None:
    """Every agent on the same held-out patients, judged in ImmuneSim (the ground truth)."""
    import dataclasses

    import torch

    from immunegym.benchmarks.planners import FULL, QUICK, run_leaderboard, show_and_write

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = QUICK if quick else FULL
    overrides = {"n_patients": n_patients, "horizon": horizon, "ppo_timesteps": ppo_timesteps,
                 "rllib_iterations": rllib_iterations, "cem_population": cem_population,
                 "cem_iterations": cem_iterations, "beam_width": beam_width}
    cfg = dataclasses.replace(cfg, seed=seed,
                              **{k: v for k, v in overrides.items() if v is not None})
    try:
        result = run_leaderboard(cfg, device=device, only=agent, log=console.print)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    result["command"] = "immunegym bench planners" + (" --quick" if quick else "")
    show_and_write(result, json_path=json_path, out=out, console=console)


@app.command()
def plan(
    cohort: Annotated[Path, typer.Option(help="Registered cohort (.h5ad) with the patient.")],
    patient: Annotated[str, typer.Option(help="Patient id in the cohort.")],
    budget: Annotated[int, typer.Option(help="Plans scored per search.")] = 320,
    method: Annotated[str, typer.Option(help="beam, cem or exhaustive.")] = "beam",
    horizon: Annotated[int, typer.Option(help="Cycles (3 weeks) planned.")] = 8,
    regimen: Annotated[list[str] | None, typer.Option(
        "--regimen", help="Also compare these regimens (text or name; repeatable).")] = None,
    samples: Annotated[int, typer.Option(help="Counterfactual samples per regimen.")] = 60,
    top: Annotated[int, typer.Option(help="Searched regimens shown.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of search and counterfactuals.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    out: Annotated[Path, typer.Option(help="Directory for the tree PNG.")] = Path(
        "immunegym-out"),
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """Ranked regimens for one patient, their counterfactual outcomes and the tree plot."""
    import anndata as ad
    import torch

    from immunegym.planning.counterfactuals import counterfactual, plot_counterfactual_tree
    from immunegym.planning.regimen import STANDARD_OF_CARE, standard_of_care
    from immunegym.planning.regimen_search import search
    from immunegym.world_model import load

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not cohort.exists():
        raise typer.BadParameter(f"--cohort: no file {cohort}")
    adata = ad.read_h5ad(cohort)
    model = load(device=device)
    try:
        found = search(adata, budget, patients=[patient], method=method, horizon=horizon,
                       model=model, top_k=top, seed=seed, device=device)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    ranked = found.ranked[0]
    cancer = str(found_cancer(adata, patient))
    candidates = [str(p) for p, _ in ranked]
    extra = list(regimen or [])
    if cancer in STANDARD_OF_CARE:
        extra.append(str(standard_of_care(cancer)))
    extra.append("none")
    for text in extra:
        if text not in candidates:
            candidates.append(text)
    try:
        cf = counterfactual(adata, candidates, samples, patient=patient, model=model,
                            horizon=horizon, seed=seed, device=device)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    frame = cf.table()
    predicted = {str(p): v for p, v in ranked}
    labels = [f"{i + 1}" if text in predicted else ("none" if text == "none" else
              ("SOC" if text == extra[-2] and cancer in STANDARD_OF_CARE else "user"))
              for i, text in enumerate(candidates)]
    console.print(f"[bold]{patient}[/bold] ({cancer}); regimens (1-{len(ranked)}: found by "
                  f"{method} in the world model, SOC: standard of care):")
    for label, text in zip(labels, candidates, strict=True):
        console.print(f"  {label:>4}  {text}", highlight=False)
    table = Table(title="predicted outcomes after "
                  f"{horizon} cycles ({cf.n_samples} samples per regimen)")
    for col in ("regimen", "predicted return", "P(response)", "P(progression)",
                "median SOD mm (5-95%)", "sd log SOD epistemic / aleatoric"):
        table.add_column(col, justify="right")
    for label, text in zip(labels, candidates, strict=True):
        row = frame.loc[text]
        table.add_row(label, f"{predicted[text]:.2f}" if text in predicted else "-",
                      f"{row.p_response:.0%}", f"{row.p_progression:.0%}",
                      f"{row.median_final_sod_mm:.0f} ({row.final_sod_mm_q05:.0f}-"
                      f"{row.final_sod_mm_q95:.0f})",
                      f"{row.sd_log_sod_epistemic:.2f} / {row.sd_log_sod_aleatoric:.2f}")
    console.print(table)
    png = plot_counterfactual_tree(cf, out / f"counterfactual_tree_{_safe(patient)}.png")
    console.print(f"wrote {png}")
    if json_path is not None:
        from immunegym._atomic import atomic_path

        result = {"patient": patient, "cancer_type": cancer, "method": method,
                  "budget": budget, "ranked": [{"regimen": str(p), "predicted_return": v}
                                               for p, v in ranked],
                  "counterfactual": cf.to_dict()}
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")


def found_cancer(adata, patient: str) -> str:
    """The cancer type of a cohort patient (from the registered obs columns)."""
    obs = adata.obs
    rows = obs[obs["patient_id"].astype(str) == patient]
    return str(rows["cancer_type"].iloc[0]) if len(rows) and "cancer_type" in obs else ""


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@sim_app.command("calibrate")
def sim_calibrate(
    n: Annotated[int, typer.Option(help="Patients per arm for the check.")] = 4000,
    seed: Annotated[int, typer.Option(help="Seed of the check.")] = 0,
    fit: Annotated[bool, typer.Option(help="Fit the anchor parameters first.")] = False,
    fit_n: Annotated[int, typer.Option(help="Patients per arm while fitting.")] = 1000,
    sweeps: Annotated[int, typer.Option(help="Gauss-Seidel sweeps over the anchors.")] = 2,
    workers: Annotated[int, typer.Option(
        help="Processes fitting cancer types in parallel.")] = 1,
    params_out: Annotated[Path, typer.Option(
        help="Where --fit writes the parameter file.")] = Path(
        "immunegym-out/immunesim-params-v2.json"),
    ship: Annotated[bool, typer.Option(
        help="Maintainers: --fit replaces the parameter file shipped in the package.")
    ] = False,
    version: Annotated[str, typer.Option(help="Version written into the file.")] = "2",
    out: Annotated[Path, typer.Option(help="Directory for the plot.")] = Path("immunegym-out"),
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """Print fit and validation tables (target, simulated, CI, IA) and write a plot.

    Fitted and checked anchors are single agents and control arms (SCIENCE.md); validation
    is the CheckMate 067 combination and independent action for every pair of calibrated
    single agents on the same simulated patients. ``--fit`` refits first and writes the
    parameter file to ``--params-out`` (the shipped file only with ``--ship``).
    """
    from immunegym._atomic import atomic_path
    from immunegym.sim import calibrate as cal
    from immunegym.sim.parameters import load_parameters

    if n < 1 or fit_n < 1:
        raise typer.BadParameter(f"n: expected a positive integer, got {min(n, fit_n)}")
    params = load_parameters()
    if fit:
        if workers < 1:
            raise typer.BadParameter(f"--workers: expected >= 1, got {workers}")
        params, record = cal.fit(params, n=fit_n, sweeps=sweeps, workers=workers,
                                 log=console.print)
        target = cal.default_parameter_path() if ship else params_out
        cal.write_parameters(params, record, target, version)
        console.print(f"wrote {target}")
    report = cal.check(params, n=n, seed=seed)

    def range_text(c) -> str:
        a = c.anchor
        if a.metric.endswith("_days"):
            return f"{a.low / cal.MONTH:.1f}-{a.high / cal.MONTH:.1f} mo"
        return f"{a.low:.3f}-{a.high:.3f}"

    def value_text(c) -> str:
        if c.anchor.metric.endswith("_days"):
            return f"{c.simulated / cal.MONTH:.1f} mo"
        return f"{c.simulated:.3f} ({c.ci[0]:.3f}-{c.ci[1]:.3f})"

    for title, rows in (("fit (single agents and control arms)", report.anchors),
                        ("validation (never fitted)", report.validation)):
        table = Table(title=f"ImmuneSim calibration: {title}, n={n} per arm, seed {seed}")
        for col in ("arm", "metric", "target", "accepted", "simulated (95% CI)", "fitted by",
                    "status"):
            table.add_column(col)
        for c in rows:
            target = (f"{c.anchor.target / cal.MONTH:.1f} mo"
                      if c.anchor.metric.endswith("_days") else f"{c.anchor.target:.3f}")
            table.add_row(c.anchor.arm.trial, c.anchor.metric, target, range_text(c),
                          value_text(c), c.anchor.parameter or "-",
                          "ok" if c.within else "MISS")
        console.print(table)
    table = Table(title="Independent action on the same patients (combination ORR in "
                  f"[IA - {cal.IA_LOW}, IA + {cal.IA_HIGH}], <= {cal.MAX_NEITHER_SHARE:.0%} "
                  "of its responders respond to neither drug alone)")
    for col in ("population", "combination", "first", "second", "IA", "combination ORR",
                "neither", "status"):
        table.add_column(col)
    for p in report.pairs:
        pop = p.pair.first.cancer_type + (f" {p.pair.first.driver}" if p.pair.first.driver
                                          else "")
        table.add_row(pop, p.pair.combination.regimen, f"{p.first:.3f}", f"{p.second:.3f}",
                      f"{p.independent_action:.3f}", f"{p.combination:.3f}",
                      f"{p.neither_share:.3f}", "ok" if p.within else "MISS")
    console.print(table)
    png = cal.plot_report(report, out / "immunesim_calibration.png")
    console.print(f"wrote {png}")
    if json_path is not None:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    missed = report.missed + [c.anchor.label for c in report.validation if not c.within] + [
        p.pair.combination.trial for p in report.pairs if not p.within]
    if missed:
        console.print(f"[red]outside their ranges: {missed}[/red]")
        raise typer.Exit(1)


@sim_app.command("combinations")
def sim_combinations(
    n: Annotated[int, typer.Option(help="Patients per cancer type.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """What ImmuneSim predicts for every two-therapy combination, next to independent
    action from its own single agents on the same patients (never fitted)."""
    from immunegym._atomic import atomic_path
    from immunegym.sim import calibrate as cal

    if n < 1:
        raise typer.BadParameter(f"--n: expected a positive integer, got {n}")
    checks = cal.predict_combinations(n=n, seed=seed)
    table = Table(title=f"Two-therapy combinations vs independent action (n={n} per type)")
    for col in ("cancer type", "combination", "first", "second", "IA", "combination ORR",
                "minus IA", "neither"):
        table.add_column(col)
    rows = []
    for c in checks:
        row = {"cancer_type": c.pair.first.cancer_type, "combination": c.pair.combination.regimen,
               "first": c.first, "second": c.second, "independent_action": c.independent_action,
               "combination_orr": c.combination, "neither_share": c.neither_share}
        rows.append(row)
        table.add_row(row["cancer_type"], row["combination"], f"{c.first:.3f}",
                      f"{c.second:.3f}", f"{c.independent_action:.3f}", f"{c.combination:.3f}",
                      f"{c.combination - c.independent_action:+.3f}", f"{c.neither_share:.2f}")
    console.print(table)
    if json_path is not None:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps({"n": n, "seed": seed, "pairs": rows}, indent=2) + "\n")


@app.command()
def train(
    config: Annotated[Path, typer.Option(help="Training recipe (TOML), e.g. "
                                         "immunegym/world_model/configs/default.toml.")],
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")],
    num_workers: Annotated[int, typer.Option(help="Ray Train workers (1 = train in this "
                                             "process).")] = 1,
    address: Annotated[str | None, typer.Option(help="Address of an existing Ray cluster.")
                       ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    log_dir: Annotated[Path, typer.Option(help="TensorBoard log directory.")
                       ] = Path("immunegym-out/tensorboard"),
) -> None:
    """Train the world model from a recipe; writes safetensors + config + model card."""
    import sys

    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from immunegym.world_model.recipe import Recipe, run_recipe

    try:
        recipe = Recipe.load(config)
    except (FileNotFoundError, ValueError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    if num_workers < 1:
        raise typer.BadParameter(f"--num-workers: expected >= 1, got {num_workers}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn(
        "{task.completed}/{task.total} {task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        data_task = progress.add_task("cohorts", total=None, info="")
        tasks = {m: progress.add_task(f"member {m}", total=recipe.train.epochs, info="")
                 for m in range(recipe.n_members)}

        def on_epoch(member: int, record) -> None:
            progress.update(tasks[member], completed=record.epoch + 1,
                            info=f"train {record.train_loss:.3f} val {record.val_loss:.3f}")

        model = run_recipe(recipe, out, num_workers=num_workers, address=address,
                           device=device, log_dir=log_dir, on_epoch=on_epoch,
                           progress=lambda name: progress.update(data_task, advance=1,
                                                                 info=name),
                           command=" ".join(["immunegym", *sys.argv[1:]]))
    console.print(f"{model!r}\nwrote {out} (TensorBoard logs: {log_dir})")


def _evaluation_command(name: str, summary: str):
    """Register ``immunegym bench <name>``: one evaluation benchmark (or ``all``)."""

    def command(
        json_path: Annotated[Path, typer.Option("--json", help="Write results here.")],
        quick: Annotated[bool, typer.Option(
            help="Smaller held-out cohorts and settings; `all` takes <= 10 min on 2 CPUs."
        )] = False,
        ray: Annotated[bool, typer.Option(
            "--ray", help="Run folds and cohorts as Ray tasks.")] = False,
        address: Annotated[str | None, typer.Option(
            help="Ray cluster address (with --ray); local Ray when omitted.")] = None,
        out: Annotated[Path | None, typer.Option(
            help="Directory for report.md and its plots.")] = None,
        checkpoint: Annotated[Path | None, typer.Option(
            help="World-model checkpoint directory (default: the pretrained model).")] = None,
        suite: Annotated[Path | None, typer.Option(
            help="Read the training suite from this directory instead of generating it.")
        ] = None,
        seed: Annotated[int, typer.Option(help="Seed of bootstraps and simulations.")] = 0,
    ) -> None:
        from immunegym.benchmarks.common import BenchContext
        from immunegym.benchmarks.runner import (
            headline,
            resolve,
            run_benchmarks,
            write_json,
            write_report,
        )
        from immunegym.world_model import load

        if address is not None and not ray:
            raise typer.BadParameter("--address needs --ray")
        ctx = BenchContext(load(checkpoint), quick=quick, seed=seed, ray=ray, address=address,
                           suite_dir=suite, progress=lambda m: console.log(m))
        line = f"immunegym bench {name}" + (" --quick" if quick else "") + \
            (" --ray" if ray else "")
        result = run_benchmarks(resolve(name), ctx, command=line, log=console.log)
        table = Table(title=f"bench {name}: headline figures (all of them: the JSON and "
                            "the report)")
        for col in ("figure", "method", "value", "95% CI"):
            table.add_column(col, overflow="fold")
        for where, method, value, ci in headline(result):
            ci_text = "" if not ci or None in ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"
            table.add_row(where, method, "" if value is None else f"{value:.3f}", ci_text)
        console.print(table)
        console.print(f"wrote {write_json(result, json_path)}")
        if out is not None:
            console.print(f"wrote {write_report(result, out)}")

    command.__doc__ = summary
    bench_app.command(name)(command)


for _name, _summary in (
    ("reconstruction", "Leave-one-biopsy-out and daily reconstruction vs ImmuneSim's truth."),
    ("transfer", "Leave-one-cancer-type-out: held-out type vs in-distribution model."),
    ("counterfactual", "Six regimens from the same hidden state: rankings vs ImmuneSim."),
    ("response", "Response AUROC: 14 synthetic cohorts and real MORRISON-1 / Sade-Feldman."),
    ("all", "Every evaluation benchmark into one JSON (and one report with --out)."),
):
    _evaluation_command(_name, _summary)


@bench_app.command("world-model")
def bench_world_model(
    json_path: Annotated[Path, typer.Option("--json", help="Write results here.")],
    quick: Annotated[bool, typer.Option(help="Held-out split of the default suite only, "
                                        "fewer samples: a few minutes on CPU.")] = False,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint directory (default: "
                                                    "the pretrained model).")] = None,
    suite: Annotated[Path | None, typer.Option(help="Read the default suite from this "
                                               "directory instead of generating it.")] = None,
    speed: Annotated[bool, typer.Option(help="Also time forward throughput.")] = True,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    record: Annotated[bool, typer.Option(help="Write the figures into the checkpoint's "
                                         "model card.")] = False,
    observation_only: Annotated[Path | None, typer.Option(
        help="A checkpoint trained without the privileged state, scored on the same origins "
             "(default: the shipped observation-only variant when there is one).")] = None,
) -> None:
    """World model vs persistence, ridge, cohort-mean and history-mean baselines (and the
    privileged ridge on the truth) on held-out patients."""
    from rich.progress import Progress

    from immunegym._atomic import atomic_path
    from immunegym.benchmarks.world_model import run_benchmark
    from immunegym.world_model import load
    from immunegym.world_model.checkpoint import PRETRAINED_OBSERVATION_ONLY

    model = load(checkpoint, device=device)
    if observation_only is None and checkpoint is None and PRETRAINED_OBSERVATION_ONLY.is_dir():
        observation_only = PRETRAINED_OBSERVATION_ONLY
    other = load(observation_only, device=device) if observation_only is not None else None
    with Progress(console=console) as progress:
        task = progress.add_task("cohorts", total=None)
        result = run_benchmark(model, quick=quick, suite_dir=suite,
                               progress=lambda name: progress.advance(task),
                               observation_only=other)
    if speed:
        from immunegym.benchmarks.speed import world_model_speed

        result["speed"] = world_model_speed(model, batches=(1, 256) if quick else
                                            (1, 256, 4096))
    table = Table(title=f"world model vs baselines ({result['main_set']}, tree-W1, lower is "
                        "better)")
    columns = ("world_model", "persistence", "ridge", "cohort_mean", "history_mean",
               "ridge_truth", "oracle_persistence")
    table.add_column("horizon", justify="right")
    for col in (*columns, "gain"):
        table.add_column(col, justify="right")
    for key in ("one_step", "rollout_6"):
        row = result[key]
        table.add_row(key, *(f"{row[m]:.3f}" if m in row else "-" for m in columns),
                      f"{row['improvement_vs_best_baseline']:+.0%}")
    console.print(table)
    by_h = " ".join(f"{c:.2f}" for c in result["coverage90_by_horizon"])
    console.print(f"coverage90 {result['coverage90']:.3f} (by horizon {by_h}); estimate "
                  f"today {result['rollout_6'].get('estimate_today', float('nan')):.3f} vs "
                  f"noise floor {result['rollout_6'].get('noise_floor', float('nan')):.3f}  "
                  f"({result['n_origins']} origins, {result['n_patients']} patients, "
                  f"{result['seconds']:.0f} s)")
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {json_path}")
    if record:
        from immunegym.world_model.checkpoint import PRETRAINED

        keys = ("one_step", "rollout_6", "coverage90", "coverage90_by_horizon", "n_origins",
                "n_patients", "main_set")
        model.card["evaluation"] = {
            "command": "immunegym bench world-model" + (" --quick" if quick else ""),
            **{k: result[k] for k in keys}}
        model.to("cpu").save(checkpoint or PRETRAINED)
        console.print(f"recorded the figures in {checkpoint or PRETRAINED}/MODEL_CARD.md")


if __name__ == "__main__":  # pragma: no cover
    app()
