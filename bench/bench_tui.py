"""The TUI's chats screen against real daemons: first paint with 1,000 conversations, a message's
arrival to its display, and scrolling back through 10,000 messages. Prints one JSON line.

Alice's home is made with `p2pid init`, then its store is filled directly (p2pid.store functions
through TrioStore, as bench_history.py does) before her daemon starts: `--conversations` - 1
contacts (no devices) with a few messages each, and one, Zoe, with `--messages` messages. Bob is
a second daemon that joins Alice's invite. The TUI runs headless (`App.run_test`, 100x40) in this
process and connects to Alice's daemon as a user's TUI would.

- first_paint: from creating the app until the conversation list draws its first line holding
  the conversations (the `conversations` call, building the list, the layout); with_contacts:
  until it draws them with the contacts' presence and verified marks (the `contacts` call too,
  which the list does not wait for). Baseline: an empty store (another home, another daemon),
  until its (empty) list is drawn complete.
- arrival: Bob sends (`send` RPC, from a thread) while Alice's TUI shows his conversation;
  timed from just before Bob's `send` until the log draws the line with the text
  (send_to_display), and from Alice's daemon's `message.received` (its `at_ms`, wall clock)
  until that drawing (event_to_display). Baseline: the same messages with no TUI, read by a bare
  asyncio RPC client subscribed to Alice's daemon (send_to_event: daemons and RPC alone).
- scroll_back: Zoe's conversation opened (newest 50), then Page Up pressed until the first of the
  10,000 messages is on screen; every press is a step (a press at the top loads the page before,
  50 messages, from the daemon). Reported: the worst and median step (key press to the screen
  updated), and the event loop's worst stall meanwhile (a task that wakes every millisecond
  records how late it woke: any frame, layout or load that blocks the UI shows up there).
  Then, with all of them loaded, the terminal is made 20 columns narrower: the time until the
  log is drawn again (every message wrapped again) is resize_with_all_loaded.

Figures are medians over `--runs` repeats of first paint and over `--arrivals` messages. The
worst stalls while scrolling back used to be the garbage collector's full collections (50 to
100 ms each, over Textual's objects); the TUI now does `gc.freeze()` once connected, so they are
gone from the default run; `--gc-freeze` freezes again just before scrolling back.

    .venv/bin/python bench/bench_tui.py [--runs 5] [--arrivals 30] [--conversations 1000]
        [--messages 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import (
    BenchError,
    emit,
    median,
    ms,
    p2pid,
    parser,
    percentile,
    ratio,
    run,
    running_daemon,
)
from textual import events

from p2pid.home import Home
from p2pid.rpc.aio_client import AsyncClient
from p2pid.rpc.client import BlockingClient
from p2pid.tui.app import P2pidApp
from p2pid.tui.screens.chats import ChatsScreen
from p2pid.tui.widgets.conversation_list import ConversationList
from p2pid.tui.widgets.message_log import MessageLog

if TYPE_CHECKING:
    from p2pid.store import Connection
    from p2pid.store.messages import NewMessage

SIZE = (100, 40)
FIRST_PAINT_TARGET_MS = 1000
ARRIVAL_TARGET_MS = 50
NOW_MS = 1_800_000_000_000
BATCH = 5_000
WAIT_SECONDS = 60.0
ZOE = b"\x5a" * 32
VOCABULARY = """
the to and a i you it of is in that for me my on be have do not this with just so but are at
was what we can your like no yes ok will get if all up out know about one go how now there good
think see time they then coffee train tomorrow tonight later call lunch
"""
WORDS = VOCABULARY.split()


# -- the store -------------------------------------------------------------------------------


def body(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(3, 40))
    return " ".join(words).capitalize() + rng.choice([".", "!", "?", ""])


def message(rng: random.Random, peer: bytes, lamport: int, at_ms: int, state: str) -> NewMessage:
    from p2pid.store.messages import NewMessage

    outgoing = rng.random() < 0.5
    return NewMessage(
        message_id=rng.randbytes(16),
        sender_identity=b"\x01" * 32 if outgoing else peer,
        sender_device="12D3KooWBench",
        outgoing=outgoing,
        kind="text",
        body=body(rng),
        lamport=lamport,
        sent_at=at_ms,
        received_at=at_ms + 100,
        state="read" if outgoing else state,
    )


def add_contacts(conn: Connection, count: int, rng: random.Random) -> None:
    from p2pid.store.contacts import ContactRecord, upsert_contact
    from p2pid.store.messages import conversation_id_for, insert_message

    for index in range(count):
        peer = ZOE if index == 0 else rng.randbytes(32)
        name = "Zoe" if index == 0 else f"Contact {index:04d}"
        record = ContactRecord(
            identity_key=peer,
            display_name=name,
            device_list=None,
            device_list_version=0,
            devices=(),
        )
        upsert_contact(conn, record, NOW_MS)
        conversation = conversation_id_for(conn, peer, NOW_MS)
        if index:
            at = NOW_MS - index * 600_000
            for lamport in range(1, 4):
                state = "unread" if index % 7 == 0 else "read"
                insert_message(conn, conversation, message(rng, peer, lamport, at, state))
                at += 60_000


def add_history(conn: Connection, start: int, count: int, rng: random.Random) -> None:
    from p2pid.store.messages import conversation_id_for, insert_message

    conversation = conversation_id_for(conn, ZOE, NOW_MS)
    for lamport in range(start + 1, start + count + 1):
        at = NOW_MS - 3_600_000 * 24 * 60 + lamport * 300_000
        insert_message(conn, conversation, message(rng, ZOE, lamport, at, "read"))


async def populate(home: Path, conversations: int, messages: int) -> None:
    """Fill the store (in a process of its own: the TUI's process never imports the store, trio
    or SQLCipher, and the garbage collector there walks only what a TUI would hold)."""
    from p2pid.provision import unlock_vault_key
    from p2pid.store import TrioStore

    rng = random.Random(1)
    key = unlock_vault_key(Home(home))
    async with TrioStore.open(home / "p2pid.db", key) as store:
        await store.write(partial(add_contacts, count=conversations, rng=rng))
        for start in range(0, messages, BATCH):
            count = min(BATCH, messages - start)
            await store.write(partial(add_history, start=start, count=count, rng=rng))


# -- homes and daemons -----------------------------------------------------------------------


@contextmanager
def home(root: Path, name: str) -> Iterator[Path]:
    path = root / name
    run(p2pid(path, "init", "--name", name.capitalize()))
    yield path


def call(path: Path, method: str, **params: Any) -> Any:
    with BlockingClient(path / "daemon.sock", timeout=60.0) as client:
        return client.call(method, **params)


def make_contacts(alice: Path, bob: Path) -> str:
    """Bob joins Alice's invite; Bob's identity id once Alice has stored him."""
    code = call(alice, "invite.create")["code"]
    call(bob, "join", code=code)
    bob_id = str(call(bob, "status")["identity_id"])
    deadline = time.monotonic() + 20
    while not any(c["identity_id"] == bob_id for c in call(alice, "contacts")):
        if time.monotonic() > deadline:
            raise BenchError("Alice never stored Bob as a contact")
        time.sleep(0.05)
    return bob_id


# -- instruments -----------------------------------------------------------------------------


class Paints:
    """When the conversation list and the message log last drew a line (class-level hooks)."""

    def __init__(self) -> None:
        self.list_loaded: float | None = None
        self.list_painted: float | None = None
        self.contacts_loaded: float | None = None  # presence and verified marks too
        self.contacts_painted: float | None = None
        self.log_marker: str | None = None
        self.log_added: float | None = None
        self.log_painted: float | None = None
        self.log_frames: list[tuple[float, int, int]] = []  # (when, scroll_y, messages)
        self._saved: list[tuple[type, str, Any]] = []

    def install(self) -> None:
        paints = self
        original_apply = ChatsScreen._apply_list
        original_list_line = ConversationList.render_line
        original_add = MessageLog.add
        original_log_line = MessageLog.render_line

        def apply_list(screen: ChatsScreen, conversations: Any, contacts: Any) -> None:
            original_apply(screen, conversations, contacts)
            if paints.list_loaded is None:
                paints.list_loaded = time.perf_counter()
            if contacts is not None and paints.contacts_loaded is None:
                paints.contacts_loaded = time.perf_counter()

        def list_line(widget: ConversationList, y: int) -> Any:
            now = time.perf_counter()
            if paints.list_loaded is not None and paints.list_painted is None:
                paints.list_painted = now
            if paints.contacts_loaded is not None and paints.contacts_painted is None:
                paints.contacts_painted = now
            return original_list_line(widget, y)

        def add(widget: MessageLog, item: Any) -> bool:
            changed = original_add(widget, item)
            if paints.log_marker is not None and item.text == paints.log_marker:
                paints.log_added = time.perf_counter()
            return changed

        def log_line(widget: MessageLog, y: int) -> Any:
            if paints.log_added is not None and paints.log_painted is None:
                paints.log_painted = time.perf_counter()
            if y == 0:
                frame = (time.perf_counter(), round(widget.scroll_y), len(widget.messages))
                paints.log_frames.append(frame)
            return original_log_line(widget, y)

        for cls, name, replacement in (
            (ChatsScreen, "_apply_list", apply_list),
            (ConversationList, "render_line", list_line),
            (MessageLog, "add", add),
            (MessageLog, "render_line", log_line),
        ):
            self._saved.append((cls, name, getattr(cls, name)))
            setattr(cls, name, replacement)

    def reset(self) -> None:
        self.list_loaded = self.list_painted = None
        self.contacts_loaded = self.contacts_painted = None
        self.log_marker = None
        self.log_added = self.log_painted = None


class LoopLag:
    """The event loop's stalls: how late a task asking to wake every millisecond wakes."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            lag = time.perf_counter() - before - 0.001
            self.lags.append(lag)
            self.worst = max(self.worst, lag)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task


