"""Seeded drawing: case ``i`` comes from its own generator (``case_at``), ``iter_cases`` draws
lazily, bad seeds are named, and constraints whose cases would not fit in memory are refused
before anything is allocated."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import backprop_oracle as bo
from backprop_oracle.properties.cases import strategies as S

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("family", sorted(S.BUILDERS))
def test_case_at_is_deterministic_and_independent_of_the_other_indices(family: str) -> None:
    short = S.cases(family, 8, seed=5)
    long = S.cases(family, 100, seed=5)
    assert [c.case_id for c in short] == [c.case_id for c in long[:8]]
    assert S.case_at(family, 5, 7).case_id == short[7].case_id == long[7].case_id
    assert S.case_at(family, 5, 7).case_id != S.case_at(family, 6, 7).case_id
    later = list(S.iter_cases(family, 5, start=95, stop=100))
    assert [c.case_id for c in later] == [c.case_id for c in long[95:]]


def test_families_draw_from_different_streams() -> None:
    assert len(set(S.FAMILY_NUMBERS.values())) == len(S.FAMILY_NUMBERS) == len(S.BUILDERS)
    assert S.case_at("mlp", 0, 0).seed != S.case_at("softmax", 0, 0).seed


def test_iter_cases_does_not_draw_ahead() -> None:
    start = time.perf_counter()
    drawn = S.iter_cases("mlp", 0, 0, 10**12)
    first = [next(drawn) for _ in range(3)]
    assert time.perf_counter() - start < 5
    assert [c.case_id for c in first] == [c.case_id for c in S.cases("mlp", 3, seed=0)]
    endless = S.iter_cases("graph", 1)  # stop=None: without end
    assert next(endless).family == "graph"


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_a_bad_seed_is_named(seed: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        S.cases("mlp", 1, seed=seed)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        S.case_at("mlp", seed, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        bo.cases("mlp", 1, seed=seed)  # type: ignore[arg-type]


def test_bad_indices_are_named() -> None:
    with pytest.raises(ValueError, match="index"):
        S.case_at("mlp", 0, -1)
    with pytest.raises(ValueError, match="stop"):
        S.iter_cases("mlp", 0, 5, 2)


def test_a_huge_width_is_refused_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(S.BUDGET_ENV, raising=False)
    start = time.perf_counter()
    for draw in (lambda: bo.cases("mlp", 1, max_width=10_000_000),
                 lambda: S.case_at("softmax", 0, 0, max_width=10_000_000),
                 lambda: next(S.iter_cases("mlp", 0, max_width=10_000_000))):
        with pytest.raises(ValueError) as info:
            draw()
        message = str(info.value)
        assert message.startswith("max_width=10000000: ")
        assert "memory budget" in message and "BO_MEMORY_BUDGET" in message
        assert "max_batch" not in message  # only the constraint responsible is named
    with pytest.raises(ValueError, match="^max_image=100000: .*memory budget"):
        S.cases("cnn", 1, max_image=100_000)
    assert time.perf_counter() - start < 2


def test_the_environment_budget_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(S.BUDGET_ENV, "1K")
    with pytest.raises(ValueError, match=r"over the memory budget of 1\.0 KiB "
                                         r"\(BO_MEMORY_BUDGET=1K\)"):
        bo.cases("mlp", 1)
    monkeypatch.setenv(S.BUDGET_ENV, "2G")
    assert len(bo.cases("mlp", 2)) == 2
    monkeypatch.setenv(S.BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match="BO_MEMORY_BUDGET"):
        bo.cases("mlp", 1)


def test_the_budget_constraint_overrides_the_environment(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setenv(S.BUDGET_ENV, "1K")
    assert len(bo.cases("graph", 1, memory_budget="1G")) == 1
    with pytest.raises(ValueError, match="memory_budget=2048"):
        bo.cases("graph", 1, memory_budget=["2K"])  # as --constraint memory_budget=2K gives it
    with pytest.raises(ValueError, match="memory_budget must be a positive"):
        bo.cases("graph", 1, memory_budget=-3)


def test_the_per_case_guard_refuses_a_drawn_case_over_budget(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    c = S.Constraints.make()
    monkeypatch.setattr(S, "check_memory", lambda family, c: 0)  # past the up-front check
    monkeypatch.setenv(S.BUDGET_ENV, "1K")
    with pytest.raises(ValueError, match="a drawn mlp case needs about"):
        S.build_mlp(S.RngChooser(S.np.random.default_rng(0)), c)


def test_the_estimate_follows_its_formula() -> None:
    layers = (bo.dense(3, "relu"), bo.dense(2, "identity"))
    P, X, Y, A = 4 * 3 + 3 + 3 * 2 + 2, 5 * 4, 5 * 2, 5 * 3 + 5 * 2
    assert S.estimate_bytes(layers, (4,), 5, 4) == 4 * (2 * P + X + Y + 3 * A) + 8 * (
        4 * P + X + Y + 5 * A)
    image = (bo.conv2d(8, 1, 1, 2, "identity"), bo.flatten(), bo.dense(1, "identity"))
    assert S.estimate_bytes(image, (3, 10, 10), 2, 8) > 8 * 2 * 8 * 14 * 14  # z1 is 8x14x14
    assert S.parse_bytes("4G", "x") == 4 * 2**30 and S.parse_bytes(1000, "x") == 1000


def test_cli_refuses_a_huge_width_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "backprop_oracle.cli", "check", "examples/loop_mlp.py:adapter",
         "--constraint", "max_width=10000000", "--out", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "max_width=10000000" in lines[0], proc.stderr
    assert "memory budget" in lines[0]
