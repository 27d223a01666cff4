"""What the seeded drawer draws: per family, how often pooling really pools, how often a
ReLU feeds a real max-pool window, how often every parameter gets a non-zero gradient, how
many draws are rejected, and the batch and width distributions. A Markdown table on stdout.

    python -m benchmarks.case_stats [--n 200] [--seed 0]

Rows: ``mlp``, ``softmax``, ``cnn``, ``graph`` with the default constraints, and ``cnn`` with
``pools=["max"]``. Columns (``-`` where a family has no such layer):

- ``pool>1``: share of pool layers whose window is larger than 1x1 (a 1x1 pool is a no-op);
- ``max fed by relu``: share of max-pool layers right after a conv whose activation is relu;
- ``relu->max>1``: share of cases with such a pair whose window is larger than 1x1;
- ``all grads !=0``: share of cases in which every parameter tensor has a non-zero gradient
  (``reference.backprop``, in the case's dtype);
- ``all-zero``: cases in which every gradient is exactly zero;
- ``rejected``: draws thrown away before each case was accepted (``draw_attempts``), with
  the reasons: ``gap`` a max-pool near-tie, ``zero`` every gradient zero, ``other``;
- ``batch``, ``width``: min / median / max; the width is the largest number of units or
  channels of a parametrised layer (a graph's: its vector width).
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import backprop_oracle as bo
from backprop_oracle.properties.cases import strategies as S
from backprop_oracle.reference.case import Conv2d, Dense, Pool

ROWS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("mlp", "mlp", {}),
    ("softmax", "softmax", {}),
    ("cnn", "cnn", {}),
    ("cnn, pools=max", "cnn", {"pools": ["max"]}),
    ("graph", "graph", {}),
)


REASONS = (("gap", "max-pool runner-up gap"), ("zero", "every gradient is exactly zero"))


def _reason(message: str) -> str:
    """The short name (``REASONS``) of a rejection message."""
    return next((short for short, start in REASONS if message.startswith(start)), "other")


@dataclass
class CaseFacts:
    """What ``case_stats`` counts in one case."""

    pool_windows: list[int]  # window size of each pool layer
    max_after_relu: list[bool]  # per max-pool layer: right after a relu conv
    relu_max_window: bool  # a relu conv right before a max pool of window > 1
    every_grad_nonzero: bool
    every_grad_zero: bool
    batch: int
    width: int


def facts(case: bo.Case) -> CaseFacts:
    layers = case.layers
    after = [(prev, spec) for prev, spec in zip((None, *layers[:-1]), layers, strict=True)
             if isinstance(spec, Pool)]
    relu_before = [isinstance(p, Conv2d) and p.activation == "relu" for p, _ in after]
    grads = [np.asarray(g) for g in bo.backprop(case).grads.values()]
    widths = [s.units if isinstance(s, Dense) else s.out_channels for s in layers
              if isinstance(s, (Dense, Conv2d))]
    return CaseFacts(
        pool_windows=[s.size for _, s in after],
        max_after_relu=[r for r, (_, s) in zip(relu_before, after, strict=True)
                        if s.kind == "max"],
        relu_max_window=any(r and s.kind == "max" and s.size > 1
                            for r, (_, s) in zip(relu_before, after, strict=True)),
        every_grad_nonzero=all(np.any(g != 0) for g in grads),
        every_grad_zero=all(not np.any(g != 0) for g in grads),
        batch=case.batch,
        width=max(widths, default=int(case.x.shape[-1])),
    )


def _share(flags: Sequence[bool]) -> str:
    return f"{100 * sum(flags) / len(flags):.1f} % ({sum(flags)}/{len(flags)})" if flags else "-"


def _rejections(reasons: Sequence[str]) -> str:
    counts = Counter(_reason(r) for r in reasons)
    return f"{len(reasons)}" + "".join(f", {k} {v}" for k, v in sorted(counts.items()))


def _spread(values: Sequence[int]) -> str:
    return f"{min(values)} / {statistics.median(values):g} / {max(values)}"


def row(label: str, family: str, n: int, seed: int, constraints: dict[str, Any]) -> str:
    drawn = [S.draw_attempts(family, seed, i, **constraints) for i in range(n)]
    found = [facts(case) for case, _ in drawn]
    cells = [
        label, str(n),
        _share([w > 1 for f in found for w in f.pool_windows]),
        _share([r for f in found for r in f.max_after_relu]),
        _share([f.relu_max_window for f in found]) if family == "cnn" else "-",
        _share([f.every_grad_nonzero for f in found]),
        str(sum(f.every_grad_zero for f in found)),
        _rejections([r for _, reasons in drawn for r in reasons]),
        _spread([f.batch for f in found]),
        _spread([f.width for f in found]),
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| draws | cases | pool>1 | max fed by relu | relu->max>1 | all grads !=0 | all-zero "
          "| rejected | batch | width |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="cases per row (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="drawing seed (default 0)")
    args = parser.parse_args(argv)
    print(f"{args.n} cases per row, seed {args.seed}\n")
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for label, family, constraints in ROWS:
        print(row(label, family, args.n, args.seed, constraints), flush=True)


if __name__ == "__main__":
    main()
