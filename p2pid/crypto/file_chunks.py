"""Encrypted file chunks (issue 8), sans-IO: sealing and opening one chunk, the chunk digests and
the content hash, and the receiver's record of which chunks are verified.

Each chunk is sealed on its own with XChaCha20-Poly1305-IETF under the file's key, so chunks can
be fetched in any order, from any holder, and a transfer resumes from the chunks already
verified. The nonce is the offer's 16-byte prefix followed by the chunk index (8 bytes,
big-endian): unique per (key, index), and the key is fresh for every file. The associated data
binds the file id, the chunk index, the chunk count, the chunk size and the file size: a chunk
moved to another index or another file does not authenticate, nor does one cut from a file of
another length. A missing (truncated) last chunk leaves a gap in `FileAssembler.missing()`; an
extra chunk has an index past the end and is refused.

XChaCha20-Poly1305 with nonce `prefix ‖ index` is ChaCha20-Poly1305-IETF under the subkey
HChaCha20(key, prefix) with nonce `0⁴ ‖ index`. The prefix is fixed per file, so `ChunkCipher`
derives the subkey once (libsodium's `crypto_core_hchacha20`) and lets OpenSSL (`cryptography`),
about twice as fast here, compute every chunk. Where either is missing it falls back to
libsodium's XChaCha20-Poly1305. The bytes are the same either way.

The content hash covers the whole file and can be checked chunk by chunk, from any holder, in
any order: each chunk's plaintext has a BLAKE3-256 digest; the manifest is the digests in order
(32 bytes per chunk); the content hash is BLAKE3 of the manifest in derive-key mode under
MANIFEST_CONTEXT. The receiver fetches the manifest (from anyone), checks it against the offer's
content hash (`check_manifest`), and then checks every chunk against its digest before writing
it: a chunk that decrypts but is not the sender's (a group member holds the key too) is refused
and its source known. A file whose every chunk matched its digest matches the content hash.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import struct
from collections.abc import Callable, Iterator
from typing import Final, TypeAlias

import blake3
import nacl.bindings
import nacl.exceptions
import nacl.utils
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from p2pid.wire.files import (
    DEFAULT_CHUNK_SIZE,
    FILE_ID_BYTES,
    KEY_BYTES,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    NONCE_PREFIX_BYTES,
    FileOffer,
    check_offer,
    chunk_count_for,
    safe_file_name,
)

TAG_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES

CHUNK_CONTEXT: Final = b"p2pid-file-chunk-v1\0"
MANIFEST_CONTEXT: Final = "p2pid 2026-11-22 file manifest v1"
DIGEST_BYTES: Final = 32

Bytes: TypeAlias = bytes | bytearray | memoryview

# Set to False to seal and open with libsodium alone (ChunkCipher's default).
USE_OPENSSL = True

_nonce_index = struct.Struct(">Q")
_bound = struct.Struct(">QQQQ")  # index, chunk count, chunk size, file size
_SUBKEY_NONCE_HEAD: Final = bytes(4)


class FileIntegrityError(ValueError):
    """File data that must not be handed over as (part of) the offered file."""


class ChunkError(FileIntegrityError):
    """A chunk that is refused: bad index, bad length, or it does not authenticate."""


class IncompleteFileError(FileIntegrityError):
    """The file is not complete yet: chunks are missing."""


class ContentHashError(FileIntegrityError):
    """A manifest (the chunk digests) that is not the one the offer's content hash names."""


# -- offers ------------------------------------------------------------------------------------


