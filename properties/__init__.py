"""Everything between a drawn case and its records, one sub-package per job:

- ``cases``: drawing cases (seeded, one generator per index), fixed examples, case files;
- ``comparison``: the record, the error model, tensor-by-tensor comparison, and ``evaluate``,
  the one path that runs an implementation on a case and makes its records;
- ``check``: ``bo.check``, ``bo.check_training`` and the conformance vectors;
- ``campaign``: ``run`` and ``replay``, the output folder, stopping, the per-case worker, the
  GPU study, the kink conventions and the pytest assertion.
"""

__all__ = ["campaign", "cases", "check", "comparison"]
