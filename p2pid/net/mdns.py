"""LAN discovery over mDNS / DNS-SD, the libp2p way, with python-zeroconf kept off the trio thread.

Wire convention (the libp2p mDNS spec, so that other libp2p nodes see p2pid nodes):

- service type ``_p2p._udp.local.``, a random instance name (lowercase letters and digits);
- one TXT string ``dnsaddr=<multiaddr>/p2p/<peer id>`` per address we can be dialed on;
- p2pid's own ``key=value`` TXT strings next to them (``fields``), which other libp2p nodes ignore.

Threads:

- the trio thread runs :meth:`MdnsDiscovery.run` and never calls zeroconf itself;
- trio worker threads (``trio.to_thread.run_sync``) start, register, update and close zeroconf;
- zeroconf's ``ServiceBrowser`` thread resolves each changed service, parses its TXT record and
  updates a :class:`_PeerTracker`; the events that come out are handed to trio with
  ``trio.from_thread.run_sync`` and the run's trio token, into an unbounded internal channel that
  ``run`` forwards to the caller. Neither side ever blocks the other.
- every ``recheck_interval`` a worker thread re-resolves the services seen, so that a node that
  vanished without a goodbye is reported lost once its records expire (see _BrowserHandler).

Interfaces are given by name (``"lo"``, ``"eth0"``) and resolved to their IPv4 addresses with
``ifaddr``; ``None`` means every interface. zeroconf sends only on those interfaces, but on its
own would also hear (and answer by unicast) every interface where any socket of the host joined
the mDNS group; see :func:`_sockets_hearing_only_joined_interfaces` for how that is prevented.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import logging
import math
import re
import secrets
import socket
import string
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING

import ifaddr
import multiaddr.exceptions
import trio
import zeroconf._utils.net as zeroconf_net
from multiaddr import Multiaddr
from multiaddr.protocols import P_IP4, P_IP6, P_P2P
from zeroconf import (
    InterfaceChoice,
    IPVersion,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

if TYPE_CHECKING:
    # libp2p pulls in trio-typing, whose outdated trio-stubs shadow trio's own annotations for
    # mypy and lack trio.TaskStatus; at run time annotations are not evaluated.
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

SERVICE_TYPE = "_p2p._udp.local."
DNSADDR_KEY = "dnsaddr"
DEFAULT_TTL = 120
"""Seconds our records live in other nodes' caches. A p2pid node that vanishes without a goodbye
is reported lost by other p2pid nodes about this long plus a recheck interval later."""
RESOLVE_TIMEOUT_MS = 3000
RECHECK_INTERVAL = 30.0
"""Seconds between rechecks of the listed services (see _BrowserHandler)."""
RECHECK_TIMEOUT_MS = 1500
MAX_TXT_STRING = 255
FALLBACK_PORT = 4001
"""The SRV port when no address has one; libp2p readers take addresses from TXT, not SRV."""

_DNSADDR_KEY_PATTERN = re.compile(rb"dnsaddr[0-9]*", re.IGNORECASE)
"""``dnsaddr`` per the spec; ``dnsaddr2``, ``dnsaddr3``... are how py-libp2p 0.8.1 writes them."""
_INSTANCE_ALPHABET = string.ascii_lowercase + string.digits
_LINUX_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # not in Python 3.11
_ZEROCONF_SOCKETS_LOCK = threading.Lock()
_MULTIADDR_ERRORS = (ValueError, LookupError, multiaddr.exceptions.Error)
_NO_FIELDS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class DiscoveredPeer:
    """A peer seen on the LAN, or seen again with other addresses or fields."""

    peer_id: str
    addrs: tuple[str, ...]
    """Multiaddrs without the ``/p2p/`` suffix, e.g. ``"/ip4/127.0.0.1/tcp/4001"``."""
    fields: Mapping[str, str] = field(hash=False)
    """p2pid's extra TXT fields (``key=value`` strings other than ``dnsaddr``)."""


