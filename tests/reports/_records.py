"""Synthetic records shaped like the comparison's, for report tests."""

from __future__ import annotations

from backprop_oracle.properties.comparison.records import Record, skip_record


def record(case: str = "c1", *, family: str = "mlp", oracle: str = "torch", mode: str = "reverse",
           dtype: str = "float64", device: str = "cpu", name: str = "W1", quantity: str = "grad",
           margin: float = 1e-3, verdict: str = "agree", first: int | None = None,
           arch: str = "mlp: x(4, 3) -> dense(2, tanh)", **extra: object) -> Record:
    fields: dict[str, object] = dict(
        case_id=case, family=family, oracle=oracle, mode=mode, precision="strict",
        device=device, dtype=dtype, quantity=quantity, name=name, shape=(2, 3),
        max_abs_err=margin * 1e-9, max_rel_err=margin * 1e-8, err_ulps=margin * 4,
        worst_index=(1, 2), n_beyond=int(margin > 1), n_total=6, tolerance=1e-9,
        tolerance_model="u=1.1e-16 x K=8 x |terms|=1.2", margin=margin, verdict=verdict,
        first_divergent_layer=first, arch=arch,
        replay=f"backprop-oracle replay {case} --from out", expected_value=0.25,
        actual_value=0.25 + margin * 1e-9)
    fields.update(extra)
    return Record(**fields)  # type: ignore[arg-type]


def skip(reason: str = "no CUDA device present", family: str = "mlp", dtype: str = "float64"
         ) -> Record:
    return skip_record(family, "torch", "reverse", "strict", "cuda", dtype, reason)


def planted_divergence(case: str = "bad") -> list[Record]:
    """A comparison whose divergence enters at layer 2 of a 3-layer net."""
    return [record(case, name="delta3", quantity="delta", margin=1e-2, first=2),
            record(case, name="delta2", quantity="delta", margin=5e3, verdict="diverge", first=2),
            record(case, name="delta1", quantity="delta", margin=2e3, verdict="diverge", first=2),
            record(case, name="W2", margin=4e3, verdict="diverge", first=2)]
