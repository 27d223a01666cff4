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
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ...oracles.base import Oracle
from ...reference import backprop
from ...reference.case import DTYPES, FAMILY_NAMES, Case
from ...reports.records_io import RecordWriter, read_records, to_jsonable
from ..cases.case_io import save_case
from ..cases.strategies import cases as draw_cases

ORACLE_NAMES = ("fd", "torch", "jax")
MODES = ("reverse", "forward")
PRECISIONS = ("strict", "default")
DEVICES = ("cpu", "cuda", "gpu")


@dataclass(frozen=True)
class RunConfig:
    """What a campaign runs. ``cases`` is per family; devices name ``cpu``, ``cuda`` (PyTorch)
    and ``gpu`` (JAX): an oracle asked for a device it does not drive is skipped with a reason."""

    families: tuple[str, ...] = FAMILY_NAMES
    oracles: tuple[str, ...] = ORACLE_NAMES
    modes: tuple[str, ...] = MODES
    devices: tuple[str, ...] = ("cpu",)
    dtypes: tuple[str, ...] = DTYPES
    precisions: tuple[str, ...] = ("strict",)
    cases: int = 12
    seed: int = 0
    kinks: bool = False
    constraints: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, known in (("families", FAMILY_NAMES), ("oracles", ORACLE_NAMES),
                            ("modes", MODES), ("devices", DEVICES), ("dtypes", DTYPES),
                            ("precisions", PRECISIONS)):
            values = getattr(self, name)
            unknown = [v for v in values if v not in known]
            if not values or unknown:
                raise ValueError(f"--{name}: unknown {unknown or 'empty'}; expected some of "
                                 f"{', '.join(known)}")
        if self.cases < 0:
            raise ValueError(f"--cases must be >= 0, got {self.cases}")

    def to_json(self) -> dict:
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: dict) -> "RunConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
                  if k in fields}
        return cls(**values)


