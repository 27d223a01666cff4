"""The figures of ``docs/gpu.md``: float32 default precision (TF32) against strict, per family,
as error/tolerance distributions; nondeterminism over repeated runs; GPU against CPU per
framework. Prints the environment and a markdown table, and writes them as JSON.

    python benchmarks/gpu_figures.py --cases 50 --repeats 10 --out gpu-figures.json

On a machine without a GPU the accelerator rows are skipped with their reason.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

from backprop_oracle.properties.campaign import versions
from backprop_oracle.properties.device_study import markdown, run_study


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default="mlp,cnn,softmax")
    p.add_argument("--cases", type=int, default=50, help="cases per family and dtype")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-width", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--out", type=Path, default=Path("gpu-figures.json"))
    args = p.parse_args()
    start = time.perf_counter()
    study = run_study(families=tuple(args.families.split(",")), n=args.cases, seed=args.seed,
                      repeats=args.repeats, max_width=args.max_width, max_batch=args.max_batch)
    rows = study.table()
    found = {"date": dt.date.today().isoformat(), "versions": versions(), "devices": devices(),
             "seconds": round(time.perf_counter() - start, 1), "rows": rows,
             "skipped": [f"{f} on {d}: {r}" for (f, d), r in sorted(study.skipped.items())],
             "errors": study.errors}
    args.out.write_text(json.dumps(found, indent=1))
    print(json.dumps({k: found[k] for k in ("date", "versions", "devices", "seconds")}, indent=1))
    print(markdown(rows, study.skipped))
    for error in study.errors:
        print("error:", error)


if __name__ == "__main__":
    main()
