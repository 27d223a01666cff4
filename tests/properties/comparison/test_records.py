"""records.jsonl: appended and flushed per batch; NaN/inf survive; a truncated last line
(an interrupted write) is skipped, every complete record before it is kept."""

from __future__ import annotations

import math

import numpy as np

from backprop_oracle.properties.comparison.records import (
    RecordWriter,
    number,
    read_records,
    to_jsonable,
)
from tests.reports._records import record


def test_records_round_trip_with_numpy_values(tmp_path) -> None:
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as writer:
        writer.write([record("a", margin=np.float32(0.5), worst_index=np.array([1, 2]))])
        writer.write([record("b", margin=float("nan")), record("c", margin=float("inf"))])
    got = list(read_records(path))
    assert [r["case_id"] for r in got] == ["a", "b", "c"]
    assert got[0]["margin"] == 0.5 and got[0]["worst_index"] == [1, 2]
    assert math.isnan(number(got[1]["margin"])) and number(got[2]["margin"]) == math.inf


def test_records_are_on_disk_before_close(tmp_path) -> None:
    path = tmp_path / "records.jsonl"
    writer = RecordWriter(path)
    writer.write([record("a")])
    assert [r["case_id"] for r in read_records(path)] == ["a"]  # visible while still open
    writer.close()


def test_truncated_last_line_is_skipped(tmp_path) -> None:
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as writer:
        writer.write([record("a"), record("b")])
    with open(path, "a") as f:
        f.write('{"case_id": "half-writ')  # a run killed mid-write
    assert [r["case_id"] for r in read_records(path)] == ["a", "b"]


def test_to_jsonable_handles_nested_numpy() -> None:
    value = {"x": (np.int64(3), [np.float64(-np.inf)]), 1: np.zeros(2)}
    assert to_jsonable(value) == {"x": [3, ["-inf"]], "1": [0.0, 0.0]}
