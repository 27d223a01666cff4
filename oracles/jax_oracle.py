"""The JAX oracle: each case built from ``jax.numpy`` / ``jax.lax`` / ``jax.nn`` ops and
differentiated by JAX itself, in reverse mode (``jax.value_and_grad``) or forward mode
(``jax.jvp`` along random sign directions per tensor, or along the basis of the tensors a
directional check flagged, ``jax.vmap``-ed over chunks of directions).

Ops used: ``jnp.matmul`` for dense layers; ``lax.conv_general_dilated`` with explicit
padding pairs ``((p, p), (p, p))`` and NCHW/OIHW dimension numbers; ``lax.reduce_window``
with ``lax.max`` (init ``-inf``) for max pooling and ``lax.add`` (init 0) for average and L2
pooling, L2 being ``sqrt(sum x^2)`` written with the double-``where`` guard so that an
all-zero window has gradient 0 (the reference's and PyTorch's convention) instead of NaN;
``jax.nn.sigmoid``, ``jnp.tanh``, ``jax.nn.relu``, ``jax.nn.leaky_relu(0.01)``; costs written
out with the reference's batch-mean normalisation (``jax.nn.log_sigmoid``,
``jax.nn.log_softmax``).

Deltas ``dC/dz^l``: a zero offset is added to every ``z`` and the loss is differentiated
with respect to it (in both modes).

float64: ``jax.enable_x64(True)`` is used as a context manager around each float64 run
(jax 0.10 exposes the ``jax_enable_x64`` config state as ``jax.enable_x64``, thread-local
when used with ``with``), so the process-wide default stays as the user set it; the dtype of
every returned array is asserted. Precision ``strict``: ``precision=lax.Precision.HIGHEST``
on every dot and convolution, inside ``jax.default_matmul_precision("highest")``;
``default``: JAX's out-of-the-box precision (TF32 for float32 on recent NVIDIA GPUs).
GPU determinism (``--xla_gpu_deterministic_ops``) is an ``XLA_FLAGS`` setting fixed when the
backend starts: it is recorded, not changed.

Compilation: one ``jax.jit`` function per architecture (family, layer specs, cost, shapes,
dtype, mode, precision, device, overrides), kept in ``CACHE`` with hit/miss counts; and
JAX's persistent compilation cache on disk, so that a program is compiled once ever, not once
per process (``compile_cache_dir``: ``$BO_COMPILE_CACHE``, ``off`` to disable, by default
``$XDG_CACHE_HOME/backprop-oracle/jax``; every program is kept, however fast it compiled).
``compile_cache_stats`` counts its hits and misses in this process.

Importing this module never imports jax; ``available()`` says when jax is missing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

import numpy as np

from ..reference.case import LEAKY_SLOPE, Case
from ..reference.result import Result
from . import _common as common
from .base import FrameworkOracle, cast, is_accelerator

OPS_USED = {
    "linear": "jnp.matmul", "conv": "lax.conv_general_dilated(padding=((p, p), (p, p)))",
    "max_pool": "lax.reduce_window(lax.max, -inf)", "avg_pool": "lax.reduce_window(lax.add) / k^2",
    "l2_pool": "sqrt(lax.reduce_window(lax.add, x^2)), 0-guarded",
    "cross_entropy": "-jax.nn.log_sigmoid(-z) - y z", "softmax_cross_entropy": "jax.nn.log_softmax",
}


CACHE_ENV = "BO_COMPILE_CACHE"  # a directory, or "off"
_DISK = {"hits": 0, "misses": 0}
_CONFIGURED: list[bool] = []


def compile_cache_dir() -> str | None:
    """Where JAX's persistent compilation cache lives: ``$BO_COMPILE_CACHE`` (``off``: none),
    else ``$XDG_CACHE_HOME/backprop-oracle/jax`` (``~/.cache/backprop-oracle/jax``)."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in ("off", "none", "0", "false"):
        return None
    if value:
        return value
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "backprop-oracle", "jax")


def compile_cache_stats() -> dict[str, Any]:
    """The persistent cache's directory and its hits and misses in this process so far."""
    return {"dir": compile_cache_dir() if _CONFIGURED else None, **_DISK}


