"""The TUI's contacts, profile and nearby sections.

Pilot tests drive the TUI against real daemons (subprocesses with temporary homes, loopback
only, mDNS off) and check the outcome with the real CLI. Snapshot tests render each screen from
a ScriptedLink with fixed records, since a real daemon's ids and clocks differ on every run.

Nearby is tested on a ScriptedLink: discovering peers needs mDNS, which must never run on this
machine's real interfaces (tests/test_mdns_e2e.py covers discovery in a network namespace; a
namespace test is not needed for the screen).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path, PurePath
from typing import Any, ClassVar

import pytest
from rich.console import Console
from textual.command import CommandList
from textual.pilot import Pilot
from textual.widgets import Button, Input, RadioButton, SelectionList

import p2pid.tui.app as tui_app
from p2pid.home import Home
from p2pid.rpc.protocol import ErrorCode, RpcError
from p2pid.tui.app import P2pidApp
from p2pid.tui.link import DaemonOptions
from p2pid.tui.screens.contact_detail import ContactDetailScreen, RenameScreen
from p2pid.tui.screens.contacts import RELOAD_ON, ContactsScreen
from p2pid.tui.screens.nearby import NearbyScreen, RequestNoteScreen
from p2pid.tui.screens.profile import ProfileFieldScreen, ProfileScreen
from p2pid.tui.screens.requests import RequestsScreen
from p2pid.tui.screens.verify import VerifyScreen
from p2pid.tui.widgets.contact_table import ContactTable
from p2pid.tui.widgets.peer_table import PeerTable
from p2pid.tui.widgets.profile_fields import ProfileFieldTable
from p2pid.tui.widgets.sas_code import SasCode
from tests.cli_helpers import p2pid_json
from tests.daemons import LOOPBACK, peer_multiaddr, running_daemon
from tests.tui_fixtures import ScriptedLink

os.environ["TZ"] = "UTC"
time.tzset()

SIZES = [(100, 40), (80, 24)]
PYTHON_P2PID = [sys.executable, "-m", "p2pid"]
WAIT_SECONDS = 30.0
AT_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC


# -- waiting -----------------------------------------------------------------------------------


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


# -- fixed records for the snapshots -----------------------------------------------------------


def identity_id(seed: int) -> str:
    return base64.b32encode(bytes([seed]) * 32).decode().rstrip("=").lower()


def peer_id(tail: str) -> str:
    return "12D3KooW" + (tail * 44)[:44]


def fingerprint(identity: str) -> str:
    return " ".join(identity[i : i + 4] for i in range(0, len(identity), 4))


BOB_ID, CAROL_ID, DAVE_ID = identity_id(1), identity_id(2), identity_id(3)
BOB_LAPTOP, BOB_PHONE, CAROL_PC, DAVE_PC = peer_id("B"), peer_id("b"), peer_id("C"), peer_id("D")
ERIN_PC, FRANK_PC = peer_id("E"), peer_id("F")


def contact_record(
    identity: str, name: str, devices: list[tuple[str, str, bool]], **overrides: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "identity_id": identity,
        "fingerprint": fingerprint(identity),
        "name": name,
        "display_name": name,
        "nickname": None,
        "verified": False,
        "verified_by": None,
        "blocked": False,
        "identity_changed": False,
        "devices": [{"peer_id": p, "name": n, "connected": c} for p, n, c in devices],
        "fields": {},
        "added_at_ms": AT_MS,
    }
    record.update(overrides)
    return record


CONTACTS = [
    contact_record(
        BOB_ID,
        "Bobby",
        [(BOB_LAPTOP, "laptop", True), (BOB_PHONE, "phone", False)],
        display_name="Bob",
        nickname="Bobby",
        verified=True,
        verified_by="sas",
        fields={"phone": "+1 555 0100", "city": "Lyon"},
    ),
    contact_record(CAROL_ID, "Carol", [(CAROL_PC, "desktop", False)], identity_changed=True),
    contact_record(
        DAVE_ID,
        "Dave",
        [(DAVE_PC, "pc", False)],
        verified=True,
        verified_by="invite",
        blocked=True,
    ),
]

REQUESTS = [
    {
        "request_id": 7,
        "identity_id": identity_id(5),
        "peer_id": ERIN_PC,
        "name": "Erin",
        "note": "from the climbing club",
        "state": "pending",
        "received_at_ms": AT_MS + 3_600_000,
        "decided_at_ms": None,
    }
]

VERIFICATION = {
    "verification_id": "ab" * 16,
    "identity_id": BOB_ID,
    "name": "Bobby",
    "incoming": False,
    "state": "keys_ready",
    "emoji": [
        ["🐶", "Dog"],
        ["🦋", "Butterfly"],
        ["🍓", "Strawberry"],
        ["🔑", "Key"],
        ["🎧", "Headphones"],
        ["🚲", "Bicycle"],
        ["⚓", "Anchor"],
    ],
    "decimals": [1234, 5678, 9012],
    "peer_confirmed": False,
    "started_at_ms": AT_MS,
}

PROFILE = [
    {
        "name": "phone",
        "value": "+1 555 0199",
        "audience": "contacts",
        "granted_to": [],
        "updated_at_ms": AT_MS,
    },
    {
        "name": "email",
        "value": "alice@example.org",
        "audience": "chosen",
        "granted_to": [BOB_ID],
        "updated_at_ms": AT_MS,
    },
    {
        "name": "city",
        "value": "Lyon",
        "audience": "public",
        "granted_to": [],
        "updated_at_ms": AT_MS,
    },
]

STATUS = {
    "name": "Alice",
    "identity_id": identity_id(9),
    "peer_id": peer_id("A"),
    "listen_addrs": ["/ip4/127.0.0.1/tcp/4001"],
    "connected_peers": [BOB_LAPTOP],
    "discovered_peers": [ERIN_PC, FRANK_PC, BOB_LAPTOP],
    "mdns": True,
    "pid": 4242,
    "version": "0.1.0",
    "started_at_ms": AT_MS,
}

PEERS = [
    {
        "peer_id": ERIN_PC,
        "addrs": ["/ip4/192.168.1.20/tcp/4001"],
        "connected": False,
        "discovered": True,
        "last_seen_ms": AT_MS + 60_000,
        "fields": {"p2pid": "1", "name": "Erin"},
    },
    {
        "peer_id": FRANK_PC,
        "addrs": ["/ip4/192.168.1.21/tcp/4001"],
        "connected": False,
        "discovered": True,
        "last_seen_ms": AT_MS + 120_000,
        "fields": {"p2pid": "1", "name": "Frank"},
    },
    {
        "peer_id": BOB_LAPTOP,
        "addrs": ["/ip4/192.168.1.10/tcp/4001"],
        "connected": True,
        "discovered": True,
        "last_seen_ms": AT_MS + 30_000,
        "fields": {"p2pid": "1", "name": "Bob"},
    },
]


def show_contact(contact: str) -> dict[str, Any]:
    for record in CONTACTS:
        if record["identity_id"] == contact:
            return record
    raise RpcError(ErrorCode.NOT_FOUND, f"no contact {contact!r}")


def scripted_link() -> ScriptedLink:
    return ScriptedLink(
        {
            "contacts": CONTACTS,
            "contact.show": show_contact,
            "requests": lambda state=None: REQUESTS,
            "verifications": [],
            "verify.start": lambda contact: VERIFICATION,
            "profile.show": PROFILE,
            "status": STATUS,
            "peers": PEERS,
            "contact.request": lambda peer, note="": {"request_id": "00" * 16, "peer_id": peer},
        }
    )


def initialised_home(root: Path) -> Home:
    """Enough of a home for the app to skip the welcome screen (the link is scripted)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "p2pid.db").touch()
    (root / "vault.key").touch()
    return Home(root)


