"""backprop-oracle: a verification harness for backpropagation.

``import backprop_oracle as bo``: ``bo.Case`` and the layer-spec constructors to write a
case by hand, ``bo.backprop(case)`` for the reference's answer, ``bo.cases(...)`` to draw
cases, ``bo.check(impl, cases)`` / ``bo.check_training(impl, cases, bo.Training(...))`` to
verify another implementation. See docs/design.md "Contracts".

For adapters: the spec classes ``bo.Dense``, ``bo.Conv2d``, ``bo.Pool`` (``spec.kind`` is
``max | avg | l2``), ``bo.Flatten``, ``bo.Dropout``, ``bo.Node`` for ``isinstance``;
``case.walk()`` yields ``bo.LayerInfo`` records (index, spec, kind, parameters, shapes);
``bo.layouts`` converts a case to NHWC / HWIO / (in, out) and gradients back;
``bo.load_case(dir, case_id)`` reloads a saved case. README "Conventions for adapters".

Every name loads on first use, so that the command line starts (and installs its signal
handlers) before NumPy and the rest are imported.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .properties.check import Report, Training, check, check_training
    from .reference import Case, CaseError, Result, backprop, layouts
    from .reference.case import (
        LEAKY_SLOPE,
        Conv2d,
        Dense,
        Dropout,
        Flatten,
        LayerInfo,
        Node,
        Pool,
        avgpool,
        conv2d,
        dense,
        dropout,
        flatten,
        l2pool,
        maxpool,
        node,
    )

_WHERE = {
    **dict.fromkeys(("Case", "CaseError", "Result", "backprop", "layouts"), ".reference"),
    **dict.fromkeys(("avgpool", "conv2d", "dense", "dropout", "flatten", "l2pool", "maxpool",
                     "node", "Dense", "Conv2d", "Pool", "Flatten", "Dropout", "Node",
                     "LayerInfo", "LEAKY_SLOPE"), ".reference.case"),
    **dict.fromkeys(("check", "check_training", "Report", "Training"), ".properties.check"),
}


def cases(family: str, n: int = 100, seed: int = 0, **constraints: object) -> list[Case]:
    """``n`` cases of ``family`` (``mlp | cnn | softmax | graph``) drawn deterministically
    from ``seed``; ``constraints`` restrict them (``activations=[...]``, ``costs=[...]``,
    ``pools=[...]``, ``dtypes=[...]``, ``max_layers``, ``max_width``, ``max_batch``,
    ``targets="one_hot" | "soft" | "any"``, ``extreme_logits=False``, ...)."""
    from .properties.cases.strategies import cases as draw_cases

    return draw_cases(family, n, seed, **constraints)


def load_case(directory: str | Path, case_id: str) -> Case:
    """The case ``case_id`` saved by ``run`` or ``check`` (re-validated; its id checked):
    ``directory`` is their output folder (the case is under ``cases/``) or a folder of
    ``<case_id>.json`` / ``.npz`` files itself."""
    from .properties.cases.case_io import load_case as load

    folder = Path(directory)
    if not (folder / f"{case_id}.json").is_file() and (folder / "cases" / f"{case_id}.json"
                                                        ).is_file():
        folder = folder / "cases"
    return load(folder, case_id)


def __getattr__(name: str) -> object:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module 'backprop_oracle' has no attribute {name!r}")


__all__ = [
    "LEAKY_SLOPE", "Case", "CaseError", "Conv2d", "Dense", "Dropout", "Flatten", "LayerInfo",
    "Node", "Pool", "Report", "Result", "Training", "avgpool", "backprop", "cases", "check",
    "check_training", "conv2d", "dense", "dropout", "flatten", "l2pool", "layouts", "load_case",
    "maxpool", "node",
]
