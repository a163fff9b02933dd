"""A training recipe (TOML) and the one function that turns it into a checkpoint.

``immunegym train --config FILE --out DIR`` calls :func:`run_recipe`. The recipe names the
data (the default suite generated in memory, a suite directory, or none; plus
``n_patients`` extra synthetic patients of the suite's designs, generated counts-only by
default), the patient split, the architecture and the optimizer; everything is recorded
in the checkpoint's ``training.json`` and model card.
"""

from __future__ import annotations

import json
import math
import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from immunegym.validation import (
    ValidationError,
    bad,
    boolean,
    integer,
    known_keys,
    number,
    output_path,
    refuse_shipped,
)
from immunegym.validation import device as validate_device
from immunegym.validation import seed as validate_seed
from immunegym.world_model.fitting import EpochRecord, TrainConfig
from immunegym.world_model.latent import LatentConfig, check_latent_fields
from immunegym.world_model.model import MAX_MEMBERS, WorldModel, WorldModelConfig
from immunegym.world_model.synthetic import (
    GridTruth,
    concat_grid_truth,
    grid_truth,
    simulate_counts_cohort,
)
from immunegym.world_model.timelines import (
    Timelines,
    build_timelines,
    concat_timelines,
    split_patients,
)

DEFAULT_RECIPE = Path(__file__).resolve().parent / "configs" / "default.toml"
_SECTIONS = {"data", "split", "model", "train"}
SYNTHETIC_SEED_OFFSET = 50_000
"""Seeds of the extra synthetic cohorts start here (the fresh benchmark cohorts use +1000)."""
RANDOMIZED_SEED_OFFSET = 500
"""Added to a design's synthetic seed for its randomized-arm twin (suite seeds are < 500)."""

RANDOMIZED_REGIMENS: tuple[str, ...] = (
    "none", "anti_pd1", "anti_ctla4", "chemo", "radio", "targeted",
    "anti_pd1+anti_ctla4", "anti_pd1+chemo", "anti_pd1+radio", "anti_pd1+targeted",
    "anti_ctla4+chemo", "anti_ctla4+radio", "anti_ctla4+targeted", "chemo+radio",
    "chemo+targeted", "radio+targeted")
"""Arms of the randomized synthetic cohorts: untreated, every therapy alone and every pair.

The suite's designs are observational: anti-CTLA-4 is given only in melanoma and only by
one lab, chemotherapy only in three cancer types, so drug effect and patient are
confounded and most (cancer type, regimen) pairs never occur. Randomizing a share of the
synthetic patients over this menu, within every design's cancer type and lab, is the
simulated trial that makes each drug's effect identifiable everywhere (what a
counterfactual query needs)."""


