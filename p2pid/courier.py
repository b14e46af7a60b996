"""The courier: delivers the outbox, one task per device with envelopes waiting.

Each task keeps one `/p2pid/msg/1` stream open to its device and sends the device's envelopes
oldest first, one batch at a time. An envelope leaves the outbox only when the device's
acknowledgement gives it a final result. Failures back off (with jitter) up to a minute, and any
`kick` (a new message, the device connecting or being discovered) cuts the wait short.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import trio

from p2pid.net import NetError, describe_error
from p2pid.net.host import NetHost
from p2pid.protocols.messaging import DeliveryLink, MessageProtocolError
from p2pid.store import messages as message_queries
from p2pid.store.db import Connection
from p2pid.store.messages import OutboxEntry
from p2pid.store.trio_store import TrioStore
from p2pid.wire.messages import MAX_BATCH, MAX_BATCH_BYTES, Result, decode_envelope

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 60.0
MAX_DOUBLINGS = 7  # 0.5 s * 2**7 is past the cap already
IDLE_LINK_SECONDS = 30.0  # an idle stream is kept this long for the next message

EXPECTED_FAILURES = (NetError, MessageProtocolError, trio.TooSlowError, trio.BrokenResourceError)
FINAL_RESULTS = frozenset({Result.STORED, Result.DUPLICATE, Result.REJECTED})

# Called inside a store write with the device's entries that came back NO_SESSION: re-encrypt
# them (and what follows them in the outbox) under a new session.
Rekey = Callable[[Connection, str, Sequence[OutboxEntry]], None]
# Called inside the same store write with the entries the device refused for good (already
# out of the outbox); returns what to do once that write is committed (e.g. announce it).
GiveUp = Callable[[Connection, str, Sequence[OutboxEntry]], Callable[[], None]]


def backoff_seconds(failures: int) -> float:
    """0.5 s, 1 s, 2 s, ... up to a minute, each with up to +-25 % jitter."""
    doublings = min(max(0, failures - 1), MAX_DOUBLINGS)
    base = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2.0**doublings)
    jitter: float = random.uniform(0.75, 1.25)
    return base * jitter


@dataclass
class _DeviceTask:
    wake: trio.Event = field(default_factory=trio.Event)
    backing_off: bool = False


class Courier:
    def __init__(self, *, store: TrioStore, net: NetHost, rekey: Rekey, give_up: GiveUp) -> None:
        self._store = store
        self._net = net
        self._rekey = rekey
        self._give_up = give_up
        self._tasks: dict[str, _DeviceTask] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for peer_id in await self._store.read(message_queries.devices_with_pending):
                self.kick(peer_id)
            task_status.started()
            await trio.sleep_forever()

    def kick(self, peer_id: str, *, reachable: bool = False) -> None:
        """Deliver to this device: start its task, or wake it from its idle wait. Only news that
        the device is `reachable` (it connected, it was discovered) cuts a backoff short: more
        messages for a device that is away do not make the courier knock harder."""
        task = self._tasks.get(peer_id)
        if task is not None:
            if reachable or not task.backing_off:
                task.wake.set()
        elif self._nursery is not None:
            self._tasks[peer_id] = _DeviceTask()
            self._nursery.start_soon(self._deliver, peer_id)

    async def _deliver(self, peer_id: str) -> None:
        try:
            await self._deliver_until_done(peer_id)
        except Exception:  # one device's failure never stops the courier; a kick restarts it
            log.exception("delivery to %s stopped", peer_id)
        finally:
            del self._tasks[peer_id]

    async def _deliver_until_done(self, peer_id: str) -> None:
        task = self._tasks[peer_id]
        link: DeliveryLink | None = None
        failures = 0
        try:
            while True:
                task.wake = trio.Event()  # a kick from here on is not lost
                entries = await self._store.read(
                    lambda conn: message_queries.pending_for_device(
                        conn, peer_id, MAX_BATCH, MAX_BATCH_BYTES
                    )
                )
                if not entries:
                    if link is None:
                        return
                    with trio.move_on_after(IDLE_LINK_SECONDS) as idle:
                        await task.wake.wait()
                    if idle.cancelled_caught:
                        return
                    continue
                try:
                    if link is None:
                        link = await DeliveryLink.open(self._net, peer_id)
                    results = await link.deliver([decode_envelope(e.envelope) for e in entries])
                except Exception as error:  # any failure of this attempt: back off, try again
                    if not isinstance(error, EXPECTED_FAILURES):
                        log.warning("delivery to %s: %s", peer_id, describe_error(error))
                    if link is not None:
                        await link.aclose()
                        link = None
                    failures += 1
                    log.debug(
                        "delivery to %s failed (%d): %s", peer_id, failures, describe_error(error)
                    )
                    await self._wait(task, backoff_seconds(failures))
                    continue
                after_commit = await self._store.write(
                    partial(self._settle, peer_id=peer_id, entries=entries, results=results)
                )
                after_commit()
                if Result.NO_SESSION in results or Result.RETRY in results:
                    # Re-keyed or refused for now: a device that keeps refusing is not hammered.
                    failures += 1
                    await self._wait(task, backoff_seconds(failures))
                else:
                    failures = 0
        finally:
            if link is not None:
                await link.aclose()

    async def _wait(self, task: _DeviceTask, seconds: float) -> None:
        task.backing_off = True
        try:
            with trio.move_on_after(seconds):
                await task.wake.wait()
        finally:
            task.backing_off = False

    def _settle(
        self,
        conn: Connection,
        peer_id: str,
        entries: Sequence[OutboxEntry],
        results: Sequence[Result],
    ) -> Callable[[], None]:
        answered = list(zip(entries, results, strict=True))
        done = [entry.id for entry, result in answered if result in FINAL_RESULTS]
        message_queries.remove_from_outbox(conn, done)
        retry = [entry.id for entry, result in answered if result is Result.RETRY]
        message_queries.count_attempt(conn, retry)
        no_session = [entry for entry, result in answered if result is Result.NO_SESSION]
        if no_session:
            self._rekey(conn, peer_id, no_session)
        refused = [entry for entry, result in answered if result is Result.REJECTED]
        return self._give_up(conn, peer_id, refused) if refused else _nothing


def _nothing() -> None:
    pass
