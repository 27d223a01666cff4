"""backprop-oracle: a verification harness for backpropagation.

``import backprop_oracle as bo``: ``bo.Case`` and the layer-spec constructors to write a
case by hand, ``bo.backprop(case)`` for the reference's answer, ``bo.cases(...)`` to draw
cases, ``bo.check(impl, cases)`` / ``bo.check_training(impl, cases, bo.Training(...))`` to
verify another implementation. See DESIGN.md "Python API".
"""

from __future__ import annotations

from .reference import Case, CaseError, Result, backprop
from .reference.case import avgpool, conv2d, dense, dropout, flatten, l2pool, maxpool, node


def cases(family: str, n: int = 100, seed: int = 0, **constraints: object) -> list[Case]:
    """``n`` cases of ``family`` (``mlp | cnn | softmax | graph``) drawn deterministically
    from ``seed``; ``constraints`` restrict them (``activations=[...]``, ``costs=[...]``,
    ``pools=[...]``, ``dtypes=[...]``, ``max_layers``, ``max_width``, ``max_batch``, ...)."""
    from .properties.cases.strategies import cases as draw_cases  # needs hypothesis installed

    return draw_cases(family, n, seed, **constraints)


def __getattr__(name: str) -> object:
    """``check``, ``check_training``, ``Report`` and ``Training`` load on first use."""
    if name in ("check", "check_training", "Report", "Training"):
        from .properties import check as module

        return getattr(module, name)
    raise AttributeError(f"module 'backprop_oracle' has no attribute {name!r}")


__all__ = [
    "Case", "CaseError", "Report", "Result", "Training", "avgpool", "backprop", "cases", "check",
    "check_training", "conv2d", "dense", "dropout", "flatten", "l2pool", "maxpool", "node",
]
