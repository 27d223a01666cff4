"""Detection power of ``bo.check`` against ``torch.autograd.gradcheck`` and
``jax.test_util.check_grads`` on the planted bugs of ``tests/mutation/mutants.py``.

Per mutant: over seeds 0..S-1, the number of cases (in draw order) until ``bo.check`` first
reports it (median), whether the named layer was the one where the bug enters, whether the
replay of the mutant's full return (deltas and input gradients ``da<l>`` too) names the bug's
own step (``detail.enters``: a pooling bug at the pool's backward), and the time;
then the same mutant wrapped for gradcheck (an ``autograd.Function`` whose forward is the
reference loss and whose backward returns the mutant's gradients) and for check_grads (a
``jax.custom_vjp`` with the same forward and backward through ``pure_callback``), on the
first K cases, float64, default settings; and each tool's time per case on those same K
cases (warmed up, interleaved, medians of 3). Control rows: the correct implementation through
the same three, which must raise no alarm.

Run from the repository root, as a module (it imports ``tests.mutation.mutants``):

    python -m benchmarks.bench_mutants [--seeds 5] [--max-cases 30] [--k 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import backprop_oracle as bo
from tests.mutation.mutants import MUTANTS, Mutant, correct

from .timing import interleaved

FAILING = ("diverge", "nan", "oracle_error")


# Mutants whose bug is in layer l's own backward (its input gradient), which
# first_divergent_layer names as l - 1 (the first wrong delta is below it).
IN_A_LAYERS_BACKWARD = ("pool", "conv_input_gradient", "dropout_mask", "bp2_transposed")


def cases_to_detect(m: Mutant, seed: int, limit: int
                    ) -> tuple[int | None, bool | None, bool | None, float]:
    """Cases until ``bo.check`` reports the mutant (gradients only, as an implementation
    returns them), whether ``first_divergent_layer`` is the bug's layer, and whether the
    replay of the full return (gradients, deltas, input gradients) names the bug's own step
    in ``detail.enters``."""
    start = time.perf_counter()
    for i, case in enumerate(m.cases(limit, seed), 1):
        report = bo.check(m.impl, [case], name=m.name, tiebreakers=())
        bad = report.failures()
        if bad:
            graph = m.family == "graph"
            right = None if graph else all(r.first_divergent_layer == m.layer(case) for r in bad)
            step = None if graph or not hasattr(m.impl, "result") else _step_named(m, case)
            return i, right, step, time.perf_counter() - start
    return None, None, None, time.perf_counter() - start


def _step_named(m: Mutant, case: bo.Case) -> bool:
    """The full return's first failing record says the bug enters at its own step: the
    backward of layer l for a bug in layer l's input gradient, else a step of its layer."""
    full = m.result(case)
    returned = {**full.grads, **full.deltas, **full.input_grads}
    bad = bo.check(lambda c: returned, [case], name=m.name, tiebreakers=()).failures()
    enters = str(bad[0].detail.get("enters", "")) if bad else ""
    layer = m.layer(case)
    exact = " or " not in enters  # not "the backward of l or the activation derivative of l-1"
    if any(k in m.name for k in IN_A_LAYERS_BACKWARD):
        return exact and enters.startswith(f"enters in the backward of layer {layer + 1} (")
    return exact and f"layer {layer} (" in enters


def steps_to_detect(m: Mutant, seed: int, limit: int) -> tuple[int | None, int | None, float]:
    """Cases until ``check_training`` reports the optimiser mutant, and the first step named."""
    start = time.perf_counter()
    for i, case in enumerate(m.cases(limit, seed), 1):
        bad = bo.check_training(m.impl, [case], bo.Training(), name=m.name).failures()
        if bad:
            return i, min(r.step for r in bad), time.perf_counter() - start
    return None, None, time.perf_counter() - start


def over_seeds(runs: list[tuple]) -> tuple[str, object, float]:
    """``(cases needed | None, ..., seconds)`` per seed -> "k/n seeds", the median number of
    cases where detected, the median time."""
    needed = [r[0] for r in runs if r[0] is not None]
    return (f"{len(needed)}/{len(runs)} seeds", statistics.median(needed) if needed else "-",
            statistics.median(r[-1] for r in runs))


def per_case(m: Mutant, cases: list[bo.Case]) -> dict[str, float]:
    """Seconds per case of each tool on the same ``cases`` (the float64 K cases given to
    gradcheck and check_grads), each warmed up on the first case, interleaved, medians of 3."""
    tools = {"bo.check": lambda c: bo.check(m.impl, [c], name=m.name, tiebreakers=()),
             "gradcheck": lambda c: _gradcheck_detects_one(m, c),
             "check_grads": lambda c: _check_grads_detects_one(m, c)}
    import jax

    with jax.enable_x64(True):
        for tool in tools.values():
            tool(cases[0])
        t = interleaved({k: (lambda tool=tool: [tool(c) for c in cases])
                         for k, tool in tools.items()}, repeats=3, warmup=0)
    return {k: v / len(cases) for k, v in t.items()}


def loss_of(case: bo.Case, params: dict) -> float:
    return float(bo.backprop(case.with_arrays(params=params)).loss)


def gradcheck_detects(m: Mutant, cases: list[bo.Case]) -> tuple[bool, float]:
    start, found = time.perf_counter(), False
    for case in cases:
        found |= _gradcheck_detects_one(m, case)
    return found, time.perf_counter() - start


