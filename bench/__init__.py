"""Benchmarks: each runs as ``python -m bench.NAME [--quick]``, prints a table of medians
and ratios against a baseline measured in the same run, and ends with one JSON line."""
