"""What a user of a GPU most needs to know, measured per framework, family, dtype and precision:

* **error** — each tensor's error against the reference as ``error / tolerance`` (the margin
  of the comparison's error model), for ``strict`` precision (TF32 off, highest matmul
  precision, deterministic algorithms) and ``default`` (what the framework does out of the box:
  TF32 for float32 matmuls and convolutions on recent NVIDIA GPUs);
* **nondeterminism** — the same case run ``repeats`` times: the largest spread
  ``max_i |r_i - r_0|`` per tensor, in absolute terms and over the tolerance, kept apart from
  the error;
* **device agreement** — the framework on the accelerator against itself on the CPU, both
  ``strict``, under the same error model (both sides rounded in the case's dtype).

Runs anywhere: on a machine without a GPU the accelerator columns are skipped with the
oracle's reason, and the CPU columns still exercise every code path (there the spread must be
exactly zero). ``benchmarks/gpu_figures.py`` runs it and writes the tables of ``docs/gpu.md``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ...oracles import registry
from ...oracles.base import Oracle
from ...reference import backprop
from ...reference.case import Case
from ...reference.result import Result
from ..cases.strategies import cases as draw_cases
from ..comparison.compare import compare
from ..comparison.error_model import bounds
from ..comparison.evaluate import evaluate
from ..comparison.records import message

__all__ = [
    "ACCELERATOR", "markdown", "measure_case", "run_study", "spread", "Study"
]

ACCELERATOR = {"torch": "cuda", "jax": "gpu"}


def _oracle(framework: str, precision: str) -> Oracle:
    return registry.make(framework, "reverse", precision)


def _tensors(result: Result) -> dict[str, np.ndarray]:
    out = {f"grad/{k}": np.asarray(v, np.float64) for k, v in result.grads.items()}
    out.update({f"delta/{k}": np.asarray(v, np.float64) for k, v in result.deltas.items()})
    return out


def spread(runs: Sequence[Result]) -> dict[str, float]:
    """Per tensor, ``max_i max |r_i - r_0|`` over repeated runs of one case."""
    first = _tensors(runs[0])
    worst = {k: 0.0 for k in first}
    for run in runs[1:]:
        for k, v in _tensors(run).items():
            worst[k] = max(worst[k], float(np.max(np.abs(v - first[k]), initial=0.0)))
    return worst


@dataclass
class Study:
    """Margins per (framework, device, family, dtype, precision) and spreads."""

    margins: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(list))
    spreads: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(list))
    spread_over_tol: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(list))
    device_margins: dict[tuple, list[float]] = field(default_factory=lambda: defaultdict(list))
    skipped: dict[tuple, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def table(self) -> list[dict]:
        """One row per measured key: quantiles of error/tolerance, the share beyond 1 (what
        would be a ``diverge``), the largest spread, and the device agreement."""
        rows = []
        for key in sorted(self.margins):
            m = np.asarray(self.margins[key])
            framework, device, family, dtype, precision = key
            dev = self.device_margins.get((framework, family, dtype), [])
            rows.append({
                "framework": framework, "device": device, "family": family, "dtype": dtype,
                "precision": precision, "tensors": int(m.size),
                "median": float(np.median(m)), "p99": float(np.quantile(m, 0.99)),
                "max": float(m.max()), "beyond_tolerance": float(np.mean(m > 1)),
                "max_spread": max(self.spreads.get(key, [0.0])),
                "max_spread_over_tol": max(self.spread_over_tol.get(key, [0.0])),
                "gpu_vs_cpu_max_margin": max(dev) if dev and device != "cpu" else None})
        return rows


def measure_case(study: Study, case: Case, frameworks: Iterable[str], devices: Sequence[str],
                 precisions: Sequence[str], repeats: int) -> None:
    reference = backprop(case)
    model = bounds(case, reference)
    strict_cpu: dict[str, Result] = {}
    for framework in frameworks:
        for device in devices:
            mapped = "cpu" if device == "cpu" else ACCELERATOR[framework]
            for precision in precisions:
                key = (framework, mapped, case.family, case.dtype, precision)
                oracle = _oracle(framework, precision)
                records = evaluate(case, oracle, mapped, reference=reference, model=model)
                if records[0].quantity == "run":  # unavailable, or the oracle raised
                    if records[0].verdict == "unsupported":
                        study.skipped[(framework, mapped)] = message(records[0])
                    else:
                        study.errors.append(f"{key} case {case.case_id}: {message(records[0])}")
                    continue
                try:
                    runs = [oracle.run(case, mapped, case.dtype) for _ in range(repeats)]
                except Exception as exc:  # recorded; the study goes on
                    study.errors.append(f"{key} case {case.case_id}: {type(exc).__name__}: {exc}")
                    continue
                tol = {f"{r.quantity}/{r.name}": r.tolerance for r in records}
                study.margins[key] += [r.margin for r in records if r.quantity != "loss"]
                for name, s in spread(runs).items():
                    study.spreads[key].append(s)
                    study.spread_over_tol[key].append(s / tol[name] if tol.get(name) else 0.0)
                if precision != "strict":
                    continue
                if mapped == "cpu":
                    strict_cpu[framework] = runs[0]
                elif framework in strict_cpu:
                    vs_cpu = compare(case, strict_cpu[framework], runs[0], oracle=framework,
                                     mode="reverse", device=mapped, dtype=case.dtype,
                                     expected_dtype=case.dtype, model=model)
                    study.device_margins[(framework, case.family, case.dtype)] += [
                        r.margin for r in vs_cpu if r.quantity != "loss"]


def run_study(families: Sequence[str] = ("mlp", "cnn", "softmax"), n: int = 20, seed: int = 0,
              frameworks: Sequence[str] = ("torch", "jax"),
              devices: Sequence[str] = ("cpu", "gpu"),
              precisions: Sequence[str] = ("strict", "default"),
              dtypes: Sequence[str] = ("float32", "float64"), repeats: int = 10,
              **constraints: object) -> Study:
    """Measure ``n`` cases per family in each dtype. ``devices``: ``cpu`` and/or ``gpu``
    (the accelerator of each framework: ``cuda`` for PyTorch, ``gpu`` for JAX)."""
    study = Study()
    for family in families:
        for case in draw_cases(family, n, seed, dtypes=list(dtypes), **constraints):
            for dtype in dtypes:
                measure_case(study, case.astype(dtype), frameworks, devices, precisions,
                             repeats)
    return study


def _optional(value: float | None) -> str:
    return "-" if value is None else format(value, ".3g")


def markdown(rows: Sequence[dict], skipped: dict[tuple, str]) -> str:
    """The table of ``docs/gpu.md``."""
    head = ("| framework | device | family | dtype | precision | tensors | median err/tol "
            "| p99 | max | share > 1 | max spread | spread/tol | GPU vs CPU max err/tol |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['framework']} | {r['device']} | {r['family']} | {r['dtype']} | "
        f"{r['precision']} | {r['tensors']} | {r['median']:.3g} | {r['p99']:.3g} | "
        f"{r['max']:.3g} | {r['beyond_tolerance']:.1%} | {r['max_spread']:.3g} | "
        f"{r['max_spread_over_tol']:.3g} | "
        f"{_optional(r['gpu_vs_cpu_max_margin'])} |\n"
        for r in rows)
    skips = "".join(f"- skipped {framework} on {device}: {reason}\n"
                    for (framework, device), reason in sorted(skipped.items()))
    return head + body + ("\n" + skips if skips else "")
