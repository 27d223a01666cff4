"""Forward mode by directions: what it costs and what it catches.

Cost: per family and dtype, the whole ``evaluate`` of each framework's forward mode by
directions (4 per tensor) against its reverse mode and against forward mode along the whole
basis (``directions=0``, the method before issue 17), on the same default draws, interleaved
after a warm-up, median of the repeats, one thread per library.

False localisations: on ``--screen`` correct draws per family, each framework's largest tangent
error over the screen threshold ``||tol||_2`` (above 1 a tensor would be localised: basis cost,
never a verdict).

Detection: planted forward-mode bugs in the first dense layer's weights (values unchanged,
derivative scaled: one element doubled at the largest gradient, the tensor times 1e-4, the
tensor times 1 + 1e-4), on ``--cases`` mlp draws per dtype; the fraction whose ``W1`` fails
the screen (is localised, then judged elementwise) with 1, 2 and 4 directions.

    python -m benchmarks.bench_directions [--repeats 5] [--cases 6] [--screen 40] [--detect 30]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

import backprop_oracle as bo
from backprop_oracle.oracles.jax_oracle import JaxOracle
from backprop_oracle.oracles.torch_oracle import TorchOracle
from backprop_oracle.properties.campaign.threads import pin
from backprop_oracle.properties.comparison.directional import screen
from backprop_oracle.properties.comparison.error_model import bounds
from backprop_oracle.properties.comparison.evaluate import evaluate

from .timing import interleaved

FRAMEWORKS = {"torch": TorchOracle, "jax": JaxOracle}
FAMILIES = ("mlp", "cnn", "softmax", "graph")


def cost_rows(repeats: int, n: int, families: tuple[str, ...] = FAMILIES) -> list[dict]:
    """Per framework, family and dtype: ``evaluate`` per case (seconds) in reverse mode, forward
    by 4 directions and forward along the whole basis, interleaved after a warm-up."""
    rows = []
    for name, cls in FRAMEWORKS.items():
        variants = {"reverse": cls("reverse"), "directions": cls("forward"),
                    "basis": cls("forward", directions=0)}
        for family in families:
            for dtype in ("float32", "float64"):
                cases = bo.cases(family, n, seed=21, dtypes=[dtype])
                refs = [(c, bo.backprop(c), bounds(c)) for c in cases]

                def work(oracle: object, refs: list = refs) -> Callable[[], None]:
                    return lambda: [evaluate(c, oracle, reference=r, model=m)  # type: ignore
                                    for c, r, m in refs]

                med = interleaved({k: work(o) for k, o in variants.items()}, repeats)
                rows.append({"framework": name, "family": family, "dtype": dtype,
                             **{k: v / n for k, v in med.items()}})
    return rows


def cost(repeats: int, n: int) -> None:
    print("| framework | family | dtype | reverse | forward, 4 directions | forward, basis "
          "| directions / reverse | basis / directions |")
    print("|---|---|---|---|---|---|---|---|")
    for r in cost_rows(repeats, n):
        print(f"| {r['framework']} | {r['family']} | {r['dtype']} | {r['reverse'] * 1e3:.1f} ms "
              f"| {r['directions'] * 1e3:.1f} ms | {r['basis'] * 1e3:.1f} ms "
              f"| {r['directions'] / r['reverse']:.2f} | {r['basis'] / r['directions']:.1f} |")


def screen_ratios(n: int) -> None:
    print("\n| framework | family | largest | 99th percentile | median | cases |")
    print("|---|---|---|---|---|---|")
    for name, cls in FRAMEWORKS.items():
        oracle = cls("forward")
        for family in ("mlp", "cnn", "softmax", "graph"):
            worst = []
            for case in bo.cases(family, n, seed=77):
                ref = bo.backprop(case)
                s = screen(case, ref, oracle.run(case), bounds(case, ref), dtype=case.dtype)
                worst.append(max([x.screen_ratio for x in s.values()], default=0.0))
            w = np.array(worst)
            print(f"| {name} | {family} | {w.max():.3g} | {np.quantile(w, 0.99):.3g} "
                  f"| {np.median(w):.3g} | {n} |")


def _planted_torch(shape: tuple[int, ...], factor: np.ndarray, k: int) -> TorchOracle:
    import torch

    F = torch.nn.functional

    def linear(a, W, b):
        if tuple(W.shape) == shape:
            f = torch.as_tensor(factor, dtype=W.dtype)
            W = W + (f - 1) * (W - W.detach())
        return F.linear(a, W, b)

    return TorchOracle("forward", overrides={"linear": linear}, directions=k)


def detection(n: int) -> None:
    """The fraction of planted bugs whose ``W1`` record is ``diverge``: forward mode along the
    whole basis (elementwise, what the error model allows at all) and by 1, 2, 4 directions
    (screen, then localised); "screened" is the fraction the 4-direction screen localised."""
    bugs = {"one element x2": None, "tensor x1e-4": 1e-4, "tensor x(1+1e-4)": 1 + 1e-4}
    ks = (0, 1, 2, 4)
    print("\n| bug | dtype | basis (elementwise) | 1 direction | 2 directions | 4 directions "
          "| screened (4) | cases |")
    print("|---|---|---|---|---|---|---|---|")
    for bug, scale in bugs.items():
        for dtype in ("float32", "float64"):
            caught = dict.fromkeys(ks, 0)
            screened = 0
            cases = [c for c in bo.cases("mlp", n, seed=31, dtypes=[dtype])
                     if np.abs(bo.backprop(c).grads["W1"]).max() > 0]
            for case in cases:
                ref, model = bo.backprop(case), bounds(case)
                g = ref.grads["W1"]
                factor = np.full(g.shape, scale if scale is not None else 1.0)
                if scale is None:
                    factor[np.unravel_index(int(np.argmax(np.abs(g))), g.shape)] = 2.0
                for k in ks:
                    oracle = _planted_torch(g.shape, factor, k)
                    records = evaluate(case, oracle, reference=ref, model=model)
                    caught[k] += any(r.name == "W1" and r.verdict == "diverge" for r in records)
                    if k == 4:
                        s = screen(case, ref, oracle.run(case), model, dtype=case.dtype)
                        screened += int(not s["W1"].passed)
            print(f"| {bug} | {dtype} | " + " | ".join(
                f"{caught[k] / len(cases):.3f}" for k in ks) +
                f" | {screened / len(cases):.3f} | {len(cases)} |")


def main() -> None:
    """Cost, false localisations, detection (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cases", type=int, default=6)
    p.add_argument("--screen", type=int, default=40)
    p.add_argument("--detect", type=int, default=30)
    args = p.parse_args()
    pin(1)  # before JAX starts its backend: XLA_FLAGS holds
    print(f"one thread per library; per case, median of {args.repeats} interleaved repeats\n")
    cost(args.repeats, args.cases)
    screen_ratios(args.screen)
    detection(args.detect)


if __name__ == "__main__":
    main()
