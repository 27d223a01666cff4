"""Helpers of ``benchmarks/gpu_measure.sh``; each subcommand is one step of it.

    python benchmarks/gpu_tables.py env OUT/environment.json
        versions, nvidia-smi, CUDA / JAX devices, every oracle's effective precision
        switches per device, and a smoke run of each oracle, device, precision and mode on
        two tiny cases: an API that changed between library versions shows up here as an
        error with its traceback, not as a crash of the measurement;
    python benchmarks/gpu_tables.py merge-run INTO PART...
        the records of several ``backprop-oracle run`` output directories (the script runs
        one per family and dtype, in parallel) into one directory, and the project's own
        summary (``summary.md``, ``summary.json``, ``report.html``) built from them;
    python benchmarks/gpu_tables.py tables WORK OUT
        ``OUT/tables.md`` (the tables for ``docs/gpu.md``) and ``OUT/raw.json`` (the figures
        behind them) from what the steps left in ``WORK``.

Everything here tolerates missing inputs (a step that failed or was cut off): the table says
what is missing and why.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ACCELERATOR = {"torch": "cuda", "jax": "gpu"}
U32, TF32_U = 2.0**-24, 2.0**-11


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%H:%M:%S")


def error_text(exc: BaseException) -> dict:
    return {"error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(type(exc), exc,
                                                            exc.__traceback__))[-3000:]}


# --- env --------------------------------------------------------------------------------------


def _sh(command: list[str], timeout: float = 30) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
        return (done.stdout + done.stderr).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _packages() -> dict[str, str]:
    from importlib import metadata

    wanted = ("torch", "jax", "jaxlib", "numpy", "hypothesis", "optax", "pytest", "scipy",
              "backprop-oracle", "setuptools", "pytest-xdist", "nvidia-cudnn", "nvidia-cublas",
              "nvidia-cuda-runtime", "triton")
    found = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(wanted) or name.startswith("jax"):
            found[name] = dist.version
    return dict(sorted(found.items()))


def _try(fn, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:
        return error_text(exc)["error"]


def _torch_info() -> dict:
    import torch

    info: dict[str, Any] = {"version": torch.__version__, "cuda_build": torch.version.cuda,
                            "cuda_available": torch.cuda.is_available()}
    if info["cuda_available"]:
        info.update(device_count=torch.cuda.device_count(),
                    name=torch.cuda.get_device_name(0),
                    capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                    cudnn=_try(torch.backends.cudnn.version))
    b = torch.backends
    info["float32_matmul_precision"] = _try(torch.get_float32_matmul_precision)
    for label, get in (
            ("backends.fp32_precision", lambda: b.fp32_precision),
            ("cuda.matmul.fp32_precision", lambda: b.cuda.matmul.fp32_precision),
            ("cudnn.fp32_precision", lambda: b.cudnn.fp32_precision),
            ("cudnn.conv.fp32_precision", lambda: b.cudnn.conv.fp32_precision),
            ("mkldnn.matmul.fp32_precision", lambda: b.mkldnn.matmul.fp32_precision),
            ("cudnn.benchmark", lambda: b.cudnn.benchmark),
            ("deterministic_algorithms", torch.are_deterministic_algorithms_enabled)):
        info[f"out_of_the_box {label}"] = _try(get)
    return info


def _jax_info() -> dict:
    import jax
    import jaxlib

    info: dict[str, Any] = {"version": jax.__version__, "jaxlib": jaxlib.__version__,
                            "default_backend": _try(jax.default_backend),
                            "devices": _try(lambda: [f"{d.platform}:{d.device_kind}"
                                                     for d in jax.devices()]),
                            "gpu_devices": _try(lambda: [str(d) for d in jax.devices("gpu")])}
    for name in ("jax_enable_x64", "jax_default_matmul_precision"):
        info[f"config.{name}"] = _try(lambda n=name: getattr(jax.config, n))
    return info


def _oracles() -> list[tuple[str, Any]]:
    found = []
    for framework, module, cls in (("torch", "torch_oracle", "TorchOracle"),
                                   ("jax", "jax_oracle", "JaxOracle")):
        try:
            found.append((framework, getattr(importlib.import_module(
                f"backprop_oracle.oracles.{module}"), cls)))
        except Exception as exc:
            print(f"cannot import the {framework} oracle: {exc}")
    return found


def _smoke_cases() -> list:
    from backprop_oracle.properties.cases.strategies import cases as draw
    small = {"max_width": 6, "max_batch": 3, "max_layers": 2, "max_image": 5}
    return [c for family in ("mlp", "cnn")
            for c in draw(family, 1, 0, dtypes=["float32"], **small)]


def cmd_env(out: Path) -> int:
    start = time.perf_counter()
    env: dict[str, Any] = {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "nvidia_smi": _sh(["nvidia-smi"]),
        "nvidia_smi_query": _sh(["nvidia-smi", ("--query-gpu=name,driver_version,memory.total,"
                                                "compute_cap,clocks.max.sm,power.limit"),
                                 "--format=csv"]),
        "env": {k: os.environ.get(k) for k in (
            "XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE", "CUBLAS_WORKSPACE_CONFIG",
            "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "CUDA_VISIBLE_DEVICES",
            "JAX_PLATFORMS", "JAX_ENABLE_X64", "JAX_DEFAULT_MATMUL_PRECISION",
            "OMP_NUM_THREADS", "BO_PROFILE", "PYTHONPATH")},
        "packages": _try(_packages)}
    print(f"[{now()}] env: packages {env['packages']}")
    for name, fn in (("torch", _torch_info), ("jax", _jax_info)):
        try:
            env[name] = fn()
        except Exception as exc:
            env[name] = error_text(exc)
        print(f"[{now()}] env: {name} {json.dumps(env[name], default=str)[:600]}")
    from backprop_oracle.properties.comparison.compare import compare
    from backprop_oracle.reference import backprop

    cases = _smoke_cases()
    settings: dict[str, Any] = {}
    smoke: list[dict] = []
    for framework, Oracle in _oracles():
        for device in ("cpu", ACCELERATOR[framework]):
            for precision in ("strict", "default"):
                label = f"{framework}/{precision} on {device}"
                probe = Oracle(mode="reverse", precision=precision)
                reason = _try(probe.available, device)
                if reason:
                    settings[label] = {"skipped": reason}
                    smoke.append({"oracle": label, "status": "skipped", "detail": reason})
                    continue
                try:
                    settings[label] = probe.settings(device)
                except Exception as exc:
                    settings[label] = error_text(exc)
                for mode in ("reverse", "forward"):
                    oracle = Oracle(mode=mode, precision=precision)
                    for case in cases:
                        entry = {"oracle": f"{framework}/{mode}/{precision} on {device}",
                                 "case": case.case_id, "family": case.family}
                        t = time.perf_counter()
                        try:
                            result = oracle.run(case, device, case.dtype)
                            records = compare(case, backprop(case), result, oracle=framework,
                                              mode=mode, device=device, dtype=case.dtype)
                            verdicts = Counter(r.verdict for r in records)
                            entry.update(status="ok" if set(verdicts) <= {"agree", "kink"}
                                         else "disagrees", verdicts=dict(verdicts),
                                         max_margin=max((r.margin for r in records),
                                                        default=0.0),
                                         switches=result.meta.get("switches"),
                                         nondeterministic_ops=result.meta.get(
                                             "nondeterministic_ops"))
                        except Exception as exc:
                            entry.update(status="error", **error_text(exc))
                        entry["seconds"] = round(time.perf_counter() - t, 3)
                        smoke.append(entry)
                        print(f"[{now()}] smoke {entry['oracle']} {entry['family']}: "
                              f"{entry['status']} {entry.get('error', '')} "
                              f"({entry['seconds']} s)")
    env["oracle_settings"] = settings
    env["smoke"] = smoke
    env["seconds"] = round(time.perf_counter() - start, 1)
    out.write_text(json.dumps(env, indent=1, default=str))
    bad = [s for s in smoke if s["status"] in ("error", "disagrees")]
    print(f"[{now()}] env: wrote {out}; smoke: {len(smoke)} runs, {len(bad)} bad; "
          f"{env['seconds']} s")
    return 0


# --- merge-run --------------------------------------------------------------------------------


def cmd_merge_run(into: Path, parts: list[Path]) -> int:
    parts = [p for p in parts if (p / "records.jsonl").is_file()]
    if not parts:
        print("merge-run: no records.jsonl in any part")
        return 1
    into.mkdir(parents=True, exist_ok=True)
    interrupted = []
    with open(into / "records.jsonl", "w") as merged:
        for part in parts:
            text = (part / "records.jsonl").read_text()
            merged.write(text if text.endswith("\n") or not text else text + "\n")
            summary = part / "summary.json"
            done = json.loads(summary.read_text()) if summary.is_file() else None
            if done is None or done.get("interrupted"):
                interrupted.append(part.name)
    env = {}
    for part in parts:
        if (part / "environment.json").is_file():
            env = json.loads((part / "environment.json").read_text())
            break
    env["merged_from"] = ", ".join(p.name for p in parts)
    env["cut_short"] = ", ".join(interrupted) or "none"
    (into / "environment.json").write_text(json.dumps(env, indent=1))
    for part in parts:
        if (part / "conventions.json").is_file():
            shutil.copy(part / "conventions.json", into / "conventions.json")
            break
    from backprop_oracle.properties.campaign.output import finish
    summary = finish(into, interrupted=bool(interrupted))
    print(f"[{now()}] merge-run: {len(parts)} parts, {summary.n_records} records, "
          f"{len(summary.cases)} cases; cut short: {env['cut_short']}")
    return 0


# --- tables -----------------------------------------------------------------------------------


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _records(path: Path) -> list[dict]:
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass  # a line cut by a kill
    except OSError:
        pass
    return out


def _num(x: Any, fmt: str = ".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, fmt)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _table(head: list[str], rows: Iterable[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


def steps_section(work: Path) -> tuple[str, list[dict]]:
    steps = []
    try:
        for line in (work / "steps.tsv").read_text().splitlines():
            name, rc, seconds, limit, *note = line.split("\t")
            steps.append({"step": name, "rc": rc, "seconds": seconds, "timeout": limit,
                          "status": note[0] if note else ""})
    except OSError:
        pass
    text = _table(["step", "status", "rc", "seconds", "timeout s"],
                  [[s["step"], s["status"], s["rc"], s["seconds"], s["timeout"]]
                   for s in steps])
    return text, steps


def _reason(record: dict) -> str:
    detail = record.get("detail")
    return str(detail.get("reason", detail)) if isinstance(detail, dict) else str(detail)


def _cell(recs: list[dict]) -> str:
    tensors = [r for r in recs if r.get("quantity") not in ("skip", "run")]
    runs = [r for r in recs if r.get("quantity") == "run"]
    skips = [r for r in recs if r.get("quantity") == "skip"]
    if not tensors and not runs:
        return "skipped" if skips else "-"
    counts = Counter(r.get("verdict") for r in tensors + runs)
    bad = ", ".join(f"{counts[v]} {v}" for v in ("diverge", "nan", "oracle_error",
                                                   "unsupported", "kink") if counts[v])
    worst = max((r.get("margin") or 0.0 for r in tensors), default=0.0)
    return f"{counts['agree']}/{len(tensors) + len(runs)}{' (' + bad + ')' if bad else ''}" \
           f" max {_num(worst)}"


def matrix_section(records: list[dict]) -> tuple[str, list[dict]]:
    """Per family, framework, mode, dtype: CPU and accelerator, strict and default."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r.get("family"), r.get("oracle"), r.get("mode"), r.get("dtype"),
                r.get("precision"), r.get("device"))].append(r)
    rows, raw = [], []
    keys = sorted({k[:4] for k in groups if k[1] in ACCELERATOR})
    for family, oracle, mode, dtype in keys:
        accel = ACCELERATOR[oracle]
        cells = []
        for precision in ("strict", "default"):
            for device in ("cpu", accel):
                recs = groups.get((family, oracle, mode, dtype, precision, device), [])
                cells.append(_cell(recs))
                tensors = [r for r in recs if r.get("quantity") not in ("skip", "run")]
                raw.append({"family": family, "oracle": oracle, "mode": mode, "dtype": dtype,
                            "precision": precision, "device": device,
                            "tensors": len(tensors),
                            "verdicts": dict(Counter(r.get("verdict") for r in recs
                                                     if r.get("quantity") != "skip")),
                            "worst_margin": max((r.get("margin") or 0.0 for r in tensors),
                                                default=None),
                            "skipped": sorted({_reason(r) for r in recs
                                               if r.get("quantity") == "skip"})})
        rows.append([family, oracle, mode, dtype, *cells])
    head = ["family", "oracle", "mode", "dtype", "strict cpu", "strict cuda/gpu",
            "default cpu", "default cuda/gpu"]
    skips = sorted({f"{r.get('oracle')} on {r.get('device')}: {_reason(r)}"
                    for r in records if r.get("quantity") == "skip"
                    and ACCELERATOR.get(r.get("oracle")) == r.get("device")})
    text = ("Cells: tensors that agree / tensors compared (other verdicts), largest "
            "error/tolerance. Each framework on the accelerator and on the CPU is compared "
            "with the NumPy reference (CPU) under the same error model.\n\n")
    text += _table(head, rows) + "".join(f"\n- skipped {s}" for s in skips)
    text += "\n" if skips else ""
    return text, raw


