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


def test_reading_only_some_cases_skips_nothing_it_should_return(tmp_path) -> None:
    """``read_records(path, case_ids)`` skips lines unparsed when they cannot hold one of the
    cases, and returns exactly what filtering every parsed record would: ids with quotes,
    backslashes or non-ASCII, ``"case_id": "x"`` inside another string, a nested key."""
    path = tmp_path / "records.jsonl"
    ids = ["a", 'q"uote', "back\\slash", "ünï", "x", "b"]
    with RecordWriter(path) as writer:
        writer.write([record(i) for i in ids])
        writer.write([record("c", arch='"case_id": "x"', detail={"case_id": "a"}),
                      record("d", detail={"note": 'see "case_id": "b"'})])
    for wanted in ({"a"}, {'q"uote', "back\\slash"}, {"ünï"}, {"x", "b"}, {"zzz"}, set(ids)):
        every = [r for r in read_records(path) if r["case_id"] in wanted]
        some = [r for r in read_records(path, case_ids=wanted) if r["case_id"] in wanted]
        assert some == every and len(some) == len(wanted & set(ids)), wanted
    # only the three lines whose id has an escape are parsed to be sure; the others are skipped
    assert [r["case_id"] for r in read_records(path, case_ids={"zzz"})] == ids[1:4]
