"""Shared fixtures: a small, fully specified AnnData of cells from several labs' labels."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

GENES = ["CD8A", "GZMB", "PRF1", "NKG7", "PDCD1", "HAVCR2", "TOX", "TCF7", "MKI67", "CD163"]


def make_cells(seed: int = 0) -> ad.AnnData:
    """Three patients, seven samples, labels in Zheng / Cheng / coarse / junk conventions."""
    rng = np.random.default_rng(seed)
    samples = [
        # sample, patient, day, therapy, response, {label: n_cells}
        ("p1_d0", "p1", 0.0, "anti_pd1", "R",
         {"CD8.c12.Tex.CXCL13": 5, "CD8.c14.Tex.TCF7": 3, "Macro_SPP1": 2, "T_cell": 4,
          "Cancer_cell": 6}),
        ("p1_d21", "p1", 21.0, "anti_pd1", "R",
         {"CD8.c12.Tex.CXCL13": 2, "CD8.c06.Tem.GZMK": 6, "Cancer_cell": 3, "Doublets": 2}),
        ("p1_d63", "p1", 63.0, "none", "R", {"CD8.c06.Tem.GZMK": 4, "Cancer_cell": 1}),
        ("p2_d0", "p2", 0.0, "anti_pd1+anti_ctla4", "NR",
         {"CD4.c18.Treg.RTKN2": 4, "Macro_SPP1": 5, "Cancer_cell": 8}),
        ("p2_d30", "p2", 30.0, "anti_pd1+anti_ctla4", "NR",
         {"CD4.c18.Treg.RTKN2": 1, "Mono_CD14": 3, "Cancer_cell": 9, "Unknown": 1}),
        ("p3_d0", "p3", 0.0, "chemo", "NR", {"T/NK cells": 3, "Cancer_cell": 5, "CAFs": 2}),
        ("p3_d14", "p3", 14.0, None, "NR", {"cDC1_CLEC9A": 2, "Cancer_cell": 4}),
    ]
    rows = []
    for sample, patient, day, therapy, response, labels in samples:
        for label, n in labels.items():
            for _ in range(n):
                rows.append((sample, patient, day, therapy, response, label))
    obs = pd.DataFrame(rows, columns=["sample", "patient", "day", "therapy", "response",
                                      "cell_type"])
    obs.index = [f"cell{i}" for i in range(len(obs))]
    x = sp.csr_matrix(rng.poisson(2.0, size=(len(obs), len(GENES))).astype(np.float32))
    return ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=GENES))


@pytest.fixture
def cells() -> ad.AnnData:
    return make_cells()


@pytest.fixture
def registered(cells: ad.AnnData) -> ad.AnnData:
    from immunegym.data import setup_anndata

    setup_anndata(cells, patient_key="patient", sample_key="sample", label_key="cell_type",
                  time_key="day", therapy_key="therapy", response_key="response")
    return cells


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module, restored afterwards.

    Tests run tiny batches, where one thread is fastest and leaves the other core to the
    rest of the machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic_reference(n: int = 200, seed: int = 7):
    """A small ReferenceBank of Dirichlet draws (malignant-heavy): fast, seeded, no ties; the
    real-data tests map onto it instead of an ImmuneSim bank."""
    from immunegym.benchmarks.response_real import ReferenceBank
    from immunegym.ontology import FINE_TYPES

    rng = np.random.default_rng(seed)
    alpha = np.full(len(FINE_TYPES), 2.0)
    alpha[FINE_TYPES.index("malignant")] = 30.0
    return ReferenceBank(rng.dirichlet(alpha, n), rng.uniform(30, 120, n))
