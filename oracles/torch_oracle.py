"""The PyTorch oracle: each case built from ``torch.nn.functional`` ops and differentiated by
PyTorch itself, in reverse mode (autograd) or forward mode (``torch.func.jvp`` vectorised
over basis directions with ``torch.func.vmap``).

Ops used (testing their derivatives is the point): ``F.linear``, ``F.conv2d`` with explicit
symmetric padding, ``F.max_pool2d``, ``F.avg_pool2d`` (no padding), ``F.lp_pool2d`` with
``norm_type=2`` for L2 pooling (it computes ``(sign(s) relu(|s|) k^2)^(1/2)`` with ``s`` the
window mean of ``x^2``; since ``s >= 0`` that is ``sqrt(sum x^2)``, and its gradient is 0 on an
all-zero window, as in the reference), ``torch.sigmoid/tanh``, ``F.relu``,
``F.leaky_relu(0.01)``; costs written out with the reference's batch-mean normalisation
(quadratic ``mean_n 1/2 sum (a-y)^2``; binary cross-entropy ``mean_n sum -logsigmoid(-z) -
y z``; softmax ``mean_n -sum t log_softmax(z)``).

Deltas ``dC/dz^l``: reverse mode keeps each ``z``'s gradient (``retain_grad``); forward mode
adds a zero offset to each ``z`` and differentiates with respect to it.

Precision ``strict``: float32 matmul and convolutions in IEEE float32 (no TF32) through the
``fp32_precision`` switches of torch >= 2.9 (cuda matmul, cuDNN conv, oneDNN matmul/conv; the
older ``allow_tf32`` flags only on older torch), ``use_deterministic_algorithms(True,
warn_only=True)`` (ops without a deterministic kernel are listed in ``meta``), cuDNN
benchmark off and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` on cuda. ``default``: the framework's
out-of-the-box settings. Every global switch is restored after each run.

Importing this module never imports torch; ``available()`` says when torch is missing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from ..reference.case import LEAKY_SLOPE, Case
from ..reference.result import Result
from . import _common as common
from .base import FrameworkOracle, cast

OPS_USED = {
    "linear": "F.linear", "conv": "F.conv2d(padding=(p, p))", "max_pool": "F.max_pool2d",
    "avg_pool": "F.avg_pool2d(padding=0)", "l2_pool": "F.lp_pool2d(norm_type=2)",
    "cross_entropy": "-F.logsigmoid(-z) - y z", "softmax_cross_entropy": "F.log_softmax",
}
KNOWN_FRAMEWORK_WARNINGS = ("torch.jit.script` is deprecated",)  # raised inside torch.func


def import_torch():
    """``torch`` (raises ``ImportError`` when it is not installed), with ``$BO_THREADS``
    intra-op threads when a campaign set it (``properties/campaign/threads.py``)."""
    import torch
    import torch.func
    import torch.nn.functional

    threads = os.environ.get("BO_THREADS", "")
    if threads.isdigit() and torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))
    return torch


def torch_ops(torch, dtype, device, overrides: Mapping[str, Callable] | None = None
              ) -> dict[str, Callable]:
    """The op table the model walk composes (see ``_common``), with test ``overrides``."""
    F = torch.nn.functional
    ops: dict[str, Callable] = {
        "linear": F.linear,
        "conv": lambda a, W, b, s, p: F.conv2d(a, W, b, stride=s, padding=(p, p)),
        "max_pool": lambda a, k, s: F.max_pool2d(a, k, s, padding=0),
        "avg_pool": lambda a, k, s: F.avg_pool2d(a, k, s, padding=0),
        "l2_pool": lambda a, k, s: F.lp_pool2d(a, 2, k, s),
        "flatten": lambda a: torch.flatten(a, 1),
        "dropout": lambda a, mask, p: a * mask / (1 - p),
        "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": F.relu,
        "leaky_relu": lambda z: F.leaky_relu(z, LEAKY_SLOPE), "identity": lambda z: z,
        "add": torch.add, "mul": torch.mul, "div": torch.div, "neg": torch.neg,
        "exp": torch.exp, "reciprocal": torch.reciprocal, "log": torch.log,
        "const": lambda c: torch.tensor(c, dtype=dtype, device=device),
        "broadcast": torch.broadcast_to,
        "quadratic": lambda z, a, y: _per_sample(0.5 * (a - y) ** 2).mean(),
        "cross_entropy": lambda z, a, y: _per_sample(-F.logsigmoid(-z) - y * z).mean(),
        "softmax_cross_entropy": lambda z, a, y: -(y * F.log_softmax(z, dim=-1)).sum(-1).mean(),
    }
    ops.update(overrides or {})
    return ops


def _per_sample(c):
    return c.reshape(c.shape[0], -1).sum(1)


# --- global settings ---------------------------------------------------------------------


def _switches(torch) -> dict[str, object]:
    """The precision/determinism switches this oracle reads and sets."""
    b = torch.backends
    s: dict[str, object] = {}
    if hasattr(b.cuda.matmul, "fp32_precision"):  # torch >= 2.9
        s["cuda.matmul.fp32_precision"] = b.cuda.matmul.fp32_precision
        s["cudnn.conv.fp32_precision"] = b.cudnn.conv.fp32_precision
        s["mkldnn.matmul.fp32_precision"] = b.mkldnn.matmul.fp32_precision
        s["mkldnn.conv.fp32_precision"] = b.mkldnn.conv.fp32_precision
    else:
        s["cuda.matmul.allow_tf32"] = b.cuda.matmul.allow_tf32
        s["cudnn.allow_tf32"] = b.cudnn.allow_tf32
    s["cudnn.benchmark"] = b.cudnn.benchmark
    s["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
    s["deterministic_warn_only"] = torch.is_deterministic_algorithms_warn_only_enabled()
    s["CUBLAS_WORKSPACE_CONFIG"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    return s


def _apply(torch, s: Mapping[str, object]) -> None:
    b = torch.backends
    for key, value in s.items():
        if key == "CUBLAS_WORKSPACE_CONFIG":
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = str(value)
        elif key not in ("deterministic_algorithms", "deterministic_warn_only"):
            group, *rest = key.split(".")
            target = getattr(b, group)
            for part in rest[:-1]:
                target = getattr(target, part)
            setattr(target, rest[-1], value)
    _deterministic(torch, bool(s["deterministic_algorithms"]), bool(s["deterministic_warn_only"]))


def _deterministic(torch, mode: bool, warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms``, less its first step where nothing has imported
    ``torch._inductor`` yet: that step imports it (1.9 s, once per process) to set a flag only
    ``torch.compile`` reads, and this oracle never compiles."""
    if "torch._inductor.config" in sys.modules or \
            not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)


