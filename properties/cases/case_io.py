"""Saving and loading cases without pickle: the spec as JSON (``Case.spec()``) and the arrays
in one ``.npz`` (``x``, ``y``, ``param/<name>``, ``mask/<name>``), loaded with
``allow_pickle=False``. Used by ``run`` (so that ``replay`` can re-run a recorded case) and
by the conformance vectors."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np

from ...reference.case import (
    Case,
    CaseError,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    Node,
    Pool,
    Spec,
)

__all__ = [
    "case_arrays", "case_from_parts", "load_case", "save_case", "spec_from_json", "SPEC_TYPES"
]

SPEC_TYPES = {"dense": Dense, "conv2d": Conv2d, "pool": Pool, "flatten": Flatten,
              "dropout": Dropout, "node": Node}


def spec_from_json(entry: dict[str, Any], where: str) -> Spec:
    """A layer spec from one entry of ``Case.spec()["layers"]``."""
    kind = entry.get("type")
    if kind not in SPEC_TYPES:
        raise CaseError(f"{where}: unknown layer type {kind!r}; expected one of "
                        f"{', '.join(SPEC_TYPES)}")
    fields = {k: v for k, v in entry.items() if k != "type"}
    if kind == "node":
        inputs = fields.get("inputs")
        if not isinstance(inputs, list):
            raise CaseError(f"{where}: node inputs must be a list")
        return Node(str(fields.get("op")), tuple(inputs))
    try:
        return SPEC_TYPES[kind](**fields)
    except TypeError as exc:
        raise CaseError(f"{where}: {exc}") from None


def case_arrays(case: Case) -> dict[str, np.ndarray]:
    arrays = {"x": case.x, "y": case.y}
    arrays.update({f"param/{k}": v for k, v in case.params.items()})
    arrays.update({f"mask/{k}": v for k, v in case.masks.items()})
    return arrays


def save_case(case: Case, directory: Path) -> Path:
    """Write ``<case_id>.json`` and ``<case_id>.npz`` into ``directory``. Each file is written
    under a temporary name and renamed into place, so that processes saving the same case at
    once (pytest-xdist workers) never leave a file half written or mixed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _atomic(directory / f"{case.case_id}.json") as f:
        f.write(json.dumps(case.spec(), indent=1).encode())
    # Any: numpy's stub would otherwise match the arrays against savez's allow_pickle
    arrays: dict[str, Any] = case_arrays(case)
    with _atomic(directory / f"{case.case_id}.npz") as f:
        np.savez(f, **arrays)
    return directory / f"{case.case_id}.json"


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` whole (renamed there once written) or not at
    all."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temporary, "wb") as f:
            yield f
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def case_from_parts(spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> Case:
    """Rebuild (and re-validate) a case from its JSON spec and its arrays."""
    layers = tuple(spec_from_json(e, f"layer {i}") for i, e in enumerate(spec["layers"], 1))
    params = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("param/")}
    masks = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("mask/")}
    for name in ("x", "y"):
        if name not in arrays:
            raise CaseError(f"array {name!r} is missing")
    return Case(family=spec["family"], layers=layers, cost=spec["cost"], params=params,
                x=arrays["x"], y=arrays["y"], masks=masks,
                dtype=cast(str, spec.get("dtype")),  # None (not in the spec): the arrays' dtype
                seed=spec.get("seed"))


def load_case(directory: Path, case_id: str) -> Case:
    """Load the case saved as ``<case_id>.json`` / ``.npz`` in ``directory``."""
    directory = Path(directory)
    spec_path = directory / f"{case_id}.json"
    if not spec_path.is_file():
        raise FileNotFoundError(f"no saved case {case_id!r} in {directory}")
    spec = json.loads(spec_path.read_text())
    with np.load(directory / f"{case_id}.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    case = case_from_parts(spec, arrays)
    if case.case_id != case_id:
        raise CaseError(f"saved case {case_id!r} reloads as {case.case_id!r}: files were altered")
    return case
