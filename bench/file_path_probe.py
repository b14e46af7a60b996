"""Design probe for issue 8 (file sharing): which bulk path can carry a file at 250 MB/s.

A DESIGN PROBE, not a benchmark of p2pid: it measures what the transports and the crypto allow
before file transfer exists, so that the bulk-path design rests on figures. It is not named
``bench_*.py``, so ``run_all.py`` does not pick it up.

Every configuration moves ``--mib`` MiB of random data (default 256) on 127.0.0.1 from a sender
process to a receiver process (two processes, as two daemons would be: no shared GIL), ``--runs``
times (default 3), each run in a fresh pair of child processes; the parent prints one JSON line
per configuration with the median rate in MB/s (1 MB = 10^6 bytes). The clock runs on the sender
from just after the connection is up (TCP connect, or libp2p connect incl. Noise handshake) until
the receiver's 1-byte acknowledgement arrives, which the receiver sends once it has every byte
(and, for the file pipelines, has hashed, written and fsync'ed them).

- ``libp2p_streams_N``: bare py-libp2p hosts (TCP + Noise + Yamux, built as bench/bare_libp2p.py
  builds them), N parallel streams on one connection, 1 MiB writes, receiver discards.
- ``tcp_raw``: a trio TCP socket pair, no crypto, 1 MiB sends, receiver discards.
- ``tcp_aead``: the same plus per-chunk XChaCha20-Poly1305-IETF (libsodium through
  ``nacl.bindings``): frame = 8-byte chunk index + ciphertext of a 1 MiB chunk + 16-byte tag,
  nonce = 16-byte per-file prefix + 8-byte index, AAD = 16-byte file id; receiver decrypts and
  discards.
- ``tcp_e2e``: ``tcp_aead`` end to end: the sender preads each chunk from a file (in the page
  cache), the receiver decrypts, hashes the plaintext (blake2b-256 per chunk, the file hash being
  blake2b-256 over the chunk digests, so chunks may arrive in any order), os.pwrite()s it at its
  offset into a file in a temp dir, and fsyncs before acknowledging.
  ``_thread``: the per-chunk CPU work (sender: pread + encrypt; receiver: decrypt + hash + pwrite)
  runs in a worker thread (trio.to_thread) fed through a small channel, so socket I/O overlaps it
  (libsodium, hashlib and pwrite release the GIL). ``_2conn``: two TCP connections in parallel,
  chunks dealt round-robin, each connection with its own pipeline.
  ``_writer``: a second receiver worker thread does the pwrite, the first only decrypts +
  hashes. ``_sodiumhash`` / ``_blake3``: the chunk hash is libsodium's blake2b-256 or BLAKE3.
  ``_openssl``: the same XChaCha20-Poly1305 bytes computed as ChaCha20-Poly1305-IETF by OpenSSL
  (``cryptography``) under the per-file subkey HChaCha20(key, prefix), nonce 0^4 || index.
- ``cpu``: one thread, in-process: AEAD encrypt, decrypt (libsodium and OpenSSL, checked
  byte-identical), blake2b (hashlib, libsodium), BLAKE3, SHA-256, and pwrite+fsync alone.

    .venv/bin/python bench/file_path_probe.py [--mib 256] [--runs 3] [--only tcp_raw cpu ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.bindings import crypto_generichash_blake2b_salt_personal as crypto_generichash

CHUNK = 1 << 20
TAG = 16
INDEX = struct.Struct(">Q")
END = 0xFFFFFFFFFFFFFFFF
CHILD_TIMEOUT = 300.0
PROTOCOL = "/probe/bulk/1.0.0"

CONFIGS: dict[str, dict[str, Any]] = {
    "libp2p_streams_1": {"kind": "libp2p", "streams": 1},
    "libp2p_streams_4": {"kind": "libp2p", "streams": 4},
    "libp2p_streams_8": {"kind": "libp2p", "streams": 8},
    "tcp_raw": {"kind": "tcp", "mode": "raw", "conns": 1, "thread": False},
    "tcp_aead": {"kind": "tcp", "mode": "aead", "conns": 1, "thread": False},
    "tcp_aead_openssl": {
        "kind": "tcp",
        "mode": "aead",
        "conns": 1,
        "thread": False,
        "cipher": "openssl",
    },
    "tcp_e2e": {"kind": "tcp", "mode": "e2e", "conns": 1, "thread": False},
    "tcp_e2e_thread": {"kind": "tcp", "mode": "e2e", "conns": 1, "thread": True},
    "tcp_e2e_2conn": {"kind": "tcp", "mode": "e2e", "conns": 2, "thread": False},
    "tcp_e2e_thread_2conn": {"kind": "tcp", "mode": "e2e", "conns": 2, "thread": True},
    "tcp_e2e_sodiumhash": {
        "kind": "tcp",
        "mode": "e2e",
        "conns": 1,
        "thread": False,
        "hash": "sodium",
    },
    "tcp_e2e_blake3": {"kind": "tcp", "mode": "e2e", "conns": 1, "thread": False, "hash": "blake3"},
    "tcp_e2e_thread_blake3": {
        "kind": "tcp",
        "mode": "e2e",
        "conns": 1,
        "thread": True,
        "hash": "blake3",
    },
    "tcp_e2e_thread_blake3_openssl": {
        "kind": "tcp",
        "mode": "e2e",
        "conns": 1,
        "thread": True,
        "hash": "blake3",
        "cipher": "openssl",
    },
    "tcp_e2e_blake3_openssl": {
        "kind": "tcp",
        "mode": "e2e",
        "conns": 1,
        "thread": False,
        "hash": "blake3",
        "cipher": "openssl",
    },
    "tcp_e2e_thread_writer_blake3_openssl": {
        "kind": "tcp",
        "mode": "e2e",
        "conns": 1,
        "thread": True,
        "writer": True,
        "hash": "blake3",
        "cipher": "openssl",
    },
    "cpu": {"kind": "cpu"},
}


def mb_per_s(nbytes: int, seconds: float) -> float:
    return round(nbytes / seconds / 1e6, 1)


def chunk_hash(kind: str) -> Callable[[bytes], bytes]:
    """The per-chunk hash: hashlib's blake2b-256 (default), libsodium's blake2b-256, or BLAKE3."""
    if kind == "sodium":
        return lambda data: crypto_generichash(data, digest_size=32)
    if kind == "blake3":
        from blake3 import blake3  # installed with py-libp2p (py-multihash depends on it)

        return lambda data: blake3(data).digest()
    return lambda data: hashlib.blake2b(data, digest_size=32).digest()


def _rotl(v: int, c: int) -> int:
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20 (the XChaCha20 subkey derivation) in pure Python: run once per file."""
    s = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    s += list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))
    quarters = ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15))
    diagonals = ((0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))
    for _ in range(10):
        for a, b, c, d in quarters + diagonals:
            s[a] = (s[a] + s[b]) & 0xFFFFFFFF
            s[d] = _rotl(s[d] ^ s[a], 16)
            s[c] = (s[c] + s[d]) & 0xFFFFFFFF
            s[b] = _rotl(s[b] ^ s[c], 12)
            s[a] = (s[a] + s[b]) & 0xFFFFFFFF
            s[d] = _rotl(s[d] ^ s[a], 8)
            s[c] = (s[c] + s[d]) & 0xFFFFFFFF
            s[b] = _rotl(s[b] ^ s[c], 7)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def aead(kind: str, key: bytes, prefix: bytes) -> tuple[Callable[..., bytes], Callable[..., bytes]]:
    """(encrypt, decrypt) of chunk i as XChaCha20-Poly1305-IETF with nonce prefix || index.

    "openssl": the same bytes computed as ChaCha20-Poly1305-IETF (OpenSSL via ``cryptography``)
    under the subkey HChaCha20(key, prefix) with nonce 0^4 || index: identical ciphertexts."""
    if kind == "openssl":
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        cipher = ChaCha20Poly1305(hchacha20(key, prefix))

        def encrypt(plain: bytes, aad: bytes, index: int) -> bytes:
            return cipher.encrypt(b"\0\0\0\0" + INDEX.pack(index), plain, aad)

        def decrypt(sealed: bytes, aad: bytes, index: int) -> bytes:
            return cipher.decrypt(b"\0\0\0\0" + INDEX.pack(index), sealed, aad)

        return encrypt, decrypt

    def encrypt_sodium(plain: bytes, aad: bytes, index: int) -> bytes:
        return crypto_aead_xchacha20poly1305_ietf_encrypt(plain, aad, nonce(prefix, index), key)

    def decrypt_sodium(sealed: bytes, aad: bytes, index: int) -> bytes:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, aad, nonce(prefix, index), key)

    return encrypt_sodium, decrypt_sodium


