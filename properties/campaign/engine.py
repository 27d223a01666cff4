"""A campaign: draw cases, run the reference and every requested oracle on each, compare,
and append the records to ``records.jsonl`` as each case finishes; then summarise and
render the report. This is what ``backprop-oracle run`` executes.

Nothing already computed is lost on interruption: records are flushed per case, every case
is saved under ``cases/`` (for ``replay``) before it runs, and ``finish`` builds the
summary and report from whatever records exist.

This module decides what runs; ``Execution`` says where. In this process (one worker: the
cases one after the other, as ``units`` yields them), or as ``Chunk`` tasks on a Dask cluster
(``cluster``): each chunk is a few case indices of one family, drawn where it runs from
(family, seed, index, constraints), and its records come back to be written in ``units``'
order whatever the number of workers (its cases saved under ``cases/`` with them: a case
that a stop leaves unfinished on a worker is neither written nor saved).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...oracles import registry
from ...oracles._common import MODES, PRECISIONS
from ...oracles.base import Oracle, device_choices
from ...reference import backprop
from ...reference.case import DTYPES, FAMILY_NAMES, Case
from ..cases.strategies import Constraints, case_at, check_memory, iter_cases
from ..comparison.compare import where
from ..comparison.error_model import bounds
from ..comparison.evaluate import Results, cross_values, evaluate
from ..comparison.records import Record, error_record, replay_command, skip_record, to_jsonable
from .output import Output, environment_of
from .stopping import Interrupted, Stop
from .threads import child_environment, pin, settings
from .worker import Worker, worker_for

DEVICES = ("cpu", "cuda", "gpu")
FRAMEWORK_NAMES = {"torch": "PyTorch", "jax": "JAX"}


@dataclass(frozen=True)
class RunConfig:
    """What a campaign runs. ``cases`` is per family; devices name ``cpu`` and the accelerator,
    spelled ``cuda`` or ``gpu`` (one choice: each framework runs on it under its own name,
    PyTorch ``cuda``, JAX ``gpu``, and records that name); an oracle that cannot use a device
    chosen is skipped with a reason."""

    families: tuple[str, ...] = FAMILY_NAMES
    oracles: tuple[str, ...] = registry.NAMES
    modes: tuple[str, ...] = MODES
    devices: tuple[str, ...] = ("cpu",)
    dtypes: tuple[str, ...] = DTYPES
    precisions: tuple[str, ...] = ("strict",)
    cases: int = 12
    seed: int = 0
    kinks: bool = False
    constraints: dict[str, Any] = field(default_factory=dict)
    threads: int = 1  # per process (threads.pin); 0: the libraries' defaults

    def __post_init__(self) -> None:
        for name, known in (("families", FAMILY_NAMES), ("oracles", registry.NAMES),
                            ("modes", MODES), ("devices", DEVICES), ("dtypes", DTYPES),
                            ("precisions", PRECISIONS)):
            values = getattr(self, name)
            unknown = [v for v in values if v not in known]
            if not values or unknown:
                raise ValueError(f"--{name}: unknown {unknown or 'empty'}; expected some of "
                                 f"{', '.join(known)}")
        if self.cases < 0:
            raise ValueError(f"--cases must be >= 0, got {self.cases}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) \
                or self.threads < 0:
            raise ValueError(f"--threads must be a non-negative integer, got {self.threads!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"--seed must be a non-negative integer, got {self.seed!r}")
        for family in self.families:  # over-budget constraints: refused before any drawing
            check_memory(family, Constraints.make(kinks=self.kinks, **self.constraints))

    def to_json(self) -> dict:
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: dict) -> RunConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in data.items() if k in fields}
        return cls(**values)


def make_oracles(config: RunConfig) -> list[Oracle]:
    """One oracle object per (name, mode, precision) requested."""
    return registry.build(config.oracles, config.modes, config.precisions)


def placements(config: RunConfig, oracle: Oracle) -> list[str]:
    """The devices chosen, each under ``oracle``'s own name (``cuda``/``gpu`` are one)."""
    return [oracle.device_for(d) for d in device_choices(config.devices)]


def environment(config: RunConfig, oracles: Sequence[Oracle]) -> dict[str, str]:
    """What the report records about the run: versions, devices, precision settings, seed."""
    env = environment_of(seed=str(config.seed))
    for oracle in oracles:
        for device in placements(config, oracle):
            if oracle.available(device) is None:
                env[f"{oracle.label}/{oracle.precision} on {device}"] = json.dumps(
                    to_jsonable(oracle.settings(device)), sort_keys=True)
    return env


