"""End to end: one-to-one messages between real daemons (subprocesses), no mocks.

Delivery survives kill -9 of either side (durable outbox, commit-then-acknowledge, de-duplication
by message id), an offline receiver gets its messages when mDNS finds it again, strangers and
blocked contacts cannot write, and the command line (`send`, `messages`, `watch`) works.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from p2pid.rpc.client import BlockingClient
from tests.cli_helpers import p2pid, p2pid_json
from tests.daemons import (
    LOOPBACK,
    force_kill,
    init_home,
    peer_multiaddr,
    running_daemon,
    start_daemon,
    status,
)
from tests.messaging_helpers import (
    LineReader,
    become_contacts,
    call,
    client,
    conversation_history,
    fixed_listen,
    free_port,
    kill_9,
    start_watch,
    wait_for_event,
    wait_until,
)
from tests.netns import netns, requires_netns

TOTAL = 2000
# Who is killed -9 (then restarted) once at least this many messages were sent.
KILLS = (("bob", 500), ("bob", 1100), ("alice", 1500))
DELIVERY_TIMEOUT = 120.0
EVENT_TIMEOUT = 30.0
CLOCK = r"\d\d:\d\d:\d\d"


@contextlib.contextmanager
def stopped_at_exit(*homes: Path) -> Iterator[None]:
    """Stop (or kill) the homes' daemons when the block ends, however it ends."""
    try:
        yield
    finally:
        for home in homes:
            if p2pid(home, "stop", check=False).returncode not in (0, 3):
                force_kill(home)


def states(home: Path, contact: str) -> dict[str, str]:
    """message_id -> state for the whole conversation."""
    history, _ = conversation_history(home, contact)
    return {message["message_id"]: message["state"] for message in history}


# -- 1. kill -9 of both sides while 2,000 messages flow -----------------------------------------


