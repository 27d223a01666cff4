"""The reference: the backpropagation equations in plain NumPy.

Pure functions on arrays, one module per family; nothing here imports from the rest of
``backprop_oracle``. ``backprop(case)`` is the reference's answer for any case.
"""

from __future__ import annotations

from . import graph, network
from .case import (
    ACTIVATION_NAMES, COST_NAMES, FAMILY_NAMES, Case, CaseError, Conv2d, Dense, Dropout,
    Flatten, Node, Pool, avgpool, conv2d, dense, dropout, flatten, l2pool, maxpool, node,
)
from .result import Result


def backprop(case: Case) -> Result:
    """Loss, gradients for every parameter and per-layer ``delta = dC/dz`` for ``case``."""
    if not isinstance(case, Case):
        raise TypeError(f"backprop needs a Case, got {type(case).__name__}")
    return graph.backprop(case) if case.family == "graph" else network.backprop(case)


__all__ = [
    "ACTIVATION_NAMES", "COST_NAMES", "FAMILY_NAMES", "Case", "CaseError", "Conv2d", "Dense",
    "Dropout", "Flatten", "Node", "Pool", "Result", "avgpool", "backprop", "conv2d", "dense",
    "dropout", "flatten", "l2pool", "maxpool", "node",
]
