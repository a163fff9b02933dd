"""Checkpoints: safetensors weights + JSON config + a model card, written atomically.

A checkpoint is a directory::

    weights.safetensors   every member's tensors, keys "member<m>.<parameter>"
    config.json           WorldModelConfig (architecture, ensemble size, inputs)
    training.json         data, splits, training settings, per-epoch losses, evaluation
    MODEL_CARD.md         what it was trained on, what it is for, its limits and figures

Loading parses JSON and reads tensors; nothing in the directory is executed or unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from immunegym._atomic import atomic_dir
from immunegym.validation import (
    ValidationError,
    bad,
    boolean,
    known_keys,
    memory_budget,
    output_path,
    refuse_shipped,
)
from immunegym.validation import device as validate_device

WEIGHTS, CONFIG, TRAINING, CARD = "weights.safetensors", "config.json", "training.json", \
    "MODEL_CARD.md"
FORMAT = "immunegym-world-model"
FORMAT_VERSION = 2
"""2: the latent state-space model (1 was the earlier Transformer, no longer readable)."""
PRETRAINED = Path(__file__).resolve().parent.parent / "pretrained" / "world_model"
"""Directory of the pretrained default checkpoint shipped in the package."""
PRETRAINED_OBSERVATION_ONLY = PRETRAINED.parent / "world_model_observation_only"
"""The same recipe trained without the privileged state (observations only), shipped for
the benchmark's ``observation_only`` comparison."""


class CheckpointNotFoundError(ValidationError, FileNotFoundError):
    """A checkpoint directory, or a file it needs, does not exist."""