def _share(margins: list[float], factor: float = 1.0) -> float | None:
    """The share of ``margins`` above 1 once multiplied by ``factor``."""
    return sum(m * factor > 1 for m in margins) / len(margins) if margins else None


def run_tf32_section(records: list[dict]) -> tuple[str, list[dict]]:
    """float32 tensors of ``run`` (grad and delta): beyond the strict tolerance, and beyond
    the TF32 bound. Both tolerances of a record differ by a constant factor when the FD error
    is 0 (frameworks against the reference) and the underflow floor is negligible, so the
    margin under the TF32 bound is ``margin * 2u / (u_tf32 + u)`` and the roundoff the
    error model would need is ``u_needed = margin * 2u`` (u = 2^-24): exact at the worst
    element, which stays the worst."""
    scale = 2 * U32 / (TF32_U + U32)
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        if (r.get("dtype") == "float32" and r.get("quantity") in ("grad", "delta")
                and r.get("oracle") in ACCELERATOR and r.get("margin") is not None):
            groups[(r["family"], r["oracle"], r["mode"], r["precision"], r["device"])].append(
                float(r["margin"]))
    rows, raw = [], []
    keys = sorted({k[:3] for k in groups})
    for family, oracle, mode in keys:
        accel = ACCELERATOR[oracle]
        d = groups.get((family, oracle, mode, "default", accel), [])
        s = groups.get((family, oracle, mode, "strict", accel), [])
        c = groups.get((family, oracle, mode, "default", "cpu"), [])
        logs = [math.log2(m * 2 * U32) for m in d if m > 0]
        entry = {"family": family, "oracle": oracle, "mode": mode, "device": accel,
                 "tensors_default": len(d), "beyond_strict_default": _share(d),
                 "beyond_tf32_bound_default": _share(d, scale),
                 "median_log2_u_needed": _quantile(logs, 0.5),
                 "max_log2_u_needed": max(logs, default=None),
                 "tensors_strict": len(s), "beyond_strict_strict": _share(s),
                 "tensors_cpu_default": len(c), "beyond_strict_cpu_default": _share(c)}
        raw.append(entry)
        rows.append([family, oracle, mode, entry["tensors_default"],
                     _pct(entry["beyond_strict_default"]),
                     _pct(entry["beyond_tf32_bound_default"]),
                     _num(entry["median_log2_u_needed"], ".1f"),
                     _num(entry["max_log2_u_needed"], ".1f"),
                     _pct(entry["beyond_strict_strict"]),
                     _pct(entry["beyond_strict_cpu_default"])])
    if not any(entry["tensors_default"] for entry in raw):
        return ("No float32 `default` records on an accelerator (skipped: see section 1).\n",
                raw)
    head = ["family", "oracle", "mode", "tensors (default, accel)", "beyond strict tol",
            "beyond TF32 bound", "median log2 u_needed", "max log2 u_needed",
            "strict precision: beyond strict tol", "default on cpu: beyond strict tol"]
    text = ("From the `run` records, float32, grad and delta tensors. `u_needed` = "
            "error/tolerance x 2^-23: the u_actual + u_expected the error model would need "
            "(float32's own is 2^-23 = log2 -23; TF32 inputs give about 2^-11). The TF32 bound "
            "re-runs the error model with u_actual = 2^-11 for every rounding (an upper bound: "
            "lenient).\n\n" + _table(head, rows))
    return text, raw


