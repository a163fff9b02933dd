"""Ensemble members trained in parallel as Ray tasks, locally or on a cluster.

Members are independent (each its own bootstrap resample and seed), so the natural unit of
parallel work is a member, not a batch: ``num_workers`` tasks each train one member at a
time with ``threads`` torch threads, and return the trained weights as plain tensors.
Results are identical to training the members one after another in this process (same
seeds, same resamples; tested).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace

import torch

from immunegym.world_model.fitting import (
    EpochRecord,
    TrainConfig,
    standardization,
    train_member,
    training_tensors,
)
from immunegym.world_model.latent import LatentConfig, LatentWorldModule
from immunegym.world_model.timelines import Timelines

TASK_RETRIES = 3
"""Ray retries of a member task whose worker died (training a member is deterministic)."""


def _train_task(payload: dict) -> dict:
    """One member (module level, so Ray can run it as a task)."""
    torch.set_num_threads(max(int(payload["threads"]), 1))
    module = LatentWorldModule(LatentConfig(**payload["module"]))
    module.load_state_dict(payload["initial_state"])
    cfg = TrainConfig.from_dict(payload["train"])
    train = training_tensors(module, payload["train_tl"], payload["x_train"],
                             payload["truth_train"], cfg.horizons)
    val = training_tensors(module, payload["val_tl"], payload["x_val"], payload["truth_val"],
                           cfg.horizons)
    history = train_member(module, train, val, cfg, int(payload["seed"]))
    return {"state": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
            "history": [vars(r) for r in history]}


def fit_distributed(
    model,
    train: Timelines,
    val: Timelines,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    num_workers: int = 2,
    address: str | None = None,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
    truth_train=None,
    truth_val=None,
) -> None:
    """Train every member of ``model`` as a Ray task (``num_workers`` at a time).

    Starts a local Ray instance unless one is running or ``address`` names a cluster; the
    instance it started is shut down at the end. ``on_epoch`` is called for every epoch
    record once a member is back.
    """
    import ray

    from immunegym import validation as v

    v.integer("num_workers", num_workers, low=1, high=1_024)
    v.seed("seed", seed)
    for tl in (train, val):
        model.check_timelines(tl)
    privileged = cfg.privileged and truth_train is not None and truth_val is not None
    model.set_leaf_prior(train)
    center, scale = standardization(truth_train.log_cells if privileged else None, train,
                                    truth_train.alive if privileged else None)
    model.config = replace(model.config, privileged=privileged, conformal_scale=())
    x_train, x_val = model.inputs(train), model.inputs(val)

    def cpu(x):
        return type(x)(**{k: v.cpu() for k, v in vars(x).items()})

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    threads = max(1, int(ray.available_resources().get("CPU", 1)) // num_workers)
    # A member whose worker dies (node lost, OOM killer) is trained again from the same
    # initial state and seed, so the retry returns the weights the first attempt would have.
    task = ray.remote(num_cpus=threads, max_retries=TASK_RETRIES)(_train_task)
    model.history = []
    try:
        refs = []
        for m, module in enumerate(model.members):
            module.to("cpu")
            module.center.copy_(center)
            module.scale.copy_(scale)
            refs.append(task.remote({
                "module": asdict(model.config.module),
                "initial_state": {k: v.cpu() for k, v in module.state_dict().items()},
                "train": cfg.to_dict(), "seed": seed + 1000 * m, "threads": threads,
                "train_tl": train, "val_tl": val, "x_train": cpu(x_train), "x_val": cpu(x_val),
                "truth_train": truth_train if privileged else None,
                "truth_val": truth_val if privileged else None,
            }))
        for m, (module, ref) in enumerate(zip(model.members, refs, strict=True)):
            result = ray.get(ref)
            module.load_state_dict(result["state"])
            module.to(model.device).eval()
            history = [EpochRecord(**r) for r in result["history"]]
            model.history.append(history)
            if on_epoch is not None:
                for r in history:
                    on_epoch(m, r)
    finally:
        if started:
            ray.shutdown()
