"""A campaign: draw cases, run the reference and every requested oracle on each, compare,
and append the records to ``records.jsonl`` as each case finishes; then summarise and
render the report. This is what ``backprop-oracle run`` executes.

Nothing already computed is lost on interruption: records are flushed per case, every case
is saved under ``cases/`` (for ``replay``) before it runs, and ``finish`` builds the
summary and report from whatever records exist.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...oracles import registry
from ...oracles._common import MODES, PRECISIONS
from ...oracles.base import Oracle, device_choices
from ...reference import backprop
from ...reference.case import DTYPES, FAMILY_NAMES, Case
from ..cases.strategies import Constraints, check_memory, iter_cases
from ..comparison.compare import where
from ..comparison.error_model import bounds
from ..comparison.evaluate import Results, cross_values, evaluate
from ..comparison.records import Record, error_record, replay_command, skip_record, to_jsonable
from .output import Output, environment_of
from .stopping import Interrupted, Stop
from .threads import pin, settings
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


def run(config: RunConfig, out_dir: Path, progress: Callable[[int, int], None] | None = None,
        stop: Stop | None = None, timeout: float | None = None,
        status: Callable[[str], None] | None = None) -> int:
    """Run the campaign into ``out_dir`` (records appended case by case); return the number
    of (case, dtype) units finished. ``progress(done, total)`` after each unit; ``status``:
    told in words what the run is doing before its first case (importing the frameworks,
    measuring their kink conventions: seconds each). ``stop``: looked at between cases and
    oracles, the run ends there when it is requested. ``timeout``: each oracle's evaluation of
    a case runs in a killable worker process with this limit in seconds (``None``: in this
    process, no limit). The caller calls ``output.finish`` afterwards, also on interruption."""
    stop = stop or Stop()
    say = status or (lambda text: None)
    done = 0
    threads = pin(config.threads) if config.threads else settings()  # before the worker
    frameworks = [f for f in ("torch", "jax") if f in config.oracles]
    with Output(out_dir) as output, worker_for(timeout) as worker:
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
        total = count(config)
        say(f"running {total} cases ({len(config.families)} families x {config.cases} x "
            f"{len(config.dtypes)} dtypes)")
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
        model = bounds(case)
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
