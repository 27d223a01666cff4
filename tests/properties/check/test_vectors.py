"""Conformance vectors: export -> load round trip, verify of correct / wrong / missing results,
and every hostile file refused with a message naming the file and the problem."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import backprop_oracle as bo
from backprop_oracle.cli import main
from backprop_oracle.properties.check import vectors as V
from backprop_oracle.properties.check.vectors import VectorError

FAMILIES = ("mlp", "cnn", "softmax", "graph")
SMALL = {"max_width": 6, "max_batch": 4}
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "vectors_loop_mlp.py"


@pytest.fixture(scope="module")
def cases() -> list[bo.Case]:
    return [c for f in FAMILIES for c in bo.cases(f, 8, 0, **SMALL)]


@pytest.fixture(scope="module")
def exported(cases, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("vectors")
    V.export(directory, cases, seed=0, constraints=SMALL)
    return directory


def _answers(case: bo.Case) -> dict[str, np.ndarray]:
    r = bo.backprop(case)
    return {**r.grads, **r.deltas, "loss": np.asarray(r.loss, case.dtype)}


def _results(tmp_path: Path, cases, change=None, skip=()) -> Path:
    out = {}
    for c in cases:
        if c.case_id in skip:
            continue
        answers = _answers(c)
        if change:
            change(c, answers)
        out[c.case_id] = answers
    V.write_results(tmp_path / "results", out)
    return tmp_path / "results"


# ---------------------------------------------------------------- round trip and verify

def test_export_writes_index_json_and_npz_per_case(exported, cases) -> None:
    index = json.loads((exported / "index.json").read_text())
    assert index["schema_version"] == 1 and index["seed"] == 0
    assert index["generator"]["name"] == "backprop-oracle"
    assert [e["case_id"] for e in index["cases"]] == [c.case_id for c in cases]
    assert {e["family"] for e in index["cases"]} == set(FAMILIES)
    doc = json.loads((exported / f"{cases[0].case_id}.json").read_text())
    assert doc["schema_version"] == 1 and doc["layers"] == cases[0].spec()["layers"]
    conventions = " ".join(doc["conventions"].values()).lower()
    for words in ("(out, in)", "(out_channels, in_channels, k, k)", "nchw",
                  "cross-correlation", "zero padding", "a^(l-1) * mask / (1 - p)",
                  "relu'(0) = 0", "leaky_relu'(0) = 0.01", "first cell", "softmax(z) - t",
                  "mean over the batch"):
        assert words in conventions
    assert doc["tolerances"]["formula"] == "tol_i = kappa * (u_impl + u_ref) * E_i + floor"
    npz = exported / doc["files"]["arrays"]
    assert doc["files"]["sha256"] == hashlib.sha256(npz.read_bytes()).hexdigest()
    with np.load(npz, allow_pickle=False) as data:
        keys = set(data.files)
    assert {"x", "y", "loss", "tol/loss", "grad/W1", "tol/grad/W1", "delta/delta1",
            "tol/delta/delta1", "param/W1"} <= keys


def test_round_trip_gives_identical_cases_and_answers(exported, cases) -> None:
    loaded = V.load_vectors(exported)
    assert [v.case.case_id for v in loaded] == [c.case_id for c in cases]
    assert any(c.masks for c in cases)  # dropout masks travel too
    for v, c in zip(loaded, cases, strict=True):
        assert v.case.spec() == c.spec()
        for got, want in ((v.case.params, c.params), (v.case.masks, c.masks)):
            assert set(got) == set(want)
            for k in want:
                np.testing.assert_array_equal(got[k], want[k])
        np.testing.assert_array_equal(v.case.x, c.x)
        np.testing.assert_array_equal(v.case.y, c.y)
        ref = bo.backprop(c)
        assert v.expected.loss == ref.loss
        for k in ref.grads:
            np.testing.assert_array_equal(v.expected.grads[k], ref.grads[k])
        assert set(v.expected.deltas) == set(ref.deltas)
        assert set(v.tolerances) == {"loss", *ref.grads, *ref.deltas}
    assert [c.case_id for c in V.load_cases(exported)] == [c.case_id for c in cases]


def test_stored_tolerances_are_the_ones_verify_applies(exported, cases, tmp_path) -> None:
    results = _results(tmp_path, cases[:6])
    report = V.verify(exported, results)
    tols = {v.case.case_id: v.tolerances for v in V.load_vectors(exported)}
    compared = [r for r in report.records if r.quantity in ("grad", "delta", "loss")]
    assert compared
    for r in compared:
        tol = tols[r.case_id][r.name]
        assert r.tolerance == pytest.approx(float(tol[tuple(r.worst_index)]), rel=1e-12)


def test_verify_correct_results_agree_and_exit_zero(exported, cases, tmp_path, capsys) -> None:
    results = _results(tmp_path, cases)
    report = V.verify(exported, results)
    assert report.ok and report.counts() == {"agree": len(cases)}
    assert main(["vectors", "verify", str(exported), str(results), "--out",
                 str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"{len(cases)} cases: {len(cases)} agree" in out
    assert (tmp_path / "out" / "report.html").is_file()
    assert (tmp_path / "out" / "records.jsonl").is_file()


def test_one_wrong_element_diverges_names_case_and_tensor(exported, cases, tmp_path,
                                                          capsys) -> None:
    bad = next(c for c in cases if c.family == "cnn")

    def plant(case, answers):
        if case.case_id == bad.case_id:
            answers["W1"] = answers["W1"].copy()
            answers["W1"].flat[0] += 1e-2 * (1 + abs(answers["W1"].flat[0]))

    results = _results(tmp_path, cases, plant)
    report = V.verify(exported, results)
    assert not report.ok
    [failure] = report.failures()
    assert (failure.case_id, failure.name, failure.verdict) == (bad.case_id, "W1",
                                                                          "diverge")
    assert main(["vectors", "verify", str(exported), str(results), "--out",
                 str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.strip().startswith(bad.case_id))
    assert re.search(r"diverge \(wrong\)\s+W1\s", line), line


def test_missing_results_file_is_unsupported_not_a_crash(exported, cases, tmp_path) -> None:
    results = _results(tmp_path, cases, skip={cases[1].case_id, cases[9].case_id})
    report = V.verify(exported, results)
    assert report.counts() == {"agree": len(cases) - 2, "unsupported": 2}
    assert report.verdicts()[cases[1].case_id] == "unsupported"
    assert report.ok


def test_no_results_at_all_is_bad_input(exported, tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(VectorError, match="no results"):
        V.verify(exported, tmp_path / "empty")
    assert main(["vectors", "verify", str(exported), str(tmp_path / "empty")]) == 2


def test_bad_returns_in_results_are_oracle_errors(exported, cases, tmp_path) -> None:
    def wrong_shape(case, answers):
        if case.case_id == cases[0].case_id:
            answers["b1"] = answers["b1"][:-1] if answers["b1"].size > 1 else np.zeros(3)

    report = V.verify(exported, _results(tmp_path, cases[:1], wrong_shape))
    [failure] = report.failures()
    assert failure.verdict == "oracle_error" and "b1 has shape" in failure.detail["message"]


# ---------------------------------------------------------------- CLI

def test_cli_export_then_verify(tmp_path, capsys) -> None:
    d = tmp_path / "vec"
    assert main(["vectors", "export", str(d), "--families", "mlp,graph", "--cases", "2",
                 "--seed", "3", "--constraint", "max_width=4"]) == 0
    assert "4 cases, 9 files" in capsys.readouterr().out
    index = json.loads((d / "index.json").read_text())
    assert index["seed"] == 3 and index["constraints"] == {"max_width": 4}
    results = _results(tmp_path, V.load_cases(d))
    assert main(["vectors", "verify", str(d), str(results), "--out", str(tmp_path / "o")]) == 0


def _example():
    spec = importlib.util.spec_from_file_location("vectors_loop_mlp", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_outside_implementation_reads_and_writes_only_files(exported, tmp_path,
                                                                    monkeypatch) -> None:
    """examples/vectors_loop_mlp.py: its own check against the stored tolerances and verify
    agree on the dense cases, the others are unsupported; a planted bug (W1 gradient 1e-3 off
    in one element) is caught by both."""
    example = _example()
    assert example.main(exported, tmp_path / "ok") == 0
    report = V.verify(exported, tmp_path / "ok")
    assert report.ok and set(report.counts()) == {"agree", "unsupported"}
    assert report.counts()["agree"] == sum(c.family in ("mlp", "softmax")
                                           for c in V.load_cases(exported))
    right = example.gradients

    def planted(spec, arrays):
        grads = right(spec, arrays)
        grads["W1"].flat[0] += 1e-3 * (1 + abs(grads["W1"].flat[0]))
        return grads

    monkeypatch.setattr(example, "gradients", planted)
    assert example.main(exported, tmp_path / "bad") > 0
    bad = V.verify(exported, tmp_path / "bad")
    assert {r.name for r in bad.failures()} == {"W1"}


@pytest.mark.parametrize("args, words", [
    (["vectors", "export", "{tmp}/v", "--families", "rnn"], "unknown ['rnn']"),
    (["vectors", "export", "{tmp}/v", "--cases", "0"], "--cases: 0 cases compares nothing"),
    (["vectors", "export", "{tmp}/v", "--constraint", "max_width=0"], "max_width"),
    (["vectors", "verify", "{tmp}/nowhere", "{tmp}"], "not a directory of vectors"),
    (["vectors", "verify", "{tmp}", "{tmp}"], "no index.json"),
])
def test_cli_bad_usage_is_one_line_and_exit_two(args, words, tmp_path, capsys) -> None:
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
    assert err.startswith("backprop-oracle vectors ")


# ---------------------------------------------------------------- hostile files

@pytest.fixture
def one(cases, tmp_path) -> tuple[Path, str]:
    """A vectors directory with one small mlp case."""
    d = tmp_path / "vec"
    V.export(d, [cases[0]])
    return d, cases[0].case_id


def _reseal(d: Path, cid: str) -> None:
    """Make the JSON's sha256 match the (altered) .npz again."""
    doc = json.loads((d / f"{cid}.json").read_text())
    doc["files"]["sha256"] = hashlib.sha256((d / f"{cid}.npz").read_bytes()).hexdigest()
    (d / f"{cid}.json").write_text(json.dumps(doc))


