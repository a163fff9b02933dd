"""The AnnData schema: which ``obs`` columns hold what, registered and validated up front.

In the scvi-tools ``setup_anndata`` style, a user registers once which columns of
``adata.obs`` hold the patient, sample, time, cell-type label, therapy and response; the
registry is stored in ``adata.uns["immunegym"]`` (so it travels with the .h5ad file) and
every later step reads it from there. Validation happens at registration and names the
column, the offending value and what was expected.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from immunegym.data.vocab import parse_regimen, parse_response
from immunegym.validation import ValidationError, did_you_mean, existing_file

UNS_KEY = "immunegym"
# Times are days from treatment start; more than ten years of days is a unit mistake (hours,
# seconds, a date) far more often than a real follow-up.
MAX_DAYS = 3653.0
_REQUIRED_KEYS = ("patient_key", "sample_key", "label_key")
_OPTIONAL_KEYS = ("time_key", "therapy_key", "response_key")


class DataValidationError(ValidationError):
    """Input data that does not follow the immunegym schema; the message says where."""


class MissingFileError(DataValidationError, FileNotFoundError):
    """A data file that does not exist (also a :class:`FileNotFoundError`)."""


def check_days(field: str, times: np.ndarray, where: list[str], what: str = "cell") -> None:
    """Refuse NaN, infinite, negative or implausibly large times (days from treatment start).

    ``where`` names each value's row (cell or sample id) for the message.
    """
    times = np.asarray(times, dtype=float)
    for mask, problem in (
        (~np.isfinite(times), "is not a finite number"),
        (times < 0, "is negative"),
        (times > MAX_DAYS, f"is more than {MAX_DAYS:g} days (10 years) after treatment start; "
         "were the times given in hours, seconds or as dates?"),
    ):
        with np.errstate(invalid="ignore"):
            hit = np.flatnonzero(mask)
        if len(hit):
            i = int(hit[0])
            raise DataValidationError(
                f"{field}: got {float(times[i])} for {what} {where[i]!r} ({len(hit)} such "
                f"values); expected days from treatment start in 0..{MAX_DAYS:g} (the value "
                f"{problem})"
            )


@dataclass(frozen=True)
class AnnDataFields:
    """Names of the ``obs`` columns that immunegym reads.

    Attributes
    ----------
    patient_key
        Patient (subject) id of each cell. Required.
    sample_key
        Biopsy/sample id of each cell; a sample belongs to one patient. Required.
    label_key
        Cell-type label in the lab's own convention. Required.
    time_key
        Days from treatment start of the sample (non-negative). Optional, but needed for
        trajectories.
    therapy_key
        Regimen the patient receives from this sample on (e.g. ``"anti_pd1"``,
        ``"anti_pd1+anti_ctla4"``, ``"none"``). Optional.
    response_key
        Response label (R/NR, RECIST CR/PR/SD/PD). Optional.
    label_convention
        A published code convention of the labels (see
        :data:`immunegym.ontology.CONVENTIONS`), if they are codes. Optional.
    """

    patient_key: str = "patient"
    sample_key: str = "sample"
    label_key: str = "cell_type"
    time_key: str | None = None
    therapy_key: str | None = None
    response_key: str | None = None
    label_convention: str | None = None

    def __repr__(self) -> str:
        set_fields = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if v is not None)
        return f"AnnDataFields({set_fields})"

    def to_dict(self) -> dict[str, str | None]:
        """The fields as a plain dict (stored in ``adata.uns``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> AnnDataFields:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise DataValidationError(
                f"adata.uns[{UNS_KEY!r}]['fields'] has unknown keys {sorted(unknown)}; "
                f"expected a subset of {sorted(known)}"
            )
        return cls(**{k: (None if v is None or v == "" else str(v)) for k, v in data.items()})

    @property
    def column_roles(self) -> dict[str, str]:
        """role -> obs column for the fields that are set."""
        roles = {
            "patient_key": self.patient_key,
            "sample_key": self.sample_key,
            "label_key": self.label_key,
            "time_key": self.time_key,
            "therapy_key": self.therapy_key,
            "response_key": self.response_key,
        }
        return {role: col for role, col in roles.items() if col is not None}


def setup_anndata(
    adata: ad.AnnData,
    patient_key: str = "patient",
    sample_key: str = "sample",
    label_key: str = "cell_type",
    time_key: str | None = None,
    therapy_key: str | None = None,
    response_key: str | None = None,
    label_convention: str | None = None,
) -> AnnDataFields:
    """Register which ``obs`` columns hold what, validate them, and store the registry.

    Parameters are the attributes of :class:`AnnDataFields`.

    Returns
    -------
    AnnDataFields
        The registry, also stored in ``adata.uns["immunegym"]["fields"]``.

    Raises
    ------
    DataValidationError
        Naming the column and value: a missing column, duplicate cell ids, missing patient or
        sample ids, a sample spanning several patients/times/therapies/responses, a NaN,
        non-numeric or negative time, an unknown therapy or response label, or a sample
        category with zero cells.
    """
    if not isinstance(adata, ad.AnnData):
        raise DataValidationError(
            f"adata: got {type(adata).__name__}; expected an anndata.AnnData of cells "
            "(read one with immunegym.data.read_h5ad)"
        )
    keys = {"patient_key": patient_key, "sample_key": sample_key, "label_key": label_key,
            "time_key": time_key, "therapy_key": therapy_key, "response_key": response_key}
    for role, column in keys.items():
        if column is None and role in _REQUIRED_KEYS:
            raise DataValidationError(
                f"{role}: got None; expected the name of an adata.obs column (required); "
                f"columns: {list(adata.obs.columns)}"
            )
        if column is not None and not isinstance(column, str):
            raise DataValidationError(
                f"{role}: got {column!r} ({type(column).__name__}); expected the name of an "
                f"adata.obs column as a str; columns: {list(adata.obs.columns)}"
            )
    if label_convention is not None:
        from immunegym.ontology.conventions import get_convention

        get_convention(label_convention)
    registry = AnnDataFields(
        patient_key=patient_key,
        sample_key=sample_key,
        label_key=label_key,
        time_key=time_key,
        therapy_key=therapy_key,
        response_key=response_key,
        label_convention=label_convention,
    )
    validate_anndata(adata, registry)
    adata.uns[UNS_KEY] = {"fields": {k: ("" if v is None else v)
                                     for k, v in registry.to_dict().items()}}
    return registry


def get_fields(adata: ad.AnnData) -> AnnDataFields:
    """The registry stored by :func:`setup_anndata`.

    Raises
    ------
    DataValidationError
        If the AnnData was never registered.
    """
    try:
        stored = adata.uns[UNS_KEY]["fields"]
    except (KeyError, TypeError):
        raise DataValidationError(
            f"adata.uns[{UNS_KEY!r}] has no field registry; call "
            "immunegym.data.setup_anndata(adata, patient_key=..., sample_key=..., "
            "label_key=...) first"
        ) from None
    return AnnDataFields.from_dict(dict(stored))


def _column(adata: ad.AnnData, role: str, column: str) -> pd.Series:
    if column not in adata.obs.columns:
        tip = did_you_mean(column, adata.obs.columns)
        raise DataValidationError(
            f"{role}={column!r}: adata.obs has no column {column!r}{tip}; expected one of the "
            f"columns {list(adata.obs.columns)}"
        )
    return adata.obs[column]


def _first(index: pd.Index, mask: np.ndarray) -> str:
    return str(index[np.flatnonzero(mask)[0]])


def validate_anndata(adata: ad.AnnData, registry: AnnDataFields) -> None:
    """Check an AnnData of cells against a registry; see :func:`setup_anndata` for errors."""
    if not isinstance(adata, ad.AnnData):
        raise DataValidationError(f"expected an anndata.AnnData, got {type(adata).__name__}")
    if adata.n_obs == 0:
        raise DataValidationError("adata has no cells (n_obs == 0)")
    cols = {role: _column(adata, role, col) for role, col in registry.column_roles.items()}

    duplicated = adata.obs_names.duplicated()
    if duplicated.any():
        dupes = sorted(set(adata.obs_names[duplicated]))[:5]
        raise DataValidationError(
            f"cell ids (adata.obs_names) must be unique; {int(duplicated.sum())} duplicates, "
            f"e.g. {dupes}; call adata.obs_names_make_unique() if they are distinct cells"
        )
    for role in ("patient_key", "sample_key"):
        missing = cols[role].isna().to_numpy()
        if missing.any():
            raise DataValidationError(
                f"{role}={registry.column_roles[role]!r}: {int(missing.sum())} cells have no "
                f"value, e.g. cell {_first(adata.obs_names, missing)!r}; every cell needs one"
            )
    sample = cols["sample_key"].astype(str)

    if isinstance(cols["sample_key"].dtype, pd.CategoricalDtype):
        used = set(cols["sample_key"].dropna().unique())
        empty = [c for c in cols["sample_key"].cat.categories if c not in used]
        if empty:
            raise DataValidationError(
                f"sample_key={registry.sample_key!r}: sample {empty[0]!r} has zero cells "
                f"({len(empty)} empty sample categories); drop them with "
                "adata.obs[col] = adata.obs[col].cat.remove_unused_categories()"
            )

    if registry.time_key is not None:
        raw = cols["time_key"]
        time = pd.to_numeric(raw, errors="coerce")
        bad = time.isna() & raw.notna()
        if bad.any():
            raise DataValidationError(
                f"time_key={registry.time_key!r}: value {raw[bad].iloc[0]!r} of cell "
                f"{_first(adata.obs_names, bad.to_numpy())!r} is not a number; expected days "
                "from treatment start"
            )
        nan = time.isna().to_numpy()
        if nan.any():
            raise DataValidationError(
                f"time_key={registry.time_key!r}: {int(nan.sum())} cells have a NaN time, e.g. "
                f"cell {_first(adata.obs_names, nan)!r}; expected days from treatment start"
            )
        negative = (time < 0).to_numpy()
        if negative.any():
            raise DataValidationError(
                f"time_key={registry.time_key!r}: value {float(time[negative].iloc[0])} of "
                f"cell {_first(adata.obs_names, negative)!r} is negative; expected days from "
                "treatment start (>= 0)"
            )
        values = time.to_numpy(dtype=float)
        suspicious = ~np.isfinite(values) | (values > MAX_DAYS)
        if suspicious.any():
            i = int(np.flatnonzero(suspicious)[0])
            check_days(f"time_key={registry.time_key!r}", values[i:i + 1],
                       [str(adata.obs_names[i])])

    for role in ("therapy_key", "response_key"):
        if role not in cols:
            continue
        parse = parse_regimen if role == "therapy_key" else parse_response
        for value in pd.unique(cols[role].astype(object)):
            try:
                parse(value, field=f"{role}={registry.column_roles[role]!r}")
            except ValueError as err:
                raise DataValidationError(str(err)) from None

    # Per-sample attributes must be constant within a sample.
    for role in ("patient_key", "time_key", "therapy_key", "response_key"):
        if role not in cols:
            continue
        values = cols[role].astype(object).where(cols[role].notna(), None).astype(str)
        n_values = values.groupby(sample.to_numpy(), sort=False).nunique()
        mixed = n_values[n_values > 1]
        if len(mixed):
            name = mixed.index[0]
            seen = sorted(set(values[sample.to_numpy() == name]))[:5]
            raise DataValidationError(
                f"{role}={registry.column_roles[role]!r}: sample {name!r} has several values "
                f"{seen}; a sample (biopsy) must have one"
            )


def read_h5ad(path: str | os.PathLike[str]) -> ad.AnnData:
    """Read an .h5ad file after checking that it is one.

    Raises
    ------
    MissingFileError
        If the path does not exist (a :class:`FileNotFoundError` and a
        :class:`DataValidationError`).
    DataValidationError
        If the path is a directory, not an HDF5 file, or an HDF5 file that is not an AnnData.
    """
    try:
        checked = existing_file("path", path, hdf5=True)
    except ValidationError as err:
        if isinstance(path, str | os.PathLike) and not Path(path).exists():
            raise MissingFileError(str(err)) from None
        raise DataValidationError(str(err)) from None
    try:
        return ad.read_h5ad(checked)
    except Exception as err:  # h5py/anndata raise many types for a damaged or foreign file
        raise DataValidationError(
            f"path: got {str(checked)!r}; expected an AnnData .h5ad file, but it could not be "
            f"read as one ({type(err).__name__}: {err})"
        ) from None
