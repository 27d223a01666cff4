"""``Case``: validation with messages that say what is wrong and where, a stable ``case_id``,
read-only arrays, ``with_arrays`` and ``astype``."""

from __future__ import annotations

import re

import numpy as np
import pytest

import backprop_oracle as bo
from backprop_oracle.reference.case import CaseError, Dense, layer_shapes


def mlp_case(**changes: object) -> bo.Case:
    """2 samples, 4 features -> dense(3, tanh) -> dense(1, sigmoid), quadratic."""
    rng = np.random.default_rng(0)
    fields: dict[str, object] = dict(
        family="mlp",
        layers=(bo.dense(3, "tanh"), bo.dense(1, "sigmoid")),
        cost="quadratic",
        params={"W1": rng.standard_normal((3, 4)), "b1": rng.standard_normal(3),
                "W2": rng.standard_normal((1, 3)), "b2": rng.standard_normal(1)},
        x=rng.standard_normal((2, 4)),
        y=rng.random((2, 1)),
    )
    fields.update(changes)
    return bo.Case(**fields)  # type: ignore[arg-type]


def cnn_case(layers: tuple, x_shape: tuple[int, ...] = (2, 1, 4, 4), **changes: object
             ) -> bo.Case:
    rng = np.random.default_rng(1)
    shapes = layer_shapes(layers, x_shape[1:])
    params = {k: rng.standard_normal(v) for k, v in shapes.items() if not k.startswith("z")}
    y = rng.random((x_shape[0], *shapes[f"z{len(layers)}"]))
    fields: dict[str, object] = dict(family="cnn", layers=layers, cost="quadratic",
                                     params=params, x=rng.standard_normal(x_shape), y=y)
    fields.update(changes)
    return bo.Case(**fields)  # type: ignore[arg-type]


def graph_case(layers: tuple, x: np.ndarray | None = None) -> bo.Case:
    x = np.ones((2, 3)) if x is None else x
    return bo.Case(family="graph", layers=layers, cost="quadratic", params={"p1": np.ones(3)},
                   x=x, y=np.zeros((2, 3)))


# --- bad input: every case raises CaseError (a ValueError) naming what and where -------------


def test_case_error_is_a_value_error() -> None:
    assert issubclass(CaseError, ValueError)


def test_unknown_activation() -> None:
    with pytest.raises(CaseError, match=r"unknown activation 'softmax'; expected one of "
                                        r"sigmoid, tanh, relu, leaky_relu, identity"):
        bo.dense(3, "softmax")
    with pytest.raises(CaseError, match="unknown activation 'gelu'"):
        bo.conv2d(2, 3, activation="gelu")


def test_unknown_cost() -> None:
    with pytest.raises(CaseError, match=r"unknown cost 'mse'; expected one of quadratic, "
                                        r"cross_entropy, softmax_cross_entropy"):
        mlp_case(cost="mse")


def test_unknown_family_and_graph_op() -> None:
    with pytest.raises(CaseError, match="unknown family 'rnn'"):
        mlp_case(family="rnn")
    with pytest.raises(CaseError, match="unknown graph op 'sqrt'"):
        bo.node("sqrt", "x")
    with pytest.raises(CaseError, match=r"graph op 'mul' takes 2 input\(s\), got 1"):
        bo.node("mul", "x")


@pytest.mark.parametrize(("make", "message"), [
    (lambda: bo.dense(0), "dense units must be an integer >= 1, got 0"),
    (lambda: bo.dense(-2), "dense units must be an integer >= 1, got -2"),
    (lambda: bo.dense(2.5), "dense units must be an integer >= 1, got 2.5"),
    (lambda: bo.conv2d(0, 3), "conv2d out_channels must be an integer >= 1, got 0"),
    (lambda: bo.conv2d(2, 0), "conv2d kernel must be an integer >= 1, got 0"),
    (lambda: bo.conv2d(2, 3, stride=0), "conv2d stride must be an integer >= 1, got 0"),
    (lambda: bo.conv2d(2, 3, padding=-1), "conv2d padding must be an integer >= 0, got -1"),
    (lambda: bo.maxpool(0), "maxpool size must be an integer >= 1, got 0"),
    (lambda: bo.avgpool(2, 0), "avgpool stride must be an integer >= 1, got 0"),
    (lambda: bo.l2pool(-1, 1), "l2pool size must be an integer >= 1, got -1"),
    (lambda: bo.dropout(1.0), r"dropout p must be a number in \[0, 1\), got 1.0"),
])
def test_non_positive_sizes(make, message: str) -> None:
    with pytest.raises(CaseError, match=message):
        make()