def _rewrite(d: Path, cid: str, change) -> None:
    with np.load(d / f"{cid}.npz", allow_pickle=False) as data:
        arrays = {k: data[k].copy() for k in data.files}
    change(arrays)
    np.savez(d / f"{cid}.npz", **arrays)
    _reseal(d, cid)


def _edit_json(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _refused(d: Path, *words: str) -> str:
    with pytest.raises(VectorError) as info:
        V.load_vectors(d)
    message = str(info.value)
    if os.environ.get("BO_SHOW"):
        print("REFUSED:", message)
    for w in words:
        assert w in message, message
    return message


def test_malformed_json_is_refused(one) -> None:
    d, cid = one
    text = (d / f"{cid}.json").read_text()
    (d / f"{cid}.json").write_text(text[: len(text) // 2])
    _refused(d, f"{cid}.json", "malformed JSON", "line")
    (d / "index.json").write_text("[1, 2")
    _refused(d, "index.json", "malformed JSON")
    (d / "index.json").write_text('{"schema_version": NaN}')
    _refused(d, "index.json", "malformed JSON")
    (d / "index.json").write_text("[]")
    _refused(d, "index.json", "expected an object")


def test_truncated_or_corrupt_npz_is_refused(one) -> None:
    d, cid = one
    npz = d / f"{cid}.npz"
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])
    _refused(d, f"{cid}.npz", "sha256", "altered or truncated")
    _reseal(d, cid)
    _refused(d, f"{cid}.npz", "truncated or corrupt")
    npz.write_bytes(b"not a zip at all")
    _reseal(d, cid)
    _refused(d, f"{cid}.npz", "not a valid .npz")
    corrupt = bytearray(data)  # flip bytes inside the compressed data: a CRC or zlib error
    start = data.index(b"x.npy") + 200
    corrupt[start:start + 40] = bytes(b ^ 0xFF for b in corrupt[start:start + 40])
    npz.write_bytes(bytes(corrupt))
    _reseal(d, cid)
    _refused(d, f"{cid}.npz", "corrupt")


@pytest.mark.parametrize("compressed", [True, False])
def test_corrupt_array_data_is_refused(one, compressed) -> None:
    """Bytes flipped in the data of x (after its .npy header): a zlib error or a CRC
    mismatch, found when the data is read."""
    d, cid = one
    npz = d / f"{cid}.npz"
    if not compressed:
        _rewrite(d, cid, lambda a: None)  # np.savez: stored members
    with zipfile.ZipFile(npz) as z:
        info = z.getinfo("x.npy")
    data = bytearray(npz.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    end = start + info.compress_size
    for i in range(end - 8, end - 2):
        data[i] ^= 0x5A
    npz.write_bytes(bytes(data))
    _reseal(d, cid)
    _refused(d, f"{cid}.npz", "corrupt")


def test_object_and_pickled_arrays_are_refused(one) -> None:
    d, cid = one
    _rewrite(d, cid, lambda a: a.update(x=np.array([{"evil": 1}, None], dtype=object)))
    _refused(d, f"{cid}.npz", "'x'", "object or pickled")


def test_non_float_arrays_are_refused(one) -> None:
    d, cid = one
    _rewrite(d, cid, lambda a: a.update(x=a["x"].astype(np.int64)))
    _refused(d, f"{cid}.npz", "'x'", "int64")


def test_shapes_other_than_the_json_declares_are_refused(one) -> None:
    d, cid = one
    _rewrite(d, cid, lambda a: a.update(x=np.concatenate([a["x"], a["x"]])))
    _refused(d, f"{cid}.npz", "'x'", "shape", "JSON spec declares")
    _rewrite(d, cid, lambda a: a.pop("tol/grad/W1"))
    _refused(d, f"{cid}.npz", "missing tol/grad/W1")


@pytest.mark.parametrize("key", ["x", "param/W1", "tol/loss"])
def test_nan_and_inf_in_vectors_are_refused(one, key) -> None:
    d, cid = one

    def poison(a):
        a[key] = a[key].copy()
        a[key].flat[0] = np.nan if key != "tol/loss" else np.inf

    _rewrite(d, cid, poison)
    _refused(d, f"{cid}.npz", repr(key), "non-finite")


def test_altered_arrays_no_longer_match_the_case_id(one) -> None:
    d, cid = one

    def nudge(a):
        a["param/W1"] = a["param/W1"] * 1.5

    _rewrite(d, cid, nudge)
    _refused(d, f"{cid}.npz", "case id mismatch")


def test_altered_expected_values_are_caught_by_verify(one, cases, tmp_path) -> None:
    d, cid = one

    def nudge(a):
        a["grad/W1"] = a["grad/W1"] + 1.0

    _rewrite(d, cid, nudge)
    with pytest.raises(VectorError, match="stale or altered"):
        V.verify(d, _results(tmp_path, cases[:1]))


@pytest.mark.parametrize("bad_id", ["../x", "/etc/passwd", "..", "ABCDEF0123456789",
                                    "0123456789abcdef/../../x", 17])
def test_case_ids_that_are_not_hex_are_refused(one, bad_id) -> None:
    d, _ = one
    _edit_json(d / "index.json", lambda doc: doc["cases"][0].update(case_id=bad_id))
    _refused(d, "index.json", "not 16 lowercase hex digits")


@pytest.mark.parametrize("name", ["../x.npz", "/etc/passwd", "sub/0123456789abcdef.npz"])
def test_arrays_file_names_that_escape_are_refused(one, name) -> None:
    d, cid = one
    _edit_json(d / f"{cid}.json", lambda doc: doc["files"].update(arrays=name))
    _refused(d, f"{cid}.json", "refused")


def test_symlinks_pointing_outside_are_refused(one, tmp_path) -> None:
    d, cid = one
    outside = tmp_path / "elsewhere.npz"
    shutil.move(d / f"{cid}.npz", outside)
    os.symlink(outside, d / f"{cid}.npz")
    _refused(d, f"{cid}.npz", "outside")
    shutil.move(d / f"{cid}.json", tmp_path / "elsewhere.json")
    os.symlink(tmp_path / "elsewhere.json", d / f"{cid}.json")
    _refused(d, f"{cid}.json", "outside")


def _replace_member(npz: Path, member: str, data: bytes, file_size: int | None = None) -> None:
    with zipfile.ZipFile(npz) as z:
        others = {i.filename: z.read(i) for i in z.infolist() if i.filename != member}
    with zipfile.ZipFile(npz, "w") as z:
        for name, blob in others.items():
            z.writestr(name, blob)
        z.writestr(member, data)
        if file_size is not None:
            z.filelist[-1].file_size = file_size  # what the central directory declares


def test_huge_declared_npy_shape_is_refused_before_reading(one) -> None:
    d, cid = one
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    _replace_member(d / f"{cid}.npz", "x.npy", header.getvalue() + b"\0" * 64)
    _reseal(d, cid)
    start = time.perf_counter()
    _refused(d, f"{cid}.npz", "'x'", "(1000000000000,)", "more than the", "allowed")
    assert time.perf_counter() - start < 2


def test_negative_declared_npy_shape_is_refused(one) -> None:
    d, cid = one
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (-1, 10**12)})
    _replace_member(d / f"{cid}.npz", "x.npy", header.getvalue() + b"\0" * 64)
    _reseal(d, cid)
    _refused(d, f"{cid}.npz", "'x'", "negative shape")


