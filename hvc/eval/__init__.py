"""Benchmarks: readers per benchmark family, label propagation, metrics and scoring."""
