"""How well can anyone pick a patient's best regimen from a baseline sample? (BENCHMARKS.md)

`bench counterfactual` asks the world model, which sees one baseline biopsy and scan, to pick
the best of six regimens for each patient. This script measures what that question allows,
with ImmuneSim alone and no world model: 300 new patients of each of the 14 suite designs
(seeds never used elsewhere) are branched from their hidden day-0 state into the six
regimens, 16 replicates each, exactly as the benchmark does. Then, by 5-fold cross-validation
over patients, a gradient-boosted classifier (scikit-learn) is trained on the best regimen of
replicates 1-8 and scored against replicates 9-16 (independent truth) and all 16, from

* nothing: always the regimen most often best in the training folds (the majority pick);
* the **true day-0 state**: composition of the 20 fine types, total cells, cancer type (more
  than any biopsy shows: no sampling, labeling or site noise);
* the true day-0 state **and every hidden patient parameter** (growth, kill reserve, Treg
  escape route, drug sensitivities, ...);
* the replicates themselves: the best of replicates 1-8 (what a perfect model of the
  expected outcome scores, up to the noise of its own 8 replicates).

Run: .venv/bin/python docs/counterfactual_ceiling.py
(its ImmuneSim branches take about 2 min on 2 CPU cores)
"""

from dataclasses import fields, replace

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import KFold

from immunegym.benchmarks.common import day0_states, fresh_specs
from immunegym.benchmarks.counterfactual import (
    REGIMENS,
    Branches,
    TruthTask,
    ranking_metrics,
    simulate_branches,
    true_outcomes,
)

PATIENTS, REPLICATES, SEED_OFFSET = 300, 16, 7000
torch.set_num_threads(2)  # the figures do not depend on it


def half(b: Branches, part: slice) -> Branches:
    return Branches(b.final_log_sod[..., part], b.died[..., part], b.responded[..., part])


specs = [replace(s, name=f"{s.name}_ceiling", seed=s.seed + SEED_OFFSET, n_patients=PATIENTS)
         for s in fresh_specs()]
cancer_types = sorted({s.cancer_type for s in specs})
branches, state_features, all_features = [], [], []
for spec in specs:
    branches.append(simulate_branches(TruthTask(spec, np.arange(PATIENTS), REGIMENS, 6,
                                                REPLICATES, 0)))
    _, patients, state = day0_states(spec)
    cells = state.cells.double()
    fine = torch.cat([cells[:, :3].sum(-1, keepdim=True), cells[:, 3:]], -1)  # tumor clones
    cancer = np.zeros((PATIENTS, len(cancer_types)))
    cancer[:, cancer_types.index(spec.cancer_type)] = 1.0
    x = np.concatenate([np.log(fine / fine.sum(-1, keepdim=True) + 1e-4).numpy(),
                        np.log(fine.sum(-1, keepdim=True)).numpy(), cancer], 1)
    params = [getattr(patients, f.name).double().numpy().reshape(PATIENTS, -1)
              for f in fields(patients) if isinstance(getattr(patients, f.name), torch.Tensor)]
    state_features.append(x)
    all_features.append(np.concatenate([x, *params], 1))

first = true_outcomes([half(b, slice(0, REPLICATES // 2)) for b in branches])["log_sod"]
second = true_outcomes([half(b, slice(REPLICATES // 2, None)) for b in branches])["log_sod"]
full = true_outcomes(branches)["log_sod"]
n = len(full)
print(f"{n} patients; truly best (16 replicates): "
      + ", ".join(f"{r} {c}" for r, c in zip(REGIMENS, np.bincount(full.argmin(1), minlength=6),
                                              strict=True)))


def as_outcomes(labels: np.ndarray) -> np.ndarray:
    """A pick as outcomes ranking_metrics reads: 0 for the picked regimen, 1 elsewhere."""
    out = np.ones((len(labels), len(REGIMENS)))
    out[np.arange(len(labels)), labels] = 0.0
    return out


def score(name: str, pred: np.ndarray) -> None:
    acc_b = ranking_metrics(pred, second)["best_accuracy"].mean()
    acc_f = ranking_metrics(pred, full)["best_accuracy"].mean()
    print(f"{name:<55} vs replicates 9-16: {acc_b:.3f}   vs all 16: {acc_f:.3f}")


target = first.argmin(1)
folds = list(KFold(5, shuffle=True, random_state=0).split(np.arange(n)))
majority = np.zeros(n, int)
for train, test in folds:
    majority[test] = np.bincount(target[train], minlength=len(REGIMENS)).argmax()
score("majority pick", as_outcomes(majority))
for name, x in (("classifier on the true day-0 state", np.concatenate(state_features)),
                ("classifier on the day-0 state + hidden patient parameters",
                 np.concatenate(all_features))):
    picked = np.zeros(n, int)
    for train, test in folds:
        model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05,
                                               random_state=0).fit(x[train], target[train])
        picked[test] = model.predict(x[test])
    score(name, as_outcomes(picked))
# Against all 16 this pick shares half its replicates with the truth: optimistic.
score("best of replicates 1-8 (a perfect expected-outcome model)", first)
