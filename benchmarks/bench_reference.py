"""Reference forward+backward time against PyTorch CPU: same shapes, same arrays, same
process, one thread each, float32 and float64, interleaved after a warm-up (medians).

    python -m benchmarks.bench_reference [--repeats 20]

Networks:
- MLP 784-256-128-10 at batch 64 (sigmoid hidden layers, softmax cross-entropy);
- small CNN: 1x28x28 -> conv 8@3x3 -> relu -> maxpool 2 -> dense 10 at batch 32 (quadratic);
- big CNN: 3x32x32 -> conv 16@3x3 -> relu -> maxpool 2 -> conv 32@3x3 -> relu -> maxpool 2
  -> dense 10 at batch 64 (softmax cross-entropy).

Targets (reference / PyTorch): MLP <= 2x and CNN <= 4x (issue 2); the small CNN <= 1.2x
(issue 17).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

import backprop_oracle as bo
from backprop_oracle.properties.campaign.threads import pin
from backprop_oracle.reference.case import layer_kind
from backprop_oracle.reference.init import init_params

from .timing import interleaved


class Net(NamedTuple):
    name: str
    case: bo.Case  # float64; cast per dtype
    target: float


def mlp_case(rng: np.random.Generator) -> bo.Case:
    layers = (bo.dense(256, "sigmoid"), bo.dense(128, "sigmoid"), bo.dense(10, "identity"))
    return bo.Case(family="mlp", layers=layers, cost="softmax_cross_entropy",
                   params=init_params(layers, (784,), rng), x=rng.normal(size=(64, 784)),
                   y=np.eye(10)[rng.integers(0, 10, 64)])


def cnn_case(rng: np.random.Generator) -> bo.Case:
    layers = (bo.conv2d(8, 3, activation="relu"), bo.maxpool(2), bo.flatten(),
              bo.dense(10, "identity"))
    return bo.Case(family="cnn", layers=layers, cost="quadratic",
                   params=init_params(layers, (1, 28, 28), rng),
                   x=rng.normal(size=(32, 1, 28, 28)), y=rng.normal(size=(32, 10)))


def big_cnn_case(rng: np.random.Generator) -> bo.Case:
    layers = (bo.conv2d(16, 3, activation="relu"), bo.maxpool(2),
              bo.conv2d(32, 3, activation="relu"), bo.maxpool(2), bo.flatten(),
              bo.dense(10, "identity"))
    return bo.Case(family="cnn", layers=layers, cost="softmax_cross_entropy",
                   params=init_params(layers, (3, 32, 32), rng),
                   x=rng.normal(size=(64, 3, 32, 32)), y=np.eye(10)[rng.integers(0, 10, 64)])


def networks(seed: int = 0) -> list[Net]:
    rng = np.random.default_rng(seed)
    return [Net("MLP 784-256-128-10, batch 64", mlp_case(rng), 2.0),
            Net("small CNN 1x28x28 c8 p2 d10, batch 32", cnn_case(rng), 1.2),
            Net("big CNN 3x32x32 c16 p2 c32 p2 d10, batch 64", big_cnn_case(rng), 4.0)]


def torch_step(case: bo.Case) -> Callable[[], object]:
    """PyTorch's forward + backward of the same network (the layer types used above)."""
    import torch
    import torch.nn.functional as F

    p = {k: torch.tensor(v, requires_grad=True) for k, v in case.params.items()}
    x, y = torch.tensor(case.x), torch.tensor(case.y)

    def step() -> object:
        a, n = x, 0
        for spec in case.layers:
            kind = layer_kind(spec)
            if kind in ("dense", "conv2d"):
                n += 1
                z = (F.linear(a, p[f"W{n}"], p[f"b{n}"]) if kind == "dense"
                     else F.conv2d(a, p[f"W{n}"], p[f"b{n}"]))
                a = {"sigmoid": torch.sigmoid, "relu": torch.relu,
                     "identity": lambda t: t}[spec.activation](z)
            elif kind == "maxpool":
                a = F.max_pool2d(a, spec.size, spec.stride)
            elif kind == "flatten":
                a = a.flatten(1)
        if case.cost == "quadratic":
            loss = 0.5 * ((a - y) ** 2).sum(dim=1).mean()
        else:
            loss = -(y * F.log_softmax(a, dim=1)).sum(dim=1).mean()
        return torch.autograd.grad(loss, list(p.values()))

    return step


def measure(repeats: int = 20, seed: int = 0) -> list[dict]:
    """One row per network and dtype: reference and PyTorch medians (ms) and their ratio."""
    pin(1)
    rows = []
    for net in networks(seed):
        for dtype in ("float32", "float64"):
            case = net.case.astype(dtype)
            t = interleaved({"reference": lambda case=case: bo.backprop(case),
                             "torch": torch_step(case)}, repeats)
            rows.append({"network": net.name, "dtype": dtype, "reference_ms": t["reference"] * 1e3,
                         "torch_ms": t["torch"] * 1e3, "ratio": t["reference"] / t["torch"],
                         "target": net.target})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    import torch

    print(f"numpy {np.__version__}, torch {torch.__version__}, 1 thread each, medians of "
          f"{args.repeats} interleaved repeats")
    print(f"{'network':<46}{'dtype':>9}{'reference ms':>14}{'torch ms':>10}{'ratio':>8}"
          f"{'target':>8}")
    for r in measure(args.repeats):
        print(f"{r['network']:<46}{r['dtype']:>9}{r['reference_ms']:>14.2f}{r['torch_ms']:>10.2f}"
              f"{r['ratio']:>8.2f}{r['target']:>7.1f}x")


if __name__ == "__main__":
    main()