async def until(condition: Callable[[], object], what: str, step: float = 0.001) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        await asyncio.sleep(step)


def chats(app: P2pidApp) -> ChatsScreen:
    screen = app.screen
    if not isinstance(screen, ChatsScreen):
        raise BenchError(f"expected the chats screen, not {screen!r}")
    return screen


# -- the measurements ------------------------------------------------------------------------


async def first_paint(path: Path, paints: Paints, expected: int) -> tuple[float, float]:
    """(until the conversations are drawn, until the contacts' details are drawn too)."""
    paints.reset()
    started = time.perf_counter()
    app = P2pidApp(Home(path))
    async with app.run_test(size=SIZE):
        await until(lambda: paints.contacts_painted is not None, "the list drawn")
        entries = len(chats(app).conversations.entries)
        if entries < expected:
            raise BenchError(f"the list holds {entries} entries, expected {expected}")
    assert paints.list_painted is not None and paints.contacts_painted is not None
    return paints.list_painted - started, paints.contacts_painted - started


def send_from_bob(bob: Path, text: str, sent_at: list[float]) -> None:
    sent_at.append(time.perf_counter())
    call(bob, "send", contact="Alice", text=text)


async def baseline_arrivals(alice: Path, bob: Path, count: int) -> list[float]:
    """send -> message.received read by a bare asyncio client of Alice's daemon."""
    client = await AsyncClient.connect(alice / "daemon.sock")
    await client.subscribe()
    results = []
    try:
        for index in range(count):
            text = f"baseline {index} {os.urandom(4).hex()}"
            sent_at: list[float] = []
            sender = threading.Thread(target=send_from_bob, args=(bob, text, sent_at))
            sender.start()
            while True:
                event = await asyncio.wait_for(client.events.get(), WAIT_SECONDS)
                if event.get("type") == "message.received" and event["message"]["text"] == text:
                    results.append(time.perf_counter() - sent_at[0])
                    break
            sender.join()
            await asyncio.sleep(0.05)
    finally:
        await client.close()
    return results