def figures_tf32_section(fig: dict | None) -> str:
    if not fig or not fig.get("tf32"):
        return "No per-element TF32 figures (the figures step did not produce them).\n"
    rows = [[r["framework"], r["device"], r["family"], r["precision"], r["tensors"],
             _pct(r["beyond_strict"]), _pct(r["beyond_tf32_est"]), _pct(r["beyond_tf32_bound"]),
             _pct(r["explained_by_est"]), _pct(r["explained_by_bound"]),
             _num(r["max_strict"]), _num(r["max_log2_u_needed"], ".1f")]
            for r in fig["tf32"]]
    head = ["framework", "device", "family", "precision", "tensors", "beyond strict",
            "beyond TF32 est", "beyond TF32 bound", "of those beyond strict: within est",
            "within bound", "max err/tol (strict)", "max log2 u_needed"]
    return ("From `gpu_figures.py` (reverse mode, float32), per element. TF32 est = strict "
            "tolerance + kappa x 2 x 2^-11 x S x M (S = 2 x matmul/conv layers, M = the error "
            "model's magnitude of the terms): each matmul/conv input rounded to TF32; TF32 bound "
            "= error model with u_actual = 2^-11 everywhere (lenient upper bound). See "
            "`tf32_note` in raw.json.\n\n" + _table(head, rows))


