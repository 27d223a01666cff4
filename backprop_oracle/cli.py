"""The ``backprop-oracle`` command.

Exit codes: 0 everything agrees (kinks allowed), 1 a divergence or a one-sided NaN, 2 bad
usage or bad input (one line on stderr, no traceback), 130 interrupted (the records of the
finished cases and a report built from them are still written).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Sequence

EXIT_OK, EXIT_DIVERGENCE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad usage or bad input: reported on one line, exit code 2."""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backprop-oracle",
        description="Check backpropagation: a NumPy reference against finite differences, "
                    "PyTorch and JAX, with error-model tolerances and an HTML report.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="the main job: draw cases, compare every oracle, report")
    run.add_argument("--families", type=_csv, default=None,
                     help="comma-separated: mlp,cnn,softmax,graph (default: all)")
    run.add_argument("--oracles", type=_csv, default=None,
                     help="comma-separated: fd,torch,jax (default: all; unavailable ones are "
                          "reported as skipped)")
    run.add_argument("--modes", type=_csv, default=None, help="reverse,forward (default: both)")
    run.add_argument("--devices", type=_csv, default=None,
                     help="cpu,cuda,gpu (default: cpu; absent devices are skipped with a reason)")
    run.add_argument("--dtypes", type=_csv, default=None,
                     help="float32,float64 (default: both)")
    run.add_argument("--precisions", type=_csv, default=None,
                     help="strict,default (default: strict)")
    run.add_argument("--cases", type=int, default=None, help="cases per family (default 12)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--kinks", action="store_true",
                     help="draw cases at non-differentiable points on purpose")
    run.add_argument("--out", type=Path, default=Path("bo-out"), help="output directory")
    replay = sub.add_parser("replay", help="re-run one recorded case and print its comparison")
    replay.add_argument("case_id")
    replay.add_argument("--from", dest="source", type=Path, required=True,
                        help="the output directory of the run that recorded it")
    return parser


def _config(args: argparse.Namespace):  # -> RunConfig
    from .properties.campaign import RunConfig

    given = {k: getattr(args, k) for k in ("families", "oracles", "modes", "devices", "dtypes",
                                           "precisions", "cases") if getattr(args, k) is not None}
    try:
        return RunConfig(seed=args.seed, kinks=args.kinks, **given)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _progress_bar(total_hint: int = 0):
    from tqdm import tqdm

    bar = tqdm(total=total_hint, unit="case", disable=None, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    from .properties import campaign

    config = _config(args)
    bar, update = _progress_bar()
    interrupted = False
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        campaign.run(config, args.out, progress=update)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, previous)
        summary = campaign.finish(args.out, interrupted=interrupted)
    counts = ", ".join(f"{v} {n}" for v, n in sorted(summary.verdicts.items()))
    print(f"{summary.n_records} records, {len(summary.cases)} cases: {counts or 'nothing run'}")
    print(f"report: {args.out / 'report.html'}")
    if interrupted:
        print("interrupted: records and report cover the finished cases", file=sys.stderr)
        return EXIT_INTERRUPTED
    return summary.exit_code


def cmd_replay(args: argparse.Namespace) -> int:
    from .properties.campaign import replay

    try:
        records = replay(args.case_id, args.source)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(f"{'oracle/mode':<24}{'device':<7}{'tensor':<10}{'verdict':<13}"
          f"{'max abs err':>12}{'tolerance':>12}{'err/tol':>10}")
    failing = False
    for r in records:
        failing |= r.get("verdict") in ("diverge", "nan")
        print(f"{r.get('oracle')}/{r.get('mode'):<16}{r.get('device', ''):<7}"
              f"{str(r.get('name')):<10}{str(r.get('verdict')):<13}"
              f"{_num(r.get('max_abs_err')):>12}{_num(r.get('tolerance')):>12}"
              f"{_num(r.get('margin')):>10}")
    return EXIT_DIVERGENCE if failing else EXIT_OK


def _num(value: object) -> str:
    try:
        return f"{float(value):.3g}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"


COMMANDS = {"run": cmd_run, "replay": cmd_replay}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"backprop-oracle {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