def nonce(prefix: bytes, index: int) -> bytes:
    return prefix + INDEX.pack(index)


# --- keys shared by both children (passed by the parent in the environment) -----------------


def secrets_from_env() -> tuple[bytes, bytes, bytes]:
    """(key, nonce prefix, file id) from PROBE_SECRETS (hex), set by the parent per run."""
    raw = bytes.fromhex(os.environ["PROBE_SECRETS"])
    return raw[:32], raw[32:48], raw[48:64]


# --- raw TCP ----------------------------------------------------------------------------------


async def recv_exactly(sock: trio.socket.SocketType, buf: bytearray) -> bool:
    """Fill buf from sock; False on a clean EOF before the first byte."""
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = await sock.recv_into(view[got:])
        if n == 0:
            if got == 0:
                return False
            raise EOFError("connection closed mid-frame")
        got += n
    return True


class Receiver:
    """The receiving side of the tcp_* configurations."""

    def __init__(self, cfg: dict[str, Any], total: int, directory: str) -> None:
        self.mode, self.thread, self.total = cfg["mode"], cfg["thread"], total
        self.hash = chunk_hash(cfg.get("hash", "hashlib"))
        self.writer = cfg.get("writer", False)  # pwrite in a second worker thread
        self.key, self.prefix, self.file_id = secrets_from_env()
        self.decrypt = aead(cfg.get("cipher", "sodium"), self.key, self.prefix)[1]
        self.chunks = total // CHUNK
        self.done_chunks = 0
        self.all_done = trio.Event()
        self.digests: dict[int, bytes] = {}
        self.path = os.path.join(directory, "incoming.part")
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def open_verify(self, index: int, frame: bytes) -> bytes:
        """Decrypt and hash one chunk (the writer thread then writes it)."""
        plain = self.decrypt(frame, self.file_id, index)
        self.digests[index] = self.hash(plain)
        return plain

    def process(self, index: int, frame: bytes) -> None:
        """Decrypt, hash, write one chunk (runs inline or in a worker thread)."""
        plain = self.decrypt(frame, self.file_id, index)
        if self.mode == "e2e":
            self.digests[index] = self.hash(plain)
            os.pwrite(self.fd, plain, index * CHUNK)

    async def chunk_done(self) -> None:
        self.done_chunks += 1
        if self.done_chunks == self.chunks:
            if self.mode == "e2e":
                await trio.to_thread.run_sync(os.fsync, self.fd)
                order = b"".join(self.digests[i] for i in range(self.chunks))
                self.file_hash = hashlib.blake2b(order, digest_size=32).hexdigest()
            self.all_done.set()

    async def serve_raw(self, sock: trio.socket.SocketType) -> None:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        got = 0
        while got < self.total:
            n = await sock.recv_into(view)
            if n == 0:
                raise EOFError("short stream")
            got += n
        self.all_done.set()

    async def serve(self, sock: trio.socket.SocketType) -> None:
        if self.mode == "raw":
            await self.serve_raw(sock)
        else:
            header = bytearray(INDEX.size)
            send, recv = trio.open_memory_channel[tuple[int, bytes]](4)

            to_write, writes = trio.open_memory_channel[tuple[int, bytes]](4)

            async def worker() -> None:
                async with recv, to_write:
                    async for index, frame in recv:
                        if self.writer:
                            plain = await trio.to_thread.run_sync(self.open_verify, index, frame)
                            await to_write.send((index, plain))
                        else:
                            await trio.to_thread.run_sync(self.process, index, frame)
                            await self.chunk_done()

            async def writer() -> None:
                async with writes:
                    async for index, plain in writes:
                        await trio.to_thread.run_sync(os.pwrite, self.fd, plain, index * CHUNK)
                        await self.chunk_done()

            async with trio.open_nursery() as nursery:
                if self.thread:
                    nursery.start_soon(worker)
                    if self.writer:
                        nursery.start_soon(writer)
                async with send:
                    frame_buf = bytearray(CHUNK + TAG)
                    while True:
                        await recv_exactly(sock, header)
                        (index,) = INDEX.unpack(header)
                        if index == END:
                            break
                        await recv_exactly(sock, frame_buf)
                        frame = bytes(frame_buf)
                        if self.thread:
                            await send.send((index, frame))
                        else:
                            self.process(index, frame)
                            await self.chunk_done()
        await self.all_done.wait()
        await sock.send(b"k")

    def close(self) -> None:
        os.close(self.fd)
        os.unlink(self.path)


