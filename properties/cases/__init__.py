"""Cases: drawing them (``strategies``), fixed hand-written ones (``examples``), and saving
and loading them without pickle (``case_io``)."""

__all__ = ["case_io", "examples", "strategies"]
