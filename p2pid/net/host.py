"""NetHost: the one wrapper around a py-libp2p 0.8.1 host (TCP, Noise only, Yamux).

Everything p2pid does with libp2p goes through here, so the rules learned about py-libp2p
live in one place: Noise only (the default also accepts /plaintext/2.0.0), one connection
per peer, guarded stream handlers (an exception escaping a handler kills the host), a
shielded ``host.close()`` inside ``host.run()``, no built-in mDNS, no built-in auto-dialing,
and dialing through ``Dialer`` instead of py-libp2p's negative-cached ``dial_peer``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

import multiaddr
import trio
from libp2p import new_swarm
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost
from libp2p.host.ping import ID as PING_PROTOCOL_ID
from libp2p.host.ping import PING_LENGTH
from libp2p.identity.identify.identify import ID as IDENTIFY_PROTOCOL_ID
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.io.utils import read_exactly
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.network.stream.exceptions import StreamClosed, StreamEOF, StreamError, StreamReset
from libp2p.network.stream.net_stream import NetStream
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.utils.varint import read_length_prefixed_protobuf

from p2pid.net import IdentifyError, NetError, PingError, StreamOpenError, describe_error
from p2pid.net.dialer import Dialer, DialPolicy
from p2pid.net.logbridge import install_libp2p_log_bridge

__all__ = [
    "IDENTIFY_PROTOCOL_ID",
    "PING_PROTOCOL_ID",
    "ConnectionEvent",
    "IdentifyInfo",
    "NetHost",
    "Stream",
    "StreamClosed",
    "StreamEOF",
    "StreamError",
    "StreamHandler",
    "StreamReset",
    "close_write",
    "peer_id_from_seed",
    "remote_peer_id",
]

logger = logging.getLogger(__name__)

Stream: TypeAlias = INetStream
StreamHandler: TypeAlias = Callable[[Stream], Awaitable[None]]

DEVICE_SEED_LENGTH = 32
CLOSE_TIMEOUT = 5.0
PING_TIMEOUT = 10.0
IDENTIFY_TIMEOUT = 10.0
IDENTIFY_RETRY_PAUSES = (0.05, 0.2)
IDENTIFY_MAX_SIZE = 64 * 1024
CONNECTION_EVENT_BUFFER = 256


class ConnectionEvent(NamedTuple):
    """A peer went from no connection to connected (``connected``) or back."""

    peer_id: str
    connected: bool


@dataclass(frozen=True)
class IdentifyInfo:
    """What a peer told us about itself over /ipfs/id/1.0.0."""

    peer_id: str
    agent_version: str
    protocol_version: str
    protocols: tuple[str, ...]
    listen_addrs: tuple[str, ...]
    observed_addr: str | None


def peer_id_from_seed(device_seed: bytes) -> str:
    """The base58 PeerId a NetHost opened with ``device_seed`` will have."""
    return str(ID.from_pubkey(_device_key_pair(device_seed).public_key))


async def close_write(stream: Stream) -> None:
    """Half-close: send EOF, keep reading (the request/response pattern)."""
    if isinstance(stream, NetStream):
        await stream.close_write()
    else:
        await stream.close()


def remote_peer_id(stream: Stream) -> str:
    """The base58 PeerId at the other end of ``stream``."""
    return str(stream.muxed_conn.peer_id)


class NetHost:
    """A running libp2p host. Get one with ``async with NetHost.open(seed, addrs) as net``."""

    def __init__(self, host: BasicHost, swarm: Swarm, dial_policy: DialPolicy | None) -> None:
        self._host = host
        self._swarm = swarm
        self._peer_id = str(host.get_id())
        self._dialer = Dialer(_SwarmAddressDialer(swarm), dial_policy)
        self._connected: set[str] = set()
        self._event_subscribers: list[trio.MemorySendChannel[ConnectionEvent]] = []
        self._ping_streams: dict[str, Stream] = {}
        self._ping_locks: dict[str, trio.Lock] = {}
        self._identified: dict[str, IdentifyInfo] = {}
        swarm.register_notifee(_ConnectionNotifee(self._on_connection_change))

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        device_seed: bytes,
        listen_addrs: Sequence[str],
        *,
        dial_policy: DialPolicy | None = None,
    ) -> AsyncIterator[NetHost]:
        """Run a host whose PeerId derives from ``device_seed``, listening on ``listen_addrs``
        (e.g. "/ip4/127.0.0.1/tcp/0"); closed, with its ports released, on exit."""
        install_libp2p_log_bridge()
        requested = [_parse_multiaddr(addr) for addr in listen_addrs]
        for addr in requested:
            _ensure_port_free(addr)
        host, swarm = _build_host(device_seed)
        net = cls(host, swarm, dial_policy)
        inner_error: BaseException | None = None
        sole_error: BaseException | None = None
        try:
            async with host.run(listen_addrs=requested):
                try:
                    _check_listening(swarm, requested)
                    # The auto-connector redials every peer in the peerstore (negative cache
                    # and all): p2pid decides whom to dial.
                    await swarm.auto_connector.stop()
                    yield net
                except BaseException as exc:
                    inner_error = exc
                    raise
                finally:
                    await _close_shielded(host)
        except BaseExceptionGroup as group:
            # host.run() nests nurseries that wrap any error from in here in groups.
            if inner_error is None or _leaves(group) != [inner_error]:
                raise
            sole_error = inner_error
        if sole_error is not None:
            raise sole_error

    # -- identity and addresses ------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        return self._peer_id

    def listen_addrs(self) -> list[str]:
        """The bound addresses (ports resolved), without /p2p suffix."""
        return [str(addr) for addr in self._host.get_transport_addrs()]

    def add_addrs(self, peer_id: str, addrs: Iterable[str]) -> None:
        """Remember addresses for ``peer_id``; a trailing /p2p/<peer_id> is accepted.
        Unspecified addresses (0.0.0.0, ::) are ignored. Raises ValueError on a malformed
        address or one naming another peer."""
        _parse_peer_id(peer_id)
        dialable = [_dialable_addr(peer_id, addr) for addr in addrs]
        self._dialer.add_addrs(peer_id, [addr for addr in dialable if addr is not None])

    def known_addrs(self, peer_id: str) -> list[str]:
        """The addresses the dialer knows for ``peer_id``, in the order it would try them."""
        return self._dialer.known_addrs(peer_id)

    def forget_peer(self, peer_id: str) -> None:
        self._dialer.forget(peer_id)
        self._identified.pop(peer_id, None)

    # -- connections -----------------------------------------------------------------------

    async def connect(self, peer_id: str) -> None:
        """Connect through the known addresses (see add_addrs); raises DialError once the
        dial policy's connect_timeout has passed."""
        if peer_id == self._peer_id:
            raise NetError("cannot connect to ourselves")
        _parse_peer_id(peer_id)
        await self._dialer.connect(peer_id)

    async def disconnect(self, peer_id: str) -> None:
        await self._host.disconnect(_parse_peer_id(peer_id))

    def connected_peers(self) -> list[str]:
        return [str(peer) for peer, conns in self._swarm.connections.items() if _any_open(conns)]

    def is_connected(self, peer_id: str) -> bool:
        return _any_open(self._swarm.get_connections(_parse_peer_id(peer_id)))

    def connection_events(
        self, buffer: int = CONNECTION_EVENT_BUFFER
    ) -> trio.MemoryReceiveChannel[ConnectionEvent]:
        """A channel of peer connect/disconnect transitions from now on. Close it to
        unsubscribe. Events are dropped (with a warning) while its buffer is full."""
        send, receive = trio.open_memory_channel[ConnectionEvent](buffer)
        self._event_subscribers.append(send)
        return receive

    # -- streams ---------------------------------------------------------------------------

    def set_stream_handler(self, protocol_id: str, handler: StreamHandler) -> None:
        """Serve ``protocol_id``. The handler owns the stream; an exception escaping it is
        logged and the stream reset, the host keeps running."""
        self._host.set_stream_handler(TProtocol(protocol_id), _guarded(protocol_id, handler))

    def remove_stream_handler(self, protocol_id: str) -> None:
        self._host.remove_stream_handler(TProtocol(protocol_id))

    async def new_stream(self, peer_id: str, protocol_ids: Sequence[str]) -> Stream:
        """Open a stream speaking the first of ``protocol_ids`` the peer accepts, connecting
        first if needed. Raises DialError or StreamOpenError."""
        await self.connect(peer_id)
        try:
            return await self._host.new_stream(
                _parse_peer_id(peer_id), [TProtocol(p) for p in protocol_ids]
            )
        except Exception as exc:
            raise StreamOpenError(
                f"cannot open a stream for {list(protocol_ids)} to {peer_id}: {describe_error(exc)}"
            ) from exc

    # -- ping and identify -----------------------------------------------------------------

    async def ping(self, peer_id: str) -> float:
        """One /ipfs/ping/1.0.0 round trip, in seconds; PingError after PING_TIMEOUT.
        The ping stream is kept open per peer."""
        lock = self._ping_locks.setdefault(peer_id, trio.Lock())
        # One ping at a time per stream. A free lock is taken without the scheduling point
        # of ``async with lock``, which costs ~1.5 % of a loopback round trip.
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()
        try:
            return await self._ping_on_kept_stream(peer_id)
        finally:
            lock.release()

    async def identify(self, peer_id: str) -> IdentifyInfo:
        """Ask the peer over /ipfs/id/1.0.0; the answer is also kept for identify_info()."""
        # py-libp2p runs an identify of its own on every new connection, and js-libp2p resets
        # a second identify stream while the first is open: pause and retry.
        for pause in IDENTIFY_RETRY_PAUSES:
            with contextlib.suppress(StreamOpenError, IdentifyError):
                return await self._identify_once(peer_id)
            await trio.sleep(pause)
        return await self._identify_once(peer_id)

    def identify_info(self, peer_id: str) -> IdentifyInfo | None:
        """The last answer identify() got from ``peer_id``, if any."""
        return self._identified.get(peer_id)

    # -- internals -------------------------------------------------------------------------

    async def _identify_once(self, peer_id: str) -> IdentifyInfo:
        stream = await self.new_stream(peer_id, [IDENTIFY_PROTOCOL_ID])
        try:
            with trio.fail_after(IDENTIFY_TIMEOUT):
                message = await read_length_prefixed_protobuf(stream, max_length=IDENTIFY_MAX_SIZE)
            info = _identify_info(peer_id, message)
        except Exception as exc:
            await _reset_quietly(stream)
            raise IdentifyError(f"identify of {peer_id} failed: {describe_error(exc)}") from exc
        await _close_quietly(stream)
        self._identified[peer_id] = info
        return info

    async def _ping_on_kept_stream(self, peer_id: str) -> float:
        with trio.move_on_after(PING_TIMEOUT):
            kept = self._ping_streams.get(peer_id)
            if kept is not None:
                with contextlib.suppress(_PingStreamBroken):
                    # The responder closes a ping stream idle for 10 s: retry on a new one.
                    return await self._ping_round_trip(peer_id, kept)
            stream = await self.new_stream(peer_id, [PING_PROTOCOL_ID])
            self._ping_streams[peer_id] = stream
            try:
                return await self._ping_round_trip(peer_id, stream)
            except _PingStreamBroken as exc:
                raise PingError(f"ping to {peer_id} failed: {exc}") from exc.__cause__
        await self._drop_ping_stream(peer_id)
        raise PingError(f"no pong from {peer_id} within {PING_TIMEOUT} s")

    async def _ping_round_trip(self, peer_id: str, stream: Stream) -> float:
        payload = secrets.token_bytes(PING_LENGTH)
        try:
            started = time.perf_counter()
            await stream.write(payload)
            echoed = await read_exactly(stream, PING_LENGTH)
            round_trip = time.perf_counter() - started
        except Exception as exc:
            await self._drop_ping_stream(peer_id)
            raise _PingStreamBroken(describe_error(exc)) from exc
        if echoed != payload:
            await self._drop_ping_stream(peer_id)
            raise _PingStreamBroken("the pong does not match the ping")
        return round_trip

    async def _drop_ping_stream(self, peer_id: str) -> None:
        stream = self._ping_streams.pop(peer_id, None)
        if stream is not None:
            await _reset_quietly(stream)

    def _on_connection_change(self, conn: INetConn, up: bool) -> None:
        peer_id = str(conn.muxed_conn.peer_id)
        if up and peer_id not in self._connected:
            self._connected.add(peer_id)
            self._dialer.peer_connected(peer_id)
            self._publish(ConnectionEvent(peer_id, connected=True))
        elif not up and peer_id in self._connected and not self.is_connected(peer_id):
            self._connected.discard(peer_id)
            self._ping_streams.pop(peer_id, None)
            self._publish(ConnectionEvent(peer_id, connected=False))

    def _publish(self, event: ConnectionEvent) -> None:
        for subscriber in list(self._event_subscribers):
            try:
                subscriber.send_nowait(event)
            except trio.WouldBlock:
                logger.warning("connection event dropped, subscriber not keeping up: %s", event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._event_subscribers.remove(subscriber)


class _PingStreamBroken(Exception):
    pass


class _SwarmAddressDialer:
    """The Dialer's view of the swarm: dial exactly one address, bypassing dial_peer()."""

    def __init__(self, swarm: Swarm) -> None:
        self._swarm = swarm

    def is_connected(self, peer_id: str) -> bool:
        return _any_open(self._swarm.get_connections(ID.from_base58(peer_id)))

    async def dial_address(self, peer_id: str, addr: str) -> None:
        peer = ID.from_base58(peer_id)
        # Swarm.dial_peer() refuses, for 60 s, a peer whose dial once failed (its
        # _NegativePeerCache); dial_addr() ignores that cache, but clear it anyway for the
        # code paths that do go through dial_peer() (Swarm.new_stream on a lost connection).
        self._swarm.unblock_peer(peer)
        await self._swarm.dial_addr(multiaddr.Multiaddr(addr), peer)


class _ConnectionNotifee(INotifee):
    def __init__(self, on_change: Callable[[INetConn, bool], None]) -> None:
        self._on_change = on_change

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._on_change(conn, True)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._on_change(conn, False)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


def _device_key_pair(device_seed: bytes) -> KeyPair:
    if len(device_seed) != DEVICE_SEED_LENGTH:
        raise ValueError(f"the device seed must be {DEVICE_SEED_LENGTH} bytes")
    return create_new_key_pair(device_seed)


def _build_host(device_seed: bytes) -> tuple[BasicHost, Swarm]:
    key_pair = _device_key_pair(device_seed)
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    swarm = new_swarm(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        # One try per address: the Dialer retries, over every address, with its own backoff.
        retry_config=RetryConfig(max_retries=0),
        # The default (3) makes every dial_peer() wait 250 ms for a second connection.
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )
    if not isinstance(swarm, Swarm):
        raise TypeError(f"py-libp2p returned an unexpected network: {type(swarm).__name__}")
    # BasicHost registers identify, identify/push and ping itself.
    return BasicHost(network=swarm, enable_mDNS=False, enable_upnp=False), swarm


def _ensure_port_free(addr: multiaddr.Multiaddr) -> None:
    """py-libp2p listens with SO_REUSEPORT, so a second host binds a taken port without
    error and the kernel splits the inbound connections between them: bind a plain socket
    first to find out."""
    port = _value_or_none(addr, "tcp")
    ip4, ip6 = _value_or_none(addr, "ip4"), _value_or_none(addr, "ip6")
    if port is None or int(port) == 0 or (ip4 or ip6) is None:
        return
    family = socket.AF_INET6 if ip6 is not None else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip6 or ip4, int(port)))
        except OSError as exc:
            raise NetError(f"cannot listen on {addr}: {exc.strerror}") from exc


