"""Side measurement for BENCHMARKS.md (issue 18): how far the world model's filter moves a real
Sade-Feldman pre-treatment composition when it reads it as a day-0 biopsy (the "pull" towards
a typical simulated tumor that `bench real-trajectories` counts as predicted change).

Run: ``.venv/bin/python docs/real_day0_pull.py`` (seconds).
"""

from __future__ import annotations

import numpy as np

from immunegym.benchmarks.real_trajectories import day0_estimate
from immunegym.benchmarks.response_real import ReferenceBank, immune_counts_to_composition
from immunegym.data.real import SADE_FELDMAN_CLUSTERS, sade_feldman_sample_counts
from immunegym.ontology import FINE_TYPES, default_ontology, harmonize_labels


def main() -> None:
    reference = ReferenceBank.from_sim(1000)
    table = sade_feldman_sample_counts()
    pre = table[table["timepoint"] == "Pre"]
    clusters = list(SADE_FELDMAN_CLUSTERS)
    nodes = harmonize_labels(clusters, convention="sade_feldman_2018", strict=True)
    observed = immune_counts_to_composition(pre[clusters].to_numpy(float), nodes, reference)
    estimate = day0_estimate(load_model(), observed, reference.median_sod_mm)
    onto = default_ontology()
    immune = [FINE_TYPES.index(t) for t in onto.leaves_under("immune")]
    for node in ("treg", "myeloid", "cd8_t", "b_cell"):
        cols = [FINE_TYPES.index(t) for t in onto.leaves_under(node)]
        share = [float(np.mean(c[:, cols].sum(1) / c[:, immune].sum(1)))
                 for c in (observed, estimate)]
        print(f"{node}: {share[0]:.3f} of CD45+ observed -> {share[1]:.3f} in the day-0 estimate")


def load_model():
    from immunegym.world_model import load

    return load()


if __name__ == "__main__":
    main()
