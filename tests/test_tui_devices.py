"""The TUI's devices section (F8), approving a new device, and linking this device at first run.

Snapshot tests render each screen from a ScriptedLink: the scripted answers stand in for the
daemon (same shapes as the `devices` / `device.approve` / `device.approve.confirm` RPCs) so the
pictures are pixel-stable; a real daemon's PeerIds and clocks differ on every run. The scripted
behaviour tests check what the screens send and that a refusal changes nothing. The Pilot test
at the end drives the TUI on Alice's real daemon while a new home runs the real
`p2pid device link --json` in a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.command import CommandList
from textual.pilot import Pilot
from textual.widgets import Button, Digits, Input, Static

import p2pid.tui.screens.device_link as device_link_screen
from p2pid.home import Home
from p2pid.rpc.protocol import ErrorCode
from p2pid.tui.app import P2pidApp
from p2pid.tui.link_device import _event, link_command
from p2pid.tui.screens.contact_detail import ConfirmScreen
from p2pid.tui.screens.device_approve import ApproveDeviceScreen, read_days
from p2pid.tui.screens.device_link import LinkThisDeviceScreen
from p2pid.tui.screens.devices import DevicesScreen
from p2pid.tui.screens.welcome import WelcomeScreen
from p2pid.tui.widgets.device_table import DeviceTable
from p2pid.tui.widgets.qr_view import QrView
from tests import tui_fixtures
from tests.tui_fixtures import (
    NotingApp,
    QuietApp,
    ScriptedLink,
    initialised_home,
    refuse,
    text_of,
    until,
)

os.environ["TZ"] = "UTC"
time.tzset()

SIZES = [(100, 40), (80, 24)]
AT_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
HOUR_MS = 3_600_000


def peer_id(tail: str) -> str:
    return "12D3KooW" + (tail * 44)[:44]


LAPTOP, PHONE, DESKTOP, TABLET, NEW = (peer_id(c) for c in "LPDTN")
# A device-link code's text (fixed, so its QR code is the same picture on every run).
FIXED_LINK_CODE = "P2PID:" + "AEBAGBAFAYDQQCIKBMGA2DQPCAIREEYUCULBOGAZDINRYHI6D4QA" * 4


def device(name: str, peer: str, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "peer_id": peer,
        "name": name,
        "this_device": False,
        "connected": False,
        "last_seen_ms": AT_MS - 5 * HOUR_MS,
        "linked_at_ms": AT_MS - 400 * 24 * HOUR_MS,
        "revoked": False,
    }
    record.update(overrides)
    return record


DEVICES = [
    device("Alice's laptop", LAPTOP, this_device=True, connected=True, last_seen_ms=None),
    device("Phone", PHONE, connected=True, last_seen_ms=AT_MS),
    device("Desktop", DESKTOP),
    device("Old tablet", TABLET, revoked=True, last_seen_ms=AT_MS - 90 * 24 * HOUR_MS),
]
OFFER = {
    "link_id": "link-1",
    "confirmation": "482 915",
    "device_name": "Work laptop",
    "device_peer_id": NEW,
}


def scripted_link() -> ScriptedLink:
    devices = [dict(d) for d in DEVICES]

    def revoke(device: str) -> dict[str, Any]:
        for record in devices:
            if record["peer_id"] == device:
                record["revoked"] = True
        return {"peer_id": device, "version": 7}

    def confirm(link_id: str, accept: bool, history: str, days: int | None) -> dict[str, Any]:
        if accept:
            devices.append(device("Work laptop", NEW, connected=True, linked_at_ms=AT_MS))
        return {"device_peer_id": NEW, "device_name": "Work laptop", "contacts": 3, "messages": 120}

    return ScriptedLink(
        {
            "devices": lambda: devices,
            "device.approve": lambda code: dict(OFFER),
            "device.approve.confirm": confirm,
            "device.revoke": revoke,
        }
    )


def devices_ready(app: P2pidApp) -> bool:
    return isinstance(app.screen, DevicesScreen) and app.screen.loaded


def approving(app: P2pidApp) -> ApproveDeviceScreen:
    assert isinstance(app.screen, ApproveDeviceScreen)
    return app.screen


async def open_devices(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, P2pidApp)
    await until(pilot, lambda: app.connected, "the link")
    await pilot.press("f8")
    await until(pilot, lambda: devices_ready(app), "the devices")


async def paste_code(pilot: Pilot[Any], code: str) -> None:
    entry = pilot.app.screen.query_one("#approve-input", Input)
    entry.value = code
    entry.focus()
    await pilot.press("enter")


async def compare_codes(pilot: Pilot[Any], code: str = FIXED_LINK_CODE) -> ApproveDeviceScreen:
    """Approve a new device (a), paste `code`, and wait for the codes to compare."""
    await pilot.press("a")
    await until(pilot, lambda: isinstance(pilot.app.screen, ApproveDeviceScreen), "the dialog")
    screen = approving(pilot.app)
    await paste_code(pilot, code)
    await until(pilot, lambda: screen.stage == "compare", "the codes")
    return screen


# -- snapshots ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_devices(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    app = QuietApp(initialised_home(tmp_path / "home"), link_factory=scripted_link().factory())
    assert snap_compare(app, terminal_size=size, run_before=open_devices)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_approve_compare(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    """The confirmation code large, the device's name, the history choice, the question."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await open_devices(pilot)
        await compare_codes(pilot)
        await pilot.pause()

    app = QuietApp(initialised_home(tmp_path / "home"), link_factory=scripted_link().factory())
    assert snap_compare(app, terminal_size=size, run_before=run_before)