def skip_records(config: RunConfig, oracle: Oracle, device: str, reason: str) -> list[Record]:
    return [skip_record(family, oracle.name, oracle.mode, oracle.precision, device, dtype,
                        reason)
            for family in config.families for dtype in config.dtypes]


def draw(config: RunConfig) -> Iterator[Case]:
    """The campaign's cases, family by family, each drawn only when asked for: case ``i``
    of a family is ``case_at(family, config.seed, i)`` whatever ``config.cases`` is."""
    for family in config.families:
        yield from iter_cases(family, config.seed, 0, config.cases, kinks=config.kinks,
                              **config.constraints)


def units(config: RunConfig) -> Iterator[tuple[Case, str]]:
    """Every (case, dtype) the campaign runs, lazily: families x cases x dtypes, in that
    order; memory stays flat in ``config.cases``."""
    for case in draw(config):
        for dtype in config.dtypes:
            yield case, dtype


def count(config: RunConfig) -> int:
    """How many (case, dtype) units ``units(config)`` yields (for the progress bar)."""
    return len(config.families) * config.cases * len(config.dtypes)


@dataclass(frozen=True)
class Execution:
    """Where a campaign's cases run: in this process (``workers`` 1), on a Dask
    ``LocalCluster`` of ``workers`` processes, or on the existing Dask cluster whose scheduler
    is at ``scheduler`` (an address) or is named in ``scheduler_file``."""

    workers: int = 1
    scheduler: str | None = None
    scheduler_file: str | None = None

    @property
    def distributed(self) -> bool:
        return self.workers > 1 or bool(self.scheduler or self.scheduler_file)

    @property
    def kind(self) -> str:
        """How the scheduler was found, for ``environment.json``."""
        if self.scheduler:
            return "address"
        if self.scheduler_file:
            return "scheduler file"
        return "local cluster" if self.workers > 1 else "in process"


def cores() -> int:
    """The cores this process may use (``os.process_cpu_count`` from Python 3.13)."""
    counter = getattr(os, "process_cpu_count", None)
    if counter is not None:
        return counter() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Chunk:
    """One task of a distributed campaign: cases ``start`` to ``stop`` (excluded) of
    ``family``, each in every dtype of the run; ``position`` is its place in ``units``'
    order."""

    position: int
    family: str
    start: int
    stop: int


@dataclass(frozen=True)
class Job:
    """What every chunk of one campaign shares, sent with each task (a few kilobytes: the
    cases are drawn where they run). ``environ`` is set in a worker process before it runs a
    case (threads per process, the JAX compile cache); ``timeout`` is ``run``'s."""

    config: RunConfig
    runnable: tuple[tuple[Oracle, str], ...]
    out_dir: str
    timeout: float | None
    environ: dict[str, str]


Unit = tuple[Case, list[Record]]  # one (case, dtype) and its records
CHUNKS_PER_WORKER = 4  # chunks per worker and family at least, so that the load balances
MAX_CHUNK = 8  # cases per chunk at most: interruption and reordering stay fine-grained