async def tui_arrivals(
    alice: Path, bob: Path, bob_id: str, paints: Paints, count: int
) -> tuple[list[float], list[float], list[float]]:
    """(send -> drawn, daemon event -> drawn, send -> added to the log) per message."""
    app = P2pidApp(Home(alice))
    send_to_display, event_to_display, send_to_added = [], [], []
    event_at: dict[str, int] = {}
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.connected, "the link")
        app.daemon_events.subscribe(
            app,
            lambda event: (
                event_at.__setitem__(event["message"]["text"], int(event["at_ms"]))
                if event.get("type") == "message.received"
                else None
            ),
            immediate=True,
        )
        screen = chats(app)
        await until(lambda: screen.conversations.get(bob_id), "Bob in the list")
        screen.open_conversation(bob_id)
        await until(lambda: not screen._loading_open, "Bob's conversation")
        await pilot.pause()
        for index in range(count):
            text = f"arrival {index} {os.urandom(4).hex()}"
            paints.reset()
            paints.log_marker = text
            sent_at: list[float] = []
            sender = threading.Thread(target=send_from_bob, args=(bob, text, sent_at))
            sender.start()
            await until(lambda: paints.log_painted is not None, "the message drawn")
            painted_wall = time.time()
            painted = paints.log_painted
            assert painted is not None and paints.log_added is not None
            sender.join()
            send_to_display.append(painted - sent_at[0])
            send_to_added.append(paints.log_added - sent_at[0])
            drawn_wall_ms = painted_wall * 1000 - (time.perf_counter() - painted) * 1000
            event_to_display.append((drawn_wall_ms - event_at[text]) / 1000)
            await asyncio.sleep(0.05)
    return send_to_display, event_to_display, send_to_added


