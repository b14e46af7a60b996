"""Group history (`/p2pid/group-history/1`): the wire bounds, the sans-IO machines with bytes in and
bytes out, then the trio drivers over real NetHosts on 127.0.0.1 with in-memory stores."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress

import msgspec
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pid.net.host import NetHost, Stream
from p2pid.protocols.framed import FramedStream
from p2pid.protocols.group_history import (
    DeliveredItems,
    GroupHistoryServer,
    HistoryError,
    HistoryProtocolError,
    HistoryRefusedError,
    HistoryReport,
    HistoryRequester,
    HistoryResponder,
    OfferedPage,
    Refusal,
    fetch_history,
)
from p2pid.protocols.group_sync import RateLimiter
from p2pid.wire.framing import FrameDecoder, FrameTooLarge, encode_frame, encode_varint
from p2pid.wire.group_history import (
    MAX_CIPHERTEXT_BYTES,
    MAX_FETCH_IDS,
    MAX_FRAME_BYTES,
    MAX_ITEM_BYTES,
    MAX_KEY_SHARE_BYTES,
    MAX_KEYS_PER_ITEMS,
    MAX_PAGE_IDS,
    PROTOCOL_ID,
    Cursor,
    Done,
    Fetch,
    HistoryItem,
    HistoryMessage,
    IdEntry,
    IdsPage,
    IdsRequest,
    Items,
    RefusalReason,
    Refused,
    decode_message,
    encode_message,
)

GROUP = b"G" * 32
OTHER_GROUP = b"O" * 32
T0 = 1_700_000_000_000
LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
NET_TIMEOUT = 10
SENDERS = [(bytes([i]) * 32, bytes([0x80 + i]) * 32) for i in range(1, 4)]  # identity, device


def message_id(n: int) -> bytes:
    return hashlib.blake2b(n.to_bytes(4, "big"), digest_size=16).digest()


def item(n: int, size: int | None = None) -> HistoryItem:
    identity, device = SENDERS[n % len(SENDERS)]
    body = n.to_bytes(4, "big") * 8 if size is None else bytes([n % 256]) * size
    return HistoryItem(
        message_id=message_id(n),
        sender_identity=identity,
        sender_device_key=device,
        ciphertext=body,
    )


def entry(n: int) -> IdEntry:
    return IdEntry(message_id=message_id(n), sent_at_ms=sent_at(n))


def sent_at(n: int) -> int:
    return T0 + (n // 3) * 1000  # three messages per millisecond: ordered by id among them


def ordered(*numbers: int) -> list[IdEntry]:
    return sorted((entry(n) for n in numbers), key=lambda e: (e.sent_at_ms, e.message_id))


def last_cursor(*numbers: int) -> Cursor:
    return ordered(*numbers)[-1].cursor


def share_for(device: bytes) -> bytes:
    return b"share:" + device


class Archive:
    """A responder's store: the group's messages, its members' PeerIds (None: everyone)."""

    def __init__(
        self,
        count: int = 0,
        *,
        members: Callable[[str], bool] | None = None,
        size: int | None = None,
    ) -> None:
        self.messages: dict[bytes, tuple[int, HistoryItem]] = {}
        self.members = members
        self.pages_asked: list[tuple[int, Cursor | None, int]] = []
        self.items_asked: list[list[bytes]] = []
        for n in range(count):
            self.messages[message_id(n)] = (sent_at(n), item(n, size))

    def page_now(
        self, peer_id: str, group_id: bytes, since_ms: int, after: Cursor | None, limit: int
    ) -> IdsPage | RefusalReason:
        if group_id != GROUP:
            return RefusalReason.UNKNOWN_GROUP
        if self.members is not None and not self.members(peer_id):
            return RefusalReason.NOT_MEMBER
        self.pages_asked.append((since_ms, after, limit))
        start = (after.sent_at_ms, after.message_id) if after is not None else (since_ms, b"")
        ordered = sorted(
            (at, mid)
            for mid, (at, _) in self.messages.items()
            if at >= since_ms and (at, mid) > start
        )
        chosen = ordered[:limit]
        ids = [IdEntry(message_id=mid, sent_at_ms=at) for at, mid in chosen]
        more = len(ordered) > limit
        return IdsPage(ids=ids, next=ids[-1].cursor if more else None)

    def items_now(
        self, peer_id: str, group_id: bytes, ids: list[bytes]
    ) -> tuple[list[HistoryItem], list[bytes]] | RefusalReason:
        if self.members is not None and not self.members(peer_id):
            return RefusalReason.NOT_MEMBER
        self.items_asked.append(list(ids))
        found = [self.messages[mid][1] for mid in ids if mid in self.messages]
        devices = sorted({found_item.sender_device_key for found_item in found})
        return found, [share_for(device) for device in devices]

    async def page(
        self, peer_id: str, group_id: bytes, since_ms: int, after: Cursor | None, limit: int
    ) -> IdsPage | RefusalReason:
        return self.page_now(peer_id, group_id, since_ms, after, limit)

    async def items(
        self, peer_id: str, group_id: bytes, ids: list[bytes]
    ) -> tuple[list[HistoryItem], list[bytes]] | RefusalReason:
        return self.items_now(peer_id, group_id, ids)