@dataclass(frozen=True)
class PeerLost:
    """No service on the LAN advertises this peer any more (goodbye, or expired and silent)."""

    peer_id: str


MdnsEvent = DiscoveredPeer | PeerLost


# --- interfaces ---------------------------------------------------------------------------------


def resolve_interfaces(names: Sequence[str]) -> list[str]:
    """The IPv4 addresses of the network interfaces with these names, in order, without repeats.

    Raises ValueError for a name that is not an interface here or that has no IPv4 address.
    """
    adapters = {adapter.name: adapter for adapter in ifaddr.get_adapters()}
    addresses: list[str] = []
    for name in names:
        adapter = adapters.get(name)
        if adapter is None:
            known = ", ".join(sorted(adapters)) or "none"
            raise ValueError(f"unknown network interface {name!r} (interfaces here: {known})")
        ipv4 = _ipv4_addresses_of(adapter)
        if not ipv4:
            raise ValueError(f"network interface {name!r} has no IPv4 address")
        addresses.extend(ipv4)
    return list(dict.fromkeys(addresses))


def _ipv4_addresses_of(adapter: ifaddr.Adapter) -> list[str]:
    return [ip.ip for ip in adapter.ips if ip.is_IPv4 and isinstance(ip.ip, str)]


def all_ipv4_addresses() -> list[str]:
    addresses = (a for adapter in ifaddr.get_adapters() for a in _ipv4_addresses_of(adapter))
    return list(dict.fromkeys(addresses))


# --- multiaddrs and peer ids --------------------------------------------------------------------


def _parse_multiaddr(text: str) -> Multiaddr | None:
    try:
        return Multiaddr(text)
    except _MULTIADDR_ERRORS:
        return None


def normalize_peer_id(peer_id: str) -> str:
    """The canonical (base58) form of a PeerId string; ValueError if it is not one."""
    parsed = _parse_multiaddr(f"/p2p/{peer_id}")
    if parsed is None or "/" in peer_id:
        raise ValueError(f"not a libp2p PeerId: {peer_id!r}")
    return str(parsed.value_for_protocol(P_P2P))


def _is_unspecified(address: Multiaddr) -> bool:
    return any(
        protocol.code in (P_IP4, P_IP6) and ipaddress.ip_address(value).is_unspecified
        for protocol, value in address.items()
    )


def _split_peer_suffix(address: Multiaddr) -> tuple[Multiaddr, str | None]:
    """(the address without a trailing /p2p/<id>, that id or None)."""
    components = list(address.items())
    if not components or components[-1][0].code != P_P2P:
        return address, None
    return address.decapsulate_code(P_P2P), str(components[-1][1])


def _advertisable_addrs(peer_id: str, addrs: Iterable[str]) -> tuple[str, ...]:
    """Our addresses as they go into TXT: validated, without /p2p/, unspecified ones dropped."""
    result: list[str] = []
    for text in addrs:
        parsed = _parse_multiaddr(text)
        if parsed is None or not list(parsed.items()):
            raise ValueError(f"not a multiaddr: {text!r}")
        bare, suffix_peer = _split_peer_suffix(parsed)
        if suffix_peer is not None and suffix_peer != peer_id:
            raise ValueError(f"address {text!r} names another peer than {peer_id}")
        if _is_unspecified(bare):
            log.warning("not advertising the unspecified address %s over mDNS", text)
            continue
        if str(bare) not in result:
            result.append(str(bare))
    return tuple(result)


def _first_port(addrs: Iterable[str]) -> int:
    for text in addrs:
        for protocol, value in Multiaddr(text).items():
            if protocol.name in ("tcp", "udp"):
                return int(value)
    return FALLBACK_PORT


# --- TXT records --------------------------------------------------------------------------------


