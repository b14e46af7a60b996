"""A scripted daemon link for the TUI's snapshot tests.

Snapshots must be byte-identical run after run; a real daemon's identity ids, PeerIds and clocks
differ on every run, so these tests script the daemon's answers with fixed records (the same
shapes the RPC methods return). Behaviour is tested against real daemons in the Pilot tests.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path, PurePath
from typing import Any, ClassVar

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Input

import p2pid.tui.app as tui_app
from p2pid.home import Home
from p2pid.rpc.protocol import ErrorCode, RpcError
from p2pid.tui.app import P2pidApp

Answer = Any | Callable[..., Any]
WAIT_SECONDS = 30.0


def refuse(code: ErrorCode, message: str) -> Callable[..., Any]:
    """An answer that is the daemon's refusal: the call raises RpcError(code, message)."""

    def refused(**params: Any) -> Any:
        raise RpcError(code, message)

    return refused


class ScriptedLink:
    def __init__(self, answers: Mapping[str, Answer]) -> None:
        self.answers = dict(answers)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def call(self, method: str, **params: Any) -> Any:
        self.calls.append((method, params))
        if method not in self.answers:
            raise RpcError(ErrorCode.METHOD_NOT_FOUND, f"unscripted method {method}")
        answer = self.answers[method]
        return answer(**params) if callable(answer) else answer

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self.queue.get()

    def push(self, event: dict[str, Any]) -> None:
        self.queue.put_nowait(event)

    async def close(self) -> None:
        pass

    def factory(self) -> Callable[[Home, str | None], Any]:
        async def open_link(home: Home, passphrase: str | None) -> ScriptedLink:
            return self

        return open_link


def initialised_home(root: Path) -> Home:
    """Enough of a home for the app to skip the welcome screen (the link is scripted)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "p2pid.db").touch()
    (root / "vault.key").touch()
    return Home(root)


# Textual reads CSS_PATH relative to the module of the app's class: this one's is tests/.
CSS: list[str | PurePath] = [Path(tui_app.__file__).parent / path for path in P2pidApp.CSS_PATH]


class QuietApp(P2pidApp):
    """No toasts in the pictures: they would land at a different moment on each run."""

    CSS_PATH: ClassVar[list[str | PurePath]] = list(CSS)

    def notify(self, *args: Any, **kwargs: Any) -> None:
        pass


class NotingApp(P2pidApp):
    """Keeps every toast's text, for the tests to check what was said."""

    CSS_PATH: ClassVar[list[str | PurePath]] = list(CSS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.toasts: list[str] = []

    def notify(self, message: Any, *args: Any, **kwargs: Any) -> None:
        self.toasts.append(str(message))
        super().notify(message, *args, **kwargs)


def run_scripted(
    tmp_path: Path,
    link: ScriptedLink,
    scenario: Callable[[NotingApp, Pilot[Any]], Awaitable[None]],
    *,
    open_section: Callable[[Pilot[Any]], Awaitable[None]],
    size: tuple[int, int] = (100, 40),
) -> None:
    """Run `scenario` on a NotingApp over `link`, once `open_section` has opened its section."""

    async def main() -> None:
        app = NotingApp(initialised_home(tmp_path / "home"), link_factory=link.factory())
        async with app.run_test(size=size) as pilot:
            await open_section(pilot)
            await scenario(app, pilot)

    asyncio.run(main())


async def until(pilot: Pilot[Any], condition: Callable[[], object], what: str) -> None:
    """Pause until `condition()` is true, or fail after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            if condition():
                return
        except Exception:  # a widget not mounted yet, a screen not pushed yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def text_of(widget: Any) -> str:
    """A Static's text, its rich content rendered as plain text."""
    content = widget.content
    if isinstance(content, str):
        return content
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(content)
    return console.export_text()


async def until_cli(pilot: Pilot[Any], check: Callable[[], object], what: str) -> Any:
    """Poll a blocking check (a CLI call, say) off the event loop until it returns something
    truthy; that value, or fail after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.2)


def log_lines(log: Any) -> list[str]:
    """What a MessageLog shows on screen right now, a line of plain text per row."""
    from textual.geometry import Region

    width, height = log.scrollable_content_region.size
    return [strip.text.rstrip() for strip in log.render_lines(Region(0, 0, width, height))]


# -- shared by the scripted screens' tests -----------------------------------------------------

SIZES = [(100, 40), (80, 24)]  # the terminal sizes every snapshot is taken at
size_ids = pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
AT_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def identity_id(seed: int) -> str:
    return base64.b32encode(bytes([seed]) * 32).decode().rstrip("=").lower()


def contact(identity: str, name: str, *, blocked: bool = False) -> dict[str, Any]:
    return {
        "identity_id": identity,
        "fingerprint": identity,
        "name": name,
        "display_name": name,
        "nickname": None,
        "verified": True,
        "verified_by": "invite",
        "blocked": blocked,
        "identity_changed": False,
        "devices": [],
        "fields": {},
        "added_at_ms": AT_MS,
    }


def methods(link: ScriptedLink) -> list[str]:
    return [method for method, _ in link.calls]


async def open_modal(pilot: Pilot[Any], key: str, kind: type[Any]) -> Any:
    await pilot.press(key)
    await until(pilot, lambda: isinstance(pilot.app.screen, kind), kind.__name__)
    return pilot.app.screen


def no_blink(screen: Any) -> None:
    for entry in screen.query(Input):
        entry.cursor_blink = False


def scenario_then(
    *steps: Callable[[Pilot[Any]], Awaitable[None]],
) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        for step in steps:
            await step(pilot)
        await pilot.pause()

    return run_before
