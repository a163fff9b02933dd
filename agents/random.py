"""Random agent: a uniformly random allowed dose level per therapy, every cycle.

The floor of the leaderboard. Run ``python -m agents.random --help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agents._common import CommonArgs, judge, writer_for
from immunegym.planning.policy import EpisodeStart
from immunegym.validation import seed as validate_seed


@dataclass
class Args(CommonArgs):
    """Uniform random actions among those the action mask allows."""


class RandomAgent:
    """Draws each therapy's level uniformly among its allowed levels (``info["action_mask"]``).

    The generator is re-seeded at every :meth:`start`, so the same patients get the same
    actions in ImmuneWorld and ImmuneSim.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = validate_seed("seed", seed)
        self.rng = np.random.default_rng(seed)

    def start(self, episodes: EpisodeStart) -> None:
        self.rng = np.random.default_rng(self.seed)

    def act(self, obs: Any, infos: dict[str, np.ndarray]) -> np.ndarray:
        mask = np.asarray(infos["action_mask"], dtype=bool)  # (n, R, L)
        scores = self.rng.random(mask.shape) * mask  # an allowed level scores > 0
        return np.argmax(scores + mask * 1e-9, axis=-1).astype(np.int64)


def main(args: Args) -> dict[str, Any]:
    writer = writer_for(args, "random")
    result = judge(RandomAgent(args.seed), args, writer=writer)
    writer.close()
    return result


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Args))