def _gradcheck_detects_one(m: Mutant, case: bo.Case) -> bool:
    import torch

    names = list(case.params)

    class Mutated(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *tensors):
            ctx.params = {k: t.detach().numpy() for k, t in zip(names, tensors, strict=True)}
            return torch.tensor(loss_of(case, ctx.params), dtype=torch.float64)

        @staticmethod
        def backward(ctx, grad_out):
            grads = m.impl(case.with_arrays(params=ctx.params))
            return tuple(grad_out * torch.tensor(np.array(grads[k], np.float64))
                         for k in names)

    inputs = tuple(torch.tensor(case.params[k], dtype=torch.float64, requires_grad=True)
                   for k in names)
    try:
        ok = torch.autograd.gradcheck(Mutated.apply, inputs, raise_exception=False)
    except RuntimeError as exc:  # torch refusing a wrongly shaped gradient: detected
        if "invalid gradient" not in str(exc):
            raise
        ok = False
    return not ok


def check_grads_detects(m: Mutant, cases: list[bo.Case]) -> tuple[bool, float]:
    import jax

    start, found = time.perf_counter(), False
    with jax.enable_x64(True):
        for case in cases:
            found |= _check_grads_detects_one(m, case)
    return found, time.perf_counter() - start


def _check_grads_detects_one(m: Mutant, case: bo.Case) -> bool:
    import jax
    import jax.numpy as jnp
    from jax.test_util import check_grads

    names = list(case.params)

    def host_loss(*arrays):
        return np.asarray(loss_of(case, dict(zip(names, map(np.asarray, arrays), strict=True))))

    def host_grads(*arrays):
        params = dict(zip(names, map(np.asarray, arrays), strict=True))
        grads = m.impl(case.with_arrays(params=params))
        return tuple(np.asarray(grads[k], np.float64) for k in names)

    @jax.custom_vjp
    def f(*arrays):
        return jax.pure_callback(host_loss, jax.ShapeDtypeStruct((), jnp.float64),
                                 *arrays)

    def fwd(*arrays):
        return f(*arrays), arrays

    def bwd(arrays, g):
        shapes = tuple(jax.ShapeDtypeStruct(a.shape, jnp.float64) for a in arrays)
        return tuple(g * t for t in jax.pure_callback(host_grads, shapes, *arrays))

    f.defvjp(fwd, bwd)
    args = tuple(jnp.asarray(case.params[k], jnp.float64) for k in names)
    try:
        check_grads(f, args, order=1, modes=["rev"])
    except AssertionError:  # check_grads' mismatch
        return True
    except Exception as exc:  # a wrongly shaped gradient: detected
        if "shape" not in str(exc):
            raise
        return True
    return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--max-cases", type=int, default=30)
    p.add_argument("--k", type=int, default=3, help="cases given to gradcheck / check_grads")
    args = p.parse_args()
    print("| mutant | family | bo.check detected | median cases to detect | right layer "
          "| own step named (full return) | bo.check time (s) | gradcheck detected "
          "| gradcheck time (s) | check_grads detected | check_grads time (s) "
          "| per case on the same K cases: bo.check / gradcheck / check_grads (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m in MUTANTS:
        if m.training:
            runs = [steps_to_detect(m, seed, args.max_cases) for seed in range(args.seeds)]
            detected, median, seconds = over_seeds(runs)
            steps = sorted({s for _, s, _ in runs if s is not None})
            print(f"| {m.name} | {m.family} (training, {bo.Training().steps} steps) "
                  f"| {detected} | {median} | first at step "
                  f"{', '.join(map(str, steps)) or '-'} | - | {seconds:.3f} "
                  "| n/a — optimiser | - | n/a — optimiser | - | - |", flush=True)
            continue
        runs = [cases_to_detect(m, seed, args.max_cases) for seed in range(args.seeds)]
        detected, median, seconds = over_seeds(runs)
        rights = [r for _, r, _, _ in runs if r is not None]
        right = "n/a (graph)" if m.family == "graph" else (
            f"{sum(rights)}/{len(rights)}" if rights else "-")
        named = [s for _, _, s, _ in runs if s is not None]
        step = f"{sum(named)}/{len(named)}" if named else "n/a"
        k_cases = [c.astype("float64") for c in m.cases(args.k, 0)]
        g, g_t = gradcheck_detects(m, k_cases)
        j, j_t = check_grads_detects(m, k_cases)
        print(f"| {m.name} | {m.family} | {detected} | {median} | {right} | {step} "
              f"| {seconds:.3f} "
              f"| {'yes' if g else 'NO'} | {g_t:.2f} | {'yes' if j else 'NO'} | {j_t:.2f} "
              f"| {_same_cases(m, k_cases)} |", flush=True)
    for family in ("mlp", "cnn", "softmax", "graph"):  # control: the wrappers must stay quiet
        control = Mutant(f"correct (control, {args.max_cases} cases)", family, correct)
        cases = control.cases(args.max_cases, 0)
        start = time.perf_counter()
        alarms = len(bo.check(correct, cases, name="correct", tiebreakers=()).failures())
        seconds = time.perf_counter() - start
        k_cases = [c.astype("float64") for c in cases[:args.k]]
        g, g_t = gradcheck_detects(control, k_cases)
        j, j_t = check_grads_detects(control, k_cases)
        print(f"| {control.name} | {family} | {alarms} false alarms | - | - | - "
              f"| {seconds:.3f} "
              f"| {'ALARM' if g else 'quiet'} | {g_t:.2f} | {'ALARM' if j else 'quiet'} "
              f"| {j_t:.2f} | {_same_cases(control, k_cases)} |", flush=True)


def _same_cases(m: Mutant, cases: list[bo.Case]) -> str:
    t = per_case(m, cases)
    return " / ".join(f"{t[k] * 1e3:.0f}" for k in ("bo.check", "gradcheck", "check_grads"))


if __name__ == "__main__":
    main()
