"""Throwaway network namespaces for tests that multicast (mDNS) or need their own network.

mDNS must never reach this machine's real interfaces, so such tests run their processes inside a
namespace they create: its loopback is up, multicast-capable and routes 224.0.0.0/4, and nothing
else is in it unless the test adds it (e.g. a veth pair to a second namespace)::

    from tests.netns import netns, requires_netns

    @requires_netns
    def test_two_daemons() -> None:
        with netns() as ns:
            daemon = subprocess.Popen(ns.command([sys.executable, "-m", "p2pid", "daemon"]))
            ...

``ns.command([])`` is the bare prefix (``ip netns exec NAME``) for helpers that take one. The
``fresh_netns`` fixture gives a namespace per test and skips where it can't (make it visible to
pytest by importing it in a conftest.py). ``veth_pair`` joins two namespaces like a cable.

Creating a namespace needs root and the ``ip`` tool; without them the tests marked
``requires_netns`` skip with the reason (``-ra`` prints it). On leaving, processes still running
inside the namespace (the test's own) are killed and the namespace is deleted.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

NAME_PREFIX = "p2pid-test"
_counter = itertools.count(1)
_T = TypeVar("_T", bound=Callable[..., object] | type)


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be created here, or None if they can."""
    if shutil.which("ip") is None:
        return "network namespace tests need the `ip` tool (iproute2), which is not installed"
    if os.geteuid() != 0:
        return "network namespace tests need root (CI runs them as root)"
    return None


def requires_netns(test: _T) -> _T:
    """Mark a test (function or class) ``netns``; skip it, with the reason, where it can't run."""
    reason = netns_unavailable_reason()
    marked: _T = pytest.mark.skipif(reason is not None, reason=reason or "")(
        pytest.mark.netns(test)
    )
    return marked


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")


@dataclass(frozen=True)
class NetNs:
    """A network namespace, by name."""

    name: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside the namespace (for subprocess.run / Popen / trio)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace, checked, output captured as text."""
        options: dict[str, Any] = {"check": True, "capture_output": True, "text": True} | kwargs
        return subprocess.run(self.command(argv), **options)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start a command inside the namespace (text mode)."""
        return subprocess.Popen(self.command(argv), text=True, **kwargs)

    def ip(self, *args: str) -> None:
        """``ip ARGS`` inside the namespace, e.g. ``ns.ip("addr", "add", ...)``."""
        _ip("netns", "exec", self.name, "ip", *args)

    def pids(self) -> list[int]:
        result = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in result.stdout.split()]


def unique_name(prefix: str = NAME_PREFIX) -> str:
    """A namespace name unique to this process and call: PREFIX-PID-N."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


def create(name: str | None = None) -> NetNs:
    """A new namespace with a multicast-capable loopback routing 224.0.0.0/4. Delete it after."""
    ns = NetNs(name or unique_name())
    _ip("netns", "add", ns.name)
    try:
        ns.ip("link", "set", "lo", "up")
        ns.ip("link", "set", "lo", "multicast", "on")
        ns.ip("route", "add", "224.0.0.0/4", "dev", "lo")
    except BaseException:
        delete(ns)
        raise
    return ns


def delete(ns: NetNs) -> None:
    """Kill what still runs inside the namespace (the test's own processes), then remove it."""
    for pid in ns.pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(RuntimeError):
        _ip("netns", "delete", ns.name)


@contextlib.contextmanager
def netns(name: str | None = None) -> Iterator[NetNs]:
    """A throwaway namespace for the ``with`` block (see the module docstring)."""
    ns = create(name)
    try:
        yield ns
    finally:
        delete(ns)


def veth_pair(
    a: NetNs, b: NetNs, a_cidr: str, b_cidr: str, *, a_name: str = "p2pa", b_name: str = "p2pb"
) -> None:
    """Join two namespaces with a veth pair (made inside ``a``, never in the host's namespace).

    ``a_cidr``/``b_cidr`` like "10.77.0.1/24"; the links are brought up with multicast on. The
    pair disappears with either namespace.
    """
    a.ip("link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b.name)
    for ns, link, cidr in ((a, a_name, a_cidr), (b, b_name, b_cidr)):
        ns.ip("addr", "add", cidr, "dev", link)
        ns.ip("link", "set", link, "multicast", "on", "up")


@pytest.fixture
def fresh_netns() -> Iterator[NetNs]:
    """A fresh namespace for one test; skips (with the reason) where none can be created."""
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with netns() as ns:
        yield ns
