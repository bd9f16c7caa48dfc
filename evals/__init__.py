"""Evaluation on the benchmarks the four papers report."""
