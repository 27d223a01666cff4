"""Oracles: finite differences, PyTorch, JAX. Each computes a case's loss, gradients and
(where it can) per-layer deltas independently of ``reference/``; they import only the
case model."""
