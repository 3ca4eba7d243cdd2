"""Benchmarks: each prints ratios measured in one run (ours vs the built-in); none asserts speed."""
