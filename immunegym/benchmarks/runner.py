"""Run the evaluation benchmarks and write their JSON and markdown report.

``immunegym bench <reconstruction|transfer|counterfactual|response|real-trajectories|all>
[--quick] [--ray] --json PATH [--out DIR]`` lands here. Each benchmark is a module of
:mod:`immunegym.benchmarks` with two functions:

* ``run(ctx: BenchContext) -> dict``: its JSON section;
* ``report(section: dict, out: Path) -> str``: its part of the markdown report, writing its
  plots into ``out``.

One benchmark writes its section as the JSON document (plus ``"meta"``); ``all`` writes one
document with a key per benchmark. The benchmarks share one :class:`BenchContext`, so the
held-out cohorts are generated once.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from immunegym._atomic import atomic_path
from immunegym.benchmarks.common import BenchContext, jsonable
from immunegym.validation import ValidationError

BENCHMARKS: tuple[str, ...] = ("reconstruction", "transfer", "counterfactual", "response",
                               "real_trajectories")
"""The evaluation benchmarks (module names), in the order ``all`` runs and reports them. On
the command line an underscore is written as a hyphen (``bench real-trajectories``)."""

TITLES = {
    "reconstruction": "Trajectory reconstruction from sparse biopsies",
    "transfer": "Cross-cancer transfer (leave one cancer type out)",
    "counterfactual": "Counterfactual fidelity",
    "response": "Response prediction",
    "real_trajectories": "Real on-treatment trajectories",
}

REPORT_NAME = "report.md"


def resolve(name: str) -> list[str]:
    """The benchmarks a command name stands for (``all``: every one; a hyphen in a name
    stands for the module name's underscore: ``real-trajectories``)."""
    if name == "all":
        return list(BENCHMARKS)
    module = name.replace("-", "_") if isinstance(name, str) else name
    if module not in BENCHMARKS:
        raise ValidationError(f"benchmark: unknown name {name!r}; expected one of "
                         f"{[*(b.replace('_', '-') for b in BENCHMARKS), 'all']}")
    return [module]


def _module(name: str):
    return importlib.import_module(f"immunegym.benchmarks.{name}")


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    return {"platform": platform.platform(), "processor": platform.processor() or None,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_benchmarks(names: Sequence[str], ctx: BenchContext, *, command: str = "",
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run benchmarks on one context: ``{name: section, ..., "meta": {...}}``.

    Parameters
    ----------
    names
        Benchmark names (:data:`BENCHMARKS`).
    ctx
        The shared model and data.
    command
        The command line, recorded in ``meta``.
    log
        Called with a line when a benchmark starts and ends.
    """
    log = log or (lambda line: None)
    for name in names:
        resolve(name)
    start = time.perf_counter()
    result: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    try:
        for name in names:
            log(f"{name}: running")
            t0 = time.perf_counter()
            result[name] = jsonable(_module(name).run(ctx))
            seconds[name] = time.perf_counter() - t0
            log(f"{name}: done in {seconds[name]:.0f} s")
    finally:
        ctx.close()
    result["meta"] = jsonable({
        "command": command, "quick": ctx.quick, "ray": ctx.ray, "seed": ctx.seed,
        "benchmarks": list(names), "seconds": time.perf_counter() - start,
        "seconds_by_benchmark": seconds, "machine": machine(),
        "model": _model_record(ctx),
    })
    return result


def _model_record(ctx: BenchContext) -> dict[str, Any]:
    card = ctx.model.card or {}
    return {"members": len(ctx.model.members), "parameters": ctx.model.num_parameters(),
            "trained_with": card.get("command"), "split": card.get("split")}


def document(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: a single benchmark's section at top level, or every section."""
    names = [k for k in result if k != "meta"]
    if len(names) == 1:
        return {**result[names[0]], "meta": result["meta"]}
    return result


def write_json(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write :func:`document` of ``result`` atomically (strict JSON: NaN becomes null)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(document(result), indent=2, allow_nan=False) + "\n")
    return path


def write_report(result: dict[str, Any], out: str | os.PathLike[str]) -> Path:
    """Write ``out/report.md`` and every section's plots into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = result["meta"]
    names = [k for k in result if k != "meta"]
    lines = ["# immunegym benchmark report", ""]
    lines += [f"Command: `{meta['command']}`" if meta.get("command") else "",
              f"Machine: {_machine_line(meta['machine'])}",
              f"Model: {meta['model']['members']} ensemble members, "
              f"{meta['model']['parameters']:,} parameters "
              f"(`{meta['model'].get('trained_with') or 'unknown'}`).",
              f"Run time: {_minutes(meta['seconds'])}"
              + (" (`--quick`)" if meta["quick"] else "") + ".", "",
              "Every figure is a point value with its bootstrap 95% interval (over patients, "
              "or cohorts where stated). Truth is ImmuneSim's hidden state for synthetic "
              "patients; real tables are described in their sections.", ""]
    lines += ["Contents: " + ", ".join(f"[{TITLES[n]}](#{_anchor(TITLES[n])})"
                                       for n in names), ""]
    for name in names:
        section_md = _module(name).report(result[name], out).strip()
        lines += [section_md, "",
                  f"*{name}: {_minutes(meta['seconds_by_benchmark'][name])}.*", ""]
    path = out / REPORT_NAME
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines).replace("\n\n\n", "\n\n"))
    return path


def _machine_line(m: dict[str, Any]) -> str:
    device = m.get("cuda") or f"CPU only, {m.get('cpu_count')} cores"
    return (f"{device}; {m.get('platform')}; Python {m.get('python')}, torch {m.get('torch')} "
            f"({m.get('torch_threads')} threads)")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _anchor(title: str) -> str:
    keep = "".join(c for c in title.lower() if c.isalnum() or c in " -")
    return keep.replace(" ", "-")


HEADLINE: dict[str, tuple[str, ...]] = {
    "reconstruction": ("tree_w1", "dense.tree_w1"),
    "transfer": ("folds.*.ratio",),
    "counterfactual": ("spearman", "best_regimen_accuracy", "regret"),
    "response": ("synthetic.pooled_auroc", "real.morrison1.pooled_auroc",
                 "real.sade_feldman.pooled_auroc"),
    "real_trajectories": ("*.mean_error",),
}
"""The blocks the console summary shows per benchmark (``*`` matches any key); the JSON and
the report hold everything."""


def headline(result: dict[str, Any], paths: dict[str, tuple[str, ...]] | None = None
             ) -> Iterator[tuple[str, str, float | None, list | None]]:
    """``(where, method, value, ci95)`` of the headline blocks of every section.

    A block is a dict with a ``"ci95"`` dict; ``paths`` (default :data:`HEADLINE`) names the
    blocks per benchmark as dotted paths.
    """
    paths = HEADLINE if paths is None else paths

    def find(node: Any, keys: list[str], where: str):
        if not keys:
            if isinstance(node, dict) and isinstance(node.get("ci95"), dict):
                yield where, node
            return
        if not isinstance(node, dict):
            return
        head, rest = keys[0], keys[1:]
        for key in (list(node) if head == "*" else [head]):
            if key in node:
                yield from find(node[key], rest, f"{where}.{key}")

    for name, section in result.items():
        for path in paths.get(name, ()):
            for where, block in find(section, path.split("."), name):
                for method, ci in block["ci95"].items():
                    value = block.get(method)
                    if isinstance(value, (int, float)) or value is None:
                        yield where, method, value, ci