async def fake_link_events(home: Home, name: str | None) -> AsyncGenerator[dict[str, Any], None]:
    """Stands in for the `p2pid device link` subprocess: its code, then nothing (waiting)."""
    yield {"event": "code", "code": FIXED_LINK_CODE, "expires_at": 4_102_444_800}
    await asyncio.Event().wait()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_link_this_device(
    snap_compare: Any, tmp_path: Path, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """First run, "Link to an identity I already use": the link code as a QR code (100x40) or,
    too small for it (80x24), said so with the code as text."""
    monkeypatch.setattr(device_link_screen, "device_link_events", fake_link_events)

    async def run_before(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: isinstance(pilot.app.screen, WelcomeScreen), "welcome")
        await pilot.click("#link-existing")
        await until(pilot, lambda: isinstance(pilot.app.screen, LinkThisDeviceScreen), "link")
        pilot.app.screen.query_one("#link-name", Input).value = "Work laptop"
        await pilot.press("enter")
        await until(pilot, lambda: pilot.app.screen.query_one(QrView).text, "the code")
        await pilot.pause()

    app = QuietApp(Home(tmp_path / "new-home"), link_factory=scripted_link().factory())
    assert snap_compare(app, terminal_size=size, run_before=run_before)


# -- scripted behaviour ------------------------------------------------------------------------


def run_scripted(
    tmp_path: Path,
    link: ScriptedLink,
    scenario: Callable[[NotingApp, Pilot[Any]], Awaitable[None]],
    size: tuple[int, int] = (100, 40),
) -> None:
    tui_fixtures.run_scripted(tmp_path, link, scenario, open_section=open_devices, size=size)


def methods(link: ScriptedLink) -> list[str]:
    return [method for method, _ in link.calls]


def test_approving_with_history_of_the_last_days(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        pasted = "  " + FIXED_LINK_CODE[:40] + "\n" + FIXED_LINK_CODE[40:]
        screen = await compare_codes(pilot, pasted)
        assert link.calls[-1] == ("device.approve", {"code": FIXED_LINK_CODE})
        assert str(screen.query_one("#approve-code", Digits).value) == "482 915"
        assert "Work laptop" in text_of(screen.query_one("#approve-device", Static))

        # A bad number of days: said, nothing sent.
        await pilot.click("#history-days")
        days = screen.query_one("#approve-days", Input)
        await until(pilot, lambda: days.display, "the days field")
        days.value = "0"
        await pilot.click("#approve-yes")
        assert "1 to 36500" in text_of(screen.query_one("#approve-error", Static))
        assert "device.approve.confirm" not in methods(link)
        assert screen.stage == "compare"

        days.value = "14"
        await pilot.click("#approve-yes")
        await until(pilot, lambda: screen.stage == "done", "the link")
        assert link.calls[-1] == (
            "device.approve.confirm",
            {"link_id": "link-1", "accept": True, "history": "days", "days": 14},
        )
        result = text_of(screen.query_one("#approve-result", Static))
        assert "Work laptop is linked: it got 3 contacts and 120 messages" in result
        assert any("Work laptop is linked" in toast for toast in app.toasts)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, DevicesScreen), "the list")
        table = app.screen.query_one(DeviceTable)
        await until(pilot, lambda: table.row_count == len(DEVICES) + 1, "the new device")

    run_scripted(tmp_path, link, scenario)