def _check_field(key: str, value: str) -> None:
    if not key or "=" in key or not all(" " <= char <= "~" for char in key):
        raise ValueError(f"TXT field name must be printable ASCII without '=': {key!r}")
    if _DNSADDR_KEY_PATTERN.fullmatch(key.encode()):
        raise ValueError(f"TXT field name {key!r} is reserved for addresses")
    if not isinstance(value, str):
        raise ValueError(f"TXT field {key!r} must be a string, not {type(value).__name__}")


def encode_txt(peer_id: str, addrs: Iterable[str], fields: Mapping[str, str]) -> bytes:
    """The TXT record's wire form: ``dnsaddr=<addr>/p2p/<peer id>`` strings, then the fields.

    ``addrs`` are without ``/p2p/``. Raises ValueError for a bad field or a string over 255 bytes.
    """
    strings = [f"{DNSADDR_KEY}={addr}/p2p/{peer_id}".encode() for addr in addrs]
    for key, value in fields.items():
        _check_field(key, value)
        strings.append(f"{key}={value}".encode())
    for entry in strings:
        if len(entry) > MAX_TXT_STRING:
            raise ValueError(f"TXT string over {MAX_TXT_STRING} bytes: {entry[:40]!r}...")
    return b"".join(bytes([len(entry)]) + entry for entry in strings)


def split_txt(text: bytes) -> list[bytes]:
    """The strings of a TXT record's wire form; a truncated last string is dropped."""
    strings: list[bytes] = []
    index = 0
    while index < len(text):
        length = text[index]
        end = index + 1 + length
        if end > len(text):
            break
        if length:
            strings.append(text[index + 1 : end])
        index = end
    return strings


