"""Fidelity of ImmuneWorld-v0 to ImmuneSim-v0 on the same 256 patients (BENCHMARKS.md).

Run: .venv/bin/python docs/env_fidelity.py
"""
import numpy as np
from immunegym.env import ImmuneWorldVectorEnv, ImmuneSimVectorEnv, PatientBank
bank = PatientBank.from_sim({}, 256, seed=0)
for act_name, act in [("none",[0,0,0,0,0]),("combo",[2,2,0,0,0])]:
  for name, cls, opts in [("world", ImmuneWorldVectorEnv, {}), ("world-mean", ImmuneWorldVectorEnv, {"world_options":{"sample":False}}), ("sim", ImmuneSimVectorEnv, {})]:
    env = cls(256, bank=bank, terminate_on_progression=False, horizon=8, **opts)
    env.reset(seed=0, options={"patient": list(range(256))})
    deaths=0; sods=[]
    for t in range(8):
        obs, r, te, tr, info = env.step(np.tile(act,(256,1)))
        deaths += info["died"].sum(); sods.append(np.percentile(info["sod_mm"],[50,90,99]).round(0))
    print(act_name, name, "deaths", deaths, "sod pct 50/90/99 at 1,4,8:", sods[0], sods[3], sods[7])