def test_2000_messages_survive_kill_9_of_both_sides(tmp_path: Path) -> None:
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    init_home(alice_home, "Alice")
    bob_peer = init_home(bob_home, "Bob")["peer_id"]
    # Fixed ports: a restarted daemon comes back at the address its peer already knows, which
    # is what lets the sender's backoff (or the restarted side's own dial) find it again
    # without any discovery (mDNS is off).
    alice_args, bob_args = fixed_listen(free_port()), fixed_listen(free_port())
    start_daemon(alice_home, *alice_args)
    start_daemon(bob_home, *bob_args)
    with stopped_at_exit(alice_home, bob_home), ThreadPoolExecutor(max_workers=1) as pool:
        # Alice joins Bob's invite (both remember where the other listens either way: see
        # test_contacts_reach_each_other_after_restarts).
        become_contacts(bob_home, alice_home)
        texts = [f"m{i:04d}" for i in range(TOTAL)]
        sent_ids: list[str] = []
        kills = list(KILLS)
        bob_restart: Future[dict[str, Any]] | None = None
        received_at_kill = [0]
        sender = client(alice_home)

        def due() -> bool:
            """The next kill is due: enough sent, Bob is back from the last kill and messages
            flow to him again (so every kill falls while they flow), and for Alice's kill,
            she has stored where Bob listens (a restarted Alice finds him only from there)."""
            if not kills or len(sent_ids) < kills[0][1]:
                return False
            if bob_restart is not None and not bob_restart.done():
                return False
            if bob_restart is not None:
                bob_restart.result()  # raises if Bob did not start
            if unread_from(bob_home, "Alice") <= received_at_kill[-1]:
                return False
            return kills[0][0] == "bob" or bool(known_addrs(alice_home, bob_peer))

        def kill_next() -> None:
            nonlocal bob_restart, sender
            who, _ = kills.pop(0)
            received_at_kill.append(unread_from(bob_home, "Alice"))
            if who == "bob":
                kill_9(bob_home)
                # Alice keeps sending while Bob comes back.
                bob_restart = pool.submit(start_daemon, bob_home, *bob_args)
            else:
                # Between two sends: every send so far returned (its message is committed),
                # none is half done.
                sender.close()
                kill_9(alice_home)
                start_daemon(alice_home, *alice_args)
                sender = client(alice_home)

        try:
            for text in texts:
                if due():
                    kill_next()
                view = sender.call("send", contact="Bob", text=text)
                assert view["text"] == text and view["outgoing"]
                assert view["state"] == "pending"
                sent_ids.append(view["message_id"])
            while kills:  # a kill not yet due when the last message was sent
                wait_until(due, DELIVERY_TIMEOUT, f"messages flow to Bob again ({kills[0]})")
                kill_next()
        finally:
            sender.close()
        assert bob_restart is not None
        bob_restart.result()

        wait_until(
            lambda: unread_from(bob_home, "Alice") >= TOTAL,
            DELIVERY_TIMEOUT,
            f"Bob has all {TOTAL} messages (he had {received_at_kill[1:]} at the kills)",
            interval=0.5,
        )
        wait_until(
            lambda: call(alice_home, "messages.stats")["pending_outbox"] == 0,
            DELIVERY_TIMEOUT,
            "Alice's outbox empties",
            interval=0.5,
        )
        # Nothing of Alice's is in flight any more: exactly once, in order.
        history, pages = conversation_history(bob_home, "Alice", page_size=500)
        assert pages == TOTAL // 500
        assert [m["text"] for m in history] == texts, "each text once, in the order sent"
        assert [m["message_id"] for m in history] == sent_ids
        assert len(set(sent_ids)) == TOTAL
        assert all(not m["outgoing"] and m["state"] == "unread" for m in history)
        assert unread_from(bob_home, "Alice") == TOTAL

        wait_until(
            lambda: set(states(alice_home, "Bob").values()) == {"delivered"},
            DELIVERY_TIMEOUT,
            "Alice's messages are all delivered",
            interval=0.5,
        )
        alice_view = states(alice_home, "Bob")
        assert list(alice_view) == sent_ids

        # A read receipt crosses the restarted pair too: Bob reads, Alice sees `read`.
        with client(alice_home, timeout=EVENT_TIMEOUT) as alice_events:
            alice_events.call("subscribe")
            assert call(bob_home, "messages.read", contact="Alice") == {"read": TOTAL}
            read_event = wait_for_event(
                alice_events,
                lambda e: e["type"] == "message.state" and e["state"] == "read",
                EVENT_TIMEOUT,
                "Alice's messages are read",
            )
        assert read_event["message_ids"] == sent_ids
        assert set(states(alice_home, "Bob").values()) == {"read"}


def known_addrs(home: Path, peer_id: str) -> list[str]:
    """The addresses the home's node has stored for the peer."""
    return next((p["addrs"] for p in call(home, "peers") if p["peer_id"] == peer_id), [])


def unread_from(home: Path, contact_name: str) -> int:
    """How many unread messages the conversation with the contact holds (0 if none)."""
    conversations = call(home, "conversations")
    return sum(c["unread"] for c in conversations if c["name"] == contact_name)


# -- 2. an offline receiver, found again by mDNS only -------------------------------------------


