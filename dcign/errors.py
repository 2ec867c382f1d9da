"""User-facing errors.

A research run is usually started from a long command line; when something in it is wrong the
user needs one paragraph that says what was expected and how to fix it, not a traceback from
deep inside a library. Every check that guards user input raises :class:`ConfigError`, and the
entry points print its message alone.
"""


class ConfigError(ValueError):
    """A user mistake in configuration or input data, with a message that says how to fix it."""
