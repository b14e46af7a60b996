"""The error the file service raises to its callers."""

from __future__ import annotations


class FilesError(Exception):
    """A file request the node cannot carry out; `kind` maps to an RPC error code
    ("invalid" | "not_found" | "refused" | "unreachable" | "conflict")."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