async def tcp_server(cfg: dict[str, Any], total: int) -> None:
    with tempfile.TemporaryDirectory(prefix="p2pid-probe-") as directory:
        receiver = Receiver(cfg, total, directory)
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        print(f"ready {listener.getsockname()[1]}", flush=True)
        async with trio.open_nursery() as nursery:
            for _ in range(cfg["conns"]):
                sock, _addr = await listener.accept()
                nursery.start_soon(receiver.serve, sock)
        receiver.close()
        print(json.dumps({"file_hash": getattr(receiver, "file_hash", None)}), flush=True)


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


async def tcp_client(cfg: dict[str, Any], total: int, port: int) -> float:
    key, prefix, file_id = secrets_from_env()
    mode, conns = cfg["mode"], cfg["conns"]
    data = os.urandom(total)
    src_fd = -1
    src_dir = None
    if mode == "e2e":  # the sender reads its file (already in the page cache, as after hashing)
        src_dir = tempfile.TemporaryDirectory(prefix="p2pid-probe-src-")
        src = os.path.join(src_dir.name, "outgoing")
        write_file(src, data)  # before the clock starts: blocking is fine here
        src_fd = os.open(src, os.O_RDONLY)
    chunk_count = total // CHUNK
    encrypt = aead(cfg.get("cipher", "sodium"), key, prefix)[0]

    def seal(index: int) -> bytes:
        if mode == "e2e":
            plain = os.pread(src_fd, CHUNK, index * CHUNK)
        else:
            plain = data[index * CHUNK : (index + 1) * CHUNK]
        return INDEX.pack(index) + encrypt(plain, file_id, index)

    socks = []
    for _ in range(conns):
        sock = trio.socket.socket()
        await sock.connect(("127.0.0.1", port))
        socks.append(trio.SocketStream(sock))

    async def send_conn(k: int, stream: trio.SocketStream) -> None:
        if mode == "raw":
            view = memoryview(data)
            for off in range(0, total, CHUNK):
                await stream.send_all(view[off : off + CHUNK])
        else:
            mine = range(k, chunk_count, conns)
            if cfg["thread"]:
                send, recv = trio.open_memory_channel[bytes](4)

                async def producer() -> None:
                    async with send:
                        for index in mine:
                            await send.send(await trio.to_thread.run_sync(seal, index))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(producer)
                    async with recv:
                        async for frame in recv:
                            await stream.send_all(frame)
            else:
                for index in mine:
                    await stream.send_all(seal(index))
            await stream.send_all(INDEX.pack(END))
        ack = await stream.receive_some(1)
        if ack != b"k":
            raise RuntimeError("no acknowledgement")

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for k, stream in enumerate(socks):
            nursery.start_soon(send_conn, k, stream)
    elapsed = time.perf_counter() - start
    for stream in socks:
        await stream.aclose()
    if src_dir is not None:
        os.close(src_fd)
        src_dir.cleanup()
    return elapsed