class QuietApp(P2pidApp):
    """No toasts: other sections' screens call methods this script does not answer, and their
    error toasts would land in the picture at a different moment on each run."""

    CSS_PATH: ClassVar[list[str | PurePath]] = [
        Path(tui_app.__file__).parent / path for path in P2pidApp.CSS_PATH
    ]

    def notify(self, *args: Any, **kwargs: Any) -> None:
        pass


def scripted_app(tmp_path: Path, link: ScriptedLink | None = None) -> P2pidApp:
    link = link or scripted_link()
    return P2pidApp(initialised_home(tmp_path / "home"), link_factory=link.factory())


def snapshot_app(tmp_path: Path) -> P2pidApp:
    return QuietApp(initialised_home(tmp_path / "home"), link_factory=scripted_link().factory())


def section(
    mode: str, ready: Callable[[P2pidApp], object], *then: str | Callable[[P2pidApp], object]
) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """A snapshot's run_before: open a section, wait until it shows its data, then press keys
    and wait on conditions in turn."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, P2pidApp)
        await until(pilot, lambda: app.connected, "the link")
        app.switch_mode(mode)
        await until(pilot, lambda: ready(app), f"the {mode} section")
        for step in then:
            if isinstance(step, str):
                await pilot.press(step)
            else:
                await until(pilot, lambda step=step: step(app), "the next step")
        await pilot.pause()
        await pilot.pause()

    return run_before


def contacts_ready(app: P2pidApp) -> bool:
    return app.screen.query_one(ContactTable).row_count == len(CONTACTS)


# -- snapshots ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_contacts_list(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(
        snapshot_app(tmp_path), terminal_size=size, run_before=section("contacts", contacts_ready)
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_contact_detail(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    def detail_shown(app: P2pidApp) -> bool:
        return isinstance(app.screen, ContactDetailScreen) and app.screen.loaded

    assert snap_compare(
        snapshot_app(tmp_path),
        terminal_size=size,
        run_before=section("contacts", contacts_ready, "enter", detail_shown),
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_sas(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    def code_shown(app: P2pidApp) -> bool:
        return isinstance(app.screen, VerifyScreen) and app.screen.stage == "compare"

    assert snap_compare(
        snapshot_app(tmp_path),
        terminal_size=size,
        run_before=section("contacts", contacts_ready, "v", code_shown),
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_requests(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    def requests_shown(app: P2pidApp) -> bool:
        return isinstance(app.screen, RequestsScreen) and bool(app.screen.requests)

    assert snap_compare(
        snapshot_app(tmp_path),
        terminal_size=size,
        run_before=section("contacts", contacts_ready, "a", requests_shown),
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_profile(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    def fields_shown(app: P2pidApp) -> bool:
        return app.screen.query_one(ProfileFieldTable).row_count == len(PROFILE)

    assert snap_compare(
        snapshot_app(tmp_path), terminal_size=size, run_before=section("profile", fields_shown)
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_nearby(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    def peers_shown(app: P2pidApp) -> bool:
        return app.screen.query_one(PeerTable).row_count == len(PEERS)

    assert snap_compare(
        snapshot_app(tmp_path), terminal_size=size, run_before=section("nearby", peers_shown)
    )


# -- against real daemons ----------------------------------------------------------------------


def text_of(widget: Any) -> str:
    """What a Static shows, as plain text."""
    content = widget.content
    if isinstance(content, str):
        return content
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(content)
    return console.export_text()


async def until_cli(pilot: Pilot[Any], check: Callable[[], object], what: str) -> None:
    """Poll a (blocking) CLI check off the event loop until it holds, or fail."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.2)


