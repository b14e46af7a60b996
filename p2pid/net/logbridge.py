"""Route py-libp2p's log records into p2pid's logging tree.

``import libp2p`` leaves the ``libp2p`` logger with no handler, level WARNING and
``propagate = False``: its records go nowhere. The bridge hands them to the
``p2pid.net.libp2p`` logger, where p2pid's own handlers and levels apply. The records keep
their original names (``libp2p.network.swarm`` ...) so the source stays visible.

Some py-libp2p modules log through the root logger (``logging.warning(...)``); those never
reach the ``libp2p`` logger and are not bridged.
"""

import logging

LIBP2P_LOGGER_NAME = "libp2p"
BRIDGED_LOGGER_NAME = "p2pid.net.libp2p"
# Loggers py-libp2p pins to INFO at import, louder than the rest of the library.
_SELF_LEVELLED_LOGGERS = ("libp2p.network.auto_connector",)
# multiaddr 0.2.0 logs every parse at DEBUG (dozens of records per dial) through the
# root logger's handlers; keep it at INFO unless asked otherwise.
MULTIADDR_LOGGER_NAME = "multiaddr"
# Failures py-libp2p both logs as errors and raises: NetHost reports them (DialError,
# StreamOpenError), and py-libp2p's own identify attempts fail this way on every close race.
_DEMOTED_TO_DEBUG = (
    ("libp2p.transport.tcp.tcp", "Failed to open TCP stream"),
    ("libp2p.host.basic_host", "Failed to open stream to peer"),
    ("libp2p.protocol_muxer.multiselect_client", "MultiselectClient handshake"),
)


class _ForwardToP2pid(logging.Handler):
    def __init__(self, target: logging.Logger) -> None:
        super().__init__()
        self._target = target

    def emit(self, record: logging.LogRecord) -> None:
        if _is_routine(record):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        if self._target.isEnabledFor(record.levelno):
            self._target.handle(record)


def _is_routine(record: logging.LogRecord) -> bool:
    return any(
        record.name == name and isinstance(record.msg, str) and record.msg.startswith(prefix)
        for name, prefix in _DEMOTED_TO_DEBUG
    )


def install_libp2p_log_bridge(libp2p_level: int | None = None) -> None:
    """Idempotent. ``libp2p_level`` (e.g. logging.DEBUG) lowers py-libp2p's own threshold,
    which is WARNING unless LIBP2P_DEBUG is set."""
    source = logging.getLogger(LIBP2P_LOGGER_NAME)
    if not any(isinstance(handler, _ForwardToP2pid) for handler in source.handlers):
        source.addHandler(_ForwardToP2pid(logging.getLogger(BRIDGED_LOGGER_NAME)))
    for name in _SELF_LEVELLED_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    multiaddr_logger = logging.getLogger(MULTIADDR_LOGGER_NAME)
    if multiaddr_logger.level == logging.NOTSET:
        multiaddr_logger.setLevel(logging.INFO)
    if libp2p_level is not None:
        source.setLevel(libp2p_level)