def test_codes_that_differ_link_nothing(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        screen = await compare_codes(pilot)
        screen.query_one("#approve-yes", Button).focus()
        await pilot.press("n")
        await until(pilot, lambda: screen.stage == "done", "the answer")
        assert link.calls[-1] == (
            "device.approve.confirm",
            {"link_id": "link-1", "accept": False, "history": "none", "days": None},
        )
        assert "Not linked" in text_of(screen.query_one("#approve-result", Static))

    run_scripted(tmp_path, link, scenario)


def test_closing_while_the_codes_show_aborts_the_link(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        await compare_codes(pilot)
        await pilot.press("escape")
        await until(pilot, lambda: "device.approve.confirm" in methods(link), "the abort")
        [(_, abort)] = [call for call in link.calls if call[0] == "device.approve.confirm"]
        assert abort["accept"] is False and abort["link_id"] == "link-1"

    run_scripted(tmp_path, link, scenario)


def test_a_refused_code_is_said_and_changes_nothing(tmp_path: Path) -> None:
    link = scripted_link()
    link.answers["device.approve"] = refuse(ErrorCode.INVALID_PARAMS, "this link code expired")
    unreadable = tmp_path / "notes.png"
    unreadable.write_text("not an image\n")

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ApproveDeviceScreen), "the dialog")
        screen = approving(app)
        error = screen.query_one("#approve-error", Static)
        entry = screen.query_one("#approve-input", Input)

        await paste_code(pilot, FIXED_LINK_CODE)
        await until(pilot, lambda: "expired" in text_of(error), "the refusal")
        assert "this link code expired" in app.toasts
        assert screen.stage == "code" and not entry.disabled and entry.value == FIXED_LINK_CODE

        await paste_code(pilot, str(unreadable))
        await until(pilot, lambda: "not an image" in text_of(error), "the image refused")
        await paste_code(pilot, "   ")
        assert "Paste the new device's code" in text_of(error)
        assert methods(link).count("device.approve") == 1
        assert "device.approve.confirm" not in methods(link)

    run_scripted(tmp_path, link, scenario)


def test_revoking(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        table = app.screen.query_one(DeviceTable)
        # This device: refused with a clear message, no dialog, no call.
        table.move_cursor(row=table.get_row_index(LAPTOP))
        await pilot.press("x")
        assert any("the device you are using" in toast for toast in app.toasts)
        assert isinstance(app.screen, DevicesScreen)
        # A revoked one: the same.
        table.move_cursor(row=table.get_row_index(TABLET))
        await pilot.press("x")
        assert any("already revoked" in toast for toast in app.toasts)
        # The phone: asked first; "no" does nothing.
        table.move_cursor(row=table.get_row_index(PHONE))
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, DevicesScreen), "the list")
        assert "device.revoke" not in methods(link)
        await pilot.press("delete")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await until(pilot, lambda: "device.revoke" in methods(link), "the revocation")
        assert ("device.revoke", {"device": PHONE}) in link.calls
        await until(
            pilot, lambda: "revoked" in str(table.get_cell(PHONE, "state")), "its new state"
        )
        assert any("Phone is revoked" in toast for toast in app.toasts)

    run_scripted(tmp_path, link, scenario)


def test_a_refused_revocation_changes_nothing(tmp_path: Path) -> None:
    link = scripted_link()
    link.answers["device.revoke"] = refuse(ErrorCode.INVALID_PARAMS, "no such device")

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        table = app.screen.query_one(DeviceTable)
        table.move_cursor(row=table.get_row_index(DESKTOP))
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await until(pilot, lambda: "no such device" in app.toasts, "the refusal")
        assert "revoked" not in str(table.get_cell(DESKTOP, "state"))

    run_scripted(tmp_path, link, scenario)