def tui(home: Path) -> P2pidApp:
    """The TUI on a home whose daemon already runs (the options only matter if none did)."""
    return P2pidApp(Home(home), daemon=DaemonOptions(listen=[LOOPBACK], no_mdns=True))


async def open_section(pilot: Pilot[Any], mode: str) -> None:
    app = pilot.app
    assert isinstance(app, P2pidApp)
    await until(pilot, lambda: app.connected, "the daemon link")
    app.switch_mode(mode)
    await pilot.pause()


def contacts_table(app: P2pidApp) -> ContactTable:
    assert isinstance(app.screen, ContactsScreen)
    return app.screen.query_one(ContactTable)


def cli_contact(home: Path, reference: str) -> dict[str, Any]:
    return dict(p2pid_json(home, "contact", "show", reference))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """Alice and Bob, daemons on loopback (mDNS off), contacts through Alice's invite."""
    root = tmp_path_factory.mktemp("pair")
    alice, bob = root / "alice", root / "bob"
    with running_daemon(alice, "Alice"), running_daemon(bob, "Bob"):
        p2pid_json(bob, "join", p2pid_json(alice, "invite")["code"])
        yield alice, bob


def test_contacts_list_detail_rename_and_block(pair: tuple[Path, Path]) -> None:
    alice, bob = pair
    bob_peer = p2pid_json(bob, "status")["peer_id"]

    async def scenario() -> None:
        app = tui(alice)
        async with app.run_test(size=(100, 40)) as pilot:
            await open_section(pilot, "contacts")
            await until(pilot, lambda: contacts_table(app).row_count == 1, "Bob in the list")
            listed = contacts_table(app).selected
            assert listed is not None and listed.name == "Bob"
            assert listed.verified and listed.verified_by == "invite"
            assert [device.peer_id for device in listed.devices] == [bob_peer]

            # The detail shows the fingerprint, the device and how he was verified.
            await pilot.press("enter")
            await until(
                pilot,
                lambda: isinstance(app.screen, ContactDetailScreen) and app.screen.loaded,
                "the detail",
            )
            card = text_of(app.screen.query_one("#contact-card"))
            assert bob_peer in card and listed.fingerprint in card
            assert "verified (by invite)" in card
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, ContactsScreen), "the list")

            # Rename: a blank nickname is the daemon's to refuse, and changes nothing.
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, RenameScreen), "rename")
            nickname = app.screen.query_one("#nickname", Input)
            nickname.value = "   "
            await pilot.press("enter")
            error = app.screen.query_one("#rename-error")
            await until(pilot, lambda: "1..64 characters" in text_of(error), "the refusal")
            assert cli_contact(alice, "Bob")["nickname"] is None
            nickname.value = ""
            await pilot.press("enter")
            await until(pilot, lambda: "Type a nickname" in text_of(error), "the hint")
            nickname.value = "Bobby"
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ContactsScreen), "the list")
            await until(pilot, lambda: contacts_table(app).selected.name == "Bobby", "the new name")
            shown = await asyncio.to_thread(cli_contact, alice, "Bobby")
            assert shown["nickname"] == "Bobby" and shown["display_name"] == "Bob"

            # Block (confirmed first), then unblock.
            await pilot.press("b")
            await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", "confirm")
            await pilot.press("y")
            await until(pilot, lambda: contacts_table(app).selected.blocked, "blocked")
            assert (await asyncio.to_thread(cli_contact, alice, "Bobby"))["blocked"]
            await pilot.press("b")
            await until(pilot, lambda: not contacts_table(app).selected.blocked, "unblocked")
            assert not (await asyncio.to_thread(cli_contact, alice, "Bobby"))["blocked"]

    asyncio.run(scenario())


