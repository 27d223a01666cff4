"""reference.layouts (bo.layouts) and Case.walk(): conversions are exact inverses, the
flatten permutation keeps a dense layer's output, and walk() names what adapters count."""

from __future__ import annotations

import numpy as np
import pytest

from backprop_oracle.reference import layouts as L
from backprop_oracle.reference.case import (
    Case,
    Conv2d,
    Dense,
    Pool,
    conv2d,
    dense,
    dropout,
    flatten,
    maxpool,
)


def _cnn() -> Case:
    rng = np.random.default_rng(0)
    layers = (conv2d(3, 2, activation="tanh"), maxpool(2), flatten(), dropout(0.5),
              dense(4, "sigmoid"), dense(2, "identity"))
    params = {"W1": rng.normal(size=(3, 2, 2, 2)), "b1": rng.normal(size=3),
              "W2": rng.normal(size=(4, 24)), "b2": rng.normal(size=4),
              "W3": rng.normal(size=(2, 4)), "b3": rng.normal(size=2)}
    return Case(family="cnn", layers=layers, cost="quadratic", params=params,
                x=rng.normal(size=(2, 2, 5, 9)), y=rng.normal(size=(2, 2)),
                masks={"mask4": (rng.random((2, 24)) > 0.5).astype(float)})


def test_walk() -> None:
    case = _cnn()
    walked = case.walk()
    assert [w.kind for w in walked] == ["conv2d", "maxpool", "flatten", "dropout", "dense",
                                        "dense"]
    assert [w.number for w in walked] == [1, None, None, None, 2, 3]
    assert isinstance(walked[0].spec, Conv2d) and isinstance(walked[1].spec, Pool)
    assert isinstance(walked[4].spec, Dense)
    assert {k: v.shape for k, v in walked[4].params.items()} == {"W2": (4, 24), "b2": (4,)}
    assert walked[0].input_shape == (2, 5, 9) and walked[0].output_shape == (3, 4, 8)
    assert walked[2].output_shape == (24,) and walked[3].mask == "mask4"
    assert walked[5].delta == "delta6" and walked[1].params == {}


def test_single_array_conversions_are_inverses() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    assert L.to_nhwc(x).shape == (2, 4, 5, 3) and L.to_nhwc(x).dtype == np.float32
    assert L.to_nhwc(x)[1, 2, 3, 0] == x[1, 0, 2, 3]
    np.testing.assert_array_equal(L.from_nhwc(L.to_nhwc(x)), x)
    W = rng.normal(size=(6, 3, 2, 4))
    assert L.conv_kernel_to_hwio(W)[1, 3, 2, 5] == W[5, 2, 1, 3]
    np.testing.assert_array_equal(L.conv_kernel_from_hwio(L.conv_kernel_to_hwio(W)), W)
    np.testing.assert_array_equal(L.conv_kernel_from_ohwi(L.conv_kernel_to_ohwi(W)), W)
    D = rng.normal(size=(3, 7))
    np.testing.assert_array_equal(L.dense_to_in_out(D), D.T)
    np.testing.assert_array_equal(L.dense_from_in_out(L.dense_to_in_out(D)), D)
    with pytest.raises(ValueError, match="4-D"):
        L.to_nhwc(D)


def test_flatten_permutation_keeps_the_dense_output() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(2, 3, 4, 5))
    W = rng.normal(size=(6, 60))
    z = a.reshape(2, -1) @ W.T  # the reference: (C, H, W) order
    Wp = L.permute_flatten_columns(W, 3, 4, 5)
    np.testing.assert_allclose(L.to_nhwc(a).reshape(2, -1) @ Wp.T, z)
    np.testing.assert_array_equal(L.permute_flatten_columns(Wp, 3, 4, 5, inverse=True), W)
    W_in_out = L.permute_flatten_columns(W.T, 3, 4, 5, axis=0)
    np.testing.assert_array_equal(W_in_out, Wp.T)
    with pytest.raises(ValueError, match="features"):
        L.permute_flatten_columns(W, 3, 4, 4)


def test_case_arrays_and_grads_from_round_trip() -> None:
    case = _cnn()
    arrays = L.case_arrays(case, L.CHANNELS_LAST)
    assert arrays["x"].shape == (2, 5, 9, 2) and arrays["W1"].shape == (2, 2, 2, 3)
    assert arrays["W2"].shape == (24, 4) and arrays["W3"].shape == (4, 2)
    np.testing.assert_array_equal(arrays["W2"], L.permute_flatten_columns(case.params["W2"],
                                                                          3, 2, 4).T)
    np.testing.assert_array_equal(arrays["mask4"],
                                  L.permute_flatten_columns(case.masks["mask4"], 3, 2, 4))
    back = L.grads_from(case, "channels_last", {k: arrays[k] for k in case.params} |
                        {"loss": 1.5})
    assert back["loss"] == 1.5
    for k, v in case.params.items():
        np.testing.assert_array_equal(back[k], v)
    same = L.case_arrays(case, "reference")
    assert all(np.array_equal(same[k], v) for k, v in case.params.items())
    with pytest.raises(ValueError, match="unknown layout"):
        L.case_arrays(case, "nhwc")
    with pytest.raises(ValueError, match="activations"):
        L.Layout("NWHC")