def test_device_events_reload_the_list(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        table = app.screen.query_one(DeviceTable)
        extra = device("Tv box", peer_id("X"), linked_at_ms=AT_MS)
        link.answers["devices"] = [*DEVICES, extra]
        link.push({"type": "device.linked", "peer_id": extra["peer_id"], "name": "Tv box"})
        await until(pilot, lambda: table.row_count == len(DEVICES) + 1, "the new device")
        assert any("is now linked" in toast for toast in app.toasts)
        link.answers["devices"] = DEVICES
        link.push({"type": "device.list_changed", "version": 9})
        await until(pilot, lambda: table.row_count == len(DEVICES), "the list again")
        loads = methods(link).count("devices")
        link.push({"type": "peer.connected", "peer_id": peer_id("Z")})  # not my device
        link.push({"type": "peer.connected", "peer_id": DESKTOP})
        await until(pilot, lambda: methods(link).count("devices") == loads + 1, "a reload")

    run_scripted(tmp_path, link, scenario)


def test_the_palette_offers_the_device_actions(tmp_path: Path) -> None:
    link = scripted_link()

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {"Devices", "Kiosks", "Approve a new device"} <= titles
        assert {"Revoke device Phone", "Revoke device Desktop"} <= titles
        assert not {"Revoke device Alice's laptop", "Revoke device Old tablet"} & titles
        await pilot.press("ctrl+p", *"approve a new")

        def first_hit() -> bool:
            hits = app.screen.query_one(CommandList)
            return "Approve a new device" in str(hits.get_option_at_index(0).prompt)

        await until(pilot, first_hit, "the palette's hit")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ApproveDeviceScreen), "the dialog")

    run_scripted(tmp_path, link, scenario)


def test_days_and_link_process_lines() -> None:
    assert read_days("30") == 30 and read_days(" 1 ") == 1 and read_days("36500") == 36500
    assert read_days("0") is None and read_days("-3") is None and read_days("x") is None
    assert read_days("36501") is None
    assert _event(b'{"event":"code","code":"P2PID:X"}\n') == {"event": "code", "code": "P2PID:X"}
    assert _event(b"not json\n") is None and _event(b"[1]\n") is None
    assert _event(b'{"error":{"code":"usage","message":"bad name"}}') == {
        "event": "error",
        "message": "bad name",
    }
    command = link_command(Home(Path("/h")), "Work laptop")
    assert command[-5:] == ["--json", "device", "link", "--name", "Work laptop"]
    assert "--name" not in link_command(Home(Path("/h")), None)


