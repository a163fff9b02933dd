import anndata as ad
import pandas as pd
from typer.testing import CliRunner

from immunegym.cli import app

runner = CliRunner()


def _write(tmp_path, labels):
    obs = pd.DataFrame({"label": labels}, index=[f"c{i}" for i in range(len(labels))])
    path = tmp_path / "cells.h5ad"
    ad.AnnData(obs=obs).write_h5ad(path)
    return path


def test_harmonize_prints_report_and_writes_csv(tmp_path):
    path = _write(tmp_path, ["Macro_SPP1", "Macro_SPP1", "CD8.c12.Tex.CXCL13", "Doublets",
                             "xyzzy"])
    out = tmp_path / "report.csv"
    result = runner.invoke(app, ["harmonize", str(path), "--key", "label", "--csv", str(out)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "macrophage_m2" in result.output and "CL:0000890" in result.output
    assert "unmapped: ['xyzzy']" in result.output
    frame = pd.read_csv(out)
    assert frame.set_index("label").loc["Macro_SPP1", "n_cells"] == 2


def test_harmonize_strict_fails_on_unknown_label(tmp_path):
    path = _write(tmp_path, ["B cells", "xyzzy"])
    result = runner.invoke(app, ["harmonize", str(path), "--key", "label", "--strict"])
    assert result.exit_code == 1
    assert "xyzzy" in result.output


def test_harmonize_bad_inputs(tmp_path):
    path = _write(tmp_path, ["B cells"])
    result = runner.invoke(app, ["harmonize", str(path), "--key", "celltype"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "no obs column 'celltype'" in result.output
    text = tmp_path / "table.h5ad"
    text.write_text("not hdf5")
    result = runner.invoke(app, ["harmonize", str(text), "--key", "label"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "is not an h5ad file" in result.output


def test_ontology_command_lists_nodes():
    result = runner.invoke(app, ["ontology"])
    assert result.exit_code == 0
    assert "cd8_tpex" in result.output and "CL:0020031" in result.output


def test_demo_writes_png(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "out")],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    png = tmp_path / "out" / "sadefeldman_pre_treatment_composition.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mean R" in result.output and "mean NR" in result.output
    assert "Exhausted/HS CD8+ T cells" in result.output.replace("\n", " ") or "G9" in result.output


def test_bench_harmonize_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "harmonize", "--n-labels", "20000", "--repeats", "1",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = pd.read_json(out, typ="series")
    assert data["n_labels"] == 20000 and data["best_seconds"] > 0
