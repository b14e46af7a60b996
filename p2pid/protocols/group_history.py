"""`/p2pid/group-history/1`: a member device that was offline fetches the group messages it
missed from any member device, by message id (the flow is in p2pid.wire.group_history).

`HistoryRequester` and `HistoryResponder` are sans-IO machines: bytes in, bytes out. They hold no
messages; they check the order and the bounds of the exchange:

- frames: at most MAX_FRAME_BYTES (the framing layer refuses a longer one as soon as its length
  is read), decoded strictly, in the protocol's order;
- a page names at most the requested limit of ids, ascending, after the cursor asked from, none
  sent before since_ms, and its `next` cursor moves forward (no endless paging);
- a fetch names 1..MAX_FETCH_IDS ids of the current page not asked for before in the exchange;
  items answer only ids asked for, each once;
- at most MAX_ITEMS_PER_EXCHANGE items and MAX_PAGES_PER_EXCHANGE pages per exchange: the
  requester stops there (`report.complete` False: ask again) and the responder cuts off a peer
  asking for more.

Anything else from the peer raises HistoryProtocolError and the driver resets the stream. Items
taken before that stay: whatever relayed them, the node checks each message (its Megolm session,
its sender) before showing it.

The drivers add the stream, the timeouts and the data: `fetch_history` asks a
`RequesterBackend` which offered ids this device lacks and hands it what arrives;
`GroupHistoryServer` asks a `ResponderBackend` for pages and items (it decides who is a member)
and rate-limits requests per peer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum, auto
from typing import Protocol

import msgspec
import trio

from p2pid.net.host import NetHost, Stream, StreamError, close_quietly, remote_peer_id
from p2pid.protocols.framed import FramedStream
from p2pid.protocols.group_sync import RateLimiter
from p2pid.wire.framing import FrameError
from p2pid.wire.group_history import (
    MAX_FETCH_IDS,
    MAX_FRAME_BYTES,
    MAX_ITEMS_PER_EXCHANGE,
    MAX_PAGE_IDS,
    MAX_PAGES_PER_EXCHANGE,
    PROTOCOL_ID,
    Cursor,
    Done,
    Fetch,
    HistoryItem,
    HistoryMessage,
    IdsPage,
    IdsRequest,
    Items,
    RefusalReason,
    Refused,
    decode_message,
    encode_message,
)

log = logging.getLogger(__name__)

STEP_TIMEOUT_SECONDS = 15.0  # per frame, and per answer (the peer's store is read meanwhile)
EXCHANGE_TIMEOUT_SECONDS = 120.0


# -- errors and results ----------------------------------------------------------------------


@dataclass
class HistoryReport:
    """What one exchange brought this device."""

    pages: int = 0  # pages of ids received
    offered: int = 0  # ids named in them
    fetched: int = 0  # items received
    accepted: int = 0  # of those, taken by the backend
    # The last page came, no limit left an id out, and every id asked for arrived.
    complete: bool = False
    resume: Cursor | None = None  # if not complete: the `after` to go on from (None: since_ms)


class HistoryError(Exception):
    """The exchange did not complete. `report` says what it brought before that (items accepted
    before the error stay)."""

    def __init__(self, message: str, report: HistoryReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class HistoryRefusedError(HistoryError):
    def __init__(self, reason: RefusalReason, report: HistoryReport | None = None) -> None:
        super().__init__(_REFUSAL_TEXT.get(reason, str(reason)), report)
        self.reason = reason


class HistoryProtocolError(HistoryError):
    """The peer broke the protocol: malformed, out of order, out of bounds, not asked for."""


_REFUSAL_TEXT = {
    RefusalReason.NOT_MEMBER: "the peer does not take this device for a member's",
    RefusalReason.UNKNOWN_GROUP: "the peer does not know this group",
    RefusalReason.TOO_MANY_REQUESTS: "the peer refuses: too many requests, try later",
}


def _decode(frame: bytes, report: HistoryReport | None = None) -> HistoryMessage:
    try:
        return decode_message(frame)
    except (msgspec.DecodeError, ValueError) as error:
        raise HistoryProtocolError(f"malformed group-history message: {error}", report) from None


def _order(cursor: Cursor) -> tuple[int, bytes]:
    return cursor.sent_at_ms, cursor.message_id


def page_violation(request: IdsRequest, page: IdsPage) -> str | None:
    """What is wrong with `page` as the answer to `request`, or None."""
    if len(page.ids) > request.limit:
        return f"{len(page.ids)} ids for a limit of {request.limit}"
    previous = request.after
    seen: set[bytes] = set()
    for entry in page.ids:
        if entry.sent_at_ms < request.since_ms:
            return "an id sent before the time asked from"
        cursor = entry.cursor
        if previous is not None and _order(cursor) <= _order(previous):
            return "ids not in ascending order after the cursor asked from"
        if entry.message_id in seen:
            return "an id named twice"
        seen.add(entry.message_id)
        previous = cursor
    if page.next is not None:
        if request.after is not None and _order(page.next) <= _order(request.after):
            return "a next cursor that does not move forward"
        if previous is not None and _order(page.next) < _order(previous):
            return "a next cursor before the page's last id"
    return None


# -- the requester ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OfferedPage:
    """The responder named these ids (in its order): ask the store which are missing, `select`
    and `fetch` them, then `next_page()` if `more`, else `done()`."""

    ids: list[bytes]
    more: bool


@dataclass(frozen=True)
class DeliveredItems:
    """Items for the last fetch (only ids asked for, each once; maybe fewer) and key shares."""

    items: list[HistoryItem]
    keys: list[bytes]


@dataclass(frozen=True)
class Refusal:
    reason: RefusalReason


Action = OfferedPage | DeliveredItems | Refusal


class _RequesterState(Enum):
    START = auto()
    AWAIT_PAGE = auto()
    PAGE = auto()
    AWAIT_ITEMS = auto()
    DONE = auto()


class HistoryRequester:
    """The side that asks: `request()`, then `receive(frame)` for each answer; after a page
    `fetch(ids)` (and `receive` its items) as often as needed, then `next_page()` or `done()`."""

    def __init__(
        self,
        group_id: bytes,
        since_ms: int,
        *,
        after: Cursor | None = None,
        limit: int = MAX_PAGE_IDS,
        max_items: int = MAX_ITEMS_PER_EXCHANGE,
        max_pages: int = MAX_PAGES_PER_EXCHANGE,
    ) -> None:
        if not 1 <= limit <= MAX_PAGE_IDS:
            raise ValueError(f"a page limit is 1..{MAX_PAGE_IDS}")
        self.group_id = group_id
        self.since_ms = since_ms
        self.after = after  # where to start: the next cursor of an exchange cut short
        self.limit = limit
        self.max_items = min(max_items, MAX_ITEMS_PER_EXCHANGE)
        self.max_pages = min(max_pages, MAX_PAGES_PER_EXCHANGE)
        self.report = HistoryReport()
        self._state = _RequesterState.START
        self._request: IdsRequest | None = None
        self._next: Cursor | None = None
        self._page: list[bytes] = []  # the current page's ids, in its order
        self._offered: set[bytes] = set()
        self._asked: set[bytes] = set()  # in the whole exchange
        self._pending: set[bytes] = set()  # asked by the last fetch, not delivered yet
        self._limited = False  # an exchange bound left something out
        self._undelivered = 0

    def _expect(self, state: _RequesterState) -> None:
        if self._state is not state:
            raise HistoryProtocolError(
                f"group history out of order: {self._state.name.lower()}", self.report
            )

    def _ask(self, after: Cursor | None) -> bytes:
        self._request = IdsRequest(
            group_id=self.group_id, since_ms=self.since_ms, after=after, limit=self.limit
        )
        self._state = _RequesterState.AWAIT_PAGE
        return encode_message(self._request)

    def request(self) -> bytes:
        self._expect(_RequesterState.START)
        return self._ask(self.after)

    @property
    def can_page(self) -> bool:
        """After a page: the responder has more, and the exchange's bounds allow a next page."""
        return (
            self._state is _RequesterState.PAGE
            and self._next is not None
            and self.report.pages < self.max_pages
            and not self._limited
        )

    def receive(self, frame: bytes) -> Action:
        """What the responder sent. Raises HistoryProtocolError (then reset the stream)."""
        if self._state is _RequesterState.AWAIT_PAGE:
            return self._receive_page(frame)
        if self._state is _RequesterState.AWAIT_ITEMS:
            return self._receive_items(frame)
        raise HistoryProtocolError(
            f"a group-history frame while {self._state.name.lower()}", self.report
        )

    def _refusal(self, message: Refused) -> Refusal:
        self._state = _RequesterState.DONE
        self.report.complete = False
        return Refusal(message.reason)

    def _receive_page(self, frame: bytes) -> Action:
        message = _decode(frame, self.report)
        if isinstance(message, Refused):
            return self._refusal(message)
        if not isinstance(message, IdsPage):
            raise HistoryProtocolError(f"expected ids, got {type(message).__name__}", self.report)
        assert self._request is not None
        problem = page_violation(self._request, message)
        if problem is not None:
            raise HistoryProtocolError(f"a bad page of ids: {problem}", self.report)
        ids = [entry.message_id for entry in message.ids]
        self._page = ids
        self._offered = set(ids)
        self._next = message.next
        self.report.pages += 1
        self.report.offered += len(ids)
        self._state = _RequesterState.PAGE
        if message.next is not None and self.report.pages >= self.max_pages:
            self._limited = True
            self.report.resume = message.next
        return OfferedPage(ids=ids, more=self.can_page)

    def _receive_items(self, frame: bytes) -> Action:
        message = _decode(frame, self.report)
        if isinstance(message, Refused):
            return self._refusal(message)
        if not isinstance(message, Items):
            raise HistoryProtocolError(f"expected items, got {type(message).__name__}", self.report)
        for item in message.items:
            if item.message_id not in self._pending:
                raise HistoryProtocolError(
                    f"item {item.message_id.hex()} was not asked for (or came twice)", self.report
                )
            self._pending.discard(item.message_id)
        self.report.fetched += len(message.items)
        self._undelivered += len(self._pending)
        self._pending = set()
        self._state = _RequesterState.PAGE
        return DeliveredItems(items=list(message.items), keys=list(message.keys))

    def select(self, ids: Iterable[bytes]) -> list[bytes]:
        """Of `ids` (the ones the store lacks), those the current page offered and not asked for
        yet, in the page's order, within what is left of the exchange's item bound."""
        self._expect(_RequesterState.PAGE)
        lacking = set(ids)
        chosen = [mid for mid in self._page if mid in lacking and mid not in self._asked]
        room = self.max_items - len(self._asked)
        if len(chosen) > room:
            self._limited = True
            assert self._request is not None
            self.report.resume = self._request.after  # this page again: its ids left out
            chosen = chosen[:room]
        return chosen

    def fetch(self, ids: list[bytes]) -> bytes:
        """Ask for 1..MAX_FETCH_IDS ids of the current page (see `select`); ValueError if
        these are not such ids."""
        self._expect(_RequesterState.PAGE)
        if not 1 <= len(ids) <= MAX_FETCH_IDS:
            raise ValueError(f"a fetch names 1..{MAX_FETCH_IDS} ids")
        wanted = set(ids)
        if len(wanted) != len(ids) or not wanted <= self._offered or wanted & self._asked:
            raise ValueError("fetch only ids of this page, each once in an exchange")
        if len(self._asked) + len(ids) > self.max_items:
            raise ValueError(f"an exchange fetches at most {self.max_items} items")
        self._asked |= wanted
        self._pending = wanted
        self._state = _RequesterState.AWAIT_ITEMS
        return encode_message(Fetch(ids=list(ids)))

    def next_page(self) -> bytes:
        self._expect(_RequesterState.PAGE)
        if not self.can_page:
            raise ValueError("no next page to ask for")
        return self._ask(self._next)

    def done(self) -> bytes:
        self._expect(_RequesterState.PAGE)
        self._state = _RequesterState.DONE
        report = self.report
        report.complete = self._next is None and not self._limited and not self._undelivered
        if not report.complete and not self._limited:
            report.resume = self._next  # stopped early: the next page is where to go on
        return encode_message(Done())