async def frame_showing(paints: Paints, target: tuple[int, int]) -> float:
    """When the log drew its first line at this scroll position, this many messages loaded."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        for when, scroll_y, loaded in paints.log_frames:
            if (scroll_y, loaded) == target:
                return when
        await asyncio.sleep(0.001)
    raise BenchError(f"no frame showing {target}")


async def scroll_back(
    alice: Path, paints: Paints, messages: int, freeze: bool = False
) -> dict[str, Any]:
    app = P2pidApp(Home(alice))
    steps: list[float] = []
    load_steps: list[float] = []  # the steps that loaded an older page
    lag = LoopLag()
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.connected, "the link")
        screen = chats(app)
        await until(lambda: any(e.name == "Zoe" for e in screen.conversations.entries), "Zoe")
        zoe = next(e.conversation_id for e in screen.conversations.entries if e.name == "Zoe")
        screen.open_conversation(zoe)
        log = screen.message_log
        await until(lambda: not screen._loading_open and log.messages, "Zoe's conversation")
        log.focus()
        await pilot.pause()
        if freeze:  # again, just before scrolling back (the TUI froze once connected)
            gc.collect()
            gc.freeze()
        started = time.perf_counter()
        lag.start()
        while log.has_more or log.scroll_y > 0:
            paints.log_frames.clear()
            step_started = time.perf_counter()
            app.post_message(events.Key("pageup", None))  # as the terminal sends it
            await until(lambda: log.loading_older or paints.log_frames, "the key handled")
            loaded_page = log.loading_older
            if loaded_page:
                await until(lambda: not log.loading_older, "an older page")
            painted = await frame_showing(paints, (round(log.scroll_y), len(log.messages)))
            steps.append(painted - step_started)
            if loaded_page:
                load_steps.append(painted - step_started)
            if len(steps) > messages:  # never loops forever
                raise BenchError(f"still scrolling after {len(steps)} steps")
        total = time.perf_counter() - started
        await lag.stop()
        loaded = len(log.messages)
        # A narrower terminal with everything loaded: every message is wrapped again.
        paints.log_frames.clear()
        resized = time.perf_counter()
        await pilot.resize_terminal(SIZE[0] - 20, SIZE[1])
        await until(lambda: log.scrollable_content_region.width == log._width, "the reflow")
        resize = await frame_showing(paints, (round(log.scroll_y), loaded)) - resized
    if loaded != messages:
        raise BenchError(f"scrolled back through {loaded} messages, expected {messages}")
    return {
        "scroll_back_messages": loaded,
        "scroll_back_steps": len(steps),
        "scroll_back_pages_loaded": len(load_steps),
        "scroll_back_load_step_ms_p50": ms(median(load_steps)),
        "scroll_back_worst_load_step_ms": ms(max(load_steps)),
        "scroll_back_step_ms_p50": ms(median(steps)),
        "scroll_back_step_ms_p99": ms(percentile(steps, 99)),
        "scroll_back_worst_step_ms": ms(max(steps)),
        "scroll_back_worst_loop_stall_ms": ms(lag.worst),
        "scroll_back_loop_stall_ms_p99": ms(percentile(lag.lags, 99)),
        "scroll_back_total_s": round(total, 2),
        "resize_with_all_loaded_ms": ms(resize),
    }


async def measure(
    alice: Path, empty: Path, bob: Path, bob_id: str, args: Any, paints: Paints
) -> dict[str, Any]:
    await first_paint(empty, paints, 0)  # warm-up: imports, Textual's first start
    await first_paint(alice, paints, 1)
    full, complete, bare = [], [], []
    for _ in range(args.runs):
        bare.append((await first_paint(empty, paints, 0))[1])
        listed, detailed = await first_paint(alice, paints, args.conversations)
        full.append(listed)
        complete.append(detailed)
    baseline = await baseline_arrivals(alice, bob, args.arrivals)
    send_to_display, event_to_display, send_to_added = await tui_arrivals(
        alice, bob, bob_id, paints, args.arrivals
    )
    scrolling = await scroll_back(alice, paints, args.messages, args.gc_freeze)
    return {
        "bench": "tui",
        "conversations": args.conversations,
        "listed_conversations": min(args.conversations + 1, 500),
        "first_paint_ms_p50": ms(median(full)),
        "first_paint_ms_max": ms(max(full)),
        "first_paint_with_contacts_ms_p50": ms(median(complete)),
        "first_paint_with_contacts_ms_max": ms(max(complete)),
        "baseline_first_paint_empty_ms_p50": ms(median(bare)),
        "first_paint_target_ms": FIRST_PAINT_TARGET_MS,
        "ratio_first_paint_vs_target": ratio(median(full), FIRST_PAINT_TARGET_MS / 1000),
        "send_to_display_ms_p50": ms(median(send_to_display)),
        "send_to_display_ms_p90": ms(percentile(send_to_display, 90)),
        "send_to_log_ms_p50": ms(median(send_to_added)),
        "event_to_display_ms_p50": ms(median(event_to_display)),
        "event_to_display_ms_p90": ms(percentile(event_to_display, 90)),
        "baseline_send_to_event_ms_p50": ms(median(baseline)),
        "baseline_send_to_event_ms_p90": ms(percentile(baseline, 90)),
        "tui_overhead_ms_p50": ms(median(send_to_display) - median(baseline)),
        "arrival_target_ms": ARRIVAL_TARGET_MS,
        "ratio_event_to_display_vs_target": ratio(
            median(event_to_display), ARRIVAL_TARGET_MS / 1000
        ),
        **scrolling,
        "gc_freeze": args.gc_freeze,
        "runs": args.runs,
        "arrivals": args.arrivals,
    }


def main() -> None:
    arguments = parser(__doc__.splitlines()[0], runs=5, runs_help="first paints of each store")
    arguments.add_argument("--arrivals", type=int, default=30, help="messages timed to display")
    arguments.add_argument("--conversations", type=int, default=1000, help="in Alice's store")
    arguments.add_argument("--messages", type=int, default=10_000, help="in Zoe's conversation")
    arguments.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() again just before scrolling back (the TUI does it once connected)",
    )
    arguments.add_argument("--populate", type=Path, help=argparse.SUPPRESS)
    args = arguments.parse_args()
    if args.populate is not None:
        import trio

        trio.run(populate, args.populate, args.conversations, args.messages)
        return
    root = Path(tempfile.mkdtemp(prefix="p2pid-tui-"))
    paints = Paints()
    paints.install()
    try:
        with ExitStack() as stack:
            alice = stack.enter_context(home(root, "alice"))
            empty = stack.enter_context(home(root, "empty"))
            bob = stack.enter_context(home(root, "bob"))
            run(
                [
                    sys.executable,
                    __file__,
                    "--populate",
                    str(alice),
                    f"--conversations={args.conversations}",
                    f"--messages={args.messages}",
                ],
                timeout=600,
            )
            for path in (alice, empty, bob):
                stack.enter_context(running_daemon(path))
            bob_id = make_contacts(alice, bob)
            record = asyncio.run(measure(alice, empty, bob, bob_id, args, paints))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    emit(record)


if __name__ == "__main__":
    main()
