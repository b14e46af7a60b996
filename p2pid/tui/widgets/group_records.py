"""What the group screens share: one way to call the daemon (typed answers, failures told once)
and the wording of a group's name, roles and last message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from rich.text import Text

from p2pid.rpc.protocol import RpcError
from p2pid.tui.widgets.contact_records import DIM, GOOD, WARN, call_daemon
from p2pid.tui.widgets.message_log import one_line, printable
from p2pid.wire.messages import MessageView

if TYPE_CHECKING:
    from p2pid.tui.app import P2pidApp

T = TypeVar("T")

PREVIEW_CELLS = 36
ROLE_STYLES = {"admin": GOOD, "member": "", "left": DIM, "removed": WARN}


class CallFailed(Exception):
    """The daemon refused, or could not be reached, or answered something unreadable: the user
    was told in a toast."""


async def group_call(app: P2pidApp, method: str, /, **params: Any) -> Any:
    """The daemon's answer as sent; CallFailed after a toast."""
    try:
        return await call_daemon(app, method, **params)
    except RpcError as error:
        raise CallFailed(error.message) from error  # app.rpc toasted it
    except (OSError, RuntimeError) as error:
        app.notify(f"the daemon is not reachable: {error}", severity="error")
        raise CallFailed(str(error)) from error


async def group_call_as(app: P2pidApp, kind: type[T], method: str, /, **params: Any) -> T:
    """The daemon's answer as a `kind` record; CallFailed after a toast."""
    data = await group_call(app, method, **params)
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as error:
        app.notify(f"unexpected answer to {method}: {error}", severity="error")
        raise CallFailed(str(error)) from error


def group_label(name: str, avatar: str) -> str:
    """A group as the screens name it: its avatar (an emoji, say) before its name."""
    name = printable(name).replace("\n", " ")
    avatar = printable(avatar).replace("\n", " ").strip()
    return f"{avatar} {name}" if avatar else name


def role_text(role: str) -> Text:
    return Text(role, style=ROLE_STYLES.get(role, ""))


def cut(text: str, cells: int) -> str:
    return text if len(text) <= cells else text[: cells - 1] + "…"


def preview(message: MessageView | None) -> Text:
    """A group's last message in one short line: "You: …" for mine."""
    if message is None:
        return Text("no messages yet", style=DIM)
    text = one_line(message.text)
    return Text(cut(f"You: {text}" if message.outgoing else text, PREVIEW_CELLS))


def short_identity(identity_id: str) -> str:
    return identity_id[:12]


def is_active(role: str) -> bool:
    """Whether I am still in the group (not left, not removed)."""
    return role in ("admin", "member")
