"""Adapters of the native vector environments to RL libraries (Stable-Baselines3: :mod:`.sb3`)."""
