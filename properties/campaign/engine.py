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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ...oracles import registry
from ...oracles._common import MODES, PRECISIONS
from ...oracles.base import Oracle
from ...reference import backprop
from ...reference.case import DTYPES, FAMILY_NAMES, Case
from ..cases.strategies import cases as draw_cases
from ..comparison.compare import where
from ..comparison.error_model import bounds
from ..comparison.evaluate import evaluate
from ..comparison.records import Record, error_record, replay_command, skip_record, to_jsonable
from .output import Output, environment_of

DEVICES = ("cpu", "cuda", "gpu")


@dataclass(frozen=True)
class RunConfig:
    """What a campaign runs. ``cases`` is per family; devices name ``cpu``, ``cuda`` (PyTorch)
    and ``gpu`` (JAX): an oracle asked for a device it does not drive is skipped with a reason."""

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
    return registry.build(config.oracles, config.modes, config.precisions)


def environment(config: RunConfig, oracles: Sequence[Oracle]) -> dict[str, str]:
    """What the report records about the run: versions, devices, precision settings, seed."""
    env = environment_of(seed=str(config.seed))
    for oracle in oracles:
        for device in config.devices:
            if oracle.available(device) is None:
                env[f"{oracle.label}/{oracle.precision} on {device}"] = json.dumps(
                    to_jsonable(oracle.settings(device)), sort_keys=True)
    return env


def skip_records(config: RunConfig, oracle: Oracle, device: str, reason: str) -> list[Record]:
    return [skip_record(family, oracle.name, oracle.mode, oracle.precision, device, dtype,
                        reason)
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
    (case, dtype) units finished. The caller calls ``output.finish`` afterwards, also on
    interruption."""
    oracles = make_oracles(config)
    runnable: list[tuple[Oracle, str]] = []
    done = 0
    with Output(out_dir) as output:
        output.describe(config.to_json(), environment(config, oracles))
        if {"torch", "jax"} & set(config.oracles):
            from .conventions import measure

            output.describe(conventions=measure(config.devices))
        for oracle in oracles:
            for device in config.devices:
                reason = oracle.available(device)
                if reason:
                    output.write(skip_records(config, oracle, device, reason))
                else:
                    runnable.append((oracle, device))
        units = [(case, dtype) for case in draw(config) for dtype in config.dtypes]
        for drawn, dtype in units:
            case = drawn.astype(dtype)
            output.save_case(case)
            output.write(run_case(case, runnable, output.directory))
            done += 1
            if progress:
                progress(done, len(units))
    return done


def run_case(case: Case, runnable: Sequence[tuple[Oracle, str]], out_dir: Path
             ) -> list[Record]:
    """Every runnable oracle on one case, against the reference (computed once, as are the
    error-model bounds)."""
    replay = replay_command(case.case_id, out_dir)
    try:
        reference = backprop(case)
        model = bounds(case)
    except Exception as exc:  # the reference itself failed: one record says so
        return [error_record(where(case, "reference", "reverse", "cpu", case.dtype,
                                   precision="strict", replay=replay), exc)]
    records: list[Record] = []
    for oracle, device in runnable:
        records += evaluate(case, oracle, device, reference=reference, model=model,
                            replay=replay)
    return records


def replay(case_id: str, out_dir: Path) -> list[Record]:
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
