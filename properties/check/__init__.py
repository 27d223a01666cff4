"""Checking another implementation: ``check`` (gradients), ``check_training`` (SGD with
momentum and a schedule) and the language-neutral conformance vectors (``vectors``)."""

from .api import Implementation, Report, check, validate
from .training import Training, check_training

__all__ = ["Implementation", "Report", "Training", "check", "check_training", "validate"]
