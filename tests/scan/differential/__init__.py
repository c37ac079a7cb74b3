"""Differential fuzzing: mutate real samples, run the real loaders in a sandbox, compare with
the scanner's verdict. See ``tests/scan/test_differential.py`` and
``benchmarks/scan/differential.py``."""
