"""Gym ids: the two base environments and one per scenario file in ``envs/*.toml``.

Entry points are strings, so registering imports neither torch nor the world model.
Scenario files are looked up in ``$IMMUNEGYM_ENVS_DIR`` when set, else in the repository's
top-level ``envs/`` folder (next to the package in a source checkout).
"""

from __future__ import annotations

import os
from pathlib import Path

from gymnasium.envs.registration import register, registry

from immunegym.env.scenario import load_scenario_file
from immunegym.validation import ValidationError, bad

ENTRY_POINTS: dict[str, tuple[str, str]] = {
    "world": ("immunegym.env.single:ImmuneWorldEnv", "immunegym.env.vector:ImmuneWorldVectorEnv"),
    "sim": ("immunegym.env.single:ImmuneSimEnv", "immunegym.env.vector:ImmuneSimVectorEnv"),
}
BASE_IDS: dict[str, str] = {"ImmuneWorld-v0": "world", "ImmuneSim-v0": "sim"}


def envs_dir() -> Path:
    """Where scenario files are read from."""
    override = os.environ.get("IMMUNEGYM_ENVS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "envs"


def register_envs(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Register the base ids and every scenario file's id; returns the ids registered.

    Ids already registered are left alone (importing twice is harmless), but within one
    folder two files may not claim the same id, nor a file a base id.

    Raises
    ------
    ValidationError
        For a ``directory`` (or ``$IMMUNEGYM_ENVS_DIR``) that is not a folder, an invalid
        scenario file, or an id claimed twice.
    """
    added = []
    for env_id, simulator in BASE_IDS.items():
        if _add(env_id, simulator, {}):
            added.append(env_id)
    if directory is not None:
        folder = _folder("directory", directory)
    elif os.environ.get("IMMUNEGYM_ENVS_DIR"):
        folder = _folder("IMMUNEGYM_ENVS_DIR", os.environ["IMMUNEGYM_ENVS_DIR"])
    else:
        folder = envs_dir()  # absent outside a source checkout: nothing to add
    if folder.is_dir():
        claimed: dict[str, Path] = {}
        for path in sorted(folder.glob("*.toml")):
            spec = load_scenario_file(path)
            if spec.id in BASE_IDS or spec.id in claimed:
                other = "a base id" if spec.id in BASE_IDS else str(claimed[spec.id])
                raise ValidationError(f"{path}: id: got {spec.id!r}; expected an id of its "
                                      f"own (already claimed by {other})")
            claimed[spec.id] = path
            if _add(spec.id, spec.simulator, {"scenario": spec.scenario}):
                added.append(spec.id)
    return added


def _folder(field: str, value: str | os.PathLike[str]) -> Path:
    if not isinstance(value, str | os.PathLike) or not Path(value).is_dir():
        raise bad(field, value if not isinstance(value, os.PathLike) else str(value),
                  "an existing folder of scenario .toml files")
    return Path(value)


def _add(env_id: str, simulator: str, kwargs: dict) -> bool:
    if env_id in registry:
        return False
    entry, vector_entry = ENTRY_POINTS[simulator]
    register(env_id, entry_point=entry, vector_entry_point=vector_entry, kwargs=kwargs,
             disable_env_checker=False)
    return True
