"""The reference: the backpropagation equations in plain NumPy.

Pure functions on arrays, one module per family (``dense``, ``conv``, ``pooling``, ``graph``,
``costs``, ``activations``, ``training``, ``init``), and ``layers``: the table of per-layer
rules (kind, forward, backward) that the network and the error model dispatch on. Nothing here
imports from the rest of ``backprop_oracle``. ``backprop(case)`` is the reference's answer for
any case. The layer-spec constructors live in ``reference.case`` (and on ``backprop_oracle``
itself), so that ``reference.dense`` is always the dense-layer module.
``layouts``: converting a case's arrays to other conventions (NHWC, HWIO, (in, out)) and
an adapter's gradients back (``bo.layouts``).
"""

from __future__ import annotations

from . import graph, layouts, network
from .case import Case, CaseError
from .result import Result


def backprop(case: Case) -> Result:
    """Loss, gradients for every parameter and per-layer ``delta = dC/dz`` for ``case``."""
    if not isinstance(case, Case):
        raise TypeError(f"backprop needs a Case, got {type(case).__name__}")
    return graph.backprop(case) if case.family == "graph" else network.backprop(case)


__all__ = ["Case", "CaseError", "Result", "backprop", "layouts"]