class Holder:
    """A requester's store: the messages it has, the key shares it was given."""

    def __init__(self, have: Iterable[int] = ()) -> None:
        self.items: dict[bytes, HistoryItem] = {message_id(n): item(n) for n in have}
        self.keys: set[bytes] = set()
        self.missing_asked: list[list[bytes]] = []
        self.taken: list[bytes] = []

    def missing_now(self, ids: list[bytes]) -> list[bytes]:
        self.missing_asked.append(list(ids))
        return [mid for mid in ids if mid not in self.items]

    def take_now(self, items: list[HistoryItem], keys: list[bytes]) -> int:
        self.keys.update(keys)
        accepted = 0
        for got in items:
            if got.message_id not in self.items:
                self.items[got.message_id] = got
                self.taken.append(got.message_id)
                accepted += 1
        return accepted

    async def missing(self, ids: list[bytes]) -> list[bytes]:
        return self.missing_now(ids)

    async def take(self, items: list[HistoryItem], keys: list[bytes]) -> int:
        return self.take_now(items, keys)


def exchange_by_hand(
    requester: HistoryRequester, archive: Archive, holder: Holder, peer: str = "peer"
) -> HistoryReport:
    """One exchange, bytes passed by hand, driven as fetch_history drives it."""
    responder = HistoryResponder(peer)

    def answer(frame: bytes) -> bytes:
        request = responder.receive(frame)
        if isinstance(request, IdsRequest):
            return responder.answer_page(
                archive.page_now(
                    peer, request.group_id, request.since_ms, request.after, request.limit
                )
            )
        assert isinstance(request, Fetch)
        return responder.answer_items(archive.items_now(peer, responder.group_id, request.ids))

    action = requester.receive(answer(requester.request()))
    while isinstance(action, OfferedPage):
        wanted = requester.select(holder.missing_now(action.ids))
        for start in range(0, len(wanted), MAX_FETCH_IDS):
            delivered = requester.receive(
                answer(requester.fetch(wanted[start : start + MAX_FETCH_IDS]))
            )
            assert isinstance(delivered, DeliveredItems)
            requester.report.accepted += holder.take_now(delivered.items, delivered.keys)
        if not requester.can_page:
            break
        action = requester.receive(answer(requester.next_page()))
    if isinstance(action, Refusal):
        raise HistoryRefusedError(action.reason, requester.report)
    assert responder.receive(requester.done()) == Done()
    assert responder.finished
    return requester.report


# -- wire --------------------------------------------------------------------------------------


def largest_item(n: int = 0) -> HistoryItem:
    return item(n, size=MAX_CIPHERTEXT_BYTES)


def test_the_largest_legal_frame_fits() -> None:
    biggest = Items(
        items=[largest_item(n) for n in range(MAX_FETCH_IDS)],
        keys=[bytes([k]) * MAX_KEY_SHARE_BYTES for k in range(MAX_KEYS_PER_ITEMS)],
    )
    frame = encode_message(biggest)
    assert MAX_FRAME_BYTES - 1024 <= len(frame) <= MAX_FRAME_BYTES
    assert decode_message(frame) == biggest
    decoder = FrameDecoder(MAX_FRAME_BYTES)
    assert decoder.feed(encode_frame(frame, MAX_FRAME_BYTES)) == [frame]
    with pytest.raises(FrameTooLarge):
        FrameDecoder(MAX_FRAME_BYTES).feed(encode_varint(MAX_FRAME_BYTES + 1))
    # A full page of ids is far smaller.
    page = IdsPage(ids=[entry(n) for n in range(MAX_PAGE_IDS)], next=entry(MAX_PAGE_IDS).cursor)
    assert len(encode_message(page)) < MAX_FRAME_BYTES // 100


def test_an_item_is_exactly_as_large_as_the_bound_says() -> None:
    no_tag = msgspec.msgpack.encode(largest_item())
    assert len(no_tag) == MAX_ITEM_BYTES


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(IdsRequest(group_id=GROUP[:31], since_ms=0), id="short group id"),
        pytest.param(IdsRequest(group_id=GROUP, since_ms=-1), id="negative time"),
        pytest.param(IdsRequest(group_id=GROUP, since_ms=2**53 + 1), id="time too large"),
        pytest.param(IdsRequest(group_id=GROUP, since_ms=0, limit=0), id="limit 0"),
        pytest.param(IdsRequest(group_id=GROUP, since_ms=0, limit=513), id="limit 513"),
        pytest.param(
            IdsRequest(
                group_id=GROUP, since_ms=0, after=Cursor(sent_at_ms=0, message_id=b"x" * 17)
            ),
            id="long cursor id",
        ),
        pytest.param(IdsPage(ids=[entry(n) for n in range(513)]), id="513 ids"),
        pytest.param(
            IdsPage(ids=[IdEntry(message_id=b"x" * 15, sent_at_ms=0)]), id="short message id"
        ),
        pytest.param(Fetch(ids=[]), id="empty fetch"),
        pytest.param(Fetch(ids=[message_id(n) for n in range(129)]), id="fetch of 129"),
        pytest.param(Items(items=[item(n) for n in range(129)]), id="129 items"),
        pytest.param(Items(items=[item(0, size=MAX_CIPHERTEXT_BYTES + 1)]), id="big ciphertext"),
        pytest.param(Items(items=[item(0, size=0)]), id="empty ciphertext"),
        pytest.param(Items(items=[], keys=[b"k" * 1025]), id="big key share"),
        pytest.param(Items(items=[], keys=[b"k"] * 65), id="65 key shares"),
        pytest.param(
            Items(items=[msgspec.structs.replace(item(0), sender_device_key=b"d" * 33)]),
            id="long device key",
        ),
    ],
)
def test_decoding_enforces_the_bounds(message: HistoryMessage) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_message(encode_message(message))


