"""Benchmarks: each `*_bench.py` module's `main()` prints its figures and writes JSON under bench/results/."""