# -- the responder ---------------------------------------------------------------------------


class _ResponderState(Enum):
    START = auto()
    PAGING = auto()  # the driver owes an answer_page
    PAGE = auto()
    FETCHING = auto()  # the driver owes an answer_items
    DONE = auto()


class HistoryResponder:
    """The side that answers, for one stream from `peer_id`: `receive(frame)` gives the request
    (IdsRequest, Fetch or Done, checked against the exchange so far); answer an IdsRequest with
    `answer_page` and a Fetch with `answer_items` (the data, or a refusal, from the backend);
    after Done or a refusal (`finished`), close the stream."""

    def __init__(
        self,
        peer_id: str,
        *,
        max_items: int = MAX_ITEMS_PER_EXCHANGE,
        max_pages: int = MAX_PAGES_PER_EXCHANGE,
    ) -> None:
        self.peer_id = peer_id
        self.max_items = max_items
        self.max_pages = max_pages
        self.refused: RefusalReason | None = None
        self.pages = 0
        self.served = 0  # items sent
        self._state = _ResponderState.START
        self._first: IdsRequest | None = None
        self._request: IdsRequest | None = None
        self._next: Cursor | None = None
        self._offered: set[bytes] = set()
        self._asked: set[bytes] = set()
        self._pending: set[bytes] = set()

    @property
    def finished(self) -> bool:
        return self._state is _ResponderState.DONE

    @property
    def group_id(self) -> bytes:
        assert self._first is not None, "no request yet"
        return self._first.group_id

    def receive(self, frame: bytes) -> IdsRequest | Fetch | Done:
        if self._state is _ResponderState.START:
            message = _decode(frame)
            if not isinstance(message, IdsRequest):
                raise HistoryProtocolError(
                    f"expected a request of ids, got {type(message).__name__}"
                )
            self._first = message
            return self._paging(message)
        if self._state is not _ResponderState.PAGE:
            raise HistoryProtocolError(f"a group-history frame while {self._state.name.lower()}")
        message = _decode(frame)
        if isinstance(message, IdsRequest):
            return self._next_page(message)
        if isinstance(message, Fetch):
            return self._fetch(message)
        if isinstance(message, Done):
            self._state = _ResponderState.DONE
            return message
        raise HistoryProtocolError(f"unexpected {type(message).__name__} from the requester")

    def _paging(self, request: IdsRequest) -> IdsRequest:
        if self.pages >= self.max_pages:
            raise HistoryProtocolError(f"more than {self.max_pages} pages in one exchange")
        self._request = request
        self._state = _ResponderState.PAGING
        return request

    def _next_page(self, request: IdsRequest) -> IdsRequest:
        first = self._first
        assert first is not None
        if request.group_id != first.group_id or request.since_ms != first.since_ms:
            raise HistoryProtocolError("a page request for another group or time")
        if self._next is None or request.after != self._next:
            raise HistoryProtocolError("a page request not from the last page's next cursor")
        return self._paging(request)

    def _fetch(self, fetch: Fetch) -> Fetch:
        wanted = set(fetch.ids)
        if len(wanted) != len(fetch.ids):
            raise HistoryProtocolError("a fetch naming an id twice")
        if not wanted <= self._offered:
            raise HistoryProtocolError("a fetch of ids not on the current page")
        if wanted & self._asked:
            raise HistoryProtocolError("a fetch of ids already fetched")
        if len(self._asked) + len(wanted) > self.max_items:
            raise HistoryProtocolError(f"more than {self.max_items} items in one exchange")
        self._asked |= wanted
        self._pending = wanted
        self._state = _ResponderState.FETCHING
        return fetch

    def _refuse(self, reason: RefusalReason) -> bytes:
        self.refused = reason
        self._state = _ResponderState.DONE
        return encode_message(Refused(reason=reason))

    def answer_page(self, result: IdsPage | RefusalReason) -> bytes:
        """The frame answering the last IdsRequest. HistoryError if the backend's page breaks
        the request's bounds (an honest requester would reset the stream)."""
        if self._state is not _ResponderState.PAGING:
            raise HistoryError("no page request to answer")
        if isinstance(result, RefusalReason):
            return self._refuse(result)
        assert self._request is not None
        frame = _checked(result)
        problem = page_violation(self._request, result)
        if problem is not None:
            raise HistoryError(f"the history backend gave a bad page: {problem}")
        self._offered = {entry.message_id for entry in result.ids}
        self._next = result.next
        self.pages += 1
        self._state = _ResponderState.PAGE
        return frame

    def answer_items(self, result: tuple[list[HistoryItem], list[bytes]] | RefusalReason) -> bytes:
        """The frame answering the last Fetch: the items the backend has of those asked for
        (maybe fewer), with key shares. HistoryError if the backend gives others."""
        if self._state is not _ResponderState.FETCHING:
            raise HistoryError("no fetch to answer")
        if isinstance(result, RefusalReason):
            return self._refuse(result)
        items, keys = result
        pending = set(self._pending)
        for item in items:
            if item.message_id not in pending:
                raise HistoryError("the history backend gave an item not asked for")
            pending.discard(item.message_id)
        frame = _checked(Items(items=items, keys=keys))
        self.served += len(items)
        self._pending = set()
        self._state = _ResponderState.PAGE
        return frame


