"""The README runs: every code block in README.md is checked or executed.

Python blocks are (1) linted for undefined names, (2) checked statically: every
``immunegym``/``agents`` import resolves, attributes of imported modules exist and calls to
imported functions bind to their signatures, and (3) executed, each in a fresh namespace in
a temporary directory that holds the files the README names (``cohort.h5ad``, ``cells.h5ad``).
Heavy blocks (trials of thousands of patients, training, planning, benchmarks) run only
with ``-m slow``.

Bash blocks: every ``immunegym ...`` line is parsed by the real typer command (options and
arguments must exist; nothing runs), every ``python -m agents.X ...`` line by the agent's
tyro ``Args``, and every ``make X`` names a Makefile target. Optional ``[...]`` parts and
``a|b`` alternatives are expanded; placeholders FILE/DIR/N/ADDR become temporary values.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_FENCE = re.compile(r"^```(\w*)\s*$")

# Blocks holding one of these strings are heavy: they run only with -m slow.
SLOW_MARKERS = {
    "run_trial(": "trials of thousands of simulated patients",
    "wm.load()": "loads the world model, rolls out and fits a cohort",
    "gym.make_vec(": "thousands of vector envs, PPO training",
    "search(": "regimen search and counterfactual trees",
    "BenchContext(": "generates 14 benchmark cohorts",
}


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # first line of the code in README.md

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"

    @property
    def slow_reason(self) -> str | None:
        return next((why for key, why in SLOW_MARKERS.items() if key in self.code), None)


def readme_blocks() -> list[Block]:
    """The fenced code blocks of README.md, in order."""
    blocks: list[Block] = []
    lang: str | None = None
    start = 0
    body: list[str] = []
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        fence = _FENCE.match(line)
        if lang is None and fence:
            lang, start, body = fence.group(1) or "text", number + 1, []
        elif lang is not None and line.startswith("```"):
            blocks.append(Block(lang, "\n".join(body) + "\n", start))
            lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, "README.md has an unclosed code fence"
    return blocks


BLOCKS = readme_blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]
BASH = [b for b in BLOCKS if b.lang == "bash"]


def test_readme_has_the_blocks_this_file_checks():
    assert len(PYTHON) >= 6 and len(BASH) >= 3
    # Every block is one of python / bash / a plain layout listing.
    assert {b.lang for b in BLOCKS} <= {"python", "bash", "text"}


# ----------------------------------------------------------------------------- python: static
def test_python_blocks_have_no_undefined_names(tmp_path):
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    files = []
    for i, block in enumerate(PYTHON):
        path = tmp_path / f"block{i}_line{block.line}.py"
        path.write_text(block.code)
        files.append(str(path))
    out = subprocess.run(
        [ruff, "check", "--no-cache", "--isolated", "--select", "F821",
         "--output-format", "concise", *files],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, (
        f"README python blocks use undefined names:\n{out.stdout}{out.stderr}")


def _imported(tree: ast.Module) -> dict[str, object]:
    """Local name -> object for the immunegym/agents imports of a block (imports them)."""
    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("immunegym", "agents"):
                    module = importlib.import_module(alias.name)
                    if alias.asname:
                        names[alias.asname] = module
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] in ("immunegym", "agents"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    names[alias.asname or alias.name] = getattr(module, alias.name)
                else:  # a submodule
                    names[alias.asname or alias.name] = importlib.import_module(
                        f"{node.module}.{alias.name}")
    return names


def _placeholder_call(call: ast.Call) -> tuple[list[object], dict[str, object]] | None:
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
            k.arg is None for k in call.keywords):
        return None
    return [object()] * len(call.args), {k.arg: object() for k in call.keywords}


@pytest.mark.parametrize("block", PYTHON, ids=[b.name for b in PYTHON])
def test_python_block_imports_attributes_and_calls_exist(block):
    tree = ast.parse(block.code, filename=block.name)
    names = _imported(tree)
    problems = []
    for node in ast.walk(tree):
        target = None
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner = names.get(node.value.id)
            if inspect.ismodule(owner) and not hasattr(owner, node.attr):
                problems.append(f"line {node.lineno}: {node.value.id}.{node.attr} does not exist")
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                target = names.get(node.func.id)
            elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
                owner = names.get(node.func.value.id)
                if inspect.ismodule(owner):
                    target = getattr(owner, node.func.attr, None)
            placeholders = _placeholder_call(node)
            if target is None or placeholders is None or not callable(target):
                continue
            try:
                signature = inspect.signature(target)
            except (TypeError, ValueError):
                continue
            try:
                signature.bind(*placeholders[0], **placeholders[1])
            except TypeError as err:
                problems.append(f"line {node.lineno}: {ast.unparse(node)[:80]}: {err}")
    assert not problems, f"{block.name}:\n" + "\n".join(problems)


# ----------------------------------------------------------------------------- python: run
@pytest.fixture(scope="module")
def readme_files(tmp_path_factory) -> Path:
    """The files the README names: a small generated cohort, registered for the data layer."""
    from immunegym.sim import make_cohort

    folder = tmp_path_factory.mktemp("readme_files")
    # The same call as the README's data block: ids are "demo-P000".."demo-P007".
    adata = make_cohort("melanoma", ["anti_pd1", "none"], n_patients=8, name="demo")
    assert adata.uns["immunegym"]["fields"]["patient_key"] == "patient_id"
    adata.write_h5ad(folder / "cohort.h5ad")
    shutil.copy(folder / "cohort.h5ad", folder / "cells.h5ad")
    return folder


def _params() -> list:
    params = []
    for block in PYTHON:
        marks = [pytest.mark.slow] if block.slow_reason else []
        params.append(pytest.param(block, id=block.name, marks=marks))
    return params


@pytest.mark.parametrize("block", _params())
def test_python_block_runs(block, readme_files, tmp_path, monkeypatch):
    for file in readme_files.iterdir():
        (tmp_path / file.name).symlink_to(file)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(block.code, block.name, "exec"), namespace)  # noqa: S102 - the README itself


def test_data_block_uses_the_keys_make_cohort_writes(readme_files):
    import anndata as ad

    block = next(b for b in PYTHON if "setup_anndata" in b.code)
    obs = ad.read_h5ad(readme_files / "cohort.h5ad", backed="r").obs
    keys = re.findall(r"(\w+_key)=\"(\w+)\"", block.code)
    assert keys, "the data block registers no keys"
    for role, column in keys:
        assert column in obs.columns, f"{role}={column!r} is not a column of make_cohort's obs"


def test_patient_ids_in_the_readme_exist(readme_files):
    import anndata as ad

    patients = set(ad.read_h5ad(readme_files / "cohort.h5ad", backed="r").obs["patient_id"])
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"patient=\"([^\"]+)\"", text))
    named |= set(re.findall(r"--patient\s+(\S+)", text))
    assert named, "the README names no patient"
    assert named <= patients, f"{sorted(named - patients)} are not ids of the README's cohort"


# ----------------------------------------------------------------------------- bash
def _command_lines() -> list[tuple[Block, str]]:
    """Each command of the bash blocks, continuation lines joined, comments dropped."""
    out = []
    for block in BASH:
        text = block.code.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.append((block, line))
    return out


def _expand(tokens: list[str]) -> list[list[str]]:
    """All variants of a command: each [optional part] left out or kept, each a|b taken."""
    groups: list[list[list[str]]] = []  # per position: alternatives (token lists)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("["):
            j = i
            while not tokens[j].endswith("]"):
                j += 1
            inner = [t.strip("[]") for t in tokens[i:j + 1]]
            inner = [t for t in inner if t]
            groups.append([[], *_alternatives(inner)])
            i = j + 1
        else:
            groups.append(_alternatives([token]))
            i += 1
    return [[t for part in combo for t in part] for combo in itertools.product(*groups)]


def _alternatives(tokens: list[str]) -> list[list[str]]:
    options = [t.split("|") if "|" in t and not t.startswith("-") else [t] for t in tokens]
    return [list(c) for c in itertools.product(*options)]


def _fill(tokens: list[str], tmp: Path) -> list[str]:
    recipe = tmp / "recipe.toml"
    recipe.write_text("")
    values = {"FILE": str(recipe), "DIR": str(tmp / "out"), "N": "2",
              "ADDR": "ray://127.0.0.1:10001"}
    return [values.get(t, t) for t in tokens]


COMMANDS = _command_lines()
CLI = [(b, c) for b, c in COMMANDS if c.startswith("immunegym ")]
AGENTS = [(b, c) for b, c in COMMANDS if c.startswith("python -m agents.")]
MAKE = [(b, c) for b, c in COMMANDS if c.startswith("make ")]


def test_every_bash_line_is_checked():
    unknown = [c for _, c in COMMANDS if not c.startswith(
        ("immunegym ", "python -m agents.", "make "))]
    assert not unknown, f"bash lines this test does not know how to check: {unknown}"
    assert CLI and AGENTS and MAKE


def _parse_cli(argv: list[str]) -> None:
    import typer

    from immunegym.cli import app

    command = typer.main.get_command(app)
    ctx = command.make_context("immunegym", list(argv), resilient_parsing=False)
    while hasattr(command, "resolve_command"):
        protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
        rest = [*protected, *ctx.args]
        if not rest:
            break
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx, resilient_parsing=False)
    assert not ctx.args, f"unexpected extra arguments {ctx.args}"


@pytest.mark.parametrize("line", [c for _, c in CLI], ids=[f"{b.name}:{c[:40]}" for b, c in CLI])
def test_cli_line_parses(line, tmp_path):
    for variant in _expand(shlex.split(line)[1:]):
        argv = _fill(variant, tmp_path)
        try:
            _parse_cli(argv)
        except SystemExit as exit_:  # --help and friends
            assert exit_.code in (0, None), f"immunegym {' '.join(argv)} exited {exit_.code}"
        except Exception as err:  # a usage error: name the variant
            pytest.fail(f"immunegym {' '.join(argv)}: {type(err).__name__}: {err}")


@pytest.mark.parametrize("line", [c for _, c in AGENTS],
                         ids=[f"{b.name}:{c[10:50]}" for b, c in AGENTS])
def test_agent_line_parses(line, tmp_path, capsys):
    import tyro

    tokens = shlex.split(line)
    module = importlib.import_module(tokens[2])
    for variant in _expand(tokens[3:]):
        argv = _fill(variant, tmp_path)
        try:
            tyro.cli(module.Args, args=argv)
        except SystemExit as exit_:
            err = capsys.readouterr().err
            pytest.fail(f"python -m {tokens[2]} {' '.join(argv)}: exit {exit_.code}\n{err}")


@pytest.mark.parametrize("line", [c for _, c in MAKE], ids=[c for _, c in MAKE])
def test_make_target_exists(line):
    makefile = (ROOT / "Makefile").read_text()
    target = shlex.split(line)[1]
    assert re.search(rf"^{re.escape(target)}\s*:", makefile, re.M), f"no Makefile target {target}"


def test_readme_numbers_match_the_ontology():
    from immunegym.ontology import FINE_TYPES, default_ontology

    text = README.read_text(encoding="utf-8")
    match = re.search(r"a tree of (\d+) TIME cell types", text)
    assert match and int(match.group(1)) == len(default_ontology())
    assert f"down to {len(FINE_TYPES)} fine types" in text


if os.environ.get("IMMUNEGYM_README_LIST"):  # pragma: no cover - a debugging aid
    for _b in BLOCKS:
        print(_b.name, _b.lang, _b.slow_reason)