def new_offer(
    name: str,
    size: int,
    media_type: str,
    content_hash: bytes,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> FileOffer:
    """A checked offer with a fresh file id, key and nonce prefix. The name is made safe here
    (UnsafeFileNameError if it cannot be)."""
    return check_offer(
        FileOffer(
            file_id=nacl.utils.random(FILE_ID_BYTES),
            name=safe_file_name(name),
            size=size,
            media_type=media_type,
            content_hash=content_hash,
            key=nacl.utils.random(KEY_BYTES),
            chunk_size=chunk_size,
            chunk_count=chunk_count_for(size, chunk_size),
            nonce_prefix=nacl.utils.random(NONCE_PREFIX_BYTES),
        )
    )


def chunk_digest(plaintext: Bytes) -> bytes:
    """BLAKE3-256 of one chunk's plaintext."""
    return blake3.blake3(plaintext).digest()


def manifest_hash(manifest: Bytes) -> bytes:
    """The content hash of a file whose chunk digests, in order, are `manifest`."""
    return blake3.blake3(manifest, derive_key_context=MANIFEST_CONTEXT).digest()


def hash_file(
    path: str | os.PathLike[str], chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[bytes, bytes]:
    """(content hash, manifest) of a file cut in `chunk_size` chunks, read one chunk at a time."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE or chunk_size & (chunk_size - 1):
        raise ValueError(f"the chunk size {chunk_size} is not a power of two in range")
    digests = bytearray()
    buffer = bytearray(chunk_size)
    with open(path, "rb", buffering=0) as file:
        while True:
            count = file.readinto(buffer)
            if not count:
                break
            while count < chunk_size:  # a short read before the end of the file
                more = file.readinto(memoryview(buffer)[count:])
                if not more:
                    break
                count += more
            digests += chunk_digest(memoryview(buffer)[:count])
            if count < chunk_size:
                break
    if not digests:  # an empty file is one empty chunk
        digests += chunk_digest(b"")
    return manifest_hash(digests), bytes(digests)


def check_manifest(offer: FileOffer, manifest: Bytes) -> bytes:
    """The manifest, if it is the one the offer's content hash names; else ContentHashError."""
    if len(manifest) != offer.chunk_count * DIGEST_BYTES:
        raise ContentHashError(
            f"the manifest is {len(manifest)} bytes, not {offer.chunk_count} digests of "
            f"{DIGEST_BYTES}"
        )
    if manifest_hash(manifest) != offer.content_hash:
        raise ContentHashError("the manifest does not match the content hash of the offer")
    return bytes(manifest)


# -- chunks ------------------------------------------------------------------------------------


def chunk_offset(offer: FileOffer, index: int) -> int:
    """Where chunk `index`'s plaintext starts in the file."""
    _check_index(offer, index)
    return index * offer.chunk_size


def chunk_length(offer: FileOffer, index: int) -> int:
    """The plaintext length of chunk `index`: chunk_size, except the last chunk's."""
    _check_index(offer, index)
    if index < offer.chunk_count - 1:
        return offer.chunk_size
    return offer.size - index * offer.chunk_size


def sealed_length(offer: FileOffer, index: int) -> int:
    return chunk_length(offer, index) + TAG_BYTES


class ChunkCipher:
    """Seals and opens the chunks of one file. Build it once per file (it derives the subkey);
    it holds no per-chunk state, so threads may share it. Plaintexts and sealed chunks may be any
    bytes-like object of single bytes."""

    def __init__(self, offer: FileOffer, *, openssl: bool | None = None) -> None:
        """`openssl`: None uses OpenSSL if `USE_OPENSSL` is set and `openssl_available()`;
        False uses libsodium alone; True requires OpenSSL (RuntimeError without it)."""
        if len(offer.key) != KEY_BYTES or len(offer.nonce_prefix) != NONCE_PREFIX_BYTES:
            raise ValueError("the offer's key or nonce prefix has the wrong length")
        self.offer = offer
        self._aad_head = CHUNK_CONTEXT + offer.file_id
        self._bound = (offer.chunk_count, offer.chunk_size, offer.size)
        if openssl is None:
            openssl = USE_OPENSSL and openssl_available()
        elif openssl and not openssl_available():
            raise RuntimeError("OpenSSL's ChaCha20-Poly1305 or libsodium's HChaCha20 is missing")
        self._aead: ChaCha20Poly1305 | None = None
        if openssl:
            hchacha20 = _hchacha20()
            assert hchacha20 is not None  # openssl_available() said so
            self._aead = ChaCha20Poly1305(hchacha20(offer.key, offer.nonce_prefix))

    @property
    def uses_openssl(self) -> bool:
        return self._aead is not None

    def seal(self, index: int, plaintext: Bytes) -> bytes:
        """Chunk `index` encrypted and authenticated. ChunkError if it has the wrong length (a
        file that grew or shrank since it was offered)."""
        expected = chunk_length(self.offer, index)
        if len(plaintext) != expected:
            raise ChunkError(
                f"chunk {index} is {len(plaintext)} bytes of plaintext, not {expected}"
            )
        if self._aead is not None:
            return self._aead.encrypt(_subkey_nonce(index), plaintext, self._aad(index))
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            _as_bytes(plaintext), self._aad(index), self._nonce(index), self.offer.key
        )

    def open(self, index: int, sealed: Bytes) -> bytes:
        """Chunk `index`'s plaintext, authenticated, or ChunkError."""
        expected = sealed_length(self.offer, index)
        if len(sealed) != expected:
            raise ChunkError(
                f"chunk {index} is {len(sealed)} bytes, not {expected}: cut short, padded, "
                "or from another chunk or file"
            )
        try:
            if self._aead is not None:
                return self._aead.decrypt(_subkey_nonce(index), sealed, self._aad(index))
            return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                _as_bytes(sealed), self._aad(index), self._nonce(index), self.offer.key
            )
        except (InvalidTag, nacl.exceptions.CryptoError):
            raise ChunkError(
                f"chunk {index} does not authenticate: tampered, or from another index or file"
            ) from None

    def _nonce(self, index: int) -> bytes:
        return self.offer.nonce_prefix + _nonce_index.pack(index)

    def _aad(self, index: int) -> bytes:
        return self._aad_head + _bound.pack(index, *self._bound)