def test_the_welcome_link_goes_on_as_a_created_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Code, then the confirmation to compare, then linked: Continue connects (the daemon would
    start through the link); an error is said, and Try again runs the link anew."""
    steps: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    runs: list[str | None] = []

    async def scripted_events(home: Home, name: str | None) -> AsyncGenerator[dict[str, Any]]:
        runs.append(name)
        while True:
            event = await steps.get()
            yield event
            if event["event"] in ("linked", "error"):
                return

    monkeypatch.setattr(device_link_screen, "device_link_events", scripted_events)
    link = scripted_link()

    async def main() -> None:
        app = NotingApp(Home(tmp_path / "new-home"), link_factory=link.factory())
        async with app.run_test(size=(100, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, WelcomeScreen), "welcome")
            await pilot.click("#link-existing")
            await until(pilot, lambda: isinstance(app.screen, LinkThisDeviceScreen), "link")
            screen = app.screen
            assert isinstance(screen, LinkThisDeviceScreen)
            await pilot.press("enter")  # no name: the command line's default
            await until(pilot, lambda: runs == [None], "the link process")
            steps.put_nowait({"event": "error", "message": "no device approved it in time"})
            await until(pilot, lambda: screen.stage == "error", "the error")
            assert "no device approved it in time" in text_of(screen.query_one("#link-error"))
            assert not app.connected

            screen.query_one("#link-name", Input).value = "Work laptop"
            await pilot.click("#link-start")
            await until(pilot, lambda: runs == [None, "Work laptop"], "a second run")
            steps.put_nowait({"event": "code", "code": FIXED_LINK_CODE, "expires_at": 0})
            await until(pilot, lambda: screen.query_one(QrView).text == FIXED_LINK_CODE, "QR")
            assert text_of(screen.query_one("#link-code")) == FIXED_LINK_CODE
            steps.put_nowait({"event": "confirm", "confirmation": "482 915", "approver": "Alice"})
            await until(pilot, lambda: screen.stage == "confirm", "the confirmation")
            assert str(screen.query_one("#link-confirmation", Digits).value) == "482 915"
            assert "Alice's device" in text_of(screen.query_one("#link-hint"))
            assert screen.query_one(QrView).text is None
            steps.put_nowait(
                {
                    "event": "linked",
                    "identity_id": "x",
                    "name": "Alice",
                    "contacts": 1,
                    "messages": 2,
                }
            )
            await until(pilot, lambda: screen.stage == "linked", "linked")
            assert "linked to Alice: it got 1 contact and 2 messages" in text_of(
                screen.query_one("#link-result")
            )
            await pilot.click("#link-continue")
            await until(pilot, lambda: app.connected, "the daemon link")
            assert not isinstance(app.screen, WelcomeScreen | LinkThisDeviceScreen)

    asyncio.run(main())


# -- against real daemons ----------------------------------------------------------------------


def test_approving_a_real_new_device_then_revoking_it(tmp_path: Path) -> None:
    """Alice's TUI (her real daemon) approves a new home running the real `p2pid device link
    --json`; the codes on both sides are the same; `devices` then lists two; she revokes it."""
    from p2pid.tui.link import DaemonOptions
    from tests.cli_helpers import p2pid_json
    from tests.daemons import LOOPBACK, running_daemon
    from tests.test_devices_e2e import next_json, start_link

    alice, laptop = tmp_path / "alice", tmp_path / "laptop"

    async def cli(*args: str) -> Any:
        return await asyncio.to_thread(p2pid_json, alice, *args)

    async def scenario(app: NotingApp, pilot: Pilot[Any]) -> None:
        await open_devices(pilot)
        table = app.screen.query_one(DeviceTable)
        [me] = table.devices
        assert me.this_device and not me.revoked
        reader = start_link(laptop, "laptop")
        try:
            code = (await asyncio.to_thread(next_json, reader, "code"))["code"]
            screen = await compare_codes(pilot, code)
            confirm = await asyncio.to_thread(next_json, reader, "confirm")
            shown = str(screen.query_one("#approve-code", Digits).value)
            assert confirm["confirmation"] == shown and confirm["approver"] == "Alice"
            assert "laptop" in text_of(screen.query_one("#approve-device", Static))
            await pilot.click("#history-all")
            await pilot.click("#approve-yes")
            await until(pilot, lambda: screen.stage == "done", "the link")
            assert "laptop is linked" in text_of(screen.query_one("#approve-result", Static))
            linked = await asyncio.to_thread(next_json, reader, "linked")
            assert linked["name"] == "Alice"
            assert await asyncio.to_thread(reader.process.wait, 30) == 0
        finally:
            reader.close()
        await pilot.press("escape")
        await until(pilot, lambda: table.row_count == 2, "the new device listed")
        listed = {d["name"]: d for d in await cli("devices")}
        assert set(listed) == {me.name, "laptop"}
        laptop_peer = listed["laptop"]["peer_id"]

        table.move_cursor(row=table.get_row_index(me.peer_id))
        await pilot.press("x")
        assert any("the device you are using" in toast for toast in app.toasts)
        table.move_cursor(row=table.get_row_index(laptop_peer))
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await until(
            pilot, lambda: "revoked" in str(table.get_cell(laptop_peer, "state")), "revoked"
        )
        assert {d["name"]: d["revoked"] for d in await cli("devices")}["laptop"] is True

    with running_daemon(alice, "Alice"):

        async def main() -> None:
            options = DaemonOptions(listen=[LOOPBACK], no_mdns=True)
            app = NotingApp(Home(alice), daemon=options)
            async with app.run_test(size=(100, 40)) as pilot:
                await scenario(app, pilot)

        asyncio.run(main())
