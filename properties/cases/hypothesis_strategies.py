"""Hypothesis strategies that draw whole, valid ``Case``s, for ``@given`` tests.

The builders are those of ``strategies`` (one per family); here every architectural choice
is a hypothesis draw, so failures shrink towards few, narrow layers and small batches. This
module is the only one that imports hypothesis (a ``dev`` dependency): the seeded drawer
(``strategies.cases``, ``case_at``, ``iter_cases``) and everything ``run``, ``check`` and
``bo.cases`` need work without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from ...reference.case import FAMILY_NAMES, Case
from .strategies import BUILDERS, Chooser, Constraints, Rejected, check_memory

__all__ = [
    "DrawChooser", "any_cases", "cnn_cases", "graph_cases", "mlp_cases", "softmax_cases",
]


class DrawChooser(Chooser):
    """The builders' choices drawn from hypothesis (so that they shrink)."""

    def __init__(self, draw: Callable[[st.SearchStrategy], Any]) -> None:
        self.draw = draw

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))


def _strategy(family: str, **constraints: Any) -> st.SearchStrategy[Case]:
    c = Constraints.make(**constraints)
    check_memory(family, c)
    builder = BUILDERS[family]

    @st.composite
    def draw_case(draw: Callable) -> Case:
        try:
            return builder(DrawChooser(draw), c)
        except Rejected:
            assume(False)
            raise  # unreachable: assume(False) stops the draw

    return draw_case()


def mlp_cases(**constraints: Any) -> st.SearchStrategy[Case]:
    return _strategy("mlp", **constraints)


def cnn_cases(**constraints: Any) -> st.SearchStrategy[Case]:
    return _strategy("cnn", **constraints)


def softmax_cases(**constraints: Any) -> st.SearchStrategy[Case]:
    return _strategy("softmax", **constraints)


def graph_cases(**constraints: Any) -> st.SearchStrategy[Case]:
    return _strategy("graph", **constraints)


def any_cases(families: Sequence[str] = FAMILY_NAMES, **constraints: Any
              ) -> st.SearchStrategy[Case]:
    return st.one_of([_strategy(f, **constraints) for f in families])