def test_decoding_refuses_unknown_tags_reasons_and_types() -> None:
    for value in (
        {"type": "nope"},
        {"type": "refused", "reason": "bored"},
        {"type": "fetch", "ids": "not a list"},
        {"type": "ids_request", "group_id": GROUP},
        [1, 2],
    ):
        with pytest.raises(msgspec.DecodeError):
            decode_message(msgspec.msgpack.encode(value))
    for data in (b"", b"\xc1", b"\x81\xa4type\xa4d\xffne"):
        with pytest.raises(msgspec.DecodeError):
            decode_message(data)


def test_unknown_fields_are_ignored() -> None:
    data = msgspec.msgpack.encode({"type": "done", "later": 1})
    assert decode_message(data) == Done()


# -- the machines: whole exchanges ----------------------------------------------------------


def test_an_exchange_fetches_only_what_is_missing_page_by_page() -> None:
    archive = Archive(200)
    holder = Holder(have=list(range(0, 200, 4)))
    report = exchange_by_hand(HistoryRequester(GROUP, 0, limit=50), archive, holder)
    assert report == HistoryReport(pages=4, offered=200, fetched=150, accepted=150, complete=True)
    assert set(holder.items) == set(archive.messages)
    asked = [mid for batch in archive.items_asked for mid in batch]
    assert len(asked) == len(set(asked)) == 150
    assert not set(asked) & {message_id(n) for n in range(0, 200, 4)}
    assert holder.keys == {share_for(device) for _, device in SENDERS}
    # Pages follow the (sent_at, id) order: each asks from the last one's next cursor.
    afters = [after for _, after, _ in archive.pages_asked]
    assert afters[0] is None and all(after is not None for after in afters[1:])
    offered = [mid for batch in holder.missing_asked for mid in batch]
    keys = [(archive.messages[mid][0], mid) for mid in offered]
    assert keys == sorted(keys) and len(offered) == 200


def test_since_ms_leaves_older_messages_out() -> None:
    archive = Archive(30)
    holder = Holder()
    report = exchange_by_hand(HistoryRequester(GROUP, sent_at(15)), archive, holder)
    assert report.offered == report.accepted == 15 and report.complete
    assert set(holder.items) == {message_id(n) for n in range(15, 30)}


def test_nothing_is_fetched_when_nothing_is_missing() -> None:
    archive = Archive(40)
    holder = Holder(have=list(range(40)))
    report = exchange_by_hand(HistoryRequester(GROUP, 0, limit=16), archive, holder)
    assert report == HistoryReport(pages=3, offered=40, complete=True)
    assert archive.items_asked == []


def test_the_item_bound_stops_the_exchange_with_a_cursor_to_resume_from() -> None:
    archive = Archive(100)
    holder = Holder()
    requester = HistoryRequester(GROUP, 0, limit=32, max_items=40)
    report = exchange_by_hand(requester, archive, holder)
    assert report.accepted == 40 and not report.complete
    assert report.pages == 2  # the second page was cut short: no third one
    assert report.resume == entry_cursor_of_page_end(archive, 32)
    # The next exchange resumes there: nothing asked twice, nothing left out.
    while not report.complete:
        report = exchange_by_hand(
            HistoryRequester(GROUP, 0, after=report.resume, limit=32, max_items=40),
            archive,
            holder,
        )
    assert set(holder.items) == set(archive.messages)
    asked = [mid for batch in archive.items_asked for mid in batch]
    assert len(asked) == len(set(asked)) == 100


def entry_cursor_of_page_end(archive: Archive, count: int) -> Cursor:
    at, mid = sorted((at, mid) for mid, (at, _) in archive.messages.items())[count - 1]
    return Cursor(sent_at_ms=at, message_id=mid)


def test_the_page_bound_stops_the_exchange() -> None:
    archive = Archive(50)
    holder = Holder()
    report = exchange_by_hand(HistoryRequester(GROUP, 0, limit=10, max_pages=3), archive, holder)
    assert report.pages == 3 and report.accepted == 30 and not report.complete
    assert report.resume == entry_cursor_of_page_end(archive, 30)


def test_a_non_member_and_an_unknown_group_are_refused() -> None:
    archive = Archive(10, members=lambda peer: peer != "mallory")
    with pytest.raises(HistoryRefusedError) as refused:
        exchange_by_hand(HistoryRequester(GROUP, 0), archive, Holder(), peer="mallory")
    assert refused.value.reason is RefusalReason.NOT_MEMBER
    with pytest.raises(HistoryRefusedError) as refused:
        exchange_by_hand(HistoryRequester(OTHER_GROUP, 0), archive, Holder())
    assert refused.value.reason is RefusalReason.UNKNOWN_GROUP


# -- the requester: order and bounds --------------------------------------------------------


FRAMES: dict[str, bytes] = {
    "ids_request": encode_message(IdsRequest(group_id=GROUP, since_ms=0)),
    "ids_page": encode_message(IdsPage(ids=ordered(0, 1), next=None)),
    "fetch": encode_message(Fetch(ids=[message_id(0)])),
    "items": encode_message(Items(items=[item(0)])),
    "done": encode_message(Done()),
    "refused": encode_message(Refused(reason=RefusalReason.NOT_MEMBER)),
}


def requester_in(state: str) -> HistoryRequester:
    requester = HistoryRequester(GROUP, 0)
    if state == "start":
        return requester
    requester.request()
    if state == "awaiting a page":
        return requester
    if state == "refused":
        requester.receive(FRAMES["refused"])
        return requester
    requester.receive(FRAMES["ids_page"])
    if state == "holding a page":
        return requester
    if state == "done":
        requester.done()
        return requester
    requester.fetch([message_id(0)])
    assert state == "awaiting items"
    return requester