def test_kernel_larger_than_padded_input_names_the_layer() -> None:
    layers = (bo.conv2d(1, 3), bo.conv2d(1, 5, padding=1), bo.flatten(), bo.dense(1))
    with pytest.raises(CaseError, match=re.escape(
            "layer 2 (conv2d(1, k=5, s=1, p=1, relu)): kernel 5 is larger than the padded "
            "input 4x4")):
        cnn_case(layers, x_shape=(2, 1, 4, 4))


def test_pool_that_does_not_fit_names_the_layer() -> None:
    layers = (bo.conv2d(1, 2), bo.maxpool(4), bo.flatten(), bo.dense(1))
    with pytest.raises(CaseError, match=re.escape(
            "layer 2 (maxpool(4, s=4)): window 4x4 does not fit the 3x3 input")):
        cnn_case(layers)


def test_missing_parameter() -> None:
    case = mlp_case()
    params = {k: v for k, v in case.params.items() if k != "W2"}
    with pytest.raises(CaseError, match="missing parameters W2$"):
        case.with_arrays(params=params)


def test_extra_parameter() -> None:
    case = mlp_case()
    with pytest.raises(CaseError, match="unexpected parameters W3; expected only W1, W2, b1, b2"):
        case.with_arrays(params={**case.params, "W3": np.ones((1, 1))})


def test_misshaped_parameter_names_expected_and_found() -> None:
    case = mlp_case()
    with pytest.raises(CaseError, match=re.escape(
            "parameter W1 has shape (4, 3), expected (3, 4)")):
        case.with_arrays(params={**case.params, "W1": np.ones((4, 3))})
    with pytest.raises(CaseError, match=re.escape("parameter b2 has shape (2,), expected (1,)")):
        case.with_arrays(params={**case.params, "b2": np.ones(2)})


