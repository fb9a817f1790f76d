"""The one error type ``ferry-runtime fetch`` raises; its message is meant for the user."""

from __future__ import annotations


class FetchError(Exception):
    """A model could not be fetched; ``str(error)`` says what failed and what to check."""