def _strict(torch, device: str) -> dict[str, object]:
    s = _switches(torch)
    for key in s:
        if key.endswith("fp32_precision"):
            s[key] = "ieee"
        elif key.endswith("allow_tf32"):
            s[key] = False
    s.update({"cudnn.benchmark": False, "deterministic_algorithms": True,
              "deterministic_warn_only": True})
    if device.startswith("cuda"):
        s["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    return s


@contextlib.contextmanager
def precision_settings(torch, precision: str, device: str) -> Iterator[dict[str, object]]:
    """Apply ``precision`` (``strict`` or ``default``) for the block, yield the effective
    switches, and restore every switch afterwards."""
    saved = _switches(torch)
    try:
        if precision == "strict":
            _apply(torch, _strict(torch, device))
        yield _switches(torch)
    finally:
        _apply(torch, saved)


@contextlib.contextmanager
def recorded_warnings(meta: dict) -> Iterator[None]:
    """Record nondeterminism notices and torch's own internal deprecation notices in
    ``meta``; re-issue every other warning unchanged."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        text = str(w.message)
        key = ("nondeterministic_ops" if "deterministic" in text else "framework_warnings"
               if any(k in text for k in KNOWN_FRAMEWORK_WARNINGS) else None)
        if key is not None:
            seen = meta.setdefault(key, [])
            if text.splitlines()[0] not in seen:
                seen.append(text.splitlines()[0])
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


# --- the two modes -------------------------------------------------------------------------


def _tensors(torch, case: Case, device: str) -> tuple[dict, object, object, dict]:
    t = lambda v: torch.as_tensor(np.array(v, copy=True), device=device)  # noqa: E731
    return ({k: t(v) for k, v in case.params.items()}, t(case.x), t(case.y),
            {k: t(v) for k, v in case.masks.items()})


def reverse(torch, case: Case, ops: Mapping, device: str) -> tuple:
    """Autograd: ``loss.backward()``; deltas from ``retain_grad`` on every ``z``, input
    gradients ``dC/da^l`` on every ``a^l`` between layers."""
    params, x, y, masks = _tensors(torch, case, device)
    for p in params.values():
        p.requires_grad_(True)

    def keep(z):
        if not z.requires_grad:  # a graph node fed only by x and constants
            z.requires_grad_(True)
        z.retain_grad()
        return z

    loss, zs, acts = common.model_forward(case, params, x, y, masks, ops, hook=keep)
    between = acts[1:-1] if case.family != "graph" else []
    for a in between:
        a.retain_grad()
    loss.backward()
    grads = {k: _or_zeros(torch, p.grad, p) for k, p in params.items()}
    deltas = [_or_zeros(torch, z.grad, z) for z in zs]
    inputs = [_or_zeros(torch, a.grad, a) for a in between]
    return loss, grads, deltas, zs, acts, inputs


def _or_zeros(torch, grad, like):
    return torch.zeros_like(like) if grad is None else grad


def _flat_parts(torch, case: Case, params: dict, shapes: list[tuple[int, ...]]):
    """``(flat, unflatten)`` over all parameters followed by one zero offset per layer."""
    names = list(params)
    sizes = [params[k].numel() for k in names] + [int(np.prod(s)) for s in shapes]
    zeros = [torch.zeros(int(np.prod(s)), dtype=params[names[0]].dtype,
                         device=params[names[0]].device) for s in shapes]
    flat = torch.cat([params[k].reshape(-1) for k in names] + zeros)

    def unflatten(v):
        parts = torch.split(v, sizes)
        p = {k: parts[i].reshape(params[k].shape) for i, k in enumerate(names)}
        o = [parts[len(names) + i].reshape(s) for i, s in enumerate(shapes)]
        return p, o

    return flat, unflatten, sizes


def forward(torch, case: Case, ops: Mapping, device: str, directions: int) -> tuple:
    """Forward mode along ``directions`` random sign tensors per tensor of (parameters, zero
    offsets) (``common.forward_rows``): ``(loss, zs, acts, found)``, ``found[name]`` the
    derivative or ``{"u": directions, "values": loss tangents}``."""
    rows = common.forward_rows(case, directions)
    loss, zs, acts, values = jvp_values(torch, case, ops, device, rows)
    return loss, zs, acts, common.forward_found(case, values, rows)


def jvp_derivatives(torch, case: Case, ops: Mapping, device: str, names: list[str]) -> tuple:
    """``(loss, zs, acts, {name: derivative})`` of the tensors ``names`` (parameters,
    ``delta<l>``) by forward mode along each of their basis directions."""
    blocks = common.tangent_blocks(case)
    loss, zs, acts, values = jvp_values(
        torch, case, ops, device, {n: common.basis_rows(blocks[n]) for n in names})
    return loss, zs, acts, {n: v.reshape(blocks[n]) for n, v in values.items()}


def jvp_values(torch, case: Case, ops: Mapping, device: str,
               rows: Mapping[str, common.Directions]) -> tuple:
    """The loss tangent along every direction in ``rows`` (``torch.func.jvp`` ``vmap``-ed over
    chunks of directions), per tensor; and the primal ``loss, zs, acts``."""
    params, x, y, masks = _tensors(torch, case, device)
    blocks = common.tangent_blocks(case)
    layers = [n for n in blocks if n not in params]
    offsets = [torch.zeros(blocks[n], dtype=getattr(torch, case.dtype), device=device)
               for n in layers]

    def loss_of(p, o):
        return common.model_forward(case, p, x, y, masks, ops, offsets=o)[0]

    along = torch.func.vmap(
        lambda tp, to: torch.func.jvp(loss_of, (params, offsets), (tp, to))[1])
    total = sum(d.n for d in rows.values())
    chunk = common.chunk_size(total, common.forward_work(case))
    out = []
    for chunk_np in common.tangent_chunks(blocks, rows, chunk, case.dtype):
        t = {n: torch.as_tensor(v, device=device) for n, v in chunk_np.items()}
        out.append(along({n: t[n] for n in params}, [t[n] for n in layers]))
    values = torch.cat(out)[:total].detach().cpu().numpy()
    with torch.no_grad():
        loss, zs, acts = common.model_forward(case, params, x, y, masks, ops)
    return loss, zs, acts, common.split_values(values, rows)


# --- the oracle ----------------------------------------------------------------------------


class TorchOracle(FrameworkOracle):
    """PyTorch autodiff as an oracle. ``overrides`` (a test hook) replaces named ops of the
    op table (``torch_ops``) with other callables, e.g. a planted wrong ``max_pool``."""

    name = "torch"

    def __init__(self, mode: str = "reverse", precision: str = "strict",
                 overrides: Mapping[str, Callable] | None = None,
                 directions: int = common.DIRECTIONS) -> None:
        self.mode = common.check_choice(mode, common.MODES, "mode")
        self.precision = common.check_choice(precision, common.PRECISIONS, "precision")
        self.overrides = dict(overrides or {})
        self.directions = common.check_directions(directions)

    def devices(self) -> list[str]:
        return ["cpu", "cuda"]

    def device_for(self, choice: str) -> str:
        """``gpu`` (JAX's name for the accelerator) is ``cuda`` here."""
        return "cuda" + choice[3:] if choice.startswith("gpu") else choice

    def available(self, device: str = "cpu") -> str | None:
        device = self.device_for(device)
        try:
            torch = import_torch()
        except ImportError as error:
            return f"torch is not installed ({error})"
        if device == "cpu":
            return None
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                return f"no CUDA device visible to torch {torch.__version__} " \
                       f"(built with CUDA {torch.version.cuda})"
            return None
        return f"torch oracle knows devices cpu and cuda, not {device!r}"

    def settings(self, device: str = "cpu") -> dict:
        torch = import_torch()
        with precision_settings(torch, self.precision, device) as switches:
            return {"precision": self.precision, "switches": switches,
                    "versions": self.versions(torch, device)}

    @staticmethod
    def versions(torch, device: str) -> dict[str, str]:
        v = {**common.base_versions(), "torch": torch.__version__}
        if device.startswith("cuda"):
            v["cuda"] = str(torch.version.cuda)
            v["cudnn"] = str(torch.backends.cudnn.version())
            v["gpu"] = torch.cuda.get_device_name(device)
        return v

    def _run(self, case: Case, device: str, dtype: str | None, names: list[str] | None
             ) -> Result:
        torch = import_torch()
        device = self.device_for(device)
        case = cast(case, dtype)
        meta = {"method": f"torch-{self.mode}", "oracle": self.name, "mode": self.mode,
                "device": device, "dtype": case.dtype, "precision": self.precision,
                "ops": OPS_USED, "overrides": sorted(self.overrides),
                "versions": self.versions(torch, device)}
        try:
            with precision_settings(torch, self.precision, device) as switches, \
                    recorded_warnings(meta):
                meta["switches"] = switches
                result = self._compute(torch, case, device, meta, names)
        finally:
            _release(torch, device)
        return common.assert_dtypes(result, case.dtype, self.label)

    def _compute(self, torch, case: Case, device: str, meta: dict, names: list[str] | None
                 ) -> Result:
        ops = torch_ops(torch, getattr(torch, case.dtype), device, self.overrides)
        n = lambda t: t.detach().cpu().numpy()  # noqa: E731
        if self.mode == "reverse" and names is None:
            loss, grads, deltas, zs, acts, inputs = reverse(torch, case, ops, device)
            return common.result_from(
                case, n(loss), {k: n(g) for k, g in grads.items()}, [n(d) for d in deltas],
                [n(z) for z in zs], [n(a) for a in acts], meta, [n(g) for g in inputs])
        if names is None:
            loss, zs, acts, found = forward(torch, case, ops, device, self.directions)
        else:
            loss, zs, acts, found = jvp_derivatives(torch, case, ops, device, names)
        return common.forward_result(case, n(loss), found, [n(z) for z in zs],
                                     [n(a) for a in acts], meta,
                                     self.directions if names is None else 0)

    def adjoint(self, case: Case, device: str = "cpu", dtype: str | None = None,
                seed: int = 0) -> tuple[float, float]:
        """``(<u, J^T v>, <J u, v>)`` for the output ``z^L`` as a function of all parameters,
        ``J^T v`` by ``torch.func.vjp`` and ``J u`` by ``torch.func.jvp``; random ``u, v``."""
        torch = import_torch()
        case = cast(case, dtype)
        try:
            with precision_settings(torch, self.precision, device), recorded_warnings({}):
                return _adjoint(torch, case, torch_ops(torch, getattr(torch, case.dtype), device,
                                                       self.overrides), device, seed)
        finally:
            _release(torch, device)


def _adjoint(torch, case: Case, ops: Mapping, device: str, seed: int) -> tuple[float, float]:
    params, x, y, masks = _tensors(torch, case, device)
    flat, unflatten, _ = _flat_parts(torch, case, params, [])

    def out(v):
        return common.output_of(case, unflatten(v)[0], x, y, masks, ops)

    rng = np.random.default_rng(seed)
    z, vjp_fn = torch.func.vjp(out, flat)
    u = torch.as_tensor(rng.normal(size=flat.shape).astype(case.dtype), device=device)
    v = torch.as_tensor(rng.normal(size=z.shape).astype(case.dtype), device=device)
    (jtv,) = vjp_fn(v)
    _, ju = torch.func.jvp(out, (flat,), (u,))
    return float((u * jtv).sum()), float((ju * v).sum())


def _release(torch, device: str) -> None:
    """Give cached CUDA memory back between cases (a no-op on cpu)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def conventions(device: str = "cpu") -> dict[str, object]:
    """What torch says at kinks, measured in both modes: ReLU'(0), leaky-ReLU'(0), and which
    gradient a fully tied 2x2 max-pool window gets (row-major cells)."""
    torch = import_torch()
    F = torch.nn.functional
    z = torch.zeros((), dtype=torch.float64, device=device)
    one = torch.ones((), dtype=torch.float64, device=device)
    tied = torch.ones(1, 1, 2, 2, dtype=torch.float64, device=device)
    pool = lambda a: F.max_pool2d(a, 2, 2).sum()  # noqa: E731
    with recorded_warnings({}):
        rev = {"relu'(0)": float(torch.func.grad(F.relu)(z)),
               "leaky_relu'(0)": float(torch.func.grad(lambda t: F.leaky_relu(t, LEAKY_SLOPE))(z)),
               "maxpool_tie_grad": torch.func.grad(pool)(tied).flatten().tolist()}
        basis = torch.eye(4, dtype=torch.float64, device=device).reshape(4, 1, 1, 2, 2)
        fwd = {"relu'(0)": float(torch.func.jvp(F.relu, (z,), (one,))[1]),
               "leaky_relu'(0)": float(torch.func.jvp(
                   lambda t: F.leaky_relu(t, LEAKY_SLOPE), (z,), (one,))[1]),
               "maxpool_tie_grad": [float(torch.func.jvp(pool, (tied,), (e,))[1])
                                    for e in basis]}
    return {"reverse": rev, "forward": fwd}
