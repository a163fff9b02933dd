"""A training recipe (TOML) and the one function that turns it into a checkpoint.

``immunegym train --config FILE --out DIR`` calls :func:`run_recipe`. The recipe names the
data (the default suite, generated in memory, or a suite directory), the patient split,
the architecture and the optimizer; everything is recorded in the checkpoint's
``training.json`` and model card.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from immunegym.world_model.model import WorldModel, WorldModelConfig
from immunegym.world_model.module import ModuleConfig
from immunegym.world_model.timelines import (
    Timelines,
    build_timelines,
    concat_timelines,
    split_patients,
)
from immunegym.world_model.training import EpochRecord, TrainConfig

DEFAULT_RECIPE = Path(__file__).resolve().parent / "configs" / "default.toml"
_SECTIONS = {"data", "split", "model", "train"}


@dataclass(frozen=True)
class Recipe:
    """A parsed training recipe (see ``configs/default.toml`` for every key)."""

    suite: str = "default"
    split_seed: int = 0
    test_fraction: float = 0.15
    val_fraction: float = 0.15
    leave_out_cancer: str = ""
    n_members: int = 3
    module: dict[str, object] = field(default_factory=dict)
    use_cancer_type: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    source: str = ""

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read and validate a TOML recipe; errors name the section and key."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config: {str(path)!r} does not exist")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"config: {str(path)!r} is not valid TOML ({err})") from None
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, dict[str, object]], source: str = "") -> Recipe:
        unknown = sorted(set(raw) - _SECTIONS)
        if unknown:
            raise ValueError(f"config: unknown sections {unknown}; expected {sorted(_SECTIONS)}")
        data, split = dict(raw.get("data", {})), dict(raw.get("split", {}))
        model, train = dict(raw.get("model", {})), dict(raw.get("train", {}))
        _only(data, {"suite"}, "data")
        _only(split, {"seed", "test_fraction", "val_fraction", "leave_out_cancer"}, "split")
        module_keys = {f.name for f in fields(ModuleConfig)} - {
            "n_types", "n_programs", "n_therapies", "n_cancer_types"}
        _only(model, module_keys | {"n_members", "use_cancer_type"}, "model")
        seed = int(train.pop("seed", 0))
        n_members = int(model.pop("n_members", 3))
        if n_members < 1:
            raise ValueError(f"model.n_members: expected >= 1, got {n_members}")
        use_cancer = bool(model.pop("use_cancer_type", False))
        return cls(
            suite=str(data.get("suite", "default")),
            split_seed=int(split.get("seed", 0)),
            test_fraction=float(split.get("test_fraction", 0.15)),
            val_fraction=float(split.get("val_fraction", 0.15)),
            leave_out_cancer=str(split.get("leave_out_cancer", "")),
            n_members=n_members, module=model, use_cancer_type=use_cancer,
            train=TrainConfig.from_dict(train), seed=seed, source=source,
        )


def _only(section: dict[str, object], allowed: set[str], name: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ValueError(f"config: unknown keys {unknown} in [{name}]; expected some of "
                         f"{sorted(allowed)}")


def load_suite_timelines(suite: str, progress: Callable[[str], None] | None = None
                         ) -> Timelines:
    """Observed timelines of a suite: ``"default"`` (generated in memory) or a directory."""
    import anndata as ad

    from immunegym.sim.cohort import simulate_cohort
    from immunegym.sim.suite import DEFAULT_SUITE, MANIFEST

    parts = []
    if suite == "default":
        for spec in DEFAULT_SUITE:
            parts.append(build_timelines(simulate_cohort(spec).adata))
            if progress:
                progress(spec.name)
        return concat_timelines(parts)
    directory = Path(suite)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"data.suite: {str(directory)!r} has no {MANIFEST}; expected "
                                "'default' or a directory from `immunegym data make-suite`")
    for record in json.loads(manifest.read_text())["cohorts"]:
        parts.append(build_timelines(ad.read_h5ad(directory / Path(record["h5ad"]).name)))
        if progress:
            progress(str(record["name"]))
    return concat_timelines(parts)


def split_timelines(tl: Timelines, recipe: Recipe) -> tuple[Timelines, Timelines, dict]:
    """Train and validation timelines per the recipe, and the split record for the card."""
    split = split_patients(tl.patient_ids, test_fraction=recipe.test_fraction,
                           val_fraction=recipe.val_fraction, seed=recipe.split_seed)
    keep = np.ones(len(tl), bool)
    if recipe.leave_out_cancer:
        cancers = set(tl.patients["cancer_type"])
        if recipe.leave_out_cancer not in cancers:
            raise ValueError(f"split.leave_out_cancer: {recipe.leave_out_cancer!r} is not in the "
                             f"data; expected one of {sorted(cancers)}")
        keep = (tl.patients["cancer_type"] != recipe.leave_out_cancer).to_numpy()
    train = tl.subset(np.nonzero((split == "train") & keep)[0])
    val = tl.subset(np.nonzero((split == "val") & keep)[0])
    record = {"seed": recipe.split_seed, "test_fraction": recipe.test_fraction,
              "val_fraction": recipe.val_fraction,
              "leave_out_cancer": recipe.leave_out_cancer,
              "n_train": len(train), "n_val": len(val),
              "n_test": int((split == "test").sum())}
    return train, val, record


def run_recipe(
    recipe: Recipe,
    out: str | Path,
    *,
    num_workers: int = 1,
    address: str | None = None,
    device: str = "cpu",
    log_dir: str | Path | None = None,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
    progress: Callable[[str], None] | None = None,
    command: str = "",
    timelines: Timelines | None = None,
) -> WorldModel:
    """Train a world model from a recipe and write its checkpoint to ``out``.

    ``num_workers > 1`` trains each member data-parallel on Ray Train (local Ray, or the
    cluster at ``address``). ``log_dir`` receives TensorBoard logs (one run per member).
    """
    start = time.perf_counter()
    tl = timelines if timelines is not None else load_suite_timelines(recipe.suite, progress)
    train, val, split_record = split_timelines(tl, recipe)
    cancers = tuple(sorted(set(tl.patients["cancer_type"]))) if recipe.use_cancer_type else ()
    module = ModuleConfig(n_programs=len(tl.programs), n_cancer_types=len(cancers),
                          **recipe.module)  # type: ignore[arg-type]
    config = WorldModelConfig(module, recipe.n_members, cancers, tl.programs)
    model = WorldModel(config, seed=recipe.seed, device=device)

    writers = {}
    if log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writers = {m: SummaryWriter(str(Path(log_dir) / f"member{m}"))
                   for m in range(recipe.n_members)}

    def record(member: int, r: EpochRecord) -> None:
        if member in writers:
            writers[member].add_scalar("loss/train", r.train_loss, r.epoch)
            writers[member].add_scalar("loss/val", r.val_loss, r.epoch)
        if on_epoch is not None:
            on_epoch(member, r)

    try:
        if num_workers > 1:
            from immunegym.world_model.distributed import fit_distributed

            fit_distributed(model, train, val, recipe.train, seed=recipe.seed,
                            num_workers=num_workers, address=address, on_epoch=record)
        else:
            model.fit(train, val, recipe.train, seed=recipe.seed, on_epoch=record)
    finally:
        for writer in writers.values():
            writer.close()
    cohorts = tl.patients.groupby("cohort", sort=False)
    model.card = {
        "command": command or "immunegym train --config FILE --out DIR",
        "recipe": recipe.source,
        "data": {"suite": recipe.suite, "n_patients": len(tl),
                 "cohorts": {str(k): {"cancer_type": str(g["cancer_type"].iloc[0]),
                                      "lab": str(g["lab"].iloc[0]), "n": len(g)}
                             for k, g in cohorts}},
        "split": split_record,
        "train": recipe.train.to_dict(),
        "seed": recipe.seed,
        "num_workers": num_workers,
        "train_seconds": time.perf_counter() - start,
        "best_val_loss": [min(r.val_loss for r in h) for h in model.history],
        "epochs_run": [len(h) for h in model.history],
    }
    model.save(out)
    return model