def chunk_size(config: RunConfig, workers: int) -> int:
    """Cases per chunk: ``CHUNKS_PER_WORKER`` chunks per worker of each family, 1 to
    ``MAX_CHUNK`` cases."""
    return max(1, min(MAX_CHUNK, config.cases // (max(1, workers) * CHUNKS_PER_WORKER)))


def chunks(config: RunConfig, workers: int) -> Iterator[Chunk]:
    """The campaign's chunks in ``units``' order, lazily (memory flat in ``config.cases``)."""
    size, position = chunk_size(config, workers), 0
    for family in config.families:
        for start in range(0, config.cases, size):
            yield Chunk(position, family, start, min(start + size, config.cases))
            position += 1


def chunk_count(config: RunConfig, workers: int) -> int:
    size = chunk_size(config, workers)
    return len(config.families) * -(-config.cases // size)


def worker_environment(config: RunConfig) -> dict[str, str]:
    """What a worker process needs in its environment before it runs a case: the threads
    per process (``threads.child_environment``) and this process's JAX compile-cache choice
    (``$BO_COMPILE_CACHE``), so every worker shares one persistent cache."""
    from ...oracles.jax_oracle import CACHE_ENV

    env = child_environment(config.threads) if config.threads else {}
    if CACHE_ENV in os.environ:
        env[CACHE_ENV] = os.environ[CACHE_ENV]
    return env


def run_chunk(job: Job, chunk: Chunk, worker: Worker | None = None,
              stop: Stop | None = None) -> list[Unit]:
    """Draw the chunk's cases (``case_at``: the same cases wherever it runs) and run every
    oracle of ``job`` on each, in every dtype: ``units``' order, with ``run_case``'s records.
    Raises ``Interrupted`` when ``stop`` is requested before the chunk is complete."""
    config, units = job.config, []
    for case in iter_cases(chunk.family, config.seed, chunk.start, chunk.stop,
                           kinks=config.kinks, **config.constraints):
        for dtype in config.dtypes:
            typed = case.astype(dtype)
            units.append((typed, run_case(typed, job.runnable, Path(job.out_dir), worker,
                                          stop)))
    return units


def chunk_failed(job: Job, chunk: Chunk, error: BaseException) -> list[Unit]:
    """The units of a chunk whose task failed (its worker process died more times than the
    scheduler allows): each case, drawn here, with one ``oracle_error`` per oracle saying so."""
    config, units = job.config, []
    for index in range(chunk.start, chunk.stop):
        case = case_at(chunk.family, config.seed, index, kinks=config.kinks,
                       **config.constraints)
        for dtype in config.dtypes:
            typed = case.astype(dtype)
            replay = replay_command(typed.case_id, job.out_dir)
            units.append((typed, [error_record(
                where(typed, oracle.name, oracle.mode, device, dtype,
                      precision=oracle.precision, replay=replay), error)
                for oracle, device in job.runnable]))
    return units


def run(config: RunConfig, out_dir: Path, progress: Callable[[int, int], None] | None = None,
        stop: Stop | None = None, timeout: float | None = None,
        status: Callable[[str], None] | None = None,
        execution: Execution | None = None) -> int:
    """Run the campaign into ``out_dir`` (records appended case by case); return the number
    of (case, dtype) units finished. ``progress(done, total)`` after each unit; ``status``:
    told in words what the run is doing before its first case (importing the frameworks,
    measuring their kink conventions: seconds each). ``stop``: looked at between cases and
    oracles, the run ends there when it is requested. ``timeout``: each oracle's evaluation of
    a case runs in a killable worker process with this limit in seconds (``None``: in this
    process, no limit). ``execution``: where the cases run (default: in this process; a
    Dask cluster never gets more workers than the run has chunks). The caller calls
    ``output.finish`` afterwards, also on interruption."""
    stop = stop or Stop()
    say = status or (lambda text: None)
    execution = execution or Execution()
    if execution.distributed and not (execution.scheduler or execution.scheduler_file):
        execution = Execution(min(execution.workers, chunk_count(config, execution.workers)))
    threads = pin(config.threads) if config.threads else settings()  # before the worker
    in_process = not execution.distributed
    cache_before = compile_cache_stats(None)  # this process's counts before the run
    with Output(out_dir) as output, worker_for(timeout if in_process else None) as worker:
        env, runnable = _prepare(config, output, stop, say, threads)
        env.update({"workers": str(execution.workers), "scheduler": execution.kind})
        output.describe(environment=env)
        if not in_process:
            job = Job(config, tuple(runnable), str(out_dir), timeout,
                      worker_environment(config))
            return _run_on_cluster(job, execution, output, env, progress, stop, say,
                                   cache_before)
        total = count(config)
        say(f"running {total} cases ({len(config.families)} families x {config.cases} x "
            f"{len(config.dtypes)} dtypes)")
        done = 0
        try:
            for drawn, dtype in units(config):
                if stop.requested:
                    return done
                case = drawn.astype(dtype)
                output.save_case(case)
                try:
                    records = run_case(case, runnable, output.directory, worker, stop)
                except Interrupted:
                    return done
                output.write(records)
                done += 1
                if progress:
                    progress(done, total)
        finally:
            if "jax" in config.oracles:
                env["jax compile cache"] = json.dumps(compile_cache_stats(worker))
                output.describe(environment=env)
    return done


def _prepare(config: RunConfig, output: Output, stop: Stop, say: Callable[[str], None],
             threads: dict[str, str]) -> tuple[dict[str, str], list[tuple[Oracle, str]]]:
    """Before the first case: the oracles made, ``run.json``, ``environment.json`` and the
    kink conventions written, the skipped combinations recorded; returns the environment and
    the (oracle, device) pairs that run."""
    frameworks = [f for f in ("torch", "jax") if f in config.oracles]
    oracles = make_oracles(config)
    if frameworks:
        say(f"importing {' and '.join(FRAMEWORK_NAMES[f] for f in frameworks)}")
    env = {**environment(config, oracles), **threads}
    output.describe(config.to_json(), env)
    if frameworks and not stop.requested:
        from .conventions import measure

        say("measuring kink conventions")
        output.describe(conventions=measure(config.devices))
    runnable: list[tuple[Oracle, str]] = []
    for oracle in oracles:
        for device in placements(config, oracle):
            reason = oracle.available(device)
            if reason:
                output.write(skip_records(config, oracle, device, reason))
            else:
                runnable.append((oracle, device))
    return env, runnable


def _run_on_cluster(job: Job, execution: Execution, output: Output, env: dict[str, str],
                    progress: Callable[[int, int], None] | None, stop: Stop,
                    say: Callable[[str], None], cache_before: dict[str, Any]) -> int:
    """``run``'s loop on a Dask cluster: the chunks' units written in ``units``' order as
    they come back (``cluster.Campaign.results``); on a stop, the chunks already finished too.
    The JAX compile-cache counts recorded are the workers' summed, and with them this
    process's since ``cache_before``."""
    from .cluster import Campaign

    config, total, done = job.config, count(job.config), 0
    if stop.requested:  # before the workers start: no case has run
        return done
    say("starting the Dask workers" if execution.kind == "local cluster"
        else "connecting to the Dask scheduler")
    with Campaign(execution, job.environ) as campaign:
        env.update({"workers": str(campaign.workers), "worker threads": str(campaign.slots)})
        say(f"running {total} cases ({len(config.families)} families x {config.cases} x "
            f"{len(config.dtypes)} dtypes) on {campaign.workers} Dask workers")
        results = campaign.results(job, chunks(config, campaign.slots), stop)
        try:
            with contextlib.closing(results):
                for finished in results:
                    for case, records in finished:
                        output.save_case(case)
                        output.write(records)
                        done += 1
                        if progress:
                            progress(done, total)
        finally:
            if "jax" in config.oracles:
                workers = {"dir": None, **campaign.compile_cache}
                env["jax compile cache (workers)"] = json.dumps(workers)
                env["jax compile cache"] = json.dumps(_summed(
                    _summed(compile_cache_stats(None), cache_before, -1), workers))
            output.describe(environment=env)
    return done


def _summed(stats: dict[str, Any], other: dict[str, Any], sign: int = 1) -> dict[str, Any]:
    """Compile-cache counts (``hits``, ``misses``) of ``stats`` plus (``sign`` -1: minus)
    ``other``'s; the directory of whichever names one."""
    return {"dir": stats.get("dir") or other.get("dir"),
            **{k: int(stats.get(k, 0)) + sign * int(other.get(k, 0)) for k in ("hits", "misses")}}


def compile_cache_stats(worker: Worker | None) -> dict[str, Any]:
    """JAX's persistent compilation cache: its directory, and the hits and misses of this
    process and of the worker process (when there is one, and JAX ran in it)."""
    from ...oracles.jax_oracle import compile_cache_stats as here

    stats = here()
    there = worker.compile_cache_stats() if worker is not None else None
    if there:
        stats = {"dir": stats["dir"] or there["dir"],
                 **{k: int(stats[k]) + int(there[k]) for k in ("hits", "misses")}}
    return stats


def run_case(case: Case, runnable: Sequence[tuple[Oracle, str]], out_dir: Path,
             worker: Worker | None = None, stop: Stop | None = None) -> list[Record]:
    """Every runnable oracle on one case, against the reference (computed once, as are the
    error-model bounds; in the worker when there is one); each tensor record also holds its
    oracle's values at the other oracles' worst elements (``cross_values``). Raises
    ``Interrupted`` when ``stop`` is requested before the case is complete."""
    replay = replay_command(case.case_id, out_dir)
    records: list[Record] = []
    if worker is not None:
        for oracle, device in runnable:
            _check(stop)
            records += worker.evaluate(case, oracle, device, replay=replay, stop=stop)
        return worker.cross_values(case, records)
    try:
        reference = backprop(case)
        model = bounds(case, reference)
    except Exception as exc:  # the reference itself failed: one record says so
        return [error_record(where(case, "reference", "reverse", "cpu", case.dtype,
                                   precision="strict", replay=replay), exc)]
    results: Results = {}
    for oracle, device in runnable:
        _check(stop)
        records += evaluate(case, oracle, device, reference=reference, model=model,
                            replay=replay, keep=results)
    return cross_values(records, results)


def _check(stop: Stop | None) -> None:
    if stop is not None and stop.requested:
        raise Interrupted


def replay(case_id: str, out_dir: Path) -> list[Record]:
    """Re-run one recorded case with the oracles of the run that recorded it."""
    from ..cases.case_io import load_case

    out_dir = Path(out_dir)
    config_path = out_dir / "run.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{out_dir} holds no run.json: not the output of a run")
    config = RunConfig.from_json(json.loads(config_path.read_text()))
    case = load_case(out_dir / "cases", case_id)
    runnable = [(o, d) for o in make_oracles(config) for d in placements(config, o)
                if o.available(d) is None]
    return run_case(case, runnable, out_dir)