def verify_in_background(home: Path, contact: str, answer: str) -> subprocess.Popen[str]:
    """`contact verify CONTACT --yes/--no`: accepts the pending request, then answers."""
    return subprocess.Popen(
        [*PYTHON_P2PID, "--home", str(home), "--json", "contact", "verify", contact, answer],
        stdout=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def test_sas_verification_with_the_other_side_on_the_cli(pair: tuple[Path, Path]) -> None:
    alice, bob = pair

    def bob_was_asked() -> bool:
        return any(v["incoming"] for v in p2pid_json(bob, "verifications"))

    async def scenario() -> None:
        app = tui(alice)
        async with app.run_test(size=(100, 40)) as pilot:
            await open_section(pilot, "contacts")
            await until(pilot, lambda: contacts_table(app).row_count == 1, "Bob in the list")

            # Alice starts; Bob accepts and says they match; Alice compares and confirms.
            await pilot.press("v")
            await until(pilot, lambda: isinstance(app.screen, VerifyScreen), "the SAS dialog")
            sas = app.screen
            assert isinstance(sas, VerifyScreen) and sas.stage == "asking"
            await until_cli(pilot, bob_was_asked, "Bob's verification request")
            bob_side = verify_in_background(bob, "Alice", "--yes")
            try:
                await until(pilot, lambda: sas.stage == "compare", "the code")
                code = sas.query_one(SasCode)
                assert len(code.emoji) == 7 and len(code.decimals) == 3
                await pilot.click("#sas-match")
                await until(pilot, lambda: sas.stage == "done", "the end")
                out, _ = await asyncio.to_thread(bob_side.communicate, timeout=WAIT_SECONDS)
            finally:
                bob_side.kill()
            assert sas.outcome is not None and sas.outcome.verified
            assert "is verified" in text_of(sas.query_one("#sas-result"))
            bob_result = json.loads(out)
            assert bob_result["verified"]
            assert [tuple(e) for e in bob_result["emoji"]] == code.emoji
            assert bob_result["decimals"] == code.decimals
            assert (await asyncio.to_thread(cli_contact, alice, "Bob"))["verified_by"] == "sas"
            await pilot.press("escape")
            await until(
                pilot,
                lambda: contacts_table(app).selected.verified_by == "sas",
                "verified by SAS in the list",
            )

            # Again, and Bob says the codes differ first: the dialog follows and ends.
            await pilot.press("v")
            await until(pilot, lambda: isinstance(app.screen, VerifyScreen), "the SAS dialog")
            sas = app.screen
            assert isinstance(sas, VerifyScreen)
            await until_cli(pilot, bob_was_asked, "Bob's verification request")
            bob_side = verify_in_background(bob, "Alice", "--no")
            try:
                await until(pilot, lambda: sas.stage == "done", "the end, from Bob's side")
                await asyncio.to_thread(bob_side.communicate, timeout=WAIT_SECONDS)
            finally:
                bob_side.kill()
            assert sas.outcome is not None and not sas.outcome.verified
            assert sas.outcome.by_peer and sas.outcome.reason == "mismatch"
            assert "NOT verified" in text_of(sas.query_one("#sas-result"))
            assert not sas.query_one("#sas-match", Button).display
            await pilot.press("escape")
            # A mismatch takes nothing back.
            assert (await asyncio.to_thread(cli_contact, alice, "Bob"))["verified_by"] == "sas"

    asyncio.run(scenario())


def test_contact_request_accepted_then_removed(pair: tuple[Path, Path], tmp_path: Path) -> None:
    alice, _ = pair
    carol = tmp_path / "carol"
    alice_addr = peer_multiaddr(p2pid_json(alice, "status"))

    def carol_has_alice() -> bool:
        return any(c["name"] == "Alice" for c in p2pid_json(carol, "contacts"))

    def alice_has_carol() -> bool:
        return any(c["name"] == "Carol" for c in p2pid_json(alice, "contacts"))

    async def scenario() -> None:
        app = tui(alice)
        async with app.run_test(size=(100, 40)) as pilot:
            await open_section(pilot, "contacts")
            await until(pilot, lambda: contacts_table(app).row_count == 1, "the list")
            screen = app.screen
            assert isinstance(screen, ContactsScreen)

            await asyncio.to_thread(
                p2pid_json, carol, "request", alice_addr, "--note", "from the club"
            )
            await until(pilot, lambda: bool(screen.requests), "the request, by its event")
            assert "1 contact request waiting (Carol)" in text_of(
                screen.query_one("#contacts-notice")
            )

            await pilot.press("a")
            await until(
                pilot,
                lambda: isinstance(app.screen, RequestsScreen) and bool(app.screen.requests),
                "the requests dialog",
            )
            [request] = app.screen.requests.values()
            assert (request.name, request.note) == ("Carol", "from the club")
            await pilot.press("a")
            listed = screen.query_one(ContactTable)  # under the dialog, kept current
            await until(pilot, lambda: listed.row_count == 2, "Carol as a contact")
            await until_cli(pilot, carol_has_alice, "Alice at Carol")
            await pilot.press("escape")
            assert not screen.requests

            # Remove her again: confirmed first.
            table = contacts_table(app)
            table.move_cursor(row=table.get_row_index(request.identity_id))
            await pilot.press("delete")
            await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", "confirm")
            await pilot.press("y")
            await until(pilot, lambda: contacts_table(app).row_count == 1, "Carol removed")
            assert not await asyncio.to_thread(alice_has_carol)

    with running_daemon(carol, "Carol"):
        asyncio.run(scenario())


def test_profile_fields_and_who_sees_them(pair: tuple[Path, Path]) -> None:
    alice, bob = pair

    def fields_at_bob() -> dict[str, str]:
        return dict(cli_contact(bob, "Alice")["fields"])

    async def add_field(pilot: Pilot[Any], name: str, value: str) -> ProfileFieldScreen:
        await pilot.press("n")
        await until(pilot, lambda: isinstance(pilot.app.screen, ProfileFieldScreen), "editor")
        editor = pilot.app.screen
        assert isinstance(editor, ProfileFieldScreen)
        editor.query_one("#field-name", Input).value = name
        editor.query_one("#field-value", Input).value = value
        return editor

    async def scenario() -> None:
        app = tui(alice)
        async with app.run_test(size=(100, 40)) as pilot:
            await open_section(pilot, "profile")
            screen = app.screen
            assert isinstance(screen, ProfileScreen)
            await until(pilot, lambda: screen.contacts, "the profile")

            # An invalid name: the daemon's reason shows, nothing is stored.
            editor = await add_field(pilot, "Phone", "+1 555 0100")
            await pilot.click("#field-save")
            error = editor.query_one("#field-error")
            await until(pilot, lambda: "lower-case" in text_of(error), "the refusal")
            assert "did you mean 'phone'" in text_of(error)
            assert await asyncio.to_thread(p2pid_json, alice, "profile", "show") == []

            # A field for every contact reaches Bob.
            editor.query_one("#field-name", Input).value = "phone"
            await pilot.click("#field-save")
            table = screen.query_one(ProfileFieldTable)
            await until(pilot, lambda: table.row_count == 1, "the field listed")
            assert table.selected is not None and table.selected.audience == "contacts"
            await until_cli(
                pilot, lambda: fields_at_bob() == {"phone": "+1 555 0100"}, "phone at Bob"
            )

            # A field for chosen contacts: Bob sees it once ticked, and not once unticked.
            editor = await add_field(pilot, "email", "a@example.org")
            await pilot.click("#audience-chosen")
            granted = editor.query_one("#granted", SelectionList)
            await until(pilot, lambda: granted.display, "the contacts to pick")
            granted.select_all()
            await pilot.click("#field-save")
            await until(pilot, lambda: table.row_count == 2, "email listed")
            await until_cli(
                pilot, lambda: fields_at_bob().get("email") == "a@example.org", "email at Bob"
            )
            table.move_cursor(row=table.get_row_index("email"))
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ProfileFieldScreen), "editor")
            editor = app.screen
            assert isinstance(editor, ProfileFieldScreen)
            assert editor.query_one("#audience-chosen", RadioButton).value
            editor.query_one("#granted", SelectionList).deselect_all()
            await pilot.click("#field-save")
            await until(pilot, lambda: isinstance(app.screen, ProfileScreen), "saved")
            await until_cli(pilot, lambda: "email" not in fields_at_bob(), "email revoked")
            shown = {f["name"]: f for f in p2pid_json(alice, "profile", "show")}
            assert shown["email"]["audience"] == "chosen" and shown["email"]["granted_to"] == []

    asyncio.run(scenario())


