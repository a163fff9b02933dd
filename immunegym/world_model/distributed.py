"""Data-parallel training on Ray Train (``TorchTrainer``), local or on a cluster.

Each ensemble member is one ``TorchTrainer.fit()``: ``num_workers`` processes share the
member's weights, each takes its share of every batch, and gradients are averaged with an
all-reduce over the gloo (CPU) or NCCL (GPU) process group Ray Train sets up (see
:func:`~.training.train_member`). The rollout loss runs several forward passes before one
backward, which DDP's reducer does not expect, hence the explicit all-reduce.

Rank 0 reports the best weights as a safetensors file in a Ray Train checkpoint; the driver
loads them back into the member. Nothing is pickled to disk.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from immunegym.world_model.module import ModuleConfig, WorldModelModule
from immunegym.world_model.timelines import Timelines
from immunegym.world_model.training import EpochRecord, TrainConfig, train_member


def _worker_loop(config: dict) -> None:
    """The per-worker training function run by ``TorchTrainer``."""
    import ray.train

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(int(config["threads"]), 1))
    module = WorldModelModule(ModuleConfig(**config["module"]))
    module.load_state_dict(config["initial_state"])
    cfg = TrainConfig.from_dict(config["train"])

    def report(r: EpochRecord) -> None:
        ray.train.report({"epoch": r.epoch, "train_loss": r.train_loss,
                          "val_loss": r.val_loss})

    state, history = train_member(module, config["train_tl"], config["val_tl"],
                                  config["cancer_train"], config["cancer_val"], cfg,
                                  int(config["seed"]), on_epoch=report, rank=rank,
                                  world_size=world, prior=config["prior"])
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            save_file({k: v.contiguous() for k, v in state.items()},
                      str(Path(directory) / "member.safetensors"))
            (Path(directory) / "history.json").write_text(
                json.dumps([vars(r) for r in history]))
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report({"epoch": len(history), "done": 1}, checkpoint=checkpoint)


def fit_distributed(
    model,
    train: Timelines,
    val: Timelines,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    num_workers: int = 2,
    address: str | None = None,
    use_gpu: bool = False,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
) -> None:
    """Train every member of ``model`` with ``num_workers`` Ray Train workers.

    Starts a local Ray instance unless one is running or ``address`` names a cluster; the
    instance it started is shut down at the end.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if num_workers < 1:
        raise ValueError(f"num_workers: expected >= 1, got {num_workers}")
    for tl in (train, val):
        model.check_timelines(tl)
    model.set_leaf_prior(train)
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    threads = max(1, int(ray.available_resources().get("CPU", 1)) // num_workers)
    model.history = []
    try:
        with tempfile.TemporaryDirectory() as storage:
            for m, module in enumerate(model.members):
                trainer = TorchTrainer(
                    _worker_loop,
                    train_loop_config={
                        "module": vars(model.config.module),
                        "initial_state": {k: v.cpu() for k, v in module.state_dict().items()},
                        "train": cfg.to_dict(), "seed": seed + 1000 * m, "threads": threads,
                        "train_tl": train, "val_tl": val,
                        "cancer_train": model.cancer_onehot(train).cpu(),
                        "cancer_val": model.cancer_onehot(val).cpu(),
                        "prior": model.leaf_prior().cpu(),
                    },
                    scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
                    run_config=RunConfig(storage_path=storage, name=f"member{m}"),
                )
                result = trainer.fit()
                if result.checkpoint is None:
                    raise RuntimeError(f"Ray Train returned no checkpoint for member {m}")
                with result.checkpoint.as_directory() as directory:
                    state = load_file(str(Path(directory) / "member.safetensors"))
                    history = [EpochRecord(**r) for r in json.loads(
                        (Path(directory) / "history.json").read_text())]
                module.load_state_dict(state)
                module.to(model.device).eval()
                model.history.append(history)
                if on_epoch is not None:
                    for r in history:
                        on_epoch(m, r)
    finally:
        if started:
            ray.shutdown()