def _check_listening(swarm: Swarm, requested: Sequence[multiaddr.Multiaddr]) -> None:
    # Swarm.listen() only logs a failed bind (port in use...) at debug level.
    for addr in requested:
        if str(addr) not in swarm.listeners:
            raise NetError(f"cannot listen on {addr}")


async def _close_shielded(host: BasicHost) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT) as timeout:
        await host.close()
    if timeout.cancelled_caught:
        logger.warning("the libp2p host took over %s s to close", CLOSE_TIMEOUT)


def _guarded(protocol_id: str, handler: StreamHandler) -> StreamHandler:
    async def guarded_handler(stream: Stream) -> None:
        try:
            await handler(stream)
        except StreamError as exc:
            logger.info("%s stream from %s ended: %r", protocol_id, remote_peer_id(stream), exc)
            await _reset_quietly(stream)
        except Exception:
            logger.exception(
                "%s handler failed on a stream from %s", protocol_id, remote_peer_id(stream)
            )
            await _reset_quietly(stream)

    return guarded_handler


async def _reset_quietly(stream: Stream) -> None:
    with contextlib.suppress(Exception):
        await stream.reset()


async def _close_quietly(stream: Stream) -> None:
    with contextlib.suppress(Exception):
        await stream.close()


async def close_quietly(stream: Stream) -> None:
    """Close a stream even from a cancelled scope; one already gone is closed enough."""
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
        await _close_quietly(stream)


