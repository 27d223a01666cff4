"""backprop-oracle: a verification harness for backpropagation.

``import backprop_oracle as bo``: ``bo.Case`` and the layer-spec constructors to write a
case by hand, ``bo.backprop(case)`` for the reference's answer, ``bo.cases(...)`` to draw
cases, ``bo.check(impl, cases)`` / ``bo.check_training(impl, cases, bo.Training(...))`` to
verify another implementation. See docs/design.md "Contracts".

Every name loads on first use, so that the command line starts (and installs its signal
handlers) before NumPy and the rest are imported.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .properties.check import Report, Training, check, check_training
    from .reference import Case, CaseError, Result, backprop
    from .reference.case import avgpool, conv2d, dense, dropout, flatten, l2pool, maxpool, node

_WHERE = {
    **dict.fromkeys(("Case", "CaseError", "Result", "backprop"), ".reference"),
    **dict.fromkeys(("avgpool", "conv2d", "dense", "dropout", "flatten", "l2pool", "maxpool",
                     "node"), ".reference.case"),
    **dict.fromkeys(("check", "check_training", "Report", "Training"), ".properties.check"),
}


def cases(family: str, n: int = 100, seed: int = 0, **constraints: object) -> list[Case]:
    """``n`` cases of ``family`` (``mlp | cnn | softmax | graph``) drawn deterministically
    from ``seed``; ``constraints`` restrict them (``activations=[...]``, ``costs=[...]``,
    ``pools=[...]``, ``dtypes=[...]``, ``max_layers``, ``max_width``, ``max_batch``, ...)."""
    from .properties.cases.strategies import cases as draw_cases

    return draw_cases(family, n, seed, **constraints)


def __getattr__(name: str) -> object:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module 'backprop_oracle' has no attribute {name!r}")


__all__ = [
    "Case", "CaseError", "Report", "Result", "Training", "avgpool", "backprop", "cases", "check",
    "check_training", "conv2d", "dense", "dropout", "flatten", "l2pool", "maxpool", "node",
]
