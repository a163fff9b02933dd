"""Fidelity of ImmuneWorld-v0 to ImmuneSim-v0 on the same 256 patients (BENCHMARKS.md).

Run: .venv/bin/python docs/env_fidelity.py
"""

import numpy as np

from immunegym.env import ImmuneSimVectorEnv, ImmuneWorldVectorEnv, PatientBank

N, CYCLES = 256, 8
bank = PatientBank.from_sim({}, N, seed=0)
regimens = {"none": [0, 0, 0, 0, 0], "anti_pd1+anti_ctla4": [2, 2, 0, 0, 0]}
envs = {"world (mean)": (ImmuneWorldVectorEnv, {}),
        "world (sampled)": (ImmuneWorldVectorEnv, {"world_options": {"sample": True}}),
        "sim": (ImmuneSimVectorEnv, {})}
for regimen, action in regimens.items():
    for name, (cls, options) in envs.items():
        env = cls(N, bank=bank, terminate_on_progression=False, horizon=CYCLES, **options)
        env.reset(seed=0, options={"patient": list(range(N))})
        deaths = 0
        for _ in range(CYCLES):
            *_, info = env.step(np.tile(action, (N, 1)))
            deaths += int(info["died"].sum())
        pct = np.percentile(info["sod_mm"], [50, 90, 99]).round(0)
        print(f"{regimen:<22} {name:<16} deaths {deaths:4d}  SOD 50/90/99 pct {pct}")
