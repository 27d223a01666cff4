"""backprop-oracle: a verification harness for backpropagation.

``import backprop_oracle as bo``: ``bo.Case`` and the layer-spec constructors to write a
case by hand, ``bo.backprop(case)`` for the reference's answer, ``bo.cases(...)`` to draw
cases. See DESIGN.md "Python API".
"""

from __future__ import annotations

from .reference import Case, CaseError, Result, backprop
from .reference.case import avgpool, conv2d, dense, dropout, flatten, l2pool, maxpool, node


def cases(family: str, n: int = 100, seed: int = 0, **constraints: object) -> list[Case]:
    """``n`` cases of ``family`` (``mlp | cnn | softmax | graph``) drawn deterministically
    from ``seed``; ``constraints`` restrict them (``activations=[...]``, ``costs=[...]``,
    ``pools=[...]``, ``dtypes=[...]``, ``max_layers``, ``max_width``, ``max_batch``, ...)."""
    from .properties.strategies import cases as draw_cases  # needs hypothesis installed

    return draw_cases(family, n, seed, **constraints)


__all__ = [
    "Case", "CaseError", "Result", "avgpool", "backprop", "cases", "conv2d", "dense", "dropout",
    "flatten", "l2pool", "maxpool", "node",
]