# --- bare py-libp2p ---------------------------------------------------------------------------


async def libp2p_server(cfg: dict[str, Any], total: int) -> None:
    import multiaddr
    from bare_libp2p import bare_host
    from libp2p.custom_types import TProtocol

    host = bare_host("file-probe-receiver")
    share = total // cfg["streams"]

    async def handler(stream: Any) -> None:
        got = 0
        while got < share:
            data = await stream.read(CHUNK)
            if not data:
                raise EOFError("short stream")
            got += len(data)
        await stream.write(b"k")

    host.set_stream_handler(TProtocol(PROTOCOL), handler)
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        addr = str(host.get_addrs()[0])
        print(f"ready {host.get_id().to_base58()} {addr}", flush=True)
        await trio.sleep_forever()  # the parent ends this process once the sender is done


async def libp2p_client(cfg: dict[str, Any], total: int, peer: str, addr: str) -> float:
    import multiaddr
    from bare_libp2p import bare_host
    from libp2p.custom_types import TProtocol
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import PeerInfo

    host = bare_host("file-probe-sender")
    streams = cfg["streams"]
    share = total // streams
    data = os.urandom(share)
    chunks = [data[off : off + CHUNK] for off in range(0, share, CHUNK)]
    elapsed = 0.0
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        peer_id = ID.from_base58(peer)
        await host.connect(PeerInfo(peer_id, [multiaddr.Multiaddr(addr)]))

        async def one() -> None:
            stream = await host.new_stream(peer_id, [TProtocol(PROTOCOL)])
            for chunk in chunks:
                await stream.write(chunk)
            ack = await stream.read(1)
            if ack != b"k":
                raise RuntimeError("no acknowledgement")
            await stream.close()

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(streams):
                nursery.start_soon(one)
        elapsed = time.perf_counter() - start
    return elapsed


