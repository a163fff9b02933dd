"""One validation layer for every public entry point.

Every check here raises :class:`ValidationError` with the project's message form::

    <field>: got <value>; expected <what was expected>

so that a user reads which argument was wrong, what it held and what would be accepted,
whichever room of the package the call came from. :class:`ValidationError` subclasses both
``ValueError`` and ``TypeError``: code that caught either keeps working.

Sizes are checked before anything is allocated: :func:`memory_budget` compares an estimate
with a limit (``IMMUNEGYM_MAX_MEMORY_GB``, default 16 GiB) and says how to raise it.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ValidationError",
    "bad",
    "boolean",
    "choice",
    "device",
    "did_you_mean",
    "existing_file",
    "finite_array",
    "integer",
    "integer_range",
    "is_shipped",
    "known_keys",
    "memory_budget",
    "memory_limit_bytes",
    "number",
    "output_path",
    "refuse_shipped",
    "seed",
]

MEMORY_LIMIT_ENV = "IMMUNEGYM_MAX_MEMORY_GB"
DEFAULT_MEMORY_LIMIT_GB = 16.0
# gymnasium's seeding and numpy's SeedSequence take any non-negative integer, torch's
# generators take at most 64 bits; one range for every seeded object in the package.
MAX_SEED = 2**63 - 1
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class ValidationError(ValueError, TypeError):
    """A public argument or input file that does not meet its contract.

    The message names the field, the value received and what was expected.
    """


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bad(field: str, value: Any, expected: str) -> ValidationError:
    """The error for ``field`` holding ``value`` where ``expected`` was wanted."""
    return ValidationError(f"{field}: got {_show(value)}; expected {expected}")


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(field: str, value: Any, *, low: int | None = None, high: int | None = None,
            hint: str = "") -> int:
    """``value`` as an ``int`` in ``[low, high]`` (either bound optional).

    Booleans and floats are refused, even ``2.0``: a count given as a float is usually a
    unit or a typing mistake. ``hint`` is appended to the message (how to raise a limit).
    """
    if low is not None and high is not None:
        expected = f"an integer in {low}..{high}"
    elif low is not None:
        expected = f"an integer >= {low}"
    elif high is not None:
        expected = f"an integer <= {high}"
    else:
        expected = "an integer"
    if hint:
        expected = f"{expected} ({hint})"
    if not _is_integer(value):
        raise bad(field, value, expected)
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise bad(field, value, expected)
    return value


def integer_range(field: str, pair: Any, *, low: int, high: int) -> tuple[int, int]:
    """``pair`` as ``(lo, hi)`` integers with ``low <= lo <= hi <= high``."""
    expected = f"(low, high) integers with {low} <= low <= high <= {high}"
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise bad(field, pair, expected)
    lo = integer(field, pair[0], low=low, high=high)
    hi = integer(field, pair[1], low=low, high=high)
    if lo > hi:
        raise bad(field, pair, expected)
    return lo, hi


def number(field: str, value: Any, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite ``float`` in the interval given (closed unless ``*_open``)."""
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    if low is not None and high is not None:
        expected = f"a finite number in {lo}{low:g}, {high:g}{hi}"
    elif low is not None:
        expected = f"a finite number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        expected = f"a finite number {'<' if high_open else '<='} {high:g}"
    else:
        expected = "a finite number"
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise bad(field, value, expected)
    value = float(value)
    if not math.isfinite(value):
        raise bad(field, value, expected)
    if low is not None and (value < low or (low_open and value == low)):
        raise bad(field, value, expected)
    if high is not None and (value > high or (high_open and value == high)):
        raise bad(field, value, expected)
    return value


def boolean(field: str, value: Any) -> bool:
    """``value`` as a ``bool``; strings such as ``"no"`` are refused, not read as truthy."""
    try:
        import numpy as np

        if isinstance(value, np.bool_):
            return bool(value)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    if not isinstance(value, bool):
        raise bad(field, value, "True or False")
    return value