def spread_section(fig: dict | None, det: dict | None) -> tuple[str, list[dict]]:
    plain = {(r["framework"], r["device"], r["family"], r["dtype"], r["precision"]): r
             for r in (fig or {}).get("rows", [])}
    detr = {(r["framework"], r["device"], r["family"], r["dtype"], r["precision"]): r
            for r in (det or {}).get("rows", [])}
    keys = sorted(set(plain) | set(detr))
    rows, raw = [], []
    cpu_max = max((r["max_spread"] for k, r in plain.items() if k[1] == "cpu"), default=None)
    for key in keys:
        if key[1] == "cpu":
            continue
        p, d = plain.get(key), detr.get(key)
        raw.append({"key": list(key), "plain": p and {k: p[k] for k in (
            "max_spread", "max_spread_over_tol")}, "xla_det": d and {k: d[k] for k in (
                "max_spread", "max_spread_over_tol")}})
        rows.append([*key, _num(p and p["max_spread"]), _num(p and p["max_spread_over_tol"]),
                     _num(d and d["max_spread"]) if key[0] == "jax" else "n/a (torch)",
                     _num(d and d["max_spread_over_tol"]) if key[0] == "jax" else "n/a"])
    repeats = (fig or {}).get("config", {}).get("repeats")
    text = (f"Largest `max_i |r_i - r_0|` over {repeats} runs of the same case, per tensor; "
            "`/tol` divides by the strict tolerance. `XLA det` = "
            "`XLA_FLAGS=--xla_gpu_deterministic_ops=true` (JAX only; PyTorch strict uses "
            "deterministic algorithms anyway). On the CPU every spread: "
            f"{_num(cpu_max)}.\n\n")
    if rows:
        text += _table(["framework", "device", "family", "dtype", "precision", "max spread",
                        "spread/tol", "max spread (XLA det)", "spread/tol (XLA det)"], rows)
    else:
        text += "No accelerator rows: " + "; ".join((fig or {}).get("skipped", [])
                                                   or ["figures step missing"]) + "\n"
    return text, raw


