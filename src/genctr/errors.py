"""The project's own exception types: every error a user can cause is one of these."""


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
