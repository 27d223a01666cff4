"""Regenerate ``docs/performance.md``: every speed figure of the project against its anchor,
measured now, on this machine, with the thread settings stated.

    python -m benchmarks.performance [--repeats 5] [--out docs/performance.md]
                                     [--baseline-tree DIR] [--skip-run]

One thread per library (``pin(1)``, before JAX starts). Every comparison runs its contenders
in the same process, built once, warmed up and interleaved, and gives medians of
``--repeats`` rounds (``benchmarks/timing.py``), except where a section says otherwise. The
sections come from the benchmark modules, which print the same figures on their own:
``bench_reference`` (reference vs PyTorch), ``bench_fd`` (finite differences vs gradcheck and
check_grads; complex step vs Richardson), ``bench_directions`` (forward mode by directions vs
reverse mode), ``bench_check`` (``bo.check``'s harness share) and the default ``run``, cold and
warm, whose times the README quotes (``tests/backprop_oracle/test_docs.py`` checks they agree).
``--baseline-tree DIR`` (a package tree of another version, laid out as installed) adds that
version's default run and ``bo.check``, measured in the same session, and their ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from backprop_oracle.properties.campaign.threads import child_environment, pin, settings

ROOT = Path(__file__).resolve().parents[1]
RUN_MARK = "<!-- run seconds: cold {cold:.0f}, warm {warm:.0f} -->"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return "unknown"


def machine() -> str:
    import jax
    import numpy as np
    import torch

    threads = settings()
    lines = ["## Machine and settings", "",
             f"- Measured on {date.today().isoformat()}: {_cpu()}, {os.cpu_count()} cores, "
             f"{_memory()} memory, {platform.platform()}.",
             f"- Python {platform.python_version()}, NumPy {np.__version__}, "
             f"PyTorch {torch.__version__}, JAX {jax.__version__}.",
             "- Threads: one per library in this process (" + ", ".join(
                 f"{k} = {v}" for k, v in threads.items()) + ")."]
    return "\n".join(lines)


def _table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def reference_section(repeats: int) -> str:
    from .bench_reference import measure

    rows = measure(max(repeats, 20))
    return "\n".join([
        "## The reference against PyTorch", "",
        "Forward and backward of one batch (`bo.backprop` against `torch.autograd.grad`), "
        f"the same arrays, medians of {max(repeats, 20)} interleaved rounds "
        "(`python -m benchmarks.bench_reference`).", "",
        _table(["network", "dtype", "reference", "PyTorch", "ratio", "target", "met"],
               [[r["network"], r["dtype"], f"{r['reference_ms']:.2f} ms",
                 f"{r['torch_ms']:.2f} ms", f"{r['ratio']:.2f}x", f"<= {r['target']:g}x",
                 _met(r["ratio"] <= r["target"])] for r in rows])])


def fd_section(repeats: int) -> str:
    from .bench_fd import BUGS, make_case, methods, times, verdicts

    size = "1e4"
    n = sum(v.size for v in make_case(size).params.values())
    t = times(size, repeats)
    cells = verdicts(size)
    slow = t["gradcheck slow"]
    rows = [[name, f"{t[name]:.3f} s", f"{slow / t[name]:.1f}x", *cells[name]] for name in t]
    parts = [
        "## Finite differences against gradcheck and check_grads", "",
        f"One check of an MLP with {n} parameters (float64; the correct gradient for the time, "
        f"medians of {repeats} interleaved checks after a warm-up, every checker built once; "
        "then each planted bug once; `python -m benchmarks.bench_fd --sizes 1e4`). Target: "
        "full FD >= 100x faster than gradcheck's slow mode.", "",
        _table(["checker", "time per check", "vs gradcheck slow", *BUGS], rows), "",
        "### Complex step against Richardson", "",
        "The whole FD oracle on the default draws whose path is analytic (both methods valid; "
        f"`auto` picks complex step there), medians of {repeats} interleaved rounds.", "",
        _table(["family", "dtype", "cases", "complex step", "Richardson",
                "complex step / Richardson", "auto picks"],
               [[r["family"], r["dtype"], str(r["cases"]), f"{r['complex_step']:.3f} s",
                 f"{r['richardson']:.3f} s", f"{r['complex_step'] / r['richardson']:.2f}",
                 r["auto"]] for r in methods(repeats)]),
    ]
    return "\n".join(parts)


def directions_section(repeats: int) -> str:
    from .bench_directions import cost_rows

    n = 4
    rows = cost_rows(repeats, n)
    return "\n".join([
        "## Forward mode by directions against reverse mode", "",
        f"`evaluate` per case ({n} default draws per family and dtype, medians of {repeats} "
        "interleaved rounds; `python -m benchmarks.bench_directions`). Target: forward mode "
        "<= 2x reverse mode.", "",
        _table(["framework", "family", "dtype", "reverse", "forward, 4 directions",
                "forward, whole basis", "directions / reverse", "met"],
               [[r["framework"], r["family"], r["dtype"], f"{r['reverse'] * 1e3:.1f} ms",
                 f"{r['directions'] * 1e3:.1f} ms", f"{r['basis'] * 1e3:.1f} ms",
                 f"{r['directions'] / r['reverse']:.2f}",
                 _met(r["directions"] / r["reverse"] <= 2)] for r in rows])])


def check_section(repeats: int, baseline: str | None) -> str:
    from .bench_check import measure

    rows = measure(repeats, 30, baseline)
    head = ["tree", "family", "cases per second", "harness share", "met (<= 50 %)"]
    if baseline:
        head.append("speed-up vs baseline (target >= 2x)")
    body = [[r["tree"], r["family"], f"{r['cases_per_s']:.1f}", f"{r['harness_share']:.0%}",
             _met(r["harness_share"] <= 0.5)]
            + ([] if not baseline else
               ["-" if r["speedup"] is None else f"{r['speedup']:.2f}x"]) for r in rows]
    return "\n".join([
        "## `bo.check` on a correct NumPy implementation", "",
        "30 cases each of mlp, cnn and softmax; the implementation is the reference itself; "
        "the harness is everything else (reference, error model, comparison, records). Each "
        f"tree in its own process, alternated, medians of {repeats} "
        "(`python -m benchmarks.bench_check`).", "", _table(head, body)])


def baseline_label(tree: str) -> str:
    """``tree`` and, where its files are links into a git checkout, that checkout's commit."""
    source = (Path(tree) / "backprop_oracle" / "cli.py").resolve().parent.parent
    done = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return f"commit {done.stdout.strip()}" if done.returncode == 0 else tree