def timing_section(fig: dict | None) -> tuple[str, list[dict]]:
    rows_in = (fig or {}).get("timings", [])
    by = {(r["framework"], r["device"], r["family"], r["dtype"], r["precision"]): r
          for r in rows_in}
    rows, raw = [], []
    for (framework, device, family, dtype, precision), cpu in sorted(by.items()):
        if device != "cpu":
            continue
        acc = by.get((framework, ACCELERATOR[framework], family, dtype, precision))
        ratio = (acc["warm_median_s"] / cpu["warm_median_s"]
                 if acc and acc["warm_median_s"] and cpu["warm_median_s"] else None)
        raw.append({"framework": framework, "family": family, "dtype": dtype,
                    "precision": precision, "cpu": cpu, "accel": acc, "warm_ratio": ratio})
        rows.append([framework, family, dtype, precision, cpu["cases"],
                     _num(cpu["warm_median_s"] and 1e3 * cpu["warm_median_s"]),
                     _num(acc and acc["warm_median_s"] and 1e3 * acc["warm_median_s"]),
                     _num(ratio), _num(cpu["first_median_s"]),
                     _num(acc and acc["first_median_s"])])
    text = ("Seconds per `oracle.run` (reverse mode) from `gpu_figures.py`: `warm` = median "
            "over the repeats after the first run of each case, in ms; `first` = median over "
            "cases of the first run, in s (JAX compiles there, one function per architecture, "
            "precision and device). Measured alone (no other step running).\n\n")
    return text + _table(["framework", "family", "dtype", "precision", "cases", "cpu warm ms",
                          "gpu warm ms", "gpu/cpu", "cpu first s", "gpu first s"], rows), raw


