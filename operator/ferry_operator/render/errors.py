"""The one error the renderers raise."""

from __future__ import annotations


class RenderError(ValueError):
    """A spec the schema accepts but Ferry cannot turn into children.

    The operator reports it as ``Ready=False`` with :attr:`reason` and the message (which names
    the field) instead of crash-looping; ``ferry-operator render`` prints it and exits non-zero.
    """

    def __init__(self, field: str, message: str, reason: str = "InvalidSpec") -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {message}")
