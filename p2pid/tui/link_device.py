"""`p2pid device link` in a subprocess, for the first-run screen that links this device to an
identity the person already uses. The TUI never opens the store itself: the command line does
the linking (a foreground process, no daemon yet) and reports each step as a JSON line:
{"event": "code", ...}, {"event": "confirm", ...}, then {"event": "linked", ...} or
{"event": "error", ...}. Anything else it prints is ignored; an exit without an outcome becomes
an error event carrying what it said on stderr."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncGenerator
from typing import Any

from p2pid.home import Home

MAX_LINE_BYTES = 1 << 16
EXIT_SECONDS = 30.0
OUTCOMES = frozenset({"linked", "error"})


def link_command(home: Home, name: str | None) -> list[str]:
    command = [sys.executable, "-m", "p2pid", "--home", str(home.root), "--json", "device", "link"]
    return command + (["--name", name] if name else [])


async def device_link_events(home: Home, name: str | None) -> AsyncGenerator[dict[str, Any], None]:
    """The link's events, ending with its outcome ("linked" or "error"). Closing the iterator
    early (the person cancelled) ends the process."""
    process = await asyncio.create_subprocess_exec(
        *link_command(home, name),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
        limit=MAX_LINE_BYTES,
    )
    assert process.stdout is not None and process.stderr is not None
    stderr = asyncio.ensure_future(process.stderr.read())
    try:
        while line := await process.stdout.readline():
            event = _event(line)
            if event is None:
                continue
            if event["event"] in OUTCOMES:
                # Its store closed before the TUI starts a daemon on the same home.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), EXIT_SECONDS)
                yield event
                return
            yield event
        await process.wait()
        said = (await stderr).decode(errors="replace").strip()
        yield {
            "event": "error",
            "message": said or f"p2pid device link exited with code {process.returncode}",
        }
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        stderr.cancel()


def _event(line: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(line)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    if "event" not in document and isinstance(document.get("error"), dict):
        # the command line's own error document (bad usage, a home already initialised)
        return {"event": "error", "message": str(document["error"].get("message", ""))}
    return document if isinstance(document.get("event"), str) else None