def _count(event: str, *args: object, **kwargs: object) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _DISK["hits"] += 1
    elif event == "/jax/compilation_cache/cache_misses":
        _DISK["misses"] += 1


def _configure(jax) -> None:
    """Once per process, before the first compilation: the persistent cache (unless off),
    keeping every program (no minimum compile time or size), and the hit/miss counter."""
    if _CONFIGURED:
        return
    path = compile_cache_dir()
    if path is not None:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.monitoring.register_event_listener(_count)
    _CONFIGURED.append(path is not None)


def import_jax():
    """``jax`` with the submodules used here, its compilation cache configured (raises
    ``ImportError`` when not installed)."""
    import jax
    import jax.flatten_util
    import jax.monitoring
    import jax.numpy

    _configure(jax)
    return jax


def jax_ops(jax, dtype: str, precision: str, overrides: Mapping[str, Callable] | None = None
            ) -> dict[str, Callable]:
    """The op table the model walk composes (see ``_common``), with test ``overrides``."""
    jnp, lax = jax.numpy, jax.lax
    prec = lax.Precision.HIGHEST if precision == "strict" else None

    def window(a, init: float, op: Callable, k: int, s: int):
        return lax.reduce_window(a, np.asarray(init, a.dtype), op, (1, 1, k, k), (1, 1, s, s),
                                 "VALID")

    def l2_pool(a, k: int, s: int):
        total = window(a * a, 0.0, lax.add, k, s)
        positive = total > 0
        return jnp.where(positive, jnp.sqrt(jnp.where(positive, total, 1)), 0)

    def conv(a, W, b, s: int, p: int):
        z = lax.conv_general_dilated(a, W, (s, s), ((p, p), (p, p)),
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=prec)
        return z + b[None, :, None, None]

    ops: dict[str, Callable] = {
        "linear": lambda a, W, b: jnp.matmul(a, W.T, precision=prec) + b,
        "conv": conv,
        "max_pool": lambda a, k, s: window(a, -np.inf, lax.max, k, s),
        "avg_pool": lambda a, k, s: window(a, 0.0, lax.add, k, s) / (k * k),
        "l2_pool": l2_pool,
        "flatten": lambda a: a.reshape(a.shape[0], -1),
        "dropout": lambda a, mask, p: a * mask / (1 - p),
        "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu,
        "leaky_relu": lambda z: jax.nn.leaky_relu(z, LEAKY_SLOPE), "identity": lambda z: z,
        "add": jnp.add, "mul": jnp.multiply, "div": jnp.divide, "neg": jnp.negative,
        "exp": jnp.exp, "reciprocal": jnp.reciprocal, "log": jnp.log,
        "const": lambda c: np.asarray(c, dtype),
        "broadcast": jnp.broadcast_to,
        "quadratic": lambda z, a, y: _per_sample(0.5 * (a - y) ** 2).mean(),
        "cross_entropy": lambda z, a, y: _per_sample(-jax.nn.log_sigmoid(-z) - y * z).mean(),
        "softmax_cross_entropy":
            lambda z, a, y: -(y * jax.nn.log_softmax(z, axis=-1)).sum(-1).mean(),
    }
    ops.update(overrides or {})
    return ops


def _per_sample(c):
    return c.reshape(c.shape[0], -1).sum(1)


# --- compile cache -------------------------------------------------------------------------


class JitCache:
    """Jitted functions by architecture key, with hit and miss counts."""

    def __init__(self) -> None:
        self.entries: dict[Hashable, Callable] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, build: Callable[[], Callable]) -> tuple[Callable, bool]:
        """``(function, hit)``: the cached function for ``key``, built on a miss."""
        if key in self.entries:
            self.hits += 1
            return self.entries[key], True
        self.misses += 1
        self.entries[key] = build()
        return self.entries[key], False

    def stats(self) -> dict[str, float]:
        total = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses, "entries": len(self.entries),
                "hit_rate": self.hits / total if total else 0.0}

    def clear(self) -> None:
        self.entries.clear()
        self.hits = self.misses = 0


CACHE = JitCache()


