"""Ensemble members trained in parallel as Ray tasks (2 local workers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from immunegym.sim.cohort import CohortSpec
from immunegym.world_model import (
    LatentConfig,
    TrainConfig,
    WorldModel,
    WorldModelConfig,
    simulate_counts_cohort,
)

ray = pytest.importorskip("ray")


def test_ray_trains_members_in_parallel_and_matches_serial_training():
    from immunegym.world_model.distributed import fit_distributed

    cohort = simulate_counts_cohort(CohortSpec("ray_t", "rcc", ("anti_pd1",), "tme_fine",
                                               n_patients=12, seed=3, horizon_days=150),
                                    horizons=2)
    tl, truth = cohort.timelines, cohort.truth
    config = WorldModelConfig(LatentConfig(d_hidden=8, d_context=2, d_dynamics=16),
                              n_members=2)
    cfg = TrainConfig(epochs=2, batch_size=4, patience=2, horizons=2)
    parts = {"train": tl.subset(range(8)), "val": tl.subset(range(8, 12)),
             "truth_train": truth.subset(range(8)), "truth_val": truth.subset(range(8, 12))}
    model = WorldModel(config, seed=0)
    before = {k: v.clone() for k, v in model.members[0].state_dict().items()}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        fit_distributed(model, parts["train"], parts["val"], cfg, num_workers=2,
                        truth_train=parts["truth_train"], truth_val=parts["truth_val"])
    finally:
        ray.shutdown()
    after = model.members[0].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "weights must change"
    assert len(model.history) == 2 and all(len(h) == 2 for h in model.history)
    assert np.isfinite([r.val_loss for h in model.history for r in h]).all()
    serial = WorldModel(config, seed=0).fit(parts["train"], parts["val"], cfg,
                                            truth_train=parts["truth_train"],
                                            truth_val=parts["truth_val"])
    for a, b in zip(model.members, serial.members, strict=True):
        for key, value in a.state_dict().items():
            torch.testing.assert_close(value, b.state_dict()[key], atol=1e-5, rtol=1e-4)
    comp = model.predict(tl, ["anti_pd1"]).composition
    np.testing.assert_allclose(comp.sum(-1).numpy(), 1.0, atol=1e-5)