REQUESTER_ACCEPTS = {
    "start": set(),
    "awaiting a page": {"ids_page", "refused"},
    "holding a page": set(),
    "awaiting items": {"items", "refused"},
    "done": set(),
    "refused": set(),
}


@pytest.mark.parametrize("state", REQUESTER_ACCEPTS)
@pytest.mark.parametrize("frame", FRAMES)
def test_the_requester_takes_each_frame_only_in_its_place(state: str, frame: str) -> None:
    requester = requester_in(state)
    if frame in REQUESTER_ACCEPTS[state]:
        action = requester.receive(FRAMES[frame])
        expected = {"ids_page": OfferedPage, "items": DeliveredItems, "refused": Refusal}
        assert isinstance(action, expected[frame])
    else:
        with pytest.raises(HistoryProtocolError):
            requester.receive(FRAMES[frame])


def test_the_requesters_own_calls_must_follow_the_protocol() -> None:
    requester = HistoryRequester(GROUP, 0)
    for call in (requester.done, requester.next_page, lambda: requester.fetch([message_id(0)])):
        with pytest.raises(HistoryProtocolError):
            call()
    requester.request()
    with pytest.raises(HistoryProtocolError):
        requester.request()
    page = requester.receive(FRAMES["ids_page"])
    assert page == OfferedPage(ids=[e.message_id for e in ordered(0, 1)], more=False)
    with pytest.raises(ValueError, match="no next page"):
        requester.next_page()
    for bad in ([], [message_id(5)], [message_id(0), message_id(0)]):
        with pytest.raises(ValueError):
            requester.fetch(bad)
    requester.fetch([message_id(0)])
    requester.receive(FRAMES["items"])
    with pytest.raises(ValueError):
        requester.fetch([message_id(0)])  # asked for already
    assert requester.select([message_id(n) for n in (9, 1, 0, 1)]) == [message_id(1)]
    with pytest.raises(ValueError):
        HistoryRequester(GROUP, 0, limit=MAX_PAGE_IDS + 1)


def awaiting_page(limit: int = 4, after: Cursor | None = None, since: int = 0) -> HistoryRequester:
    requester = HistoryRequester(GROUP, since, limit=limit, after=after)
    requester.request()
    return requester


def cursor(n: int) -> Cursor:
    return entry(n).cursor


@pytest.mark.parametrize(
    ("requester", "page", "problem"),
    [
        pytest.param(
            awaiting_page(limit=4), IdsPage(ids=ordered(*range(5))), "5 ids for a limit", id="over"
        ),
        pytest.param(
            awaiting_page(),
            IdsPage(ids=list(reversed(ordered(0, 5)))),
            "ascending",
            id="descending",
        ),
        pytest.param(
            awaiting_page(),
            IdsPage(ids=[entry(0), entry(0)]),
            "ascending",
            id="an id twice",
        ),
        pytest.param(
            awaiting_page(),
            IdsPage(ids=[entry(0), IdEntry(message_id=message_id(0), sent_at_ms=T0 + 5000)]),
            "twice",
            id="an id twice at two times",
        ),
        pytest.param(
            awaiting_page(since=sent_at(6)), IdsPage(ids=ordered(3, 6)), "before", id="too old"
        ),
        pytest.param(
            awaiting_page(after=cursor(6)),
            IdsPage(ids=[entry(6)]),
            "after the cursor",
            id="not after the cursor",
        ),
        pytest.param(
            awaiting_page(after=cursor(6)),
            IdsPage(ids=[], next=cursor(6)),
            "move forward",
            id="next not moving",
        ),
        pytest.param(
            awaiting_page(),
            IdsPage(ids=ordered(6, 9), next=cursor(3)),
            "before the page's last",
            id="next before the last id",
        ),
    ],
)
def test_a_bad_page_is_a_protocol_error(
    requester: HistoryRequester, page: IdsPage, problem: str
) -> None:
    with pytest.raises(HistoryProtocolError, match=problem):
        requester.receive(encode_message(page))


def holding(*numbers: int, next: Cursor | None = None) -> HistoryRequester:
    requester = awaiting_page(limit=MAX_PAGE_IDS)
    requester.receive(encode_message(IdsPage(ids=ordered(*numbers), next=next)))
    return requester


def test_an_item_not_asked_for_is_a_protocol_error() -> None:
    requester = holding(0, 1, 2)
    requester.fetch([message_id(0), message_id(1)])
    with pytest.raises(HistoryProtocolError, match="not asked for"):
        requester.receive(encode_message(Items(items=[item(2)])))
    # Nor one asked for twice in the same answer, nor one of an earlier fetch.
    requester = holding(0, 1, 2)
    requester.fetch([message_id(0), message_id(1)])
    with pytest.raises(HistoryProtocolError, match="not asked for"):
        requester.receive(encode_message(Items(items=[item(0), item(0)])))
    requester = holding(0, 1, 2)
    requester.fetch([message_id(0)])
    requester.receive(encode_message(Items(items=[item(0)])))
    requester.fetch([message_id(1)])
    with pytest.raises(HistoryProtocolError, match="not asked for"):
        requester.receive(encode_message(Items(items=[item(1), item(0)])))


def test_fewer_items_than_asked_leave_the_exchange_incomplete() -> None:
    requester = holding(0, 1, 2)
    requester.fetch([message_id(0), message_id(1)])
    delivered = requester.receive(encode_message(Items(items=[item(1)], keys=[b"k"])))
    assert delivered == DeliveredItems(items=[item(1)], keys=[b"k"])
    requester.done()
    assert requester.report.fetched == 1 and not requester.report.complete