@requires_netns
def test_offline_receiver_gets_messages_when_discovered_again(tmp_path: Path) -> None:
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    init_home(alice_home, "Alice")
    bob_id = init_home(bob_home, "Bob")["peer_id"]
    # Random ports: a restarted Bob listens somewhere new, and only mDNS (confined to the
    # namespace's loopback) can tell Alice where.
    mdns_on_loopback = ("--listen", LOOPBACK, "--mdns-interface", "lo")
    with netns() as ns, stopped_at_exit(alice_home, bob_home):
        start_daemon(alice_home, *mdns_on_loopback, prefix=ns.command([]))
        start_daemon(bob_home, *mdns_on_loopback, prefix=ns.command([]))
        become_contacts(alice_home, bob_home)
        old_bob_addrs = status(bob_home)["listen_addrs"]
        assert call(bob_home, "messages.stats")["pending_outbox"] == 0  # Bob will dial nobody
        p2pid(bob_home, "stop")

        texts = ["while you were out", "second", "third"]
        with client(alice_home, timeout=EVENT_TIMEOUT) as alice_events:
            alice_events.call("subscribe")
            sent = [call(alice_home, "send", contact="Bob", text=text) for text in texts]
            assert [m["state"] for m in sent] == ["pending"] * 3
            assert call(alice_home, "messages.stats")["pending_outbox"] == 3
            sent_ids = [m["message_id"] for m in sent]

            start_daemon(bob_home, *mdns_on_loopback, prefix=ns.command([]))
            with client(bob_home, timeout=EVENT_TIMEOUT) as bob_events:
                bob_events.call("subscribe")
                assert status(bob_home)["listen_addrs"] != old_bob_addrs
                received = {
                    m["message_id"]: m["text"]
                    for m in call(bob_home, "messages", contact="Alice", mark_read=False)[
                        "messages"
                    ]
                }
                deadline = time.monotonic() + EVENT_TIMEOUT
                while len(received) < len(texts) and time.monotonic() < deadline:
                    event = bob_events.next_event()
                    if event["type"] == "message.received":
                        assert event["name"] == "Alice"
                        received[event["message"]["message_id"]] = event["message"]["text"]
            assert len(received) == len(texts), f"Bob received only {received}"
            history, _ = conversation_history(bob_home, "Alice")
            assert [m["text"] for m in history] == texts
            assert [m["message_id"] for m in history] == sent_ids

            # Alice (subscribed since before Bob came back, so nothing was missed) saw him
            # come back over mDNS, and her messages were delivered.
            delivered: set[str] = set()
            discovered = False
            deadline = time.monotonic() + EVENT_TIMEOUT
            while not (discovered and delivered >= set(sent_ids)):
                assert time.monotonic() < deadline, f"discovered: {discovered}, {delivered}"
                event = alice_events.next_event()
                if event["type"] == "peer.discovered" and event["peer_id"] == bob_id:
                    discovered = True
                elif event["type"] == "message.state" and event["state"] == "delivered":
                    delivered.update(event["message_ids"])
        assert [states(alice_home, "Bob")[i] for i in sent_ids] == ["delivered"] * 3
        assert call(alice_home, "messages.stats")["pending_outbox"] == 0


# -- 3. strangers and blocked contacts cannot write ---------------------------------------------


