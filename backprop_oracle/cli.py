"""The ``backprop-oracle`` command.

Exit codes: 0 everything agrees (kinks allowed), 1 a divergence or a one-sided NaN, 2 bad
usage or bad input (one line on stderr, no traceback; checked before any work starts, ``--out``
included), or a run, check or verify that compared nothing, 130 interrupted (the records of the
finished cases and a report built from them are still written).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .properties.campaign.stopping import Stop, graceful

EXIT_OK, EXIT_DIVERGENCE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
CASE_TIMEOUT = 600.0  # seconds per case (and oracle): generous for the largest drawn cases
CHECK_OUT = Path("bo-check")  # check's --out when none is given (and not replaying)


class UsageError(Exception):
    """Bad usage or bad input: reported on one line, exit code 2."""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _integer(minimum: int, zero: str = "") -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum`` (``zero``: the message for 0 when 0 is
    refused)."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(zero if number == 0 and zero else
                                             f"must be >= {minimum}, got {number}")
        return number

    return parse


_non_negative_int = _integer(0)  # --seed: NumPy's generators take no negative seed
_case_count = _integer(1, "0 cases compares nothing; give 1 or more")  # --cases


EPILOG = f"""\
exit codes:
  {EXIT_OK}    everything agrees (kinks allowed)
  {EXIT_DIVERGENCE}    a divergence, a one-sided NaN or an oracle that raised
  {EXIT_USAGE}    bad usage or bad input (one line on stderr), or nothing was compared
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C, SIGTERM): finished cases and the report are kept

CASE_ID: the 16 hex digits that name a drawn case, a hash of its spec and arrays (the
same case always has the same id). records.jsonl and the report name every case by it,
cases/CASE_ID.json + .npz hold it, and `backprop-oracle replay CASE_ID --from DIR` (or
`check TARGET --replay CASE_ID --from DIR`) re-runs it.
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("backprop-oracle")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr and exit 2, like every usage error; every
    help page ends with the exit codes and what a CASE_ID is."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("epilog", EPILOG)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _draw_options(parser: argparse.ArgumentParser) -> None:
    """The options that say which cases to draw (``check``, ``vectors export``)."""
    parser.add_argument("--families", "--family", dest="families", type=_csv, default=None,
                        help="comma-separated families to draw (default: all)")
    parser.add_argument("--cases", type=_case_count, default=20,
                        help="cases per family (default 20)")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="(default 0)")
    parser.add_argument("--constraint", action="append", default=[], metavar="KEY=VALUE",
                        help="restrict the drawn cases, e.g. activations=sigmoid,tanh "
                             "max_layers=3 dtypes=float64 (repeatable)")


def _compile_cache_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--compile-cache", metavar="DIR", default=None,
                       help="JAX's persistent compilation cache (default: $BO_COMPILE_CACHE, "
                            "else ~/.cache/backprop-oracle/jax): programs compiled once, ever")
    group.add_argument("--no-compile-cache", action="store_true",
                       help="compile JAX programs afresh in every process")


