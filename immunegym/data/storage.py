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

FORMAT_VERSION = 1
_META_KEY = "immunegym"


def save_arrays(
    path: str | os.PathLike[str], kind: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]
) -> Path:
    """Write arrays and JSON metadata to one ``.safetensors`` file, atomically."""
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
    FileNotFoundError
        If the path does not exist.
    ValueError
        If the file is not an immunegym safetensors file of this kind and version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="np") as handle:
            header = (handle.metadata() or {}).get(_META_KEY)
            arrays = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"file {str(path)!r} is not a safetensors file ({err}); expected one written by "
            f"immunegym ({kind})"
        ) from None
    if header is None:
        raise ValueError(f"file {str(path)!r} has no immunegym metadata; expected a {kind}")
    meta = json.loads(header)
    if meta.get("kind") != kind:
        raise ValueError(f"file {str(path)!r} holds a {meta.get('kind')!r}, expected {kind!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"file {str(path)!r} has format_version {meta.get('format_version')}, this "
            f"immunegym reads version {FORMAT_VERSION}"
        )
    return arrays, meta
