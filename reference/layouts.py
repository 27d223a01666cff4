"""Layout helpers for adapters whose library uses other array conventions (``bo.layouts``).

The reference's layout (docs/design.md "Conventions"): activations ``(N, C, H, W)``
(``NCHW``), conv kernels ``(out, in, kh, kw)`` (``OIHW``), dense weights ``(out, in)``, and
``flatten`` is row-major over ``(C, H, W)``: feature ``c*H*W + h*W + w`` (``FLATTEN_ORDER``).

A channels-last library (Keras, Flax, TensorFlow) holds activations ``(N, H, W, C)``, conv
kernels ``(kh, kw, in, out)`` (``HWIO``) and dense weights ``(in, out)``, and its flatten is
row-major over ``(H, W, C)``. The same network then needs the input columns of the first
dense weight after a flatten (and a dropout mask between them) permuted from ``(C, H, W)``
order to ``(H, W, C)`` order: ``permute_flatten_columns``. ``case_arrays(case, layout)`` does
all of it for a whole case, and ``grads_from(case, layout, grads)`` converts an adapter's
gradients (and ``delta<l>``, ``da<l>``, if returned) back to the reference's layout::

    arrays = bo.layouts.case_arrays(case, bo.layouts.CHANNELS_LAST)   # x, y, W1, b1, mask<l>
    grads = my_library_backprop(arrays)                              # in its own layout
    return bo.layouts.grads_from(case, bo.layouts.CHANNELS_LAST, grads)

Every function returns new C-contiguous arrays of the input's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .case import Case, Conv2d, Dense, Dropout, Flatten, layer_shapes, parametrised

Array = NDArray[np.floating]
FLATTEN_ORDER = "CHW"  # the reference flattens (N, C, H, W) row-major over (C, H, W)
ACTIVATION_LAYOUTS = ("NCHW", "NHWC")
KERNEL_LAYOUTS = ("OIHW", "HWIO", "OHWI")
DENSE_LAYOUTS = ("out_in", "in_out")


def transpose_layout(array: Array, source: str, target: str) -> Array:
    """``array`` with axes named by the letters of ``source`` reordered as ``target``
    (``transpose_layout(x, "NCHW", "NHWC")``)."""
    if sorted(source) != sorted(target) or len(set(source)) != len(source):
        raise ValueError(f"layouts {source!r} and {target!r} must name the same distinct axes")
    if array.ndim != len(source):
        raise ValueError(f"layout {source!r} needs a {len(source)}-D array, got shape "
                         f"{array.shape}")
    return np.ascontiguousarray(np.transpose(array, [source.index(a) for a in target]))


def to_nhwc(x: Array) -> Array:
    """``(N, C, H, W) -> (N, H, W, C)``: activations, masks, deltas."""
    return transpose_layout(x, "NCHW", "NHWC")


def from_nhwc(g: Array) -> Array:
    """``(N, H, W, C) -> (N, C, H, W)``."""
    return transpose_layout(g, "NHWC", "NCHW")


def conv_kernel_to_hwio(W: Array) -> Array:
    """Conv kernel ``(out, in, kh, kw) -> (kh, kw, in, out)`` (Keras, Flax, TensorFlow)."""
    return transpose_layout(W, "OIHW", "HWIO")


def conv_kernel_from_hwio(gW: Array) -> Array:
    """Conv kernel (or its gradient) ``(kh, kw, in, out) -> (out, in, kh, kw)``."""
    return transpose_layout(gW, "HWIO", "OIHW")


def conv_kernel_to_ohwi(W: Array) -> Array:
    """Conv kernel ``(out, in, kh, kw) -> (out, kh, kw, in)`` (channels-last ``OHWI``)."""
    return transpose_layout(W, "OIHW", "OHWI")


def conv_kernel_from_ohwi(gW: Array) -> Array:
    """Conv kernel (or its gradient) ``(out, kh, kw, in) -> (out, in, kh, kw)``."""
    return transpose_layout(gW, "OHWI", "OIHW")


def dense_to_in_out(W: Array) -> Array:
    """Dense weight ``(out, in) -> (in, out)`` (``z = a @ W + b``)."""
    return transpose_layout(W, "OI", "IO")


def dense_from_in_out(gW: Array) -> Array:
    """Dense weight (or its gradient) ``(in, out) -> (out, in)``."""
    return transpose_layout(gW, "IO", "OI")


def flatten_permutation(channels: int, height: int, width: int) -> NDArray[np.intp]:
    """``perm`` such that ``a_hwc = a_chw[..., perm]``: position ``j`` of an ``(H, W, C)``
    flatten holds feature ``perm[j]`` of the reference's ``(C, H, W)`` flatten."""
    return np.arange(channels * height * width).reshape(channels, height, width) \
        .transpose(1, 2, 0).ravel()


