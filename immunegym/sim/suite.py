"""The default suite of 14 cohorts, and writing it (serially or as Ray tasks).

Cohorts span cancer types, monotherapies, combinations and untreated arms, and six labs with
different label conventions and batch effects. Each has its own seed, so a cohort is the same
whether it is generated alone, in a loop, or on a Ray worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from immunegym import validation as v
from immunegym._atomic import atomic_path
from immunegym.sim.cohort import CohortSpec, simulate_cohort

MAX_PATIENTS = 1_000_000
MAX_HORIZON_DAYS = 3_650
COHORT_BYTES_PER_PATIENT = 4_000_000
"""Peak bytes of one cohort per patient and year of follow-up while it is simulated and
written (~2 MB of cells per patient measured at one year, doubled for margin)."""
TASK_RETRIES = 3
"""Ray retries of a cohort task whose worker died (each cohort is written atomically and
is deterministic, so a retry writes exactly what the first attempt would have)."""

DEFAULT_SUITE: tuple[CohortSpec, ...] = (
    CohortSpec("melanoma_pd1_zheng", "melanoma", ("anti_pd1",), "atlas_zheng", seed=101),
    CohortSpec("melanoma_ctla4_sf", "melanoma", ("anti_ctla4",), "sade_feldman_style",
               seed=102),
    CohortSpec("melanoma_combo_fine", "melanoma", ("anti_pd1+anti_ctla4",), "tme_fine",
               seed=103),
    CohortSpec("melanoma_untreated_broad", "melanoma", ("none",), "broad_immune", seed=104),
    CohortSpec("melanoma_targeted_zheng", "melanoma", ("targeted", "anti_pd1+targeted"),
               "atlas_zheng", seed=105),
    CohortSpec("nsclc_pd1_macro", "nsclc", ("anti_pd1",), "macrophage_split", seed=106),
    CohortSpec("nsclc_pdl1_high_pd1_vs_chemo", "nsclc_pdl1_high", ("anti_pd1", "chemo"),
               "tme_fine", seed=107),
    CohortSpec("nsclc_pdl1_high_chemo_pd1_panel", "nsclc_pdl1_high", ("anti_pd1+chemo",),
               "clinical_panel", seed=108),
    CohortSpec("rcc_pd1_zheng", "rcc", ("anti_pd1",), "atlas_zheng", seed=109),
    CohortSpec("urothelial_pd1_sf", "urothelial", ("anti_pd1",), "sade_feldman_style",
               seed=110),
    CohortSpec("hnscc_pd1_radio_macro", "hnscc", ("anti_pd1", "anti_pd1+radio"),
               "macrophage_split", seed=111),
    CohortSpec("crc_msi_pd1_fine", "crc_msi", ("anti_pd1",), "tme_fine", seed=112),
    CohortSpec("crc_mss_chemo_untreated_broad", "crc_mss", ("chemo", "none"), "broad_immune",
               seed=113),
    CohortSpec("tnbc_chemo_vs_combo_panel", "tnbc", ("chemo", "anti_pd1+chemo"),
               "clinical_panel", seed=114),
)
"""The default cohort suite (14 cohorts, 60 patients each, one year of follow-up)."""

MANIFEST = "suite.json"


def suite_specs(n_patients: int | None = None, horizon_days: int | None = None,
                names: Sequence[str] | None = None, *,
                fields: tuple[str, str, str] = ("n_patients", "horizon_days", "names")
                ) -> list[CohortSpec]:
    """The default suite, optionally resized or restricted to some cohort names.

    ``fields`` name the three arguments in error messages (the CLI passes its options).

    Raises
    ------
    ValidationError
        For a size out of range or an unknown cohort name (the message lists the names).
    """
    specs = list(DEFAULT_SUITE)
    if n_patients is not None:
        v.integer(fields[0], n_patients, low=1, high=MAX_PATIENTS)
    if horizon_days is not None:
        v.integer(fields[1], horizon_days, low=1, high=MAX_HORIZON_DAYS)
    if names:
        if isinstance(names, str):
            raise v.bad(fields[2], names, "a list of cohort names")
        known = [s.name for s in specs]
        for name in names:
            v.choice(fields[2], name, known)
        specs = [s for s in specs if s.name in names]
    if n_patients is not None:
        specs = [replace(s, n_patients=n_patients) for s in specs]
    if horizon_days is not None:
        specs = [replace(s, horizon_days=horizon_days) for s in specs]
    return specs


def check_suite_memory(specs: Sequence[CohortSpec], *, use_ray: bool = False,
                       field: str = "n_patients") -> None:
    """Refuse a suite whose cohorts in flight need more memory than the limit allows.

    Serially one cohort is in memory at a time; with Ray up to one per CPU of this machine.
    """
    import os

    if not specs:
        return
    per = [s.n_patients * max(1.0, s.horizon_days / 365) * COHORT_BYTES_PER_PATIENT
           for s in specs]
    in_flight = min(len(specs), os.cpu_count() or 1) if use_ray else 1
    need = sum(sorted(per, reverse=True)[:in_flight])
    v.memory_budget(field, max(s.n_patients for s in specs), need,
                    f"{in_flight} cohort(s) in memory at once")


def _write_one(spec: CohortSpec, out: str) -> dict[str, object]:
    cohort = simulate_cohort(spec)
    h5ad, truth = cohort.write(out)
    return {"name": spec.name, "h5ad": h5ad.name, "truth": truth.name,
            "n_cells": int(cohort.adata.n_obs),
            "n_samples": int(cohort.adata.obs["sample_id"].nunique()),
            "n_patients": spec.n_patients, "spec": asdict(spec)}


def make_suite(
    out: str | Path,
    specs: Sequence[CohortSpec] | None = None,
    *,
    use_ray: bool = False,
    address: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Generate cohorts into ``out`` (h5ad + hidden-truth files) and write a manifest.

    Parameters
    ----------
    out
        Output directory.
    specs
        Cohorts to make (the default suite when omitted).
    use_ray
        Generate cohorts in parallel as Ray tasks (local Ray unless ``address``). Workers
        write into ``out``, so on a multi-node cluster ``out`` must be a shared path. A
        task whose worker dies is retried (:data:`TASK_RETRIES`); each cohort's files are
        renamed into place only when complete, so the suite is the serial run's.
    address
        Address of an existing Ray cluster.
    progress
        Called with each finished cohort's name.

    Returns
    -------
    pathlib.Path
        The manifest path.

    Raises
    ------
    ValidationError
        If ``out`` cannot be written or the cohorts in flight would need more memory than
        the limit (``IMMUNEGYM_MAX_MEMORY_GB``); raised before any cohort is simulated.
    """
    v.output_path("out", out, directory=True)
    specs = list(specs) if specs is not None else list(DEFAULT_SUITE)
    check_suite_memory(specs, use_ray=use_ray)
    out = Path(out)
    try:  # before any cohort is simulated, so an unwritable place costs nothing
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise v.bad("out", str(out), f"a directory that can be created "
                                     f"({err.strerror or err})") from None
    records: list[dict[str, object]] = []
    if use_ray:
        import ray

        started = not ray.is_initialized()
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        try:
            # A worker killed mid-cohort (node lost, OOM killer) is retried; the cohort's
            # files are renamed into place only once complete, so nothing half-written
            # remains and the retry writes the same bytes.
            task = ray.remote(max_retries=TASK_RETRIES)(_write_one)
            pending = {task.remote(s, str(out.resolve())): s.name for s in specs}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                records.append(ray.get(done[0]))
                name = pending.pop(done[0])
                if progress:
                    progress(name)
        finally:
            if started:
                ray.shutdown()
    else:
        for spec in specs:
            records.append(_write_one(spec, str(out)))
            if progress:
                progress(spec.name)
    order = {s.name: i for i, s in enumerate(specs)}
    records.sort(key=lambda r: order[str(r["name"])])
    _remove_stale_temporaries(out, specs)
    manifest = out / MANIFEST
    with atomic_path(manifest) as tmp:
        tmp.write_text(json.dumps({"cohorts": records}, indent=2) + "\n")
    return manifest


def _remove_stale_temporaries(out: Path, specs: Sequence[CohortSpec]) -> None:
    """Delete the temporary files of attempts that were killed before their rename.

    A killed process cannot clean up after itself; its ``.<file>.<random>.tmp<suffix>``
    files (see :func:`immunegym._atomic.atomic_path`) are removed once every cohort is in.
    """
    for spec in specs:
        for stem in (f"{spec.name}.h5ad", f"{spec.name}.truth.safetensors"):
            for stale in out.glob(f".{stem}.*.tmp*"):
                if stale.is_file():
                    stale.unlink(missing_ok=True)
