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

from immunegym._atomic import atomic_path
from immunegym.sim.cohort import CohortSpec, simulate_cohort

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
                names: Sequence[str] | None = None) -> list[CohortSpec]:
    """The default suite, optionally resized or restricted to some cohort names."""
    specs = list(DEFAULT_SUITE)
    if names:
        known = {s.name for s in specs}
        unknown = sorted(set(names) - known)
        if unknown:
            raise ValueError(f"names: unknown cohorts {unknown}; expected some of {sorted(known)}")
        specs = [s for s in specs if s.name in names]
    if n_patients is not None:
        specs = [replace(s, n_patients=n_patients) for s in specs]
    if horizon_days is not None:
        specs = [replace(s, horizon_days=horizon_days) for s in specs]
    return specs


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
        write into ``out``, so on a multi-node cluster ``out`` must be a shared path.
    address
        Address of an existing Ray cluster.
    progress
        Called with each finished cohort's name.

    Returns
    -------
    pathlib.Path
        The manifest path.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = list(specs) if specs is not None else list(DEFAULT_SUITE)
    records: list[dict[str, object]] = []
    if use_ray:
        import ray

        started = not ray.is_initialized()
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        try:
            task = ray.remote(_write_one)
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
    manifest = out / MANIFEST
    with atomic_path(manifest) as tmp:
        tmp.write_text(json.dumps({"cohorts": records}, indent=2) + "\n")
    return manifest
