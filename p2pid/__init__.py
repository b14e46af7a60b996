"""p2pid: a peer-to-peer identity and messaging node."""

__version__ = "0.1.0"