def test_stranger_cannot_write(tmp_path: Path) -> None:
    alice_home, bob_home, carol_home = tmp_path / "alice", tmp_path / "bob", tmp_path / "carol"
    with (
        running_daemon(alice_home, "Alice") as alice,
        running_daemon(bob_home, "Bob"),
        running_daemon(carol_home, "Carol"),
    ):
        # Carol reaches Alice's node, but Alice is nobody Carol can write to.
        connected = p2pid_json(carol_home, "connect", peer_multiaddr(alice))
        assert connected["peer_id"] == alice["peer_id"]
        for reference in ("Alice", alice["identity_id"]):
            refused = p2pid(carol_home, "--json", "send", reference, "hello stranger", check=False)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            error = json.loads(refused.stdout)["error"]
            assert error["code"] == 1001  # NOT_FOUND
            assert error["message"] == f"no contact {reference!r}"
        human = p2pid(carol_home, "send", "Alice", "hello stranger", check=False)
        assert human.returncode == 1 and human.stdout == ""
        assert human.stderr.strip() == "p2pid: error: no contact 'Alice'"
        assert p2pid_json(carol_home, "chats") == []
        assert call(alice_home, "conversations") == []

        # Bob is Alice's contact: his first message arrives.
        become_contacts(alice_home, bob_home)
        with client(alice_home, timeout=EVENT_TIMEOUT) as alice_events:
            alice_events.call("subscribe")
            first = call(bob_home, "send", contact="Alice", text="before the block")
            wait_for_received(alice_home, "Bob", alice_events, first["message_id"])
        wait_until(
            lambda: states(bob_home, "Alice")[first["message_id"]] == "delivered",
            EVENT_TIMEOUT,
            "Bob's first message is delivered",
        )

        # Blocked: Alice cannot write to Bob, and what Bob writes is acknowledged then dropped.
        assert p2pid_json(alice_home, "contact", "block", "Bob")["blocked"]
        refused = p2pid(alice_home, "--json", "send", "Bob", "hi", check=False)
        assert refused.returncode == 1
        assert "blocked" in json.loads(refused.stdout)["error"]["message"]
        blocked = call(bob_home, "send", contact="Alice", text="while blocked")
        assert blocked["state"] == "pending"
        wait_until(
            lambda: call(alice_home, "messages.stats")["dropped"].get("blocked", 0) >= 1,
            EVENT_TIMEOUT,
            "Alice drops the blocked contact's message",
        )
        stats = call(alice_home, "messages.stats")
        assert stats["dropped"] == {"blocked": 1} and stats["received"] == 1
        alice_history, _ = conversation_history(alice_home, "Bob")
        assert [m["text"] for m in alice_history] == ["before the block"]
        # Acknowledged as stored, so Bob cannot tell he is blocked: nothing waits in his outbox.
        assert call(bob_home, "messages.stats")["pending_outbox"] == 0
        assert states(bob_home, "Alice")[blocked["message_id"]] == "pending"

        # Unblocked: Bob's new messages arrive again; the dropped one never does.
        assert not p2pid_json(alice_home, "contact", "unblock", "Bob")["blocked"]
        with client(alice_home, timeout=EVENT_TIMEOUT) as alice_events:
            alice_events.call("subscribe")
            later = call(bob_home, "send", contact="Alice", text="after the unblock")
            wait_for_received(alice_home, "Bob", alice_events, later["message_id"])
        alice_history, _ = conversation_history(alice_home, "Bob")
        assert [m["text"] for m in alice_history] == ["before the block", "after the unblock"]
        wait_until(
            lambda: states(bob_home, "Alice")[later["message_id"]] == "delivered",
            EVENT_TIMEOUT,
            "Bob's message after the unblock is delivered",
        )
        assert states(bob_home, "Alice")[blocked["message_id"]] == "pending"
        assert call(alice_home, "messages.stats")["dropped"] == {"blocked": 1}


def wait_for_received(
    home: Path, contact: str, subscribed: BlockingClient, message_id: str
) -> None:
    """Wait until `home` stored the message: subscribed first, then the state, then events."""
    if message_id in states(home, contact):
        return
    wait_for_event(
        subscribed,
        lambda e: e["type"] == "message.received" and e["message"]["message_id"] == message_id,
        EVENT_TIMEOUT,
        f"message {message_id} received",
    )


# -- 4. the command line: send, messages, search, watch -----------------------------------------