def test_a_refusal_ends_the_exchange_at_any_answer() -> None:
    requester = holding(0, 1, next=last_cursor(0, 1))
    requester.fetch([message_id(0)])
    requester.receive(encode_message(Items(items=[item(0)])))
    requester.next_page()
    refusal = requester.receive(FRAMES["refused"])
    assert refusal == Refusal(RefusalReason.NOT_MEMBER)
    assert requester.report.fetched == 1 and not requester.report.complete
    with pytest.raises(HistoryProtocolError):
        requester.done()


def test_a_requester_with_a_full_page_offered_selects_within_its_bound() -> None:
    requester = HistoryRequester(GROUP, 0, max_items=100)
    requester.request()
    page = IdsPage(ids=ordered(*range(MAX_PAGE_IDS)), next=last_cursor(*range(MAX_PAGE_IDS)))
    offered = requester.receive(encode_message(page))
    assert isinstance(offered, OfferedPage) and offered.more
    chosen = requester.select(list(reversed(offered.ids)))
    assert chosen == offered.ids[:100]  # in the page's order
    assert not requester.can_page
    with pytest.raises(ValueError):
        requester.fetch(offered.ids[: MAX_FETCH_IDS + 1])
    requester.fetch(chosen)
    requester.receive(encode_message(Items(items=[])))
    with pytest.raises(ValueError, match="at most 100"):
        requester.fetch(offered.ids[100:101])
    assert requester.select(offered.ids) == []


# -- the responder: order and bounds --------------------------------------------------------


def responder_in(state: str, archive: Archive | None = None) -> HistoryResponder:
    archive = archive or Archive(10)
    responder = HistoryResponder("peer")
    if state == "start":
        return responder
    request = responder.receive(encode_message(IdsRequest(group_id=GROUP, since_ms=0, limit=4)))
    if state == "paging":
        return responder
    assert isinstance(request, IdsRequest)
    responder.answer_page(archive.page_now("peer", GROUP, 0, None, 4))
    if state == "holding a page":
        return responder
    if state == "done":
        responder.receive(FRAMES["done"])
        return responder
    responder.receive(FRAMES["fetch"])
    assert state == "fetching"
    return responder


RESPONDER_ACCEPTS = {
    "start": {"ids_request"},
    "paging": set(),
    "holding a page": {"fetch", "done"},
    "fetching": set(),
    "done": set(),
}


@pytest.mark.parametrize("state", RESPONDER_ACCEPTS)
@pytest.mark.parametrize("frame", FRAMES)
def test_the_responder_takes_each_frame_only_in_its_place(state: str, frame: str) -> None:
    responder = responder_in(state)
    if frame in RESPONDER_ACCEPTS[state]:
        assert responder.receive(FRAMES[frame]) == decode_message(FRAMES[frame])
    else:
        with pytest.raises(HistoryProtocolError):
            responder.receive(FRAMES[frame])


def first_ids(archive: Archive, count: int) -> list[bytes]:
    return [mid for _, mid in sorted((at, mid) for mid, (at, _) in archive.messages.items())][
        :count
    ]


def test_the_responder_serves_only_ids_of_the_current_page_once() -> None:
    archive = Archive(10)
    page_one = first_ids(archive, 4)
    page_two = first_ids(archive, 8)[4:]
    cases: list[tuple[list[bytes], str]] = [
        ([message_id(99)], "not on the current page"),
        ([page_one[0], page_one[0]], "twice"),
    ]
    for ids, problem in cases:
        responder = responder_in("holding a page", archive)
        with pytest.raises(HistoryProtocolError, match=problem):
            responder.receive(encode_message(Fetch(ids=ids)))
    responder = responder_in("holding a page", archive)
    responder.receive(encode_message(Fetch(ids=page_one[:2])))
    responder.answer_items(archive.items_now("peer", GROUP, page_one[:2]))
    with pytest.raises(HistoryProtocolError, match="already fetched"):
        responder.receive(encode_message(Fetch(ids=page_one[1:3])))
    # The next page: only from the last page's next cursor, same group and time.
    responder = responder_in("holding a page", archive)
    last = archive.page_now("peer", GROUP, 0, None, 4)
    assert isinstance(last, IdsPage) and last.next is not None
    for wrong in (
        IdsRequest(group_id=GROUP, since_ms=0, after=None),
        IdsRequest(group_id=GROUP, since_ms=0, after=cursor(0)),
        IdsRequest(group_id=OTHER_GROUP, since_ms=0, after=last.next),
        IdsRequest(group_id=GROUP, since_ms=1, after=last.next),
    ):
        with pytest.raises(HistoryProtocolError, match="page request"):
            responder_in("holding a page", archive).receive(encode_message(wrong))
    responder.receive(encode_message(IdsRequest(group_id=GROUP, since_ms=0, after=last.next)))
    responder.answer_page(archive.page_now("peer", GROUP, 0, last.next, 4))
    with pytest.raises(HistoryProtocolError, match="not on the current page"):
        responder.receive(encode_message(Fetch(ids=page_one[3:])))
    responder.receive(encode_message(Fetch(ids=page_two)))


