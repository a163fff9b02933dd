"""The ``immunegym`` command line.

Every command checks its options before doing any work (sizes with their upper bounds and
a memory estimate where a size allocates, seeds, devices, choices, input files, and that
output paths can be written), so a mistake costs a second, not a run. A failing command
prints one line, ``error: <field>: got <value>; expected <what>``, and exits 1;
``immunegym --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup
from typer.exceptions import TyperException

from immunegym import validation as v
from immunegym.validation import ValidationError


class _CleanErrors(TyperGroup):
    """The root command: a failing command prints one line and exits 1, never a traceback.

    ``immunegym --debug ...`` (or ``IMMUNEGYM_DEBUG=1``) lets the exception through with its
    traceback. Usage errors stay click's (exit 2); Ctrl-C stays an interrupt.
    """

    def invoke(self, ctx):  # noqa: ANN001 (typer's vendored click Context)
        try:
            return super().invoke(ctx)
        # typer >= 0.26 vendors click: its Exit/Abort/usage errors are typer's own classes.
        except (typer.Exit, typer.Abort, TyperException, KeyboardInterrupt):
            raise
        except Exception as err:
            if ctx.params.get("debug") or os.environ.get("IMMUNEGYM_DEBUG") == "1":
                raise
            typer.echo(_one_line(err), err=True)
            raise typer.Exit(1) from None


def _one_line(err: BaseException) -> str:
    """``error: <message>`` on one line (the exception's type unless it is a ValidationError)."""
    message = str(err) or type(err).__name__
    if not isinstance(err, ValidationError):
        message = f"{type(err).__name__}: {message}"
    first, *rest = message.splitlines() or [""]
    extra = f" (+{len(rest)} more lines)" if rest else ""
    return f"error: {first}{extra} (rerun with --debug for the traceback)"


app = typer.Typer(
    cls=_CleanErrors,
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

# Upper bounds of the sizes the commands take: far above any documented run, low enough
# that a typo (an extra zero or two) is refused in a second instead of running for days.
MAX_PATIENTS = 10_000_000
MAX_DAYS = 3_650
MAX_REPEATS = 1_000
MAX_WORKERS = 1_024
# Measured peaks (see BENCHMARKS.md) with a margin, for the memory estimates.
SIM_BYTES_PER_PATIENT = 8_000        # bench sim: ~4.2 kB/patient measured at batch 200,000
ENV_BYTES_PER_ENV = 16_000           # bench speed: ~8 kB/env at 65,536 envs
LABEL_BYTES = 200                    # bench harmonize: a string object + its mapped copy
COHORT_BYTES_PER_PATIENT = 4_000_000  # make-suite: ~2 MB/patient of cells at one year
ARM_BYTES_PER_PATIENT = 32_000       # sim calibrate: ~14 kB/patient per two-year arm


def _count(field: str, value: int, *, low: int = 1, high: int, hint: str = "") -> int:
    """An integer option in ``low..high`` (the message names the option)."""
    return v.integer(field, value, low=low, high=high, hint=hint)


def _output_file(field: str, path: Path | None) -> Path | None:
    """An output file that can be written (checked before the run, not after it)."""
    if path is None:
        return None
    return _probe(field, v.output_path(field, path), directory=False)


def _output_dir(field: str, path: Path | None) -> Path | None:
    """An output directory that can be created or written."""
    if path is None:
        return None
    return _probe(field, v.output_path(field, path, directory=True), directory=True)


def _probe(field: str, path: Path, *, directory: bool) -> Path:
    """Create and remove a temporary file where ``path`` will be written.

    Permission bits do not say everything (root, read-only mounts, /proc): this asks the
    file system itself, and leaves nothing behind.
    """
    import tempfile

    where = path if (directory and path.is_dir()) else path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as err:
        raise v.bad(field, str(path), f"a writable location ({str(where)!r}: "
                                      f"{err.strerror or err})") from None
    return path


def _directory(field: str, path: Path | None, *, must_hold: str, what: str) -> Path | None:
    """An existing directory holding ``must_hold`` (a checkpoint, a suite)."""
    if path is None:
        return None
    if not path.exists():
        raise v.bad(field, str(path), f"an existing {what} directory (no such directory)")
    if not path.is_dir():
        raise v.bad(field, str(path), f"a {what} directory, not a file")
    if not (path / must_hold).is_file():
        raise v.bad(field, str(path), f"a {what} directory (it has no {must_hold})")
    return path


def _checkpoint(field: str, path: Path | None) -> Path | None:
    return _directory(field, path, must_hold="config.json", what="world-model checkpoint")


def _suite(field: str, path: Path | None) -> Path | None:
    return _directory(field, path, must_hold="suite.json",
                      what="suite (from `immunegym data make-suite`)")


def _seed(field: str, value: int) -> int:
    return int(v.seed(field, value))  # type: ignore[arg-type]


def _device(field: str, value: str) -> str:
    return v.device(field, value)


def _address(address: str | None, use_ray: bool) -> None:
    if address is not None and not use_ray:
        raise v.bad("--address", address, "to be given together with --ray")
    if address is not None and not address.strip():
        raise v.bad("--address", address, "a Ray address (auto, host:port or ray://host:port)")


def _write_json(path: Path, data: Any, **dump: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically."""
    from immunegym._atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, **dump) + "\n")




@app.callback()
def _root(
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show the full traceback when a command fails.")] = False,
) -> None:
    """immunegym: a world simulator of the tumor immune microenvironment."""


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Directory for figures.")] = Path("immunegym-out"),
) -> None:
    """Run the main job on the bundled real data (what `make demo` runs)."""
    _output_dir("--out", out)
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
    v.existing_file("FILE", file, hdf5=True)
    _output_file("--csv", csv)
    if convention is not None:
        from immunegym.ontology.conventions import CONVENTIONS

        v.choice("--convention", convention, sorted(CONVENTIONS))
    from immunegym._atomic import atomic_path
    from immunegym.data import read_h5ad
    from immunegym.ontology import harmonization_report

    adata = read_h5ad(file)
    if key not in adata.obs.columns:
        raise v.bad("--key", key, f"an obs column of {str(file)!r}: one of "
                                  f"{list(adata.obs.columns)}")
    labels = adata.obs[key].astype(object).to_numpy()
    report = harmonization_report(labels, convention=convention, strict=strict)
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
    from immunegym.benchmarks.speed import check_harmonize_speed, harmonize_speed

    check_harmonize_speed(n_labels, repeats, fields=("--n-labels", "--repeats"))
    _output_file("--json", json_path)
    result = harmonize_speed(n_labels=n_labels, repeats=repeats)
    console.print_json(json.dumps(result))
    if json_path is not None:
        _write_json(json_path, result)


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

    from immunegym.sim.suite import check_suite_memory, make_suite, suite_specs

    _address(address, use_ray)
    specs = suite_specs(n_patients=n_patients, horizon_days=horizon_days, names=cohort,
                        fields=("--n-patients", "--horizon-days", "--cohort"))
    check_suite_memory(specs, use_ray=use_ray, field="--n-patients")
    _output_dir("--out", out)
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
    _seed("--seed", seed)
    _output_file("--json", json_path)
    from immunegym.benchmarks import realism

    result = realism.run(quick=quick, seed=seed)
    _write_json(json_path, result, default=float)
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
    from immunegym.benchmarks.speed import check_sim_speed, sim_speed

    device = _device("--device", device)
    batches = batch or [1, 1_000, 100_000]
    check_sim_speed(batches, days, fields=("--batch", "--days"))
    _output_file("--json", json_path)
    result = sim_speed(batches=batches, days=days, device=device)
    table = Table(title=f"ImmuneSim step on {device} ({result['torch_threads']} threads)")
    for col in ("batch", "patient-days/s", "state bytes/patient"):
        table.add_column(col, justify="right")
    for row in result["results"]:
        table.add_row(f"{row['batch']:,}", f"{row['patient_days_per_s']:,.0f}",
                      f"{row['state_bytes_per_patient']:,.0f}")
    console.print(table)
    if json_path is not None:
        _write_json(json_path, result)


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
    from immunegym.benchmarks.env_speed import check_env_speed, env_speed

    device = _device("--device", device)
    sizes = envs or ([1, 256] if quick else [1, 256, 4096, 65_536])
    sync = sync_envs or ([1] if quick else [1, 256])
    check_env_speed(sizes, sync, fields=("--envs", "--sync-envs"))
    _output_file("--json", json_path)

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
        _write_json(json_path, result)


@bench_app.command("planners")
def bench_planners(
    quick: Annotated[bool, typer.Option(
        help="48 patients, smaller searches, 20k PPO steps, 5 RLlib iterations, MPC "
             "replanning every 4 cycles: about 5 minutes on 2 CPUs.")] = False,
    n_patients: Annotated[int | None, typer.Option(help="Held-out patients.")] = None,
    horizon: Annotated[int | None, typer.Option(
        help="Cycles per episode (17: one year).")] = None,
    ppo_timesteps: Annotated[int | None, typer.Option(
        help="SB3 PPO and PPO-Lagrangian training steps (0 leaves both out).")] = None,
    rllib_iterations: Annotated[int | None, typer.Option(
        help="RLlib PPO iterations (0 leaves it out).")] = None,
    cem_population: Annotated[int | None, typer.Option(
        help="CEM plans per patient and iteration (the oracle uses the same).")] = None,
    cem_iterations: Annotated[int | None, typer.Option(
        help="CEM iterations (the oracle uses the same).")] = None,
    beam_width: Annotated[int | None, typer.Option(
        help="Beam search width (0 leaves beam out).")] = None,
    replan_every: Annotated[int | None, typer.Option(
        help="MPC plans again every this many cycles (>= 1).")] = None,
    pessimism: Annotated[float | None, typer.Option(
        help="Risk aversion k of CEM, beam and MPC: mean minus k std over the ensemble "
             "(>= 0; default 1; cem_k0 runs CEM with k = 0 beside it).")] = None,
    cost_target: Annotated[float | None, typer.Option(
        help="PPO-Lagrangian's budget of grade >= 3 adverse events per episode (>= 0; "
             "default 0.6, standard of care's).")] = None,
    agent: Annotated[list[str] | None, typer.Option(
        "--agent", "--only",
        help="Run only these agents (repeatable); the oracle always runs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of agents and envs.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Directory for leaderboard.md, leaderboard.png and pareto.png.")] = None,
) -> None:
    """Every agent on the same held-out patients, judged in ImmuneSim (the ground truth)."""
    import dataclasses

    from immunegym.benchmarks.planners import (
        FULL,
        QUICK,
        check_config,
        check_only,
        run_leaderboard,
        show_and_write,
    )

    device = _device("--device", device)
    cfg = QUICK if quick else FULL
    overrides = {"n_patients": n_patients, "horizon": horizon, "ppo_timesteps": ppo_timesteps,
                 "rllib_iterations": rllib_iterations, "cem_population": cem_population,
                 "cem_iterations": cem_iterations, "beam_width": beam_width,
                 "replan_every": replan_every, "pessimism": pessimism,
                 "cost_target": cost_target}
    cfg = dataclasses.replace(cfg, seed=seed,
                              **{k: x for k, x in overrides.items() if x is not None})
    check_config(cfg, option_names=True)
    check_only(cfg, agent, field="--agent/--only")
    _output_file("--json", json_path)
    _output_dir("--out", out)
    result = run_leaderboard(cfg, device=device, only=agent, log=console.print)
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
    prune: Annotated[bool, typer.Option(
        "--prune/--no-prune", help="Prune the searched plans into protocol text.")] = True,
    tolerance: Annotated[float, typer.Option(
        help="Largest fall in predicted return a pruning edit may cause (>= 0).")] = 0.0,
) -> None:
    """Ranked regimens for one patient, their counterfactual outcomes and the tree plot.

    With ``--prune`` (the default) each searched plan is also simplified into a protocol
    (``anti_pd1 q3w x8``) and printed with its predicted return and, for a cohort ImmuneSim
    generated, its true return.
    """
    from immunegym.env.scenario import MAX_HORIZON
    from immunegym.planning.regimen_search import METHODS

    v.existing_file("--cohort", cohort, hdf5=True)
    method = v.choice("--method", method, METHODS)
    _count("--budget", budget, low=2, high=1_000_000)
    _count("--horizon", horizon, high=MAX_HORIZON)
    _count("--samples", samples, high=100_000)
    _count("--top", top, high=budget, hint="at most --budget")
    _seed("--seed", seed)
    device = _device("--device", device)
    _output_dir("--out", out)
    _output_file("--json", json_path)
    v.number("--tolerance", tolerance, low=0.0)
    from immunegym.planning.regimen import parse_plan

    for text in regimen or []:
        try:
            parse_plan(text)
        except ValueError as err:  # the grammar's own message says what is wrong
            raise v.bad("--regimen", text, f"a regimen text or name ({err})") from None

    from immunegym.data import read_h5ad
    from immunegym.planning.counterfactuals import counterfactual, plot_counterfactual_tree
    from immunegym.planning.regimen import STANDARD_OF_CARE, standard_of_care
    from immunegym.planning.regimen_search import search
    from immunegym.world_model import load

    adata = read_h5ad(cohort)
    if "patient_id" not in adata.obs.columns:
        raise v.bad("--cohort", str(cohort), "a registered cohort (obs has no 'patient_id' "
                                             "column)")
    ids = sorted(set(adata.obs["patient_id"].astype(str)))
    if patient not in ids:
        raise v.bad("--patient", patient, f"a patient id of {cohort.name}, e.g. {ids[:5]}")
    model = load(device=device)
    found = search(adata, budget, patients=[patient], method=method, horizon=horizon,
                   model=model, top_k=top, seed=seed, device=device)
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
    cf = counterfactual(adata, candidates, samples, patient=patient, model=model,
                        horizon=horizon, seed=seed, device=device)
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
    pruned = _prune_ranked(adata, patient, ranked, model=model, horizon=horizon,
                           tolerance=tolerance, seed=seed, device=device) if prune else None
    png = plot_counterfactual_tree(cf, out / f"counterfactual_tree_{_safe(patient)}.png")
    console.print(f"wrote {png}")
    if json_path is not None:
        result = {"patient": patient, "cancer_type": cancer, "method": method,
                  "budget": budget, "ranked": [{"regimen": str(p), "predicted_return": r}
                                               for p, r in ranked],
                  "counterfactual": cf.to_dict()}
        if pruned is not None:
            result.update(tolerance=tolerance, pruned=pruned)
        _write_json(json_path, result)


def _prune_ranked(adata, patient: str, ranked, *, model, horizon: int, tolerance: float,
                  seed: int, device: str) -> list[dict[str, Any]]:
    """Prune the searched plans of ``plan``, print them as protocols, return JSON records."""
    import numpy as np

    from immunegym.planning.pruning import cohort_scorers, prune_plans

    scorers = cohort_scorers(adata, [patient] * len(ranked), model=model, horizon=horizon,
                             seed=seed, device=device)
    pruned = prune_plans(scorers.world, scorers.world_rows,
                         np.stack([p.cycle_doses(horizon) for p, _ in ranked]),
                         tolerance=tolerance)
    truth = None
    if scorers.truth is not None:
        both = np.stack([pruned.original_plans, pruned.plans], axis=1)
        truth = scorers.truth(scorers.truth_rows, both)
    console.print(f"readable plans (searched plans pruned in the world model; an edit is kept "
                  f"when the predicted return falls by at most {tolerance:g}):")
    records = pruned.records()
    for i, rec in enumerate(records):
        rec["rank"] = i + 1
        rec["predicted_return"] = rec.pop("value")
        rec["original_predicted_return"] = rec.pop("original_value")
        rec["true_return"] = None if truth is None else float(truth[i, 1])
        rec["original_true_return"] = None if truth is None else float(truth[i, 0])
        true = ("" if truth is None else f"; true return (ImmuneSim) "
                f"{truth[i, 1]:.2f} (searched plan {truth[i, 0]:.2f})")
        same = next((j + 1 for j in range(i) if records[j]["regimen"] == rec["regimen"]), None)
        console.print(f"  {i + 1:>4}  {rec['regimen']}"
                      + ("" if same is None else f" (as {same})"), highlight=False)
        console.print(f"        predicted return {rec['predicted_return']:.2f} (searched plan "
                      f"{rec['original_predicted_return']:.2f}){true}", highlight=False)
        if rec["regimen"] != rec["original_regimen"]:
            console.print(f"        searched: {rec['original_regimen']}", highlight=False)
    if truth is None:
        console.print(f"  no true return: {scorers.why_no_truth}", highlight=False)
    return records


def found_cancer(adata, patient: str) -> str:
    """The cancer type of a cohort patient (from the registered obs columns)."""
    obs = adata.obs
    rows = obs[obs["patient_id"].astype(str) == patient]
    return str(rows["cancer_type"].iloc[0]) if len(rows) and "cancer_type" in obs else ""


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@app.command("predict-response")
def predict_response(
    file: Annotated[Path, typer.Argument(
        help="Signature-score table (.csv/.tsv: id, regimen and the MORRISON-1 signature "
             "columns) or AnnData of pre-treatment cells (.h5ad).")],
    out: Annotated[Path, typer.Option(help="Output CSV: id, regimen, score, score_lo, "
                                           "score_hi, probability.")],
    id_column: Annotated[str | None, typer.Option(
        help="Table id column (default: id, sample_id or sample).")] = None,
    regimen_column: Annotated[str | None, typer.Option(
        help="Regimen column of the table or of obs (default: regimen, or the AnnData's "
             "registered therapy column).")] = None,
    sample_key: Annotated[str | None, typer.Option(
        help="AnnData: obs column of the sample (default: registered, else sample).")] = None,
    label_key: Annotated[str | None, typer.Option(
        help="AnnData: obs column of the cell-type label (default: registered, else "
             "cell_type).")] = None,
    label_convention: Annotated[str | None, typer.Option(
        help="AnnData: the labels' code convention, e.g. sade_feldman_2018.")] = None,
    checkpoint: Annotated[Path | None, typer.Option(
        help="World-model checkpoint directory (default: the pretrained model).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampled rollouts.")] = 0,
) -> None:
    """Predict response to each sample's regimen with the world model (score + 90% interval)."""
    from immunegym.benchmarks import predict_response as pr

    _seed("--seed", seed)
    _checkpoint("--checkpoint", checkpoint)
    _output_file("--out", out)
    v.existing_file("FILE", file, suffixes=(*pr.TABLE_SUFFIXES, ".h5ad"))
    result = pr.predict_response(file, out, checkpoint=checkpoint, id_column=id_column,
                                 regimen_column=regimen_column, sample_key=sample_key,
                                 label_key=label_key, label_convention=label_convention,
                                 seed=seed)
    console.print(f"wrote {out} ({len(result)} samples)")


@sim_app.command("calibrate")
def sim_calibrate(
    n: Annotated[int, typer.Option(help="Patients per arm for the check.")] = 4000,
    seed: Annotated[int, typer.Option(help="Seed of the check.")] = 0,
    fit: Annotated[bool, typer.Option(help="Fit the anchor parameters first.")] = False,
    fit_n: Annotated[int, typer.Option(help="Patients per arm while fitting.")] = 1000,
    sweeps: Annotated[int, typer.Option(help="Gauss-Seidel sweeps over the anchors.")] = 2,
    workers: Annotated[int, typer.Option(
        help="Processes fitting cancer types in parallel.")] = 1,
    params_out: Annotated[Path | None, typer.Option(
        help="Where --fit writes the parameter file (default: "
             "immunegym-out/immunesim-params-v2.json; never the shipped file).")] = None,
    ship: Annotated[bool, typer.Option(
        help="Maintainers only: --fit replaces the parameter file shipped in the package.")
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
    from immunegym.sim import calibrate as cal
    from immunegym.sim.parameters import load_parameters

    cal.check_sizes(n, seed, field_n="--n", field_seed="--seed")
    target = None
    if fit:
        cal.check_fit_sizes(fit_n, sweeps, workers,
                            fields=("--fit-n", "--sweeps", "--workers"))
        target = _output_file("--params-out", cal.parameter_target(params_out, ship=ship))
        if not version.strip() or any(c.isspace() for c in version):
            raise v.bad("--version", version, "a non-empty version without spaces, e.g. '2'")
    elif ship or params_out is not None:
        flag = "--ship" if ship else "--params-out"
        raise v.bad(flag, True if ship else str(params_out),
                    "to be given together with --fit (it says where --fit writes)")
    _output_dir("--out", out)
    _output_file("--json", json_path)
    params = load_parameters()
    if fit:
        params, record = cal.fit(params, n=fit_n, sweeps=sweeps, workers=workers,
                                 log=console.print)
        cal.write_parameters(params, record, target, version, allow_shipped=ship)
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
        _write_json(json_path, report.to_json())
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
    from immunegym.sim import calibrate as cal

    cal.check_sizes(n, seed, field_n="--n", field_seed="--seed")
    _output_file("--json", json_path)
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
        _write_json(json_path, {"n": n, "seed": seed, "pairs": rows})


@app.command()
def train(
    config: Annotated[Path, typer.Option(help="Training recipe (TOML): a file, or a "
                                         "packaged recipe by name (default, "
                                         "observation_only).")],
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")],
    num_workers: Annotated[int, typer.Option(help="Ray Train workers (1 = train in this "
                                             "process).")] = 1,
    address: Annotated[str | None, typer.Option(help="Address of an existing Ray cluster.")
                       ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    log_dir: Annotated[Path, typer.Option(help="TensorBoard log directory.")
                       ] = Path("immunegym-out/tensorboard"),
    replace_shipped: Annotated[bool, typer.Option(
        "--replace-shipped", help="Maintainers only: allow --out to replace a pretrained "
                                  "model shipped in the package.")] = False,
) -> None:
    """Train the world model from a recipe; writes safetensors + config + model card."""
    import sys

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from immunegym.world_model.recipe import Recipe, run_recipe

    recipe = Recipe.load(_recipe_path("--config", config))
    _count("--num-workers", num_workers, high=MAX_WORKERS)
    device = _device("--device", device)
    v.refuse_shipped("--out", out, allow=replace_shipped, flag="--replace-shipped")
    _output_dir("--out", out)
    _output_dir("--log-dir", log_dir)
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
                           command=" ".join(["immunegym", *sys.argv[1:]]),
                           allow_shipped=replace_shipped)
    console.print(f"{model!r}\nwrote {out} (TensorBoard logs: {log_dir})")


def _recipe_path(field: str, config: Path) -> Path:
    """A recipe file; a packaged recipe's name or repository path works from any directory."""
    from immunegym.world_model.recipe import DEFAULT_RECIPE

    if config.is_file():
        return v.existing_file(field, config, suffixes=(".toml",))
    packaged = DEFAULT_RECIPE.parent
    names = sorted(f.stem for f in packaged.glob("*.toml"))
    stem = config.stem if config.suffix == ".toml" else config.name
    in_repo = config.as_posix().endswith(f"world_model/configs/{stem}.toml")
    if stem in names and (len(config.parts) == 1 or in_repo):
        return packaged / f"{stem}.toml"
    if config.exists():
        return v.existing_file(field, config, suffixes=(".toml",))
    raise v.bad(field, str(config), f"an existing TOML recipe, or a packaged one: {names}")


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
        real_only: Annotated[bool, typer.Option(
            "--real-only", help="Skip the synthetic cohorts: real MORRISON-1 and Sade-Feldman "
                                "only (under a minute).")] = False,
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

        _address(address, ray)
        _seed("--seed", seed)
        _checkpoint("--checkpoint", checkpoint)
        _suite("--suite", suite)
        _output_file("--json", json_path)
        _output_dir("--out", out)
        ctx = BenchContext(load(checkpoint), quick=quick, seed=seed, ray=ray, address=address,
                           suite_dir=suite, progress=lambda m: console.log(m),
                           real_only=real_only)
        line = f"immunegym bench {name}" + (" --quick" if quick else "") + \
            (" --ray" if ray else "") + (" --real-only" if real_only else "")
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
    if name != "response":  # --real-only is an option of `bench response` only
        import inspect

        # eval_str: the module's annotations are strings (PEP 563); typer needs the types.
        signature = inspect.signature(command, eval_str=True)
        command.__signature__ = signature.replace(parameters=[
            p for p in signature.parameters.values() if p.name != "real_only"])
    bench_app.command(name)(command)


for _name, _summary in (
    ("reconstruction", "Leave-one-biopsy-out and daily reconstruction vs ImmuneSim's truth."),
    ("transfer", "Leave-one-cancer-type-out: held-out type vs in-distribution model."),
    ("counterfactual", "Six regimens from the same hidden state: rankings vs ImmuneSim."),
    ("response", "Response AUROC: 14 synthetic cohorts and real MORRISON-1 / Sade-Feldman."),
    ("real-trajectories", "Real pre -> on-treatment changes (MORRISON-1, Riaz 2017, "
                          "Sade-Feldman): world model vs persistence and mean change."),
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
    replace_shipped: Annotated[bool, typer.Option(
        "--replace-shipped", help="Maintainers only: allow --record to write into a "
                                  "checkpoint shipped in the package.")] = False,
) -> None:
    """World model vs persistence, ridge, cohort-mean and history-mean baselines (and the
    privileged ridge on the truth) on held-out patients."""
    from rich.progress import Progress

    from immunegym.benchmarks.world_model import run_benchmark
    from immunegym.world_model import load
    from immunegym.world_model.checkpoint import PRETRAINED, PRETRAINED_OBSERVATION_ONLY

    _checkpoint("--checkpoint", checkpoint)
    _checkpoint("--observation-only", observation_only)
    _suite("--suite", suite)
    device = _device("--device", device)
    _output_file("--json", json_path)
    if record:
        # --record writes the figures into the checkpoint: the shipped one is read-only.
        v.refuse_shipped("--checkpoint", checkpoint or PRETRAINED, allow=replace_shipped,
                         flag="--replace-shipped")
        _output_dir("--checkpoint", checkpoint or PRETRAINED)
    elif replace_shipped:
        raise v.bad("--replace-shipped", True, "to be given together with --record")
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
    _write_json(json_path, result)
    console.print(f"wrote {json_path}")
    if record:
        from immunegym.benchmarks.world_model import record_evaluation

        record_evaluation(model, result, checkpoint, quick=quick,
                          allow_shipped=replace_shipped)
        console.print(f"recorded the figures in {checkpoint or PRETRAINED}/MODEL_CARD.md")


@bench_app.command("fuzz")
def bench_fuzz(
    steps: Annotated[int, typer.Option(help="Env steps with random and hostile actions.")
                     ] = 1_000_000,
    api_calls: Annotated[int, typer.Option(help="Public API calls with random arguments.")
                         ] = 2_000,
    seed: Annotated[int, typer.Option(help="Seed of the fuzzer.")] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """Fuzz the envs and the public API: exits 1 on any crash, NaN, out-of-space
    observation or unclear error."""
    # The same bounds as run_fuzz's (checked here too, before its heavy imports).
    _count("--steps", steps, low=0, high=FUZZ_MAX_STEPS)
    _count("--api-calls", api_calls, low=0, high=FUZZ_MAX_API_CALLS)
    _seed("--seed", seed)
    _output_file("--json", json_path)
    from immunegym.benchmarks.fuzz import run_fuzz

    result = run_fuzz(n_env_steps=steps, n_api_calls=api_calls, seed=seed)
    failures = {k: _how_many(result.get(k)) for k in FUZZ_FAILURES}
    table = Table(title=f"fuzz: {steps:,} env steps, {api_calls:,} API calls, seed {seed}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            table.add_row(key, f"{value:,}" if isinstance(value, int) and not isinstance(
                value, bool) else str(value))
    console.print(table)
    if json_path is not None:
        _write_json(json_path, result, default=str)
        console.print(f"wrote {json_path}")
    if sum(failures.values()) > 0:
        for example in list(result.get("examples") or [])[:5]:
            console.print(f"  {example}", highlight=False)
        found = ", ".join(f"{k} {n}" for k, n in failures.items() if n)
        typer.echo(f"error: fuzz found failures: {found}", err=True)
        raise typer.Exit(1)


def _how_many(value: Any) -> int:
    """A count, or the length of a list of cases (either form counts the failures)."""
    if value is None:
        return 0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    try:
        return len(value)
    except TypeError:
        return int(bool(value))


FUZZ_FAILURES: tuple[str, ...] = ("crashes", "nans", "out_of_space", "unclear_errors",
                                   "hangs")
"""Counts in :func:`immunegym.benchmarks.fuzz.run_fuzz`'s result that fail ``bench fuzz``."""
FUZZ_MAX_STEPS = 10**9
FUZZ_MAX_API_CALLS = 10**6


if __name__ == "__main__":  # pragma: no cover
    app()