def test_special_files_are_refused(one) -> None:
    d, cid = one
    (d / f"{cid}.json").unlink()
    (d / f"{cid}.json").mkdir()
    _refused(d, f"{cid}.json", "not a regular file")


def test_huge_declared_zip_member_size_is_refused(one) -> None:
    d, cid = one
    with zipfile.ZipFile(d / f"{cid}.npz") as z:
        x = z.read("x.npy")
    _replace_member(d / f"{cid}.npz", "x.npy", x, file_size=2**40)
    _reseal(d, cid)
    _refused(d, f"{cid}.npz", "'x'", "declares 1099511627776 bytes")


def test_npy_header_declaring_more_than_the_member_holds_is_refused(one) -> None:
    d, cid = one
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (1000, 1000)})
    _replace_member(d / f"{cid}.npz", "x.npy", header.getvalue() + b"\0" * 64)
    _reseal(d, cid)
    _refused(d, f"{cid}.npz", "'x'", "truncated or corrupt")


@pytest.mark.parametrize("which", ["index", "case"])
def test_unknown_schema_version_is_refused(one, which) -> None:
    d, cid = one
    path = d / ("index.json" if which == "index" else f"{cid}.json")
    _edit_json(path, lambda doc: doc.update(schema_version=2))
    _refused(d, path.name, "unknown schema_version 2")


def test_hostile_results_files_are_refused(one, cases, tmp_path, capsys) -> None:
    d, cid = one
    results = tmp_path / "results"
    results.mkdir()
    np.savez(results / f"{cid}.npz", W1=np.array([object()], dtype=object))
    with pytest.raises(VectorError, match="object or pickled"):
        V.verify(d, results)
    assert main(["vectors", "verify", str(d), str(results)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{cid}.npz" in err
    (results / f"{cid}.npz").unlink()
    V.write_results(tmp_path, {cid: _answers(cases[0])})
    os.symlink(tmp_path / f"{cid}.npz", results / f"{cid}.npz")
    with pytest.raises(VectorError, match="outside"):
        V.verify(d, results)


def test_cli_maps_a_hostile_vector_to_exit_two(one, tmp_path, capsys) -> None:
    d, cid = one
    (d / f"{cid}.json").write_text("{")
    assert main(["vectors", "verify", str(d), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "malformed JSON" in err and f"{cid}.json" in err
