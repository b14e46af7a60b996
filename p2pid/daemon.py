"""The daemon process: one per home. Owns the lock, the store, the node and the RPC socket.

Run in the foreground by `p2pid daemon`, or detached (`--detach`) as `python -m p2pid.daemon`,
in which case it reports readiness (or the error that stopped it) on a pipe to its parent.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import trio

from p2pid.errors import describe_failure
from p2pid.events import EventBus, now_ms
from p2pid.home import Home
from p2pid.node import Node, NodeConfig
from p2pid.provision import unlock_vault_key
from p2pid.rpc.methods import daemon_methods
from p2pid.rpc.server import RpcServer
from p2pid.store.trio_store import TrioStore
from p2pid.wire.events import DaemonStopping

log = logging.getLogger("p2pid.daemon")


class AlreadyRunning(Exception):
    pass


@dataclass(frozen=True)
class DaemonOptions:
    home: Home
    node: NodeConfig
    # The kiosk console: gets the running node and a nursery for its own tasks.
    attach: Callable[[Node, trio.Nursery], None] | None = None


def acquire_home_lock(home: Home) -> IO[str]:
    """Hold the home's lock for the life of the process; the kernel drops it on any exit."""
    home.ensure_private_dir()
    lock_file = open(home.lock, "a+")  # noqa: SIM115 - held until the process exits
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "unknown"
        lock_file.close()
        raise AlreadyRunning(
            f"a daemon is already running for {home.root} (pid {holder})"
        ) from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(str(os.getpid()))
    lock_file.flush()
    return lock_file


def configure_logging(stream: IO[str]) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(os.environ.get("P2PID_LOG_LEVEL", "INFO").upper())


async def serve(options: DaemonOptions, vault_key: bytes, on_ready: Callable[[str], None]) -> bool:
    """Run until stopped; True if another device of mine revoked this one (wipe the home)."""
    home = options.home
    events = EventBus()
    stop_requested = trio.Event()
    async with (
        TrioStore.open(home.database, vault_key) as store,
        Node.running(store, vault_key, events, options.node) as node,
        trio.open_nursery() as nursery,
    ):
        server = RpcServer(daemon_methods(node, stop_requested.set), events)
        await nursery.start(server.serve, home.socket)
        nursery.start_soon(_stop_on_signal, stop_requested)
        nursery.start_soon(_stop_when_revoked, node, stop_requested)
        if options.attach is not None:
            options.attach(node, nursery)
        status = node.status()
        log.info("ready: peer %s listening on %s", status.peer_id, " ".join(status.listen_addrs))
        on_ready(status.peer_id)
        await stop_requested.wait()
        log.info("stopping")
        events.publish(DaemonStopping(at_ms=now_ms(), reason="stop requested"))
        nursery.cancel_scope.cancel()
    log.info("stopped")
    return node.revoked.is_set()


REVOKED_GRACE_SECONDS = 1.0


async def _stop_when_revoked(node: Node, stop_requested: trio.Event) -> None:
    await node.revoked.wait()
    # Let the acknowledgement of the revoking list reach the sender before stopping.
    await trio.sleep(REVOKED_GRACE_SECONDS)
    stop_requested.set()


async def _stop_on_signal(stop_requested: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for received in signals:
            log.info("received %s", signal.Signals(received).name)
            stop_requested.set()
            return


def run(
    options: DaemonOptions, on_ready: Callable[[str], None], passphrase: str | None = None
) -> None:
    """Run the daemon in this process until stopped. Raises on any start-up failure."""
    lock = acquire_home_lock(options.home)
    try:
        vault_key = unlock_vault_key(options.home, passphrase)
        if trio.run(serve, options, vault_key, on_ready):
            options.home.wipe_identity()
            log.warning("this device was revoked: its identity was wiped")
    finally:
        lock.close()


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m p2pid.daemon")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--mdns-interface", action="append", default=[])
    parser.add_argument("--no-mdns", action="store_true")
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--passphrase-stdin", action="store_true")
    return parser.parse_args(argv)


def _files_folder(home: Path) -> str:
    """The platform's user home keeps files in ~/Downloads/p2pid; any other home (one of several
    identities on this machine, a test) in its own `downloads` folder."""
    from platformdirs import user_data_dir

    platform_home = Path(user_data_dir("p2pid", appauthor=False))
    return "" if Path(home).resolve() == platform_home.resolve() else str(Path(home) / "downloads")


def options_from(
    home: Path, listen: list[str], interfaces: list[str], no_mdns: bool
) -> DaemonOptions:
    config = NodeConfig(
        listen_addrs=tuple(listen) or NodeConfig().listen_addrs,
        mdns_enabled=not no_mdns,
        mdns_interfaces=tuple(interfaces) or None,
        files_folder=_files_folder(home),
    )
    return DaemonOptions(home=Home(home), node=config)


def main(argv: Sequence[str] | None = None) -> int:
    """Detached entry point: report "ready <PeerId>" or "error <message>" on the ready pipe."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    ready_pipe = os.fdopen(args.ready_fd, "w")
    passphrase = sys.stdin.readline().rstrip("\n") if args.passphrase_stdin else None
    configure_logging(sys.stderr)

    def report_ready(peer_id: str) -> None:
        ready_pipe.write(f"ready {peer_id}\n")
        ready_pipe.close()

    try:
        run(
            options_from(args.home, args.listen, args.mdns_interface, args.no_mdns),
            report_ready,
            passphrase,
        )
    except Exception as error:
        log.exception("daemon failed")
        if not ready_pipe.closed:
            ready_pipe.write(f"error {describe_failure(error)}\n")
            ready_pipe.close()
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
