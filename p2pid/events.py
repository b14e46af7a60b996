"""Fan-out of the node's events to any number of subscribers (RPC clients), never blocking."""

from __future__ import annotations

import logging
import time

import trio

from p2pid.wire.events import AnyEvent

log = logging.getLogger(__name__)
SUBSCRIBER_BUFFER = 1024


def now_ms() -> int:
    return int(time.time() * 1000)


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[trio.MemorySendChannel[AnyEvent]] = set()

    def subscribe(self) -> trio.MemoryReceiveChannel[AnyEvent]:
        send, receive = trio.open_memory_channel[AnyEvent](SUBSCRIBER_BUFFER)
        self._subscribers.add(send)
        return receive

    def publish(self, event: AnyEvent) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber.send_nowait(event)
            except trio.WouldBlock:
                log.warning("dropping a subscriber that stopped reading events")
                self._drop(subscriber)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._drop(subscriber)

    def _drop(self, subscriber: trio.MemorySendChannel[AnyEvent]) -> None:
        self._subscribers.discard(subscriber)
        subscriber.close()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
