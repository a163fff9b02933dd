"""Runnable single-file agents: ``python -m agents.<name> --help``.

Each module has a typed ``Args`` dataclass (parsed by tyro), a policy class that follows
:class:`immunegym.planning.Policy`, and ``main(args)`` that trains or plans, then judges the
agent on held-out patients in ImmuneSim-v0 (ground truth) and ImmuneWorld-v0, with
TensorBoard logs under ``runs/``. The leaderboard (``immunegym bench planners``) imports the
same classes.
"""
