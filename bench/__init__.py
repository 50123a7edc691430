"""Benchmarks (``make bench``): figures and ratios printed, not tests."""