def cache_key(case: Case, mode: str, precision: str, device: str,
              overrides: Mapping[str, Callable]) -> tuple:
    """What fixes a compiled function: everything about a case except its array values."""
    shapes = lambda d: tuple(sorted((k, v.shape) for k, v in d.items()))  # noqa: E731
    return (case.family, case.layers, case.cost, case.x.shape, case.y.shape,
            shapes(case.params), shapes(case.masks), case.dtype, mode, precision, device,
            tuple(sorted((k, id(f)) for k, f in overrides.items())))


# --- the two modes -------------------------------------------------------------------------


def _zeros(jax, case: Case) -> list:
    return [jax.numpy.zeros(s, case.dtype) for s in common.z_shapes(case)]


def reverse_fn(jax, case: Case, ops: Mapping) -> Callable:
    """``(params, x, y, masks) -> (loss, grads, deltas, zs, acts, input_grads)`` by
    ``value_and_grad`` with respect to the parameters, a zero offset on every ``z`` and (layered
    networks) on every ``a^l`` between layers."""
    between = 0 if case.family == "graph" else len(case.layers) - 1

    def fn(params, x, y, masks):
        def loss_fn(p, offsets, a_offsets):
            loss, zs, acts = common.model_forward(case, p, x, y, masks, ops, offsets,
                                                  a_offsets=a_offsets or None)
            return loss, (zs, acts)

        zeros = _zeros(jax, case)
        (loss, (zs, acts)), (grads, deltas, inputs) = jax.value_and_grad(
            loss_fn, argnums=(0, 1, 2), has_aux=True)(params, zeros, zeros[:between])
        return loss, grads, deltas, zs, acts, inputs

    return fn


def jvp_fn(jax, case: Case, ops: Mapping) -> Callable:
    """``(params, x, y, masks, tangents) -> (loss, zs, acts, values)``: ``values[i]`` is the
    loss tangent by ``jax.jvp`` along direction ``i`` of ``tangents`` (one array per parameter
    and ``delta<l>`` offset, leading axis one per direction, ``jax.vmap``-ed)."""
    layers = [f"delta{l}" for l in range(1, len(common.z_shapes(case)) + 1)]

    def fn(params, x, y, masks, tangents):
        def loss_of(p, offsets):
            return common.model_forward(case, p, x, y, masks, ops, offsets)[0]

        zeros = _zeros(jax, case)
        values = jax.vmap(lambda tp, to: jax.jvp(loss_of, (params, zeros), (tp, to))[1])(
            {n: tangents[n] for n in params}, [tangents[n] for n in layers])
        loss, zs, acts = common.model_forward(case, params, x, y, masks, ops)
        return loss, zs, acts, values

    return fn


# --- settings ------------------------------------------------------------------------------


@contextlib.contextmanager
def run_context(jax, precision: str, dtype: str) -> Iterator[dict[str, object]]:
    """x64 for float64 and ``highest`` matmul precision for ``strict``, only inside the block
    (thread-local config contexts); yields the effective settings."""
    with contextlib.ExitStack() as stack:
        if dtype == "float64":
            stack.enter_context(jax.enable_x64(True))
        if precision == "strict":
            stack.enter_context(jax.default_matmul_precision("highest"))
        yield effective_settings(jax, precision)


def effective_settings(jax, precision: str) -> dict[str, object]:
    flags = os.environ.get("XLA_FLAGS", "")
    return {"jax_enable_x64": bool(jax.config.jax_enable_x64),
            "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
            "dot_conv_precision": "HIGHEST" if precision == "strict" else "DEFAULT",
            "XLA_FLAGS": flags,
            "xla_gpu_deterministic_ops": "--xla_gpu_deterministic_ops=true" in flags}


def _device(jax, device: str):
    return jax.devices("gpu" if is_accelerator(device) else "cpu")[0]


# --- the oracle ----------------------------------------------------------------------------


