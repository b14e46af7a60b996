"""Encrypted file chunks (issue 8), sans-IO: sealing and opening one chunk, and the receiver's
record of which chunks are verified and how far the content hash has got.

Each chunk is sealed on its own with XChaCha20-Poly1305-IETF (libsodium) under the file's key, so
chunks can be fetched in any order, from any holder, and a transfer resumes from the chunks
already verified. The nonce is the offer's 16-byte prefix followed by the chunk index (8 bytes,
big-endian): unique per (key, index), and the key is fresh for every file. The associated data
binds the file id, the chunk index, the chunk count, the chunk size and the file size: a chunk
moved to another index or another file does not authenticate, nor does one cut from a file of
another length. A missing (truncated) last chunk leaves a gap in `FileAssembler.missing()`; an
extra chunk has an index past the end and is refused.

The content hash (BLAKE2b-256 of the plaintext, in order) is checked before a file is reported
complete. Chunks arrive out of order, and the whole file must never sit in memory, so the
assembler keeps a hasher over the contiguous verified prefix (chunks 0..k-1): after storing a
chunk, the caller asks `hash_next()` for the next chunk the hasher needs and feeds it with
`feed_hash`, reading it back from the partial file when it arrived ahead of the prefix. Each chunk
is hashed once, and memory holds at most one chunk. After a restart the hasher state is gone: the
resumed assembler starts hashing from chunk 0 again (reading back the verified chunks).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.utils

from p2pid.wire.files import (
    DEFAULT_CHUNK_SIZE,
    FILE_ID_BYTES,
    HASH_BYTES,
    KEY_BYTES,
    NONCE_PREFIX_BYTES,
    FileOffer,
    check_offer,
    chunk_count_for,
    safe_file_name,
)

TAG_BYTES: Final = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES
HASH_READ_BYTES: Final = 1024 * 1024

CHUNK_CONTEXT: Final = b"p2pid-file-chunk-v1\0"

_nonce_index = struct.Struct(">Q")
_bound = struct.Struct(">QQQQ")  # index, chunk count, chunk size, file size


class FileIntegrityError(ValueError):
    """File data that must not be handed over as (part of) the offered file."""


class ChunkError(FileIntegrityError):
    """A chunk that is refused: bad index, bad length, or it does not authenticate."""


class IncompleteFileError(FileIntegrityError):
    """The file is not complete yet: chunks are missing or not hashed."""


class ContentHashError(FileIntegrityError):
    """Every chunk authenticated, but the plaintext does not hash to the offer's content hash."""


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


def content_hasher() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=HASH_BYTES)


def hash_file(path: str | os.PathLike[str]) -> bytes:
    """BLAKE2b-256 of a file's content, read 1 MiB at a time."""
    hasher = content_hasher()
    buffer = bytearray(HASH_READ_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        while read := file.readinto(buffer):
            hasher.update(view[:read])
    return hasher.digest()


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


def seal_chunk(offer: FileOffer, index: int, plaintext: bytes) -> bytes:
    """Chunk `index` encrypted and authenticated. ChunkError if it has the wrong length (a file
    that grew or shrank since it was offered)."""
    expected = chunk_length(offer, index)
    if len(plaintext) != expected:
        raise ChunkError(f"chunk {index} is {len(plaintext)} bytes of plaintext, not {expected}")
    return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        bytes(plaintext), _associated_data(offer, index), _nonce(offer, index), offer.key
    )


def open_chunk(offer: FileOffer, index: int, ciphertext: bytes) -> bytes:
    """Chunk `index`'s plaintext, authenticated, or ChunkError."""
    expected = sealed_length(offer, index)
    if len(ciphertext) != expected:
        raise ChunkError(
            f"chunk {index} is {len(ciphertext)} bytes, not {expected}: cut short, padded, "
            "or from another chunk or file"
        )
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            bytes(ciphertext), _associated_data(offer, index), _nonce(offer, index), offer.key
        )
    except nacl.exceptions.CryptoError:
        raise ChunkError(
            f"chunk {index} does not authenticate: tampered, or from another index or file"
        ) from None


