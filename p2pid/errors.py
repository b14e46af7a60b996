"""Turning a failure into the one line a user reads. Stdlib only."""

from __future__ import annotations


def describe_failure(error: BaseException) -> str:
    """The messages of the exceptions behind `error`, without trio's exception-group wrappers."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(describe_failure(inner) for inner in error.exceptions)
    return str(error) or type(error).__name__