class JaxOracle(FrameworkOracle):
    """JAX autodiff as an oracle. ``jit=False`` runs eagerly (for comparison);
    ``overrides`` (a test hook) replaces named ops of ``jax_ops``' table."""

    name = "jax"

    def __init__(self, mode: str = "reverse", precision: str = "strict",
                 overrides: Mapping[str, Callable] | None = None, jit: bool = True,
                 directions: int = common.DIRECTIONS) -> None:
        self.mode = common.check_choice(mode, common.MODES, "mode")
        self.precision = common.check_choice(precision, common.PRECISIONS, "precision")
        self.overrides = dict(overrides or {})
        self.jit = jit
        self.directions = common.check_directions(directions)

    def devices(self) -> list[str]:
        return ["cpu", "gpu"]

    def device_for(self, choice: str) -> str:
        """``cuda`` (PyTorch's name for the accelerator) is ``gpu`` here."""
        return "gpu" if is_accelerator(choice) else choice

    def available(self, device: str = "cpu") -> str | None:
        device = self.device_for(device)
        try:
            jax = import_jax()
        except ImportError as error:
            return f"jax is not installed ({error})"
        if device not in ("cpu", "gpu"):
            return f"jax oracle knows devices cpu and gpu, not {device!r}"
        try:
            _device(jax, device)
        except RuntimeError as error:
            return f"no {device} device visible to jax {jax.__version__} " \
                   f"({str(error).splitlines()[0]})"
        return None

    def settings(self, device: str = "cpu", dtype: str = "float64") -> dict:
        jax = import_jax()
        with run_context(jax, self.precision, dtype) as effective:
            return {"precision": self.precision, "switches": effective,
                    "versions": self.versions(jax, device)}

    @staticmethod
    def versions(jax, device: str) -> dict[str, str]:
        import jaxlib

        v = {**common.base_versions(), "jax": jax.__version__, "jaxlib": jaxlib.__version__}
        v["backend"] = str(_device(jax, device).platform)
        if is_accelerator(device):
            v["gpu"] = str(_device(jax, device).device_kind)
        return v

    def compiled(self, jax, case: Case, device: str) -> tuple[Callable, bool]:
        """The (cached) jitted function for ``case``'s architecture, and whether it was a hit."""
        ops = jax_ops(jax, case.dtype, self.precision, self.overrides)
        build = reverse_fn if self.mode == "reverse" else jvp_fn
        if not self.jit:
            return build(jax, case, ops), False
        key = cache_key(case, self.mode, self.precision, device, self.overrides)
        return CACHE.get(key, lambda: jax.jit(build(jax, case, ops)))

    def _run(self, case: Case, device: str, dtype: str | None, names: list[str] | None
             ) -> Result:
        jax = import_jax()
        device = self.device_for(device)
        case = cast(case, dtype)
        meta = {"method": f"jax-{self.mode}", "oracle": self.name, "mode": self.mode,
                "device": device, "dtype": case.dtype, "precision": self.precision,
                "ops": OPS_USED, "overrides": sorted(self.overrides), "jit": self.jit,
                "versions": self.versions(jax, device)}
        with run_context(jax, self.precision, case.dtype) as effective:
            meta["switches"] = effective
            fn, hit = self.compiled(jax, case, device)
            meta["jit_cache"] = "hit" if hit else "miss"
            args = jax.device_put((dict(case.params), case.x, case.y, dict(case.masks)),
                                  _device(jax, device))
            if self.mode == "reverse" and names is None:
                loss, grads, deltas, zs, acts, inputs = jax.device_get(fn(*args))
                result = common.result_from(
                    case, loss, {k: np.asarray(g) for k, g in grads.items()},
                    [np.asarray(d) for d in deltas], [np.asarray(z) for z in zs],
                    [np.asarray(a) for a in acts], meta, [np.asarray(g) for g in inputs])
            else:
                result = self._forward(jax, case, device, fn, args, meta, names)
        return common.assert_dtypes(result, case.dtype, self.label)

    def _forward(self, jax, case: Case, device: str, fn: Callable, args: tuple, meta: dict,
                 names: list[str] | None) -> Result:
        blocks = common.tangent_blocks(case)
        if names is None:
            rows = common.forward_rows(case, self.directions)
            total = chunk = sum(d.n for d in rows.values())
        else:  # one chunk size per architecture, whichever tensors: one compiled program
            rows = {n: common.basis_rows(blocks[n]) for n in names}
            total = sum(d.n for d in rows.values())
            chunk = sum(int(np.prod(s)) for s in blocks.values())
        chunk = common.chunk_size(chunk, common.forward_work(case))
        values: list[np.ndarray] = []
        primal: Any = None
        for tangents in common.tangent_chunks(blocks, rows, chunk, case.dtype):
            out = jax.device_get(fn(*args, jax.device_put(tangents, _device(jax, device))))
            primal = out[:3] if primal is None else primal
            values.append(np.asarray(out[3]))
        loss, zs, acts = primal
        found = common.forward_found(
            case, common.split_values(np.concatenate(values)[:total], rows), rows)
        return common.forward_result(case, loss, found, [np.asarray(z) for z in zs],
                                     [np.asarray(a) for a in acts], meta,
                                     self.directions if names is None else 0)

    def adjoint(self, case: Case, device: str = "cpu", dtype: str | None = None,
                seed: int = 0) -> tuple[float, float]:
        """``(<u, J^T v>, <J u, v>)`` for the output ``z^L`` as a function of all parameters,
        ``J^T v`` by ``jax.vjp`` and ``J u`` by ``jax.jvp`` (one jitted, cached function);
        random ``u, v`` from ``seed``."""
        jax = import_jax()
        case = cast(case, dtype)
        ops = jax_ops(jax, case.dtype, self.precision, self.overrides)
        with run_context(jax, self.precision, case.dtype):
            key = cache_key(case, "adjoint", self.precision, device, self.overrides)
            fn, _ = CACHE.get(key, lambda: jax.jit(adjoint_fn(jax, case, ops)))
            rng = np.random.default_rng(seed)
            u = rng.normal(size=sum(p.size for p in case.params.values())).astype(case.dtype)
            v = rng.normal(size=common.z_shapes(case)[-1]).astype(case.dtype)
            args = jax.device_put((dict(case.params), case.x, case.y, dict(case.masks), u, v),
                                  _device(jax, device))
            lhs, rhs = jax.device_get(fn(*args))
            return float(lhs), float(rhs)