def run_timing_section(records: list[dict]) -> tuple[str, list[dict]]:
    """Median seconds per case and oracle from the ``seconds`` of the run records, when
    they are per oracle (one evaluation: the run, JAX's compile included, and the
    comparison); older records carry one figure per case for all oracles together."""
    per: dict[tuple, dict[str, float]] = defaultdict(dict)
    by_case: dict[str, set] = defaultdict(set)
    for r in records:
        if r.get("quantity") in ("skip", None) or r.get("seconds") is None:
            continue
        key = (r["family"], r["oracle"], r["mode"], r["dtype"], r["device"])
        per[key].setdefault(f"{r['case_id']}/{r.get('precision')}", float(r["seconds"]))
        by_case[r["case_id"]].add(float(r["seconds"]))
    if not per or all(len(v) <= 1 for v in by_case.values()):
        return "The run records carry no per-oracle seconds.\n", []
    rows, raw = [], []
    for (family, oracle, mode, dtype, device), cpu in sorted(per.items()):
        if device != "cpu" or oracle not in ACCELERATOR:
            continue
        acc = per.get((family, oracle, mode, dtype, ACCELERATOR[oracle]), {})
        c, a = _quantile(list(cpu.values()), 0.5), _quantile(list(acc.values()), 0.5)
        raw.append({"family": family, "oracle": oracle, "mode": mode, "dtype": dtype,
                    "cpu_median_s": c, "accel_median_s": a, "n_cpu": len(cpu),
                    "n_accel": len(acc)})
        rows.append([family, oracle, mode, dtype, len(cpu), _num(c), _num(a),
                     _num(a / c if a and c else None)])
    text = ("From the `run` records (`seconds` per oracle evaluation: run + comparison, JAX's "
            "compile included; strict and default pooled; the run processes shared the "
            "machine).\n\n")
    return text + _table(["family", "oracle", "mode", "dtype", "evaluations", "cpu median s",
                          "gpu median s", "gpu/cpu"], rows), raw


