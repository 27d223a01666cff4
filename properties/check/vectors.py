"""Language-neutral conformance vectors: cases with the reference's answers and per-element
tolerances, as JSON + ``.npz`` (never pickle), for implementations outside Python.

Layout of a vectors directory (``export``)::

    index.json          schema_version, generator, seed, constraints, [{case_id, family, ...}]
    <case_id>.json      the case spec (layers, cost, dtype, shapes), the conventions an outside
                        implementer must follow, how to compare, every array's shape and dtype,
                        and the name and sha256 of the .npz
    <case_id>.npz       inputs  x, y, param/<name>, mask/<name>
                        expected  loss, grad/<name>, delta/delta<l>
                        tolerances  tol/loss, tol/grad/<name>, tol/delta/delta<l>

An implementation agrees on an element when ``|actual - expected| <= tol`` (the tolerance of
``compare``: ``kappa (u_impl + u_ref) E + floor`` with ``u_impl = u_ref`` the unit roundoff of
the case dtype). ``verify`` reads one ``<case_id>.npz`` of results per case (keys ``W1``,
``b1``, ..., optionally ``loss`` and ``delta<l>``) and checks them with ``check`` against the
reference, recomputed; a case without a results file is ``unsupported``.

Reading is defensive, since vector and result files come from elsewhere: JSON is size-capped
and parsed strictly; ``.npz`` files are opened as zips, every member's declared size and
``.npy`` header (dtype, shape x itemsize) are checked against ``MAX_ARRAY_BYTES`` before any
data is read, then loaded with ``np.load(..., allow_pickle=False)``; object arrays, NaN/inf,
shapes other than the JSON declares, case ids that are not 16 hex digits, files resolving
outside their directory, a sha256 or case id that does not match, and unknown schema versions
all raise ``VectorError`` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...reference import backprop
from ...reference.case import LEAKY_SLOPE, Case, CaseError
from ...reference.result import Result
from ..cases.case_io import case_arrays, case_from_parts
from ..comparison.compare import kink_rows
from ..comparison.error_model import KAPPA, bounds, tolerance, underflow_floor, unit_roundoff

__all__ = [
    "CASE_ID", "CONVENTIONS", "export", "FLOAT_DTYPES", "load_cases", "load_vector",
    "load_vectors", "MAX_ARRAY_BYTES", "MAX_JSON_BYTES", "MAX_MEMBERS", "read_index", "read_json",
    "read_npz", "read_results", "SCHEMA_VERSION", "stale", "Vector", "vector_arrays",
    "VectorError", "verify", "write_results"
]

SCHEMA_VERSION = 1
MAX_ARRAY_BYTES = 256 * 2**20  # per array, and per .npz in total
MAX_JSON_BYTES = 16 * 2**20
MAX_MEMBERS = 4096
CASE_ID = re.compile(r"[0-9a-f]{16}")
FLOAT_DTYPES = ("float32", "float64")

CONVENTIONS = {
    "arrays": "Batch-first, C order. Dense input x has shape (batch, features); images are "
              "NCHW (batch, channels, height, width). y has the shape of the output.",
    "parameters": "Named by parametrised layer counting from 1: W1, b1, W2, b2, ... Dense W<k> "
                  "has shape (out, in), z = a W^T + b; conv W<k> has shape (out_channels, "
                  "in_channels, k, k), b<k> shape (out_channels,). Graph leaves p1, p2, ... "
                  "have shape (features,) and broadcast over the batch.",
    "layers": "Layer l (from 1) computes z^l from a^(l-1) (a^0 = x) and a^l = activation(z^l); "
              "pool, flatten and dropout layers have no activation (a^l = z^l).",
    "conv2d": "Cross-correlation (no kernel flip), square kernel, stride s, symmetric zero "
              "padding p: z[n,o,i,j] = b[o] + sum_{c,u,v} W[o,c,u,v] x_pad[n,c,s*i+u,s*j+v]; "
              "output size (size + 2p - k) // s + 1.",
    "pooling": "size x size windows with a stride, no padding. max: the gradient goes to the "
               "first maximum of the window in row-major order (ties go to the first cell), "
               "0 elsewhere; avg: 1/size^2 to every cell; l2: p = sqrt(sum x_i^2), gradient "
               "x_i / p (0 where p = 0). Overlapping windows add their gradients.",
    "flatten": "(N, C, H, W) -> (N, C*H*W) in C order.",
    "dropout": "Inverted dropout with the explicit 0/1 mask mask<l> (shape of z^l, batch "
               "included) from the .npz: a^l = a^(l-1) * mask / (1 - p). No randomness.",
    "activations": "sigmoid 1/(1+exp(-z)); tanh; relu max(z, 0) with relu'(0) = 0; leaky_relu "
                   f"z if z > 0 else {LEAKY_SLOPE} z, with leaky_relu'(0) = {LEAKY_SLOPE}; "
                   "identity.",
    "cost": "C = (1/n) sum_x C_x, the mean over the batch of a per-sample cost C_x (n = batch "
            "size). "
            "quadratic: C_x = 1/2 ||y - a^L||^2. cross_entropy (sigmoid output): "
            "C_x = -sum_j [y log a + (1-y) log(1-a)] = sum_j softplus(z) - y z. "
            "softmax_cross_entropy (identity output, logits z): C_x = -sum_k t_k log "
            "softmax(z)_k, whose delta^L = (softmax(z) - t) / n (softmax-with-loss).",
    "deltas": "delta<l> = dC/dz^l of the batch cost C (so it carries the 1/n, and "
              "dC/db, dC/dW are plain sums over the batch), shape (batch, *shape of z^l). "
              "Graph family: delta<l> = dC/d(value of node l), shaped like that value.",
    "graph": "Family graph: layers are nodes evaluated in order; inputs are 'x', a leaf "
             "'p<i>', an earlier node (1-based int) or a constant (float). Ops: add, mul, div, "
             "neg, exp, reciprocal, log, sigmoid (elementwise, NumPy broadcasting). The last "
             "node is the output a^L; the cost applies to it (quadratic or "
             "softmax_cross_entropy).",
    "dtype": "Compute in the case dtype (float32 or float64); return arrays of that dtype.",
}


class VectorError(ValueError):
    """A vectors or results file is malformed, unsafe, altered or of an unknown schema."""


@dataclass
class Vector:
    """One loaded conformance vector: the validated ``case``, the reference's ``expected``
    answer as stored, and the stored per-element ``tolerances`` (``"loss"``, ``"W1"``,
    ``"delta1"``, ...)."""

    case: Case
    expected: Result
    tolerances: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None


# ---------------------------------------------------------------- export

def _generator() -> dict[str, str]:
    try:
        from importlib.metadata import version

        ours = version("backprop-oracle")
    except Exception:  # not installed: still a valid export
        ours = "unknown"
    return {"name": "backprop-oracle", "version": ours, "numpy": np.__version__}


class _Arrays(dict):
    """The arrays of a vector, and ``kinked``: layer -> where a non-differentiable point is
    within rounding reach (as ``compare`` finds them)."""

    kinked: dict[int, str]


def vector_arrays(case: Case) -> dict[str, np.ndarray]:
    """Inputs, the reference's answer and its tolerances, keyed as in the ``.npz``
    (``.kinked``: layers with a non-differentiable point within rounding reach)."""
    result = backprop(case)
    b = bounds(case)
    u = unit_roundoff(case.dtype)
    floor = underflow_floor(b, case.dtype, case.dtype, KAPPA)
    arrays = _Arrays(case_arrays(case))
    arrays["loss"] = np.asarray(result.loss, dtype=case.dtype)
    arrays["tol/loss"] = np.asarray(tolerance(b.E["loss"], u, u, 0.0, KAPPA, floor), np.float64)
    for name, g in result.grads.items():
        arrays[f"grad/{name}"] = np.asarray(g, dtype=case.dtype)
        arrays[f"tol/grad/{name}"] = np.asarray(tolerance(b.E[name], u, u, 0.0, KAPPA, floor),
                                                np.float64)
    for name, d in result.deltas.items():
        arrays[f"delta/{name}"] = np.asarray(d, dtype=case.dtype)
        arrays[f"tol/delta/{name}"] = np.asarray(tolerance(b.E[name], u, u, 0.0, KAPPA, floor),
                                                 np.float64)
    for key, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise VectorError(f"case {case.case_id} ({case.describe()}): {key} is not finite; "
                              "it cannot be a conformance vector")
    near = kink_rows(case, b, (result,), KAPPA * 2 * u)
    arrays.kinked = {l: f"{b.kinked[l]}, batch rows "
                     f"{[int(i) for i in np.flatnonzero(rows)]}"
                     for l, rows in near.items() if rows.any()}
    return arrays


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _case_document(case: Case, arrays: Mapping[str, np.ndarray], npz: Path) -> dict:
    u = unit_roundoff(case.dtype)
    kinked = getattr(arrays, "kinked", {})
    return {
        "schema_version": SCHEMA_VERSION,
        "case_id": case.case_id,
        **case.spec(),
        "mask_shapes": {k: list(v.shape) for k, v in case.masks.items()},
        "description": case.describe(),
        "conventions": CONVENTIONS,
        "tolerances": {
            "rule": "an element agrees when |actual - expected| <= tol, elementwise; the "
                    "tolerance of element i is in tol/loss, tol/grad/<name>, "
                    "tol/delta/delta<l> of the .npz",
            "formula": "tol_i = kappa * (u_impl + u_ref) * E_i + floor",
            "kappa": KAPPA,
            "u_impl": u,
            "u_ref": u,
            "assumes": f"the implementation computes in the case dtype {case.dtype} "
                       f"(u = {u:.3g}); E_i is the error model's running-error bound of "
                       "element i in units of u, floor the underflow allowance",
            "kinks": (f"non-differentiable points (ReLU at 0, max-pool ties) in layer(s) "
                      f"{', '.join(f'{l} ({k})' for l, k in sorted(kinked.items()))}: "
                      "elements fed by them may legitimately differ (verify calls that kink)"
                      if kinked else "none: the case is away from non-differentiable points "
                      "(ReLU at 0, max-pool ties), every element is compared"),
        },
        "arrays": {k: {"shape": list(a.shape), "dtype": a.dtype.name}
                   for k, a in arrays.items()},
        "files": {"arrays": npz.name, "sha256": _sha256(npz)},
    }


def export(directory: Path | str, cases: Sequence[Case], *, seed: int | None = None,
           constraints: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``<case_id>.json`` + ``<case_id>.npz`` per case and ``index.json`` into
    ``directory``; returns the paths written (``index.json`` first)."""
    directory = Path(directory)
    cases = list(cases)
    for i, c in enumerate(cases):
        if not isinstance(c, Case):
            raise TypeError(f"cases[{i}] is a {type(c).__name__}, not a Case")
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    entries = []
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            continue
        seen.add(case.case_id)
        # Any: numpy's stub would otherwise match the arrays against savez's allow_pickle
        arrays: dict[str, Any] = vector_arrays(case)
        npz = directory / f"{case.case_id}.npz"
        np.savez_compressed(npz, **arrays)
        doc = _case_document(case, arrays, npz)
        spec = directory / f"{case.case_id}.json"
        spec.write_text(json.dumps(doc, indent=1))
        written += [spec, npz]
        entries.append({"case_id": case.case_id, "family": case.family, "dtype": case.dtype,
                        "json": spec.name, "npz": npz.name})
    index = {"schema_version": SCHEMA_VERSION, "generator": _generator(), "seed": seed,
             "constraints": dict(constraints or {}), "cases": entries}
    (directory / "index.json").write_text(json.dumps(index, indent=1, default=str))
    return [directory / "index.json", *written]