def adjoint_fn(jax, case: Case, ops: Mapping) -> Callable:
    """``(params, x, y, masks, u, v) -> (<u, J^T v>, <J u, v>)`` with ``J = d z^L / d params``
    (``u`` over the parameters raveled in ``ravel_pytree`` order)."""
    jnp = jax.numpy

    def fn(params, x, y, masks, u, v):
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        out = lambda w: common.output_of(case, unravel(w), x, y, masks, ops)  # noqa: E731
        _, vjp_fn = jax.vjp(out, flat)
        (jtv,) = vjp_fn(v)
        ju = jax.jvp(out, (flat,), (u,))[1]
        return jnp.vdot(u, jtv), jnp.vdot(ju, v)

    return fn


def conventions(device: str = "cpu") -> dict[str, object]:
    """What JAX says at kinks, measured in both modes: ReLU'(0), leaky-ReLU'(0), and the
    gradient of a fully tied 2x2 max-pool window (row-major cells)."""
    jax = import_jax()
    ops = jax_ops(jax, "float64", "strict")
    pool = lambda a: ops["max_pool"](a, 2, 2).sum()  # noqa: E731
    with run_context(jax, "strict", "float64"):
        z, one = jax.numpy.zeros(()), jax.numpy.ones(())
        tied = jax.numpy.ones((1, 1, 2, 2))
        basis = jax.numpy.eye(4).reshape(4, 1, 1, 2, 2)
        rev = {"relu'(0)": float(jax.grad(ops["relu"])(z)),
               "leaky_relu'(0)": float(jax.grad(ops["leaky_relu"])(z)),
               "maxpool_tie_grad": np.asarray(jax.grad(pool)(tied)).ravel().tolist()}
        fwd = {"relu'(0)": float(jax.jvp(ops["relu"], (z,), (one,))[1]),
               "leaky_relu'(0)": float(jax.jvp(ops["leaky_relu"], (z,), (one,))[1]),
               "maxpool_tie_grad": [float(jax.jvp(pool, (tied,), (e,))[1]) for e in basis]}
    return {"reverse": rev, "forward": fwd}
