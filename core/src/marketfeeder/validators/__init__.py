"""Data-quality checks."""

from .base import BookView, ValidationContext, Validator, ValidatorFactory, Verdict

__all__ = ["BookView", "ValidationContext", "Validator", "ValidatorFactory", "Verdict"]