# ---------------------------------------------------------------- safe reading

def _inside(directory: Path, name: str, what: str) -> Path:
    """``directory / name``, refused when ``name`` is not a plain file name or the path
    resolves (symlinks followed) outside ``directory``."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise VectorError(f"{directory}: {what} {name!r} is not a plain file name inside the "
                          "directory")
    path = directory / name
    root = directory.resolve()
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:
        raise VectorError(f"{path}: cannot resolve ({exc})") from None
    if not resolved.is_relative_to(root):
        raise VectorError(f"{path}: resolves to {resolved}, outside {root}; refused")
    return path


def _case_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not CASE_ID.fullmatch(value):
        raise VectorError(f"{where}: case id {value!r} is not 16 lowercase hex digits")
    return value


def read_json(path: Path) -> dict:
    """A JSON object from ``path`` (size-capped), or ``VectorError``."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise VectorError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not path.is_file():
        raise VectorError(f"{path}: not a regular file")
    if size > MAX_JSON_BYTES:
        raise VectorError(f"{path}: {size} bytes, more than the {MAX_JSON_BYTES} allowed for "
                          "a JSON file")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"),
                         parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise VectorError(f"{path}: malformed JSON: not UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise VectorError(f"{path}: malformed JSON: {exc.msg} (line {exc.lineno} column "
                          f"{exc.colno})") from None
    except (RecursionError, ValueError) as exc:
        raise VectorError(f"{path}: malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise VectorError(f"{path}: malformed JSON: expected an object, got "
                          f"{type(doc).__name__}")
    return doc


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _schema(doc: Mapping, path: Path) -> None:
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise VectorError(f"{path}: unknown schema_version {version!r}; this reader knows "
                          f"{SCHEMA_VERSION}")


def _npy_header(member: Any, name: str, where: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """dtype, shape and header length of one ``.npy`` member, without reading its data."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(member)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(member)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, SyntaxError, TypeError, EOFError, OSError, zipfile.BadZipFile,
            zlib.error) as exc:
        raise VectorError(f"{where}: array {name!r}: corrupt member or .npy header ({exc})"
                          ) from None
    return dtype, tuple(shape), member.tell()


def read_npz(path: Path, *, floats_only: bool = True) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``: every member's declared size and ``.npy`` header are checked
    against ``MAX_ARRAY_BYTES`` before any data is read; object arrays are refused; then
    ``np.load(..., allow_pickle=False)``. ``floats_only``: only float32/float64 arrays."""
    where = str(path)
    if path.exists() and not path.is_file():
        raise VectorError(f"{path}: not a regular file")
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise VectorError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise VectorError(f"{path}: not a valid .npz (zip) file, truncated or corrupt: "
                          f"{exc}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise VectorError(f"{path}: {len(infos)} members, more than {MAX_MEMBERS}")
        total = 0
        for info in infos:
            name = info.filename
            if not name.endswith(".npy") or info.is_dir():
                raise VectorError(f"{where}: member {name!r} is not a .npy array")
            key = name[:-4]
            total += info.file_size
            if info.file_size > MAX_ARRAY_BYTES or total > MAX_ARRAY_BYTES:
                raise VectorError(f"{where}: array {key!r} declares {info.file_size} bytes "
                                  f"(total {total}), more than the {MAX_ARRAY_BYTES} allowed")
            try:
                with archive.open(info) as member:
                    dtype, shape, header = _npy_header(member, key, where)
            except VectorError:
                raise
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
                    zlib.error) as exc:
                raise VectorError(f"{where}: array {key!r} cannot be read, corrupt: "
                                  f"{exc}") from None
            if dtype.hasobject or dtype.kind not in "biufc":
                raise VectorError(f"{where}: array {key!r} has dtype {dtype} (object or "
                                  "pickled data): refused")
            if floats_only and dtype.name not in FLOAT_DTYPES:
                raise VectorError(f"{where}: array {key!r} has dtype {dtype}, expected "
                                  f"float32 or float64")
            if any(n < 0 for n in shape):
                raise VectorError(f"{where}: array {key!r} declares a negative shape {shape}")
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > MAX_ARRAY_BYTES:
                raise VectorError(f"{where}: array {key!r} declares shape {shape} of {dtype} "
                                  f"= {nbytes} bytes, more than the {MAX_ARRAY_BYTES} allowed")
            if header + nbytes > info.file_size:
                raise VectorError(f"{where}: array {key!r} declares shape {shape} of {dtype} "
                                  f"({nbytes} bytes) but its member holds "
                                  f"{info.file_size - header}: truncated or corrupt")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
            zlib.error) as exc:
        raise VectorError(f"{path}: not a valid .npz, truncated or corrupt: {exc}") from None


def _non_finite(arrays: Mapping[str, np.ndarray], where: Path) -> None:
    for key, a in arrays.items():
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0]) if a.ndim else ()
            raise VectorError(f"{where}: array {key!r} has a non-finite value "
                              f"({a[bad]!r}) at index {bad}")