# -- scripted: nearby, and dialogs closing under events ----------------------------------------


class AwaitingLink(ScriptedLink):
    """A ScriptedLink whose answers may be coroutines: a call then waits like a slow daemon."""

    async def call(self, method: str, **params: Any) -> Any:
        answer = await super().call(method, **params)
        return await answer if inspect.isawaitable(answer) else answer


def test_nearby_sends_a_request_with_a_note_and_offers_the_invite(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario() -> None:
        app = scripted_app(tmp_path, link)
        async with app.run_test(size=(100, 40)) as pilot:
            await open_section(pilot, "nearby")
            screen = app.screen
            assert isinstance(screen, NearbyScreen)
            table = screen.query_one(PeerTable)
            await until(pilot, lambda: table.row_count == len(PEERS), "the peers")

            # Bob's laptop is a contact's device: nothing to ask.
            table.move_cursor(row=table.get_row_index(BOB_LAPTOP))
            await pilot.press("enter")
            await pilot.pause()
            assert app.screen is screen

            table.move_cursor(row=table.get_row_index(ERIN_PC))
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, RequestNoteScreen), "the note")
            await pilot.press(*"met at the meetup", "enter")
            await until(
                pilot,
                lambda: (
                    ("contact.request", {"peer": ERIN_PC, "note": "met at the meetup"})
                    in link.calls
                ),
                "the request sent",
            )

            # Someone found later appears without a key press.
            grace = dict(PEERS[0], peer_id=peer_id("G"), fields={"name": "Grace"})
            link.answers["peers"] = [*PEERS, grace]
            link.push({"type": "peer.discovered", "at_ms": AT_MS, "peer_id": grace["peer_id"]})
            await until(pilot, lambda: table.row_count == len(PEERS) + 1, "Grace listed")

            await pilot.press("i")
            await until(pilot, lambda: app.current_mode == "invite", "the invite section")

    asyncio.run(scenario())


