"""backprop-oracle: a verification harness for backpropagation.

``import backprop_oracle as bo``: ``bo.Case`` and the layer-spec constructors to write a
case by hand, ``bo.backprop(case)`` for the reference's answer. See DESIGN.md "Python API".
"""

from __future__ import annotations

from .reference import (
    Case, CaseError, Result, avgpool, backprop, conv2d, dense, dropout, flatten, l2pool,
    maxpool, node,
)

__all__ = [
    "Case", "CaseError", "Result", "avgpool", "backprop", "conv2d", "dense", "dropout",
    "flatten", "l2pool", "maxpool", "node",
]
