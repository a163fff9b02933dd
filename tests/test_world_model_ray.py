"""Data-parallel world-model training on Ray Train with 2 local workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from immunegym.sim.cohort import CohortSpec, simulate_cohort
from immunegym.world_model import (
    ModuleConfig,
    TrainConfig,
    WorldModel,
    WorldModelConfig,
    build_timelines,
)

ray = pytest.importorskip("ray")


def test_ray_train_two_local_workers_trains_and_returns_weights():
    from immunegym.world_model.distributed import fit_distributed

    adata = simulate_cohort(CohortSpec("ray_t", "rcc", ("anti_pd1",), "tme_fine",
                                       n_patients=12, seed=3, horizon_days=150)).adata
    tl = build_timelines(adata)
    config = WorldModelConfig(ModuleConfig(n_programs=8, d_model=16, n_heads=2, n_layers=1,
                                           d_ff=32), n_members=1, programs=tl.programs)
    model = WorldModel(config, seed=0)
    before = {k: v.clone() for k, v in model.members[0].state_dict().items()}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        fit_distributed(model, tl.subset(range(8)), tl.subset(range(8, 12)),
                        TrainConfig(epochs=2, batch_size=4, patience=2), num_workers=2)
    finally:
        ray.shutdown()
    after = model.members[0].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "weights must change"
    assert len(model.history) == 1 and len(model.history[0]) == 2
    assert np.isfinite([r.val_loss for r in model.history[0]]).all()
    comp = model.predict(tl, ["anti_pd1"]).composition
    np.testing.assert_allclose(comp.sum(-1).numpy(), 1.0, atol=1e-5)
