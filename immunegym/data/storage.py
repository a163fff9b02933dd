"""Save and load processed data as safetensors + JSON: no pickle anywhere.

Arrays go into the safetensors body; everything else (ids, column names, the kind of
object, a format version) goes into the safetensors header metadata as one JSON string.
One file per object, written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from immunegym._atomic import atomic_path
from immunegym.validation import ValidationError, existing_file, output_path

FORMAT_VERSION = 1
_META_KEY = "immunegym"


def save_arrays(
    path: str | os.PathLike[str], kind: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]
) -> Path:
    """Write arrays and JSON metadata to one ``.safetensors`` file, atomically."""
    output_path("path", path)
    header = {"kind": kind, "format_version": FORMAT_VERSION, **meta}
    contiguous = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata={_META_KEY: json.dumps(header)})
    return Path(path)


def load_arrays(
    path: str | os.PathLike[str], kind: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save_arrays`, checking that it holds ``kind``.

    Raises
    ------
    MissingFileError
        If the path does not exist (a ``FileNotFoundError`` and a ``ValidationError``).
    ValidationError
        If the path is a directory, or the file is not an immunegym safetensors file of this
        kind and version.
    """
    from immunegym.data.schema import MissingFileError

    try:
        checked = existing_file("path", path)
    except ValidationError as err:
        if isinstance(path, str | os.PathLike) and not Path(path).exists():
            raise MissingFileError(str(err)) from None
        raise
    path = checked
    try:
        with safe_open(str(path), framework="np") as handle:
            header = (handle.metadata() or {}).get(_META_KEY)
            arrays = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise ValidationError(
            f"path: {str(path)!r} is not a safetensors file ({err}); expected one written by "
            f"immunegym ({kind})"
        ) from None
    if header is None:
        raise ValidationError(
            f"path: {str(path)!r} has no immunegym metadata; expected a {kind}"
        )
    try:
        meta = json.loads(header)
    except json.JSONDecodeError as err:
        raise ValidationError(
            f"path: {str(path)!r} has damaged immunegym metadata ({err}); expected a {kind}"
        ) from None
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        found = meta.get("kind") if isinstance(meta, dict) else None
        raise ValidationError(f"path: {str(path)!r} holds a {found!r}, expected {kind!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValidationError(
            f"path: {str(path)!r} has format_version {meta.get('format_version')}, this "
            f"immunegym reads version {FORMAT_VERSION}"
        )
    return arrays, meta