def test_the_responder_cuts_off_a_peer_asking_past_the_exchange_bounds() -> None:
    archive = Archive(20)
    responder = HistoryResponder("peer", max_items=5, max_pages=2)
    request = responder.receive(encode_message(IdsRequest(group_id=GROUP, since_ms=0, limit=4)))
    assert isinstance(request, IdsRequest)
    page = archive.page_now("peer", GROUP, 0, None, 4)
    assert isinstance(page, IdsPage)
    responder.answer_page(page)
    ids = [e.message_id for e in page.ids]
    responder.receive(encode_message(Fetch(ids=ids)))
    responder.answer_items(archive.items_now("peer", GROUP, ids))
    responder.receive(encode_message(IdsRequest(group_id=GROUP, since_ms=0, after=page.next)))
    second = archive.page_now("peer", GROUP, 0, page.next, 4)
    assert isinstance(second, IdsPage)
    responder.answer_page(second)
    with pytest.raises(HistoryProtocolError, match="more than 5 items"):
        responder.receive(encode_message(Fetch(ids=[e.message_id for e in second.ids][:2])))
    responder = HistoryResponder("peer", max_pages=1)
    responder.receive(encode_message(IdsRequest(group_id=GROUP, since_ms=0, limit=4)))
    responder.answer_page(page)
    with pytest.raises(HistoryProtocolError, match="more than 1 pages"):
        responder.receive(encode_message(IdsRequest(group_id=GROUP, since_ms=0, after=page.next)))


def test_the_responder_checks_its_backends_answers() -> None:
    responder = responder_in("paging")
    with pytest.raises(HistoryError, match="bad page"):
        responder.answer_page(IdsPage(ids=ordered(*range(5))))  # the limit was 4
    responder = responder_in("paging")
    with pytest.raises(HistoryError, match="out-of-bounds"):
        responder.answer_page(IdsPage(ids=[IdEntry(message_id=b"short", sent_at_ms=T0)]))
    responder = responder_in("fetching")
    with pytest.raises(HistoryError, match="not asked for"):
        responder.answer_items(([item(5)], []))
    responder = responder_in("fetching")
    with pytest.raises(HistoryError, match="out-of-bounds"):
        responder.answer_items(([item(0)], [b"k"] * (MAX_KEYS_PER_ITEMS + 1)))
    responder = responder_in("fetching")
    with pytest.raises(HistoryError):
        responder.answer_page(IdsPage(ids=[]))  # no page was asked for
    assert decode_message(responder.answer_items(RefusalReason.NOT_MEMBER)) == Refused(
        reason=RefusalReason.NOT_MEMBER
    )
    assert responder.finished and responder.refused is RefusalReason.NOT_MEMBER


# -- fuzz -------------------------------------------------------------------------------------