def save_checkpoint(model, path: str | os.PathLike[str], card: dict[str, object], *,
                    allow_shipped: bool = False) -> Path:
    """Write ``model`` to the directory ``path`` (replaced atomically if it exists).

    Parameters
    ----------
    model
        The :class:`~.model.WorldModel`.
    path
        Checkpoint directory.
    card
        The training record (JSON-serializable), written as ``training.json`` and the card.
    allow_shipped
        Allow ``path`` inside the package's pretrained folders (maintainers only, the CLI's
        ``--replace-shipped``); refused by default, so the shipped default is read-only.

    Raises
    ------
    ValidationError
        If ``path`` is in the shipped folders without ``allow_shipped``, cannot be written,
        or ``card`` is not JSON-serializable. Nothing is written then.
    """
    from immunegym.world_model.card import render_card

    boolean("allow_shipped", allow_shipped)
    target = refuse_shipped("path", output_path("path", path, directory=True),
                            allow=allow_shipped, flag="--replace-shipped")
    try:
        training = json.dumps({**card, "history": [[vars(r) for r in h]
                                                   for h in model.history]}, indent=2)
    except (TypeError, ValueError) as err:
        raise bad("card", f"<{type(card).__name__}>",
                  f"a JSON-serializable training record ({err})") from None
    with atomic_dir(target) as staging:
        tensors = {f"member{m}.{k}": v.detach().cpu().contiguous()
                   for m, module in enumerate(model.members)
                   for k, v in module.state_dict().items()}
        save_file(tensors, str(staging / WEIGHTS),
                  metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        config = {"format": FORMAT, "format_version": FORMAT_VERSION,
                  **model.config.to_dict()}
        (staging / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (staging / TRAINING).write_text(training + "\n")
        (staging / CARD).write_text(render_card(model, card))
    return target


def _bad_file(file: Path, expected: str) -> ValidationError:
    """The error for a checkpoint file, naming its whole path (never shortened)."""
    return ValidationError(f"checkpoint: got {str(file)!r}; expected {expected}")


def _read_json(file: Path, what: str) -> object:
    try:
        return json.loads(file.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise _bad_file(file, f"a readable {what} ({err})") from None
    except json.JSONDecodeError as err:
        raise _bad_file(file, f"a JSON {what} ({err})") from None


def load_checkpoint(path: str | os.PathLike[str] | None = None, *, device: str = "cpu"):
    """Read a checkpoint directory (the pretrained default when ``path`` is None).

    Everything is checked before a tensor reaches the model: ``config.json`` key by key
    (unknown keys, types, ranges, the cell types and therapies in this immunegym's order),
    and every tensor's presence, shape, dtype and finiteness. Only JSON is parsed and
    safetensors read; nothing is unpickled or executed.

    Raises
    ------
    CheckpointNotFoundError
        If the directory or one of its files is missing (a ``FileNotFoundError`` too).
    ValidationError
        If the config is not a valid world-model config (names the key), the weights file
        is not safetensors, or the weights do not match the config (names the first
        missing, unexpected, mis-shaped or non-finite tensor).
    """
    from immunegym.world_model.model import WorldModel, WorldModelConfig

    device = validate_device("device", device)
    if path is not None and not isinstance(path, str | os.PathLike):
        raise bad("path", path, "a checkpoint directory (str or Path) or None")
    directory = Path(path) if path is not None else PRETRAINED
    if not directory.is_dir():
        hint = (" (the pretrained default is produced by `immunegym train --config "
                "immunegym/world_model/configs/default.toml --out immunegym/pretrained/"
                "world_model`)") if path is None else ""
        what = "a directory, not a file" if directory.exists() else "an existing directory"
        raise CheckpointNotFoundError(
            f"checkpoint: got {str(directory)!r}; expected {what} with {CONFIG} and "
            f"{WEIGHTS} (it does not exist as a directory){hint}")
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise CheckpointNotFoundError(
                f"checkpoint: got {str(directory)!r}; expected a checkpoint directory "
                f"holding {name} ({str(directory / name)!r} is missing)")
    raw = _read_json(directory / CONFIG, "world-model config")
    got = raw.get("format") if isinstance(raw, dict) else None
    if got != FORMAT:
        raise _bad_file(directory / CONFIG,
                  f"a world-model config (format {FORMAT!r}); this file's format is {got!r}")
    if raw.get("format_version") != FORMAT_VERSION:
        raise _bad_file(directory / CONFIG,
                  f"format_version {FORMAT_VERSION} (this file has "
                  f"{raw.get('format_version')!r})")
    try:
        config = WorldModelConfig.from_dict(raw)
    except ValidationError as err:
        raise ValidationError(f"checkpoint {str(directory / CONFIG)!r}: {err}") from None
    n_bytes = (directory / WEIGHTS).stat().st_size
    memory_budget("checkpoint", str(directory / WEIGHTS), 2 * n_bytes, "its weights")
    try:
        tensors = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as err:
        raise _bad_file(directory / WEIGHTS,
                  f"a safetensors file ({err}); it is not a safetensors file") from None
    where = str(directory / WEIGHTS)
    model = WorldModel(config, device="cpu")
    for m, module in enumerate(model.members):
        expected = module.state_dict()
        prefix = f"member{m}."
        got_t = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing = sorted(set(expected) - set(got_t))
        unexpected = sorted(set(got_t) - set(expected))
        if missing or unexpected:
            raise ValidationError(
                f"checkpoint {where!r}: weights do not match config.json for member {m}: "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        for key, value in expected.items():
            tensor = got_t[key]
            if tuple(tensor.shape) != tuple(value.shape):
                raise ValidationError(
                    f"checkpoint {where!r}: tensor {prefix}{key} has shape "
                    f"{tuple(tensor.shape)} but config.json implies {tuple(value.shape)}")
            if tensor.dtype != value.dtype:
                raise ValidationError(
                    f"checkpoint {where!r}: tensor {prefix}{key} has dtype {tensor.dtype}; "
                    f"expected {value.dtype}")
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                n = int((~torch.isfinite(tensor)).sum())
                raise ValidationError(
                    f"checkpoint {where!r}: tensor {prefix}{key} holds {n} NaN or infinite "
                    "values; expected finite weights")
        module.load_state_dict(got_t)
    extra = sorted(k for k in tensors if not k.startswith(
        tuple(f"member{m}." for m in range(config.n_members))))
    if extra:
        raise ValidationError(
            f"checkpoint {where!r}: weights hold tensors for more members than config.json "
            f"says ({config.n_members}): {extra[:3]}")
    if (directory / TRAINING).is_file():
        model.card, model.history = _read_training(directory / TRAINING)
    return model.to(device)


def _read_training(file: Path):
    """The training record and per-epoch history of ``training.json``."""
    from immunegym.world_model.fitting import EpochRecord

    card = _read_json(file, "training record")
    if not isinstance(card, dict):
        raise _bad_file(file, "a training record (a JSON object)")
    history = card.pop("history", [])
    keys = [f.name for f in fields(EpochRecord)]
    try:
        records = [[EpochRecord(**known_keys("history", r, keys)) for r in h]
                   for h in history]
    except (TypeError, ValidationError) as err:
        raise ValidationError(f"checkpoint {str(file)!r}: history: {err}") from None
    return card, records
