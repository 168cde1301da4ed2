"""The one refusal of the domain core: a schema-valid record the pipeline cannot use."""
from __future__ import annotations


class RejectRecord(ValueError):
    """A schema-valid record the pipeline cannot use; goes to the topic's DLQ with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
