"""Per-case cost of the PyTorch and JAX oracles on CPU, and the JAX compile-cache hit rate.

    python benchmarks/bench_frameworks.py [--cases 7] [--space-n 100] [--sizes small,medium,large]

For each size (one architecture, ``--cases`` draws of its values, float64, strict precision)
the median seconds per case of: the reference (for scale); torch reverse and forward; JAX
reverse and forward jitted with the compile excluded (architecture already in the cache),
included (cache cleared before every case: what a stream of all-new architectures costs),
and eager (``jit=False``). Then ``--space-n`` cases drawn by ``bo.cases`` from small spaces of
architectures run through the cached JAX oracle: hits, misses, hit rate and time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

import backprop_oracle as bo
from backprop_oracle.oracles.jax_oracle import CACHE, JaxOracle
from backprop_oracle.oracles.torch_oracle import TorchOracle
from backprop_oracle.reference.init import init_params


def small(rng: np.random.Generator) -> bo.Case:
    layers = (bo.dense(8, "tanh"), bo.dense(3, "sigmoid"))
    return _case("mlp", layers, "quadratic", rng.normal(size=(4, 5)), rng.normal(size=(4, 3)),
                 rng)


def medium(rng: np.random.Generator) -> bo.Case:
    layers = (bo.dense(64, "relu"), bo.dense(32, "tanh"), bo.dense(10, "identity"))
    return _case("softmax", layers, "softmax_cross_entropy", rng.normal(size=(16, 32)),
                 rng.dirichlet(np.ones(10), size=16), rng)


def large(rng: np.random.Generator) -> bo.Case:
    layers = (bo.conv2d(8, 3, 1, 1, "relu"), bo.maxpool(2), bo.conv2d(8, 3, 1, 0, "tanh"),
              bo.avgpool(2), bo.flatten(), bo.dense(10, "identity"))
    return _case("cnn", layers, "softmax_cross_entropy", rng.normal(size=(8, 1, 16, 16)),
                 np.eye(10)[rng.integers(0, 10, 8)], rng)


def _case(family: str, layers: tuple, cost: str, x: np.ndarray, y: np.ndarray,
          rng: np.random.Generator) -> bo.Case:
    return bo.Case(family=family, layers=layers, cost=cost,
                   params=init_params(layers, x.shape[1:], rng, "xavier", "float64"), x=x, y=y)


SIZES = {"small": small, "medium": medium, "large": large}


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_over(cases: list[bo.Case], run: Callable[[bo.Case], object],
                before: Callable[[], None] = lambda: None, warm: bool = True) -> float:
    """Median seconds of ``run(case)`` over ``cases`` (after one untimed warm-up run)."""
    if warm:
        run(cases[0])
    times = []
    for c in cases:
        before()
        times.append(seconds(lambda c=c: run(c)))
    return statistics.median(times)


def oracles() -> dict[str, tuple[Callable[[bo.Case], object], Callable[[], None], bool]]:
    """Row label -> (run, reset before each timed case, warm up first)."""
    none = lambda: None  # noqa: E731
    rows: dict = {"reference": (bo.backprop, none, True)}
    for mode in ("reverse", "forward"):
        rows[f"torch {mode}"] = (TorchOracle(mode).run, none, True)
    for mode in ("reverse", "forward"):
        jitted = JaxOracle(mode).run
        rows[f"jax {mode} (jit, compile excluded)"] = (jitted, none, True)
        rows[f"jax {mode} (jit, compile included)"] = (jitted, CACHE.clear, True)
        rows[f"jax {mode} (eager)"] = (JaxOracle(mode, jit=False).run, none, True)
    return rows


def size_table(names: list[str], n: int) -> list[tuple[str, dict[str, float]]]:
    table = []
    for label, (run, before, warm) in oracles().items():
        row = {}
        for name in names:
            rng = np.random.default_rng(0)
            cases = [SIZES[name](rng) for _ in range(n)]
            row[name] = median_over(cases, run, before, warm)
        table.append((label, row))
        print(f"  measured {label}", flush=True)
    return table


SPACES = {
    "mlp tiny (<=2 layers, width<=2, batch<=2, 2 activations)":
        ("mlp", dict(max_layers=2, max_width=2, max_batch=2, activations=["tanh", "relu"],
                     costs=["quadratic"], dtypes=["float64"])),
    "mlp small (<=3 layers, width<=4, batch<=4, all activations/costs)":
        ("mlp", dict(max_layers=3, max_width=4, max_batch=4, dtypes=["float64"])),
    "graph (<=3 nodes, width<=2, batch<=2)":
        ("graph", dict(max_nodes=3, max_width=2, max_batch=2, dtypes=["float64"])),
}


def cache_rows(n: int) -> list[tuple[str, dict]]:
    rows = []
    oracle = JaxOracle("reverse")
    for label, (family, constraints) in SPACES.items():
        cases = bo.cases(family, n=n, seed=1, **constraints)
        CACHE.clear()
        total = seconds(lambda cases=cases: [oracle.run(c) for c in cases])
        rows.append((label, {**CACHE.stats(), "seconds": total, "n": len(cases)}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=7, help="cases per size (median over them)")
    parser.add_argument("--space-n", type=int, default=100, help="cases per cache-rate space")
    parser.add_argument("--sizes", default="small,medium,large")
    args = parser.parse_args()
    names = args.sizes.split(",")
    rng = np.random.default_rng(0)
    for name in names:
        c = SIZES[name](rng)
        print(f"{name}: {c.describe()}  params={sum(p.size for p in c.params.values())}")
    table = size_table(names, args.cases)
    print(f"\nmedian seconds per case (CPU, float64, strict, {args.cases} cases per size)")
    print(f"| oracle | {' | '.join(names)} |\n|---|{'---|' * len(names)}")
    for label, row in table:
        print(f"| {label} | {' | '.join(f'{row[n]:.4f}' for n in names)} |")
    print(f"\nJAX compile cache over {args.space_n} drawn cases (reverse, float64)")
    print("| space | cases | misses (compiles) | hits | hit rate | total s |\n"
          "|---|---|---|---|---|---|")
    for label, s in cache_rows(args.space_n):
        print(f"| {label} | {s['n']} | {s['misses']} | {s['hits']} | {s['hit_rate']:.0%} "
              f"| {s['seconds']:.1f} |")


if __name__ == "__main__":
    main()
