"""The exceptions a request ends in: :class:`_HubError` (answered with a status and the Hub's error headers)
and :class:`_Drop` (an injected dropped connection)."""

from __future__ import annotations


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class _Drop(Exception):
    """Close the connection without an answer (an injected fault)."""
