"""Message history at scale: opening, scrolling, searching and reading a conversation of 100,000
messages in a real SQLCipher store, through TrioStore as the daemon uses it. Prints one JSON line.

The store holds one conversation of `--messages` messages and a second of a tenth of that,
interleaved in time, in both directions, with Lamport ties; bodies are 3 to 24 words drawn with
Zipf-like weights from a vocabulary of a few hundred words. Each figure is timed around one
`await store.read(...)` (mark_read: `await store.write(...)`, its commit included), after
warm-up, over `--runs` repeats:

- open: the newest page of 50;
- scroll: the page of 50 before a message about half-way back (50,000 back, a different
  depth each repeat, so it is not the same cached pages every time);
- search_common / search_rare: `search` of the most frequent word / of a word in 5 messages,
  in the big conversation, limit 50; search_all: the most frequent word in every conversation;
  search_absent: the most frequent word in a third conversation of 20 messages that never
  use it (no match there, ~90,000 elsewhere);
- mark_read: reading a conversation with 100 unread messages (they are set unread again,
  untimed, before each repeat).

Then, once each in the store closed and opened again (an empty SQLite page cache): open_cold,
search_common_cold.

Baseline, measured in the same run: `store.read` of `SELECT 1`, the fixed cost of a read (a
worker thread round trip). The target is the issue's 50 ms per operation.

    .venv/bin/python bench/bench_history.py [--runs 30] [--warmup 5] [--messages 100000]
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio
from common import emit, median, ms, parser, percentile, ratio

from p2pid.store import Connection, TrioStore
from p2pid.store.messages import (
    Cursor,
    NewMessage,
    conversation_id_for,
    insert_message,
    mark_read,
    page,
    search,
)

TARGET_MS = 50
PAGE = 50
SCROLL_DEPTH = 50_000
UNREAD = 100
BATCH = 5_000  # messages per write (one transaction)
SMALL = 20  # messages in a third conversation, none with the most frequent word
RARE_WORD = "zanzibar"
RARE_COUNT = 5
NOW_MS = 1_800_000_000_000

ME = b"\x01" * 32
ALICE = b"\xa1" * 32
BOB = b"\xb0" * 32
CAROL = b"\xc0" * 32
DEVICES = {ME: "12D3KooWMe", ALICE: "12D3KooWAlice", BOB: "12D3KooWBob", CAROL: "12D3KooWCarol"}

_WORDS = """
the to and a i you it of is in that for me my on be have do not this with just so but are
at was what we can your like no yes ok okay will get if all up out know about one go how
now there good think see time they then he she would when want going here oh well lol
really need right back too did from got some come yeah sure thanks thank much tomorrow
today tonight later morning night day week weekend call text home work office meeting
lunch dinner coffee tea beer pizza train bus car bike walk late early soon sorry great
nice cool fine love miss happy sad tired busy free maybe probably definitely never always
still already again also even only just very pretty quite bit lot little big small new old
long short next last first last best better worse bad hard easy fun funny crazy weird
mum dad brother sister kids baby friend friends team boss doctor teacher neighbour dog cat
house flat room kitchen garden street city town park beach lake mountain river station
airport flight ticket hotel holiday trip plan plans party birthday wedding present gift
photo photos picture video song music film movie show book game match football tennis
run running gym swim cook cooking cake bread cheese apple chocolate wine water milk
monday tuesday wednesday thursday friday saturday sunday january february march april
may june july august september october november december hour hours minute minutes
message phone email address number code password laptop computer screen app update
bring take make let put give send tell ask say said told try start stop finish leave
meet wait stay open close buy pay sell find lost found forgot remember check look looks
watch listen read write play win lose help feel feeling sleep wake eat drink drive fly
where who why which because though although while until since before after during
something nothing anything everything someone anyone everyone somewhere nowhere
rain sun sunny cold hot warm snow wind weather outside inside upstairs downstairs
"""
VOCABULARY = list(dict.fromkeys(_WORDS.split()))


def vocabulary_weights() -> list[float]:
    return [1 / rank for rank in range(1, len(VOCABULARY) + 1)]


def body_text(rng: random.Random, weights: list[float]) -> str:
    words = rng.choices(VOCABULARY, weights=weights, k=rng.randint(3, 24))
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice([".", "!", "?", "", "", " :)"])


def generate(with_alice: int, with_bob: int, seed: int = 1) -> list[tuple[bytes, NewMessage]]:
    """(peer, message) pairs in arrival order, the two conversations interleaved."""
    rng = random.Random(seed)
    weights = vocabulary_weights()
    peers = [ALICE] * with_alice + [BOB] * with_bob
    rng.shuffle(peers)
    rare_at = set(rng.sample([n for n, peer in enumerate(peers) if peer == ALICE], RARE_COUNT))
    lamports = {ALICE: 0, BOB: 0}
    clock = NOW_MS - len(peers) * 60_000
    messages = []
    for n, peer in enumerate(peers):
        outgoing = rng.random() < 0.5
        clock += rng.randint(1_000, 100_000)
        # Now and then both sides send at once: the same Lamport clock on two messages.
        lamports[peer] += 0 if rng.random() < 0.05 else 1
        body = body_text(rng, weights)
        if n in rare_at:
            body += f" {RARE_WORD}"
        sender = ME if outgoing else peer
        message = NewMessage(
            message_id=rng.randbytes(16),
            sender_identity=sender,
            sender_device=DEVICES[sender],
            outgoing=outgoing,
            kind="text",
            body=body,
            lamport=max(1, lamports[peer]),
            sent_at=clock,
            received_at=clock + rng.randint(0, 2_000),
            state="read",
        )
        messages.append((peer, message))
    return messages


def add_small_conversation(conn: Connection, count: int) -> int:
    """A conversation with Carol, newer than the others, without the most frequent word."""
    rng = random.Random(2)
    conversation = conversation_id_for(conn, CAROL, NOW_MS)
    for n in range(count):
        words = rng.choices(VOCABULARY[1:], k=rng.randint(3, 24))
        message = NewMessage(
            message_id=rng.randbytes(16),
            sender_identity=CAROL,
            sender_device=DEVICES[CAROL],
            outgoing=False,
            kind="text",
            body=" ".join(words),
            lamport=n + 1,
            sent_at=NOW_MS + n * 1_000,
            received_at=NOW_MS + n * 1_000,
            state="read",
        )
        insert_message(conn, conversation, message)
    return conversation


def insert_batch(
    conn: Connection, batch: list[tuple[bytes, NewMessage]], conversations: dict[bytes, int]
) -> None:
    for peer, message in batch:
        insert_message(conn, conversations[peer], message)


def cursors_back(conn: Connection, conversation_id: int, depth: int, count: int) -> list[Cursor]:
    """Cursors of messages about `depth` back from the newest, each a little deeper."""
    cursors = []
    for step in range(count):
        row = conn.execute(
            "SELECT lamport, sent_at, message_id FROM messages WHERE conversation_id = ?"
            " ORDER BY lamport DESC, sent_at DESC, message_id DESC LIMIT 1 OFFSET ?",
            (conversation_id, depth + step * 97),
        ).fetchone()
        cursors.append(Cursor(int(row[0]), int(row[1]), bytes(row[2])))
    return cursors


def make_unread(conn: Connection, conversation_id: int, count: int) -> None:
    """The newest `count` incoming messages of the conversation unread again."""
    conn.execute(
        "UPDATE messages SET state = 'unread', state_at = NULL WHERE id IN ("
        " SELECT id FROM messages WHERE conversation_id = ? AND outgoing = 0"
        " ORDER BY lamport DESC, sent_at DESC, message_id DESC LIMIT ?)",
        (conversation_id, count),
    )
    conn.execute("UPDATE conversations SET unread = ? WHERE id = ?", (count, conversation_id))


def select_one(conn: Connection) -> Any:
    return conn.execute("SELECT 1").fetchone()


def figures(name: str, seconds: list[float]) -> dict[str, float]:
    return {
        f"{name}_ms_p50": ms(median(seconds)),
        f"{name}_ms_p90": ms(percentile(seconds, 90)),
    }


async def bench(messages: int, runs: int, warmup: int) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="p2pid-history-"))
    try:
        path, key = directory / "p2pid.db", os.urandom(32)
        async with TrioStore.open(path, key, create=True) as store:
            conversations = {
                peer: await store.write(
                    partial(conversation_id_for, peer_identity=peer, now_ms=NOW_MS)
                )
                for peer in (ALICE, BOB)
            }
            alice = conversations[ALICE]
            kept = generate(messages, messages // 10)
            started = time.perf_counter()
            for start in range(0, len(kept), BATCH):
                batch = kept[start : start + BATCH]
                await store.write(partial(insert_batch, batch=batch, conversations=conversations))
            populate_s = time.perf_counter() - started
            rare = sum(RARE_WORD in message.body for peer, message in kept if peer == ALICE)
            carol = await store.write(partial(add_small_conversation, count=SMALL))

            depth = min(SCROLL_DEPTH, messages - PAGE - 1 - 97 * (runs + warmup))
            cursors = await store.read(
                partial(cursors_back, conversation_id=alice, depth=depth, count=runs + warmup)
            )
            common = VOCABULARY[0]
            samples: dict[str, list[float]] = {
                name: []
                for name in (
                    "baseline",
                    "open",
                    "scroll",
                    "search_common",
                    "search_rare",
                    "search_all",
                    "search_absent",
                    "mark_read",
                )
            }
            hits = {}
            for repeat in range(warmup + runs):
                cursor = cursors[repeat]
                reads: dict[str, Callable[[Connection], Any]] = {
                    "baseline": select_one,
                    "open": partial(page, conversation_id=alice, limit=PAGE),
                    "scroll": partial(page, conversation_id=alice, limit=PAGE, before=cursor),
                    "search_common": partial(search, query=common, conversation_id=alice),
                    "search_rare": partial(search, query=RARE_WORD, conversation_id=alice),
                    "search_all": partial(search, query=common),
                    "search_absent": partial(search, query=common, conversation_id=carol),
                }
                results = {}
                for name, fn in reads.items():
                    started = time.perf_counter()
                    results[name] = await store.read(fn)
                    elapsed = time.perf_counter() - started
                    if repeat >= warmup:
                        samples[name].append(elapsed)
                await store.write(partial(make_unread, conversation_id=alice, count=UNREAD))
                started = time.perf_counter()
                newest = await store.write(partial(mark_read, conversation_id=alice, now_ms=NOW_MS))
                elapsed = time.perf_counter() - started
                assert newest is not None
                if repeat >= warmup:
                    samples["mark_read"].append(elapsed)
                hits = {name: len(value) for name, value in results.items() if name != "baseline"}
            assert hits["open"] == hits["scroll"] == PAGE, hits
            assert hits["search_common"] == hits["search_all"] == PAGE, hits
            assert hits["search_rare"] == rare, hits
            assert hits["search_absent"] == 0, hits
        # Once more in a store just opened: SQLite's page cache is empty (the OS's is not).
        cold: dict[str, float] = {}
        async with TrioStore.open(path, key) as store:
            for name, fn in {
                "open": partial(page, conversation_id=alice, limit=PAGE),
                "search_common": partial(search, query=common, conversation_id=alice),
            }.items():
                started = time.perf_counter()
                await store.read(fn)
                cold[name] = time.perf_counter() - started
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    record: dict[str, Any] = {
        "bench": "history",
        "messages": messages,
        "other_conversation_messages": messages // 10,
        "populate_s": round(populate_s, 2),
        "insert_us_per_message": round(populate_s / len(kept) * 1e6, 1),
        "page": PAGE,
        "scroll_depth": depth,
        "common_word": common,
        "rare_word_hits": rare,
        "small_conversation_messages": SMALL,
        "unread": UNREAD,
    }
    for name, seconds in samples.items():
        record.update(figures(name, seconds))
    for name, seconds_once in cold.items():
        record[f"{name}_cold_ms"] = ms(seconds_once)
    record["baseline"] = "store.read of SELECT 1"
    record["target_ms"] = TARGET_MS
    for name in samples:
        if name != "baseline":
            record[f"ratio_{name}_vs_target"] = ratio(median(samples[name]), TARGET_MS / 1000)
    record["runs"] = runs
    return record


def main() -> None:
    arguments = parser(__doc__.splitlines()[0], runs=30, runs_help="timed repeats of each")
    arguments.add_argument("--warmup", type=int, default=5, help="untimed repeats first")
    arguments.add_argument(
        "--messages", type=int, default=100_000, help="messages in the big conversation"
    )
    args = arguments.parse_args()
    emit(trio.run(bench, args.messages, max(1, args.runs), args.warmup))


if __name__ == "__main__":
    main()
