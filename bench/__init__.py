"""Benchmarks (``python -m bench.export_bench``)."""
