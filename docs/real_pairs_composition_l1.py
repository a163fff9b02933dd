"""Side measurement for BENCHMARKS.md (issue 18): MORRISON-1 pre -> on pairs scored as
whole-tumor composition L1, the space the fine-tuning likelihood lives in, instead of the
benchmark's node composite z-scores. Leave one cohort out; paired bootstrap over patients
(seed 0, 1000 draws) of each method minus persistence.

Run: ``.venv/bin/python docs/real_pairs_composition_l1.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import numpy as np

from immunegym.benchmarks.real_finetune import fine_tune_without, morrison1_pairs
from immunegym.benchmarks.response_real import (
    MORRISON1_REGIMENS,
    ReferenceBank,
    fit_without,
    world_model_outcomes,
)
from immunegym.data.real import morrison1_samples
from immunegym.world_model import load


def main() -> None:
    samples = morrison1_samples()
    pairs = morrison1_pairs(samples)
    model = load()
    reference = ReferenceBank.from_sim(1000)
    pre = samples[samples["timepoint"] == "pre"]
    by_id = samples.set_index("sample_id")
    errors: dict[str, list[float]] = {k: [] for k in (
        "persistence", "mean_change", "world_model", "world_model_finetuned")}
    for cohort in sorted(set(pairs["cohort"])):
        test = (pairs["cohort"] == cohort).to_numpy()
        obs = fit_without(pre, cohort, reference)
        before = obs.transform(by_id.loc[pairs["pre_sample"]])
        after = obs.transform(by_id.loc[pairs["on_sample"]])
        mean_change = (after[~test] - before[~test]).mean(0)
        tuned, _ = fine_tune_without(model, reference, cohort, samples=samples, obs=obs)
        plans = [MORRISON1_REGIMENS[r] for r in pairs["regimen"][test]]
        truth = after[test]
        errors["persistence"] += list(np.abs(before[test] - truth).sum(1))
        shifted = np.clip(before[test] + mean_change, 0, None)
        errors["mean_change"] += list(np.abs(shifted - truth).sum(1))
        for name, m in (("world_model", model), ("world_model_finetuned", tuned)):
            out = world_model_outcomes(m, before[test], reference.median_sod_mm, plans,
                                       n_cycles=1)
            errors[name] += list(np.abs(out["composition"][:, 0] - truth).sum(1))
    rng = np.random.default_rng(0)
    table = {k: np.asarray(v) for k, v in errors.items()}
    n = len(table["persistence"])
    draws = rng.integers(0, n, (1000, n))
    for name, err in table.items():
        diff = err - table["persistence"]
        lo, hi = np.percentile(diff[draws].mean(1), [2.5, 97.5])
        print(f"{name}: L1 {err.mean():.4f}; minus persistence {diff.mean():+.4f} "
              f"[{lo:+.4f}, {hi:+.4f}]")


if __name__ == "__main__":
    main()
