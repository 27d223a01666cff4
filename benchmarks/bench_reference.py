"""Reference forward+backward time against PyTorch CPU, float64, same shapes, same process.

    python benchmarks/bench_reference.py [--repeat 50]

Cases (issue 2): an MLP 784-256-128-10 at batch 64 (sigmoid hidden layers, softmax
cross-entropy) and a CNN 1x28x28 -> conv 8@3x3 -> relu -> maxpool 2 -> dense 10 at batch 32
(quadratic). Prints the median of ``--repeat`` timed runs for each and the ratio
reference / PyTorch. Targets: <= 2x on the MLP, <= 4x on the CNN.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

import backprop_oracle as bo
from backprop_oracle.reference.init import init_params


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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


def torch_mlp(case: bo.Case) -> Callable[[], object]:
    p = {k: torch.tensor(v, requires_grad=True) for k, v in case.params.items()}
    x, y = torch.tensor(case.x), torch.tensor(case.y)

    def step() -> object:
        a = torch.sigmoid(F.linear(x, p["W1"], p["b1"]))
        a = torch.sigmoid(F.linear(a, p["W2"], p["b2"]))
        z = F.linear(a, p["W3"], p["b3"])
        loss = -(y * F.log_softmax(z, dim=1)).sum(dim=1).mean()
        return torch.autograd.grad(loss, list(p.values()))

    return step


def torch_cnn(case: bo.Case) -> Callable[[], object]:
    p = {k: torch.tensor(v, requires_grad=True) for k, v in case.params.items()}
    x, y = torch.tensor(case.x), torch.tensor(case.y)

    def step() -> object:
        a = F.max_pool2d(torch.relu(F.conv2d(x, p["W1"], p["b1"])), 2)
        z = F.linear(a.flatten(1), p["W2"], p["b2"])
        loss = 0.5 * ((z - y) ** 2).sum(dim=1).mean()
        return torch.autograd.grad(loss, list(p.values()))

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'case':<34}{'reference ms':>14}{'torch ms':>10}{'ratio':>8}{'target':>8}")
    for name, case, build, target in (
        ("MLP 784-256-128-10, batch 64", mlp_case(rng), torch_mlp, 2.0),
        ("CNN 1x28x28 conv8@3x3 pool2 d10, b32", cnn_case(rng), torch_cnn, 4.0),
    ):
        ref = median_seconds(lambda case=case: bo.backprop(case), args.repeat)
        tch = median_seconds(build(case), args.repeat)
        print(f"{name:<34}{ref * 1e3:>14.2f}{tch * 1e3:>10.2f}{ref / tch:>8.2f}{target:>7.1f}x")


if __name__ == "__main__":
    main()