def _checked(message: IdsPage | Items) -> bytes:
    """`message` encoded, if it decodes within the wire's bounds."""
    frame = encode_message(message)
    try:
        decode_message(frame)
    except msgspec.DecodeError as error:
        raise HistoryError(f"the history backend gave an out-of-bounds answer: {error}") from None
    return frame


# -- backends ---------------------------------------------------------------------------------


class RequesterBackend(Protocol):
    async def missing(self, ids: list[bytes]) -> list[bytes]:
        """Which of these message ids this device lacks."""
        ...

    async def take(self, items: list[HistoryItem], keys: list[bytes]) -> int:
        """Store these (key shares first: the items may need them); how many items were
        accepted."""
        ...


class ResponderBackend(Protocol):
    async def page(
        self, peer_id: str, group_id: bytes, since_ms: int, after: Cursor | None, limit: int
    ) -> IdsPage | RefusalReason:
        """Up to `limit` ids of the group's messages sent at or after `since_ms` and after
        `after`, ascending by (sent_at_ms, message_id), with the cursor of the last one as
        `next` if more follow; or a refusal (`peer_id` is no member's device, unknown group)."""
        ...

    async def items(
        self, peer_id: str, group_id: bytes, ids: list[bytes]
    ) -> tuple[list[HistoryItem], list[bytes]] | RefusalReason:
        """The messages of these ids it holds, and the key shares to forward with them (at most
        MAX_KEYS_PER_ITEMS); or a refusal."""
        ...