def test_cli_send_messages_search_and_watch(tmp_path: Path) -> None:
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    watches: list[LineReader] = []
    with (
        running_daemon(alice_home, "Alice"),
        running_daemon(bob_home, "Bob") as bob,
    ):
        p2pid(alice_home, "join", p2pid_json(bob_home, "invite")["code"])
        try:
            sent = p2pid(alice_home, "send", "Bob", "hello world from alice").stdout.strip()
            assert re.fullmatch(r"sent \(pending\) [0-9a-f]{32}", sent), sent
            second = p2pid_json(alice_home, "send", "Bob", "help is on the way")
            assert second["text"] == "help is on the way" and second["outgoing"]
            assert second["state"] == "pending"
            assert second["conversation_id"] == bob["identity_id"]

            texts = ["hello world from alice", "help is on the way"]
            wait_until(
                lambda: (
                    len(p2pid_json(bob_home, "messages", "Alice", "--no-read")["messages"]) == 2
                ),
                EVENT_TIMEOUT,
                "Bob has both messages",
                interval=0.2,
            )
            unread_lines = p2pid(bob_home, "messages", "Alice", "--no-read").stdout.splitlines()
            assert [line.split("  ", 1)[1] for line in unread_lines] == [
                f"•  Alice: {text}" for text in texts
            ]
            page = p2pid_json(bob_home, "messages", "Alice")  # marks them read
            assert page["name"] == "Alice" and page["unread"] == 2 and page["before"] is None
            assert [m["text"] for m in page["messages"]] == texts
            assert [m["outgoing"] for m in page["messages"]] == [False, False]
            assert page["messages"][1]["message_id"] == second["message_id"]
            again = p2pid_json(bob_home, "messages", "Alice", "--no-read")
            assert again["unread"] == 0
            assert {m["state"] for m in again["messages"]} == {"read"}
            wait_until(
                lambda: (
                    {m["state"] for m in p2pid_json(alice_home, "messages", "Bob")["messages"]}
                    == {"read"}
                ),
                EVENT_TIMEOUT,
                "Alice sees her messages read",
                interval=0.2,
            )
            alice_lines = p2pid(alice_home, "messages", "Bob").stdout.splitlines()
            assert [line.split("  ", 1)[1] for line in alice_lines] == [
                f"✓✓ me: {text}" for text in texts
            ]
            paged = p2pid_json(bob_home, "messages", "Alice", "--limit", "1")
            assert [m["text"] for m in paged["messages"]] == [texts[1]] and paged["before"]
            older = p2pid_json(bob_home, "messages", "Alice", "--before", paged["before"])
            assert [m["text"] for m in older["messages"]] == [texts[0]]
            assert older["before"] is None

            # Search: a word, a prefix, within a conversation, and nothing.
            found = p2pid_json(bob_home, "messages", "--search", "world")
            assert [m["text"] for m in found] == [texts[0]]
            prefix = p2pid_json(bob_home, "messages", "--search", "hel*")
            assert sorted(m["text"] for m in prefix) == sorted(texts)
            in_chat = p2pid_json(alice_home, "messages", "Bob", "--search", "way")
            assert [m["text"] for m in in_chat] == [texts[1]] and in_chat[0]["outgoing"]
            human = p2pid(bob_home, "messages", "--search", "hel*").stdout
            assert "hello world from alice" in human and "help is on the way" in human
            assert p2pid(bob_home, "messages", "--search", "zebra").stdout.strip() == (
                "nothing found"
            )

            # Bad arguments are refused, and nothing is sent.
            bad_limit = p2pid(bob_home, "--json", "messages", "Alice", "--limit", "0", check=False)
            assert bad_limit.returncode == 2
            assert json.loads(bad_limit.stdout)["error"]["code"] == "usage"
            too_many = p2pid(bob_home, "messages", "Alice", "--limit", "501", check=False)
            assert too_many.returncode == 2 and "--limit" in too_many.stderr
            bad_cursor = p2pid(bob_home, "messages", "Alice", "--before", "junk", check=False)
            assert bad_cursor.returncode == 1 and "cursor" in bad_cursor.stderr
            unknown = p2pid(alice_home, "--json", "send", "Nobody", "hello?", check=False)
            assert unknown.returncode == 1
            assert json.loads(unknown.stdout)["error"] == {
                "code": 1001,
                "message": "no contact 'Nobody'",
            }
            for empty in ("", "   ", "-"):  # "-" reads stdin, which is empty
                refused = p2pid(alice_home, "send", "Bob", empty, check=False)
                assert refused.returncode == 2, (empty, refused.stderr)
                assert "empty" in refused.stderr
            assert [c["name"] for c in p2pid_json(alice_home, "chats")] == ["Bob"]
            alice_now = p2pid_json(alice_home, "messages", "Bob")["messages"]
            assert [m["text"] for m in alice_now] == texts
            assert call(alice_home, "messages.stats")["pending_outbox"] == 0

            # watch: Bob's shows what arrives, Alice's what becomes of what she sent.
            bob_watch, alice_watch = start_watch(bob_home), start_watch(alice_home)
            watches += [bob_watch, alice_watch]
            wait_until_watching(alice_home, bob_home, alice_watch, bob_watch)
            message = p2pid_json(alice_home, "send", "Bob", "watch this")
            short_id = message["message_id"][:8]
            assert bob_watch.wait_for(rf"{CLOCK}  Alice: watch this", EVENT_TIMEOUT), (
                bob_watch.lines
            )
            assert alice_watch.wait_for(rf"{CLOCK}  delivered: .*{short_id}.*", EVENT_TIMEOUT), (
                alice_watch.lines
            )
            assert "watch this" in p2pid(bob_home, "messages", "Alice").stdout  # read now
            assert alice_watch.wait_for(rf"{CLOCK}  read: .*{short_id}.*", EVENT_TIMEOUT), (
                alice_watch.lines
            )
        finally:
            for watch in watches:
                watch.close()