def test_targets_of_the_wrong_shape() -> None:
    with pytest.raises(CaseError, match=re.escape(
            "y (targets) has shape (2, 3), expected (2, 1)")):
        mlp_case(y=np.zeros((2, 3)))
    with pytest.raises(CaseError, match=re.escape(
            "y (targets) has shape (2, 2), expected (2, 3)")):
        graph_case((bo.node("neg", "x"),)).with_arrays(y=np.zeros((2, 2)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_array_and_index(bad: float) -> None:
    case = mlp_case()
    x = np.array(case.x)
    x[1, 2] = bad
    with pytest.raises(CaseError, match=re.escape("x has a non-finite value at index (1, 2)")):
        case.with_arrays(x=x)
    W1 = np.array(case.params["W1"])
    W1[2, 0] = bad
    with pytest.raises(CaseError, match=re.escape(
            "parameter W1 has a non-finite value at index (2, 0)")):
        case.with_arrays(params={**case.params, "W1": W1})
    y = np.array(case.y)
    y[0, 0] = bad
    with pytest.raises(CaseError, match=re.escape("y has a non-finite value at index (0, 0)")):
        case.with_arrays(y=y)


def test_non_finite_graph_constant() -> None:
    with pytest.raises(CaseError, match=re.escape("node 1 (add(x, inf)) has a non-finite "
                                                  "constant")):
        graph_case((bo.node("add", "x", float("inf")),))


def test_wrong_dtype_mix() -> None:
    case = mlp_case()
    with pytest.raises(CaseError, match="parameter b1 has dtype float32, but the case dtype is "
                                        "float64"):
        case.with_arrays(params={**case.params, "b1": case.params["b1"].astype(np.float32)})
    with pytest.raises(CaseError, match="y has dtype float32, but the case dtype is float64"):
        case.with_arrays(y=case.y.astype(np.float32))
    with pytest.raises(CaseError, match="x has dtype float64, but the case dtype is float32"):
        mlp_case(dtype="float32")
    with pytest.raises(CaseError, match="x must be float32 or float64, got int64"):
        case.with_arrays(x=np.ones((2, 4), dtype=np.int64))
    with pytest.raises(CaseError, match="x must be a numpy array, got list"):
        case.with_arrays(x=[[1.0] * 4] * 2)


def test_dense_after_4d_input_without_flatten() -> None:
    layers = (bo.conv2d(1, 2), bo.dense(1))
    with pytest.raises(CaseError, match=re.escape(
            "layer 2 (dense(1, sigmoid)) needs 2-D input (N, features), got (N, (1, 3, 3)); "
            "insert flatten() first")):
        layer_shapes(layers, (1, 4, 4))
    with pytest.raises(CaseError, match=r"layer 2 \(dense\(1, sigmoid\)\) needs 2-D input"):
        bo.Case(family="cnn", layers=layers, cost="quadratic",
                params={"W1": np.ones((1, 1, 2, 2)), "b1": np.ones(1),
                        "W2": np.ones((1, 9)), "b2": np.ones(1)},
                x=np.ones((1, 1, 4, 4)), y=np.ones((1, 1)))


def test_softmax_cost_on_non_identity_output() -> None:
    with pytest.raises(CaseError, match="cost 'softmax_cross_entropy' takes logits; layer 2 has "
                                        "activation 'sigmoid', expected 'identity'"):
        mlp_case(cost="softmax_cross_entropy", y=np.ones((2, 1)))


def test_softmax_targets_must_be_distributions() -> None:
    rows = np.array([[0.5, 0.6], [0.5, 0.5]])
    with pytest.raises(CaseError, match="targets must be non-negative rows summing to 1"):
        bo.Case(family="softmax", layers=(bo.dense(2, "identity"),),
                cost="softmax_cross_entropy", params={"W1": np.ones((2, 4)), "b1": np.ones(2)},
                x=np.ones((2, 4)), y=rows)


def test_cross_entropy_needs_sigmoid_and_targets_in_unit_interval() -> None:
    y = np.array([[0.5], [1.5]])
    with pytest.raises(CaseError, match=re.escape(
            "cross_entropy targets must lie in [0, 1]; y at index (1, 0) is 1.5")):
        mlp_case(cost="cross_entropy", y=y)
    with pytest.raises(CaseError, match="cost 'cross_entropy' needs a sigmoid output; layer 2 "
                                        "has 'tanh'"):
        mlp_case(cost="cross_entropy", layers=(bo.dense(3, "tanh"), bo.dense(1, "tanh")))


def test_family_requirements() -> None:
    with pytest.raises(CaseError, match="family 'cnn' needs at least one conv2d layer"):
        mlp_case(family="cnn")
    with pytest.raises(CaseError, match="family 'softmax' needs cost 'softmax_cross_entropy', "
                                        "got 'quadratic'"):
        mlp_case(family="softmax")
    with pytest.raises(CaseError, match="the last layer must be dense, got maxpool"):
        cnn_case((bo.conv2d(1, 2), bo.maxpool(2, 1)))


def test_dropout_masks_are_checked() -> None:
    layers = (bo.dense(3, "tanh"), bo.dropout(0.5), bo.dense(1, "sigmoid"))
    with pytest.raises(CaseError, match="missing masks mask2"):
        mlp_case(layers=layers)
    with pytest.raises(CaseError, match="mask mask2 must contain only 0 and 1"):
        mlp_case(layers=layers, masks={"mask2": np.full((2, 3), 0.5)})
    with pytest.raises(CaseError, match=re.escape("mask mask2 has shape (2, 4), expected (2, 3)")):
        mlp_case(layers=layers, masks={"mask2": np.ones((2, 4))})


def test_graph_node_referring_to_a_later_node() -> None:
    with pytest.raises(CaseError, match=re.escape(
            "node 1 (add(x, 2)) refers to node 2; only earlier nodes 1..0 can be inputs")):
        graph_case((bo.node("add", "x", 2), bo.node("neg", "x")))
    with pytest.raises(CaseError, match=re.escape("node 2 (neg(2)) refers to node 2")):
        graph_case((bo.node("neg", "x"), bo.node("neg", 2)))


def test_graph_node_referring_to_an_unknown_leaf() -> None:
    with pytest.raises(CaseError, match=re.escape(
            "node 2 (mul(1, p7)) refers to unknown leaf 'p7'")):
        graph_case((bo.node("neg", "x"), bo.node("mul", 1, "p7")))


def test_graph_log_of_non_positive_and_division_by_zero() -> None:
    x = np.array([[1.0, 2.0, 3.0], [1.0, -1.0, 2.0]])
    with pytest.raises(CaseError, match=re.escape(
            "node 2 (log(1)): log of a non-positive value")):
        bo.backprop(graph_case((bo.node("mul", "x", "p1"), bo.node("log", 1)), x=x))
    with pytest.raises(CaseError, match=re.escape("node 1 (div(p1, x)): division by zero")):
        bo.backprop(graph_case((bo.node("div", "p1", "x"),), x=np.zeros((2, 3))))
    with pytest.raises(CaseError, match=re.escape("node 1 (exp(x)) produced a non-finite value")):
        bo.backprop(graph_case((bo.node("exp", "x"),), x=np.full((2, 3), 1e4)))


def test_graph_leaves_named_and_shaped() -> None:
    with pytest.raises(CaseError, match="graph leaf 'w' must be named p1, p2"):
        bo.Case(family="graph", layers=(bo.node("add", "x", "w"),), cost="quadratic",
                params={"w": np.ones(3)}, x=np.ones((2, 3)), y=np.ones((2, 3)))
    with pytest.raises(CaseError, match=re.escape("parameter p1 has shape (2,), expected (3,)")):
        bo.Case(family="graph", layers=(bo.node("add", "x", "p1"),), cost="quadratic",
                params={"p1": np.ones(2)}, x=np.ones((2, 3)), y=np.ones((2, 3)))
    with pytest.raises(CaseError, match=r"layer 1 \(dense\(3, sigmoid\)\): family 'graph' "
                                        r"takes only nodes"):
        bo.Case(family="graph", layers=(Dense(3),), cost="quadratic", params={},
                x=np.ones((2, 3)), y=np.ones((2, 3)))


def test_backprop_needs_a_case() -> None:
    with pytest.raises(TypeError, match="backprop needs a Case, got dict"):
        bo.backprop({})  # type: ignore[arg-type]


# --- case_id, immutability, with_arrays, astype ----------------------------------------------


def test_case_id_is_stable_for_equal_arrays() -> None:
    a, b = mlp_case(), mlp_case()
    assert a is not b and a.case_id == b.case_id
    assert re.fullmatch(r"[0-9a-f]{16}", a.case_id)


def test_case_id_ignores_the_seed() -> None:
    assert mlp_case(seed=1).case_id == mlp_case(seed=2).case_id == mlp_case().case_id


def test_case_id_changes_with_any_array_element() -> None:
    case = mlp_case()
    ids = {case.case_id}
    for field in ("x", "y"):
        arr = np.array(getattr(case, field))
        arr.flat[-1] = np.nextafter(arr.flat[-1], np.inf)  # one ulp
        ids.add(case.with_arrays(**{field: arr}).case_id)
    for name in case.params:
        arr = np.array(case.params[name])
        arr.flat[0] += 1e-3
        ids.add(case.with_arrays(params={**case.params, name: arr}).case_id)
    assert len(ids) == 1 + 2 + len(case.params)


def test_case_id_changes_with_the_spec() -> None:
    base = mlp_case()
    other_activation = mlp_case(layers=(bo.dense(3, "sigmoid"), bo.dense(1, "sigmoid")))
    other_cost = mlp_case(cost="cross_entropy")
    other_dtype = base.astype("float32")
    ids = {c.case_id for c in (base, other_activation, other_cost, other_dtype)}
    assert len(ids) == 4


def test_case_id_distinguishes_relabelled_parameters() -> None:
    """The same bytes under swapped leaf names give a different id (names are hashed)."""
    x, y = np.ones((1, 2)), np.zeros((1, 2))
    one = bo.Case(family="graph", layers=(bo.node("add", "x", "p1"),), cost="quadratic",
                  params={"p1": np.array([1.0, 2.0]), "p2": np.array([3.0, 4.0])}, x=x, y=y)
    two = one.with_arrays(params={"p1": np.array([3.0, 4.0]), "p2": np.array([1.0, 2.0])})
    assert one.case_id != two.case_id


def test_arrays_are_read_only_copies() -> None:
    x = np.ones((2, 4))
    case = mlp_case(x=x)
    x[0, 0] = 5.0  # the caller's array is copied, not shared
    assert case.x[0, 0] == 1.0
    for arr in (case.x, case.y, *case.params.values()):
        assert not arr.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            arr[...] = 0.0
    with pytest.raises(TypeError):
        case.params["W1"] = np.zeros((3, 4))  # type: ignore[index]
    with pytest.raises(AttributeError):
        case.x = np.zeros((2, 4))  # type: ignore[misc]


def test_with_arrays_replaces_and_revalidates() -> None:
    case = mlp_case(seed=7)
    new_y = np.full((2, 1), 0.25)
    changed = case.with_arrays(y=new_y)
    np.testing.assert_array_equal(changed.y, new_y)
    np.testing.assert_array_equal(changed.x, case.x)
    assert changed.seed == 7 and changed.layers == case.layers
    assert changed.case_id != case.case_id
    assert case.with_arrays().case_id == case.case_id
    with pytest.raises(CaseError, match="y \\(targets\\) has shape"):
        case.with_arrays(y=np.zeros((3, 1)))


def test_astype_casts_every_array() -> None:
    layers = (bo.dense(3, "tanh"), bo.dropout(0.2), bo.dense(1, "sigmoid"))
    case = mlp_case(layers=layers, masks={"mask2": np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])})
    single = case.astype("float32")
    assert single.dtype == "float32" and case.dtype == "float64"
    arrays = (single.x, single.y, *single.params.values(), *single.masks.values())
    assert all(a.dtype == np.float32 for a in arrays)
    np.testing.assert_allclose(single.params["W1"], case.params["W1"], rtol=1e-7)
    assert single.astype("float64").dtype == "float64"


