"""The figures of ``docs/gpu.md``: float32 default precision (TF32) against strict, per family,
as error/tolerance distributions; nondeterminism over repeated runs; GPU against CPU per
framework; and, per element, whether a TF32-aware tolerance explains the float32 ``default``
errors; and the time per case on each device. Prints the environment and a markdown table,
and writes them as JSON.

    python benchmarks/gpu_figures.py --cases 50 --repeats 10 --out gpu-figures.json

On a machine without a GPU the accelerator rows are skipped with their reason. ``--budget``
stops drawing new cases once that many seconds have passed (SIGTERM and Ctrl-C stop at once);
either way the JSON of what was measured is written, with ``interrupted`` set.
``benchmarks/gpu_measure.sh`` runs it (twice: as is, and with
``XLA_FLAGS=--xla_gpu_deterministic_ops=true``); ``benchmarks/gpu_tables.py`` makes the tables.

The measurement itself is ``device_study.measure_case`` (one case, every framework, device
and precision, ``repeats`` runs); this script only wraps the oracles it builds to time each
run and to keep the first run's result for the per-element TF32 check below.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from backprop_oracle.properties.campaign import device_study
from backprop_oracle.properties.cases.strategies import cases as draw_cases
from backprop_oracle.properties.comparison.error_model import (
    KAPPA,
    bounds,
    tolerance,
    underflow_floor,
    unit_roundoff,
)
from backprop_oracle.properties.comparison.records import versions
from backprop_oracle.reference import backprop

TF32_U = 2.0**-11  # unit roundoff of TF32 (10 explicit mantissa bits): matmul/conv inputs


def devices() -> dict[str, str]:
    found = {}
    try:
        import torch

        found["torch cuda"] = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                               else "none")
    except ImportError:
        found["torch cuda"] = "torch not installed"
    try:
        import jax

        found["jax devices"] = ", ".join(d.device_kind for d in jax.devices())
    except ImportError:
        found["jax devices"] = "jax not installed"
    return found


# --- timing and first results: a wrapper around the oracles the study builds ----------------


class Timed:
    """Passes every call to ``inner``; records the seconds of each ``run`` and keeps the
    first result of each (framework, device, precision) of the current case."""

    def __init__(self, inner, framework: str, log: Log) -> None:
        self.inner, self.framework, self.log = inner, framework, log

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def run(self, case, device="cpu", dtype=None):
        start = time.perf_counter()
        result = self.inner.run(case, device, dtype)
        seconds = time.perf_counter() - start
        key = (self.framework, device, self.inner.precision)
        index = self.log.count[key]
        self.log.count[key] += 1
        self.log.times.append({"framework": self.framework, "device": device,
                               "precision": self.inner.precision, "family": case.family,
                               "dtype": dtype or case.dtype, "run": index,
                               "seconds": seconds})
        if index == 0:
            self.log.first[key] = result
        return result


class Log:
    def __init__(self) -> None:
        self.times: list[dict] = []
        self.tensors: list[dict] = []
        self.new_case()

    def new_case(self) -> None:
        self.count: dict[tuple, int] = defaultdict(int)
        self.first: dict[tuple, object] = {}


# --- the TF32-aware re-check ------------------------------------------------------------------


def matmul_stages(case) -> int:
    """Matmuls/convolutions a gradient's path can pass through: each Dense/Conv2d layer once
    forward and once backward (``W^T delta`` or the BP4 product). 0 for graphs (no matmul)."""
    return 2 * sum(type(spec).__name__ in ("Dense", "Conv2d") for spec in case.layers)


def tensors(result) -> dict[str, np.ndarray]:
    """``grad/<name>`` and ``delta/<name>`` in float64, as the study keys them."""
    out = {f"grad/{k}": np.asarray(v, np.float64) for k, v in result.grads.items()}
    out.update({f"delta/{k}": np.asarray(v, np.float64) for k, v in result.deltas.items()})
    return out


def tf32_check(log: Log, case, reference) -> None:
    """Per tensor of each first run of ``case``: the largest error/tolerance under three
    tolerances, and the unit roundoff the error model would need.

    * ``strict``: the comparison's own tolerance, ``kappa (u_a + u_e) E + floor``, with
      ``u_a = u_e = 2^-24`` for float32 (what ``compare`` applies; FD error is 0 here);
    * ``tf32_bound``: the same error model re-run with ``u_a = 2^-11`` (TF32) for *every*
      rounding of the framework's side. E is linear in u, so this is the strict E scaled.
      It is an upper bound on what TF32 can do (TF32 only rounds matmul/conv *inputs*; the
      accumulation, activations, and the dot products' length factor n stay at 2^-24), so
      it is lenient: an error it does not explain is not TF32;
    * ``tf32_est``: strict + ``kappa * 2 * 2^-11 * S * M``: each product of a matmul/conv
      has both inputs rounded to TF32, a relative error of at most ``2 * 2^-11`` of
      ``|a||b|``; ``M`` (the error model's magnitude of the terms behind the element,
      i.e. the backward pass on absolute values) bounds those products stage by stage, and
      ``S = matmul_stages(case)`` counts the stages. A first-order estimate: the forward
      TF32 error reaching the gradient through sigma'' and the cost is taken to be covered
      by the same ``M`` (it is for the residual ``a - y``, not exactly for sigma'').
    ``u_needed``: ``max_i (err_i - floor) / (kappa E_i)``, the (u_a + u_e) that would make
    the strict model fit exactly: 2^-23 is float32's own, about 2^-11 is TF32's.
    """
    if case.dtype != "float32" or not log.first:
        return
    b = bounds(case)
    u = unit_roundoff("float32")
    floor = underflow_floor(b, "float32", "float32", KAPPA)
    stages = matmul_stages(case)
    expected = tensors(reference)
    for (framework, device, precision), result in log.first.items():
        for name, a in tensors(result).items():
            key = name.split("/", 1)[1]
            e = expected.get(name)
            if e is None or key not in b.E or e.shape != a.shape:
                continue
            E, M = np.asarray(b.E[key], np.float64), np.asarray(b.M[key], np.float64)
            finite = np.isfinite(e) & np.isfinite(a)
            one_sided = bool(np.any(np.isfinite(e) != np.isfinite(a)))
            err = np.where(finite, np.abs(np.where(finite, a, 0) - np.where(finite, e, 0)), 0)
            strict = tolerance(E, u, u, 0.0, KAPPA, floor)
            bound = tolerance(E, TF32_U, u, 0.0, KAPPA, floor)
            est = strict + KAPPA * 2 * TF32_U * stages * M

            def worst(tol, err=err, one_sided=one_sided):
                with np.errstate(divide="ignore", invalid="ignore"):
                    r = np.where(tol > 0, err / tol, np.where(err > 0, np.inf, 0.0))
                return float("inf") if one_sided else float(np.max(r, initial=0.0))

            with np.errstate(divide="ignore", invalid="ignore"):
                need = np.where(E > 0, (err - floor) / (KAPPA * E), 0.0)
            log.tensors.append({
                "framework": framework, "device": device, "precision": precision,
                "family": case.family, "dtype": case.dtype, "case_id": case.case_id,
                "name": name, "strict": worst(strict), "tf32_est": worst(est),
                "tf32_bound": worst(bound),
                "u_needed": float(np.max(need, initial=0.0))})


def tf32_rows(tensors: list[dict]) -> list[dict]:
    """Per (framework, device, family, precision), float32: shares beyond each tolerance."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for t in tensors:
        groups[(t["framework"], t["device"], t["family"], t["precision"])].append(t)
    rows = []
    for (framework, device, family, precision), ts in sorted(groups.items()):
        beyond = [t for t in ts if t["strict"] > 1]
        need = np.array([t["u_needed"] for t in ts])
        logs = np.log2(need[need > 0]) if np.any(need > 0) else np.array([-np.inf])
        rows.append({
            "framework": framework, "device": device, "family": family, "dtype": "float32",
            "precision": precision, "tensors": len(ts),
            "beyond_strict": len(beyond) / len(ts),
            "beyond_tf32_est": float(np.mean([t["tf32_est"] > 1 for t in ts])),
            "beyond_tf32_bound": float(np.mean([t["tf32_bound"] > 1 for t in ts])),
            "explained_by_est": (float(np.mean([t["tf32_est"] <= 1 for t in beyond]))
                                 if beyond else None),
            "explained_by_bound": (float(np.mean([t["tf32_bound"] <= 1 for t in beyond]))
                                   if beyond else None),
            "max_strict": max(t["strict"] for t in ts),
            "max_tf32_est": max(t["tf32_est"] for t in ts),
            "median_log2_u_needed": float(np.median(logs)),
            "max_log2_u_needed": float(np.max(logs))})
    return rows


def timing_rows(times: list[dict]) -> list[dict]:
    """Seconds per ``oracle.run`` per (framework, device, family, dtype, precision): the
    first run of each case (JAX compiles there; the first CUDA call sets up the context) and
    the later repeats (warm)."""
    groups: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: {"first": [], "warm": []})
    for t in times:
        key = (t["framework"], t["device"], t["family"], t["dtype"], t["precision"])
        groups[key]["first" if t["run"] == 0 else "warm"].append(t["seconds"])
    rows = []
    for (framework, device, family, dtype, precision), g in sorted(groups.items()):
        rows.append({"framework": framework, "device": device, "family": family,
                     "dtype": dtype, "precision": precision, "cases": len(g["first"]),
                     "first_median_s": float(np.median(g["first"])) if g["first"] else None,
                     "warm_median_s": float(np.median(g["warm"])) if g["warm"] else None,
                     "warm_runs": len(g["warm"])})
    return rows


