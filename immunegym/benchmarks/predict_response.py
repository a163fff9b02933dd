"""Predict response to a regimen for new patients: ``immunegym predict-response FILE``.

The benchmarked real-data protocol of ``immunegym bench response``
(:mod:`immunegym.benchmarks.response_real`) applied to a user's own pre-treatment samples,
so that the figures of that benchmark describe exactly what this command computes. It lives
with the benchmark rather than in :mod:`immunegym.planning` (which searches regimens for a
registered cohort) because it reuses the benchmark's observation model, reference bank,
rollout and MORRISON-1 calibration unchanged.

Inputs
------
* **A table** (``.csv``, or ``.tsv``/``.tab``/``.txt`` tab-separated) of bulk RNA signature
  scores: one row per sample with an id column (``id``, ``sample_id`` or ``sample``, or the one
  named), a ``regimen`` column and the MORRISON-1 signature columns the observation model
  reads (:data:`SIGNATURE_COLUMNS`, computed as in Campbell et al. 2023). The scores are mapped
  to compositions by a :class:`~immunegym.benchmarks.response_real.SignatureObservationModel`
  fitted on *all* MORRISON-1 pre-treatment samples (357), so the user's scores must be on the
  same scale as MORRISON-1's.
* **An AnnData** (``.h5ad``) of pre-treatment cells: ``obs`` columns with the sample, the
  cell-type label (any lab's convention, harmonized by
  :func:`~immunegym.ontology.harmonize_labels`) and the regimen of each sample. If the file was
  registered with :func:`~immunegym.data.setup_anndata`, its sample, label and therapy columns
  and label convention are the defaults. Labels that map to immune cell types are counted per
  sample and turned into a whole-tumor composition by
  :func:`~immunegym.benchmarks.response_real.immune_counts_to_composition` (the Sade-Feldman
  protocol: the non-immune share is the reference mean); non-immune and junk labels (e.g.
  doublets) are left out.

Regimens are MORRISON-1 names (``PD1``, ``CTLA4``, ``Combo``, ``CTLA4-to-PD1``,
``PD1-to-CTLA4``, :data:`~immunegym.benchmarks.response_real.MORRISON1_REGIMENS`) or regimen
text in the package grammar (:func:`~immunegym.planning.regimen.parse_plan`, e.g.
``"anti_pd1+anti_ctla4 x4 -> anti_pd1"``). A sample without one is an error: the prediction is
always for a named regimen.

Outputs
-------
One CSV row per sample: ``id``, ``regimen`` (as given), ``score`` (minus the predicted best
change of the tumor's sum of diameters over 6 cycles, the world model's mean path: the
benchmark's ``world_model`` score; 0.3 = a 30% predicted shrinkage), ``score_lo`` and
``score_hi`` (the central 90% interval of the same quantity over
:data:`~immunegym.world_model.model.INTERVAL_SAMPLES` sampled rollouts, latent noise and
ensemble members both, ``noise="both"``; the world model's conformal scales are fitted for
its per-step intervals, not for this nadir, so the interval is indicative) and
``probability`` (a logistic calibration of the score on the 357 MORRISON-1 responders; for
AnnData input a transfer from bulk RNA to cells, since the calibration never saw
single-cell-derived compositions). The score ranks patients: its AUROC on MORRISON-1 is
the benchmark's; the probability is only as calibrated as the MORRISON-1 cohorts are
representative of the user's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from immunegym import validation as v
from immunegym.benchmarks.response_real import (
    EFFECTOR_SIGNATURE,
    MORRISON1_REGIMENS,
    N_CYCLES,
    NODE_SIGNATURES,
    REFERENCE_PATIENTS,
    REFERENCE_SEED,
    ReferenceBank,
    SignatureObservationModel,
    immune_counts_to_composition,
    morrison1_pretreatment,
    rollout_inputs,
    world_model_outcomes,
)
from immunegym.validation import ValidationError

SIGNATURE_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(
    [c for cols in NODE_SIGNATURES.values() for c in cols] + [EFFECTOR_SIGNATURE]))
"""The MORRISON-1 signature columns a table must have (what the observation model reads)."""

ID_COLUMNS = ("id", "sample_id", "sample")
"""Id columns looked for, in order, when none is named."""

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}
"""Table file suffixes and their separators."""

INTERVAL_LEVEL = 0.9
"""Central coverage of ``score_lo`` .. ``score_hi``."""

OUTPUT_COLUMNS = ("id", "regimen", "score", "score_lo", "score_hi", "probability")
"""Columns of the output CSV, in order."""

_BATCH = 128
"""Patients per sampled rollout (bounds memory: ``batch * samples`` paths at once)."""


# --------------------------------------------------------------------------- predictor
@dataclass(frozen=True)
class ResponsePredictor:
    """The fitted pieces: world model, reference bank, observation model and calibration.

    Attributes
    ----------
    model
        The world model (:class:`~immunegym.world_model.WorldModel`).
    reference
        The ImmuneSim melanoma day-0 states real samples are matched onto.
    observation
        The signature observation model fitted on every MORRISON-1 pre-treatment sample.
    calibration
        ``(intercept, slope)`` of the logistic map from score to response probability,
        fitted on the MORRISON-1 samples' scores and responses.
    """

    model: Any
    reference: ReferenceBank
    observation: SignatureObservationModel
    calibration: tuple[float, float]

    def probability(self, score: np.ndarray) -> np.ndarray:
        """Response probability of world-model scores (the MORRISON-1 calibration)."""
        a, b = self.calibration
        return 1.0 / (1.0 + np.exp(-(a + b * np.asarray(score, dtype=np.float64))))


def fit_predictor(model=None, *, n_reference: int = REFERENCE_PATIENTS[False],
                  seed: int = REFERENCE_SEED) -> ResponsePredictor:
    """Fit the observation model and the calibration on all MORRISON-1 pre-treatment samples.

    Parameters
    ----------
    model
        The world model; the pretrained default when ``None``.
    n_reference
        ImmuneSim reference patients (the benchmark's full-run size by default).
    seed
        Seed of the reference bank.

    Returns
    -------
    ResponsePredictor
        Ready to score tables and cells.
    """
    from sklearn.linear_model import LogisticRegression

    if model is None:
        from immunegym.world_model import load

        model = load()
    n_reference = v.integer("n_reference", n_reference, low=2, high=100_000)
    reference = ReferenceBank.from_sim(n_reference, seed=int(v.seed("seed", seed)))
    data = morrison1_pretreatment()
    observation = SignatureObservationModel(reference).fit(data)
    plans = [MORRISON1_REGIMENS[r] for r in data["regimen"]]
    score = -world_model_outcomes(model, observation.transform(data), reference.median_sod_mm,
                                  plans)["best_change"]
    labels = data["responder"].to_numpy(dtype=int)
    clf = LogisticRegression(C=1.0).fit(score[:, None], labels)
    return ResponsePredictor(model, reference, observation,
                             (float(clf.intercept_[0]), float(clf.coef_[0, 0])))


# --------------------------------------------------------------------------- regimens
def resolve_regimen(value: Any, where: str) -> str:
    """A regimen cell -> plan text; ``where`` names the row in the error.

    Raises
    ------
    ValidationError
        A missing/blank regimen, or text that is neither a MORRISON-1 name nor a regimen in
        the package grammar.
    """
    from immunegym.planning.regimen import parse_plan

    expected = (f"a regimen: a MORRISON-1 name ({', '.join(MORRISON1_REGIMENS)}) or regimen "
                "text such as 'anti_pd1+anti_ctla4 x4 -> anti_pd1'")
    if value is None or (isinstance(value, float) and math.isnan(value)) or \
            not str(value).strip():
        raise v.bad(where, value, f"{expected} (every sample needs one)")
    text = str(value).strip()
    if text in MORRISON1_REGIMENS:
        return MORRISON1_REGIMENS[text]
    try:
        parse_plan(text)
    except ValueError as err:
        raise v.bad(where, value, f"{expected} ({err})") from None
    return text


# --------------------------------------------------------------------------- scoring
def score_compositions(predictor: ResponsePredictor, composition: np.ndarray,
                       plans: Sequence[str], *, n_samples: int | None = None,
                       level: float = INTERVAL_LEVEL, seed: int = 0) -> pd.DataFrame:
    """Score, interval and probability of mapped day-0 states under plans.

    Parameters
    ----------
    predictor
        From :func:`fit_predictor`.
    composition
        ``(P, 20)`` day-0 fractions.
    plans
        ``P`` plan texts.
    n_samples
        Sampled rollouts per patient for the interval
        (:data:`~immunegym.world_model.model.INTERVAL_SAMPLES` by default).
    level
        Central coverage of the interval.
    seed
        Seed of the sampled rollouts.

    Returns
    -------
    pandas.DataFrame
        ``score``, ``score_lo``, ``score_hi``, ``probability`` per patient.
    """
    from immunegym.world_model.model import INTERVAL_SAMPLES

    n_samples = v.integer("n_samples", INTERVAL_SAMPLES if n_samples is None else n_samples,
                          low=2, high=10_000)
    level = v.number("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    seed = int(v.seed("seed", seed))
    model, sod = predictor.model, predictor.reference.median_sod_mm
    composition = np.asarray(composition, dtype=np.float64)
    plans = list(plans)
    score = -world_model_outcomes(model, composition, sod, plans)["best_change"]
    lo = np.empty(len(plans))
    hi = np.empty(len(plans))
    for start in range(0, len(plans), _BATCH):
        rows = slice(start, start + _BATCH)
        tl, doses = rollout_inputs(model, composition[rows], sod, plans[rows],
                                   n_cycles=N_CYCLES)
        rollout = model.rollout(tl, doses, n_samples=n_samples, noise="both",
                                seed=seed + start)
        log_sod = rollout.burden.cpu().numpy().astype(np.float64)  # (S, P, H)
        base = tl.burden.numpy()[:, 0].astype(np.float64)  # the day-0 scan, log1p mm
        change = np.expm1(log_sod).min(2) / np.maximum(np.expm1(base), 1e-6)[None] - 1.0
        lo[rows] = -np.quantile(change, (1 + level) / 2, axis=0)
        hi[rows] = -np.quantile(change, (1 - level) / 2, axis=0)
    return pd.DataFrame({"score": score, "score_lo": lo, "score_hi": hi,
                         "probability": predictor.probability(score)})


# --------------------------------------------------------------------------- inputs
def _id_column(frame: pd.DataFrame, id_column: str | None, field: str) -> str:
    if id_column is not None:
        if id_column not in frame.columns:
            raise v.bad("--id-column", id_column,
                        f"a column of {field} (columns: {list(frame.columns)[:12]})")
        return id_column
    for name in ID_COLUMNS:
        if name in frame.columns:
            return name
    raise v.bad(field, f"<table with columns {list(frame.columns)[:8]}>",
                f"an id column ({', '.join(ID_COLUMNS)}) or one named with --id-column")


@dataclass(frozen=True)
class Samples:
    """A checked input, ready to be scored (:func:`check_table`, :func:`check_cells`).

    Attributes
    ----------
    ids
        Sample ids, in output order.
    regimens
        The regimens as given.
    plans
        The regimens as plan text (:func:`resolve_regimen`).
    signatures
        Table input: the :data:`SIGNATURE_COLUMNS` scores, one row per sample.
    counts
        AnnData input: immune cells per sample (rows) and ontology node (columns).
    """

    ids: list[str]
    regimens: list[str]
    plans: list[str]
    signatures: pd.DataFrame | None = None
    counts: pd.DataFrame | None = None


def check_table(table: pd.DataFrame, *, id_column: str | None = None,
                regimen_column: str = "regimen", field: str = "table") -> Samples:
    """Check a table of MORRISON-1 signature scores (see the module docstring).

    Parameters
    ----------
    table
        One row per sample.
    id_column
        The id column; the first of :data:`ID_COLUMNS` present when ``None``.
    regimen_column
        The regimen column.
    field
        How errors name the input (the file path on the command line).

    Raises
    ------
    ValidationError
        No rows; a missing id, regimen or signature column (naming the first missing one and
        the expected set); duplicate or blank ids; a missing or unknown regimen or a
        non-numeric or missing score (naming the row's id).
    """
    if not isinstance(table, pd.DataFrame):
        raise v.bad(field, type(table).__name__, "a pandas DataFrame")
    if table.empty:
        raise v.bad(field, "<empty table>", "at least one sample row")
    ids_col = _id_column(table, id_column, field)
    ids = table[ids_col]
    blank = (ids.isna() | (ids.astype(str).str.strip() == "")).to_numpy()
    if blank.any():
        raise v.bad(f"{field}[{ids_col!r}]", ids[blank].iloc[0],
                    f"an id in every row (row {int(np.flatnonzero(blank)[0])} has none)")
    ids = ids.astype(str).str.strip()
    dupes = ids[ids.duplicated()]
    if len(dupes):
        raise v.bad(f"{field}[{ids_col!r}]", dupes.iloc[0], "unique sample ids")
    if regimen_column not in table.columns:
        raise v.bad(field, f"<no {regimen_column!r} column>",
                    f"a {regimen_column!r} column with each sample's regimen")
    missing = [c for c in SIGNATURE_COLUMNS if c not in table.columns]
    if missing:
        raise v.bad(field, f"<no column {missing[0]!r}>",
                    f"the MORRISON-1 signature columns {list(SIGNATURE_COLUMNS)} "
                    f"({len(missing)} missing, first {missing[0]!r})")
    plans = [resolve_regimen(r, f"{field}[{regimen_column!r}] of {i!r}")
             for i, r in zip(ids, table[regimen_column], strict=True)]
    values = table[list(SIGNATURE_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise v.bad(f"{field}[{SIGNATURE_COLUMNS[col]!r}] of {ids.iloc[row]!r}",
                    table[SIGNATURE_COLUMNS[col]].iloc[row], "a finite signature score")
    return Samples(ids.tolist(), table[regimen_column].astype(str).str.strip().tolist(),
                   plans, signatures=values.reset_index(drop=True))


def check_cells(adata, *, sample_key: str | None = None, label_key: str | None = None,
                regimen_key: str | None = None, label_convention: str | None = None,
                field: str = "adata") -> Samples:
    """Check an AnnData of pre-treatment cells and count its immune cells per sample.

    Parameters
    ----------
    adata
        Cells; ``obs`` holds the sample, label and regimen columns.
    sample_key, label_key, regimen_key, label_convention
        ``obs`` columns and the labels' code convention; ``None`` takes the registry of
        :func:`~immunegym.data.setup_anndata` when the AnnData has one (its therapy column is
        the regimen), else ``"sample"``, ``"cell_type"``, ``"regimen"`` and no convention.
    field
        How errors name the input.

    Raises
    ------
    ValidationError
        A missing column; a cell without a sample; a sample with an unlabeled cell (NaN or
        empty label), without immune cells, with several regimens or without a regimen
        (each naming the sample).
    """
    import anndata as ad

    from immunegym.ontology import default_ontology, harmonize_labels

    if not isinstance(adata, ad.AnnData):
        raise v.bad(field, type(adata).__name__, "an anndata.AnnData of cells")
    if adata.n_obs == 0:
        raise v.bad(field, "<no cells>", "an AnnData with pre-treatment cells")
    registered: dict[str, Any] = {}
    try:
        from immunegym.data import get_fields

        registered = get_fields(adata).to_dict()
    except ValidationError:
        pass
    sample_key = sample_key or registered.get("sample_key") or "sample"
    label_key = label_key or registered.get("label_key") or "cell_type"
    regimen_key = regimen_key or registered.get("therapy_key") or "regimen"
    label_convention = label_convention or registered.get("label_convention")
    obs = adata.obs
    for option, column in (("--sample-key", sample_key), ("--label-key", label_key),
                           ("--regimen-column", regimen_key)):
        if column not in obs.columns:
            raise v.bad(option, column, f"a column of {field}.obs "
                                        f"(columns: {list(obs.columns)[:12]})")
    missing_sample = obs[sample_key].isna().to_numpy()
    if missing_sample.any():
        cell = str(obs.index[np.flatnonzero(missing_sample)[0]])
        raise v.bad(f"{field}.obs[{sample_key!r}]", None,
                    f"a sample for every cell (cell {cell!r} has none)")
    sample = obs[sample_key].astype(str).to_numpy()
    labels = obs[label_key]
    unlabeled = (labels.isna() | (labels.astype(str).str.strip() == "")).to_numpy()
    if unlabeled.any():
        name = sample[np.flatnonzero(unlabeled)[0]]
        raise v.bad(f"{field}.obs[{label_key!r}] of sample {name!r}",
                    f"<{int(unlabeled[sample == name].sum())} unlabeled cells>",
                    "a cell-type label on every cell")
    names = list(dict.fromkeys(sample))
    plans, given = [], []
    regimen = obs[regimen_key].astype(object)
    for name in names:
        values = regimen[sample == name]
        where = f"{field}.obs[{regimen_key!r}] of sample {name!r}"
        distinct = pd.unique(values.where(values.notna(), None).astype(str))
        if len(distinct) > 1:
            raise v.bad(where, sorted(distinct)[:3], "one regimen per sample")
        plans.append(resolve_regimen(values.iloc[0], where))
        given.append(str(values.iloc[0]).strip())
    onto = default_ontology()
    nodes = np.asarray(harmonize_labels(labels.astype(str).to_numpy(),
                                        convention=label_convention), dtype=object)
    immune = np.array([n is not None and (n == "immune" or onto.is_ancestor("immune", n))
                       for n in nodes])
    used = sorted(set(nodes[immune]))
    counts = pd.crosstab(pd.Categorical(sample[immune], categories=names),
                         pd.Categorical(nodes[immune].astype(str), categories=used),
                         dropna=False).reindex(index=names, columns=used, fill_value=0)
    empty = (counts.sum(1) == 0).to_numpy()
    if empty.any():
        raise v.bad(f"{field}.obs[{label_key!r}] of sample {names[int(np.argmax(empty))]!r}",
                    "<no immune cells>", "immune cells whose labels map to the ontology")
    return Samples(names, given, plans, counts=counts)


def score_samples(samples: Samples, predictor: ResponsePredictor, *,
                  n_samples: int | None = None, seed: int = 0) -> pd.DataFrame:
    """:data:`OUTPUT_COLUMNS` for checked samples (see the module docstring).

    Parameters
    ----------
    samples
        From :func:`check_table` or :func:`check_cells`.
    predictor
        From :func:`fit_predictor`.
    n_samples, seed
        Of the interval (:func:`score_compositions`).
    """
    if samples.signatures is not None:
        composition = predictor.observation.transform(samples.signatures)
    elif samples.counts is not None:
        composition = immune_counts_to_composition(samples.counts.to_numpy(dtype=np.float64),
                                                   list(samples.counts.columns),
                                                   predictor.reference)
    else:
        raise v.bad("samples", "<no signatures or counts>", "the output of check_table() or "
                                                            "check_cells()")
    scored = score_compositions(predictor, composition, samples.plans, n_samples=n_samples,
                                seed=seed)
    return pd.DataFrame({"id": samples.ids, "regimen": samples.regimens,
                         **{k: scored[k].to_numpy() for k in OUTPUT_COLUMNS[2:]}})


def predict_table(table: pd.DataFrame, predictor: ResponsePredictor, *,
                  id_column: str | None = None, regimen_column: str = "regimen",
                  field: str = "table", n_samples: int | None = None,
                  seed: int = 0) -> pd.DataFrame:
    """:func:`check_table` then :func:`score_samples`: one output row per table row."""
    checked = check_table(table, id_column=id_column, regimen_column=regimen_column,
                          field=field)
    return score_samples(checked, predictor, n_samples=n_samples, seed=seed)


def predict_cells(adata, predictor: ResponsePredictor, *, sample_key: str | None = None,
                  label_key: str | None = None, regimen_key: str | None = None,
                  label_convention: str | None = None, field: str = "adata",
                  n_samples: int | None = None, seed: int = 0) -> pd.DataFrame:
    """:func:`check_cells` then :func:`score_samples`: one output row per sample."""
    checked = check_cells(adata, sample_key=sample_key, label_key=label_key,
                          regimen_key=regimen_key, label_convention=label_convention,
                          field=field)
    return score_samples(checked, predictor, n_samples=n_samples, seed=seed)


def read_input(path: str | Path) -> pd.DataFrame | Any:
    """The table (``.csv``/``.tsv``/``.tab``/``.txt``) or AnnData (``.h5ad``) at ``path``."""
    suffixes = (*TABLE_SUFFIXES, ".h5ad")
    p = v.existing_file("FILE", path, suffixes=suffixes)
    if p.suffix == ".h5ad":
        from immunegym.data import read_h5ad

        return read_h5ad(p)
    try:
        return pd.read_csv(p, sep=TABLE_SUFFIXES[p.suffix])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise v.bad("FILE", str(p), f"a readable {p.suffix} table ({err})") from None


def predict_response(path: str | Path, out: str | Path, *, model=None,
                     checkpoint: str | Path | None = None,
                     predictor: ResponsePredictor | None = None, id_column: str | None = None,
                     regimen_column: str | None = None, sample_key: str | None = None,
                     label_key: str | None = None, label_convention: str | None = None,
                     n_samples: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Read ``path``, predict every sample and write the CSV ``out`` atomically.

    Parameters
    ----------
    path
        A signature table or an AnnData of cells (see the module docstring).
    out
        The output CSV (:data:`OUTPUT_COLUMNS`).
    model, checkpoint
        The world model, or the checkpoint directory to load once the input is checked
        (the pretrained default when both are ``None``); ignored with ``predictor``.
    predictor
        A fitted :class:`ResponsePredictor` (fitted here when ``None``).
    id_column, regimen_column
        Table columns (:func:`predict_table`); ``regimen_column`` is the regimen ``obs``
        column for cells.
    sample_key, label_key, label_convention
        Cell inputs only (:func:`predict_cells`).
    n_samples, seed
        Of the interval.

    Returns
    -------
    pandas.DataFrame
        What was written.
    """
    from immunegym._atomic import atomic_path

    out = v.output_path("--out", out)
    data = read_input(path)
    field = str(path)
    if isinstance(data, pd.DataFrame):
        for option, given in (("--sample-key", sample_key), ("--label-key", label_key),
                              ("--label-convention", label_convention)):
            if given is not None:
                raise v.bad(option, given, "no value for a table input (cells only)")
        checked = check_table(data, id_column=id_column,
                              regimen_column=regimen_column or "regimen", field=field)
    else:
        if id_column is not None:
            raise v.bad("--id-column", id_column, "no value for an AnnData input (the id is "
                                                  "the sample; see --sample-key)")
        checked = check_cells(data, sample_key=sample_key, label_key=label_key,
                              regimen_key=regimen_column, label_convention=label_convention,
                              field=field)
    if predictor is None:
        if model is None:
            from immunegym.world_model import load

            model = load(checkpoint)
        predictor = fit_predictor(model)
    result = score_samples(checked, predictor, n_samples=n_samples, seed=seed)
    with atomic_path(out) as tmp:
        result.to_csv(tmp, index=False)
    return result


__all__ = [
    "ID_COLUMNS",
    "OUTPUT_COLUMNS",
    "SIGNATURE_COLUMNS",
    "ResponsePredictor",
    "Samples",
    "check_cells",
    "check_table",
    "fit_predictor",
    "predict_cells",
    "predict_response",
    "predict_table",
    "read_input",
    "resolve_regimen",
    "score_compositions",
    "score_samples",
]
