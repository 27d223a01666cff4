"""Bad input met the way a user meets it: the real CLI (and pytest) as a subprocess, handed the
real bad path. Each is refused with exit 2 (pytest: its usage-error code 4) and exactly one
line on stderr, before any work starts; nothing passes vacuously; a replay never overwrites the
report it came from (items 7-10 of the reliability issue)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import backprop_oracle as bo
from backprop_oracle.properties.check.vectors import load_cases, write_results

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "backprop_oracle.cli"]
QUICK_RUN = ["--families", "graph", "--oracles", "fd", "--cases", "1", "--dtypes", "float64"]
QUICK_CHECK = ["--families", "graph", "--cases", "1", "--no-tiebreak"]
UNWRITABLE = Path("/sys/bo-test")  # EPERM even for root, where chmod cannot take rights away

IMPL = '''\
import pathlib
import numpy as np
import backprop_oracle as bo


def impl(case):
    pathlib.Path(__file__).with_name("impl-was-called").touch()
    return dict(bo.backprop(case).grads)


def buggy(case):
    return {k: v * 2 + 1 for k, v in bo.backprop(case).grads.items()}


def infinite(case):
    grads = {k: v.copy() for k, v in bo.backprop(case).grads.items()}
    grads[sorted(grads)[0]][0] = np.inf
    return grads


def unsupported(case):
    raise NotImplementedError("this implementation has no graph support")
'''


def cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def one_line(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The one line on stderr of a process that exited ``code`` without a traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def write_impl(directory: Path) -> Path:
    path = directory / "impl.py"
    path.parent.mkdir()
    path.write_text(IMPL)
    return path


@pytest.fixture
def impl(tmp_path: Path) -> Path:
    """A user's implementation module (its directory name has a space in it)."""
    return write_impl(tmp_path / "my impl")


