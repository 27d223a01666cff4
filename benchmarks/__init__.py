"""Benchmark scripts; run from the repository root as modules, ``python -m benchmarks.<name>``,
so ``tests.mutation.mutants`` (the planted bugs) imports without touching ``sys.path``."""
