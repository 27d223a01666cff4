"""``backprop-oracle run`` and ``replay``: exit codes 0 / 1 / 2 / 130, one-line usage errors,
the report path printed, and an interrupted run still writing its report."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from backprop_oracle import cli
from backprop_oracle.properties.campaign import engine as campaign
from backprop_oracle.properties.comparison.records import read_records

QUICK = ["--families", "graph,softmax", "--oracles", "fd", "--cases", "1", "--dtypes",
         "float64"]


def test_run_then_replay(tmp_path, capsys) -> None:
    assert cli.main(["run", *QUICK, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 cases" in out and str(tmp_path / "report.html") in out
    case_id = next(read_records(tmp_path / "records.jsonl"))["case_id"]
    assert cli.main(["replay", case_id, "--from", str(tmp_path)]) == 0
    assert "agree" in capsys.readouterr().out


def test_run_exit_one_on_a_divergence(tmp_path, monkeypatch, capsys) -> None:
    real = campaign.evaluate

    def planted(*args, **kwargs):
        return [replace(r, verdict="diverge") for r in real(*args, **kwargs)]

    monkeypatch.setattr(campaign, "evaluate", planted)  # in this process: --workers 1
    assert cli.main(["run", *QUICK, "--case-timeout", "0", "--workers", "1", "--out",
                     str(tmp_path)]) == 1
    assert "diverge" in capsys.readouterr().out


def test_interrupted_run_exits_130_with_a_report(tmp_path, monkeypatch, capsys) -> None:
    real = campaign.run

    def interrupted(config, out_dir, progress=None, stop=None, **kwargs):
        def after_the_first_case(done, total):
            stop.request()  # as the SIGINT handler does
        return real(config, out_dir, progress=after_the_first_case, stop=stop, **kwargs)

    monkeypatch.setattr(campaign, "run", interrupted)  # one case at a time: --workers 1
    assert cli.main(["run", *QUICK, "--case-timeout", "0", "--workers", "1", "--out",
                     str(tmp_path)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert json.loads((tmp_path / "summary.json").read_text())["interrupted"] is True
    assert len({r["case_id"] for r in read_records(tmp_path / "records.jsonl")}) == 1


@pytest.mark.parametrize("args, words", [
    (["run", "--families", "rnn"], "--families: unknown ['rnn']"),
    (["run", "--devices", "tpu"], "--devices: unknown ['tpu']"),
    (["run", "--cases", "-3"], "argument --cases: must be >= 1, got -3"),
    (["replay", "0123456789abcdef", "--from", "/nonexistent"], "holds no run.json"),
])
def test_bad_usage_is_one_line_and_exit_two(args, words, capsys) -> None:
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_version(capsys) -> None:
    from importlib.metadata import version

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"backprop-oracle {version('backprop-oracle')}"


@pytest.mark.parametrize("command", [[], ["run"], ["check"], ["replay"], ["vectors", "verify"]])
def test_help_states_exit_codes_and_case_id(command, capsys) -> None:
    assert cli.main([*command, "--help"]) == 0
    text = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "130 "):
        assert f"\n  {code}" in text, code
    assert "CASE_ID: the 16 hex digits" in text


def test_run_help_shows_every_default(capsys) -> None:
    assert cli.main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's wrapping
    for option, default in [("--families", "all"), ("--oracles", "all"), ("--modes", "both"),
                            ("--devices", "cpu"), ("--dtypes", "both"),
                            ("--precisions", "strict"), ("--cases", "12"), ("--seed", "0"),
                            ("--kinks", "off"), ("--out", "bo-out"),
                            ("--case-timeout", "600")]:
        help_text = text.split(option, 2)[-1].split(" --", 1)[0]  # the option's own line
        assert "default" in help_text and default in help_text, (option, help_text)


def test_drawing_cases_and_the_cli_need_no_hypothesis() -> None:
    """A bare install has no hypothesis (a dev dependency): ``bo.cases`` and ``run``'s
    imports must not need it."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "import backprop_oracle as bo\n"
            "assert len(bo.cases('mlp', 2)) == 2\n"
            "from backprop_oracle import cli\n"
            "from backprop_oracle.properties.campaign import engine\n"
            "from backprop_oracle.properties.check import api\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def _jax_run(out, *cache: str) -> dict:
    """A small JAX-only run as a new process (the persistent cache outlives processes);
    its environment.json's compile-cache entry."""
    import subprocess
    import sys

    pytest.importorskip("jax")
    command = [sys.executable, "-m", "backprop_oracle.cli", "run", "--oracles", "jax",
               "--families", "mlp", "--cases", "1", "--dtypes", "float32", *cache,
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(json.loads((out / "environment.json").read_text())["jax compile cache"])


def test_jax_programs_are_compiled_once_ever(tmp_path) -> None:
    """The second process finds every program in the persistent cache (``--compile-cache``);
    ``--no-compile-cache`` neither reads nor writes one."""
    cache = tmp_path / "cache"
    first = _jax_run(tmp_path / "a", "--compile-cache", str(cache))
    second = _jax_run(tmp_path / "b", "--compile-cache", str(cache))
    assert first["dir"] == str(cache) and first["misses"] > 0
    assert second["hits"] >= first["misses"] and second["misses"] == 0
    off = _jax_run(tmp_path / "c", "--no-compile-cache")
    assert off == {"dir": None, "hits": 0, "misses": 0}


@pytest.mark.parametrize("threads, expected", [("1", "1"), ("0", "library defaults")])
def test_threads_per_process_are_set_and_recorded(tmp_path, threads: str, expected: str) -> None:
    """``--threads 1`` (the default) pins BLAS to one thread in the run's process and says so
    in environment.json; ``--threads 0`` leaves the libraries' defaults."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "backprop_oracle.cli", "run", *QUICK, "--threads",
               threads, "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in __import__("os").environ.items()
                               if k not in ("BO_THREADS", "OMP_NUM_THREADS",
                                            "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    assert done.returncode == 0, done.stderr
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["threads per process"] == expected
    blas = [v for k, v in env.items() if k.startswith(("blas", "openmp"))]
    assert blas and (all(v == "1" for v in blas) if threads == "1" else True)