def _timed_run(env: dict[str, str], out: Path) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "backprop_oracle.cli", "run", "--out", str(out)],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - start, done.returncode


def run_section(baseline: str | None) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "BO_COMPILE_CACHE": str(Path(tmp) / "cache")}
        for key in child_environment(1):  # what pin(1) set here: the run sets its own
            env.pop(key, None)
        rows = []
        if baseline:
            old_env = {**env, "PYTHONSAFEPATH": "1", "PYTHONPATH": baseline,
                       "BO_COMPILE_CACHE": str(Path(tmp) / "old-cache")}
            old, rc = _timed_run(old_env, Path(tmp) / "old")
            rows.append(["baseline tree, cold", f"{old:.0f} s", str(rc), "1.00"])
        cold, rc_cold = _timed_run(env, Path(tmp) / "cold")
        warm, rc_warm = _timed_run(env, Path(tmp) / "warm")
    ratio = (lambda t: f"{t / old:.2f}") if baseline else (lambda t: "-")
    rows += [["this tree, cold (empty JAX compilation cache)", f"{cold:.0f} s", str(rc_cold),
              ratio(cold)],
             ["this tree, warm (the cache the cold run left)", f"{warm:.0f} s", str(rc_warm),
              ratio(warm)]]
    return "\n".join([
        "## The default `run`", "",
        "`backprop-oracle run` on the embedded defaults (96 case-dtype units, every oracle, "
        "worker processes as many as the cores), one run each, timed from the outside "
        "(`bash benchmarks/bench_run.sh` does the same). Targets against the baseline: cold "
        "<= 0.5x, warm <= 0.25x.", "",
        _table(["run", "time", "exit code", "vs baseline"], rows), "",
        RUN_MARK.format(cold=cold, warm=warm)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--baseline-tree", default=None)
    parser.add_argument("--skip-run", action="store_true",
                        help="keep the default run's section from the existing file")
    args = parser.parse_args()
    pin(1)  # before JAX starts its backend
    started = time.perf_counter()
    sections = [machine()]
    for name, build in (("reference", lambda: reference_section(args.repeats)),
                        ("fd", lambda: fd_section(args.repeats)),
                        ("directions", lambda: directions_section(args.repeats)),
                        ("check", lambda: check_section(args.repeats, args.baseline_tree))):
        print(f"measuring: {name}", file=sys.stderr, flush=True)
        sections.append(build())
    if args.baseline_tree:
        sections.insert(1, f"Baseline where a table has one: {baseline_label(args.baseline_tree)}"
                           ", measured in the same session.")
    if args.skip_run and args.out.exists():
        old = args.out.read_text()
        sections.append("## The default `run`" + old.split("## The default `run`", 1)[1]
                        .split("\n## ", 1)[0].rstrip())
    else:
        print("measuring: run", file=sys.stderr, flush=True)
        sections.append(run_section(args.baseline_tree))
    header = ("# Performance\n\nGenerated by `python -m benchmarks.performance` "
              f"({time.perf_counter() - started:.0f} s); do not edit by hand. Ratios are "
              "this project's time over the anchor's unless a column says otherwise.")
    args.out.write_text("\n\n".join([header, *sections]) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
