"""Standard of care: each cancer type's guideline regimen, the same for every patient.

Melanoma and RCC get nivolumab + ipilimumab x4 then nivolumab, NSCLC (PD-L1 unselected) and
TNBC chemotherapy + pembrolizumab x4 then pembrolizumab, PD-L1-high NSCLC, urothelial,
HNSCC and MSI-high CRC pembrolizumab, MSS CRC a platinum doublet
(:data:`immunegym.planning.STANDARD_OF_CARE`). The env's rules hold anti-PD-1 and stop
anti-CTLA-4 after a grade >= 3 irAE. Run ``python -m agents.standard_of_care --help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agents._common import CommonArgs, judge, writer_for
from immunegym.planning.policy import EpisodeStart, PlanFollower
from immunegym.planning.regimen import standard_of_care


@dataclass
class Args(CommonArgs):
    """Guideline regimens per cancer type."""


class StandardOfCare(PlanFollower):
    """Follows :func:`immunegym.planning.standard_of_care` of each row's cancer type."""

    name = "standard_of_care"

    def make_plans(self, episodes: EpisodeStart) -> np.ndarray:
        h = episodes.scenario.horizon
        by_type = {c: standard_of_care(c).cycle_doses(h, episodes.scenario.cycle_days)
                   for c in np.unique(episodes.cancer_type)}
        return np.stack([by_type[c] for c in episodes.cancer_type])


def main(args: Args) -> dict[str, Any]:
    writer = writer_for(args, "standard_of_care")
    result = judge(StandardOfCare(), args, writer=writer)
    writer.close()
    return result


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
