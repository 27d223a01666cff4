"""Campaigns: ``engine`` (``run``, ``replay``), ``output`` (the output folder), ``stopping``
(Ctrl-C and SIGTERM), ``worker`` (the per-case time limit), ``device_study`` (the GPU
figures), ``conventions`` (what frameworks do at kinks) and ``assertions`` (the pytest
assertion). Kept import-free: the CLI imports ``stopping`` before anything heavy."""

__all__ = ["assertions", "conventions", "device_study", "engine", "output", "stopping", "worker"]
