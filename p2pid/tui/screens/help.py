"""The key bindings, as a modal: the app's and the current section's."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# p2pid keys

| key | anywhere |
|---|---|
| F1 | this help |
| F2 | chats |
| F3 | contacts (requests, verification) |
| F4 | my invite (QR) |
| F5 | join with a code or a photo |
| F6 | profile |
| F7 | nearby peers |
| F8 | my devices (approve a new one, revoke one) |
| F9 | kiosks and TVs (pair, run routines, log out) |
| F10 | groups (new, join by code, join requests, members, invites) |
| F11 | files (accept, cancel, open the folder, send one) |
| Ctrl+P | command palette: every action by name |
| Ctrl+Q | quit (the daemon keeps running) |

| key | in chats |
|---|---|
| Up / Down | choose a conversation |
| Enter | open it, or send what you typed |
| Shift+Enter / Ctrl+J | new line in a message |
| Page Up | older messages |
| Home / End | oldest loaded / newest messages |
| Ctrl+N | next conversation with unread messages |
| Ctrl+F | accept the newest file offered in the conversation (`📎` lines; groups too) |
| Escape | back to the conversation list |

The mark before each of your messages: `·` pending, `✓` delivered, `✓✓` read, `✗` failed.

| key | in contacts (F3) |
|---|---|
| Enter | details |
| v | verify: compare the emoji or numbers (y they match, n they differ) |
| r / b / Delete | rename / block or unblock / remove |
| a | contact requests (a accept, d decline, h show answered ones) |

| key | elsewhere |
|---|---|
| n / c / x | invite (F4): new invite / copy the code / cancel the highlighted one |
| Enter | join (F5): a pasted code or the path of a photo of a QR |
| n / Enter / Delete | profile (F6): new field / edit / remove |
| Enter / i / k | nearby (F7): ask to become contacts / invite / also known peers |
| a / x | devices (F8): approve a new device (compare the codes: y / n) / revoke one |
| p / Enter / x | kiosks (F9): pair (code, photo or short code) / run a routine / log out |
| g / R / a | kiosks (F9), owners: guests / reset / approval requests (y allow, n deny) |
| n / j / r / m | groups (F10): new group / join by code / join requests / members |
| Ctrl+G / Ctrl+R | in a group chat: members / receipts of my messages |
| a / x / p / d / r / i / l | group members: add / remove / promote / demote / rename / invite / leave |
| a / c / o / s / r | files (F11): accept into a folder / cancel / open the folder / send a file / refresh |

Press Escape to close.
"""  # noqa: E501 (a table row is one line)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
