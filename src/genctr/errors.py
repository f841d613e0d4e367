"""The project's own exception types: every error a user can cause is one of these."""
from __future__ import annotations

from typing import Any

PREVIEW_CHARS = 80  # most characters of a user's value an error message echoes back


def describe(value: Any, limit: int = PREVIEW_CHARS, *, raw: bool = False) -> str:
    """``repr(value)`` (``str`` with ``raw``) cut to ``limit`` chars, e.g. ``'aaaa... (5242882 chars)'``.

    Every error that echoes a user's value goes through here, so a 5 MiB value costs 100 bytes.
    A numpy scalar is shown as the plain Python value it holds (``0.7``, not ``np.float64(0.7)``).
    """
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        value = value.item()
    text = value if raw and isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} chars)"


class GenCTRError(Exception):
    """Base class: a problem the user can fix; the message says what to fix."""


class ConfigError(GenCTRError):
    """A configuration value is missing, unknown or out of range."""


class DataValidationError(GenCTRError):
    """Input data breaks the canonical schema or a data-quality expectation.

    ``report_path`` points at a readable report when one was written.
    """

    def __init__(self, message: str, report_path: str | None = None) -> None:
        super().__init__(message)
        self.report_path = report_path


class ArtifactError(GenCTRError):
    """A model or feature artifact is missing, incomplete or of an unsupported version."""


class TrainingJobError(GenCTRError):
    """A Kubeflow training job (TrainJob / PyTorchJob) could not be submitted, failed or did not
    finish in time; the message names the job and what its status or the API server said."""
