"""The network layer: the libp2p host wrapper, dialing, discovery.

This package's ``__init__`` stays free of libp2p imports (``import libp2p`` costs over a
second): import ``NetHost`` from ``p2pid.net.host``.
"""


class NetError(Exception):
    """A network operation failed; the message says which and why."""


class DialError(NetError):
    """No address of a peer could be connected to before the deadline."""

    def __init__(self, peer_id: str, reason: str, failures: list[tuple[str, str]]) -> None:
        self.peer_id = peer_id
        self.reason = reason
        self.failures = failures
        super().__init__(_describe_dial_failure(peer_id, reason, failures))


class StreamOpenError(NetError):
    """A stream to a connected peer could not be opened or negotiated."""


class PingError(NetError):
    """A ping round trip failed or timed out."""


class IdentifyError(NetError):
    """The peer's /ipfs/id/1.0.0 answer could not be read."""


def describe_error(exc: BaseException) -> str:
    """The exception and its causes, outermost first: py-libp2p wraps the useful part."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(parts) < 4:
        text = str(current) or type(current).__name__
        if text not in parts:
            parts.append(text)
        current = current.__cause__
    return ": ".join(parts)


def _describe_dial_failure(peer_id: str, reason: str, failures: list[tuple[str, str]]) -> str:
    message = f"cannot connect to {peer_id}: {reason}"
    if not failures:
        return message
    last_error_per_addr = dict(failures)
    details = "; ".join(f"{addr}: {error}" for addr, error in last_error_per_addr.items())
    return f"{message} ({len(failures)} attempts; last error per address: {details})"