def _any_open(conns: Iterable[INetConn]) -> bool:
    return any(not conn.is_closed for conn in conns)


def _identify_info(peer_id: str, message: bytes) -> IdentifyInfo:
    identify = Identify()
    identify.ParseFromString(message)
    return IdentifyInfo(
        peer_id=peer_id,
        agent_version=identify.agent_version,
        protocol_version=identify.protocol_version,
        protocols=tuple(identify.protocols),
        listen_addrs=tuple(str(multiaddr.Multiaddr(raw)) for raw in identify.listen_addrs),
        observed_addr=(
            str(multiaddr.Multiaddr(identify.observed_addr)) if identify.observed_addr else None
        ),
    )


def _parse_peer_id(peer_id: str) -> ID:
    try:
        peer = ID.from_base58(peer_id)
    except Exception as exc:
        raise ValueError(f"not a PeerId: {peer_id!r}") from exc
    if not _is_multihash(peer.to_bytes()):
        raise ValueError(f"not a PeerId: {peer_id!r}")
    return peer


def _is_multihash(raw: bytes) -> bool:
    # PeerIds are identity (0x00) or sha2-256 (0x12) multihashes: code, length, digest.
    return len(raw) > 2 and raw[0] in (0x00, 0x12) and raw[1] == len(raw) - 2


def _parse_multiaddr(addr: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(addr)
    except Exception as exc:
        raise ValueError(f"not a multiaddr: {addr!r} ({exc})") from exc


def _dialable_addr(peer_id: str, addr: str) -> str | None:
    """``addr`` without its /p2p/<peer_id> suffix, or None if it cannot be dialled."""
    parsed = _parse_multiaddr(addr)
    protocols = {protocol.name: protocol for protocol in parsed.protocols()}
    if "p2p" in protocols:
        named_peer = parsed.value_for_protocol("p2p")
        if named_peer != peer_id:
            raise ValueError(f"{addr} names peer {named_peer}, not {peer_id}")
        parsed = parsed.decapsulate(multiaddr.Multiaddr(f"/p2p/{named_peer}"))
    host = _value_or_none(parsed, "ip4") or _value_or_none(parsed, "ip6")
    if host in {"0.0.0.0", "::"}:
        return None
    return str(parsed)


def _value_or_none(addr: multiaddr.Multiaddr, protocol: str) -> str | None:
    try:
        value = addr.value_for_protocol(protocol)
    except Exception:
        return None
    return str(value) if value is not None else None


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
