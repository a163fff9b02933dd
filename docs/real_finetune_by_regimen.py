"""Side measurement for BENCHMARKS.md (issue 18): the MORRISON-1 response scores of the pretrained
and the per-fold fine-tuned world model grouped by regimen (mean score, within-regimen AUROC),
beside the observed response rate. Leave one cohort out, as ``bench response``.

Run: ``.venv/bin/python docs/real_finetune_by_regimen.py`` (about 40 s on 2 cores).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from immunegym.benchmarks.real_finetune import fine_tune_without
from immunegym.benchmarks.response_real import (
    MORRISON1_REGIMENS,
    ReferenceBank,
    fit_without,
    morrison1_pretreatment,
    world_model_outcomes,
)
from immunegym.data.real import morrison1_samples
from immunegym.world_model import load


def main() -> None:
    samples = morrison1_samples()
    model = load()
    reference = ReferenceBank.from_sim(1000)
    data = morrison1_pretreatment(samples)
    cohorts = data["cohort"].astype(str).to_numpy()
    scores = {"pretrained": np.zeros(len(data)), "fine_tuned": np.zeros(len(data))}
    for cohort in sorted(set(cohorts)):
        test = cohorts == cohort
        obs = fit_without(data, cohort, reference)
        comp = obs.transform(data[test])
        plans = [MORRISON1_REGIMENS[r] for r in data["regimen"][test]]
        tuned, _ = fine_tune_without(model, reference, cohort, samples=samples, obs=obs)
        for name, m in (("pretrained", model), ("fine_tuned", tuned)):
            scores[name][test] = -world_model_outcomes(m, comp, reference.median_sod_mm,
                                                       plans)["best_change"]
    frame = pd.DataFrame({"regimen": data["regimen"], "responder": data["responder"],
                          **scores})
    print(frame.groupby("regimen").agg(n=("responder", "size"), orr=("responder", "mean"),
                                       pretrained=("pretrained", "mean"),
                                       fine_tuned=("fine_tuned", "mean")).round(3))
    for regimen, part in frame.groupby("regimen"):
        if part["responder"].nunique() == 2:
            auc = {k: roc_auc_score(part["responder"], part[k]) for k in scores}
            print(f"{regimen}: within-regimen AUROC pretrained {auc['pretrained']:.3f}, "
                  f"fine-tuned {auc['fine_tuned']:.3f}")


if __name__ == "__main__":
    main()
