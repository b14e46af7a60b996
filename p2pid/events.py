"""Fan-out of the node's events to any number of subscribers (RPC clients), never blocking."""

from __future__ import annotations

import logging
import time

import trio

from p2pid.wire.events import Event

log = logging.getLogger(__name__)
SUBSCRIBER_BUFFER = 1024


def now_ms() -> int:
    return int(time.time() * 1000)


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[trio.MemorySendChannel[Event]] = set()

    def subscribe(self) -> trio.MemoryReceiveChannel[Event]:
        send, receive = trio.open_memory_channel[Event](SUBSCRIBER_BUFFER)
        self._subscribers.add(send)
        return receive

    def publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber.send_nowait(event)
            except trio.WouldBlock:
                log.warning("dropping a subscriber that stopped reading events")
                self._drop(subscriber)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._drop(subscriber)

    def _drop(self, subscriber: trio.MemorySendChannel[Event]) -> None:
        self._subscribers.discard(subscriber)
        subscriber.close()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
