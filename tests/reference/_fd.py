"""Plain central differences for the reference's own tests (float64, one element at a time).

``fd_grads(case)`` perturbs every parameter element by ``+-h`` and differentiates the loss of
``bo.backprop``: ``(C(w + h) - C(w - h)) / 2h``. With ``h = 1e-6`` in float64 the truncation
error is ``O(h^2 |C'''|) ~ 1e-12`` and the rounding error ``O(eps |C| / h) ~ 1e-10 |C|``, so
``TOL = 1e-7`` relative to ``max(1, |g|)`` separates a correct gradient from any real bug.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

import backprop_oracle as bo

H = 1e-6
TOL = 1e-7


def loss_at(case: bo.Case, name: str, index: tuple[int, ...], value: float) -> float:
    param = np.array(case.params[name], copy=True)
    param[index] = value
    return bo.backprop(case.with_arrays(params={**case.params, name: param})).loss


def fd_grads(case: bo.Case, h: float = H) -> dict[str, NDArray[np.float64]]:
    """Central-difference gradient of the loss for every parameter of ``case``."""
    assert case.dtype == "float64", "central differences need float64"
    grads = {}
    for name, param in case.params.items():
        g = np.zeros_like(param)
        for index in np.ndindex(param.shape):
            w = float(param[index])
            up, down = loss_at(case, name, index, w + h), loss_at(case, name, index, w - h)
            g[index] = (up - down) / (2 * h)
        grads[name] = g
    return grads


def assert_matches_fd(case: bo.Case, tol: float = TOL) -> None:
    """Every reference gradient equals its central difference within ``tol * max(1, |g|)``."""
    ours = bo.backprop(case).grads
    theirs = fd_grads(case)
    assert set(ours) == set(theirs)
    for name in theirs:
        bound = tol * np.maximum(1.0, np.abs(theirs[name]))
        err = np.abs(ours[name] - theirs[name])
        worst = np.unravel_index(np.argmax(err - bound), err.shape)
        assert np.all(err <= bound), (
            f"{name}: |backprop - fd| = {err[worst]:.3g} at {worst} exceeds {bound[worst]:.3g}")