def wait_until_watching(
    sender: Path, receiver: Path, sender_watch: LineReader, receiver_watch: LineReader
) -> None:
    """A watch prints nothing until something happens: send probes until both watches show
    one (the receiver's as an incoming message, the sender's as `message.sent`), then mark
    the probes read so that they do not crowd later lines."""
    deadline = time.monotonic() + EVENT_TIMEOUT
    receiver_live = sender_live = False
    probe = 0
    while not (receiver_live and sender_live):
        assert time.monotonic() < deadline, (receiver_watch.lines, sender_watch.lines)
        probe += 1
        p2pid(sender, "send", "Bob", f"probe {probe}")
        receiver_live = receiver_live or bool(
            receiver_watch.wait_for(rf"{CLOCK}  Alice: probe \d+", 2.0)
        )
        sender_live = sender_live or bool(
            sender_watch.wait_for(rf'{CLOCK}  message\.sent  .*"text": "probe \d+".*', 2.0)
        )
    p2pid(receiver, "messages", "Alice")


# -- regressions: bugs found while writing these tests ----------------------------------------


def test_contacts_reach_each_other_after_restarts(tmp_path: Path) -> None:
    homes = {name: tmp_path / name for name in ("alice", "bob", "carol")}
    args = {name: fixed_listen(free_port()) for name in homes}
    for name, home in homes.items():
        init_home(home, name.capitalize())
        start_daemon(home, *args[name])
    alice_home, bob_home, carol_home = homes.values()
    with stopped_at_exit(*homes.values()):
        # Bob joins Alice's invite and restarts: Alice, still running, must reach him.
        become_contacts(alice_home, bob_home)
        kill_9(bob_home)
        start_daemon(bob_home, *args["bob"])
        call(alice_home, "send", contact="Bob", text="are you back?")
        wait_until(
            lambda: unread_from(bob_home, "Alice") == 1, 15.0, "the inviter reaches the joiner"
        )

        # Carol joins Alice's invite, then both restart before anything else happens: each
        # must still reach the other (the addresses must have been stored).
        become_contacts(alice_home, carol_home)
        for name in ("alice", "carol"):
            kill_9(homes[name])
            start_daemon(homes[name], *args[name])
        call(alice_home, "send", contact="Carol", text="hello Carol")
        call(carol_home, "send", contact="Alice", text="hello Alice")
        wait_until(
            lambda: unread_from(carol_home, "Alice") == 1 and unread_from(alice_home, "Carol") == 1,
            15.0,
            "both reach each other after restarting",
        )


def test_courier_backoff_survives_a_long_outage() -> None:
    """2.0 ** failures once overflowed after ~1,025 failed attempts and took the daemon down."""
    from p2pid.courier import MAX_BACKOFF_SECONDS, backoff_seconds

    assert backoff_seconds(1025) <= MAX_BACKOFF_SECONDS * 1.25
