"""Speed benchmarks (figures go into BENCHMARKS.md with the machine and command)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence

import numpy as np

from immunegym import validation as v
from immunegym.ontology import harmonize_labels

MAX_LABELS = 1_000_000_000
MAX_REPEATS = 1_000
MAX_BATCH = 100_000_000
MAX_DAYS = 3_650
LABEL_BYTES = 200
"""Bytes per label while timing: a distinct string object, its slot and the mapped copy."""
SIM_BYTES_PER_PATIENT = 8_000
"""Peak bytes per simulated patient (state, parameters and burn-in temporaries; ~4.2 kB
measured at batch 200,000, doubled for margin)."""

# Labels from several real conventions, with the repeats a per-cell column has.
BENCH_LABELS: tuple[str, ...] = (
    "CD8.c12.Tex.CXCL13", "CD8.c14.Tex.TCF7", "CD8.c02.Tm.IL7R", "CD4.c18.Treg.RTKN2",
    "CD4.c16.Tfh.CXCR5", "Macro_SPP1", "Macro_C1QC", "cDC1_CLEC9A", "Mono_CD14",
    "Tem/Trm cytotoxic T cells", "Regulatory T cells", "Classical monocytes", "NK cells",
    "CD8_ex_T_cells", "CAFs", "Tumor_1", "T_cell", "Myeloid_cell", "Cancer_cell",
    "TCF1+ progenitor exhausted CD8", "M2-like TAM", "PMN-MDSC", "Doublets", "Unknown",
    "B cells", "Plasma cells", "Endothelial", "Mast cells", "Neutrophils", "pDC",
)


def check_harmonize_speed(n_labels: int, repeats: int, seed: int = 0, *,
                          fields: tuple[str, str] = ("n_labels", "repeats")) -> None:
    """Refuse sizes :func:`harmonize_speed` cannot run (range, then memory), before allocating.

    ``fields`` name the two sizes in messages (the CLI passes its option names).
    """
    v.integer(fields[0], n_labels, low=1, high=MAX_LABELS)
    v.memory_budget(fields[0], n_labels, n_labels * LABEL_BYTES, "the labels")
    v.integer(fields[1], repeats, low=1, high=MAX_REPEATS)
    v.seed("seed", seed)


def harmonize_speed(n_labels: int = 1_000_000, repeats: int = 3, seed: int = 0) -> dict:
    """Best wall time of :func:`harmonize_labels` on ``n_labels`` per-cell labels.

    Each call builds a fresh harmonizer, so the per-label cache starts empty and the figure
    includes resolving every distinct label and building the output list.

    Raises
    ------
    ValidationError
        For a size out of range or above the memory limit (:func:`check_harmonize_speed`).
    """
    check_harmonize_speed(n_labels, repeats, seed)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(BENCH_LABELS), n_labels)
    # Distinct string objects per cell, as a column read from a file has (no shared hashes).
    labels = np.array([(BENCH_LABELS[i] + ".")[:-1] for i in picks], dtype=object)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        harmonize_labels(labels)
        times.append(time.perf_counter() - start)
    # Cost of resolving a label never seen before (the part that does not scale with cells).
    distinct = [f"{label} {i}" for i in range(200) for label in BENCH_LABELS]
    start = time.perf_counter()
    harmonize_labels(distinct)
    per_distinct = (time.perf_counter() - start) / len(distinct)
    return {
        "benchmark": "harmonize_labels",
        "n_labels": n_labels,
        "n_distinct": len(BENCH_LABELS),
        "best_seconds": min(times),
        "all_seconds": times,
        "labels_per_second": n_labels / min(times),
        "microseconds_per_distinct_label": per_distinct * 1e6,
        "machine": machine_info(),
        "python": platform.python_version(),
    }


def machine_info() -> str:
    """A one-line description of this machine (architecture, processor, CPU count)."""
    return f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip()


def check_sim_speed(batches: Sequence[int], days: int, *,
                    fields: tuple[str, str] = ("batches", "days")) -> None:
    """Refuse batch sizes or days :func:`sim_speed` cannot run, before allocating."""
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Sequence) or not batches:
        raise v.bad(fields[0], batches, "a non-empty list of batch sizes")
    for batch in batches:
        v.integer(fields[0], batch, low=1, high=MAX_BATCH)
        v.memory_budget(fields[0], batch, batch * SIM_BYTES_PER_PATIENT, "the simulated batch")
    v.integer(fields[1], days, low=1, high=MAX_DAYS)


def sim_speed(
    batches: Sequence[int] = (1, 1_000, 100_000),
    days: int = 30,
    device: str = "cpu",
    cancer_type: str = "melanoma",
    regimen: str = "anti_pd1+anti_ctla4",
    seed: int = 0,
) -> dict[str, object]:
    """ImmuneSim step throughput (patient-days/s) and memory per patient at several batches.

    Times ``days`` daily steps of the pure step function (after the day-0 burn-in, which is
    not timed) under a combination regimen, so every drug path runs. Memory per patient is
    the bytes of the state and parameter tensors per patient, plus the peak device memory
    per patient on CUDA.
    """
    import torch

    from immunegym.sim import ImmuneSim
    from immunegym.sim.therapy import dose_calendar, parse_regimen

    check_sim_speed(batches, days)
    device = v.device("device", device)
    v.seed("seed", seed)
    results = []
    for batch in batches:
        sim = ImmuneSim(device=device, seed=seed)
        patients, state = sim.reset(sim.sample_patients(cancer_type, batch))
        calendar = torch.as_tensor(dose_calendar(regimen, days), device=sim.device)
        rules = torch.as_tensor(parse_regimen(regimen).irae_rules(), device=sim.device)
        if sim.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for d in range(days):
            state = sim.step(state, patients, calendar[d].expand(batch, -1), rules)
        if sim.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start

        row = {"batch": batch, "days": days, "seconds": elapsed,
               "patient_days_per_s": batch * days / elapsed,
               "state_bytes_per_patient": (state.nbytes() + patients.nbytes()) / batch}
        if sim.device.type == "cuda":
            row["peak_device_bytes_per_patient"] = torch.cuda.max_memory_allocated() / batch
        results.append(row)
    return {"benchmark": "immunesim_step", "device": str(device),
            "torch_threads": torch.get_num_threads(), "regimen": regimen,
            "cancer_type": cancer_type, "results": results, "machine": machine_info()}


def matmul_peak(n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Measured float32 matmul throughput (FLOP/s) of this machine: the best of ``repeats``."""
    import torch

    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=gen, device=device)
    b = torch.randn(n, n, generator=gen, device=device)
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def world_model_speed(model, batches: Sequence[int] = (1, 256, 4096), history: int = 8,
                      repeats: int = 3) -> dict[str, object]:
    """Throughput of one world-model member (patient-steps/s) at several batches.

    A patient-step is one cycle of the member's dynamics from a state (what a rollout and an
    ImmuneWorld step cost once the filter has read the history). ``filter_points_per_s``
    times the filter over a history of ``history`` points. FLOPs per step are counted by
    ``torch.utils.flop_counter``; the fraction of peak compares achieved FLOP/s with a
    measured float32 matmul.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from immunegym.world_model.latent import EventInputs

    module = model.members[0].eval()
    cfg = module.config
    device = model.device
    gen = torch.Generator(device=device).manual_seed(0)

    def state(b: int) -> tuple[torch.Tensor, ...]:
        z = torch.randn(b, cfg.n_types, generator=gen, device=device)
        c = torch.randn(b, cfg.d_context, generator=gen, device=device)
        return (z, c, torch.ones(b, device=device),
                torch.rand(b, cfg.n_therapies, generator=gen, device=device),
                torch.zeros(b, cfg.n_cancer_types, device=device))

    def events(b: int) -> EventInputs:
        return EventInputs(
            torch.randn(b, history, cfg.obs_features, generator=gen, device=device),
            torch.rand(b, history, cfg.time_features, generator=gen, device=device),
            torch.zeros(b, cfg.n_labs, device=device),
            torch.zeros(b, dtype=torch.long, device=device),
            torch.zeros(b, cfg.n_cancer_types, device=device),
            torch.ones(b, history, dtype=torch.bool, device=device))

    def timed(fn) -> float:
        fn()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return best

    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            z, c, tau, dose, cancer = state(1)
            module.step(z, c, tau, dose, cancer)
            module.burden(z)
        flops_per_step = counter.get_total_flops()
        peak = matmul_peak(device=str(device) if device.type == "cuda" else "cpu")
        rows = []
        for batch in batches:
            args = state(batch)
            best = timed(lambda args=args: (module.step(*args), module.burden(args[0])))
            x = events(batch)
            filter_best = timed(lambda x=x: module.filter(x))
            rate = batch / best
            rows.append({"batch": batch, "seconds": best, "patient_steps_per_s": rate,
                         "filter_points_per_s": batch * history / filter_best,
                         "achieved_flops_per_s": rate * flops_per_step,
                         "fraction_of_matmul_peak": rate * flops_per_step / peak})
    return {"benchmark": "world_model_forward", "device": str(device), "history": history,
            "torch_threads": torch.get_num_threads(),
            "parameters_per_member": model.num_parameters(),
            "flops_per_step": flops_per_step, "matmul_peak_flops_per_s": peak,
            "results": rows, "machine": machine_info()}
