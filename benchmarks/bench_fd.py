"""Benchmark: this project's finite-difference oracle against torch.autograd.gradcheck (slow
and fast mode, float64) and jax.test_util.check_grads, on MLPs of ~1e2, 1e3, 1e4 parameters.

Each checker sees the same loss and the same (possibly mutated) reference gradient: for
gradcheck through a custom ``torch.autograd.Function`` whose backward returns it, for
check_grads through ``jax.custom_vjp``. Reported: seconds per check and whether each planted
bug is caught (``ok`` = correct gradient passed, i.e. no false alarm).

Run from the repository root, as a module (it imports ``tests.mutation.mutants``):

    python -m benchmarks.bench_fd [--sizes 1e2 1e3 1e4] [--repeats 5] [--skip-slow]

Times: every checker built once (``check_grads``' function included), warmed up, then the
correct gradient checked ``--repeats`` times, interleaved; one thread per library.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

import backprop_oracle as bo
from backprop_oracle.oracles.finite_differences import FiniteDifferences
from backprop_oracle.properties.campaign.threads import pin
from backprop_oracle.properties.comparison.compare import compare, screen_then_locate
from backprop_oracle.properties.comparison.records import case_verdict
from backprop_oracle.reference.init import init_params
from tests.mutation.mutants import BY_NAME, one_element, scaled

from .timing import interleaved

ARCH = {"1e2": (8, [8, 4]), "1e3": (16, [32, 16, 4]), "1e4": (64, [96, 64, 4])}
BUGS: dict[str, Callable[[bo.Case], bo.Result]] = {
    "correct": bo.backprop,
    "scale 1e-4": lambda c: scaled(c, 1 + 1e-4),
    "one elem 1e-2": lambda c: one_element(c, "W1", 1e-2),
    "sigma'(a)": BY_NAME["sigma_prime_of_a"].result,
}


def make_case(size: str, seed: int = 0) -> bo.Case:
    n_in, widths = ARCH[size]
    rng = np.random.default_rng(seed)
    acts = ["tanh", "sigmoid"]
    layers = tuple(bo.dense(w, acts[i % 2]) for i, w in enumerate(widths[:-1])) + (
        bo.dense(widths[-1], "sigmoid"),)
    x = rng.normal(size=(8, n_in))
    params = init_params(layers, (n_in,), rng)
    return bo.Case(family="mlp", layers=layers, cost="quadratic", params=params, x=x,
                   y=rng.uniform(size=(8, widths[-1])))


def _with(case: bo.Case, flat: np.ndarray) -> bo.Case:
    params, start = {}, 0
    for k, v in case.params.items():
        params[k] = flat[start:start + v.size].reshape(v.shape)
        start += v.size
    return case.with_arrays(params=params)


def _flat(grads: dict[str, np.ndarray], case: bo.Case) -> np.ndarray:
    return np.concatenate([np.asarray(grads[k]).ravel() for k in case.params])


# --------------------------------------------------------------------------- torch

def torch_checker(case: bo.Case, bug: Callable, fast: bool) -> Callable[[], bool]:
    """``gradcheck`` (slow mode, or ``fast_mode``) of ``bug``'s gradient, built once."""
    import torch

    acts = {"tanh": torch.tanh, "sigmoid": torch.sigmoid}
    x, y = torch.tensor(case.x), torch.tensor(case.y)

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        a, start = x, 0
        for spec in case.layers:
            W = flat[start:start + spec.units * a.shape[1]].reshape(spec.units, a.shape[1])
            start += W.numel()
            b = flat[start:start + spec.units]
            start += spec.units
            a = acts[spec.activation](a @ W.T + b)
        return 0.5 * ((y - a) ** 2).sum() / x.shape[0]

    class Loss(torch.autograd.Function):
        @staticmethod
        def forward(ctx, flat):  # type: ignore[override]
            ctx.save_for_backward(flat)
            with torch.no_grad():
                return loss_of(flat)

        @staticmethod
        def backward(ctx, g):  # type: ignore[override]
            (flat,) = ctx.saved_tensors
            c = _with(case, flat.detach().numpy().copy())
            return g * torch.tensor(_flat(bug(c).grads, c))

    theta = torch.tensor(_flat(case.params, case), requires_grad=True)
    return lambda: torch.autograd.gradcheck(Loss.apply, (theta,), fast_mode=fast,
                                            raise_exception=False)


# --------------------------------------------------------------------------- jax

