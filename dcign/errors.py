"""Errors that the entry points explain to the user instead of printing a traceback.

A research run is usually started from a long command line; when something in it is wrong the
user needs one paragraph that says what was expected and how to fix it, not a traceback from
deep inside a library. Every check that guards user input raises :class:`ConfigError`; a run
that stops on purpose (a non-finite loss, a preemption signal) raises :class:`RunStoppedError`.
The entry points print the message alone and exit with the error's ``exit_code``.
"""


class ExplainedError(Exception):
    """An error whose message says everything the user needs; ``exit_code`` is the exit status."""

    exit_code = 1


class ConfigError(ExplainedError, ValueError):
    """A user mistake in configuration or input data, with a message that says how to fix it."""

    exit_code = 2


class RunStoppedError(ExplainedError):
    """Training stopped deliberately before its end; the message names the checkpoint to resume."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UnreadableImageError(Exception):
    """An image file that cannot be decoded: a data set's loader decides whether that stops the
    conversion or skips the file; the explorer answers an upload with a message."""