def permute_flatten_columns(weights: Array, channels: int, height: int, width: int, *,
                            inverse: bool = False, axis: int = -1) -> Array:
    """Reorder the input features (``axis``; ``-1`` for ``(out, in)`` weights and for
    ``(N, features)`` activations, masks and deltas, ``0`` for ``(in, out)`` weights) from
    the reference's ``(C, H, W)`` flatten order to ``(H, W, C)`` order, or back with
    ``inverse=True``. ``a_chw @ W.T == a_hwc @ permute_flatten_columns(W, C, H, W_).T``."""
    perm = flatten_permutation(channels, height, width)
    if weights.shape[axis] != perm.size:
        raise ValueError(f"axis {axis} of shape {weights.shape} has {weights.shape[axis]} "
                         f"features, not {channels}*{height}*{width} = {perm.size}")
    index = np.argsort(perm) if inverse else perm
    return np.ascontiguousarray(np.take(weights, index, axis=axis))


@dataclass(frozen=True)
class Layout:
    """An adapter's array conventions: ``activations`` ``NCHW | NHWC`` (images, masks and
    deltas; also decides the flatten order: ``NHWC`` flattens ``(H, W, C)``), ``conv_kernel``
    ``OIHW | HWIO | OHWI``, ``dense`` ``out_in | in_out``."""

    activations: str = "NCHW"
    conv_kernel: str = "OIHW"
    dense: str = "out_in"

    def __post_init__(self) -> None:
        for name, known in (("activations", ACTIVATION_LAYOUTS),
                            ("conv_kernel", KERNEL_LAYOUTS), ("dense", DENSE_LAYOUTS)):
            if getattr(self, name) not in known:
                raise ValueError(f"layout {name} {getattr(self, name)!r}: expected one of "
                                 f"{', '.join(known)}")


REFERENCE = Layout()
CHANNELS_LAST = Layout("NHWC", "HWIO", "in_out")  # Keras, Flax, TensorFlow

Convert = Callable[[Array], Array]


def _same(a: Array) -> Array:
    return np.ascontiguousarray(a)


def _transposer(source: str, target: str) -> Convert:
    return lambda a: transpose_layout(a, source, target)


def _permuter(flat: tuple[int, int, int], inverse: bool) -> Convert:
    return lambda a: permute_flatten_columns(a, *flat, inverse=inverse)