def test_events_while_dialogs_close_never_crash(tmp_path: Path) -> None:
    answered = asyncio.Event()

    async def slow_start(contact: str) -> dict[str, Any]:
        await answered.wait()  # Bob has not accepted yet
        return VERIFICATION

    link = AwaitingLink({**scripted_link().answers, "verify.start": slow_start})
    link.answers["verify.cancel"] = {**VERIFICATION, "verified": False}

    def push_everything() -> None:
        for kind in sorted(RELOAD_ON | {"verification.keys_ready", "peer.lost"}):
            link.push(
                {
                    "type": kind,
                    "at_ms": AT_MS,
                    "identity_id": BOB_ID,
                    "peer_id": BOB_LAPTOP,
                    "verification_id": VERIFICATION["verification_id"],
                    "name": "Bobby",
                    "emoji": VERIFICATION["emoji"],
                    "decimals": VERIFICATION["decimals"],
                    "verified": False,
                    "reason": "user_cancelled",
                    "fields": {},
                }
            )

    async def scenario() -> None:
        app = scripted_app(tmp_path, link)
        async with app.run_test(size=(80, 24)) as pilot:
            await open_section(pilot, "contacts")
            await until(pilot, lambda: contacts_ready(app), "the list")

            # Closed while Bob has not accepted: once he does, the verification is cancelled.
            await pilot.press("v")
            await until(pilot, lambda: isinstance(app.screen, VerifyScreen), "the SAS dialog")
            await pilot.press("escape")
            push_everything()
            await until(pilot, lambda: isinstance(app.screen, ContactsScreen), "the list")
            answered.set()
            await until(pilot, lambda: "verify.cancel" in dict(link.calls), "the cancel")

            # Every dialog, closed with events in flight.
            for key in ("enter", "a", "r", "delete"):
                await pilot.press(key)
                await until(pilot, lambda: not isinstance(app.screen, ContactsScreen), key)
                push_everything()
                await pilot.press("escape")
                push_everything()
                await until(pilot, lambda: isinstance(app.screen, ContactsScreen), "the list")
            for mode in ("profile", "nearby", "contacts"):
                app.switch_mode(mode)
                push_everything()
                await pilot.pause(0.1)
            assert app.is_running and contacts_ready(app)

    asyncio.run(scenario())