def _check_index(offer: FileOffer, index: int) -> None:
    if not 0 <= index < offer.chunk_count:
        raise ChunkError(f"no chunk {index}: the file has chunks 0..{offer.chunk_count - 1}")


def _nonce(offer: FileOffer, index: int) -> bytes:
    return offer.nonce_prefix + _nonce_index.pack(index)


def _associated_data(offer: FileOffer, index: int) -> bytes:
    return (
        CHUNK_CONTEXT
        + offer.file_id
        + _bound.pack(index, offer.chunk_count, offer.chunk_size, offer.size)
    )


# -- the receiver's side -----------------------------------------------------------------------


class FileAssembler:
    """Which chunks of one file are verified, and the content hash over the verified prefix.

    Sans-IO: the caller writes each plaintext `accept` returns at `chunk_offset(index)` of the
    partial file, saves `bitmap()` once the data is durable, and feeds the hasher (see the module
    docstring). `finish()` says whether the file may be moved into place.
    """

    def __init__(self, offer: FileOffer, bitmap: bytes | None = None) -> None:
        """`bitmap`: a saved `bitmap()` of the same offer, to resume."""
        self.offer = check_offer(offer)
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
        self._prefix = 0
        self._hashed = 0
        self._hasher = content_hasher()
        self._advance_prefix()

    @property
    def verified(self) -> int:
        """How many chunks are verified."""
        return self._verified

    @property
    def complete(self) -> bool:
        """Every chunk is verified (the content hash may still be unchecked)."""
        return self._verified == self.offer.chunk_count

    def has(self, index: int) -> bool:
        _check_index(self.offer, index)
        return bool(self._bits[index >> 3] >> (index & 7) & 1)

    def bitmap(self) -> bytes:
        """Bit i (byte i // 8, bit i % 8, least significant first) is set if chunk i is
        verified."""
        return bytes(self._bits)

    def accept(self, index: int, ciphertext: bytes) -> bytes | None:
        """The chunk's plaintext, to write at `chunk_offset(index)`; None for a chunk verified
        before (a duplicate: nothing to write). ChunkError for a chunk that is refused."""
        if self.has(index):
            return None
        plaintext = open_chunk(self.offer, index, ciphertext)
        self._bits[index >> 3] |= 1 << (index & 7)
        self._verified += 1
        self._advance_prefix()
        return plaintext

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

    def hash_next(self) -> int | None:
        """The index of the chunk the hasher needs next, if it is verified; else None."""
        return self._hashed if self._hashed < self._prefix else None

    def feed_hash(self, index: int, plaintext: bytes) -> None:
        """Hash chunk `index`, the one `hash_next()` named."""
        if index != self.hash_next():
            raise ValueError(f"the hasher needs chunk {self.hash_next()}, not {index}")
        if len(plaintext) != chunk_length(self.offer, index):
            raise ChunkError(f"chunk {index} read back with the wrong length")
        self._hasher.update(plaintext)
        self._hashed += 1

    def finish(self) -> None:
        """Return if the file is complete and hashes to the offer's content hash; else
        IncompleteFileError or ContentHashError (nothing may be reported complete)."""
        if not self.complete:
            raise IncompleteFileError(
                f"{self.offer.chunk_count - self._verified} of {self.offer.chunk_count} chunks "
                "are missing"
            )
        if self._hashed < self.offer.chunk_count:
            raise IncompleteFileError(
                f"only {self._hashed} of {self.offer.chunk_count} chunks are hashed"
            )
        if self._hasher.digest() != self.offer.content_hash:
            raise ContentHashError("the file does not match the content hash of the offer")

    def _advance_prefix(self) -> None:
        count = self.offer.chunk_count
        while self._prefix < count and self._bits[self._prefix >> 3] >> (self._prefix & 7) & 1:
            self._prefix += 1
