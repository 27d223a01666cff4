"""benchmarks/timing.py: contenders warmed up, interleaved in alternating order, medians."""

from __future__ import annotations

import pytest

from benchmarks.timing import interleaved


def test_warm_up_then_alternating_rounds() -> None:
    calls: list[str] = []
    medians = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                          repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert set(medians) == {"a", "b"} and all(t >= 0 for t in medians.values())


def test_median_not_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    times = iter([1.0, 100.0, 2.0])  # one slow outlier round
    monkeypatch.setattr("benchmarks.timing.seconds", lambda fn: next(times))
    assert interleaved({"a": lambda: None}, repeats=3, warmup=0) == {"a": 2.0}


def test_at_least_one_repeat() -> None:
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        interleaved({"a": lambda: None}, repeats=0)
