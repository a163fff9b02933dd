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
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from immunegym._atomic import atomic_dir

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


def save_checkpoint(model, path: str | os.PathLike[str], card: dict[str, object]) -> Path:
    """Write ``model`` to the directory ``path`` (replaced atomically if it exists)."""
    from immunegym.world_model.card import render_card

    target = Path(path)
    with atomic_dir(target) as staging:
        tensors = {f"member{m}.{k}": v.detach().cpu().contiguous()
                   for m, module in enumerate(model.members)
                   for k, v in module.state_dict().items()}
        save_file(tensors, str(staging / WEIGHTS),
                  metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        config = {"format": FORMAT, "format_version": FORMAT_VERSION,
                  **model.config.to_dict()}
        (staging / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        training = {**card, "history": [[vars(r) for r in h] for h in model.history]}
        (staging / TRAINING).write_text(json.dumps(training, indent=2) + "\n")
        (staging / CARD).write_text(render_card(model, card))
    return target


def load_checkpoint(path: str | os.PathLike[str] | None = None, *, device: str = "cpu"):
    """Read a checkpoint directory (the pretrained default when ``path`` is None).

    Raises
    ------
    FileNotFoundError
        If the directory or one of its files is missing.
    ValueError
        If the config is not a world-model config, the weights file is not safetensors, or
        the weights do not match the config (names the first missing, unexpected or
        mis-shaped tensor).
    """
    from immunegym.world_model.model import WorldModel, WorldModelConfig

    directory = Path(path) if path is not None else PRETRAINED
    if not directory.is_dir():
        hint = (" (the pretrained default is produced by `immunegym train --config "
                "immunegym/world_model/configs/default.toml --out immunegym/pretrained/"
                "world_model`)") if path is None else ""
        raise FileNotFoundError(f"checkpoint: directory {str(directory)!r} does not exist"
                                f"{hint}")
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"checkpoint: {str(directory / name)!r} is missing")
    try:
        raw = json.loads((directory / CONFIG).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint: {str(directory / CONFIG)!r} is not JSON ({err})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {str(directory / CONFIG)!r} is not a world-model config "
                         f"(format {raw.get('format') if isinstance(raw, dict) else None!r}, "
                         f"expected {FORMAT!r})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint: format_version {raw.get('format_version')}; this "
                         f"immunegym reads {FORMAT_VERSION}")
    config = WorldModelConfig.from_dict(raw)
    try:
        tensors = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"checkpoint: {str(directory / WEIGHTS)!r} is not a safetensors file "
                         f"({err})") from None
    model = WorldModel(config, device="cpu")
    for m, module in enumerate(model.members):
        expected = module.state_dict()
        prefix = f"member{m}."
        got = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing = sorted(set(expected) - set(got))
        unexpected = sorted(set(got) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"checkpoint: weights do not match config.json for member {m}: missing "
                f"{missing[:3]}, unexpected {unexpected[:3]}")
        for key, value in expected.items():
            if tuple(got[key].shape) != tuple(value.shape):
                raise ValueError(
                    f"checkpoint: tensor {prefix}{key} has shape {tuple(got[key].shape)} but "
                    f"config.json implies {tuple(value.shape)}")
            if got[key].is_floating_point() and not bool(torch.isfinite(got[key]).all()):
                raise ValueError(f"checkpoint: tensor {prefix}{key} holds NaN or infinite "
                                 "values; expected finite weights")
        module.load_state_dict(got)
    extra = sorted(k for k in tensors if not k.startswith(
        tuple(f"member{m}." for m in range(config.n_members))))
    if extra:
        raise ValueError(f"checkpoint: weights hold tensors for more members than config.json "
                         f"says ({config.n_members}): {extra[:3]}")
    if (directory / TRAINING).is_file():
        from immunegym.world_model.fitting import EpochRecord

        model.card = json.loads((directory / TRAINING).read_text())
        model.history = [[EpochRecord(**r) for r in h] for h in model.card.pop("history", [])]
    return model.to(device)
