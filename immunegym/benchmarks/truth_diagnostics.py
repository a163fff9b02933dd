"""What the ground truth itself says: baseline cell states as response predictors in ImmuneSim.

The world model learns its dynamics from ImmuneSim, so when a real cohort and the world
model disagree, the first question is whether the disagreement is already in the truth.
:func:`cd8_state_auroc` answers it for the CD8 states that Sade-Feldman et al. 2018 tie to
response (TCF7+ memory-like CD8 cells in responders, exhausted CD8 cells in non-responders):
it generates a fresh ImmuneSim cohort (seeded), reads each patient's first biopsy as a lab
would deliver it, harmonizes the labels onto the ontology's fine types and scores every
type's share, and the Sade-Feldman-style ratio ``log((memory + Tpex) / Tex)``, against the
simulated best overall response (CR/PR = 1) by AUROC. Nothing here uses a real patient.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from immunegym.ontology import FINE_TYPES, harmonize_labels
from immunegym.validation import integer

DIAGNOSTIC_SEED = 20180
"""Seed of the diagnostic cohort (a cohort of its own, not a training or benchmark one)."""


def cd8_state_auroc(n_patients: int = 400, *, seed: int = DIAGNOSTIC_SEED,
                    cancer_type: str = "melanoma", regimen: str = "anti_pd1"
                    ) -> dict[str, Any]:
    """AUROC of each baseline fine type's share (and of CD8 state ratios) for response.

    Parameters
    ----------
    n_patients
        Simulated patients (10 .. 5000).
    seed
        The cohort's seed.
    cancer_type, regimen
        What is simulated (default: melanoma under anti-PD-1, as Sade-Feldman).

    Returns
    -------
    dict
        ``auroc``: fine type -> AUROC of its share of the first biopsy (NaN for a type never
        seen), plus ``memory_tpex_vs_tex`` (``log((memory + Tpex + 0.001) / (Tex + 0.001))``)
        and ``cd8_total``; ``n_patients``, ``n_responders``, the settings.
    """
    from immunegym.sim.cohort import make_cohort

    n = integer("n_patients", n_patients, low=10, high=5000)
    adata = make_cohort(cancer_type, regimen, n, seed=seed, horizon_days=200)
    obs = adata.obs
    first = obs["day"].to_numpy() == obs.groupby("patient_id", observed=True)["day"] \
        .transform("min").to_numpy()
    base = obs[first]
    labels = pd.Series(base["cell_type"].astype(str).to_numpy())
    names = dict(zip(labels.unique(), harmonize_labels(list(labels.unique())), strict=True))
    fine = labels.map(names)
    table = pd.crosstab(base["patient_id"].astype(str).to_numpy(), fine.to_numpy())
    share = table.div(table.sum(1), axis=0).reindex(columns=FINE_TYPES, fill_value=0.0)
    response = base.groupby("patient_id", observed=True)["response"].first().astype(str)
    y = (response.reindex(share.index) == "R").to_numpy(dtype=int)
    auroc: dict[str, float] = {}
    for t in FINE_TYPES:
        auroc[t] = float(roc_auc_score(y, share[t])) if share[t].any() else float("nan")
    ratio = np.log((share["cd8_memory"] + share["cd8_tpex"] + 1e-3) / (share["cd8_tex"] + 1e-3))
    auroc["memory_tpex_vs_tex"] = float(roc_auc_score(y, ratio))
    cd8 = [t for t in FINE_TYPES if t.startswith("cd8_")]
    auroc["cd8_total"] = float(roc_auc_score(y, share[cd8].sum(1)))
    return {"auroc": auroc, "n_patients": int(len(y)), "n_responders": int(y.sum()),
            "cancer_type": cancer_type, "regimen": regimen, "seed": int(seed)}


__all__ = ["DIAGNOSTIC_SEED", "cd8_state_auroc"]
