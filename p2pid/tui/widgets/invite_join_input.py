"""The join screen's input: an invite code or the path of an image of its QR code.

A code copied off a terminal often comes with the line breaks where the terminal wrapped it; an
Input keeps only the first line of a paste, so a pasted code is joined back into one line here.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

from textual import events
from textual.widgets import Input, Static

from p2pid.wire.invite import INVITE_PREFIX

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)

JoinKind = Literal["code", "image"]


def read_join_input(text: str) -> tuple[JoinKind, str]:
    """What the user gave: ("code", the code) or ("image", the image's path).

    A code starts with P2PID:; anything that looks like a path (a separator, ~, a leading dot, an
    image suffix, or an existing file) is an image; anything else is passed on as a code, for the
    daemon to say why it is not one. Quotes and file:// URLs (what file managers paste) are undone.
    """
    value = text.strip().strip("'\"").strip()
    if value[: len(INVITE_PREFIX)].upper() == INVITE_PREFIX:
        return "code", "".join(value.split())
    if value.startswith("file://"):
        value = unquote(urlparse(value).path)
    path = Path(value).expanduser()
    looks_like_a_path = (
        os.sep in value
        or "/" in value
        or value.startswith(("~", "."))
        or path.suffix.lower() in IMAGE_SUFFIXES
        or _is_a_file(path)
    )
    if value and looks_like_a_path:
        return "image", str(path)
    return "code", value


async def read_code(kind: str, value: str, status: Static, error: Static) -> str | None:
    """The code given: `value`, or for an image the code its QR code holds, read here with
    zxing-cpp (the daemon takes codes, not images). None when the image cannot be read: `error`
    says why."""
    if kind != "image":
        return value
    from p2pid.qr import QrDecodeError, decode_image

    status.update("Reading the QR code…")
    try:
        return await asyncio.to_thread(decode_image, value)
    except QrDecodeError as failure:
        error.update(f"Could not read the image: {failure}")
        return None


def _is_a_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL: not a file
        return False


class JoinInput(Input):
    def _on_paste(self, event: events.Paste) -> None:
        """A code over several lines replaces the value, whole; any other paste is the Input's."""
        joined = "".join(event.text.split())
        if joined[: len(INVITE_PREFIX)].upper() == INVITE_PREFIX and "\n" in event.text.strip():
            event.prevent_default()  # Input's own handler would keep the first line only
            event.stop()
            self.value = joined
            self.cursor_position = len(joined)
