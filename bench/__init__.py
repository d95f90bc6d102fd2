"""Benchmarks: the library against a minimal baseline, side by side in one run."""