def valid_frames() -> list[bytes]:
    page = IdsPage(ids=ordered(*range(6)), next=last_cursor(*range(6)))
    return [*FRAMES.values(), encode_message(page), encode_message(Items(items=[item(0), item(1)]))]


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """Random bytes, or a valid frame with a few bytes changed, cut or extended."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    data = bytearray(draw(st.sampled_from(valid_frames())))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data) + draw(st.binary(max_size=8))


@settings(max_examples=400, deadline=None)
@given(frames(), frames())
def test_fuzzed_frames_raise_only_protocol_errors(first: bytes, second: bytes) -> None:
    for state in ("awaiting a page", "awaiting items"):
        requester = requester_in(state)
        try:
            action = requester.receive(first)
            if isinstance(action, OfferedPage) and action.ids:
                requester.fetch(requester.select(action.ids)[:MAX_FETCH_IDS])
                requester.receive(second)
            elif isinstance(action, DeliveredItems):
                assert {got.message_id for got in action.items} <= {message_id(0)}
        except HistoryProtocolError:
            pass
    for state in ("start", "holding a page"):
        responder = responder_in(state)
        with suppress(HistoryProtocolError):
            responder.receive(first)
            responder.receive(second)


# -- over the network ------------------------------------------------------------------------


@asynccontextmanager
async def two_hosts() -> AsyncIterator[tuple[NetHost, NetHost]]:
    async with (
        NetHost.open(secrets.token_bytes(32), LOOPBACK) as asker,
        NetHost.open(secrets.token_bytes(32), LOOPBACK) as answerer,
    ):
        asker.add_addrs(answerer.peer_id, answerer.listen_addrs())
        answerer.add_addrs(asker.peer_id, asker.listen_addrs())
        yield asker, answerer


class Watched:
    """A GroupHistoryServer whose handler signals when an exchange is over."""

    def __init__(self, server: GroupHistoryServer) -> None:
        self.server = server
        self.finished = trio.Event()

    async def handle(self, stream: Stream) -> None:
        try:
            await self.server.handle(stream)
        finally:
            self.finished.set()


async def test_500_messages_come_in_pages_and_only_the_missing_ones_are_fetched() -> None:
    archive = Archive(500)
    had = list(range(0, 500, 3))
    holder = Holder(have=had)
    async with two_hosts() as (asker, answerer):
        served = Watched(GroupHistoryServer(archive))
        answerer.set_stream_handler(PROTOCOL_ID, served.handle)
        started = time.perf_counter()
        with trio.fail_after(NET_TIMEOUT):
            report = await fetch_history(asker, answerer.peer_id, GROUP, 0, holder, limit=100)
            await served.finished.wait()
        elapsed = time.perf_counter() - started
    print(f"\ngroup history: {report.fetched} of {report.offered} in {elapsed * 1000:.0f} ms")
    missing = 500 - len(had)
    assert report == HistoryReport(
        pages=5, offered=500, fetched=missing, accepted=missing, complete=True
    )
    assert set(holder.items) == set(archive.messages)
    assert all(holder.items[mid] == archive.messages[mid][1] for mid in holder.items)
    asked = [mid for batch in archive.items_asked for mid in batch]
    assert len(asked) == len(set(asked)) == missing
    assert not set(asked) & {message_id(n) for n in had}
    assert all(len(batch) <= MAX_FETCH_IDS for batch in archive.items_asked)
    assert holder.keys == {share_for(holder.items[mid].sender_device_key) for mid in asked}
    assert elapsed < 5.0


async def test_the_largest_items_cross_the_network() -> None:
    archive = Archive(MAX_FETCH_IDS + 3, size=MAX_CIPHERTEXT_BYTES)
    holder = Holder()
    async with two_hosts() as (asker, answerer):
        GroupHistoryServer(archive).install(answerer)
        with trio.fail_after(NET_TIMEOUT):
            report = await fetch_history(asker, answerer.peer_id, GROUP, 0, holder)
    assert report.accepted == MAX_FETCH_IDS + 3 and report.complete
    assert [len(batch) for batch in archive.items_asked] == [MAX_FETCH_IDS, 3]
    assert all(len(got.ciphertext) == MAX_CIPHERTEXT_BYTES for got in holder.items.values())


async def test_a_non_member_device_is_refused_over_the_network() -> None:
    async with two_hosts() as (asker, answerer):
        archive = Archive(20, members=lambda peer: peer != asker.peer_id)
        GroupHistoryServer(archive).install(answerer)
        holder = Holder()
        with trio.fail_after(NET_TIMEOUT):
            with pytest.raises(HistoryRefusedError) as refused:
                await fetch_history(asker, answerer.peer_id, GROUP, 0, holder)
            assert refused.value.reason is RefusalReason.NOT_MEMBER
            assert refused.value.report == HistoryReport()
            with pytest.raises(HistoryRefusedError) as refused:
                await fetch_history(asker, answerer.peer_id, OTHER_GROUP, 0, holder)
            assert refused.value.reason is RefusalReason.UNKNOWN_GROUP
    assert holder.items == {} and archive.items_asked == []


async def test_too_many_requests_are_refused_over_the_network() -> None:
    archive = Archive(5)
    async with two_hosts() as (asker, answerer):
        limiter = RateLimiter(rate=0.001, burst=2)
        GroupHistoryServer(archive, limiter=limiter).install(answerer)
        with trio.fail_after(NET_TIMEOUT):
            for _ in range(2):
                report = await fetch_history(asker, answerer.peer_id, GROUP, 0, Holder())
                assert report.accepted == 5
            with pytest.raises(HistoryRefusedError) as refused:
                await fetch_history(asker, answerer.peer_id, GROUP, 0, Holder())
        assert refused.value.reason is RefusalReason.TOO_MANY_REQUESTS
    assert len(archive.pages_asked) == 2


async def was_reset(stream: Stream) -> bool:
    """After the other side ended `stream`: did it reset it? py-libp2p reads a reset as an end
    of stream, but a reset stream, unlike one closed by the other side, takes no more writes."""
    try:
        await stream.write(b"\0")
    except Exception:
        return True
    return False


class Scripted:
    """A responder that answers honestly up to `honest_fetches` fetches, then does `then`."""

    def __init__(
        self, archive: Archive, honest_fetches: int, then: Callable[[FramedStream], object]
    ) -> None:
        self.archive = archive
        self.honest_fetches = honest_fetches
        self.then = then
        self.reset: bool | None = None  # whether the requester reset the stream
        self.finished = trio.Event()

    async def handle(self, stream: Stream) -> None:
        framed = FramedStream(stream, MAX_FRAME_BYTES)
        responder = HistoryResponder("peer")
        try:
            fetches = 0
            while True:
                request = responder.receive(await framed.receive())
                if isinstance(request, IdsRequest):
                    reply = responder.answer_page(
                        self.archive.page_now(
                            "peer", GROUP, request.since_ms, request.after, request.limit
                        )
                    )
                elif isinstance(request, Fetch) and fetches < self.honest_fetches:
                    fetches += 1
                    reply = responder.answer_items(
                        self.archive.items_now("peer", GROUP, request.ids)
                    )
                else:
                    break
                await framed.send(reply)
            outcome = self.then(framed)
            if isinstance(outcome, bytes):
                await stream.write(outcome)
            with suppress(Exception):
                assert await framed.receive_or_end() is None
            self.reset = await was_reset(stream)
        finally:
            self.finished.set()
            await stream.close()


@pytest.mark.parametrize(
    ("garbage", "error"),
    [
        pytest.param(encode_frame(b"\xc1\xc1\xc1", 10), "malformed", id="malformed"),
        pytest.param(
            encode_frame(encode_message(Items(items=[item(499)])), MAX_FRAME_BYTES),
            "not asked for",
            id="an item not asked for",
        ),
        pytest.param(encode_frame(FRAMES["ids_page"], 1000), "expected items", id="out of order"),
        pytest.param(encode_varint(MAX_FRAME_BYTES + 1) + b"x" * 64, "broke off", id="oversized"),
    ],
)
async def test_a_responder_sending_garbage_is_reset_and_what_came_before_stays(
    garbage: bytes, error: str
) -> None:
    archive = Archive(300)
    holder = Holder()
    scripted = Scripted(archive, honest_fetches=2, then=lambda _: garbage)
    async with two_hosts() as (asker, answerer):
        answerer.set_stream_handler(PROTOCOL_ID, scripted.handle)
        with trio.fail_after(NET_TIMEOUT):
            with pytest.raises(HistoryError, match=error) as raised:
                await fetch_history(asker, answerer.peer_id, GROUP, 0, holder)
            await scripted.finished.wait()
    assert scripted.reset
    report = raised.value.report
    assert report is not None and report.accepted == 2 * MAX_FETCH_IDS and not report.complete
    assert len(holder.items) == 2 * MAX_FETCH_IDS
    assert set(holder.taken) == {mid for batch in archive.items_asked for mid in batch}


async def test_an_honest_exchange_ends_without_a_reset() -> None:
    archive = Archive(300)
    holder = Holder()
    scripted = Scripted(archive, honest_fetches=3, then=lambda _: None)
    async with two_hosts() as (asker, answerer):
        answerer.set_stream_handler(PROTOCOL_ID, scripted.handle)
        with trio.fail_after(NET_TIMEOUT):
            report = await fetch_history(asker, answerer.peer_id, GROUP, 0, holder)
            await scripted.finished.wait()
    assert report.complete and len(holder.items) == 300
    assert scripted.reset is False


async def test_a_stalling_responder_times_out_and_what_came_before_stays() -> None:
    archive = Archive(300)
    holder = Holder()
    scripted = Scripted(archive, honest_fetches=1, then=lambda _: "stall")
    async with two_hosts() as (asker, answerer):
        answerer.set_stream_handler(PROTOCOL_ID, scripted.handle)
        started = time.perf_counter()
        with trio.fail_after(NET_TIMEOUT):
            with pytest.raises(HistoryError, match="timed out") as raised:
                await fetch_history(asker, answerer.peer_id, GROUP, 0, holder, step_timeout=0.5)
            elapsed = time.perf_counter() - started
            await scripted.finished.wait()
    assert 0.5 <= elapsed < 3
    assert scripted.reset
    report = raised.value.report
    assert report is not None and report.accepted == MAX_FETCH_IDS == len(holder.items)


async def test_a_responder_dragging_on_hits_the_exchange_timeout() -> None:
    class Slow(Archive):
        async def items(
            self, peer_id: str, group_id: bytes, ids: list[bytes]
        ) -> tuple[list[HistoryItem], list[bytes]] | RefusalReason:
            await trio.sleep(0.2)  # a slow store, each answer well within the step timeout
            return self.items_now(peer_id, group_id, ids)

    slow = Slow(40)
    holder = Holder()
    async with two_hosts() as (asker, answerer):
        served = Watched(GroupHistoryServer(slow))
        answerer.set_stream_handler(PROTOCOL_ID, served.handle)
        with trio.fail_after(NET_TIMEOUT):
            with pytest.raises(HistoryError, match="timed out") as raised:
                await fetch_history(
                    asker,
                    answerer.peer_id,
                    GROUP,
                    0,
                    holder,
                    limit=4,
                    step_timeout=1.0,
                    exchange_timeout=0.9,
                )
            await served.finished.wait()
    report = raised.value.report
    assert report is not None and 0 < report.accepted < len(slow.messages)
    assert report.accepted == len(holder.items)


async def read_until_closed(framed: FramedStream) -> list[bytes]:
    """Frames until the server ends or resets the stream."""
    frames: list[bytes] = []
    with trio.fail_after(NET_TIMEOUT):
        while True:
            try:
                frame = await framed.receive_or_end()
            except Exception:
                return frames
            if frame is None:
                return frames
            frames.append(frame)


async def test_a_requester_fetching_what_it_was_not_offered_is_cut_off() -> None:
    archive = Archive(20)
    async with two_hosts() as (asker, answerer):
        served = Watched(GroupHistoryServer(archive))
        answerer.set_stream_handler(PROTOCOL_ID, served.handle)
        stream = await asker.new_stream(answerer.peer_id, [PROTOCOL_ID])
        framed = FramedStream(stream, MAX_FRAME_BYTES)
        with trio.fail_after(NET_TIMEOUT):
            await framed.send(encode_message(IdsRequest(group_id=GROUP, since_ms=0, limit=5)))
            page = decode_message(await framed.receive())
            assert isinstance(page, IdsPage) and len(page.ids) == 5
            offered = {e.message_id for e in page.ids}
            unoffered = next(mid for mid in archive.messages if mid not in offered)
            await framed.send(encode_message(Fetch(ids=[unoffered])))
            assert await read_until_closed(framed) == []
            assert await was_reset(stream)
            await served.finished.wait()
        await stream.close()
    assert archive.items_asked == []


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(encode_varint(MAX_FRAME_BYTES + 1) + b"x" * 100, id="oversized"),
        pytest.param(encode_varint(5) + b"\xc1\xc1\xc1\xc1\xc1", id="malformed"),
        pytest.param(encode_frame(FRAMES["fetch"], 1000), id="fetch first"),
        pytest.param(encode_varint(100) + b"x" * 10, id="cut short"),
    ],
)
async def test_bad_frames_from_a_requester_close_the_stream(payload: bytes) -> None:
    archive = Archive(20)
    async with two_hosts() as (asker, answerer):
        served = Watched(GroupHistoryServer(archive))
        answerer.set_stream_handler(PROTOCOL_ID, served.handle)
        stream = await asker.new_stream(answerer.peer_id, [PROTOCOL_ID])
        await stream.write(payload)
        framed = FramedStream(stream, MAX_FRAME_BYTES)
        await framed.finish()
        assert await read_until_closed(framed) == []
        with trio.fail_after(NET_TIMEOUT):
            await served.finished.wait()
        await stream.close()
    assert archive.pages_asked == [] and archive.items_asked == []
