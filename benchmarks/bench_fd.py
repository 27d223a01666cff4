"""Benchmark: this project's finite-difference oracle against torch.autograd.gradcheck (slow
and fast mode, float64) and jax.test_util.check_grads, on MLPs of ~1e2, 1e3, 1e4 parameters.

Each checker sees the same loss and the same (possibly mutated) reference gradient: for
gradcheck through a custom ``torch.autograd.Function`` whose backward returns it, for
check_grads through ``jax.custom_vjp``. Reported: seconds per check and whether each planted
bug is caught (``ok`` = correct gradient passed, i.e. no false alarm).

Run from the repository root, as a module (it imports ``tests.mutation.mutants``):

    python -m benchmarks.bench_fd [--sizes 1e2 1e3 1e4] [--skip-slow]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

import backprop_oracle as bo
from backprop_oracle.oracles.finite_differences import FiniteDifferences
from backprop_oracle.properties.comparison.compare import compare, screen_then_locate
from backprop_oracle.properties.comparison.records import case_verdict
from backprop_oracle.reference.init import init_params
from tests.mutation.mutants import BY_NAME, one_element, scaled

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

def torch_check(case: bo.Case, bug: Callable, fast: bool) -> bool:
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
    return torch.autograd.gradcheck(Loss.apply, (theta,), fast_mode=fast, raise_exception=False)


# --------------------------------------------------------------------------- jax

def jax_check(case: bo.Case, bug: Callable) -> bool:
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
    try:
        check_grads(f, (jnp.asarray(_flat(case.params, case)),), order=1, modes=["rev"])
        return True
    except AssertionError:
        return False


# --------------------------------------------------------------------------- ours

def fd_full(case: bo.Case, bug: Callable) -> bool:
    records = compare(case, FiniteDifferences().run(case), bug(case), oracle="bench",
                      mode="reverse", device="cpu", dtype="float64")
    return case_verdict(records) == "agree"


def fd_screen(case: bo.Case, bug: Callable) -> bool:
    records, _ = screen_then_locate(case, bug(case))
    return case_verdict(records) == "agree"


def timed(check: Callable[[], bool]) -> tuple[float, bool]:
    t = time.perf_counter()
    passed = check()
    return time.perf_counter() - t, passed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="*", default=list(ARCH))
    parser.add_argument("--skip-slow", action="store_true", help="skip gradcheck slow mode")
    args = parser.parse_args()
    checkers: dict[str, Callable[[bo.Case, Callable], bool]] = {
        "fd full (ours)": fd_full, "fd screen (ours)": fd_screen,
        "gradcheck fast": lambda c, b: torch_check(c, b, True),
        "check_grads": jax_check,
    }
    if not args.skip_slow:
        checkers["gradcheck slow"] = lambda c, b: torch_check(c, b, False)
    head = f"{'checker':18s} {'params':>7s} " + " ".join(f"{b:>14s}" for b in BUGS) + \
        f" {'s/check':>9s} {'vs slow':>8s}"
    print(head)
    print("-" * len(head))
    for size in args.sizes:
        case = make_case(size)
        n = sum(v.size for v in case.params.values())
        rows = {}
        for name, check in checkers.items():
            times, cells = [], []
            for bug_name, bug in BUGS.items():
                seconds, passed = timed(lambda check=check, case=case, bug=bug: check(case, bug))
                times.append(seconds)
                caught = not passed
                cells.append(("ok" if passed else "FALSE ALARM") if bug_name == "correct"
                             else ("caught" if caught else "missed"))
            rows[name] = (cells, float(np.mean(times)))
        slow = rows.get("gradcheck slow", (None, float("nan")))[1]
        for name, (cells, t) in rows.items():
            print(f"{name:18s} {n:7d} " + " ".join(f"{c:>14s}" for c in cells)
                  + f" {t:9.4f} {slow / t:7.1f}x")
        print()


if __name__ == "__main__":
    main()