@pytest.fixture(scope="module")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A vectors directory of one graph case, exported by the CLI, and correct results."""
    root = tmp_path_factory.mktemp("vectors")
    proc = cli("vectors", "export", root / "vec", "--families", "graph", "--cases", "1")
    assert proc.returncode == 0, proc.stderr
    write_results(root / "results", {c.case_id: dict(bo.backprop(c).grads)
                                     for c in load_cases(root / "vec")})
    return root / "vec", root / "results"


def bad_out(tmp_path: Path, kind: str) -> Path:
    if kind == "unwritable":
        if not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and _can_mkdir(UNWRITABLE):
            pytest.skip("no directory here that this user cannot write into (/sys)")
        return UNWRITABLE
    (tmp_path / "a file").write_text("not a directory\n")
    return tmp_path / "a file" if kind == "file" else tmp_path / "a file" / "report"


def _can_mkdir(path: Path) -> bool:
    try:
        path.mkdir()
    except OSError:
        return False
    path.rmdir()
    return True


OUT_WORDS = {"file": "is a file, not a directory", "under a file": "is under a file",
             "unwritable": "is not writable (permission denied)"}


# ---------------------------------------------------------------- item 7: a bad --out


@pytest.mark.parametrize("kind", list(OUT_WORDS))
def test_run_refuses_a_bad_out_before_any_work(kind: str, tmp_path: Path) -> None:
    out = bad_out(tmp_path, kind)
    line = one_line(cli("run", *QUICK_RUN, "--out", out, cwd=tmp_path))
    assert line == f"backprop-oracle run: error: --out {out}: {OUT_WORDS[kind]}" + (
        f" ({tmp_path / 'a file'})" if kind == "under a file" else "")


@pytest.mark.parametrize("kind", list(OUT_WORDS))
def test_check_refuses_a_bad_out_before_calling_the_implementation(
        kind: str, tmp_path: Path, impl: Path) -> None:
    out = bad_out(tmp_path, kind)
    proc = cli("check", f"{impl}:impl", *QUICK_CHECK, "--out", out, cwd=tmp_path)
    assert OUT_WORDS[kind] in one_line(proc) and str(out) in proc.stderr
    assert proc.stdout == ""
    assert not (impl.parent / "impl-was-called").exists()  # the work was not started


@pytest.mark.parametrize("kind", list(OUT_WORDS))
def test_vectors_verify_refuses_a_bad_out_before_verifying(
        kind: str, tmp_path: Path, vectors: tuple[Path, Path]) -> None:
    out = bad_out(tmp_path, kind)
    proc = cli("vectors", "verify", *vectors, "--out", out, cwd=tmp_path)
    line = one_line(proc)
    assert line.startswith("backprop-oracle vectors verify: error: --out ")
    assert OUT_WORDS[kind] in line and proc.stdout == ""


@pytest.mark.parametrize("kind", list(OUT_WORDS))
def test_pytest_bo_report_refuses_a_bad_directory(kind: str, tmp_path: Path) -> None:
    out = bad_out(tmp_path, kind)
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_one.py", "--bo-report", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    line = one_line(proc, code=pytest.ExitCode.USAGE_ERROR)
    assert line == f"ERROR: --bo-report {out}: {OUT_WORDS[kind]}" + (
        f" ({tmp_path / 'a file'})" if kind == "under a file" else "")


# ---------------------------------------------------------------- item 8: replay in place


@pytest.fixture
def buggy_check(tmp_path: Path) -> tuple[Path, str, int]:
    """A failing check written to the default --out (bo-check in the working directory): its
    directory, the replay line of its first failing record, and its number of records."""
    impl = write_impl(tmp_path / "plain")
    proc = cli("check", f"{impl}:buggy", "--families", "graph", "--cases", "3",
               "--no-tiebreak", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    out = tmp_path / "bo-check"
    lines = (out / "records.jsonl").read_text().splitlines()
    replay = next(r["replay"] for r in map(json.loads, lines) if r["verdict"] == "diverge")
    return out, replay, len(lines)


def test_the_replay_line_of_a_report_does_not_overwrite_it(
        tmp_path: Path, buggy_check: tuple[Path, str, int]) -> None:
    out, replay, n_records = buggy_check
    before = (out / "records.jsonl").read_text()
    argv = shlex.split(replay)
    assert argv[:2] == ["backprop-oracle", "check"] and "--out" not in argv
    proc = cli(*argv[1:], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert (out / "records.jsonl").read_text() == before and n_records > 1
    case_id = argv[argv.index("--replay") + 1]
    again = tmp_path / f"bo-check-replay-{case_id}"
    assert f"report: {again / 'report.html'}" in proc.stdout
    replayed = (again / "records.jsonl").read_text().splitlines()
    assert {json.loads(line)["case_id"] for line in replayed} == {case_id}


def test_a_replay_into_its_own_from_directory_is_refused(
        tmp_path: Path, buggy_check: tuple[Path, str, int]) -> None:
    out, replay, _ = buggy_check
    before = (out / "records.jsonl").read_text()
    proc = cli(*shlex.split(replay)[1:], "--out", "./bo-check/", cwd=tmp_path)
    assert "is the --from directory: a replay must not overwrite the report it reads" in \
        one_line(proc)
    assert (out / "records.jsonl").read_text() == before


# ---------------------------------------------------------------- item 9: vacuous passes


@pytest.mark.parametrize("args, words", [
    (["run", "--seed", "-5"], ["argument --seed: must be >= 0, got -5"]),
    (["run", "--cases", "0"], ["argument --cases: 0 cases compares nothing"]),
    (["check", "json:loads", "--cases", "0"], ["--cases", "0"]),
    (["check", "json:loads", "--seed", "-1"], ["--seed", "-1"]),
    (["vectors", "export", "vec", "--cases", "0"], ["--cases", "0"]),
    (["vectors", "export", "vec", "--seed", "-3"], ["--seed", "-3"]),
])
def test_negative_seeds_and_zero_cases_are_refused(args: list[str], words: list[str],
                                                   tmp_path: Path) -> None:
    line = one_line(cli(*args, cwd=tmp_path))
    assert line.startswith(f"backprop-oracle {args[0]}") and all(w in line for w in words)
    assert list(tmp_path.iterdir()) == []  # no report, no vectors


def test_a_run_where_every_combination_is_skipped_is_not_a_pass(tmp_path: Path) -> None:
    proc = cli("run", *QUICK_RUN, "--devices", "gpu", "--out", tmp_path / "out")
    line = one_line(proc)
    assert line.startswith("backprop-oracle run: error: nothing was compared: all ")
    assert "records are skipped or unsupported (e.g. " in line
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["exit_code"] == 2
    assert "NOTHING COMPARED" in (tmp_path / "out" / "report.html").read_text()


def test_a_check_where_every_case_is_unsupported_is_not_a_pass(tmp_path: Path,
                                                                impl: Path) -> None:
    proc = cli("check", f"{impl}:unsupported", *QUICK_CHECK, "--out", tmp_path / "out")
    assert one_line(proc).startswith("backprop-oracle check: error: nothing was compared: ")
    assert "this implementation has no graph support" in proc.stderr


def _rewrite_index(vec: Path, tmp_path: Path, entries: object) -> Path:
    copy = tmp_path / "vec"
    copy.mkdir()
    for f in vec.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    index = json.loads((copy / "index.json").read_text())
    index["cases"] = entries(index["cases"])  # type: ignore[operator]
    (copy / "index.json").write_text(json.dumps(index))
    return copy


@pytest.mark.parametrize("entries, words", [
    (lambda cases: [], "index.json lists no cases"),
    (lambda cases: cases * 2, "listed twice"),
])
def test_vectors_verify_refuses_an_empty_or_duplicated_index(
        entries: object, words: str, tmp_path: Path, vectors: tuple[Path, Path]) -> None:
    vec, results = vectors
    proc = cli("vectors", "verify", _rewrite_index(vec, tmp_path, entries), results,
               "--out", tmp_path / "out")
    line = one_line(proc)
    assert line.startswith("backprop-oracle vectors verify: error: ") and words in line


# ---------------------------------------------------------------- item 10


def test_an_unknown_bo_profile_is_one_line_naming_the_known_ones() -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/reference/test_case.py", "-k", "no_such_test"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "BO_PROFILE": "bogus"})
    line = one_line(proc, code=pytest.ExitCode.USAGE_ERROR)
    assert line == ("ERROR: BO_PROFILE='bogus' is not a known hypothesis profile; expected "
                    "one of ci, thorough, gpu")


def test_replay_lines_are_shell_quoted_for_paths_with_spaces(tmp_path: Path,
                                                             impl: Path) -> None:
    out = tmp_path / "my reports" / "bo check"
    proc = cli("check", f"{impl}:buggy", *QUICK_CHECK, "--out", out)
    assert proc.returncode == 1, proc.stderr
    record = json.loads((out / "records.jsonl").read_text().splitlines()[0])
    assert shlex.split(record["replay"]) == [
        "backprop-oracle", "check", f"{impl}:buggy", "--replay", record["case_id"],
        "--from", str(out), "--no-tiebreak"]
    again = cli(*shlex.split(record["replay"])[1:])
    assert again.returncode == 1, again.stderr
    assert (out.parent / f"bo check-replay-{record['case_id']}" / "report.html").is_file()


def test_an_infinite_return_is_reported_as_infinite_not_nan(tmp_path: Path,
                                                            impl: Path) -> None:
    proc = cli("check", f"{impl}:infinite", *QUICK_CHECK, "--out", tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    assert re.search(r"p\d+: 1 infinite value\(s\) \(\+inf\) from the implementation, first "
                     r"at index \(0,\)", proc.stdout), proc.stdout
    assert "NaN" not in proc.stdout


def test_an_empty_batch_case_is_refused_before_backprop() -> None:
    with pytest.raises(bo.CaseError, match=r"x has an empty batch \(0 rows\)"):
        bo.Case(family="mlp", layers=(bo.dense(1, "sigmoid"),), cost="quadratic",
                params={"W1": np.ones((1, 3)), "b1": np.ones(1)}, x=np.zeros((0, 3)),
                y=np.zeros((0, 1)))