def _parse_dnsaddr(value: bytes) -> tuple[str, str] | None:
    """(peer id, address without /p2p/) of a dnsaddr value, or None if it is not a valid one."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    parsed = _parse_multiaddr(text)
    if parsed is None:
        return None
    bare, peer_id = _split_peer_suffix(parsed)
    if peer_id is None or not list(bare.items()) or _is_unspecified(bare):
        return None
    return peer_id, str(bare)


def _parse_field(key: bytes, value: bytes) -> tuple[str, str] | None:
    try:
        key_text, value_text = key.decode("ascii"), value.decode("utf-8")
        _check_field(key_text, value_text)
    except (UnicodeDecodeError, ValueError):
        return None
    return key_text, value_text


def decode_txt(text: bytes, *, own_peer_id: str) -> DiscoveredPeer | None:
    """The peer a TXT record advertises, or None if it advertises no valid address, or us.

    Strict: malformed dnsaddr strings, dnsaddr strings naming another peer than the first valid
    one, unspecified addresses and malformed fields are ignored. Of a repeated field key the
    first one counts (RFC 6763 section 6.4).
    """
    peer_id: str | None = None
    addrs: list[str] = []
    fields: dict[str, str] = {}
    for entry in split_txt(text):
        key, has_value, value = entry.partition(b"=")
        if not has_value:
            continue
        if _DNSADDR_KEY_PATTERN.fullmatch(key):
            parsed = _parse_dnsaddr(value)
            if parsed is None or (peer_id is not None and parsed[0] != peer_id):
                continue
            peer_id = parsed[0]
            if parsed[1] not in addrs:
                addrs.append(parsed[1])
        elif (parsed_field := _parse_field(key, value)) is not None:
            fields.setdefault(*parsed_field)
    if peer_id is None or peer_id == own_peer_id:
        return None
    return DiscoveredPeer(peer_id, tuple(addrs), MappingProxyType(fields))


# --- which peers the LAN advertises --------------------------------------------------------------


class _PeerTracker:
    """Which peer each service instance advertises, and the events its changes produce.

    Several instances may advertise one peer (a restarted node whose old record has not expired
    yet): the peer is reported as its most recently seen instance says, lost when none is left.
    Not thread-safe: _BrowserHandler serializes its use.
    """

    def __init__(self) -> None:
        self._by_instance: dict[str, DiscoveredPeer] = {}
        self._reported: dict[str, DiscoveredPeer] = {}

    def instance_seen(self, instance: str, peer: DiscoveredPeer | None) -> list[MdnsEvent]:
        """The instance now advertises this peer (None: nothing valid)."""
        key = instance.lower()
        previous = self._by_instance.pop(key, None)
        if peer is not None:
            self._by_instance[key] = peer
        touched = dict.fromkeys(p.peer_id for p in (previous, peer) if p is not None)
        return [event for pid in touched if (event := self._reconcile(pid)) is not None]

    def instance_gone(self, instance: str) -> list[MdnsEvent]:
        return self.instance_seen(instance, None)

    def _reconcile(self, peer_id: str) -> MdnsEvent | None:
        current = self._latest_for(peer_id)
        if current is None:
            return PeerLost(peer_id) if self._reported.pop(peer_id, None) is not None else None
        if self._reported.get(peer_id) == current:
            return None
        self._reported[peer_id] = current
        return current

    def _latest_for(self, peer_id: str) -> DiscoveredPeer | None:
        for peer in reversed(self._by_instance.values()):
            if peer.peer_id == peer_id:
                return peer
        return None


EventSink = Callable[[list[MdnsEvent]], None]


class _BrowserHandler:
    """Turns service changes into peer events.

    zeroconf's ServiceBrowser calls it on its own thread for every change of a service, in order.
    ``recheck`` (from a worker thread) re-resolves the services the browser still lists, to notice
    nodes that vanished without a goodbye: zeroconf keeps a browsed PTR record for at least 1125 s
    whatever TTL its sender gave, so the browser alone reports such a node lost only after about
    19 minutes; a recheck finds its TXT/SRV records expired after their TTL, asks the network and
    gets no answer. A recheck result is dropped if the browser changed that service meanwhile.
    """

    def __init__(self, own_peer_id: str, deliver: EventSink) -> None:
        self._own_peer_id = own_peer_id
        self._deliver = deliver
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards the tracker and the listing, shared by both threads
        self._tracker = _PeerTracker()
        self._listed: dict[str, tuple[str, int]] = {}  # instance key -> (name, change number)
        self._changes = itertools.count()

    def __call__(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        try:
            events = self._events_for(zeroconf, service_type, name, state_change)
        except Exception:  # an exception escaping here would end zeroconf's browser thread
            log.exception("mDNS: failed to handle %s of %s", state_change, name)
            return
        if events:
            self._deliver(events)

    def _events_for(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> list[MdnsEvent]:
        with self._lock:
            if state_change is ServiceStateChange.Removed:
                self._listed.pop(name.lower(), None)
                return self._tracker.instance_gone(name)
            self._listed[name.lower()] = (name, next(self._changes))
        info = zeroconf.get_service_info(service_type, name, timeout=RESOLVE_TIMEOUT_MS)
        if info is None:
            log.debug("mDNS: could not resolve %s", name)
            return []
        peer = self._peer_in(info)
        with self._lock:
            return self._tracker.instance_seen(name, peer)

    def recheck(self, zeroconf: Zeroconf) -> list[MdnsEvent]:
        """Re-resolve every listed service (from the cache while its records live)."""
        with self._lock:
            listed = list(self._listed.values())
        events: list[MdnsEvent] = []
        for name, change in listed:
            if self._stopping.is_set():
                break
            try:
                info = zeroconf.get_service_info(SERVICE_TYPE, name, timeout=RECHECK_TIMEOUT_MS)
            except Exception:
                log.debug("mDNS: recheck of %s failed", name, exc_info=True)
                continue
            peer = self._peer_in(info) if info is not None else None
            with self._lock:
                if self._listed.get(name.lower()) == (name, change):
                    events += self._tracker.instance_seen(name, peer)
        return events

    def stop_rechecks(self) -> None:
        """Make a running ``recheck`` return after the service it is resolving."""
        self._stopping.set()

    def _peer_in(self, info: ServiceInfo) -> DiscoveredPeer | None:
        peer = decode_txt(info.text or b"", own_peer_id=self._own_peer_id)
        if peer is None:
            log.debug("mDNS: ignoring %s (ours, or no valid dnsaddr)", info.name)
        return peer


def _deliver_to_trio(
    token: trio.lowlevel.TrioToken,
    channel: trio.MemorySendChannel[MdnsEvent],
    events: list[MdnsEvent],
) -> None:
    """From a foreign thread: queue events for the trio side, or drop them if it has stopped."""
    try:
        trio.from_thread.run_sync(_send_all_nowait, channel, events, trio_token=token)
    except (trio.RunFinishedError, trio.BrokenResourceError, trio.ClosedResourceError):
        log.debug("mDNS: dropped %d event(s) after discovery stopped", len(events))


def _send_all_nowait(channel: trio.MemorySendChannel[MdnsEvent], events: list[MdnsEvent]) -> None:
    for event in events:
        channel.send_nowait(event)


# --- zeroconf, blocking: only ever called from worker threads ------------------------------------


@dataclass(frozen=True)
class _Advertisement:
    txt: bytes
    port: int


def _random_instance_name() -> str:
    length = 32 + secrets.randbelow(32)  # as go-libp2p does
    return "".join(secrets.choice(_INSTANCE_ALPHABET) for _ in range(length))


def _start_zeroconf(interface_addresses: list[str] | None) -> Zeroconf:
    """A zeroconf instance on these interface addresses (None: all), IPv4."""
    interfaces = InterfaceChoice.All if interface_addresses is None else interface_addresses
    with _sockets_hearing_only_joined_interfaces():
        zeroconf = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
    if not zeroconf.engine.senders:  # zeroconf skips an interface it cannot join, silently
        zeroconf.close()
        raise OSError(f"mDNS could not join the multicast group on {interface_addresses or 'any'}")
    return zeroconf


@contextlib.contextmanager
def _sockets_hearing_only_joined_interfaces() -> Iterator[None]:
    """While zeroconf creates its sockets, make them hear only the interfaces they join (Linux).

    zeroconf receives on a socket bound to 0.0.0.0:5353 which Linux feeds with the mDNS traffic
    of every interface where *any* socket of the host joined 224.0.0.251 (IP_MULTICAST_ALL), and
    zeroconf answers such queries by unicast, out of that other interface. Turning
    IP_MULTICAST_ALL off is not enough with SO_REUSEPORT, which zeroconf sets: when exactly one
    socket of a reuseport group passes the membership filter, UDP early demux hands the datagram
    to a random member of the group, so a node on "lo" could get (and another node miss) a
    datagram that arrived on "eth0". zeroconf calls ``set_so_reuseport_if_available`` on every
    new socket before binding it; for the duration of our constructor it instead turns
    IP_MULTICAST_ALL off and leaves SO_REUSEPORT unset (SO_REUSEADDR still lets several mDNS
    stacks share port 5353).
    """
    if not sys.platform.startswith("linux"):
        yield
        return
    original = getattr(zeroconf_net, "set_so_reuseport_if_available", None)
    if original is None:
        raise RuntimeError("zeroconf changed: cannot restrict mDNS to the configured interfaces")
    with _ZEROCONF_SOCKETS_LOCK:
        zeroconf_net.set_so_reuseport_if_available = _hear_only_joined_groups
        try:
            yield
        finally:
            zeroconf_net.set_so_reuseport_if_available = original


def _hear_only_joined_groups(s: socket.socket) -> None:  # zeroconf's name for the parameter
    s.setsockopt(socket.IPPROTO_IP, _LINUX_IP_MULTICAST_ALL, 0)


class _ZeroconfSession:
    """One zeroconf instance with our service (if we advertise one) and the browser."""

    def __init__(
        self,
        zeroconf: Zeroconf,
        handler: _BrowserHandler,
        host_addresses: list[str],
        ttl: int,
        instance_name: str,
    ) -> None:
        self._zeroconf = zeroconf
        self._handler = handler
        self._host_addresses = host_addresses
        self._ttl = ttl
        self._instance_name = instance_name
        self._info: ServiceInfo | None = None
        self._browser: ServiceBrowser | None = None

    @classmethod
    def open(
        cls,
        interfaces: Sequence[str] | None,
        advertisement: _Advertisement | None,
        handler: _BrowserHandler,
        ttl: int,
    ) -> _ZeroconfSession:
        """Start zeroconf on the interfaces, browse, and register our service (takes ~1.6 s)."""
        addresses = resolve_interfaces(interfaces) if interfaces is not None else None
        zeroconf = _start_zeroconf(addresses)
        host_addresses = addresses or all_ipv4_addresses()
        session = cls(zeroconf, handler, host_addresses, ttl, _random_instance_name())
        try:
            session._browser = ServiceBrowser(zeroconf, SERVICE_TYPE, handlers=[handler])
            session.advertise(advertisement)
        except BaseException:
            session.close()
            raise
        return session

    def advertise(self, advertisement: _Advertisement | None) -> None:
        """Register, update or withdraw (None) our service."""
        if advertisement is None:
            self._withdraw()
            return
        info = self._service_info(advertisement)
        if self._info is None:
            self._zeroconf.register_service(info)
        else:
            self._zeroconf.update_service(info)
        self._info = info

    def _withdraw(self) -> None:
        if self._info is not None:
            info, self._info = self._info, None
            self._zeroconf.unregister_service(info)  # sends the goodbye

    def _service_info(self, advertisement: _Advertisement) -> ServiceInfo:
        return ServiceInfo(
            SERVICE_TYPE,
            f"{self._instance_name}.{SERVICE_TYPE}",
            port=advertisement.port,
            properties=advertisement.txt,
            server=f"{self._instance_name}.local.",
            parsed_addresses=self._host_addresses,
            host_ttl=self._ttl,
            other_ttl=self._ttl,
        )

    def recheck(self) -> list[MdnsEvent]:
        return self._handler.recheck(self._zeroconf)

    def stop_rechecks(self) -> None:
        self._handler.stop_rechecks()

    def close(self) -> None:
        """Say goodbye, stop browsing, close zeroconf (~0.25 s)."""
        self._handler.stop_rechecks()
        try:
            self._withdraw()
        finally:
            if self._browser is not None:
                self._browser.cancel()
            self._zeroconf.close()


# --- the trio side ------------------------------------------------------------------------------


def _advertisement_for(
    peer_id: str, addrs: tuple[str, ...], fields: Mapping[str, str]
) -> _Advertisement | None:
    """None when there is no address to advertise: then we only browse."""
    txt = encode_txt(peer_id, addrs, fields)  # validates the fields even when not advertising
    return _Advertisement(txt, _first_port(addrs)) if addrs else None


class MdnsDiscovery:
    """Advertise this node on the LAN and report the other libp2p nodes there.

    ``addrs`` are the concrete multiaddrs we listen on (with or without our ``/p2p/`` suffix;
    unspecified ones such as ``/ip4/0.0.0.0/...`` are dropped). With no address left we only
    browse. ``interfaces`` are interface names (``["lo"]``), or None for all of them.
    """

    def __init__(
        self,
        peer_id: str,
        addrs: Sequence[str],
        *,
        interfaces: Sequence[str] | None,
        fields: Mapping[str, str] = _NO_FIELDS,
        ttl: int = DEFAULT_TTL,
        recheck_interval: float = RECHECK_INTERVAL,
    ) -> None:
        if interfaces is not None and not interfaces:
            raise ValueError("interfaces must name at least one interface, or be None for all")
        if ttl <= 0 or recheck_interval <= 0:
            raise ValueError("ttl and recheck_interval must be positive")
        self.peer_id = normalize_peer_id(peer_id)
        self.interfaces: tuple[str, ...] | None = (
            tuple(interfaces) if interfaces is not None else None
        )
        self.ttl = ttl
        self.recheck_interval = recheck_interval
        self._addrs = _advertisable_addrs(self.peer_id, addrs)
        self._fields: Mapping[str, str] = MappingProxyType(dict(fields))
        self._advertisement = _advertisement_for(self.peer_id, self._addrs, self._fields)
        self._session: _ZeroconfSession | None = None
        self._session_lock = trio.Lock()
        self._running = False

    @property
    def addrs(self) -> tuple[str, ...]:
        """The addresses we advertise, without ``/p2p/``."""
        return self._addrs

    @property
    def fields(self) -> Mapping[str, str]:
        return self._fields

    async def run(
        self,
        events: trio.MemorySendChannel[MdnsEvent],
        *,
        task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Advertise and browse, sending events to ``events`` until cancelled.

        ``task_status.started()`` comes once our service is registered (about 1.6 s: zeroconf
        probes the name first). On cancellation our service is withdrawn with a goodbye and
        zeroconf is closed, shielded and off the trio thread. ``events`` is not closed.
        """
        if self._running:
            raise RuntimeError("this MdnsDiscovery is already running")
        self._running = True
        try:
            await self._run(events, task_status)
        finally:
            self._running = False

    async def _run(
        self, events: trio.MemorySendChannel[MdnsEvent], task_status: TaskStatus[None]
    ) -> None:
        to_trio, from_browser = trio.open_memory_channel[MdnsEvent](math.inf)
        token = trio.lowlevel.current_trio_token()
        handler = _BrowserHandler(self.peer_id, partial(_deliver_to_trio, token, to_trio))
        session: _ZeroconfSession | None = None
        async with to_trio, from_browser:
            try:
                async with self._session_lock:
                    session = await trio.to_thread.run_sync(
                        _ZeroconfSession.open,
                        self.interfaces,
                        self._advertisement,
                        handler,
                        self.ttl,
                    )
                    self._session = session
                task_status.started()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._recheck_periodically, session, to_trio)
                    try:
                        async for event in from_browser:
                            await events.send(event)
                    finally:
                        session.stop_rechecks()  # a running recheck then ends soon
            finally:
                if session is not None:
                    with trio.CancelScope(shield=True):
                        await self._close(session)

    async def _recheck_periodically(
        self, session: _ZeroconfSession, to_trio: trio.MemorySendChannel[MdnsEvent]
    ) -> None:
        while True:
            await trio.sleep(self.recheck_interval)
            for event in await trio.to_thread.run_sync(session.recheck):
                to_trio.send_nowait(event)

    async def _close(self, session: _ZeroconfSession) -> None:
        async with self._session_lock:
            self._session = None
            await trio.to_thread.run_sync(session.close)

    async def update(
        self, *, addrs: Sequence[str] | None = None, fields: Mapping[str, str] | None = None
    ) -> None:
        """Advertise other addresses and/or fields; takes effect at once if running.

        Other nodes then see a DiscoveredPeer with the new values.
        """
        new_addrs = _advertisable_addrs(self.peer_id, addrs) if addrs is not None else self._addrs
        new_fields = MappingProxyType(dict(fields)) if fields is not None else self._fields
        advertisement = _advertisement_for(self.peer_id, new_addrs, new_fields)
        async with self._session_lock:
            self._addrs, self._fields, self._advertisement = new_addrs, new_fields, advertisement
            if self._session is not None:
                await trio.to_thread.run_sync(self._session.advertise, advertisement)
