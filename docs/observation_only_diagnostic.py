"""Where a world model's filtered state stands against the truth and its own biopsies.

Run from the repository root (about a minute per checkpoint on 2 CPU cores)::

    .venv/bin/python docs/observation_only_diagnostic.py \\
        immunegym/pretrained/world_model_observation_only immunegym/pretrained/world_model

For every member of each checkpoint, at the biopsy days of fresh patients of the 14
default-suite designs (8 per design, seeds + 1000, as the benchmarks regenerate them), it
prints:

* ``state vs truth``: tree-W1 of the filtered state's composition to ImmuneSim's truth;
* ``lab view vs biopsy``: tree-W1 of the state seen through the lab's bias (``observe``) to
  the biopsy it has just read (leaf prior for coarse labels): does the state explain its own
  observation?
* ``biopsy vs truth``: the same biopsy against the truth (the noise floor);
* ``biopsy NLL``: the per-cell Dirichlet-multinomial NLL of those biopsies under the
  filtered state (the observation-only training loss, without the scan term);
* ``types at the floor``: cell types whose log1p count sits at the composition floor at
  more than half of the origins (zero share in the state).

It was written for issue 16's observation-only variant, whose state did not explain its
own biopsies (BENCHMARKS.md, "World model v2").
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import torch

from immunegym.benchmarks.baselines import last_observed
from immunegym.benchmarks.world_model import load_cohorts, make_origins
from immunegym.ontology import FINE_TYPES, tree_wasserstein
from immunegym.sim.suite import DEFAULT_SUITE
from immunegym.world_model import load
from immunegym.world_model.fitting import _observation_nll, training_tensors
from immunegym.world_model.latent import MIN_LOG_CELLS


def main(paths: list[str]) -> None:
    specs = [replace(s, n_patients=8, seed=s.seed + 1000) for s in DEFAULT_SUITE]
    data = load_cohorts(specs)
    origins = make_origins(data, np.arange(len(data.timelines)), include_scans=False)
    tl = origins.context
    last = tl.valid.sum(1) - 1
    rows = torch.arange(len(tl))
    print(f"{len(tl)} biopsy origins of {len(data.timelines)} patients")
    for path in paths:
        model = load(path)
        x = model.inputs(tl)
        biopsy = last_observed(tl, np.asarray(model.config.leaf_prior))[0]
        noise = tree_wasserstein(biopsy, origins.today_comp).mean()
        for i, module in enumerate(model.members):
            tensors = training_tensors(module, tl, x, None, 1)
            with torch.no_grad():
                filt = module.filter(x)
                state = filt.index(rows, last)
                comp = torch.softmax(module.composition_logits(state.z), -1).numpy()
                view = torch.softmax(module.observe(state.z, x.lab_index).logits, -1).numpy()
                at_floor = (module.log_cells(state.z) < MIN_LOG_CELLS).float().mean(0).numpy()
                lab = x.lab_index.unsqueeze(1).expand(tl.valid.shape)
                nll = _observation_nll(module, filt.z, lab, tensors,
                                       tensors.comp_observed.float(),
                                       torch.zeros_like(tensors.comp_observed).float(),
                                       (slice(None), slice(None)))
            dead = [FINE_TYPES[k] for k in np.nonzero(at_floor > 0.5)[0]]
            print(f"{path} member {i}: state vs truth "
                  f"{tree_wasserstein(comp, origins.today_comp).mean():.3f}; lab view vs "
                  f"biopsy {tree_wasserstein(view, biopsy).mean():.3f}; biopsy vs truth "
                  f"{noise:.3f}; biopsy NLL {float(nll):.3f}/cell; types at the floor "
                  f"{len(dead)} {dead}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["immunegym/pretrained/world_model_observation_only"])
