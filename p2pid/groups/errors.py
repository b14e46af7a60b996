"""The error the groups service raises to its callers (RPC maps `kind` to an error code)."""

from __future__ import annotations


class GroupsError(Exception):
    """A group request that cannot be carried out; `kind` is one of invalid, not_found,
    unreachable, refused, timeout, conflict."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
