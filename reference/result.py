"""``Result``: what any implementation computes for a case (DESIGN.md "Contracts")."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]


@dataclass
class Result:
    """``loss``; ``grads`` keyed like ``case.params``; ``deltas["delta<l>"] = dC/dz^l`` for
    each layer (or graph node) ``l`` from 1; ``activations["a<l>"]`` and ``zs["z<l>"]``;
    ``gaps["gap<l>"]``: per max-pool window, maximum minus runner-up (0 marks a tie);
    ``meta``: how the result was obtained (method, device, settings)."""

    loss: float | None
    grads: dict[str, Array]
    deltas: dict[str, Array] = field(default_factory=dict)
    activations: dict[str, Array] = field(default_factory=dict)
    zs: dict[str, Array] = field(default_factory=dict)
    gaps: dict[str, Array] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