def did_you_mean(value: Any, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the option nearest to ``value``, or ``""`` if none is close."""
    near = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def choice(field: str, value: Any, options: Iterable[str]) -> str:
    """``value`` when it is one of ``options``; else an error listing them (and the nearest)."""
    options = list(options)
    if isinstance(value, str) and value in options:
        return value
    tip = did_you_mean(value, options) if isinstance(value, str) else ""
    raise bad(field, value, f"one of {options}{tip}")


def known_keys(field: str, mapping: Any, allowed: Collection[str]) -> dict[str, Any]:
    """``mapping`` as a dict after checking it is a mapping with only ``allowed`` string keys.

    A typo (``"patiant"``) is named with the nearest known key instead of being ignored.
    """
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise bad(field, mapping, f"a mapping with keys from {sorted(allowed)}")
    for key in mapping:
        if not isinstance(key, str) or key not in allowed:
            raise ValidationError(
                f"{field}: unknown key {key!r}; expected keys from {sorted(allowed)}"
                f"{did_you_mean(key, allowed)}"
            )
    return dict(mapping)


def seed(field: str, value: Any, *, optional: bool = False) -> int | None:
    """A seed: a non-negative integer below 2**63 (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return None
    expected = "a non-negative integer below 2**63" + (" or None" if optional else "")
    if not _is_integer(value) or not 0 <= int(value) <= MAX_SEED:
        raise bad(field, value, expected)
    return int(value)


def device(field: str, value: Any) -> str:
    """A torch device string that exists on this machine (``"auto"``: CUDA when present).

    Returns the resolved device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    """
    import torch

    expected = "'auto', 'cpu', 'cuda' or 'cuda:N'"
    if isinstance(value, torch.device):
        value = str(value)
    if not isinstance(value, str):
        raise bad(field, value, expected)
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value == "cpu":
        return value
    if value == "cuda" or value.startswith("cuda:"):
        index = value[5:] if value.startswith("cuda:") else "0"
        if not index.isdigit():
            raise bad(field, value, expected)
        if not torch.cuda.is_available():
            raise bad(field, value, "'cpu' or 'auto': CUDA is not available on this machine")
        if int(index) >= torch.cuda.device_count():
            raise bad(field, value, f"a CUDA device index below {torch.cuda.device_count()}")
        return value
    raise bad(field, value, expected)


def memory_limit_bytes() -> int:
    """The allocation limit: ``IMMUNEGYM_MAX_MEMORY_GB`` GiB (default 16)."""
    raw = os.environ.get(MEMORY_LIMIT_ENV)
    if raw is None:
        return int(DEFAULT_MEMORY_LIMIT_GB * 2**30)
    try:
        gb = float(raw)
    except ValueError:
        raise bad(MEMORY_LIMIT_ENV, raw, "a positive number of GiB") from None
    if not math.isfinite(gb) or gb <= 0:
        raise bad(MEMORY_LIMIT_ENV, raw, "a positive number of GiB")
    return int(gb * 2**30)


def memory_budget(field: str, value: Any, n_bytes: float, what: str = "") -> None:
    """Refuse a size whose estimated memory ``n_bytes`` exceeds the limit, before allocating.

    The message names the field and value, the estimate, the limit and how to raise it.
    """
    limit = memory_limit_bytes()
    if n_bytes > limit:
        about = f" for {what}" if what else ""
        raise ValidationError(
            f"{field}: got {_show(value)}; this needs about {n_bytes / 2**30:,.1f} GiB{about}, "
            f"above the limit of {limit / 2**30:,.1f} GiB (set {MEMORY_LIMIT_ENV} to raise it, "
            "or use a smaller value)"
        )


def finite_array(field: str, value: Any) -> Any:
    """Refuse arrays or tensors holding NaN or infinity; returns ``value`` unchanged."""
    import numpy as np

    try:
        import torch

        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                n = int((~torch.isfinite(value)).sum())
                raise bad(field, f"<tensor with {n} non-finite values>", "finite values only")
            return value
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    arr = np.asarray(value)
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        n = int((~np.isfinite(arr)).sum())
        raise bad(field, f"<array with {n} non-finite values>", "finite values only")
    return value


def existing_file(field: str, path: Any, *, hdf5: bool = False,
                  suffixes: Collection[str] = ()) -> Path:
    """``path`` as a :class:`Path` to a readable file (HDF5 when ``hdf5``).

    Checks existence, that it is a file and not a directory, the suffix when ``suffixes``
    is given, and the HDF5 signature when ``hdf5`` (so a renamed CSV is named as such, not
    reported by h5py from deep inside).
    """
    if not isinstance(path, str | os.PathLike):
        raise bad(field, path, "a path to a file")
    p = Path(path)
    if not p.exists():
        raise bad(field, str(p), "an existing file (no such file)")
    if p.is_dir():
        raise bad(field, str(p), "a file, not a directory")
    if suffixes and p.suffix not in suffixes:
        raise bad(field, str(p), f"a file ending in {' or '.join(sorted(suffixes))}")
    try:
        with p.open("rb") as handle:
            head = handle.read(len(_HDF5_SIGNATURE))
    except OSError as err:
        raise bad(field, str(p), f"a readable file ({err.strerror})") from None
    if hdf5 and head != _HDF5_SIGNATURE:
        raise bad(field, str(p), "an HDF5 file (.h5ad); this file is not HDF5")
    return p


def output_path(field: str, path: Any, *, directory: bool = False) -> Path:
    """``path`` as a :class:`Path` that can be written, checked before any work is done.

    The nearest existing ancestor must be a writable directory; an existing ``path`` must be
    a directory when ``directory`` and a file otherwise.
    """
    if not isinstance(path, str | os.PathLike) or str(path) == "":
        raise bad(field, path, "a path to write to")
    p = Path(path)
    if p.exists():
        if directory and not p.is_dir():
            raise bad(field, str(p), "a directory (this path is a file)")
        if not directory and p.is_dir():
            raise bad(field, str(p), "a file path (this path is a directory)")
    parent = p if (directory and p.exists()) else p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise bad(field, str(p), f"a path under a directory ({str(parent)!r} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise bad(field, str(p), f"a writable location ({str(parent)!r} is not writable)")
    return p


_PACKAGE_DIR = Path(__file__).resolve().parent
# Files the package ships and reads as its defaults: never overwritten unless asked for.
SHIPPED_DIRS = (_PACKAGE_DIR / "pretrained", _PACKAGE_DIR / "sim" / "calibrated")


def is_shipped(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` lies inside one of the package's shipped-default folders."""
    target = Path(path).resolve()
    return any(target == d or d in target.parents for d in SHIPPED_DIRS)


def refuse_shipped(field: str, path: str | os.PathLike[str], *, allow: bool,
                   flag: str) -> Path:
    """Refuse to write into the shipped defaults unless ``allow`` (the maintainers' ``flag``)."""
    if is_shipped(path) and not allow:
        raise ValidationError(
            f"{field}: got {str(path)!r}; expected a path outside the package's shipped "
            f"defaults ({', '.join(str(d) for d in SHIPPED_DIRS)}): shipped files are "
            f"read-only unless you pass {flag} (maintainers only)"
        )
    return Path(path)
