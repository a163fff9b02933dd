"""Policy checkpoints of the RL agents: safetensors weights + a JSON config, nothing pickled.

A checkpoint is a directory::

    weights.safetensors   the policy network's tensors (state_dict keys)
    config.json           format, the agent's arguments, the env it was trained in, the
                          observation / action spaces and what rebuilds the network

The directory is written in a staging directory beside it and renamed into place, so a
crash never leaves a half-written checkpoint (or weights that do not belong to the config:
``config.json`` also records the weights' SHA-256). Loading parses JSON and reads tensors;
nothing in the directory is executed or unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from immunegym._atomic import atomic_dir
from immunegym.validation import ValidationError, output_path, refuse_shipped

WEIGHTS, CONFIG = "weights.safetensors", "config.json"
FORMAT_VERSION = 1


def save_policy(path: str | os.PathLike[str], tensors: dict[str, Any],
                config: dict[str, Any], *, fmt: str) -> Path:
    """Write ``tensors`` (name -> torch tensor) and ``config`` to the directory ``path``.

    An existing directory at ``path`` is replaced (atomically, as a whole).
    """
    import torch
    from safetensors.torch import save_file

    # Agent checkpoints never belong in the package's shipped defaults.
    target = refuse_shipped("save_path", output_path("save_path", path, directory=True),
                            allow=False, flag="--replace-shipped")
    with atomic_dir(target) as staging:
        # Clones: contiguous, on the CPU, and no two names share memory (safetensors refuses
        # shared tensors; load_state_dict fills tied parameters from either name).
        weights = {k: torch.as_tensor(v).detach().cpu().contiguous().clone()
                   for k, v in tensors.items()}
        save_file(weights, str(staging / WEIGHTS), metadata={"format": fmt})
        digest = hashlib.sha256((staging / WEIGHTS).read_bytes()).hexdigest()
        manifest = {"format": fmt, "format_version": FORMAT_VERSION, **config,
                    "weights_sha256": digest}
        (staging / CONFIG).write_text(json.dumps(manifest, indent=2, default=_jsonable) + "\n")
    return target


def load_policy(path: str | os.PathLike[str], *, fmt: str) -> tuple[dict[str, Any], dict]:
    """Read a checkpoint directory written by :func:`save_policy` with format ``fmt``.

    Returns
    -------
    tensors, config
        The weights (name -> CPU torch tensor) and the parsed ``config.json``.

    Raises
    ------
    FileNotFoundError
        If the directory or one of its files is missing.
    ValueError
        If ``config.json`` is not JSON of format ``fmt``, the weights are not safetensors,
        or they are not the weights the config was written with (SHA-256 differs).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"load_path: directory {str(directory)!r} does not exist "
                                f"(expected a checkpoint with {WEIGHTS} and {CONFIG})")
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"load_path: {str(directory / name)!r} is missing")
    try:
        config = json.loads((directory / CONFIG).read_text())
    except json.JSONDecodeError as err:
        raise ValidationError(
            f"load_path: {str(directory / CONFIG)!r} is not JSON ({err})") from None
    got = config.get("format") if isinstance(config, dict) else None
    if got != fmt:
        raise ValidationError(f"load_path: {str(directory / CONFIG)!r} has format {got!r}; "
                         f"expected {fmt!r}")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValidationError(f"load_path: format_version {config.get('format_version')!r}; this "
                         f"immunegym reads {FORMAT_VERSION}")
    raw = (directory / WEIGHTS).read_bytes()
    if hashlib.sha256(raw).hexdigest() != config.get("weights_sha256"):
        raise ValidationError(f"load_path: {str(directory / WEIGHTS)!r} is not the weights "
                         f"{CONFIG} was written with (SHA-256 differs)")
    try:
        tensors = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError) as err:
        raise ValidationError(f"load_path: {str(directory / WEIGHTS)!r} is not a safetensors file "
                         f"({err})") from None
    return tensors, config


def load_state(module, tensors: dict[str, Any], where: str) -> None:
    """``module.load_state_dict(tensors)`` with an error naming the first mismatch."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValidationError(f"{where}: weights do not match the network config.json describes: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    for key, value in expected.items():
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise ValidationError(f"{where}: tensor {key} has shape {tuple(tensors[key].shape)}; "
                             f"config.json implies {tuple(value.shape)}")
    module.load_state_dict(tensors)


# ---------------------------------------------------------------------- spaces as JSON
def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A JSON description of a Box, Discrete or MultiDiscrete space."""
    if isinstance(space, spaces.Box):
        return {"type": "Box", "low": space.low.tolist(), "high": space.high.tolist(),
                "shape": list(space.shape), "dtype": str(space.dtype)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(),
                "dtype": str(space.dtype)}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    raise ValidationError(f"space: {space} cannot be saved; expected Box, Discrete or "
                     "MultiDiscrete (use observation_type='flat')")


def space_from_json(raw: dict[str, Any]) -> spaces.Space:
    """The space :func:`space_to_json` described."""
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "Box":
        return spaces.Box(np.asarray(raw["low"], dtype=raw["dtype"]),
                          np.asarray(raw["high"], dtype=raw["dtype"]),
                          shape=tuple(raw["shape"]), dtype=np.dtype(raw["dtype"]))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.asarray(raw["nvec"]), dtype=np.dtype(raw["dtype"]))
    if kind == "Discrete":
        return spaces.Discrete(int(raw["n"]), start=int(raw["start"]))
    raise ValidationError(f"config.json: space type {kind!r}; expected Box, Discrete or "
                     "MultiDiscrete")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise ValidationError(f"config.json: {type(value).__name__} is not JSON serializable")