def jax_checker(case: bo.Case, bug: Callable) -> Callable[[], bool]:
    """``check_grads`` (reverse mode, order 1) of ``bug``'s gradient; the function is built
    once, so repeated calls time the check alone."""
    import jax
    import jax.numpy as jnp
    from jax.test_util import check_grads

    jax.config.update("jax_enable_x64", True)
    x, y = jnp.asarray(case.x), jnp.asarray(case.y)
    acts = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}

    def loss_of(flat):
        a, start = x, 0
        for spec in case.layers:
            n = spec.units * a.shape[1]
            W = flat[start:start + n].reshape(spec.units, a.shape[1])
            b = flat[start + n:start + n + spec.units]
            start += n + spec.units
            a = acts[spec.activation](a @ W.T + b)
        return 0.5 * jnp.sum((y - a) ** 2) / x.shape[0]

    @jax.custom_vjp
    def f(flat):
        return loss_of(flat)

    def fwd(flat):
        return loss_of(flat), flat

    def bwd(flat, g):
        c = _with(case, np.asarray(flat).copy())
        return (g * jnp.asarray(_flat(bug(c).grads, c)),)

    f.defvjp(fwd, bwd)
    theta = jnp.asarray(_flat(case.params, case))

    def check() -> bool:
        try:
            check_grads(f, (theta,), order=1, modes=["rev"])
            return True
        except AssertionError:
            return False

    return check


# --------------------------------------------------------------------------- ours

def fd_full(case: bo.Case, bug: Callable, method: str = "auto") -> Callable[[], bool]:
    """Every coordinate by finite differences (``method``), compared elementwise."""
    def check() -> bool:
        records = compare(case, FiniteDifferences(method).run(case), bug(case),
                          oracle="bench", mode="reverse", device="cpu", dtype="float64")
        return case_verdict(records) == "agree"

    return check


def fd_screen(case: bo.Case, bug: Callable) -> Callable[[], bool]:
    """Directional screen, coordinates only where it fails."""
    def check() -> bool:
        records, _ = screen_then_locate(case, bug(case))
        return case_verdict(records) == "agree"

    return check


CHECKERS: dict[str, Callable[[bo.Case, Callable], Callable[[], bool]]] = {
    "fd full, complex step (ours)": fd_full,
    "fd full, Richardson (ours)": lambda c, b: fd_full(c, b, "fd"),
    "fd screen (ours)": fd_screen,
    "gradcheck fast": lambda c, b: torch_checker(c, b, True),
    "check_grads": jax_checker,
    "gradcheck slow": lambda c, b: torch_checker(c, b, False),
}


def _checkers(skip_slow: bool) -> dict[str, Callable[[bo.Case, Callable], Callable[[], bool]]]:
    return {k: v for k, v in CHECKERS.items() if not (skip_slow and k == "gradcheck slow")}


def verdicts(size: str, skip_slow: bool = False) -> dict[str, list[str]]:
    """Per checker, for each of ``BUGS``: ``ok`` / ``FALSE ALARM`` (correct gradient) or
    ``caught`` / ``missed``."""
    case = make_case(size)
    return {name: [(("ok" if passed else "FALSE ALARM") if bug_name == "correct"
                    else ("missed" if passed else "caught"))
                   for bug_name, bug in BUGS.items() for passed in [build(case, bug)()]]
            for name, build in _checkers(skip_slow).items()}


def times(size: str, repeats: int = 5, skip_slow: bool = False) -> dict[str, float]:
    """Median seconds per check of the correct gradient, every checker built once, warmed
    up and interleaved with the others."""
    case = make_case(size)
    return interleaved({name: build(case, bo.backprop)
                        for name, build in _checkers(skip_slow).items()}, repeats)


def methods(repeats: int = 5, n: int = 12) -> list[dict]:
    """Complex step against Richardson on the default draws whose path is analytic (where
    both are valid and ``auto`` picks complex step): seconds per family and dtype for the
    whole oracle run, interleaved."""
    from backprop_oracle.oracles._forward64 import is_analytic

    rows = []
    for family in ("mlp", "softmax", "graph", "cnn"):
        for dtype in ("float32", "float64"):
            cases = [c for c in bo.cases(family, n, seed=0, dtypes=[dtype]) if is_analytic(c)]
            if not cases:
                continue
            work = {m: (lambda m=m, cases=cases: [FiniteDifferences(m).run(c) for c in cases])
                    for m in ("complex_step", "fd")}
            t = interleaved(work, repeats)
            rows.append({"family": family, "dtype": dtype, "cases": len(cases),
                         "complex_step": t["complex_step"], "richardson": t["fd"],
                         "auto": FiniteDifferences().run(cases[0]).meta["method"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="*", default=list(ARCH))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-slow", action="store_true", help="skip gradcheck slow mode")
    args = parser.parse_args()
    pin(1)
    print(f"one thread per library; seconds: median of {args.repeats} interleaved checks of "
          "the correct gradient after a warm-up")
    head = f"{'checker':30s} {'params':>7s} " + " ".join(f"{b:>14s}" for b in BUGS) + \
        f" {'s/check':>9s} {'vs slow':>8s}"
    print(head)
    print("-" * len(head))
    for size in args.sizes:
        n = sum(v.size for v in make_case(size).params.values())
        cells = verdicts(size, args.skip_slow)
        t = times(size, args.repeats, args.skip_slow)
        slow = t.get("gradcheck slow", float("nan"))
        for name, row in cells.items():
            print(f"{name:30s} {n:7d} " + " ".join(f"{c:>14s}" for c in row)
                  + f" {t[name]:9.4f} {slow / t[name]:7.1f}x")
        print()


if __name__ == "__main__":
    main()