def _apply_compile_cache(args: argparse.Namespace) -> None:
    """The choice goes into ``$BO_COMPILE_CACHE``, which worker processes inherit."""
    if getattr(args, "no_compile_cache", False):
        os.environ["BO_COMPILE_CACHE"] = "off"
    elif getattr(args, "compile_cache", None):
        os.environ["BO_COMPILE_CACHE"] = str(Path(args.compile_cache).resolve())


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=_integer(1), default=None, metavar="N",
                        help="worker processes, one case chunk each at a time, on a local Dask "
                             "cluster (default: this machine's cores, never more than the run "
                             "has chunks; 1: in this process; needs backprop-oracle[cluster])")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="run the cases on the existing Dask cluster whose scheduler is at "
                            "ADDRESS (e.g. tcp://10.0.0.5:8786) instead of a local one")
    group.add_argument("--scheduler-file", metavar="FILE", type=Path, default=None,
                       help="the same, with the scheduler's address read from FILE "
                            "(dask scheduler --scheduler-file FILE)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="backprop-oracle",
        description="Check backpropagation: a NumPy reference against finite differences, "
                    "PyTorch and JAX,\nwith error-model tolerances and an HTML report.")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {_version()}")
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
    run.add_argument("--cases", type=_case_count, default=None,
                     help="cases per family (default 12)")
    run.add_argument("--seed", type=_non_negative_int, default=0,
                     help="case i of a family is drawn from (seed, family, i) (default 0)")
    run.add_argument("--kinks", action="store_true",
                     help="draw cases at non-differentiable points on purpose (default: off)")
    run.add_argument("--out", type=Path, default=Path("bo-out"),
                     help="output directory (default bo-out)")
    run.add_argument("--case-timeout", type=float, default=CASE_TIMEOUT, metavar="SECONDS",
                     help="each oracle's work on a case runs in a worker process stopped after "
                          f"SECONDS (default {CASE_TIMEOUT:g}; 0: no limit, in this process)")
    _compile_cache_options(run)
    run.add_argument("--threads", type=_non_negative_int, default=1, metavar="N",
                     help="threads per process for BLAS, PyTorch and XLA (default 1: the "
                          "fastest measured, benchmarks/bench_threads.py; 0: the libraries' "
                          "own defaults)")
    _cluster_options(run)
    replay = sub.add_parser("replay", help="re-run one recorded case and print its comparison")
    _compile_cache_options(replay)
    replay.add_argument("case_id")
    replay.add_argument("--from", dest="source", type=Path, required=True,
                        help="the output directory of the run that recorded it")
    check = sub.add_parser("check", help="verify another implementation: MODULE:CALLABLE "
                                         "returning gradients keyed like case.params")
    check.add_argument("target", help="MODULE:CALLABLE or path/to/file.py:CALLABLE")
    _draw_options(check)
    check.add_argument("--training", action="store_true",
                       help="CALLABLE(case, training) returns [params after the step]: check "
                            "SGD with momentum and schedule step by step")
    check.add_argument("--case-timeout", type=float, default=CASE_TIMEOUT, metavar="SECONDS",
                       help="the implementation runs in a worker process stopped after SECONDS "
                            f"per case (default {CASE_TIMEOUT:g}; 0: no limit, in this "
                            "process)")
    _compile_cache_options(check)
    check.add_argument("--workers", type=_integer(1), default=1, metavar="N",
                       help="check the cases on a local Dask cluster of N worker processes "
                            "(default 1: in this process; needs backprop-oracle[cluster])")
    check.add_argument("--no-tiebreak", action="store_true",
                       help="do not run PyTorch/JAX on disagreeing cases")
    check.add_argument("--replay", metavar="CASE_ID", default=None,
                       help="re-check one case saved by an earlier check (needs --from)")
    check.add_argument("--from", dest="source", type=Path, default=None,
                       help="the output directory of that earlier check")
    check.add_argument("--out", type=Path, default=None,
                       help=f"output directory (default {CHECK_OUT}; with --replay, a new "
                            "directory FROM-replay-CASE_ID beside --from: a replay never "
                            "writes into the directory it reads)")
    vectors = sub.add_parser("vectors", help="language-neutral conformance vectors (JSON + "
                                             ".npz) for implementations outside Python")
    vsub = vectors.add_subparsers(dest="action", required=True)
    export = vsub.add_parser("export", help="write cases, the reference's answers and "
                                            "per-element tolerances into DIR")
    export.add_argument("directory", type=Path, metavar="DIR")
    _draw_options(export)
    verify = vsub.add_parser("verify", help="check RESULTS/<case_id>.npz (keys W1, b1, ..., "
                                            "optionally loss, delta<l>) against DIR")
    verify.add_argument("directory", type=Path, metavar="DIR")
    verify.add_argument("results", type=Path, metavar="RESULTS")
    verify.add_argument("--tiebreak", action="store_true",
                        help="run PyTorch/JAX on disagreeing cases to name the odd one out "
                             "(default: off)")
    verify.add_argument("--out", type=Path, default=Path("bo-vectors"),
                        help="output directory of the report (default bo-vectors)")
    return parser


