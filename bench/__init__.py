"""Benchmarks: a fast day generator (bench.generate) and the timed runs (bench.run)."""
