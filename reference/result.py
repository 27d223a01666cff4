"""``Result``: what any implementation computes for a case (docs/design.md "Contracts")."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]


@dataclass
class Result:
    """``loss``; ``grads`` keyed like ``case.params``; ``deltas["delta<l>"] = dC/dz^l`` for
    each layer (or graph node) ``l`` from 1; ``input_grads["da<l>"] = dC/da^l``, the gradient
    with respect to layer ``l+1``'s input, at every boundary between layers (``l = 1..L-1``;
    optional: an implementation that returns them is located step by step, a layer's
    backward apart from the activation derivative below it); ``activations["a<l>"]`` and
    ``zs["z<l>"]``; ``gaps["gap<l>"]``: per max-pool window, maximum minus runner-up (0 marks a
    tie);
    ``meta``: how the result was obtained. Keys read by the comparison, which change
    verdicts and tolerances:

    * ``method`` — how it was computed (``reverse``, ``forward``, ``fd``, ``complex_step``,
      ``implementation``); FD's becomes the record's ``mode``;
    * ``dtype_computed`` (or ``dtype``) — the dtype the arithmetic ran in, which sets that
      side's unit roundoff;
    * ``fd_error`` — per tensor name, the finite-difference error estimate added to the
      tolerance;
    * ``kink_radius`` — per ``z<l>`` / ``a<l>``, the largest change an FD perturbation made in
      each sample: kinks within that reach may explain a disagreement;
    * ``problems`` — ``(tensor name, message)`` for each tensor an implementation returned
      missing or malformed (each becomes an ``oracle_error`` record);
    * ``versions`` — the oracle's library builds and device, copied into every record.

    Oracles add what they want recorded besides (``switches``, ``settings``, ``jit_cache``)."""

    loss: float | None
    grads: dict[str, Array]
    deltas: dict[str, Array] = field(default_factory=dict)
    activations: dict[str, Array] = field(default_factory=dict)
    zs: dict[str, Array] = field(default_factory=dict)
    gaps: dict[str, Array] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    input_grads: dict[str, Array] = field(default_factory=dict)
