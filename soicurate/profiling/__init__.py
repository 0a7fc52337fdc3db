"""Profiling: read dynamics runs block by block, validate them, and compute per-example
statistics, Subsets of Interest and Dataset Cartography coordinates with numba kernels."""