@dataclass(frozen=True)
class Recipe:
    """A parsed training recipe (see ``configs/default.toml`` for every key)."""

    suite: str = "default"
    n_patients: int = 0
    data_seed: int = 0
    counts_only: bool = True
    randomized_fraction: float = 0.0
    split_seed: int = 0
    test_fraction: float = 0.15
    val_fraction: float = 0.15
    leave_out_cancer: str = ""
    n_members: int = 3
    module: dict[str, object] = field(default_factory=dict)
    use_cancer_type: bool = False
    calibrate: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    source: str = ""

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read and validate a TOML recipe; errors name the section and key.

        Raises
        ------
        ValidationError
            A missing or unreadable file, invalid TOML, an unknown section or key (with the
            nearest known one), a value of the wrong type or out of range, or a
            ``data.suite`` directory that does not exist.
        """
        if not isinstance(path, str | os.PathLike):
            raise bad("config", path, "a path to a TOML recipe")
        path = Path(path)
        if not path.is_file():
            raise RecipeNotFoundError(
                f"config: got {str(path)!r}; expected an existing TOML recipe file"
                + (" (this is a directory)" if path.is_dir() else " (no such file)"))
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError) as err:
            raise bad("config", str(path), f"a readable text file ({err})") from None
        except tomllib.TOMLDecodeError as err:
            raise bad("config", str(path), f"valid TOML ({err}); it is not valid TOML") \
                from None
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: object, source: str = "") -> Recipe:
        """A recipe from its parsed TOML tables (see ``configs/default.toml``)."""
        raw = known_keys("config", raw, sorted(_SECTIONS))
        tables = {}
        for name in sorted(_SECTIONS):
            table = raw.get(name, {})
            if not isinstance(table, dict):
                raise bad(f"[{name}]", table, "a TOML table")
            tables[name] = dict(table)
        data, split, model, train = (tables[k] for k in ("data", "split", "model", "train"))
        known_keys("[data]", data, _DATA_KEYS)
        known_keys("[split]", split, _SPLIT_KEYS)
        module_keys = {f.name for f in fields(LatentConfig)} - {
            "n_types", "n_therapies", "n_labs", "n_cancer_types"}
        known_keys("[model]", model, sorted(module_keys | {"n_members", "use_cancer_type",
                                                          "calibrate"}))
        seed_ = validate_seed("train.seed", train.pop("seed", 0))
        n_members = integer("model.n_members", model.pop("n_members", 3), low=1,
                            high=MAX_MEMBERS)
        use_cancer = boolean("model.use_cancer_type", model.pop("use_cancer_type", False))
        calibrate = boolean("model.calibrate", model.pop("calibrate", True))
        check_latent_fields(model, "model.")
        n_patients = integer("data.n_patients", data.get("n_patients", 0), low=0,
                             high=MAX_PATIENTS)
        suite = data.get("suite", "default")
        if not isinstance(suite, str) or not suite:
            raise bad("data.suite", suite, "'default', 'none' or a suite directory")
        if suite not in ("default", "none"):
            manifest = Path(suite) / _suite_manifest()
            if not manifest.is_file():
                raise bad("data.suite", suite, "'default', 'none' or a directory from "
                          f"`immunegym data make-suite` (no {str(manifest)!r})")
        if suite == "none" and n_patients < 1:
            raise bad("data.n_patients", n_patients, "an integer >= 1 when data.suite is "
                      "'none' (there would be no training data)")
        randomized = number("data.randomized_fraction", data.get("randomized_fraction", 0.0),
                            low=0.0, high=1.0)
        test_fraction = number("split.test_fraction", split.get("test_fraction", 0.15),
                               low=0.0, high=1.0, high_open=True)
        val_fraction = number("split.val_fraction", split.get("val_fraction", 0.15),
                              low=0.0, high=1.0, high_open=True)
        if test_fraction + val_fraction >= 1.0:
            raise bad("split.val_fraction", val_fraction,
                      f"a fraction below {1 - test_fraction:g} (test_fraction + val_fraction "
                      "must leave patients for training)")
        leave_out = split.get("leave_out_cancer", "")
        if not isinstance(leave_out, str):
            raise bad("split.leave_out_cancer", leave_out, "a cancer type or '' (none)")
        return cls(
            suite=suite, n_patients=n_patients, randomized_fraction=randomized,
            data_seed=validate_seed("data.seed", data.get("seed", 0)),
            counts_only=boolean("data.counts_only", data.get("counts_only", True)),
            split_seed=validate_seed("split.seed", split.get("seed", 0)),
            test_fraction=test_fraction, val_fraction=val_fraction,
            leave_out_cancer=leave_out, n_members=n_members, module=model,
            use_cancer_type=use_cancer, calibrate=calibrate,
            train=TrainConfig.from_dict(train, "train"), seed=seed_, source=source,
        )


class RecipeNotFoundError(ValidationError, FileNotFoundError):
    """The recipe file does not exist."""


_DATA_KEYS = ("suite", "n_patients", "seed", "counts_only", "randomized_fraction")
_SPLIT_KEYS = ("seed", "test_fraction", "val_fraction", "leave_out_cancer")
MAX_PATIENTS = 1_000_000
"""Most extra synthetic patients a recipe may ask for."""


def _suite_manifest() -> str:
    from immunegym.sim.suite import MANIFEST

    return MANIFEST


@dataclass
class TrainingData:
    """Observed timelines and, where known, the hidden truth on their grid."""

    timelines: Timelines
    truth: GridTruth | None
    synthetic: np.ndarray  # (P,) bool: an extra counts-only patient (never in the test split)


def synthetic_specs(n_patients: int, seed: int, randomized_fraction: float = 0.0) -> list:
    """The default suite's designs with new seeds, ``n_patients`` spread over them.

    A ``randomized_fraction`` share of each design's patients form a twin cohort (same
    cancer type, lab and follow-up, its own seed) randomized over
    :data:`RANDOMIZED_REGIMENS` instead of the design's own arms.
    """
    from immunegym.sim.suite import DEFAULT_SUITE

    per = math.ceil(n_patients / len(DEFAULT_SUITE))
    n_random = int(round(per * randomized_fraction))
    specs = []
    for spec in DEFAULT_SUITE:
        base = SYNTHETIC_SEED_OFFSET + 1000 * seed + spec.seed
        if per - n_random:
            specs.append(replace(spec, name=f"{spec.name}_syn{seed}", n_patients=per - n_random,
                                 seed=base))
        if n_random:
            specs.append(replace(spec, name=f"{spec.name}_rand{seed}", n_patients=n_random,
                                 regimens=RANDOMIZED_REGIMENS,
                                 seed=base + RANDOMIZED_SEED_OFFSET))
    return specs


def load_training_data(recipe: Recipe, progress: Callable[[str], None] | None = None,
                       horizons: int = 8) -> TrainingData:
    """The recipe's cohorts: the suite (AnnData path) and the extra synthetic patients."""
    import anndata as ad

    from immunegym.sim.cohort import HiddenTruth, simulate_cohort
    from immunegym.sim.suite import DEFAULT_SUITE, MANIFEST

    parts: list[Timelines] = []
    truths: list[GridTruth | None] = []
    synthetic: list[np.ndarray] = []

    def add(tl: Timelines, truth: GridTruth | None, extra: bool, name: str) -> None:
        parts.append(tl)
        truths.append(truth)
        synthetic.append(np.full(len(tl), extra))
        if progress:
            progress(name)

    if recipe.suite == "default":
        for spec in DEFAULT_SUITE:
            cohort = simulate_cohort(spec)
            tl = build_timelines(cohort.adata)
            add(tl, grid_truth(cohort.truth, tl, horizons), False, spec.name)
    elif recipe.suite != "none":
        directory = Path(recipe.suite)
        manifest = directory / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(
                f"data.suite: {str(directory)!r} has no {MANIFEST}; expected 'default', "
                "'none' or a directory from `immunegym data make-suite`")
        for record in json.loads(manifest.read_text())["cohorts"]:
            name = str(record["name"])
            tl = build_timelines(ad.read_h5ad(directory / Path(record["h5ad"]).name))
            truth_file = directory / f"{name}.truth.safetensors"
            truth = None
            if truth_file.is_file():
                hidden = HiddenTruth.load(truth_file)
                if hidden.total_cells is not None:
                    truth = grid_truth(hidden, tl, horizons)
            add(tl, truth, False, name)
    if recipe.n_patients:
        for spec in synthetic_specs(recipe.n_patients, recipe.data_seed,
                                    recipe.randomized_fraction):
            if recipe.counts_only:
                cohort = simulate_counts_cohort(spec, horizons=horizons)
                add(cohort.timelines, cohort.truth, True, spec.name)
            else:
                full = simulate_cohort(spec)
                tl = build_timelines(full.adata)
                add(tl, grid_truth(full.truth, tl, horizons), True, spec.name)
    if not parts:
        raise ValidationError("data: no cohorts (data.suite is 'none' and data.n_patients is 0)")
    programs = {p.programs for p in parts}
    if len(programs) > 1:
        # Counts-only cohorts carry no program scores: align the names (the latent model
        # does not read programs).
        parts = [replace(p, programs=parts[0].programs, program_scores=torch.zeros(
            *p.program_scores.shape[:3], len(parts[0].programs)))
                 if p.programs != parts[0].programs else p for p in parts]
    tl = concat_timelines(parts)
    truth = None if any(t is None for t in truths) else concat_grid_truth(truths)
    return TrainingData(tl, truth, np.concatenate(synthetic))