def _declared(doc: Mapping, arrays: Mapping[str, np.ndarray], npz: Path) -> None:
    declared = doc.get("arrays")
    if not isinstance(declared, dict):
        raise VectorError(f"{npz.with_suffix('.json')}: 'arrays' must be an object of "
                          "{name: {shape, dtype}}")
    missing = sorted(set(declared) - set(arrays))
    extra = sorted(set(arrays) - set(declared))
    if missing or extra:
        raise VectorError(f"{npz}: arrays do not match the JSON spec: "
                          + "; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                                      + ([f"unexpected {', '.join(extra)}"] if extra else [])))
    for key, a in arrays.items():
        want = declared[key] if isinstance(declared[key], dict) else {}
        if list(a.shape) != want.get("shape"):
            raise VectorError(f"{npz}: array {key!r} has shape {tuple(a.shape)}, the JSON spec "
                              f"declares {want.get('shape')}")
        if a.dtype.name != want.get("dtype"):
            raise VectorError(f"{npz}: array {key!r} has dtype {a.dtype}, the JSON spec "
                              f"declares {want.get('dtype')}")


def _expected_keys(case: Case, result_deltas: Sequence[str]) -> set[str]:
    keys = {"loss", "tol/loss"} | {f"{p}/{k}" for k in case.params for p in ("grad", "tol/grad")}
    keys |= {f"{p}/{k}" for k in result_deltas for p in ("delta", "tol/delta")}
    return keys


def load_vector(directory: Path | str, case_id: str) -> Vector:
    """One vector (``<case_id>.json`` + ``.npz``), fully validated."""
    directory = Path(directory)
    case_id = _case_id(case_id, str(directory))
    spec_path = _inside(directory, f"{case_id}.json", "case file")
    doc = read_json(spec_path)
    _schema(doc, spec_path)
    if doc.get("case_id") != case_id:
        raise VectorError(f"{spec_path}: case_id {doc.get('case_id')!r} does not match the "
                          f"file name {case_id!r}")
    files = doc.get("files")
    if not isinstance(files, dict):
        raise VectorError(f"{spec_path}: 'files' must name the .npz and its sha256")
    name = files.get("arrays")
    if name != f"{case_id}.npz":
        raise VectorError(f"{spec_path}: arrays file {name!r} refused; expected "
                          f"'{case_id}.npz' in the same directory")
    npz = _inside(directory, name, "arrays file")
    if not npz.is_file():
        raise VectorError(f"{npz}: no such file (named by {spec_path.name})")
    digest = _sha256(npz)
    if digest != files.get("sha256"):
        raise VectorError(f"{npz}: sha256 {digest} does not match {files.get('sha256')!r} "
                          f"in {spec_path.name}: the file was altered or truncated")
    arrays = read_npz(npz)
    _declared(doc, arrays, npz)
    _non_finite(arrays, npz)
    inputs = {k: v for k, v in arrays.items()
              if k in ("x", "y") or k.startswith(("param/", "mask/"))}
    try:
        case = case_from_parts(doc, inputs)
    except (CaseError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise VectorError(f"{spec_path}: not a valid case: {type(exc).__name__}: {exc}"
                          ) from None
    if case.case_id != case_id:
        raise VectorError(f"{npz}: the arrays make case {case.case_id}, not {case_id}: "
                          "case id mismatch, the vector was altered")
    for key in ("x_shape", "param_shapes"):
        if doc.get(key) != case.spec()[key]:
            raise VectorError(f"{spec_path}: {key} {doc.get(key)} does not match the arrays "
                              f"({case.spec()[key]})")
    deltas = [k.split("/", 1)[1] for k in arrays if k.startswith("delta/")]
    want = _expected_keys(case, deltas)
    have = set(arrays) - set(inputs)
    if want != have:
        raise VectorError(f"{npz}: expected values incomplete: missing "
                          f"{sorted(want - have) or 'none'}, unexpected "
                          f"{sorted(have - want) or 'none'}")
    for k in case.params:
        for key in (f"grad/{k}", f"tol/grad/{k}"):
            if arrays[key].shape != case.params[k].shape:
                raise VectorError(f"{npz}: {key} has shape {arrays[key].shape}, parameter {k} "
                                  f"has {case.params[k].shape}")
    for d in deltas:
        if arrays[f"tol/delta/{d}"].shape != arrays[f"delta/{d}"].shape:
            raise VectorError(f"{npz}: tol/delta/{d} and delta/{d} differ in shape")
    if arrays["loss"].shape != () or arrays["tol/loss"].shape != ():
        raise VectorError(f"{npz}: loss and tol/loss must be scalars (shape ())")
    expected = Result(loss=float(arrays["loss"]),
                      grads={k: arrays[f"grad/{k}"] for k in case.params},
                      deltas={d: arrays[f"delta/{d}"] for d in deltas},
                      meta={"method": "vectors", "file": str(npz)})
    tols = {"loss": arrays["tol/loss"], **{k: arrays[f"tol/grad/{k}"] for k in case.params},
            **{d: arrays[f"tol/delta/{d}"] for d in deltas}}
    for k, t in tols.items():
        if np.any(t < 0):
            raise VectorError(f"{npz}: tolerance of {k} has negative elements")
    return Vector(case=case, expected=expected, tolerances=tols, path=spec_path)


def read_index(directory: Path | str) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise VectorError(f"{directory}: not a directory of vectors")
    path = _inside(directory, "index.json", "index")
    if not path.is_file():
        raise VectorError(f"{directory}: no index.json (not a vectors directory?)")
    index = read_json(path)
    _schema(index, path)
    entries = index.get("cases")
    if not isinstance(entries, list):
        raise VectorError(f"{path}: 'cases' must be a list")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise VectorError(f"{path}: cases[{i}] must be an object")
        _case_id(entry.get("case_id"), f"{path}: cases[{i}]")
    return index


def load_vectors(directory: Path | str) -> list[Vector]:
    """Every vector listed in ``directory/index.json``, validated (``VectorError`` names the
    first bad file; an index listing no case, or a case twice, is refused: it would pass
    vacuously or count a case twice). ``[v.case for v in load_vectors(d)]`` are the cases."""
    directory = Path(directory)
    index = read_index(directory)
    if not index["cases"]:
        raise VectorError(f"{directory}: index.json lists no cases: nothing to verify")
    seen: set[str] = set()
    for entry in index["cases"]:
        if entry["case_id"] in seen:
            raise VectorError(f"{directory / 'index.json'}: case_id {entry['case_id']} listed "
                              "twice")
        seen.add(entry["case_id"])
    vectors = []
    for entry in index["cases"]:
        vector = load_vector(directory, entry["case_id"])
        if entry.get("family") != vector.case.family:
            raise VectorError(f"{directory / 'index.json'}: case {entry['case_id']} listed as "
                              f"family {entry.get('family')!r}, its file says "
                              f"{vector.case.family!r}")
        vectors.append(vector)
    return vectors


def load_cases(directory: Path | str) -> list[Case]:
    """The cases of a vectors directory."""
    return [v.case for v in load_vectors(directory)]


# ---------------------------------------------------------------- verify

def stale(vector: Vector) -> list[str]:
    """The stored expected tensors that the reference, recomputed here, no longer gives
    within the stored tolerance (vectors made by another version of the reference)."""
    fresh = backprop(vector.case)
    bad = []
    pairs: list[tuple[str, Any, Any]] = [("loss", vector.expected.loss, fresh.loss)]
    pairs += [(k, v, fresh.grads.get(k)) for k, v in vector.expected.grads.items()]
    pairs += [(k, v, fresh.deltas.get(k)) for k, v in vector.expected.deltas.items()]
    for k, stored, now in pairs:
        if now is None or np.shape(now) != np.shape(stored) or np.any(
                np.abs(np.asarray(now, np.float64) - np.asarray(stored, np.float64))
                > vector.tolerances[k]):
            bad.append(k)
    return bad


def read_results(results: Path | str, vectors: Sequence[Vector]) -> dict[str, dict]:
    """``case_id -> {key: array}`` for each case with a ``<case_id>.npz`` in ``results``
    (cases without one are left out: they become ``unsupported``)."""
    results = Path(results)
    if not results.is_dir():
        raise VectorError(f"{results}: not a directory of results")
    found = {}
    for v in vectors:
        path = _inside(results, f"{v.case.case_id}.npz", "results file")
        if path.exists() or path.is_symlink():
            found[v.case.case_id] = read_npz(path, floats_only=False)
    return found


def verify(directory: Path | str, results: Path | str, *, name: str | None = None,
           tiebreakers: Sequence[str] = (), replay: str = "", progress: Any = None):
    """Check the results in ``results`` (``<case_id>.npz`` per case, keys ``W1``, ``b1``,
    ..., optionally ``loss``, ``delta<l>``) against the vectors in ``directory``: a ``Report``
    of ``check``. A case without a results file is ``unsupported`` (no results file at all
    is a ``VectorError``); vectors whose expected values the reference no longer reproduces
    raise ``VectorError``."""
    from .api import check

    vectors = load_vectors(directory)
    for v in vectors:
        off = stale(v)
        if off:
            raise VectorError(f"{v.path}: stored expected {', '.join(off)} differ from the "
                              "reference recomputed here beyond tolerance: stale or altered "
                              "vectors, export them again")
    found = read_results(results, vectors)
    if vectors and not found:
        raise VectorError(f"{results}: no results: none of the {len(vectors)} cases has a "
                          "<case_id>.npz here (wrong directory?)")

    def implementation(case: Case) -> dict:
        if case.case_id not in found:
            raise NotImplementedError(f"no results file {case.case_id}.npz in {results}")
        return found[case.case_id]

    return check(implementation, [v.case for v in vectors], name=name or str(results),
                 tiebreakers=tiebreakers, replay=replay, progress=progress)


def write_results(directory: Path | str, outputs: Mapping[str, Mapping[str, Any]]) -> list[Path]:
    """Helper for Python-side tests and examples: ``case_id -> {W1: ..., loss: ...}`` written
    as ``<case_id>.npz`` files, as an outside implementation would."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for case_id, arrays in outputs.items():
        path = directory / f"{_case_id(case_id, str(directory))}.npz"
        # Any: numpy's stub would otherwise match the arrays against savez's allow_pickle
        named: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
        np.savez(path, **named)
        paths.append(path)
    return paths