# --- CPU alone --------------------------------------------------------------------------------


def cpu_costs(total: int) -> dict[str, Any]:
    key, prefix, file_id = secrets.token_bytes(32), secrets.token_bytes(16), secrets.token_bytes(16)
    data = os.urandom(total)
    chunks = [data[off : off + CHUNK] for off in range(0, total, CHUNK)]
    out: dict[str, Any] = {}

    t = time.perf_counter()
    sealed = [
        crypto_aead_xchacha20poly1305_ietf_encrypt(c, file_id, nonce(prefix, i), key)
        for i, c in enumerate(chunks)
    ]
    out["encrypt"] = time.perf_counter() - t

    t = time.perf_counter()
    for i, s in enumerate(sealed):
        crypto_aead_xchacha20poly1305_ietf_decrypt(s, file_id, nonce(prefix, i), key)
    out["decrypt"] = time.perf_counter() - t

    t = time.perf_counter()
    for c in chunks:
        hashlib.blake2b(c, digest_size=32).digest()
    out["blake2b"] = time.perf_counter() - t

    t = time.perf_counter()
    for c in chunks:
        crypto_generichash(c, digest_size=32)
    out["sodium_blake2b"] = time.perf_counter() - t

    t = time.perf_counter()
    hash3 = chunk_hash("blake3")
    for c in chunks:
        hash3(c)
    out["blake3"] = time.perf_counter() - t

    openssl_encrypt, openssl_decrypt = aead("openssl", key, prefix)
    t = time.perf_counter()
    for i, c in enumerate(chunks):
        if openssl_encrypt(c, file_id, i) != sealed[i]:
            raise AssertionError("OpenSSL ChaCha20-Poly1305 under the HChaCha20 subkey differs")
    out["openssl_xchacha_encrypt"] = time.perf_counter() - t

    t = time.perf_counter()
    for i, s in enumerate(sealed):
        openssl_decrypt(s, file_id, i)
    out["openssl_xchacha_decrypt"] = time.perf_counter() - t

    t = time.perf_counter()
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    out["sha256"] = time.perf_counter() - t

    with tempfile.TemporaryDirectory(prefix="p2pid-probe-") as directory:
        path = os.path.join(directory, "w")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        t = time.perf_counter()
        for i, c in enumerate(chunks):
            os.pwrite(fd, c, i * CHUNK)
        os.fsync(fd)
        out["pwrite_fsync"] = time.perf_counter() - t
        os.close(fd)
    return out