def test_describe_and_spec() -> None:
    case = cnn_case((bo.conv2d(2, 3, padding=1), bo.avgpool(2), bo.flatten(),
                     bo.dense(1, "identity")))
    assert case.describe() == ("cnn: x(2, 1, 4, 4) -> conv2d(2, k=3, s=1, p=1, relu) -> "
                               "avgpool(2, s=2) -> flatten() -> dense(1, identity) | quadratic | "
                               "float64")
    spec = case.spec()
    assert spec["layers"][1] == {"type": "pool", "kind": "avg", "size": 2, "stride": 2}
    assert spec["param_shapes"] == {"W1": [2, 1, 3, 3], "b1": [2], "W2": [1, 8], "b2": [1]}
    assert case.batch == 2


@pytest.mark.parametrize("family", ["mlp", "graph"])
def test_an_empty_batch_is_refused_when_the_case_is_built(family: str) -> None:
    """Reliability issue item 10: ``x`` with 0 rows was accepted, then ``backprop`` raised a
    bare ``ValueError``; ``y`` with 0 rows likewise."""
    case = mlp_case() if family == "mlp" else graph_case((bo.node("neg", "x"),))
    with pytest.raises(CaseError, match=re.escape("x has an empty batch (0 rows)")):
        case.with_arrays(x=np.zeros((0, case.x.shape[1])), y=np.zeros((0, case.y.shape[1])))
    with pytest.raises(CaseError, match=re.escape("y has an empty batch (0 rows)")):
        case.with_arrays(y=np.zeros((0, case.y.shape[1])))
