"""Chats: the conversations on the left, the open one on the right.

Left, `ConversationList`: most recent first (unread count, last message, presence, verified
mark), then contacts never written to. Right: a header (name, verified or not, online or
offline), the `MessageLog` (day separators, time, author, text, my delivery marks) and the
`Composer`. Opening a conversation loads its newest 50 messages and marks it read; older pages
load as the reader reaches the top. Pushed events keep both sides live. Every daemon call runs
in a worker; an event that arrives while the screen is being torn down touches nothing.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Static

from p2pid.rpc.protocol import RpcError
from p2pid.tui.screens.base import SectionScreen
from p2pid.tui.screens.files import accept_from_conversation
from p2pid.tui.widgets.composer import Composer
from p2pid.tui.widgets.conversation_list import ConversationEntry, ConversationList
from p2pid.tui.widgets.message_log import ChatMessage, MessageLog, printable, state_regresses

PAGE = 50
LISTED_CONVERSATIONS = 500  # the daemon's `conversations` lists at most this many, newest first
CONTACT_EVENTS = frozenset(
    {
        "contact.added",
        "contact.profile_updated",
        "contact.identity_changed",
        "contact_request.accepted",
        "verification.done",
    }
)


class ChatsScreen(SectionScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "focus_list", "Conversations"),
        Binding("ctrl+n", "next_unread", "Next unread", show=False),
        Binding("ctrl+f", "accept_file", "Accept file"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._open_id: str | None = None
        self._open_name = ""
        self._before: str | None = None  # the cursor of the page before the loaded ones
        self._loading_open = False
        self._arrived_while_loading: list[ChatMessage] = []
        self._devices: dict[str, str] = {}  # peer id -> the contact's identity id
        self._connected_peers: set[str] = set()
        self._send_lock = asyncio.Lock()
        self._list_loaded = False

    # -- layout ------------------------------------------------------------------------------

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="chats"):
            with Vertical(id="chats-sidebar"):
                yield ConversationList(id="conversations")
            with Vertical(id="chat"):
                yield Static(id="chat-header")
                yield MessageLog(id="message-log")
                yield Composer(id="composer", placeholder="choose a conversation first")

    @property
    def conversations(self) -> ConversationList:
        return self.query_one("#conversations", ConversationList)

    @property
    def message_log(self) -> MessageLog:
        return self.query_one("#message-log", MessageLog)

    @property
    def composer(self) -> Composer:
        return self.query_one("#composer", Composer)

    def on_mount(self) -> None:
        super().on_mount()
        self.watch(self.app, "app_focus", self._app_focus_changed, init=False)
        self.conversations.placeholder = "connecting to the daemon…"
        self.message_log.clear("")
        self.composer.read_only = True
        self._show_header()
        self.conversations.focus()

    def _alive(self) -> bool:
        """Mounted and not being torn down: safe to touch the widgets."""
        return self.is_attached and not self._pruning and self.is_running

    # -- the daemon --------------------------------------------------------------------------

    async def _call(self, method: str, **params: Any) -> Any:
        """The daemon's answer, or None after a toast saying what went wrong."""
        try:
            return await self.p2pid.rpc(method, **params)
        except RpcError:
            return None  # app.rpc showed the error
        except (OSError, RuntimeError) as error:
            if self._alive():
                self.notify(f"the daemon is not reachable: {error}", severity="error")
            return None

    async def on_connected(self) -> None:
        self._load_list()
        if self._open_id is not None:
            self._load_conversation(self._open_id)

    async def on_daemon_event(self, event: dict[str, Any]) -> None:
        if not self._alive():
            return
        kind = event.get("type")
        if kind in ("message.received", "message.sent"):
            self._message_event(event, incoming=kind == "message.received")
        elif kind == "message.state":
            self._on_state(event)
        elif kind in ("peer.connected", "peer.disconnected"):
            self._on_presence(str(event.get("peer_id")), kind == "peer.connected")
        elif kind in CONTACT_EVENTS:
            self._load_list()
        elif kind == "daemon.stopping":
            self._connected_peers.clear()
            for entry in self.conversations.entries:
                entry.online = False
            self.conversations.refresh()
            self._show_header()

    # -- the list ----------------------------------------------------------------------------

    @work(exclusive=True, group="chats-list")
    async def _load_list(self) -> None:
        contacts_call = asyncio.ensure_future(self._call("contacts"))
        try:
            conversations = await self._call("conversations")
            if conversations is None or not self._alive():
                return
            if not self._list_loaded:
                # The first time, show the conversations at once: `contacts` can take longer
                # (presence and verified marks follow as soon as it answers).
                self._apply_list(conversations, None)
            contacts = await contacts_call
            if contacts is None or not self._alive():
                return
            self._apply_list(conversations, contacts)
        finally:
            contacts_call.cancel()

    def _apply_list(
        self,
        conversations: Sequence[Mapping[str, Any]],
        contacts: Iterable[Mapping[str, Any]] | None,
    ) -> None:
        """The list from the daemon's records (contacts None: not known yet)."""
        entries: dict[str, ConversationEntry] = {}
        self._devices.clear()
        self._connected_peers.clear()
        for contact in contacts or ():
            identity = str(contact["identity_id"])
            online = False
            for device in contact.get("devices", ()):
                self._devices[str(device["peer_id"])] = identity
                if device.get("connected"):
                    self._connected_peers.add(str(device["peer_id"]))
                    online = True
            entries[identity] = ConversationEntry(
                conversation_id=identity,
                name=str(contact["name"]),
                verified=bool(contact.get("verified")),
                blocked=bool(contact.get("blocked")),
                online=online,
            )
        for summary in conversations:
            identity = str(summary["conversation_id"])
            entry = entries.get(identity)
            if entry is None:
                entry = entries[identity] = ConversationEntry(
                    conversation_id=identity,
                    name=str(summary["name"]),
                    is_contact=False,
                    known=contacts is not None,
                )
            entry.has_conversation = True
            entry.unread = int(summary.get("unread", 0))
            entry.updated_at_ms = int(summary.get("updated_at_ms", 0))
            if summary.get("last_message"):
                entry.set_last_message(summary["last_message"])
        listing = self.conversations
        listing.open_id = self._open_id
        listing.placeholder = "no contacts yet" if contacts is not None else "loading…"
        listing.complete = len(conversations) < LISTED_CONVERSATIONS
        listing.set_entries(entries.values())
        first_load = not self._list_loaded
        self._list_loaded = True
        if self._open_id is None:
            self.message_log.clear(self._idle_hint() if contacts is not None else "")
        elif self._open_id in entries:
            self._open_name = entries[self._open_id].name
            if not self._loading_open:
                self.message_log.rename(self._open_name)
            if entries[self._open_id].unread and self._viewing():
                self._mark_read(self._open_id)
        self._show_header()
        if first_load and self.focused is None:
            listing.focus()

    def _idle_hint(self) -> str:
        if not self.conversations.entries:
            return "No contacts yet: F4 shows your invite, F5 joins someone's."
        return "Choose a conversation on the left (↑ ↓ and Enter, or a click)."

    def _entry_for(self, conversation_id: str, name: str) -> ConversationEntry:
        return self.conversations.upsert(
            ConversationEntry(conversation_id=conversation_id, name=name, is_contact=False)
        )

    # -- opening a conversation --------------------------------------------------------------

    @on(ConversationList.Selected)
    def _selected(self, selected: ConversationList.Selected) -> None:
        self.open_conversation(selected.conversation_id)

    def open_conversation(self, conversation_id: str) -> None:
        if conversation_id == self._open_id and not self._loading_open:
            self.composer.focus()  # already open: keep its place
            self._read_if_viewing()
            return
        entry = self.conversations.get(conversation_id)
        self._open_id = conversation_id
        self._open_name = entry.name if entry is not None else conversation_id
        self._before = None
        self._loading_open = True
        self._arrived_while_loading = []
        self.conversations.open_id = conversation_id
        self.conversations.highlight(conversation_id)
        self.conversations.refresh()
        if self._viewing():
            self.p2pid.viewing_conversation = conversation_id
        self.message_log.show([], peer_name=self._open_name, has_more=False, placeholder="loading…")
        composer = self.composer
        blocked = entry is not None and entry.blocked
        composer.read_only = blocked
        name = printable(self._open_name)
        composer.placeholder = (
            f"{name} is blocked: unblock them in Contacts (F3) to write"
            if blocked
            else f"Message {name}  (Enter: send; Shift+Enter or Ctrl+J: new line)"
        )
        self._show_header()
        composer.focus()
        self._load_conversation(conversation_id)

    @work(exclusive=True, group="chats-open")
    async def _load_conversation(self, conversation_id: str) -> None:
        page = await self._call("messages", contact=conversation_id, limit=PAGE, mark_read=True)
        if not self._alive() or conversation_id != self._open_id:
            return
        self._loading_open = False
        if page is None:
            self.message_log.show(
                [], peer_name=self._open_name, has_more=False, placeholder="could not load"
            )
            return
        messages = [ChatMessage.from_view(view) for view in page["messages"]]
        first_unread = next(
            (m.message_id for m in messages if not m.outgoing and m.state == "unread"), None
        )
        self._open_name = str(page.get("name") or self._open_name)
        self._before = page.get("before")
        log = self.message_log
        log.show(
            messages,
            peer_name=self._open_name,
            has_more=self._before is not None,
            first_unread=first_unread,
            placeholder=f"No messages with {printable(self._open_name)} yet. Say hello!",
        )
        for message in self._arrived_while_loading:
            log.add(message)
        self._arrived_while_loading = []
        entry = self.conversations.get(conversation_id)
        if entry is not None and entry.unread:  # `messages` marked them read
            entry.unread = 0
            self.conversations.refresh_entry(conversation_id)

    @on(MessageLog.OlderWanted)
    def _older_wanted(self) -> None:
        self.action_older()

    @work(exclusive=True, group="chats-older")
    async def _load_older(self, conversation_id: str, before: str) -> None:
        page = await self._call(
            "messages", contact=conversation_id, limit=PAGE, before=before, mark_read=False
        )
        if not self._alive() or conversation_id != self._open_id:
            return
        log = self.message_log
        if page is None:
            log.set_loading_older(False)
            return
        self._before = page.get("before")
        log.prepend(
            [ChatMessage.from_view(view) for view in page["messages"]],
            has_more=self._before is not None,
        )
        # Loaded history stays for the life of the conversation: out of the collector's full
        # passes with the rest (see P2pidApp._connect), so scrolling back never pauses for them.
        gc.freeze()

    # -- reading: mark read while the reader looks -------------------------------------------

    def _viewing(self) -> bool:
        """The reader can see the open conversation: this screen is on top, and the terminal
        has the focus (for terminals that report it). Only then is an arrival marked read."""
        return self._alive() and self.is_current and self.app.app_focus

    def _app_focus_changed(self, focused: bool) -> None:
        if focused:
            self._read_if_viewing()

    def _read_if_viewing(self) -> None:
        if self._open_id is None or not self._viewing() or not self.p2pid.connected:
            return
        entry = self.conversations.get(self._open_id)
        if entry is not None and entry.unread:
            self._mark_read(self._open_id)

    @work(exclusive=True, group="chats-read")
    async def _mark_read(self, conversation_id: str) -> None:
        if await self._call("messages.read", contact=conversation_id) is None:
            return
        if not self._alive():
            return
        entry = self.conversations.get(conversation_id)
        if entry is not None and entry.unread:
            entry.unread = 0
            self.conversations.refresh_entry(conversation_id)

    def on_screen_suspend(self) -> None:
        if self.p2pid.viewing_conversation == self._open_id:
            self.p2pid.viewing_conversation = None

    def on_unmount(self) -> None:
        if self._open_id is not None and self.p2pid.viewing_conversation == self._open_id:
            self.p2pid.viewing_conversation = None

    def on_screen_resume(self) -> None:
        if self._open_id is not None:
            self.p2pid.viewing_conversation = self._open_id
            self._read_if_viewing()

    # -- live events -------------------------------------------------------------------------

    def _message_event(self, event: Mapping[str, Any], *, incoming: bool) -> None:
        conversation_id = str(event["conversation_id"])
        view = event["message"]
        entry = self.conversations.get(conversation_id) or self._entry_for(
            conversation_id, str(event.get("name", conversation_id))
        )
        repeated = entry.last_message_id == str(view["message_id"])  # e.g. send, then the event
        if repeated and not incoming:
            return
        if not entry.has_conversation or int(view.get("sent_at_ms", 0)) >= entry.last_at_ms:
            entry.set_last_message(view)
        entry.updated_at_ms = max(entry.updated_at_ms, int(view.get("received_at_ms", 0)))
        is_open = conversation_id == self._open_id
        if is_open:
            message = ChatMessage.from_view(view)
            if self._loading_open:
                self._arrived_while_loading.append(message)
            else:
                self.message_log.add(message)
        if incoming and not repeated:
            if is_open and self._viewing():
                self._mark_read(conversation_id)
            else:
                entry.unread += 1
        self.conversations.resort()
        if is_open:
            self._show_header()

    def _on_state(self, event: Mapping[str, Any]) -> None:
        conversation_id = str(event["conversation_id"])
        ids = [str(message_id) for message_id in event.get("message_ids", ())]
        state = str(event["state"])
        if conversation_id == self._open_id:
            self.message_log.set_state(ids, state)
            for message in self._arrived_while_loading:
                if message.message_id in ids and not state_regresses(message.state, state):
                    message.state = state
        entry = self.conversations.get(conversation_id)
        if (
            entry is not None
            and entry.last_message_id in ids
            and not state_regresses(entry.preview_state, state)
        ):
            entry.preview_state = state
            self.conversations.refresh_entry(conversation_id)

    def _on_presence(self, peer_id: str, connected: bool) -> None:
        if connected:
            self._connected_peers.add(peer_id)
        else:
            self._connected_peers.discard(peer_id)
        identity = self._devices.get(peer_id)
        if identity is None:
            return
        entry = self.conversations.get(identity)
        if entry is None:
            return
        online = any(
            peer in self._connected_peers
            for peer, owner in self._devices.items()
            if owner == identity
        )
        if online != entry.online:
            entry.online = online
            self.conversations.refresh_entry(identity)
            if identity == self._open_id:
                self._show_header()

    # -- the header --------------------------------------------------------------------------

    def _show_header(self) -> None:
        header = self.query_one("#chat-header", Static)
        if self._open_id is None:
            header.update(Content.styled("No conversation open", "$text-muted"))
            return
        entry = self.conversations.get(self._open_id)
        parts: list[str | Content | tuple[str, str]] = [(printable(self._open_name), "bold")]
        if entry is not None and not entry.known:
            pass  # the contact's details are on their way
        elif entry is None or not entry.is_contact:
            parts.append(("  not a contact", "$text-warning"))
        else:
            if entry.verified:
                parts.append(("  ✓ verified", "$text-success"))
            else:
                parts.append(("  not verified", "$text-warning"))
            if entry.online:
                parts.append(("  ● online", "$text-success"))
            else:
                parts.append(("  ○ offline", "$text-muted"))
                parts.append((": messages wait for their device", "$text-muted"))
            if entry.blocked:
                parts.append(("  blocked", "$text-error"))
        header.update(Content.assemble(*parts))

    # -- sending -----------------------------------------------------------------------------

    @on(Composer.Submitted)
    def _submitted(self, submitted: Composer.Submitted) -> None:
        if self._open_id is not None:
            self._send(self._open_id, submitted.text)

    @on(Composer.ScrollLog)
    def _scroll_log(self, scroll: Composer.ScrollLog) -> None:
        if scroll.direction < 0:
            self.message_log.action_page_up_or_older()
        else:
            self.message_log.action_page_down()

    @work(group="chats-send")
    async def _send(self, conversation_id: str, text: str) -> None:
        async with self._send_lock:  # one at a time, in the order typed
            view = await self._call("send", contact=conversation_id, text=text)
        if not self._alive():
            return
        if view is None:
            if conversation_id == self._open_id and not self.composer.text:
                self.composer.text = text  # not sent: give it back
            return
        # As the daemon's `message.sent` event will say (whichever comes first counts).
        sent = {"conversation_id": conversation_id, "name": self._open_name, "message": view}
        self._message_event(sent, incoming=False)

    # -- actions and the command palette -----------------------------------------------------

    def action_focus_list(self) -> None:
        self.conversations.focus()

    def action_older(self) -> None:
        log = self.message_log
        if self._open_id is None or self._before is None or log.loading_older:
            return
        log.set_loading_older(True)
        self._load_older(self._open_id, self._before)

    def action_newest(self) -> None:
        self.message_log.scroll_to_newest()

    def action_mark_read(self) -> None:
        if self._open_id is not None:
            self._mark_read(self._open_id)

    def action_next_unread(self) -> None:
        for entry in self.conversations.entries:
            if entry.unread and entry.conversation_id != self._open_id:
                self.open_conversation(entry.conversation_id)
                return
        self.notify("no unread conversations")

    def action_write(self) -> None:
        if self._open_id is not None:
            self.composer.focus()

    def action_accept_file(self) -> None:
        if self._open_id is not None:
            self._accept_file(list(self.message_log.messages))

    @work(exclusive=True, group="chat-accept-file")
    async def _accept_file(self, messages: list[ChatMessage]) -> None:
        await accept_from_conversation(self, messages)

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Conversation list", "focus the list (Escape)", self.action_focus_list)
        yield SystemCommand("Next unread conversation", "open it (Ctrl+N)", self.action_next_unread)
        yield SystemCommand("Reload conversations", "ask the daemon again", self._load_list)
        if self._open_id is not None:
            yield SystemCommand("Write a message", "focus the input box", self.action_write)
            yield SystemCommand(
                "Accept a file", "the newest offered here (Ctrl+F)", self.action_accept_file
            )
            yield SystemCommand(
                "Mark conversation read", "and tell the contact", self.action_mark_read
            )
            yield SystemCommand(
                "Older messages", "load the page before (Page Up)", self.action_older
            )
            yield SystemCommand("Newest messages", "jump to the end", self.action_newest)