# --- the study --------------------------------------------------------------------------------


def _stop(signum, frame):
    raise KeyboardInterrupt


def measure(args: argparse.Namespace) -> dict:
    families = tuple(args.families.split(","))
    frameworks = tuple(args.frameworks.split(","))
    dtypes = tuple(args.dtypes.split(","))
    constraints = {"max_width": args.max_width, "max_batch": args.max_batch}
    study, log = device_study.Study(), Log()
    # the study builds its oracles with device_study._oracle (the seam its tests use too);
    # without it the study still runs, only the timings and the TF32 re-check are missing
    original = getattr(device_study, "_oracle", None)
    if original is None:
        print("gpu_figures: device_study has no _oracle: no timings, no TF32 re-check")
    else:
        device_study._oracle = lambda framework, precision: Timed(
            original(framework, precision), framework, log)
    drawn = {f: draw_cases(f, args.cases, args.seed, dtypes=list(dtypes), **constraints)
             for f in families}
    # round robin over the families, so that a budget cut leaves every family measured
    units = [(drawn[f][i], dtype) for i in range(args.cases) for f in families
             for dtype in dtypes if i < len(drawn[f])]
    start, done, interrupted = time.perf_counter(), 0, None
    try:
        for case, dtype in units:
            if args.budget and time.perf_counter() - start > args.budget:
                interrupted = f"budget of {args.budget:g} s spent"
                break
            unit_start = time.perf_counter()
            case = case.astype(dtype)
            log.new_case()
            device_study.measure_case(study, case, frameworks, tuple(args.devices.split(",")),
                                      tuple(args.precisions.split(",")), args.repeats)
            try:
                tf32_check(log, case, backprop(case))
            except Exception as exc:
                study.errors.append(f"tf32 check {case.case_id}: {type(exc).__name__}: {exc}")
            done += 1
            print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {done}/{len(units)} "
                  f"{case.family} {dtype} {case.case_id}: "
                  f"{time.perf_counter() - unit_start:.1f} s", flush=True)
    except KeyboardInterrupt:
        interrupted = "interrupted (SIGTERM or Ctrl-C)"
    finally:
        if original is not None:
            device_study._oracle = original
    return {"date": dt.date.today().isoformat(), "versions": versions(), "devices": devices(),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "units_done": done, "units_planned": len(units), "interrupted": interrupted,
            "seconds": round(time.perf_counter() - start, 1), "rows": study.table(),
            "skipped": [f"{f} on {d}: {r}" for (f, d), r in sorted(study.skipped.items())],
            "errors": study.errors, "timings": timing_rows(log.times),
            "tf32": tf32_rows(log.tensors), "tf32_tensors": log.tensors,
            "tf32_note": tf32_check.__doc__}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default="mlp,cnn,softmax")
    p.add_argument("--frameworks", default="torch,jax")
    p.add_argument("--devices", default="cpu,gpu",
                   help="cpu and/or gpu (the accelerator of each framework: cuda for PyTorch)")
    p.add_argument("--precisions", default="strict,default")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--cases", type=int, default=50, help="cases per family and dtype")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-width", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--budget", type=float, default=0,
                   help="seconds after which no new case starts (0: no limit)")
    p.add_argument("--out", type=Path, default=Path("gpu-figures.json"))
    args = p.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    found = measure(args)
    args.out.write_text(json.dumps(found, indent=1))
    print(json.dumps({k: found[k] for k in ("date", "versions", "devices", "seconds",
                                            "units_done", "units_planned", "interrupted")},
                     indent=1))
    print(device_study.markdown(found["rows"], {
        tuple(s.split(": ", 1)[0].split(" on ")): s.split(": ", 1)[1] for s in found["skipped"]}))
    for error in found["errors"]:
        print("error:", error)
    sys.exit(0)


if __name__ == "__main__":
    main()
