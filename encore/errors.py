"""Errors that carry a message meant for the person at the keyboard (CLI) or the client (HTTP 4xx)."""


class EncoreError(Exception):
    """Bad input or configuration: the message says what was wrong; CLIs print it as one line."""


class SpecError(EncoreError):
    """A dataset or request does not fit the feature spec (unknown/missing column, bad value)."""
