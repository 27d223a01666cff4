"""Tests of the NumPy reference, one module per reference module."""
