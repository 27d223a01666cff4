"""The conformance-vector route as an implementation outside Python walks it, shown with the
loop MLP of ``loop_mlp.py``: only JSON and ``.npz`` files are read and written (no
backprop_oracle import), so the same steps carry over to any language with a JSON and an
npz/zip reader.

    backprop-oracle vectors export vec --families mlp,softmax --cases 10
    python examples/vectors_loop_mlp.py vec results
    backprop-oracle vectors verify vec results

For each case in ``vec/index.json``: read ``<case_id>.json`` (layers, cost, dtype) and
``<case_id>.npz`` (``x``, ``y``, ``param/W1``, ..., ``mask/mask<l>``), compute the gradients,
compare them with ``grad/<name>`` within ``tol/grad/<name>`` (the check an implementer can run
in their own test suite), and write ``results/<case_id>.npz`` with ``W1``, ``b1``, ... for
``verify``. Cases with layers the loop MLP lacks get no results file: ``verify`` counts them
as ``unsupported``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loop_mlp import mean_gradients


def network(spec: dict, arrays: dict) -> tuple[list, list, list, list]:
    """Weights, biases, activations and dropout masks (per dense layer) from a case file."""
    weights, biases, activations, masks = [], [], [], []
    for number, layer in enumerate(spec["layers"], 1):
        if layer["type"] == "dense":
            n = len(weights) + 1
            weights.append(arrays[f"param/W{n}"].tolist())
            biases.append(arrays[f"param/b{n}"].tolist())
            activations.append(layer["activation"])
            masks.append(None)
        elif layer["type"] == "dropout" and weights:
            masks[-1] = (arrays[f"mask/mask{number}"], layer["p"])
        else:
            raise NotImplementedError(f"no {layer['type']} layer")
    return weights, biases, activations, masks


def gradients(spec: dict, arrays: dict) -> dict[str, np.ndarray]:
    """The batch gradients of the case in ``spec`` and ``arrays``."""
    weights, biases, activations, masks = network(spec, arrays)
    return mean_gradients(weights, biases, activations, masks, spec["cost"], arrays["x"],
                          arrays["y"], spec["dtype"])


def main(vectors: Path, results: Path) -> int:
    """Write ``results/<case_id>.npz`` for every case the loop MLP supports; return the number
    of cases whose gradients miss the stored tolerance."""
    results.mkdir(parents=True, exist_ok=True)
    index = json.loads((vectors / "index.json").read_text())
    outside = 0
    for entry in index["cases"]:
        spec = json.loads((vectors / entry["json"]).read_text())
        with np.load(vectors / entry["npz"], allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        try:
            grads = gradients(spec, arrays)
        except NotImplementedError as exc:
            print(f"{spec['case_id']}: unsupported ({exc})")
            continue
        off = [k for k, g in grads.items()
               if np.any(np.abs(g - arrays[f"grad/{k}"]) > arrays[f"tol/grad/{k}"])]
        outside += bool(off)
        print(f"{spec['case_id']}: {'outside tolerance: ' + ', '.join(off) if off else 'ok'}")
        np.savez(results / f"{spec['case_id']}.npz", **grads)
    return outside


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(1 if main(Path(sys.argv[1]), Path(sys.argv[2])) else 0)