def pytest_section(work: Path) -> tuple[str, dict]:
    info: dict[str, Any] = {}
    try:
        root = ET.parse(work / "pytest.xml").getroot()
    except (OSError, ET.ParseError) as exc:
        return f"No junit XML from the property suite ({exc}).\n", info
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for key in ("tests", "failures", "errors", "skipped", "time"):
        info[key] = sum(float(s.get(key, 0)) for s in suites)
    failed, skipped = [], Counter()
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        for child in case:
            if child.tag in ("failure", "error"):
                failed.append(f"{name}: {(child.get('message') or '').splitlines()[0][:300]}"
                              if child.get("message") else name)
            elif child.tag == "skipped":
                skipped[(child.get("message") or "")[:200]] += 1
    info["failed"], info["skip_reasons"] = failed, dict(skipped)
    summary = _json(work / "pytest" / "summary.json") or {}
    info["records"] = summary.get("records")
    info["record_verdicts"] = summary.get("verdicts")
    passed = info["tests"] - info["failures"] - info["errors"] - info["skipped"]
    text = (f"{int(info['tests'])} tests: {int(passed)} passed, {int(info['failures'])} failed, "
            f"{int(info['errors'])} errors, {int(info['skipped'])} skipped in "
            f"{info['time']:.0f} s; records: {info['records']} {info['record_verdicts']}\n")
    text += "".join(f"\n- FAILED {f}" for f in failed)
    text += "".join(f"\n- skipped x{n}: {m}" for m, n in skipped.most_common(8))
    return text + "\n", info