def test_the_command_palette_offers_each_action(tmp_path: Path) -> None:
    def titles(app: P2pidApp) -> set[str]:
        return {command.title for command in app.get_system_commands(app.screen)}

    async def scenario() -> None:
        app = scripted_app(tmp_path)
        async with app.run_test(size=(100, 40)) as pilot:
            await open_section(pilot, "contacts")
            await until(pilot, lambda: contacts_ready(app), "the list")
            assert {
                "Contact requests",
                "Verify Bobby",
                "Rename Bobby",
                "Block Bobby",
                "Remove Bobby",
                "Open Carol",
            } <= titles(app)

            # Through the palette itself: Ctrl+P, a few letters, Enter.
            await pilot.press("ctrl+p", *"block bobby")

            def first_hit_is_block() -> bool:
                hits = app.screen.query_one(CommandList)
                return "Block Bobby" in str(hits.get_option_at_index(0).prompt)

            await until(pilot, first_hit_is_block, "the palette's hit")
            await pilot.press("enter")
            await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", "confirm")
            assert {"Block", "Cancel"} <= titles(app)
            await pilot.press("escape")

            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ContactDetailScreen), "detail")
            assert {"Verify Bobby", "Unblock Bobby"} - titles(app) == {"Unblock Bobby"}
            assert "Close" in titles(app)
            await pilot.press("escape")

            app.switch_mode("profile")
            await until(
                pilot,
                lambda: app.screen.query_one(ProfileFieldTable).row_count == len(PROFILE),
                "the fields",
            )
            assert {"Add profile field", "Edit field city", "Remove field city"} <= titles(app)

            app.switch_mode("nearby")
            await until(
                pilot, lambda: app.screen.query_one(PeerTable).row_count == len(PEERS), "peers"
            )
            peers = app.screen.query_one(PeerTable)
            peers.move_cursor(row=peers.get_row_index(ERIN_PC))
            assert {"Contact request to Erin", "Show my invite"} <= titles(app)

    asyncio.run(scenario())
