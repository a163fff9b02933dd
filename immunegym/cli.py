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


if __name__ == "__main__":  # pragma: no cover
    app()