def _converters(case: Case, layout: Layout) -> dict[str, tuple[Convert, Convert]]:
    """Array name -> (reference -> ``layout``, ``layout`` -> reference) for every array of
    ``case``, every ``delta<l>`` and every input gradient ``da<l>`` (shaped like ``z^l``)."""
    out: dict[str, tuple[Convert, Convert]] = {"x": (_same, _same), "y": (_same, _same)}
    if case.family == "graph":
        out.update({k: (_same, _same) for k in case.params})
        out.update({f"delta{l}": (_same, _same) for l in range(1, len(case.layers) + 1)})
        return out
    nhwc = layout.activations == "NHWC"
    if nhwc and case.x.ndim == 4:
        out["x"] = (to_nhwc, from_nhwc)
    shapes = layer_shapes(case.layers, case.x.shape[1:])
    numbers = dict(parametrised(case.layers))
    flat: tuple[int, int, int] | None = None  # (C, H, W) while features are a flatten's
    shape = tuple(case.x.shape[1:])
    for l, spec in enumerate(case.layers, 1):
        if isinstance(spec, Flatten) and nhwc:
            c, h, w = shape
            flat = (c, h, w)
        if isinstance(spec, Conv2d):
            n = numbers[l]
            kernel = layout.conv_kernel
            out[f"W{n}"] = (_transposer("OIHW", kernel), _transposer(kernel, "OIHW"))
            out[f"b{n}"] = (_same, _same)
        elif isinstance(spec, Dense):
            n = numbers[l]
            out[f"W{n}"] = _dense_converters(flat, layout.dense)
            out[f"b{n}"] = (_same, _same)
            flat = None
        z = shapes[f"z{l}"]
        if nhwc and len(z) == 3:
            each: tuple[Convert, Convert] = (to_nhwc, from_nhwc)
        elif flat is not None:
            each = (_permuter(flat, False), _permuter(flat, True))
        else:
            each = (_same, _same)
        out[f"delta{l}"] = out[f"da{l}"] = each
        if isinstance(spec, Dropout):
            out[f"mask{l}"] = each
        shape = z
    return out


def _dense_converters(flat: tuple[int, int, int] | None, dense: str
                      ) -> tuple[Convert, Convert]:
    def to(W: Array) -> Array:
        if flat is not None:
            W = permute_flatten_columns(W, *flat)
        return dense_to_in_out(W) if dense == "in_out" else _same(W)

    def back(g: Array) -> Array:
        g = dense_from_in_out(g) if dense == "in_out" else g
        return permute_flatten_columns(g, *flat, inverse=True) if flat is not None else _same(g)

    return to, back


def _layout(layout: Layout | str) -> Layout:
    if isinstance(layout, Layout):
        return layout
    presets = {"reference": REFERENCE, "channels_last": CHANNELS_LAST}
    if layout not in presets:
        raise ValueError(f"unknown layout {layout!r}; expected a Layout or one of "
                         f"{', '.join(presets)}")
    return presets[layout]


def case_arrays(case: Case, layout: Layout | str = CHANNELS_LAST) -> dict[str, Array]:
    """Every array of ``case`` in ``layout``: ``x``, ``y``, the parameters (``W<n>``,
    ``b<n>``; the first dense weight after a flatten with its input features in the layout's
    flatten order) and the dropout masks (``mask<l>``). ``layout``: a ``Layout`` or
    ``"channels_last"`` / ``"reference"``."""
    conv = _converters(case, _layout(layout))
    arrays = {"x": case.x, "y": case.y, **case.params, **case.masks}
    return {k: conv[k][0](v) for k, v in arrays.items()}


def grads_from(case: Case, layout: Layout | str, grads: Mapping[str, object]
               ) -> dict[str, object]:
    """An adapter's return in ``layout`` -> the reference's layout: gradients ``W<n>``,
    ``b<n>``, deltas ``delta<l>`` and input gradients ``da<l>`` converted, anything else
    (``loss``) passed through."""
    conv = _converters(case, _layout(layout))
    return {k: conv[k][1](np.asarray(v)) if k in conv and k not in ("x", "y") else v
            for k, v in grads.items()}


__all__ = [
    "CHANNELS_LAST", "FLATTEN_ORDER", "REFERENCE", "Layout", "case_arrays",
    "conv_kernel_from_hwio", "conv_kernel_from_ohwi", "conv_kernel_to_hwio",
    "conv_kernel_to_ohwi", "dense_from_in_out", "dense_to_in_out", "flatten_permutation",
    "from_nhwc", "grads_from", "permute_flatten_columns", "to_nhwc", "transpose_layout",
]