def _config(args: argparse.Namespace):  # -> RunConfig
    from .properties.campaign.engine import RunConfig

    given = {k: getattr(args, k) for k in ("families", "oracles", "modes", "devices", "dtypes",
                                           "precisions", "cases") if getattr(args, k) is not None}
    try:
        return RunConfig(seed=args.seed, kinks=args.kinks, threads=args.threads, **given)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


CLUSTER_INSTALL = 'pip install "backprop-oracle[cluster]"'


def _distributed_missing() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return True
    return False


def _execution(args: argparse.Namespace):  # -> Execution
    """Where ``run``'s cases run: ``--scheduler``/``--scheduler-file``, else ``--workers``
    (default: the cores, quietly 1 with a note when ``distributed`` is not installed)."""
    from .properties.campaign.engine import Execution, cores

    external = args.scheduler or args.scheduler_file
    if external and args.workers is not None:
        raise UsageError("--workers is for a local cluster; the cluster of --scheduler or "
                         "--scheduler-file has its own workers")
    if args.scheduler_file is not None and not args.scheduler_file.is_file():
        raise UsageError(f"--scheduler-file {args.scheduler_file}: no such file")
    wanted = 1 if external else (args.workers if args.workers is not None else cores())
    if (external or wanted > 1) and _distributed_missing():
        if external or args.workers is not None:
            option = "--scheduler" if external else f"--workers {wanted}"
            raise UsageError(f"{option} needs dask.distributed, which is not installed: "
                             f"{CLUSTER_INSTALL}")
        print(f"note: running in this process (--workers 1): dask.distributed is not "
              f"installed ({CLUSTER_INSTALL} runs cases on all {wanted} cores)")
        wanted = 1
    return Execution(wanted, args.scheduler,
                     str(args.scheduler_file) if args.scheduler_file else None)


PROGRESS_SECONDS = 30.0  # between plain progress lines off a terminal (BO_PROGRESS_SECONDS)


def _progress_interval() -> float:
    try:
        seconds = float(os.environ.get("BO_PROGRESS_SECONDS", PROGRESS_SECONDS))
    except ValueError:
        return PROGRESS_SECONDS
    return seconds if seconds > 0 else PROGRESS_SECONDS


