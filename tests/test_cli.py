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
    assert result.exit_code == 1
    assert result.output.startswith("error: --key: got 'celltype'; expected an obs column")
    text = tmp_path / "table.h5ad"
    text.write_text("not hdf5")
    result = runner.invoke(app, ["harmonize", str(text), "--key", "label"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "this file is not HDF5" in result.output


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
    toxicity = tmp_path / "out" / "immunesim_chemo_toxicity.png"
    assert toxicity.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "on chemotherapy q3w x4, by week" in result.output
    forecast = tmp_path / "out" / "world_model_heldout_forecast.png"
    assert forecast.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "world model forecast of a held-out patient" in result.output
    tree = tmp_path / "out" / "mpc_vs_standard_of_care_tree.png"
    assert tree.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "MPC vs standard of care for held-out patient" in result.output


def test_bench_harmonize_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "harmonize", "--n-labels", "20000", "--repeats", "1",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = pd.read_json(out, typ="series")
    assert data["n_labels"] == 20000 and data["best_seconds"] > 0


def test_train_and_bench_world_model_commands(tmp_path):
    import json

    from immunegym.sim.suite import make_suite, suite_specs

    suite = tmp_path / "suite"
    make_suite(suite, suite_specs(n_patients=5, horizon_days=160))
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        f'[data]\nsuite = "{suite}"\n[split]\ntest_fraction = 0.3\nval_fraction = 0.2\n'
        "[model]\nn_members = 2\nd_hidden = 8\nd_context = 2\nd_dynamics = 16\n"
        "[train]\nepochs = 2\nbatch_size = 16\nhorizons = 2\n")
    out = tmp_path / "ckpt"
    result = runner.invoke(app, ["train", "--config", str(recipe), "--out", str(out),
                                 "--device", "cpu", "--log-dir", str(tmp_path / "tb")],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    card = json.loads((out / "training.json").read_text())
    assert card["split"]["n_test"] > 0 and card["data"]["n_patients"] == 70
    assert card["data"]["privileged"], "a suite directory carries the hidden truth"
    assert list((tmp_path / "tb" / "member1").glob("events.out.tfevents.*"))
    bench = tmp_path / "wm.json"
    result = runner.invoke(app, ["bench", "world-model", "--quick", "--json", str(bench),
                                 "--checkpoint", str(out), "--suite", str(suite),
                                 "--no-speed"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    data = json.loads(bench.read_text())
    assert set(data["rollout_6"]) >= {"world_model", "persistence", "ridge", "cohort_mean",
                                      "history_mean", "ridge_truth"}
    assert len(data["coverage90_by_horizon"]) == 6
    assert 0 <= data["coverage90"] <= 1 and data["n_origins"] > 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nwidth = 3\n")
    result = runner.invoke(app, ["train", "--config", str(bad), "--out", str(out)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "unknown key 'width'" in result.output
