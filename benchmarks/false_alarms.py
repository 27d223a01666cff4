"""False-alarm campaign: many random cases of every family on correct implementations
(reference against finite differences, PyTorch and JAX), then the verdict counts and the
largest margin (error / tolerance) per (family, oracle, mode, dtype). The goal is zero
``diverge``; a margin near 1 shows where the error model is tight.

    python benchmarks/false_alarms.py --cases 2500 --seed 101 --oracles fd,torch \
        --max-width 16 --max-batch 8 --max-layers 4 --out /tmp/bo-false-alarms

``--cases`` is per family; every case runs in float32 and float64. ``--workers N`` runs the
cases on a local Dask cluster of N processes, as ``run --workers`` does. The records, a report and
``margins.json`` land in ``--out``; an interrupted campaign still summarises what finished.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

from backprop_oracle.properties.campaign import engine as campaign
from backprop_oracle.properties.campaign.output import finish
from backprop_oracle.properties.comparison.records import read_records


def margins(out: Path) -> dict:
    """Verdict counts and per-group maximum margin from ``out/records.jsonl``."""
    verdicts: Counter = Counter()
    worst: dict[str, float] = defaultdict(float)
    cases: set = set()
    for r in read_records(out / "records.jsonl"):
        if r.get("quantity") == "skip":
            continue
        verdicts[r["verdict"]] += 1
        cases.add((r.get("case_id"), r.get("dtype")))
        if r["verdict"] in ("agree", "diverge"):
            key = "/".join(str(r.get(k)) for k in ("family", "oracle", "mode", "dtype"))
            worst[key] = max(worst[key], float(r.get("margin") or 0.0))
    return {"case_dtype_units": len(cases), "verdicts": dict(verdicts),
            "max_margin": dict(sorted(worst.items()))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=250, help="cases per family")
    p.add_argument("--seed", type=int, default=101)
    p.add_argument("--oracles", default="fd,torch,jax")
    p.add_argument("--families", default="mlp,cnn,softmax,graph")
    p.add_argument("--modes", default="reverse,forward")
    p.add_argument("--max-width", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-layers", type=int, default=4)
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes of a local Dask cluster (run --workers; 1: here)")
    p.add_argument("--out", type=Path, default=Path("/tmp/bo-false-alarms"))
    args = p.parse_args()
    config = campaign.RunConfig(
        families=tuple(args.families.split(",")), oracles=tuple(args.oracles.split(",")),
        modes=tuple(args.modes.split(",")),
        cases=args.cases, seed=args.seed,
        constraints={"max_width": args.max_width, "max_batch": args.max_batch,
                     "max_layers": args.max_layers})
    start = time.perf_counter()
    interrupted = False
    try:
        campaign.run(config, args.out, execution=campaign.Execution(workers=args.workers))
    except KeyboardInterrupt:
        interrupted = True
    wall = time.perf_counter() - start
    finish(args.out, interrupted=interrupted)
    found = {"wall_seconds": round(wall, 1), "interrupted": interrupted,
             "config": config.to_json(), **margins(args.out)}
    (args.out / "margins.json").write_text(json.dumps(found, indent=1))
    print(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