def cmd_tables(work: Path, out: Path) -> int:
    env = _json(out / "environment.json") or {}
    fig, det = _json(work / "figures.json"), _json(work / "figures-xla-det.json")
    records = _records(work / "run" / "records.jsonl")
    run_summary = _json(work / "run" / "summary.json")
    steps_text, steps = steps_section(work)
    torch_info, jax_info = env.get("torch") or {}, env.get("jax") or {}
    query = (env.get("nvidia_smi_query") or "").splitlines()
    gpu = (torch_info.get("name") or (query[-1] if len(query) > 1 else None)
           or f"none visible ({query[0] if query else 'no nvidia-smi'})")
    header = (f"Date (UTC): {env.get('date_utc')}; GPU: {gpu}; torch "
              f"{torch_info.get('version')} (CUDA {torch_info.get('cuda_build')}, available: "
              f"{torch_info.get('cuda_available')}); jax {jax_info.get('version')} (devices: "
              f"{jax_info.get('devices')}); python {env.get('python')}; XLA_FLAGS of the plain "
              f"steps: {(fig or {}).get('XLA_FLAGS')!r}.\n\n")
    parts = ["# GPU measurements\n\n", header, "## Steps\n\n", steps_text]
    smoke = env.get("smoke") or []
    bad = [s for s in smoke if s.get("status") in ("error", "disagrees")]
    parts.append(f"\nSmoke runs: {len(smoke)}, "
                 f"{sum(s.get('status') == 'ok' for s in smoke)} ok, "
                 f"{sum(s.get('status') == 'skipped' for s in smoke)} skipped, {len(bad)} bad"
                 + "".join(f"\n- {s['oracle']} {s.get('family')}: {s['status']} "
                           f"{s.get('error') or s.get('verdicts')}" for s in bad) + "\n")
    for label, value in (env.get("oracle_settings") or {}).items():
        if isinstance(value, dict) and "error" in value:
            parts.append(f"- settings of {label}: {value['error']}\n")
    n_cases = len({r.get("case_id") for r in records if r.get("quantity") != "skip"})
    matrix_text, matrix_raw = matrix_section(records)
    cut = (_json(work / "run" / "environment.json") or {}).get("cut_short")
    about = (f"{len(records)} records over {n_cases} cases (case x dtype); cut short: {cut}. "
             "The project's own summary is `run-summary.md`.\n\n")
    parts += ["\n## 1. Agreement matrix: accelerator against CPU (`backprop-oracle run`)\n\n",
              about, matrix_text]
    tf32_text, tf32_raw = run_tf32_section(records)
    parts += ["\n## 2. TF32: float32 `default` beyond the strict tolerance\n\n", tf32_text,
              "\n", figures_tf32_section(fig)]
    spread_text, spread_raw = spread_section(fig, det)
    parts += ["\n## 3. Spread over repeated runs\n\n", spread_text]
    timing_text, timing_raw = timing_section(fig)
    run_timing_text, run_timing_raw = run_timing_section(records)
    parts += ["\n## 4. Time per case, GPU against CPU\n\n", timing_text, "\n",
              run_timing_text]
    if fig:
        done = (f"{fig.get('units_done')}/{fig.get('units_planned')} case x dtype units "
                f"({fig.get('interrupted') or 'complete'}), {fig.get('seconds')} s.\n\n")
        parts += ["\n## 5. `gpu_figures.py` table (error/tolerance, spread, GPU vs CPU strict)\n\n",
                  done, _figures_markdown(fig)]
        for error in (fig.get("errors") or [])[:20]:
            parts.append(f"- error: {error}\n")
    pytest_text, pytest_raw = pytest_section(work)
    parts += ["\n## 6. Property suite on the GPU (`BO_PROFILE=gpu`, capped)\n\n", pytest_text]
    (out / "tables.md").write_text("".join(parts))
    raw = {"steps": steps, "matrix": matrix_raw, "run_tf32": tf32_raw, "spread": spread_raw,
           "timing": timing_raw, "run_timing": run_timing_raw, "pytest": pytest_raw,
           "run_summary": run_summary, "figures": fig, "figures_xla_det": det}
    (out / "raw.json").write_text(json.dumps(raw, indent=1, default=str))
    print(f"[{now()}] tables: wrote {out / 'tables.md'} and {out / 'raw.json'}")
    return 0


def _figures_markdown(fig: dict) -> str:
    try:
        from backprop_oracle.properties.campaign.device_study import markdown
        skipped = {}
        for s in fig.get("skipped", []):
            head, _, reason = s.partition(": ")
            framework, _, device = head.partition(" on ")
            skipped[(framework, device)] = reason
        return markdown(fig.get("rows", []), skipped)
    except Exception as exc:
        return f"(table not rendered: {exc})\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("env").add_argument("out", type=Path)
    merge = sub.add_parser("merge-run")
    merge.add_argument("into", type=Path)
    merge.add_argument("parts", type=Path, nargs="*")
    tables = sub.add_parser("tables")
    tables.add_argument("work", type=Path)
    tables.add_argument("out", type=Path)
    args = p.parse_args()
    if args.command == "env":
        return cmd_env(args.out)
    if args.command == "merge-run":
        return cmd_merge_run(args.into, args.parts)
    return cmd_tables(args.work, args.out)


if __name__ == "__main__":
    sys.exit(main())