def load_suite_timelines(suite: str, progress: Callable[[str], None] | None = None
                         ) -> Timelines:
    """Observed timelines of a suite: ``"default"`` (generated in memory) or a directory."""
    return load_training_data(Recipe(suite=suite), progress).timelines


def split_rows(data: TrainingData, recipe: Recipe) -> tuple[np.ndarray, np.ndarray, dict]:
    """Training and validation rows per the recipe, and the split record for the card.

    Suite patients are split by a hash of the id (the test share is never used); the extra
    synthetic patients go to training and validation only.
    """
    tl = data.timelines
    split = split_patients(tl.patient_ids, test_fraction=recipe.test_fraction,
                           val_fraction=recipe.val_fraction, seed=recipe.split_seed)
    extra = split_patients(tl.patient_ids, test_fraction=0.0,
                           val_fraction=recipe.val_fraction, seed=recipe.split_seed)
    split = np.where(data.synthetic, extra, split)
    keep = np.ones(len(tl), bool)
    if recipe.leave_out_cancer:
        cancers = set(tl.patients["cancer_type"])
        if recipe.leave_out_cancer not in cancers:
            raise ValidationError(
                f"split.leave_out_cancer: {recipe.leave_out_cancer!r} is not in the "
                             f"data; expected one of {sorted(cancers)}")
        keep = (tl.patients["cancer_type"] != recipe.leave_out_cancer).to_numpy()
    train = np.nonzero((split == "train") & keep)[0]
    val = np.nonzero((split == "val") & keep)[0]
    record = {"seed": recipe.split_seed, "test_fraction": recipe.test_fraction,
              "val_fraction": recipe.val_fraction,
              "leave_out_cancer": recipe.leave_out_cancer,
              "n_train": len(train), "n_val": len(val),
              "n_test": int(((split == "test") & ~data.synthetic).sum())}
    return train, val, record


