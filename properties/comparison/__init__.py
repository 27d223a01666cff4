"""Comparison: the ``records`` a comparison produces, the ``error_model`` its tolerances come
from, ``compare`` (two results, tensor by tensor) and ``evaluate`` (an implementation run on a
case, its records made once)."""

__all__ = ["compare", "error_model", "evaluate", "records"]