# --- orchestration ----------------------------------------------------------------------------


def child_cmd(role: str, name: str, total: int, *extra: str) -> list[str]:
    here = os.path.abspath(__file__)
    return [sys.executable, here, f"--{role}", name, "--bytes", str(total), *extra]


def one_run(name: str, total: int) -> float:
    cfg = CONFIGS[name]
    env = dict(os.environ, PROBE_SECRETS=secrets.token_bytes(64).hex())
    server = subprocess.Popen(
        child_cmd("serve", name, total), stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert server.stdout is not None
        ready = server.stdout.readline().split()
        if not ready or ready[0] != "ready":
            raise RuntimeError(f"{name}: receiver did not start")
        client = subprocess.run(
            child_cmd("send", name, total, *ready[1:]),
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            timeout=CHILD_TIMEOUT,
            check=True,
        )
        elapsed = float(json.loads(client.stdout.strip().splitlines()[-1])["seconds"])
        if cfg["kind"] == "tcp":
            server.wait(timeout=30)
        return elapsed
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def run_cpu(total: int, runs: int) -> dict[str, Any]:
    results = []
    for _ in range(runs):
        out = subprocess.run(
            child_cmd("cpu", "cpu", total),
            stdout=subprocess.PIPE,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    record: dict[str, Any] = {"config": "cpu", "bytes": total, "runs": runs}
    for op in results[0]:
        seconds = statistics.median(r[op] for r in results)
        record[f"{op}_mb_s"] = mb_per_s(total, seconds)
        record[f"{op}_s_per_gib"] = round(seconds * (1 << 30) / total, 3)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="data size in MiB (default 256)")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (default 3)")
    parser.add_argument("--only", nargs="*", choices=list(CONFIGS), help="configurations to run")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--send", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", help=argparse.SUPPRESS)
    parser.add_argument("--bytes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.cpu:
        print(json.dumps(cpu_costs(args.bytes)), flush=True)
        return
    if args.serve:
        cfg = CONFIGS[args.serve]
        server: Callable[[dict[str, Any], int], Awaitable[None]] = (
            libp2p_server if cfg["kind"] == "libp2p" else tcp_server
        )
        trio.run(server, cfg, args.bytes)
        return
    if args.send:
        cfg = CONFIGS[args.send]
        if cfg["kind"] == "libp2p":
            seconds = trio.run(libp2p_client, cfg, args.bytes, args.rest[0], args.rest[1])
        else:
            seconds = trio.run(tcp_client, cfg, args.bytes, int(args.rest[0]))
        print(json.dumps({"seconds": seconds}), flush=True)
        return

    total = args.mib * CHUNK
    for name in args.only or list(CONFIGS):
        if CONFIGS[name]["kind"] == "cpu":
            print(json.dumps(run_cpu(total, args.runs)), flush=True)
            continue
        try:
            seconds = [one_run(name, total) for _ in range(args.runs)]
        except Exception as error:  # one broken configuration must not hide the others
            print(json.dumps({"config": name, "error": repr(error)}), flush=True)
            continue
        record = {
            "config": name,
            "bytes": total,
            "runs": args.runs,
            "median_mb_s": mb_per_s(total, statistics.median(seconds)),
            "runs_mb_s": [mb_per_s(total, s) for s in seconds],
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