def make_oracles(config: RunConfig) -> list[Oracle]:
    """One oracle object per (name, mode, precision) requested."""
    made: list[Oracle] = []
    for name in config.oracles:
        if name == "fd":
            from ...oracles.finite_differences import FiniteDifferences
            made.append(FiniteDifferences())
            continue
        if name == "torch":
            from ...oracles.torch_oracle import TorchOracle as Framework
        else:
            from ...oracles.jax_oracle import JaxOracle as Framework
        made += [Framework(mode=m, precision=p) for m in config.modes for p in config.precisions]
    return made


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("backprop-oracle", "numpy", "torch", "jax", "jaxlib", "hypothesis"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def environment_of() -> dict[str, str]:
    """Library versions, the platform and the command line."""
    env: dict[str, str] = {k: v for k, v in versions().items()}
    env["platform"] = platform.platform()
    env["command"] = " ".join(sys.argv)
    return env


def environment(config: RunConfig, oracles: Sequence[Oracle]) -> dict[str, str]:
    """What the report records about the run: versions, devices, precision settings, seed."""
    env = environment_of()
    env["seed"] = str(config.seed)
    for oracle in oracles:
        for device in config.devices:
            if oracle.available(device) is None:
                env[f"{oracle.label}/{oracle.precision} on {device}"] = json.dumps(
                    to_jsonable(oracle.settings(device)), sort_keys=True)
    return env


def _record_dicts(records: Iterable[Any]) -> list[dict]:
    out = []
    for r in records:
        if dataclasses.is_dataclass(r):
            r = dataclasses.asdict(r)
        out.append(dict(r))
    return out


def compare_with_oracle(case: Case, reference: Any, oracle: Oracle, device: str,
                        out_dir: Path) -> list[dict]:
    """The records of one oracle on one case: a comparison, or an ``oracle_error`` /
    ``unsupported`` record when the oracle raised (the campaign goes on either way)."""
    from ..comparison.compare import compare, error_record

    try:
        result = oracle.run(case, device, case.dtype)
    except Exception as exc:  # recorded, never fatal: one oracle must not stop the run
        records = _record_dicts([error_record(case, oracle=oracle.name, mode=oracle.mode,
                                              device=device, dtype=case.dtype, exc=exc)])
    else:
        # FD refines its mode per case (fd or complex_step); other oracles keep their own
        mode = str(result.meta.get("method", oracle.mode)) if oracle.name == "fd" else oracle.mode
        records = _record_dicts(compare(case, reference, result, oracle=oracle.name, mode=mode,
                                        device=device, dtype=case.dtype))
    extra = {"precision": oracle.precision, "arch": case.describe(),
             "replay": f"backprop-oracle replay {case.case_id} --from {out_dir}"}
    return [{**r, **extra} for r in records]


def skip_records(config: RunConfig, oracle: Oracle, device: str, reason: str) -> list[dict]:
    return [{"quantity": "skip", "verdict": "unsupported", "detail": reason, "family": family,
             "oracle": oracle.name, "mode": oracle.mode, "precision": oracle.precision,
             "device": device, "dtype": dtype}
            for family in config.families for dtype in config.dtypes]


def draw(config: RunConfig) -> list[Case]:
    drawn: list[Case] = []
    for family in config.families:
        drawn += draw_cases(family, config.cases, config.seed, kinks=config.kinks,
                            **config.constraints)
    return drawn


def run(config: RunConfig, out_dir: Path,
        progress: Callable[[int, int], None] | None = None) -> int:
    """Run the campaign into ``out_dir`` (records appended per case); return the number of
    (case, dtype) units finished. The caller calls ``finish`` afterwards, also on
    interruption."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "records.jsonl").unlink(missing_ok=True)
    oracles = make_oracles(config)
    (out_dir / "run.json").write_text(json.dumps(config.to_json(), indent=1))
    (out_dir / "environment.json").write_text(
        json.dumps(environment(config, oracles), indent=1))
    if {"torch", "jax"} & set(config.oracles):
        from .conventions import measure

        (out_dir / "conventions.json").write_text(json.dumps(measure(config.devices), indent=1))
    runnable: list[tuple[Oracle, str]] = []
    done = 0
    with RecordWriter(out_dir / "records.jsonl") as writer:
        for oracle in oracles:
            for device in config.devices:
                reason = oracle.available(device)
                if reason:
                    writer.write(skip_records(config, oracle, device, reason))
                else:
                    runnable.append((oracle, device))
        units = [(case, dtype) for case in draw(config) for dtype in config.dtypes]
        for case, dtype in units:
            writer.write(run_case(case.astype(dtype), runnable, out_dir))
            done += 1
            if progress:
                progress(done, len(units))
    return done


def run_case(case: Case, runnable: Sequence[tuple[Oracle, str]], out_dir: Path) -> list[dict]:
    save_case(case, out_dir / "cases")
    start = time.perf_counter()
    try:
        reference = backprop(case)
    except Exception as exc:  # the reference itself failed: record it against every oracle
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return [{"case_id": case.case_id, "family": case.family, "oracle": "reference",
                 "mode": "reverse", "precision": "strict", "device": "cpu",
                 "dtype": case.dtype, "quantity": "loss", "name": "loss",
                 "verdict": "oracle_error", "detail": detail, "arch": case.describe()}]
    records = []
    for oracle, device in runnable:
        records += compare_with_oracle(case, reference, oracle, device, out_dir)
    elapsed = time.perf_counter() - start
    return [{**r, "seconds": round(elapsed, 4)} for r in records]


def finish(out_dir: Path, interrupted: bool = False) -> Any:
    """Build ``summary.json``, ``summary.md`` and ``report.html`` from the records so far."""
    from ...reports import html

    out_dir = Path(out_dir)
    records = out_dir / "records.jsonl"
    if not records.exists():
        records.touch()
    env_path = out_dir / "environment.json"
    env = json.loads(env_path.read_text()) if env_path.exists() else {}
    if interrupted:
        env["status"] = "interrupted: the report covers the cases finished before the stop"
    conventions_path = out_dir / "conventions.json"
    conventions = json.loads(conventions_path.read_text()) if conventions_path.exists() else []
    summary = html.build(records, out_dir, environment=env, conventions=conventions)
    data = summary.to_json()
    data["interrupted"] = interrupted
    (out_dir / "summary.json").write_text(json.dumps(to_jsonable(data), indent=1))
    return summary


def replay(case_id: str, out_dir: Path) -> list[dict]:
    """Re-run one recorded case with the oracles of the run that recorded it."""
    from ..cases.case_io import load_case

    out_dir = Path(out_dir)
    config_path = out_dir / "run.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{out_dir} holds no run.json: not the output of a run")
    config = RunConfig.from_json(json.loads(config_path.read_text()))
    case = load_case(out_dir / "cases", case_id)
    runnable = [(o, d) for o in make_oracles(config) for d in config.devices
                if o.available(d) is None]
    return run_case(case, runnable, out_dir)
