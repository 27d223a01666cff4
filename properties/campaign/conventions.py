"""What each implementation says at non-differentiable points, measured, not assumed:
ReLU'(0), leaky-ReLU'(0), and which cell of a fully tied 2x2 max-pool window receives the
gradient, in reverse and forward mode. Each is measured twice; ``stable`` says whether the
two measurements agree. The rows feed the report's conventions table."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...reference import activations, pooling

__all__ = [
    "measure", "reference_conventions", "TIED"
]

TIED = np.ones((1, 1, 2, 2))


def reference_conventions() -> dict[str, dict[str, object]]:
    z = np.zeros(1)
    index, _ = pooling.max_route(TIED, 2, 2)
    tie = np.zeros(4)
    tie[int(index.ravel()[0])] = 1.0
    same = {"relu'(0)": float(activations.relu_prime(z)[0]),
            "leaky_relu'(0)": float(activations.leaky_relu_prime(z)[0]),
            "maxpool_tie_grad": tie.tolist()}
    return {"reverse": same, "forward": same}


def _describe_tie(grad: list[float]) -> str:
    cells = [i for i, g in enumerate(grad) if g != 0]
    if len(cells) == 1:
        return f"all to cell {cells[0]} (row-major) {grad}"
    return f"split over cells {cells} {grad}"


def _measurers() -> dict[str, tuple[Callable[[str], dict], tuple[str, ...]]]:
    from ...oracles import jax_oracle, torch_oracle

    return {"reference": (lambda device: reference_conventions(), ("cpu",)),
            "torch": (torch_oracle.conventions, ("cpu", "cuda")),
            "jax": (jax_oracle.conventions, ("cpu", "gpu"))}


def _available(framework: str, device: str) -> str | None:
    from ...oracles import registry

    return None if framework == "reference" else registry.make(framework).available(device)


def measure(devices: tuple[str, ...] = ("cpu",)) -> list[dict[str, object]]:
    """Rows ``{framework, device, mode, what, observed, stable}``; a framework or device
    that is absent gives one row saying so."""
    from ...oracles.base import device_choices, is_accelerator

    rows: list[dict[str, object]] = []
    for framework, (measure_on, known) in _measurers().items():
        # cuda and gpu are one accelerator choice: known[1] is this framework's name for it
        own = [known[-1] if is_accelerator(d) else d for d in device_choices(devices)]
        for device in (d for d in own if d in known):
            reason = _available(framework, device)
            if reason:
                rows.append({"framework": framework, "device": device, "mode": "-",
                             "what": "-", "observed": f"skipped: {reason}", "stable": "-"})
                continue
            first, second = measure_on(device), measure_on(device)
            for mode, values in first.items():
                for what, value in values.items():
                    shown = _describe_tie(value) if what == "maxpool_tie_grad" else f"{value:g}"
                    rows.append({"framework": framework, "device": device, "mode": mode,
                                 "what": what, "observed": shown,
                                 "stable": "yes" if second[mode][what] == value else "NO"})
    return rows