def seal_chunk(offer: FileOffer, index: int, plaintext: Bytes) -> bytes:
    """`ChunkCipher(offer).seal(index, plaintext)`, with the cipher of recent offers cached."""
    return _cipher(offer, USE_OPENSSL).seal(index, plaintext)


def open_chunk(offer: FileOffer, index: int, sealed: Bytes) -> bytes:
    """`ChunkCipher(offer).open(index, sealed)`, with the cipher of recent offers cached."""
    return _cipher(offer, USE_OPENSSL).open(index, sealed)


@functools.lru_cache(maxsize=32)
def _cipher(offer: FileOffer, openssl: bool) -> ChunkCipher:
    return ChunkCipher(offer, openssl=openssl and openssl_available())


@functools.cache
def openssl_available() -> bool:
    """Whether libsodium's HChaCha20 and OpenSSL's ChaCha20-Poly1305 are both there and together
    give libsodium's XChaCha20-Poly1305 bytes (checked once on a known input)."""
    hchacha20 = _hchacha20()
    if hchacha20 is None:
        return False
    key, nonce, message, aad = bytes(range(32)), bytes(range(24)), b"p2pid", b"chunk"
    try:
        aead = ChaCha20Poly1305(hchacha20(key, nonce[:16]))
    except UnsupportedAlgorithm:
        return False
    ours = aead.encrypt(_SUBKEY_NONCE_HEAD + nonce[16:], message, aad)
    return ours == nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        message, aad, nonce, key
    )


@functools.cache
def _hchacha20() -> Callable[[bytes, bytes], bytes] | None:
    """libsodium's `crypto_core_hchacha20(out, in, key, NULL)`, from the library PyNaCl bundles
    (PyNaCl has no binding for it), or None where it is not exported."""
    spec = importlib.util.find_spec("nacl._sodium")
    if spec is None or spec.origin is None:
        return None
    try:
        core = ctypes.CDLL(spec.origin).crypto_core_hchacha20
    except (OSError, AttributeError):
        return None
    core.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p)
    core.restype = ctypes.c_int

    def hchacha20(key: bytes, nonce: bytes) -> bytes:
        if len(key) != KEY_BYTES or len(nonce) != NONCE_PREFIX_BYTES:
            raise ValueError("HChaCha20 takes a 32-byte key and a 16-byte input")
        out = ctypes.create_string_buffer(KEY_BYTES)
        if core(out, nonce, key, None) != 0:
            raise RuntimeError("crypto_core_hchacha20 failed")
        return out.raw

    return hchacha20


def _subkey_nonce(index: int) -> bytes:
    return _SUBKEY_NONCE_HEAD + _nonce_index.pack(index)


def _as_bytes(data: Bytes) -> bytes:
    return data if isinstance(data, bytes) else bytes(data)


def _check_index(offer: FileOffer, index: int) -> None:
    if not 0 <= index < offer.chunk_count:
        raise ChunkError(f"no chunk {index}: the file has chunks 0..{offer.chunk_count - 1}")


# -- the receiver's side -----------------------------------------------------------------------


