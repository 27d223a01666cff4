"""``bo.check`` / ``bo.check_training`` and ``backprop-oracle check``: verdicts on correct and
planted-bug implementations, every kind of bad return named by case and parameter, tie-breaking
that says which side is wrong, reports written and escaped, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import backprop_oracle as bo
from backprop_oracle.cli import main
from backprop_oracle.properties.check import api as checking
from backprop_oracle.properties.comparison.records import Record
from backprop_oracle.reference import training as T

SMALL = {"max_width": 5, "max_batch": 4, "max_layers": 3}
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "loop_mlp.py"


def correct(case: bo.Case) -> dict:
    return dict(bo.backprop(case).grads)


def with_change(change):
    def impl(case: bo.Case) -> dict:
        grads = correct(case)
        change(case, grads)
        return grads
    return impl


@pytest.fixture(scope="module")
def mlp_cases() -> list[bo.Case]:
    return bo.cases("mlp", 4, seed=5, **SMALL)


def only_failure(report: bo.Report) -> Record:
    bad = report.failures()
    assert bad, report.summary()
    return bad[0]


def test_correct_implementation_agrees_on_every_family() -> None:
    for family in ("mlp", "cnn", "softmax", "graph"):
        report = bo.check(correct, family, n=3, seed=2, **SMALL)
        assert report.ok, report.summary()
        assert report.counts() == {"agree": 3}


def test_family_name_and_case_list_give_the_same_cases(mlp_cases) -> None:
    by_name = bo.check(correct, "mlp", n=4, seed=5, **SMALL)
    assert [c.case_id for c in by_name.cases] == [c.case_id for c in mlp_cases]
    assert bo.check(correct, mlp_cases[0]).counts() == {"agree": 1}
    with pytest.raises(TypeError, match=r"cases\[1\] is a str"):
        bo.check(correct, [mlp_cases[0], "mlp"])
    with pytest.raises(ValueError, match="unknown family 'rnn'"):
        bo.check(correct, "rnn")


def test_a_wrong_gradient_is_found_located_and_blamed(mlp_cases) -> None:
    def bump(case, grads):
        grads["W1"] = grads["W1"].copy()
        grads["W1"][0, 0] += np.asarray(1e-3, case.dtype)

    report = bo.check(with_change(bump), mlp_cases, name="bumped")
    assert not report.ok
    assert set(report.verdicts().values()) == {"diverge"}
    r = only_failure(report)
    assert r.name == "W1" and r.first_divergent_layer == 1
    assert r.detail["blame"] == "bumped"
    assert any(r.oracle in ("torch", "jax") for r in report.records), "tie-breakers ran"


def test_a_wrong_reference_is_blamed_when_the_frameworks_side_with_the_implementation(
        mlp_cases, monkeypatch) -> None:
    pytest.importorskip("torch")
    from backprop_oracle.oracles.torch_oracle import TorchOracle

    truth = {c.case_id: TorchOracle().run(c, "cpu", c.dtype).grads for c in mlp_cases}
    real = checking.backprop

    def broken_reference(case):
        result = real(case)
        result.grads["b1"] = result.grads["b1"] * 2
        return result

    monkeypatch.setattr(checking, "backprop", broken_reference)
    report = bo.check(lambda case: dict(truth[case.case_id]), mlp_cases, name="impl",
                      tiebreakers=("torch",))
    assert not report.ok
    assert {r.detail["blame"] for r in report.failures()} == {"reference"}


@pytest.mark.parametrize("returned, words", [
    (lambda case, g: [g], "returned list, expected a dict"),
    (lambda case, g: {k: v for k, v in g.items() if k != "b2"},
     "missing gradient b2 (expected keys W1, b1, W2, b2)"),
    (lambda case, g: {**g, "W9": g["W1"]}, "unexpected key(s) W9"),
    (lambda case, g: {**g, "W1": g["W1"].T.copy()}, "W1 has shape"),
    (lambda case, g: {**g, "b1": g["b1"].astype(np.float32)}, "b1 has dtype float32, the "
                                                                 "case is float64"),
    (lambda case, g: {**g, "W2": g["W2"].tolist()}, "W2 is a builtins.list, not a "
                                                    "numpy.ndarray"),
    (lambda case, g: {**g, "delta1": np.zeros((5, 3), np.float32)}, "delta1 has dtype float32"),
], ids=["not-a-dict", "missing", "extra", "shape", "dtype", "not-array", "delta-dtype"])
def test_bad_returns_name_the_case_and_the_parameter(returned, words) -> None:
    case = bo.Case(family="mlp", layers=(bo.dense(3, "tanh"), bo.dense(2, "sigmoid")),
                   cost="quadratic", params={
                       "W1": np.full((3, 4), 0.1), "b1": np.zeros(3),
                       "W2": np.full((2, 3), 0.2), "b2": np.zeros(2)},
                   x=np.ones((5, 4)), y=np.zeros((5, 2)))
    report = bo.check(lambda c: returned(c, correct(c)), [case], name="impl")
    r = only_failure(report)
    assert r.verdict == "oracle_error"
    assert words in r.detail["message"]
    assert case.case_id in r.detail["message"]


def test_a_bad_shape_does_not_hide_a_wrong_value_in_another_layer() -> None:
    """b1 of the wrong shape and b2 with the right shape but the wrong value (bias summed over
    the features instead of the batch): both are reported, and the case is located at layer 2,
    the higher of the two."""
    case = bo.Case(family="mlp", layers=(bo.dense(3, "tanh"), bo.dense(2, "identity")),
                   cost="quadratic", params={
                       "W1": np.full((3, 4), 0.1), "b1": np.zeros(3),
                       "W2": np.full((2, 3), 0.2), "b2": np.zeros(2)},
                   x=np.arange(8.0).reshape(2, 4) / 8, y=np.array([[1.0, -1.0], [0.5, 2.0]]))
    deltas = bo.backprop(case).deltas

    def wrong_axis(c: bo.Case) -> dict:
        return {**correct(c), "b1": deltas["delta1"].sum(axis=1),
                "b2": deltas["delta2"].sum(axis=1)}

    report = bo.check(wrong_axis, [case], name="impl", tiebreakers=())
    verdicts = {r.name: r.verdict for r in report.records}
    assert verdicts["b1"] == "oracle_error" and verdicts["b2"] == "diverge"
    assert verdicts["W1"] == verdicts["W2"] == "agree"
    assert {r.first_divergent_layer for r in report.records} == {2}
    assert "b1 has shape (2,), expected (3,)" in next(
        r.detail["message"] for r in report.records if r.name == "b1")


def test_non_finite_values_are_nan_verdicts_with_the_first_index(mlp_cases) -> None:
    def poison(case, grads):
        grads["W1"] = grads["W1"].copy()
        grads["W1"][0, 0] = np.nan

    r = only_failure(bo.check(with_change(poison), mlp_cases[:1], tiebreakers=()))
    assert r.verdict == "nan" and r.name == "W1"
    assert "W1: 1 NaN value(s) from the implementation, first at index (0, 0)" in \
        r.detail["message"]


def test_exceptions_are_recorded_and_not_implemented_is_unsupported(mlp_cases) -> None:
    def boom(case):
        raise RuntimeError("kaput")

    def partial(case):
        if len(case.layers) > 1:
            raise NotImplementedError("one layer only")
        return correct(case)

    r = only_failure(bo.check(boom, mlp_cases[:2]))
    assert r.verdict == "oracle_error" and "kaput" in r.detail["traceback"]
    report = bo.check(partial, mlp_cases)
    assert report.ok
    assert report.counts().get("unsupported", 0) >= 1


def test_write_gives_the_report_of_run_with_user_text_escaped(tmp_path, mlp_cases) -> None:
    def boom(case):
        raise RuntimeError("<script>alert(1)</script>")

    report = bo.check(boom, mlp_cases[:1], name="<script>impl</script>")
    path = report.write(tmp_path)
    html = path.read_text()
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdicts"]["oracle_error"] == 1
    assert (tmp_path / "cases" / f"{mlp_cases[0].case_id}.json").is_file()


def sgd(case: bo.Case, training: bo.Training, sign: float = 1.0, late: int = 0) -> list:
    velocity = training.velocity or {k: np.zeros_like(w) for k, w in case.params.items()}
    grads = bo.backprop(case).grads
    eta = training.eta(max(training.start - late, 0))
    w = {k: case.params[k] - eta * (sign * training.mu * velocity[k] + grads[k])
         for k in case.params}
    return [w]


@pytest.mark.parametrize("convention", T.CONVENTIONS)
def test_training_check_agrees_with_a_correct_optimiser(convention) -> None:
    def step(case, training):
        velocity = training.velocity or {k: np.zeros_like(w) for k, w in case.params.items()}
        w, _ = T.momentum_step(case.params, bo.backprop(case).grads, velocity,
                               training.eta(training.start), training.mu, convention)
        return [w]

    report = bo.check_training(step, "mlp", bo.Training(convention=convention), n=3, **SMALL)
    assert report.ok, report.summary()
    assert {r.step for r in report.records} == {0, 1, 2, 3}


@pytest.mark.parametrize("sign, late, first_step", [(-1.0, 0, 1), (1.0, 1, 2)],
                         ids=["momentum-sign", "schedule-late"])
def test_training_check_finds_optimiser_bugs_at_their_step(sign, late, first_step) -> None:
    report = bo.check_training(lambda c, t: sgd(c, t, sign, late), "mlp", n=2, **SMALL)
    assert not report.ok
    assert min(r.step for r in report.failures()) == first_step


def test_training_check_names_a_bad_return() -> None:
    report = bo.check_training(lambda c, t: c.params, "mlp", n=1, **SMALL)
    assert "expected a list with the parameters after the one step" in \
        only_failure(report).detail["message"]


def test_cli_checks_the_loop_example_and_counts_unsupported(tmp_path, capsys) -> None:
    code = main(["check", f"{EXAMPLE}:adapter", "--families", "mlp,cnn", "--cases", "3",
                 "--constraint", "max_width=5", "--constraint", "max_batch=3",
                 "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 agree, 3 unsupported" in out
    assert (tmp_path / "report.html").is_file()


def test_cli_exit_one_on_a_bug_and_replay_of_one_case(tmp_path, capsys) -> None:
    module = tmp_path / "buggy.py"
    module.write_text("import backprop_oracle as bo\n"
                      "def impl(case):\n"
                      "    g = dict(bo.backprop(case).grads)\n"
                      "    g['b1'] = g['b1'] * 2\n"
                      "    return g\n")
    out_dir = tmp_path / "out"
    assert main(["check", f"{module}:impl", "--families", "softmax", "--cases", "2",
                 "--no-tiebreak", "--out", str(out_dir)]) == 1
    records = [json.loads(line) for line in (out_dir / "records.jsonl").read_text().splitlines()]
    case_id = next(r["case_id"] for r in records if r["verdict"] == "diverge")
    capsys.readouterr()
    assert main(["check", f"{module}:impl", "--replay", case_id, "--from", str(out_dir),
                 "--no-tiebreak", "--out", str(tmp_path / "again")]) == 1
    assert "1 cases: 1 diverge" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["nocolon"], "expected MODULE:CALLABLE"),
    (["no_such_module_xyz:f"], "cannot import 'no_such_module_xyz'"),
    (["json:nothing_here"], "'json' has no attribute 'nothing_here'"),
    (["json:__doc__"], "is a str, not callable"),
    (["json:loads", "--families", "rnn"], "--families: unknown ['rnn']"),
    (["json:loads", "--constraint", "max_girth=3"], "unknown constraint(s) ['max_girth']"),
    (["json:loads", "--replay", "abc"], "--replay needs --from"),
])
def test_cli_bad_usage_is_one_line_and_exit_two(args, words, capsys, tmp_path) -> None:
    assert main(["check", *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