def _elapsed(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Progress:
    """Progress. On a terminal (stderr), a tqdm bar whose description says what the job is
    doing (``status``). Elsewhere (CI logs) plain lines on stdout, so that stderr keeps only
    errors: each ``status`` at once, then one line every ``BO_PROGRESS_SECONDS`` seconds
    (default 30) from a background thread, so a long case or a slow import still shows the job
    is alive, and a last line on ``close``."""

    def __init__(self, unit: str = "cases", stream: Any = None, tty: bool | None = None,
                 interval: float | None = None) -> None:
        import threading
        import time

        self.stream = stream or sys.stderr
        is_tty = getattr(self.stream, "isatty", lambda: False)
        if not (is_tty() if tty is None else tty) and stream is None:
            self.stream = sys.stdout  # plain lines go with the log; stderr is for errors only
        self.unit, self.done, self.total, self.text = unit, 0, 0, "starting"
        self.clock, self.start = time.monotonic, time.monotonic()
        self.bar: Any = None
        self.lock, self.stopped = threading.Lock(), threading.Event()
        if is_tty() if tty is None else tty:
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit=unit.rstrip("s"), dynamic_ncols=True, file=self.stream)
            self.bar.set_description_str(self.text)
        else:
            self.interval = interval or _progress_interval()
            self.thread = threading.Thread(target=self._tick, name="bo-progress", daemon=True)
            self.thread.start()

    def status(self, text: str) -> None:
        """What the job is doing now (importing frameworks, measuring conventions, ...)."""
        self.text = text
        if self.bar is not None:
            self.bar.set_description_str(text)
        else:
            self._line(f"{text}")

    def update(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self.bar is not None:
            self.bar.total, self.bar.n = total, done
            self.bar.refresh()

    def _line(self, text: str) -> None:
        with self.lock:
            print(f"[{_elapsed(self.clock() - self.start)}] {text}", file=self.stream,
                  flush=True)

    def _counts(self) -> str:
        if not self.total:
            return f"{self.text} (no {self.unit} finished yet)"
        return (f"{self.done}/{self.total} {self.unit} finished "
                f"({100 * self.done // self.total}%)")

    def _tick(self) -> None:
        while not self.stopped.wait(self.interval):
            self._line(self._counts())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            return
        self.stopped.set()
        self.thread.join()
        if self.total:
            self._line(self._counts())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def writable_dir(path: Path | str, option: str = "--out") -> Path:
    """``path`` checked, before any work starts, as a directory this process can write into:
    made if missing, probed with a file, and the probe and the directories made for it removed
    again. ``UsageError`` (one line) when it is a file, under a file, or not writable."""
    path = Path(path)
    where = f"{option} {path}"
    made = []  # the missing directories, deepest first
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                raise UsageError(f"{where}: is a file, not a directory" if p == path
                                 else f"{where}: is under a file ({p})")
            break
        made.append(p)
    probe = path / f".bo-write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except PermissionError:
        raise UsageError(f"{where}: is not writable (permission denied)") from None
    except OSError as exc:
        raise UsageError(f"{where}: cannot be written ({exc.strerror or exc})") from None
    finally:
        for p in made:
            try:
                p.rmdir()
            except OSError:
                break
    return path


def _check_out(args: argparse.Namespace) -> Path:
    """check's output directory: ``--out``, else ``CHECK_OUT``. A replay never writes into the
    directory it reads (``--from``): without ``--out`` it writes to a new directory
    ``FROM-replay-CASE_ID`` beside it, and an ``--out`` that is ``--from`` is refused."""
    if not (args.replay and args.source is not None):
        return args.out if args.out is not None else CHECK_OUT
    source = args.source.resolve()
    if args.out is None:
        case = re.sub(r"[^0-9A-Za-z_.-]", "_", args.replay)
        return source.parent / f"{source.name}-replay-{case}"
    if args.out.resolve() == source:
        raise UsageError(f"--out {args.out} is the --from directory: a replay must not overwrite "
                         "the report it reads (leave --out out for a new directory)")
    return args.out


def _template_word(text: object) -> str:
    """``text`` shell-quoted, with braces doubled for ``str.format``."""
    return shlex.quote(str(text)).replace("{", "{{").replace("}", "}}")


def _check_replay(args: argparse.Namespace) -> str:
    """The replay line of check's records: a ``str.format`` template over ``case``, its words
    shell-quoted, with the flags that change what is checked."""
    return (f"backprop-oracle check {_template_word(args.target)} --replay {{case.case_id}} "
            f"--from {_template_word(args.out)}" + " --training" * args.training
            + " --no-tiebreak" * args.no_tiebreak)


def _exit_code(outcome: Any) -> int:
    """0 or 1 for a finished run, check or verify (its ``Summary`` or ``Report``), and
    ``UsageError`` (exit 2) when it compared nothing (no records, or only skipped and
    unsupported ones), which would otherwise pass vacuously."""
    from .reports.summary import Summary, summarise

    summary = outcome if isinstance(outcome, Summary) else summarise(
        r.to_dict() for r in outcome.records)
    if summary.nothing_compared:
        raise UsageError(summary.nothing_compared)
    return summary.exit_code


def cmd_run(args: argparse.Namespace, stop: Stop) -> int:
    from .properties.campaign import engine as campaign
    from .properties.campaign.output import finish

    writable_dir(args.out)
    config = _config(args)
    execution = _execution(args)
    with Progress() as progress:
        try:
            campaign.run(config, args.out, progress=progress.update, stop=stop,
                         timeout=args.case_timeout or None, status=progress.status,
                         execution=execution)
        except ConnectionError as exc:  # --scheduler that does not answer (cluster.py)
            raise UsageError(str(exc)) from None
    interrupted = stop.requested
    summary = finish(args.out, interrupted=interrupted)
    print(run_line(summary))
    print(f"report: {args.out / 'report.html'}")
    return _interrupted(summary) if interrupted else _exit_code(summary)


def run_line(summary: Any) -> str:
    """``run``'s summary line: records counted by verdict (as summary.md counts them), the
    records of skipped oracle/device combinations as ``skipped N``, and the cases compared."""
    from .properties.comparison.records import rank

    skipped = summary.n_records - sum(summary.verdicts.values())
    counts = [f"{n} {v}" for v, n in sorted(summary.verdicts.items(),
                                            key=lambda vn: -rank(vn[0]))]
    counts += [f"{skipped} skipped ({len(summary.skipped)} oracle/device/dtype combinations "
               "that cannot run here)"] if skipped else []
    return (f"{summary.n_records} records ({len(summary.cases)} cases): "
            f"{', '.join(counts) or 'nothing run'}")


def _interrupted(summary: Any) -> int:
    print(f"interrupted: records and report cover the {len(summary.cases)} finished cases",
          file=sys.stderr)
    return EXIT_INTERRUPTED


def cmd_replay(args: argparse.Namespace, stop: Stop) -> int:
    from .properties.campaign.engine import replay

    try:
        records = replay(args.case_id, args.source)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(table(("oracle/mode", "device", "tensor", "verdict", "max abs err", "tolerance",
                 "err/tol"),
                [(f"{r.oracle}/{r.mode}", r.device, r.name, r.verdict, _num(r.max_abs_err),
                  _num(r.tolerance), _num(r.margin)) for r in records], right_from=4))
    return EXIT_DIVERGENCE if any(r.failing for r in records) else EXIT_OK


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int) -> str:
    """``rows`` under ``header`` in columns as wide as their widest cell, two spaces apart;
    columns from ``right_from`` on (numbers) right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows,
                                                                       strict=True)]
    return "\n".join("  ".join(f"{cell:>{w}}" if i >= right_from else f"{cell:<{w}}"
                                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
                                ).rstrip()
                      for row in (header, *rows))


def load_target(target: str):
    """The callable named by ``MODULE:CALLABLE`` or ``path/to/file.py:CALLABLE``."""
    import importlib
    import importlib.util

    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{target!r}: expected MODULE:CALLABLE or path/to/file.py:CALLABLE")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise UsageError(f"{target!r}: no file {path}")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(module_name)
    except UsageError:
        raise
    except Exception as exc:  # any import failure is bad input here
        raise UsageError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise UsageError(f"{module_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise UsageError(f"{target!r} is a {type(fn).__name__}, not callable")
    return fn


def _constraint(text: str) -> tuple[str, object]:
    import json

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--constraint {text!r}: expected KEY=VALUE")
    key, value = key.strip(), value.strip()
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, list(_csv(value))


def cmd_check(args: argparse.Namespace, stop: Stop) -> int:
    from .properties import check as checking
    from .properties.campaign.output import Output, environment_of
    from .properties.cases.case_io import load_case

    args.out = writable_dir(_check_out(args))
    impl = load_target(args.target)
    if args.workers > 1 and _distributed_missing():
        raise UsageError(f"--workers {args.workers} needs dask.distributed, which is not "
                         f"installed: {CLUSTER_INSTALL}")
    replay = _check_replay(args)
    if args.replay:
        if args.source is None:
            raise UsageError("--replay needs --from DIR (the output directory of that check)")
        try:
            cases = [load_case(args.source / "cases", args.replay)]
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from None
    else:
        cases, _ = _draw(args.families, args.cases, args.seed, args.constraint)
    output = Output(args.out)
    output.describe(environment=environment_of(implementation=args.target))
    if args.training:
        report = checking.check_training(impl, cases, name=args.target, replay=replay,
                                         output=output, stop=stop)
    else:
        with Progress() as progress:
            progress.status(f"checking {len(cases)} cases")
            report = checking.check(impl, cases, name=args.target, replay=replay,
                                    tiebreakers=() if args.no_tiebreak else ("torch", "jax"),
                                    progress=progress.update, timeout=args.case_timeout or None,
                                    output=output, stop=stop, workers=args.workers)
    summary = output.finish(interrupted=report.interrupted)
    print(report.summary())
    print(f"report: {output.directory / 'report.html'}")
    if report.interrupted:
        return _interrupted(summary)
    return _exit_code(summary)


def _draw(families: Sequence[str] | None, n: int, seed: int, constraint_args: Sequence[str]):
    """Cases of each family, as ``check`` draws them; bad arguments are ``UsageError``."""
    from .properties.check.api import resolve_cases
    from .reference.case import FAMILY_NAMES

    families = families or FAMILY_NAMES
    unknown = [f for f in families if f not in FAMILY_NAMES]
    if unknown:
        raise UsageError(f"--families: unknown {unknown}; expected some of "
                         f"{', '.join(FAMILY_NAMES)}")
    if n < 1:
        raise UsageError(f"--cases must be >= 1, got {n}")
    constraints = dict(_constraint(c) for c in constraint_args)
    try:
        cases = [c for f in families for c in resolve_cases(f, n, seed, constraints)]
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    return cases, constraints


def cmd_vectors(args: argparse.Namespace, stop: Stop) -> int:
    import time

    from .properties.check import vectors

    writable_dir(*((args.out, "--out") if args.action == "verify" else (args.directory, "DIR")))
    start = time.perf_counter()
    try:
        if args.action == "export":
            cases, constraints = _draw(args.families, args.cases, args.seed, args.constraint)
            paths = vectors.export(args.directory, cases, seed=args.seed,
                                   constraints=constraints)
            size = sum(p.stat().st_size for p in paths)
            print(f"{(len(paths) - 1) // 2} cases, {len(paths)} files, {size / 1e6:.2f} MB "
                  f"in {args.directory} ({time.perf_counter() - start:.1f} s)")
            return EXIT_OK
        replay = (f"backprop-oracle vectors verify {_template_word(args.directory)} "
                  f"{_template_word(args.results)}")
        report = vectors.verify(args.directory, args.results, name=str(args.results),
                                tiebreakers=("torch", "jax") if args.tiebreak else (),
                                replay=replay)
    except vectors.VectorError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"{exc.filename or args.directory}: {exc.strerror or exc}") from None
    path = report.write(args.out)
    print(report.summary())
    print(f"report: {path} ({time.perf_counter() - start:.1f} s)")
    return _exit_code(report)


def _num(value: Any) -> str:  # Any: float() is tried on whatever value is
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return "-"


COMMANDS = {"run": cmd_run, "replay": cmd_replay, "check": cmd_check, "vectors": cmd_vectors}


def main(argv: Sequence[str] | None = None) -> int:
    """Ctrl-C and SIGTERM only request a stop (``stopping``): a command ends at the next case
    boundary with its report and exit code 130; a second signal ends the process at once."""
    with graceful() as stop:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as exc:  # --help (0), or a usage error already printed on one line
            return int(exc.code or 0)
        _apply_compile_cache(args)
        try:
            return COMMANDS[args.command](args, stop)
        except UsageError as exc:
            command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
            print(f"backprop-oracle {command}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
