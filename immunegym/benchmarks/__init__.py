"""Benchmarks: measured speed and quality figures, run from ``immunegym bench``."""
