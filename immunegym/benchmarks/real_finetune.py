"""Fine-tuning the world model on real longitudinal samples (MORRISON-1 pre -> on pairs).

The pretrained world model learned its dynamics in ImmuneSim. MORRISON-1 holds 68 melanoma
patients with a pre-treatment and an on-treatment bulk RNA-seq sample under a recorded
regimen: real evidence of how the tumor immune microenvironment moves under therapy. This
module turns those pairs into two-point timelines through the signature observation model
(:class:`~immunegym.benchmarks.response_real.SignatureObservationModel`) and fine-tunes the
model on them from observations alone (:meth:`~immunegym.world_model.WorldModel.fine_tune`).

Protocol (leave one cohort out)
-------------------------------
For a test cohort, :func:`fine_tune_without` fits the observation model on the *other*
cohorts' pre-treatment samples, maps the other cohorts' pre and on samples through it, and
fine-tunes a copy of the model on those pairs; the test cohort's samples enter neither the
map nor the weights. Response labels are never used: the model learns dynamics, and is
then scored on response exactly like the pretrained one.

Assumptions (the published tables do not say):

* **On-treatment day.** MORRISON-1 does not record when the on-treatment sample was taken.
  The studies biopsied early on treatment (Riaz 2017: week 3-5 of nivolumab; Gide 2019:
  early during treatment), so every on-treatment sample is placed at day
  :data:`ON_TREATMENT_DAY` = 21, one cycle.
* **Doses.** The recorded regimen's plan (:data:`~.response_real.MORRISON1_REGIMENS`)
  dosed from day 0; the first cycle is what lies between the two samples.
* **No scans.** Bulk RNA carries no lesion size, so the pairs have no burden observation;
  fine-tuning moves the composition dynamics, and the tumor-size head only through them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from immunegym.benchmarks.common import plan_doses
from immunegym.benchmarks.response_real import (
    CANCER_TYPE,
    MORRISON1_REGIMENS,
    ReferenceBank,
    SignatureObservationModel,
    fit_without,
)
from immunegym.validation import ValidationError

ON_TREATMENT_DAY = 21.0
"""Day assumed for every MORRISON-1 on-treatment sample (not published; one cycle)."""

PAIR_COLUMNS = ("subject_id", "cohort", "regimen", "pre_sample", "on_sample")


def morrison1_pairs(samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """Subjects with a pre-treatment and an on-treatment sample: one row per subject.

    Parameters
    ----------
    samples
        :func:`~immunegym.data.real.morrison1_samples` (the default) or a table with its
        ``sample_id``, ``subject_id``, ``cohort``, ``timepoint`` and ``regimen`` columns.

    Returns
    -------
    pandas.DataFrame
        :data:`PAIR_COLUMNS`; the first pre and the first on sample of each subject in
        table order, sorted by subject.

    Raises
    ------
    ValidationError
        If a column is missing, or a pair's regimen has no plan.
    """
    if samples is None:
        from immunegym.data.real import morrison1_samples

        samples = morrison1_samples()
    if not isinstance(samples, pd.DataFrame):
        raise ValidationError(f"samples: expected a pandas DataFrame, got "
                              f"{type(samples).__name__}")
    for column in ("sample_id", "subject_id", "cohort", "timepoint", "regimen"):
        if column not in samples.columns:
            raise ValidationError(f"samples: no {column!r} column; expected the columns of "
                                  "morrison1_samples()")
    first = {tp: samples[samples["timepoint"] == tp].drop_duplicates("subject_id")
             .set_index("subject_id") for tp in ("pre", "on")}
    subjects = sorted(set(first["pre"].index) & set(first["on"].index), key=str)
    pre, on = first["pre"].loc[subjects], first["on"].loc[subjects]
    pairs = pd.DataFrame({"subject_id": subjects, "cohort": pre["cohort"].astype(str).values,
                          "regimen": pre["regimen"].values,
                          "pre_sample": pre["sample_id"].values,
                          "on_sample": on["sample_id"].values})
    missing = pairs["regimen"].isna() | ~pairs["regimen"].isin(list(MORRISON1_REGIMENS))
    if missing.any():
        row = pairs[missing].iloc[0]
        raise ValidationError(f"regimen: subject {row['subject_id']!r} has regimen "
                              f"{row['regimen']!r}; expected one of {sorted(MORRISON1_REGIMENS)}")
    return pairs


def pair_timelines(model, obs: SignatureObservationModel, samples: pd.DataFrame,
                   pairs: pd.DataFrame, *, on_day: float = ON_TREATMENT_DAY):
    """Two-point timelines (pre at day 0, on at ``on_day``) of ``pairs`` through ``obs``.

    Parameters
    ----------
    model
        The world model (its programs shape the timelines).
    obs
        A fitted observation model.
    samples
        The sample table holding every ``pre_sample`` and ``on_sample`` of ``pairs``.
    pairs
        :func:`morrison1_pairs` rows.
    """
    from immunegym.world_model.timelines import composition_timelines

    if not on_day > 0:
        raise ValidationError(f"on_day: got {on_day!r}; expected a day > 0")
    by_id = samples.set_index("sample_id")
    for column in ("pre_sample", "on_sample"):
        unknown = sorted(set(pairs[column]) - set(by_id.index))
        if unknown:
            raise ValidationError(f"pairs[{column!r}]: sample {unknown[0]!r} is not in samples")
    pre = obs.transform(by_id.loc[pairs["pre_sample"]])
    on = obs.transform(by_id.loc[pairs["on_sample"]])
    n_cycles = int(np.ceil(on_day / 21.0)) + 1
    plans = [MORRISON1_REGIMENS[r] for r in pairs["regimen"]]
    doses = np.concatenate([plan_doses(p, 1, n_cycles) for p in plans])
    return composition_timelines(
        np.stack([pre, on], axis=1), np.tile([0.0, float(on_day)], (len(pairs), 1)),
        [str(s) for s in pairs["subject_id"]], cycle_doses=doses, cancer_type=CANCER_TYPE,
        programs=(), cohort="morrison1", regimen=plans)


def fine_tune_without(model, reference: ReferenceBank, cohort: str, *,
                      samples: pd.DataFrame | None = None, seed: int = 0,
                      obs: SignatureObservationModel | None = None
                      ) -> tuple[Any, dict[str, Any]]:
    """The model fine-tuned on the MORRISON-1 pairs of every cohort except ``cohort``.

    Parameters
    ----------
    model
        The pretrained world model (left unchanged).
    reference
        The reference bank of the observation model.
    cohort
        The held-out cohort.
    samples
        :func:`~immunegym.data.real.morrison1_samples` (the default).
    seed
        Seed of the fine-tuning batches and validation split.
    obs
        This fold's observation model; fitted on the other cohorts' pre-treatment samples
        when ``None`` (:func:`~immunegym.benchmarks.response_real.fit_without`).

    Returns
    -------
    tuple
        The fine-tuned copy and a record: pairs per training cohort, epochs per member and
        the validation loss before and after.
    """
    if samples is None:
        from immunegym.data.real import morrison1_samples

        samples = morrison1_samples()
    if obs is None:
        pre = samples[samples["timepoint"] == "pre"]
        obs = fit_without(pre, cohort, reference)
    pairs = morrison1_pairs(samples)
    train = pairs[pairs["cohort"] != str(cohort)].reset_index(drop=True)
    if len(train) < 8:
        raise ValidationError(f"cohort: only {len(train)} pairs outside {cohort!r}; expected "
                              "at least 8 to fine-tune")
    tl = pair_timelines(model, obs, samples, train)
    tuned = model.fine_tune(tl, seed=seed)
    return tuned, {
        "pairs": int(len(train)),
        "pairs_by_cohort": {str(k): int(v) for k, v in train["cohort"].value_counts().items()},
        "epochs": [len(h) for h in tuned.history],
        "val_loss_first_epoch": [float(h[0].val_loss) for h in tuned.history],
        "val_loss_best": [float(min(r.val_loss for r in h)) for h in tuned.history],
    }



def fine_tune_all(model, reference: ReferenceBank, *, samples: pd.DataFrame | None = None,
                  seed: int = 0):
    """The model fine-tuned on every MORRISON-1 pair, for data outside MORRISON-1.

    The observation model is fitted on every MORRISON-1 pre-treatment sample.
    """
    if samples is None:
        from immunegym.data.real import morrison1_samples

        samples = morrison1_samples()
    obs = SignatureObservationModel(reference).fit(samples[samples["timepoint"] == "pre"])
    return model.fine_tune(pair_timelines(model, obs, samples, morrison1_pairs(samples)),
                           seed=seed)


__all__ = [
    "ON_TREATMENT_DAY",
    "PAIR_COLUMNS",
    "fine_tune_all",
    "fine_tune_without",
    "morrison1_pairs",
    "pair_timelines",
]
