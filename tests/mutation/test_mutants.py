"""Detection power of ``bo.check``: every planted bug of ``mutants.py`` is found on a handful
of cases, the report names the layer where the bug enters, the tie-breakers blame the
implementation, and the correct implementation raises no alarm on the same cases."""

from __future__ import annotations

import pytest

import backprop_oracle as bo

from .mutants import BY_NAME, MUTANTS, Mutant, correct, sgd_step

CASES = 6
FAILING = ("diverge", "nan", "oracle_error")


def _cases(m: Mutant) -> list[bo.Case]:
    cases = m.cases(CASES, seed=0)
    assert cases, f"no case drawn that {m.name} can affect"
    return cases


def _changed_layers(m: Mutant, case: bo.Case) -> set[int]:
    """The layers whose parameter gradients the mutant's return differs from the reference's
    on ``case`` (bit for bit)."""
    from backprop_oracle.properties.comparison.compare import layer_of

    mine, right = m.impl(case), correct(case)
    return {layer_of(case, k) for k in right if k in mine and (
        mine[k].shape != right[k].shape or not (mine[k] == right[k]).all())} - {None}


@pytest.mark.parametrize("name", [m.name for m in MUTANTS if not m.training])
def test_mutant_is_detected_at_its_layer(name: str) -> None:
    m = BY_NAME[name]
    cases = _cases(m)
    report = bo.check(m.impl, cases, name=name, tiebreakers=())
    assert not report.ok, f"{name} went unnoticed on {len(cases)} cases"
    assert bo.check(correct, cases, tiebreakers=()).ok, "false alarm on the same cases"
    by_id = {c.case_id: c for c in cases}
    verdicts = report.verdicts()
    assert sum(v in FAILING for v in verdicts.values()) >= len(cases) // 2, verdicts
    if m.family == "graph":
        return  # graph nodes are not layers; the node is named by its delta record
    for r in report.failures():
        case = by_id[r.case_id]
        expected = m.layer(case)
        changed = _changed_layers(m, case)
        if expected not in changed:  # e.g. dead ReLUs: the bug's layer has zero gradients
            expected = max(changed)  # the highest layer the bug does change is named
        assert r.first_divergent_layer == expected, (
            f"{name}: case {r.case_id} ({r.arch}) named layer "
            f"{r.first_divergent_layer}, the bug enters at {expected}")


@pytest.mark.parametrize("name", ["sigma_prime_of_a", "conv_kernel_flipped",
                                  "softmax_gradient_t_minus_y"])
def test_tiebreakers_blame_the_mutant(name: str) -> None:
    pytest.importorskip("torch")
    m = BY_NAME[name]
    report = bo.check(m.impl, _cases(m)[:2], name=name, tiebreakers=("torch",))
    assert {r.detail["blame"] for r in report.failures()} == {name}


@pytest.mark.parametrize("name, first_step", [("momentum_wrong_sign", 1),
                                              ("schedule_one_step_late", 2)])
def test_training_mutant_is_detected_at_its_step(name: str, first_step: int) -> None:
    m = BY_NAME[name]
    cases = bo.cases("mlp", 3, seed=0, max_width=5, max_batch=4, max_layers=2)
    report = bo.check_training(m.impl, cases, bo.Training(), name=name)
    assert not report.ok
    assert min(r.step for r in report.failures()) == first_step
    assert bo.check_training(sgd_step, cases, bo.Training()).ok, "the correct step agrees"


def test_at_least_fifteen_mutants() -> None:
    assert len(MUTANTS) >= 15


POOL_MUTANTS = ["maxpool_gradient_to_last_cell", "maxpool_gradient_to_the_cell_after_the_argmax",
                "avgpool_gradient_not_divided", "l2pool_gradient_over_z_squared"]


@pytest.mark.parametrize("inputs", [True, False], ids=["with-da", "deltas-only"])
@pytest.mark.parametrize("name", POOL_MUTANTS)
def test_a_pooling_bug_is_named_at_the_pool_layer(name: str, inputs: bool) -> None:
    """``first_divergent_layer`` names the conv below a pool (its delta is the first wrong
    one), but replaying each step from the implementation's own gradients names the pool's
    own backward: exactly, when it returns its input gradients ``da<l>``; with deltas only,
    together with the activation derivative below (one step)."""
    from backprop_oracle.properties.comparison.compare import compare

    m = BY_NAME[name]
    kind = name.split("pool")[0]
    named = 0
    for case in _cases(m):
        result = m.result(case)
        if not inputs:
            result.input_grads = {}
        records = compare(case, bo.backprop(case), result, oracle=name, mode="reverse",
                          device="cpu", dtype=case.dtype)
        failing = [r for r in records if r.verdict in FAILING]
        if not failing:
            continue
        pool = m.layer(case) + 1
        sentence = f"enters in the backward of layer {pool} ({kind}pool"
        for r in failing:
            assert r.detail["enters"].startswith(sentence), (case.describe(), r.detail)
            exact = " or the activation derivative" not in r.detail["enters"]
            assert exact or not inputs, r.detail["enters"]
        named += 1
    assert named >= 2


@pytest.mark.parametrize("name", ["sigma_prime_of_a", "bp2_without_sigma_prime"])
def test_an_activation_derivative_bug_is_named_apart_from_the_layer_above(name: str) -> None:
    """With the input gradients returned, a wrong sigma' is "the activation derivative of
    layer l", not the backward of layer l+1."""
    from backprop_oracle.properties.comparison.compare import compare

    m = BY_NAME[name]
    for case in _cases(m)[:3]:
        records = compare(case, bo.backprop(case), m.result(case), oracle=name,
                          mode="reverse", device="cpu", dtype=case.dtype)
        failing = [r for r in records if r.verdict in FAILING]
        assert failing
        layer = m.layer(case)
        assert failing[0].detail["enters"].startswith(
            f"enters in the activation derivative of layer {layer} "), failing[0].detail