# -- trio drivers ----------------------------------------------------------------------------

# The stream broke or carried something that is not a frame.
_BROKEN = (StreamError, FrameError)


async def fetch_history(
    net: NetHost,
    peer_id: str,
    group_id: bytes,
    since_ms: int,
    backend: RequesterBackend,
    *,
    after: Cursor | None = None,
    limit: int = MAX_PAGE_IDS,
    max_items: int = MAX_ITEMS_PER_EXCHANGE,
    max_pages: int = MAX_PAGES_PER_EXCHANGE,
    step_timeout: float = STEP_TIMEOUT_SECONDS,
    exchange_timeout: float = EXCHANGE_TIMEOUT_SECONDS,
) -> HistoryReport:
    """Fetch from the member device `peer_id` (its addresses already given to the dialer) the
    messages of `group_id` sent since `since_ms` that `backend` lacks, and give them to it.
    Raises HistoryRefusedError, HistoryProtocolError, or HistoryError (the stream broke, a
    timeout); each carries the report of what was done so far (what the backend took stays). A
    peer that cannot be reached raises DialError or StreamOpenError (p2pid.net) first."""
    requester = HistoryRequester(
        group_id, since_ms, after=after, limit=limit, max_items=max_items, max_pages=max_pages
    )
    report = requester.report
    stream = await net.new_stream(peer_id, [PROTOCOL_ID])
    framed = FramedStream(stream, MAX_FRAME_BYTES)

    async def send(frame: bytes) -> None:
        with trio.fail_after(step_timeout):
            await framed.send(frame)

    async def receive() -> OfferedPage | DeliveredItems:
        with trio.fail_after(step_timeout):
            action = requester.receive(await framed.receive())
        if isinstance(action, Refusal):
            raise HistoryRefusedError(action.reason, report)
        return action

    try:
        with trio.fail_after(exchange_timeout):
            await send(requester.request())
            while True:
                page = await receive()
                assert isinstance(page, OfferedPage)  # the requester checks the order
                wanted = requester.select(await backend.missing(page.ids)) if page.ids else []
                for start in range(0, len(wanted), MAX_FETCH_IDS):
                    await send(requester.fetch(wanted[start : start + MAX_FETCH_IDS]))
                    delivered = await receive()
                    assert isinstance(delivered, DeliveredItems)
                    if delivered.items or delivered.keys:
                        report.accepted += await backend.take(delivered.items, delivered.keys)
                if not requester.can_page:
                    break
                await send(requester.next_page())
            await send(requester.done())
            await framed.finish()
        return report
    except HistoryRefusedError:
        raise
    except HistoryError as error:
        log.info("group history from %s failed: %s", peer_id, error)
        await _reset_quietly(stream)
        error.report = report
        raise
    except _BROKEN as error:
        await _reset_quietly(stream)
        raise HistoryError(f"group history from {peer_id} broke off: {error}", report) from None
    except trio.TooSlowError:
        await _reset_quietly(stream)
        raise HistoryError(f"group history from {peer_id} timed out", report) from None
    finally:
        await close_quietly(stream)