class FileAssembler:
    """Which chunks of one file are verified, each against its digest in the manifest.

    Sans-IO: the caller writes each plaintext `accept` returns at `chunk_offset(index)` of the
    partial file and saves `bitmap()` once the data is durable. `finish()` says whether the file
    may be moved into place. `verify` and `record` split `accept` for a caller that opens chunks
    outside a lock it holds around this object (`verify` changes nothing).
    """

    def __init__(
        self,
        offer: FileOffer,
        manifest: bytes,
        bitmap: bytes | None = None,
        *,
        openssl: bool | None = None,
    ) -> None:
        """`manifest`: the file's chunk digests (ContentHashError if it is not the offer's).
        `bitmap`: a saved `bitmap()` of the same offer, to resume. `openssl`: as for
        `ChunkCipher`."""
        self.offer = check_offer(offer)
        self._manifest = check_manifest(offer, manifest)
        self.cipher = ChunkCipher(offer, openssl=openssl)
        size = (offer.chunk_count + 7) // 8
        if bitmap is None:
            self._bits = bytearray(size)
        else:
            if len(bitmap) != size or (
                offer.chunk_count % 8 and bitmap[-1] >> (offer.chunk_count % 8)
            ):
                raise ValueError("the saved bitmap does not fit this file")
            self._bits = bytearray(bitmap)
        self._verified = sum(byte.bit_count() for byte in self._bits)

    @property
    def verified(self) -> int:
        """How many chunks are verified."""
        return self._verified

    @property
    def complete(self) -> bool:
        """Every chunk is verified."""
        return self._verified == self.offer.chunk_count

    def has(self, index: int) -> bool:
        _check_index(self.offer, index)
        return bool(self._bits[index >> 3] >> (index & 7) & 1)

    def bitmap(self) -> bytes:
        """Bit i (byte i // 8, bit i % 8, least significant first) is set if chunk i is
        verified."""
        return bytes(self._bits)

    def accept(self, index: int, sealed: Bytes) -> bytes | None:
        """The chunk's plaintext, to write at `chunk_offset(index)`; None for a chunk verified
        before (a duplicate: nothing to write). ChunkError for a chunk that is refused."""
        if self.has(index):
            return None
        plaintext = self.verify(index, sealed)
        self.record(index)
        return plaintext

    def verify(self, index: int, sealed: Bytes) -> bytes:
        """Open the chunk and check it against its digest; its plaintext, or ChunkError."""
        plaintext = self.cipher.open(index, sealed)
        self.check_plaintext(index, plaintext)
        return plaintext

    def check_plaintext(self, index: int, plaintext: Bytes) -> None:
        """ChunkError unless `plaintext` is chunk `index` of the file (read back from disk, or
        just opened)."""
        _check_index(self.offer, index)
        if len(plaintext) != chunk_length(self.offer, index):
            raise ChunkError(f"chunk {index} has the wrong length")
        expected = self._manifest[index * DIGEST_BYTES : (index + 1) * DIGEST_BYTES]
        if chunk_digest(plaintext) != expected:
            raise ChunkError(f"chunk {index} is not the sender's: its digest does not match")

    def record(self, index: int) -> bool:
        """Mark chunk `index` verified (the caller checked it with `verify`). False if it was
        verified already."""
        if self.has(index):
            return False
        self._bits[index >> 3] |= 1 << (index & 7)
        self._verified += 1
        return True

    def forget(self, index: int) -> None:
        """Chunk `index` is not verified any more (it did not read back from disk)."""
        if self.has(index):
            self._bits[index >> 3] &= ~(1 << (index & 7)) & 0xFF
            self._verified -= 1

    def missing(self) -> list[range]:
        """The chunk indexes still to fetch, as ranges in order."""
        return list(self._missing())

    def _missing(self) -> Iterator[range]:
        start: int | None = None
        count = self.offer.chunk_count
        for byte_index, byte in enumerate(self._bits):
            if byte == 0xFF and start is None:
                continue
            if byte == 0 and start is not None:
                continue
            for bit in range(8):
                index = byte_index * 8 + bit
                if index >= count:
                    break
                if not byte >> bit & 1:
                    if start is None:
                        start = index
                elif start is not None:
                    yield range(start, index)
                    start = None
        if start is not None:
            yield range(start, count)

    def finish(self) -> None:
        """Return if every chunk is verified (so the file matches the content hash); else
        IncompleteFileError (nothing may be reported complete)."""
        if not self.complete:
            raise IncompleteFileError(
                f"{self.offer.chunk_count - self._verified} of {self.offer.chunk_count} chunks "
                "are missing"
            )
