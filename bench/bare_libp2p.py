"""The baselines' bare py-libp2p: hosts built like /work/shared/reference/libp2p_minimal.py
(TCP + Noise + Yamux, nothing of p2pid) and an echo handler."""

from __future__ import annotations

import hashlib

from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

ECHO = TProtocol("/bench/echo/1.0.0")


def seed(name: str) -> bytes:
    """A fixed 32-byte key seed per name: the same name, the same PeerId."""
    return hashlib.sha256(f"bench {name}".encode()).digest()


def bare_host(name: str) -> IHost:
    key_pair = create_new_key_pair(seed(name))
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )


async def echo(stream: INetStream) -> None:
    try:
        while data := await stream.read(65536):
            await stream.write(data)
    except StreamEOF:
        pass
    except Exception:  # an exception escaping a handler tears down the whole host
        pass
    finally:
        await stream.close()