def split_timelines(tl: Timelines, recipe: Recipe) -> tuple[Timelines, Timelines, dict]:
    """Train and validation timelines of suite patients per the recipe, and the record."""
    data = TrainingData(tl, None, np.zeros(len(tl), bool))
    train, val, record = split_rows(data, recipe)
    return tl.subset(train), tl.subset(val), record


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
    data: TrainingData | None = None,
    allow_shipped: bool = False,
) -> WorldModel:
    """Train a world model from a recipe and write its checkpoint to ``out``.

    ``num_workers > 1`` trains the members in parallel as Ray tasks (local Ray, or the
    cluster at ``address``). ``log_dir`` receives TensorBoard logs (one run per member).
    ``allow_shipped`` lets ``out`` be one of the package's pretrained folders (maintainers
    only, the CLI's ``--replace-shipped``); ``out`` is checked before any training.

    Raises
    ------
    ValidationError
        A bad argument, or ``out`` in the shipped folders without ``allow_shipped`` or not
        writable: refused before the data are generated.
    """
    if not isinstance(recipe, Recipe):
        raise bad("recipe", recipe, "a Recipe (Recipe.load(path))")
    boolean("allow_shipped", allow_shipped)
    refuse_shipped("out", output_path("out", out, directory=True), allow=allow_shipped,
                   flag="--replace-shipped")
    num_workers = integer("num_workers", num_workers, low=1, high=100_000)
    device = validate_device("device", device)
    for name, fn in (("on_epoch", on_epoch), ("progress", progress)):
        if fn is not None and not callable(fn):
            raise bad(name, fn, "a function or None")
    if log_dir is not None:
        output_path("log_dir", log_dir, directory=True)
    start = time.perf_counter()
    data = data if data is not None else load_training_data(recipe, progress,
                                                            recipe.train.horizons)
    data_seconds = time.perf_counter() - start
    tl = data.timelines
    rows_train, rows_val, split_record = split_rows(data, recipe)
    train, val = tl.subset(rows_train), tl.subset(rows_val)
    truth_train = truth_val = None
    if data.truth is not None:
        truth_train, truth_val = data.truth.subset(rows_train), data.truth.subset(rows_val)
    cancers = tuple(sorted(set(tl.patients["cancer_type"]))) if recipe.use_cancer_type else ()
    module = LatentConfig(n_cancer_types=len(cancers), **recipe.module)  # type: ignore[arg-type]
    config = WorldModelConfig(module, recipe.n_members, cancers)
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
                            num_workers=num_workers, address=address, on_epoch=record,
                            truth_train=truth_train, truth_val=truth_val)
        else:
            model.fit(train, val, recipe.train, seed=recipe.seed, on_epoch=record,
                      truth_train=truth_train, truth_val=truth_val)
    finally:
        for writer in writers.values():
            writer.close()
    scales: tuple[float, ...] = ()
    if recipe.calibrate and truth_val is not None:
        scales = model.calibrate(val, truth_val, horizons=min(6, truth_val.horizons))
    cohorts = tl.patients.groupby("cohort", sort=False)
    model.card = {
        "command": command or "immunegym train --config FILE --out DIR",
        "recipe": recipe.source,
        "data": {"suite": recipe.suite, "n_patients": len(tl),
                 "synthetic_patients": int(data.synthetic.sum()),
                 "counts_only": recipe.counts_only, "seed": recipe.data_seed,
                 "randomized_fraction": recipe.randomized_fraction,
                 "privileged": model.config.privileged,
                 "cohorts": {str(k): {"cancer_type": str(g["cancer_type"].iloc[0]),
                                      "lab": str(g["lab"].iloc[0]), "n": len(g)}
                             for k, g in cohorts}},
        "split": split_record,
        "train": recipe.train.to_dict(),
        "seed": recipe.seed,
        "num_workers": num_workers,
        "conformal_scale": list(scales),
        "data_seconds": data_seconds,
        "train_seconds": time.perf_counter() - start,
        "best_val_loss": [min(r.val_loss for r in h) for h in model.history],
        "epochs_run": [len(h) for h in model.history],
    }
    model.save(out, allow_shipped=allow_shipped)
    return model
