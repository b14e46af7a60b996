"""Serving files (issue 8): who may fetch which file, from which file on disk (the original of a
file I sent, or the complete or partial copy of a group file I received), and the direct TCP
listener that `/p2pid/file/1` hands out tokens for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from p2pid.files.meter import Meter
from p2pid.files.storage import FileSource
from p2pid.files.transport import BulkServer, ChunkSource
from p2pid.net.host import Stream
from p2pid.protocols.file_transfer import serve_file_stream
from p2pid.store import contacts as contact_queries
from p2pid.store import files as file_queries
from p2pid.store.db import Connection
from p2pid.store.files import TransferRow
from p2pid.store.trio_store import TrioStore
from p2pid.wire.events import Event
from p2pid.wire.file_transfer import MAX_ENDPOINTS, Endpoint, Refused
from p2pid.wire.files import decode_offer

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from p2pid.groups.service import Groups


class FileServer:
    def __init__(
        self,
        *,
        store: TrioStore,
        groups: Groups,
        publish: Callable[[Event], None],
        addrs: Callable[[], list[str]],
        listen: Sequence[str],
    ) -> None:
        self._store = store
        self._groups = groups
        self._publish = publish
        self._addrs = addrs
        self._bulk = BulkServer(bulk_host(listen))
        self._meters: dict[bytes, Meter] = {}
        self._served: dict[bytes, int] = {}  # bytes served since the daemon started
        self._sizes: dict[bytes, int] = {}  # of the files served

    async def run(self, *, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await self._bulk.run(task_status=task_status)

    async def serve(self, stream: Stream) -> None:
        await serve_file_stream(stream, self._lookup, self._bulk, self._endpoints, self._on_sent)

    def close_file(self, file_id: bytes) -> None:
        """Stop serving the file now (on every connection) and refuse its unused tokens."""
        self._bulk.close_file(file_id)

    def served(self, file_id: bytes) -> int:
        return self._served.get(file_id, 0)

    async def _lookup(self, file_id: bytes, peer_id: str) -> ChunkSource | Refused:
        def read(conn: Connection) -> tuple[TransferRow | None, bool]:
            row = file_queries.get_transfer(conn, file_id)
            if row is None:
                return None, False
            person = contact_queries.contact_for_peer(
                conn, peer_id, include_self=False, include_group_only=True
            )
            allowed = person is not None and not person.blocked
            if allowed and person is not None:
                if row.group_id is not None:
                    allowed = self._groups.is_member(row.group_id, person.identity_key)
                else:
                    allowed = row.direction == "out" and person.identity_key == row.peer_identity
            return row, allowed

        row, allowed = await self._store.read(read)
        if row is None:
            return Refused(reason="unknown", message="no such file here")
        if not allowed:
            return Refused(reason="not_allowed", message="this file was not offered to you")
        if row.state == "cancelled":
            return Refused(reason="cancelled", message="the transfer was cancelled")
        offer = decode_offer(row.offer)
        self._sizes[file_id] = offer.size
        try:
            if row.direction == "out" or row.state == "complete":
                return await trio.to_thread.run_sync(
                    lambda: FileSource(offer, row.path, row.manifest, mtime_ns=row.path_mtime_ns)
                )
            if row.part_path and row.manifest and any(row.bitmap):
                return await trio.to_thread.run_sync(
                    lambda: FileSource(offer, row.part_path, row.manifest, have=row.bitmap)
                )
        except OSError as error:
            return Refused(reason="changed", message=f"the file is not available: {error}")
        return Refused(reason="unknown", message="no verified chunks of this file here")

    def _endpoints(self) -> list[Endpoint]:
        port = self._bulk.port
        hosts: list[str] = []
        for addr in self._addrs():
            parts = addr.split("/")
            if len(parts) > 2 and parts[1] == "ip4" and parts[2] not in hosts:
                hosts.append(parts[2])
        return [Endpoint(host, port) for host in hosts[:MAX_ENDPOINTS]]

    def _on_sent(self, file_id: bytes, count: int) -> None:
        self._served[file_id] = self._served.get(file_id, 0) + count
        meter = self._meters.get(file_id)
        if meter is None:
            size = self._sizes.get(file_id)
            if size is None:
                return
            meter = self._meters[file_id] = Meter(size)
        meter.add(count)
        if meter.due():
            self._publish(meter.event(file_id, "out"))


def bulk_host(listen_addrs: Sequence[str]) -> str:
    """Where libp2p listens: its one IPv4 address, else every interface."""
    hosts = {addr.split("/")[2] for addr in listen_addrs if addr.startswith("/ip4/")}
    return hosts.pop() if len(hosts) == 1 else "0.0.0.0"