class GroupHistoryServer:
    """The responder's stream handler: `install(net)` serves PROTOCOL_ID with `handle`. Each
    exchange from a peer takes a token of its `limiter`'s bucket."""

    def __init__(
        self,
        backend: ResponderBackend,
        *,
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = trio.current_time,
        max_items: int = MAX_ITEMS_PER_EXCHANGE,
        max_pages: int = MAX_PAGES_PER_EXCHANGE,
        step_timeout: float = STEP_TIMEOUT_SECONDS,
        exchange_timeout: float = EXCHANGE_TIMEOUT_SECONDS,
    ) -> None:
        self._backend = backend
        self.limiter = limiter or RateLimiter()
        self._clock = clock
        self._max_items = max_items
        self._max_pages = max_pages
        self._step_timeout = step_timeout
        self._exchange_timeout = exchange_timeout

    def install(self, net: NetHost) -> None:
        net.set_stream_handler(PROTOCOL_ID, self.handle)

    async def handle(self, stream: Stream) -> None:
        try:
            await self._serve(stream, remote_peer_id(stream))
        finally:
            await close_quietly(stream)

    async def _serve(self, stream: Stream, peer_id: str) -> None:
        framed = FramedStream(stream, MAX_FRAME_BYTES)
        step = self._step_timeout
        if not self.limiter.allow(peer_id, self._clock()):
            log.info("group history: refused %s, too many requests", peer_id)
            with trio.move_on_after(step), contextlib.suppress(*_BROKEN):
                await framed.send(encode_message(Refused(reason=RefusalReason.TOO_MANY_REQUESTS)))
            return
        responder = HistoryResponder(peer_id, max_items=self._max_items, max_pages=self._max_pages)
        backend = self._backend
        try:
            with trio.fail_after(self._exchange_timeout):
                while not responder.finished:
                    with trio.fail_after(step):
                        request = responder.receive(await framed.receive())
                    if isinstance(request, IdsRequest):
                        page = await backend.page(
                            peer_id,
                            request.group_id,
                            request.since_ms,
                            request.after,
                            request.limit,
                        )
                        reply = responder.answer_page(page)
                    elif isinstance(request, Fetch):
                        found = await backend.items(peer_id, responder.group_id, list(request.ids))
                        reply = responder.answer_items(found)
                    else:
                        break
                    with trio.fail_after(step):
                        await framed.send(reply)
            if responder.refused is not None:
                log.info("group history: refused %s: %s", peer_id, responder.refused)
        except (HistoryError, *_BROKEN, trio.TooSlowError) as error:
            log.info("group history for %s closed: %r", peer_id, error)
            await _reset_quietly(stream)


async def _reset_quietly(stream: Stream) -> None:
    with trio.CancelScope(shield=True), contextlib.suppress(Exception):
        await stream.reset()
