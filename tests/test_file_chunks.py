"""File offers, encrypted chunks, the manifest, the assembler and safe file names (issue 8)."""

from __future__ import annotations

import os
import random
import stat
import struct
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import msgspec
import nacl.bindings
import nacl.exceptions
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pid.crypto import file_chunks
from p2pid.crypto.file_chunks import (
    CHUNK_CONTEXT,
    DIGEST_BYTES,
    MANIFEST_CONTEXT,
    TAG_BYTES,
    ChunkCipher,
    ChunkError,
    ContentHashError,
    FileAssembler,
    IncompleteFileError,
    check_manifest,
    chunk_digest,
    chunk_length,
    chunk_offset,
    hash_file,
    manifest_hash,
    new_offer,
    open_chunk,
    openssl_available,
    seal_chunk,
)
from p2pid.wire.files import (
    DEFAULT_CHUNK_SIZE,
    MAX_NAME_BYTES,
    MIN_CHUNK_SIZE,
    FileOffer,
    FileOfferError,
    UnsafeFileNameError,
    check_offer,
    decode_offer,
    encode_offer,
    safe_file_name,
)

CHUNK = MIN_CHUNK_SIZE

# The wire format, stated again here rather than taken from the module.
CONTEXT = "p2pid 2026-11-22 file manifest v1"


def blake(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def manifest_of(data: bytes, chunk_size: int = CHUNK) -> bytes:
    """The chunk digests in order, computed here: BLAKE3-256 of each chunk's plaintext (an empty
    file is one empty chunk)."""
    starts = range(0, max(len(data), 1), chunk_size)
    return b"".join(blake(data[start : start + chunk_size]) for start in starts)


def content_hash_of(data: bytes, chunk_size: int = CHUNK) -> bytes:
    """BLAKE3 in derive-key mode under the manifest context, over the chunk digests."""
    return blake3.blake3(manifest_of(data, chunk_size), derive_key_context=CONTEXT).digest()


def offer_for(data: bytes, name: str = "report.pdf") -> FileOffer:
    return new_offer(name, len(data), "application/pdf", content_hash_of(data), chunk_size=CHUNK)


def plain(offer: FileOffer, data: bytes, index: int) -> bytes:
    return data[chunk_offset(offer, index) :][: chunk_length(offer, index)]


def seal_all(offer: FileOffer, data: bytes) -> list[bytes]:
    return [seal_chunk(offer, i, plain(offer, data, i)) for i in range(offer.chunk_count)]


def forge(offer: FileOffer, data: bytes, index: int) -> bytes:
    """What a group member (who holds the file key) could send: chunk `index` sealed correctly,
    of the right length, but with other plaintext."""
    other = bytearray(plain(offer, data, index))
    other[len(other) // 2] ^= 1
    return seal_chunk(offer, index, other)


def receive(offer: FileOffer, manifest: bytes, sealed: dict[int, bytes], order: list[int]) -> bytes:
    """Drives an assembler like the daemon would: writes each accepted chunk into a buffer
    standing for the partial file."""
    assembler = FileAssembler(offer, manifest)
    partial = bytearray(offer.size)
    for index in order:
        plaintext = assembler.accept(index, sealed[index])
        if plaintext is not None:
            start = chunk_offset(offer, index)
            partial[start : start + len(plaintext)] = plaintext
    assembler.finish()
    for index in range(offer.chunk_count):
        assembler.check_plaintext(index, plain(offer, bytes(partial), index))
    return bytes(partial)


def state(assembler: FileAssembler) -> tuple[bytes, int, list[range], bool]:
    return assembler.bitmap(), assembler.verified, assembler.missing(), assembler.complete


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17, 4 * CHUNK])
def test_round_trip(size: int) -> None:
    data = os.urandom(size)
    offer = offer_for(data)
    assert offer.chunk_count == max(1, -(-size // CHUNK))
    sealed = seal_all(offer, data)
    assert all(len(c) == chunk_length(offer, i) + TAG_BYTES for i, c in enumerate(sealed))
    manifest = manifest_of(data)
    assert len(manifest) == offer.chunk_count * DIGEST_BYTES
    assert receive(offer, manifest, dict(enumerate(sealed)), list(range(offer.chunk_count))) == (
        data
    )


def test_empty_file_is_one_empty_chunk() -> None:
    offer = offer_for(b"")
    assert (offer.chunk_count, chunk_length(offer, 0)) == (1, 0)
    manifest = manifest_of(b"")
    assert manifest == blake(b"")
    assembler = FileAssembler(offer, manifest)
    with pytest.raises(IncompleteFileError):
        assembler.finish()
    assert assembler.missing() == [range(0, 1)]
    assert assembler.accept(0, seal_chunk(offer, 0, b"")) == b""
    assert assembler.missing() == []
    assembler.finish()


def test_out_of_order_and_duplicates() -> None:
    data = os.urandom(5 * CHUNK + 3)
    offer = offer_for(data)
    sealed = dict(enumerate(seal_all(offer, data)))
    order = [4, 2, 2, 5, 0, 4, 3, 1, 0, 5]
    assert receive(offer, manifest_of(data), sealed, order) == data


def test_duplicate_returns_none_and_missing_ranges() -> None:
    data = os.urandom(10 * CHUNK)
    offer = offer_for(data)
    sealed = seal_all(offer, data)
    assembler = FileAssembler(offer, manifest_of(data))
    assert assembler.missing() == [range(0, 10)]
    for index in (1, 2, 5, 9):
        assert assembler.accept(index, sealed[index]) == plain(offer, data, index)
    assert assembler.accept(2, sealed[2]) is None
    assert assembler.verified == 4
    assert assembler.missing() == [range(0, 1), range(3, 5), range(6, 9)]
    assert assembler.bitmap() == bytes([0b00100110, 0b00000010])
    for index in (0, 3, 4, 6, 7, 8):
        assembler.accept(index, sealed[index])
    assert assembler.missing() == []
    assembler.finish()


def test_resume_from_bitmap() -> None:
    data = os.urandom(11 * CHUNK + 5)
    offer = offer_for(data)
    manifest = manifest_of(data)
    sealed = seal_all(offer, data)
    first = FileAssembler(offer, manifest)
    for index in (0, 3, 8, 11):
        first.accept(index, sealed[index])
    resumed = FileAssembler(offer, manifest, first.bitmap())
    assert resumed.missing() == first.missing() == [range(1, 3), range(4, 8), range(9, 11)]
    assert resumed.verified == 4
    assert resumed.accept(3, sealed[3]) is None
    with pytest.raises(ValueError, match="bitmap"):
        FileAssembler(offer, manifest, b"\xff\xff")  # bits past the last chunk
    with pytest.raises(ValueError, match="bitmap"):
        FileAssembler(offer, manifest, b"\x00")
    with pytest.raises(ContentHashError):
        FileAssembler(offer, manifest_of(data[:-1]), first.bitmap())


# -- the content hash and the manifest ---------------------------------------------------------


def test_chunk_digest_is_blake3() -> None:
    # What `b3sum` prints.
    assert chunk_digest(b"").hex() == (
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    )
    assert chunk_digest(bytearray(b"abc")).hex() == (
        "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
    )
    data = os.urandom(CHUNK + 1)
    assert chunk_digest(memoryview(data)) == blake(data)
    assert len(chunk_digest(data)) == DIGEST_BYTES == 32


def test_manifest_hash_is_derive_key_blake3() -> None:
    assert MANIFEST_CONTEXT == CONTEXT
    manifest = manifest_of(os.urandom(3 * CHUNK))
    expected = blake3.blake3(manifest, derive_key_context=CONTEXT).digest()
    assert manifest_hash(manifest) == manifest_hash(bytearray(manifest)) == expected
    assert manifest_hash(memoryview(manifest)) == expected
    assert expected != blake(manifest)  # not plain BLAKE3 of the digests
    # Pinned: the content hash of an empty file, and of "abc" (one chunk at any chunk size).
    assert manifest_hash(blake(b"")).hex() == (
        "c3c448830d1e7c84ca99d22623fdc5f59b67c14f10902c4f12cf71e300e32860"
    )
    assert manifest_hash(blake(b"abc")).hex() == (
        "3e5d8d09ce3898f86eb06f5e5271b855a017e7ca8479ef121791dce44c8d119a"
    )


@pytest.mark.parametrize(
    ("size", "chunks"),
    [
        (0, 1),
        (1, 1),
        (CHUNK - 1, 1),
        (CHUNK, 1),
        (CHUNK + 1, 2),
        (3 * CHUNK, 3),
        (3 * CHUNK + 17, 4),
    ],
)
def test_hash_file_is_manifest_hash_of_chunk_digests(
    tmp_path: Path, size: int, chunks: int
) -> None:
    data = os.urandom(size)
    path = tmp_path / "file"
    path.write_bytes(data)
    content_hash, manifest = hash_file(path, CHUNK)
    assert len(manifest) == chunks * DIGEST_BYTES  # k digests for k chunks, no empty one after
    digests = [manifest[i : i + DIGEST_BYTES] for i in range(0, len(manifest), DIGEST_BYTES)]
    assert digests == [blake(data[i * CHUNK : (i + 1) * CHUNK]) for i in range(chunks)]
    assert manifest == manifest_of(data)
    assert content_hash == blake3.blake3(manifest, derive_key_context=CONTEXT).digest()
    assert content_hash == content_hash_of(data) == manifest_hash(manifest)
    assert content_hash != blake(data)  # not what `b3sum` prints any more
    assert hash_file(str(path), CHUNK) == (content_hash, manifest)
    offer = offer_for(data)
    assert check_manifest(offer, manifest) == manifest


def test_hash_file_empty_and_default_chunk_size(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    for chunk_size in (CHUNK, DEFAULT_CHUNK_SIZE):
        assert hash_file(tmp_path / "empty", chunk_size) == (
            manifest_hash(blake(b"")),
            blake(b""),
        )
    data = os.urandom(DEFAULT_CHUNK_SIZE + 5)
    (tmp_path / "big").write_bytes(data)
    content_hash, manifest = hash_file(tmp_path / "big")
    assert manifest == blake(data[:DEFAULT_CHUNK_SIZE]) + blake(data[DEFAULT_CHUNK_SIZE:])
    assert content_hash == content_hash_of(data, DEFAULT_CHUNK_SIZE)
    # The chunk size is part of what is hashed.
    assert hash_file(tmp_path / "big", CHUNK) == (content_hash_of(data), manifest_of(data))
    assert content_hash_of(data) != content_hash
    with pytest.raises(FileNotFoundError):
        hash_file(tmp_path / "absent")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_hash_file_survives_short_reads(tmp_path: Path) -> None:
    """A pipe hands out what has been written so far: reads come back short mid-chunk."""
    data = os.urandom(3 * CHUNK + 1000)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert stat.S_ISFIFO(fifo.stat().st_mode)

    def write() -> None:
        with open(fifo, "wb", buffering=0) as pipe:
            for start in range(0, len(data), 5000):
                pipe.write(data[start : start + 5000])

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert hash_file(fifo, CHUNK) == (content_hash_of(data), manifest_of(data))
    finally:
        writer.join()


def test_check_manifest_refuses_what_the_offer_does_not_name() -> None:
    data = os.urandom(3 * CHUNK + 100)
    offer = offer_for(data)
    manifest = manifest_of(data)
    assert check_manifest(offer, manifest) == manifest
    assert check_manifest(offer, bytearray(manifest)) == manifest
    assert type(check_manifest(offer, memoryview(manifest))) is bytes
    for short in (b"", manifest[:-DIGEST_BYTES], manifest[:-1]):
        with pytest.raises(ContentHashError, match="not 4"):
            check_manifest(offer, short)
    for long in (manifest + blake(b""), manifest + b"\0", manifest * 2):
        with pytest.raises(ContentHashError, match="not 4"):
            check_manifest(offer, long)
    for bit in (0, 7, 8 * DIGEST_BYTES + 3, 8 * len(manifest) // 2, 8 * len(manifest) - 1):
        altered = bytearray(manifest)
        altered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ContentHashError, match="does not match"):
            check_manifest(offer, altered)
    swapped = manifest[DIGEST_BYTES : 2 * DIGEST_BYTES] + manifest[:DIGEST_BYTES] + manifest[64:]
    with pytest.raises(ContentHashError, match="does not match"):
        check_manifest(offer, swapped)
    with pytest.raises(ContentHashError, match="does not match"):
        check_manifest(offer, manifest_of(os.urandom(len(data))))


def test_assembler_with_a_wrong_manifest() -> None:
    data = os.urandom(2 * CHUNK + 1)
    offer = offer_for(data)
    manifest = manifest_of(data)
    altered = bytearray(manifest)
    altered[-1] ^= 0x80
    for wrong in (
        bytes(altered),
        manifest[:-DIGEST_BYTES],
        manifest + manifest[:DIGEST_BYTES],
        b"",
        manifest_of(data, 2 * CHUNK),  # the same file cut another way
        manifest_of(os.urandom(len(data))),
    ):
        with pytest.raises(ContentHashError):
            FileAssembler(offer, wrong)
    # An offer whose content hash names other data: the real manifest is refused before any chunk.
    liar = new_offer("a.bin", len(data), "application/octet-stream", content_hash_of(b"x"), CHUNK)
    with pytest.raises(ContentHashError, match="does not match"):
        FileAssembler(liar, manifest)


# -- bad chunks --------------------------------------------------------------------------------


@pytest.fixture
def three() -> tuple[FileOffer, list[bytes], bytes]:
    data = os.urandom(2 * CHUNK + 100)
    offer = offer_for(data)
    return offer, seal_all(offer, data), data


def test_tampered_chunk(three: tuple[FileOffer, list[bytes], bytes]) -> None:
    offer, sealed, data = three
    for position in (0, len(sealed[1]) // 2, len(sealed[1]) - 1):
        bad = bytearray(sealed[1])
        bad[position] ^= 1
        with pytest.raises(ChunkError, match="does not authenticate"):
            open_chunk(offer, 1, bytes(bad))
    assembler = FileAssembler(offer, manifest_of(data))
    with pytest.raises(ChunkError):
        assembler.accept(1, sealed[1][:-1] + bytes([sealed[1][-1] ^ 0x80]))
    assert not assembler.has(1)
    assert assembler.accept(1, sealed[1]) is not None  # the good copy is still taken


def test_reordered_chunk(three: tuple[FileOffer, list[bytes], bytes]) -> None:
    offer, sealed, _ = three
    with pytest.raises(ChunkError, match="does not authenticate"):
        open_chunk(offer, 1, sealed[0])
    with pytest.raises(ChunkError, match="does not authenticate"):
        open_chunk(offer, 0, sealed[1])


def test_chunk_from_another_file(three: tuple[FileOffer, list[bytes], bytes]) -> None:
    offer, sealed, data = three
    other = offer_for(data)
    assert other.key != offer.key and other.file_id != offer.file_id
    with pytest.raises(ChunkError, match="does not authenticate"):
        open_chunk(other, 0, sealed[0])
    with pytest.raises(ChunkError, match="does not authenticate"):
        FileAssembler(other, manifest_of(data)).accept(0, sealed[0])
    # Even under the same key and nonces, another file id does not authenticate.
    same_key = msgspec.structs.replace(offer, file_id=other.file_id)
    with pytest.raises(ChunkError, match="does not authenticate"):
        open_chunk(same_key, 0, sealed[0])


def test_chunk_of_a_file_of_another_size(three: tuple[FileOffer, list[bytes], bytes]) -> None:
    offer, sealed, _ = three
    longer = check_offer(msgspec.structs.replace(offer, size=offer.size + 1))
    with pytest.raises(ChunkError, match="does not authenticate"):
        open_chunk(longer, 0, sealed[0])


def test_truncated_file(three: tuple[FileOffer, list[bytes], bytes]) -> None:
    offer, sealed, data = three
    assembler = FileAssembler(offer, manifest_of(data))
    partial = bytearray()
    for index in (0, 1):
        plaintext = assembler.accept(index, sealed[index])
        assert plaintext is not None
        partial += plaintext
    assert bytes(partial) == data[: 2 * CHUNK]
    assert assembler.missing() == [range(2, 3)]
    assert not assembler.complete
    with pytest.raises(IncompleteFileError, match="1 of 3 chunks are missing"):
        assembler.finish()


def test_extra_chunk(three: tuple[FileOffer, list[bytes], bytes]) -> None:
    offer, sealed, data = three
    assembler = FileAssembler(offer, manifest_of(data))
    with pytest.raises(ChunkError, match="no chunk 3"):
        assembler.accept(3, sealed[2])
    with pytest.raises(ChunkError, match="no chunk 3"):
        assembler.verify(3, sealed[2])
    with pytest.raises(ChunkError, match="no chunk 3"):
        assembler.check_plaintext(3, b"")
    with pytest.raises(ChunkError, match="no chunk -1"):
        open_chunk(offer, -1, sealed[0])
    with pytest.raises(ChunkError, match="no chunk 3"):
        seal_chunk(offer, 3, b"x")
    assert state(assembler) == (b"\x00", 0, [range(0, 3)], False)


def test_bad_lengths(three: tuple[FileOffer, list[bytes], bytes]) -> None:
    offer, sealed, _ = three
    with pytest.raises(ChunkError, match="not"):
        open_chunk(offer, 0, sealed[0] + b"\0")
    with pytest.raises(ChunkError, match="cut short"):
        open_chunk(offer, 0, sealed[0][:-1])
    with pytest.raises(ChunkError, match="cut short"):
        open_chunk(offer, 2, sealed[0])  # a full chunk where the short last one belongs
    with pytest.raises(ChunkError, match="not 100"):
        seal_chunk(offer, 2, b"\0" * 101)  # the file grew since it was offered
    with pytest.raises(ChunkError, match=f"not {CHUNK}"):
        seal_chunk(offer, 0, b"\0" * (CHUNK - 1))


# -- chunks checked against the manifest -------------------------------------------------------


@pytest.mark.parametrize(
    "openssl", [pytest.param(None, id="default"), pytest.param(False, id="sodium")]
)
def test_chunk_sealed_by_a_group_member_is_refused(
    three: tuple[FileOffer, list[bytes], bytes], openssl: bool | None
) -> None:
    """Anyone holding the file key can seal a chunk that authenticates; only the sender's
    plaintext matches the manifest."""
    offer, sealed, data = three
    assembler = FileAssembler(offer, manifest_of(data), openssl=openssl)
    assembler.accept(0, sealed[0])
    before = state(assembler)
    moved = seal_chunk(offer, 1, plain(offer, data, 0))  # chunk 0's plaintext at index 1
    for index, forged in ((1, forge(offer, data, 1)), (2, forge(offer, data, 2)), (1, moved)):
        assert open_chunk(offer, index, forged) != plain(offer, data, index)  # it authenticates
        with pytest.raises(ChunkError, match="not the sender's"):
            assembler.verify(index, forged)
        with pytest.raises(ChunkError, match="not the sender's"):
            assembler.accept(index, forged)
        assert state(assembler) == before
        assert not assembler.has(index)
    for index in (1, 2):  # the sender's chunks are still taken
        assert assembler.accept(index, sealed[index]) == plain(offer, data, index)
    assembler.finish()


def test_verify_changes_nothing_and_record_marks(
    three: tuple[FileOffer, list[bytes], bytes],
) -> None:
    offer, sealed, data = three
    assembler = FileAssembler(offer, manifest_of(data))
    before = state(assembler)
    assert assembler.verify(1, memoryview(sealed[1])) == plain(offer, data, 1)
    assert state(assembler) == before
    assert assembler.record(1) is True
    assert assembler.record(1) is False
    assert (assembler.has(1), assembler.verified, assembler.missing()) == (
        True,
        1,
        [range(0, 1), range(2, 3)],
    )
    assert assembler.verify(1, sealed[1]) == plain(offer, data, 1)  # still no state
    assert assembler.accept(1, sealed[1]) is None
    with pytest.raises(ChunkError, match="no chunk 3"):
        assembler.record(3)
    for index in (0, 2):
        assert assembler.record(index) is True
    assembler.finish()


def test_check_plaintext_refuses_a_chunk_altered_on_disk(
    tmp_path: Path, three: tuple[FileOffer, list[bytes], bytes]
) -> None:
    offer, sealed, data = three
    assembler = FileAssembler(offer, manifest_of(data))
    part = tmp_path / "report.pdf.part"
    with open(part, "wb") as file:
        for index in range(offer.chunk_count):
            plaintext = assembler.accept(index, sealed[index])
            assert plaintext is not None
            file.seek(chunk_offset(offer, index))
            file.write(plaintext)
    assert part.read_bytes() == data

    def read_back(index: int) -> bytes:
        return plain(offer, part.read_bytes(), index)

    for index in range(offer.chunk_count):
        assembler.check_plaintext(index, read_back(index))
        assembler.check_plaintext(index, memoryview(bytearray(read_back(index))))
    # A bit rots on disk, in the short last chunk.
    with open(part, "r+b") as rot:
        rot.seek(2 * CHUNK + 42)
        byte = rot.read(1)[0]
        rot.seek(2 * CHUNK + 42)
        rot.write(bytes([byte ^ 0x10]))
    assembler.check_plaintext(1, read_back(1))
    with pytest.raises(ChunkError, match="not the sender's"):
        assembler.check_plaintext(2, read_back(2))
    with pytest.raises(ChunkError, match="wrong length"):
        assembler.check_plaintext(2, plain(offer, data, 2) + b"\0")
    with pytest.raises(ChunkError, match="wrong length"):
        assembler.check_plaintext(2, plain(offer, data, 2)[:-1])
    with pytest.raises(ChunkError, match="wrong length"):
        assembler.check_plaintext(1, plain(offer, data, 0)[:-1])
    assert assembler.complete  # checking changes nothing: the caller decides to forget
    assembler.forget(2)
    assert assembler.missing() == [range(2, 3)]
    with pytest.raises(IncompleteFileError, match="1 of 3"):
        assembler.finish()
    plaintext = assembler.accept(2, sealed[2])
    assert plaintext == plain(offer, data, 2)
    assembler.finish()


def test_forget_makes_a_chunk_missing_again() -> None:
    data = os.urandom(9 * CHUNK + 1)
    offer = offer_for(data)
    sealed = seal_all(offer, data)
    assembler = FileAssembler(offer, manifest_of(data))
    for index in range(offer.chunk_count):
        assembler.accept(index, sealed[index])
    assert assembler.bitmap() == b"\xff\x03"
    assembler.finish()
    assembler.forget(3)
    assembler.forget(9)
    assert not assembler.has(3) and not assembler.has(9)
    assert assembler.verified == 8 and not assembler.complete
    assert assembler.missing() == [range(3, 4), range(9, 10)]
    assert assembler.bitmap() == b"\xf7\x01"
    assembler.forget(3)  # forgetting a missing chunk changes nothing
    assert assembler.verified == 8
    with pytest.raises(ChunkError, match="no chunk 10"):
        assembler.forget(10)
    with pytest.raises(IncompleteFileError, match="2 of 10"):
        assembler.finish()
    resumed = FileAssembler(offer, manifest_of(data), assembler.bitmap())
    assert resumed.missing() == assembler.missing()
    assert assembler.accept(3, sealed[3]) == plain(offer, data, 3)  # not a duplicate any more
    assert assembler.accept(9, sealed[9]) == plain(offer, data, 9)
    assembler.finish()


def test_finish_only_counts_chunks(
    three: tuple[FileOffer, list[bytes], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    offer, sealed, data = three
    assembler = FileAssembler(offer, manifest_of(data))
    with pytest.raises(IncompleteFileError, match="3 of 3 chunks are missing"):
        assembler.finish()
    for index in range(3):
        assembler.accept(index, sealed[index])

    def no_hashing(_: object) -> bytes:
        raise AssertionError("finish() hashed")

    monkeypatch.setattr(file_chunks, "chunk_digest", no_hashing)
    monkeypatch.setattr(file_chunks, "manifest_hash", no_hashing)
    assembler.finish()


@settings(max_examples=30, deadline=None)
@given(data=st.data(), size=st.integers(0, 5 * CHUNK + 3), seed=st.integers(0, 2**32))
def test_assembler_property(data: st.DataObject, size: int, seed: int) -> None:
    """Any order, duplicates, forged and tampered chunks mixed in: what is refused changes
    nothing, the rest is taken once, and the file comes out whole."""
    content = random.Random(seed).randbytes(size)
    offer = offer_for(content)
    count = offer.chunk_count
    sealed = seal_all(offer, content)
    events = data.draw(
        st.lists(
            st.tuples(st.integers(0, count - 1), st.sampled_from(["good", "forged", "tampered"])),
            max_size=3 * count + 3,
        )
    )
    bitmap = data.draw(st.one_of(st.none(), st.integers(0, 2**count - 1)))
    manifest = manifest_of(content)
    if bitmap is None:
        assembler = FileAssembler(offer, manifest)
        done: set[int] = set()
    else:
        saved = bitmap.to_bytes((count + 7) // 8, "little")
        assembler = FileAssembler(offer, manifest, saved)
        done = {i for i in range(count) if bitmap >> i & 1}
    partial = bytearray(content) if bitmap is not None else bytearray(size)
    for index in range(count):
        if index not in done:
            start = chunk_offset(offer, index)
            partial[start : start + chunk_length(offer, index)] = bytes(chunk_length(offer, index))
    for index, kind in events:
        before = state(assembler)
        if kind == "good" or (kind == "forged" and chunk_length(offer, index) == 0):
            plaintext = assembler.accept(index, sealed[index])
            if index in done:
                assert plaintext is None and state(assembler) == before
            else:
                assert plaintext == plain(offer, content, index)
                start = chunk_offset(offer, index)
                partial[start : start + len(plaintext)] = plaintext
                done.add(index)
            continue
        if kind == "forged":
            bad = forge(offer, content, index)
        else:
            bad = bytes([sealed[index][0] ^ 1]) + sealed[index][1:]
        if index in done:
            assert assembler.accept(index, bad) is None  # a duplicate: not even opened
        else:
            with pytest.raises(ChunkError):
                assembler.accept(index, bad)
        assert state(assembler) == before
    assert {i for i in range(count) if assembler.has(i)} == done
    assert {i for r in assembler.missing() for i in r} == set(range(count)) - done
    assert assembler.verified == len(done)
    assert assembler.complete == (len(done) == count)
    for index in range(count):
        if index not in done:
            plaintext = assembler.accept(index, sealed[index])
            assert plaintext is not None
            start = chunk_offset(offer, index)
            partial[start : start + len(plaintext)] = plaintext
    assembler.finish()
    assert bytes(partial) == content


# -- the two ciphers: OpenSSL under the HChaCha20 subkey, and libsodium -------------------------

needs_openssl = pytest.mark.skipif(not openssl_available(), reason="no OpenSSL ChaCha20-Poly1305")
BACKENDS = [pytest.param(True, marks=needs_openssl, id="openssl"), pytest.param(False, id="sodium")]


def sodium_nonce_and_aad(offer: FileOffer, index: int) -> tuple[bytes, bytes]:
    """The wire format, stated again: nonce = prefix16 ‖ index8, AAD = context ‖ file id ‖
    (index, chunk count, chunk size, file size) as four big-endian u64."""
    bound = struct.pack(">QQQQ", index, offer.chunk_count, offer.chunk_size, offer.size)
    return offer.nonce_prefix + struct.pack(">Q", index), CHUNK_CONTEXT + offer.file_id + bound


@needs_openssl
def test_hchacha20_known_answer() -> None:
    # draft-irtf-cfrg-xchacha-03, section 2.2.1.
    hchacha20 = file_chunks._hchacha20()
    assert hchacha20 is not None
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    assert hchacha20(bytes(range(32)), nonce).hex() == (
        "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"
    )


@pytest.mark.parametrize("openssl", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    prefix=st.binary(min_size=16, max_size=16),
    file_id=st.binary(min_size=16, max_size=16),
    size=st.integers(0, 3 * CHUNK + 5),
    chunk_size=st.sampled_from([CHUNK, 2 * CHUNK]),
    seed=st.binary(min_size=1, max_size=64),
)
def test_chunks_are_libsodium_xchacha20poly1305(
    openssl: bool,
    key: bytes,
    prefix: bytes,
    file_id: bytes,
    size: int,
    chunk_size: int,
    seed: bytes,
) -> None:
    data = (seed * (size // len(seed) + 1))[:size]
    offer = msgspec.structs.replace(
        offer_for(data),
        key=key,
        nonce_prefix=prefix,
        file_id=file_id,
        chunk_size=chunk_size,
        chunk_count=max(1, -(-size // chunk_size)),
        content_hash=content_hash_of(data, chunk_size),
    )
    cipher = ChunkCipher(check_offer(offer), openssl=openssl)
    assert cipher.uses_openssl is openssl
    for index in {0, offer.chunk_count // 2, offer.chunk_count - 1}:
        plaintext = plain(offer, data, index)
        nonce, aad = sodium_nonce_and_aad(offer, index)
        sodium = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, aad, nonce, key
        )
        ours = cipher.seal(index, memoryview(bytearray(plaintext)))
        assert ours == sodium
        assert seal_chunk(offer, index, plaintext) == sodium
        assert cipher.open(index, bytearray(sodium)) == plaintext
        assert (
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ours, aad, nonce, key)
            == plaintext
        )
        assembler = FileAssembler(offer, manifest_of(data, chunk_size), openssl=openssl)
        assert assembler.accept(index, sodium) == plaintext


@pytest.mark.parametrize("openssl", BACKENDS)
def test_tampering_is_refused_by_both(openssl: bool) -> None:
    data = os.urandom(2 * CHUNK)
    offer = offer_for(data)
    cipher = ChunkCipher(offer, openssl=openssl)
    sealed = [cipher.seal(i, data[i * CHUNK :][:CHUNK]) for i in range(2)]
    for index, chunk in enumerate(sealed):
        for position in (0, len(chunk) // 2, len(chunk) - TAG_BYTES, len(chunk) - 1):
            bad = bytearray(chunk)
            bad[position] ^= 0x40
            with pytest.raises(ChunkError, match="does not authenticate"):
                cipher.open(index, bad)
    with pytest.raises(ChunkError, match="does not authenticate"):
        cipher.open(0, memoryview(sealed[1]))  # another index
    other = ChunkCipher(msgspec.structs.replace(offer, key=os.urandom(32)), openssl=openssl)
    with pytest.raises(ChunkError, match="does not authenticate"):
        other.open(0, sealed[0])
    with pytest.raises(ChunkError, match="cut short"):
        cipher.open(1, sealed[1][:-1])
    with pytest.raises(ChunkError, match="no chunk 2"):
        cipher.seal(2, b"")


@needs_openssl
def test_backends_interoperate_through_the_assembler() -> None:
    data = os.urandom(4 * CHUNK + 99)
    offer = offer_for(data)
    openssl, sodium = ChunkCipher(offer, openssl=True), ChunkCipher(offer, openssl=False)
    manifest = manifest_of(data)
    for assembler in (
        FileAssembler(offer, manifest, openssl=False),
        FileAssembler(offer, manifest, openssl=True),
    ):
        for index in range(offer.chunk_count):
            sealer = openssl if index % 2 else sodium
            plaintext = plain(offer, data, index)
            sealed = sealer.seal(index, plaintext)
            assert sealed == (sodium if index % 2 else openssl).seal(index, plaintext)
            assert assembler.accept(index, memoryview(sealed)) == plaintext
        assembler.finish()


def test_fallback_when_openssl_is_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(CHUNK + 7)
    offer = offer_for(data)
    nonce, aad = sodium_nonce_and_aad(offer, 1)
    expected = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        data[CHUNK:], aad, nonce, offer.key
    )
    monkeypatch.setattr(file_chunks, "USE_OPENSSL", False)
    assert not ChunkCipher(offer).uses_openssl
    assembler = FileAssembler(offer, manifest_of(data))
    assert not assembler.cipher.uses_openssl
    assert seal_chunk(offer, 1, data[CHUNK:]) == expected
    assert open_chunk(offer, 1, expected) == data[CHUNK:]
    assert assembler.accept(1, expected) == data[CHUNK:]


def test_fallback_when_hchacha20_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    offer = offer_for(b"abc")
    monkeypatch.setattr(file_chunks, "_hchacha20", lambda: None)
    file_chunks.openssl_available.cache_clear()
    try:
        assert not openssl_available()
        cipher = ChunkCipher(offer)
        assert not cipher.uses_openssl
        nonce, aad = sodium_nonce_and_aad(offer, 0)
        sealed = cipher.seal(0, b"abc")
        assert sealed == (
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(b"abc", aad, nonce, offer.key)
        )
        assembler = FileAssembler(offer, manifest_of(b"abc"))
        assert not assembler.cipher.uses_openssl
        assert assembler.accept(0, sealed) == b"abc"
        with pytest.raises(RuntimeError, match="missing"):
            ChunkCipher(offer, openssl=True)
        with pytest.raises(RuntimeError, match="missing"):
            FileAssembler(offer, manifest_of(b"abc"), openssl=True)
    finally:
        file_chunks.openssl_available.cache_clear()


@pytest.mark.parametrize("openssl", BACKENDS)
def test_a_cipher_is_shared_by_threads(openssl: bool) -> None:
    data = os.urandom(16 * CHUNK)
    offer = offer_for(data)
    cipher = ChunkCipher(offer, openssl=openssl)
    chunks = [memoryview(data)[i * CHUNK : (i + 1) * CHUNK] for i in range(16)]
    with ThreadPoolExecutor(4) as pool:
        sealed = list(pool.map(cipher.seal, range(16), chunks))
        opened = list(pool.map(cipher.open, range(16), sealed))
    assert sealed == [ChunkCipher(offer, openssl=False).seal(i, c) for i, c in enumerate(chunks)]
    assert b"".join(opened) == data


def test_resumed_assembler_finishes_from_the_part_file(tmp_path: Path) -> None:
    """A part file on disk, a restart after some chunks, then the rest: the resumed assembler
    (saved bitmap and manifest) knows what is missing, can recheck what is on disk, and
    finishes."""
    data = os.urandom(7 * CHUNK + 1234)
    offer = offer_for(data)
    sealed = seal_all(offer, data)
    part = tmp_path / "report.pdf.part"
    source = tmp_path / "report.pdf"
    source.write_bytes(data)
    content_hash, manifest = hash_file(source, CHUNK)  # what the sender publishes
    assert content_hash == offer.content_hash
    fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        first = FileAssembler(offer, manifest)
        for index in (0, 1, 2, 5):
            plaintext = first.accept(index, sealed[index])
            assert plaintext is not None
            os.pwrite(fd, plaintext, chunk_offset(offer, index))
        saved = first.bitmap()

        resumed = FileAssembler(offer, manifest, saved)
        assert resumed.missing() == first.missing() == [range(3, 5), range(6, 8)]
        assert resumed.verified == 4
        for index in (0, 1, 2, 5):  # what the bitmap claims is on disk checks out
            length = chunk_length(offer, index)
            resumed.check_plaintext(index, os.pread(fd, length, chunk_offset(offer, index)))
            assert resumed.accept(index, sealed[index]) is None
        with pytest.raises(IncompleteFileError, match="4 of 8"):
            resumed.finish()
        for index in (7, 3, 6, 4):
            plaintext = resumed.accept(index, bytearray(sealed[index]))
            assert plaintext is not None
            os.pwrite(fd, plaintext, chunk_offset(offer, index))
        resumed.finish()
    finally:
        os.close(fd)
    assert part.read_bytes() == data
    assert hash_file(part, CHUNK) == (offer.content_hash, manifest)


# -- offers ------------------------------------------------------------------------------------


def test_offer_encoding_round_trip() -> None:
    offer = offer_for(b"x" * 1000)
    assert decode_offer(encode_offer(offer)) == offer
    assert msgspec.msgpack.decode(encode_offer(offer))["type"] == "file-offer"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"chunk_count": 2}, "chunks declared"),
        ({"size": 3 * CHUNK}, "chunks declared"),
        ({"chunk_size": 3 * CHUNK}, "power of two"),
        ({"chunk_size": CHUNK // 2}, "power of two"),
        ({"chunk_size": 8 * 1024 * 1024}, "power of two"),
        ({"size": 2**40 + 1}, "not in"),
        ({"media_type": "pdf"}, "media type"),
        ({"media_type": "text/plain\n"}, "media type"),
        ({"name": "../x"}, "unsafe"),
        ({"name": "CON.txt"}, "unsafe"),
        ({"name": ".hidden"}, "not clean"),
        ({"file_id": b"short"}, "file id"),
        ({"key": b"k" * 31}, "key"),
        ({"content_hash": b""}, "content hash"),
        ({"nonce_prefix": b"n" * 24}, "nonce prefix"),
    ],
)
def test_offer_checks(change: dict[str, object], message: str) -> None:
    offer = offer_for(b"x" * 1000)
    bad = msgspec.structs.replace(offer, **change)
    with pytest.raises(FileOfferError, match=message):
        check_offer(bad)
    with pytest.raises(ValueError):
        decode_offer(encode_offer(bad))


def test_offer_decoding_is_strict() -> None:
    raw = msgspec.msgpack.decode(encode_offer(offer_for(b"abc")))
    for broken in (
        {**raw, "size": -1},
        {**raw, "type": "file-offerx"},
        {key: value for key, value in raw.items() if key != "key"},
        {**raw, "name": "x" * 256},
    ):
        with pytest.raises(msgspec.ValidationError):
            decode_offer(msgspec.msgpack.encode(broken))


def test_new_offer_cleans_the_name() -> None:
    assert offer_for(b"", name=" .bashrc ").name == "bashrc"
    with pytest.raises(UnsafeFileNameError):
        offer_for(b"", name="../../etc/passwd")


# -- file names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "..",
        ".",
        " .. ",
        "a/../../b",
        "/etc/passwd",
        "C:\\x",
        "C:x",
        "c:",
        "\\\\server\\share",
        "dir/file.txt",
        "x\\y",
        "a\0.txt",
        "CON",
        "con",
        "nul.txt",
        "Com1",
        "COM9.tar.gz",
        "lpt1",
        "LPT5.log",
        "aux .txt",
        "PRN.",
        ".CON",
        "Con\x01",
        "COM\u00b9",
        "",
        "   ",
        "...",
        "\x01\x02",
        "\u202e",
        "x\ud800",
    ],
)
def test_refused_names(name: str) -> None:
    with pytest.raises(UnsafeFileNameError):
        safe_file_name(name)


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("report.pdf", "report.pdf"),
        (".bashrc", "bashrc"),
        ("..hidden", "hidden"),
        ("...x", "x"),
        ("name. . ", "name"),
        ("  spaced  name  ", "spaced  name"),
        ("tab\there", "tabhere"),
        ("line\nbreak\r.txt", "linebreak.txt"),
        ("del\x7f.txt", "del.txt"),
        ("photo\u202egnp.exe", "photognp.exe"),
        ('what?<>:"|*.txt', "what_______.txt"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("com10", "com10"),
        ("e\u0301t\u00e9.txt", "\u00e9t\u00e9.txt"),
        ("\U0001f600.png", "\U0001f600.png"),
        ("a..b", "a..b"),
    ],
)
def test_neutralised_names(name: str, safe: str) -> None:
    assert safe_file_name(name) == safe
    assert safe_file_name(safe) == safe


@pytest.mark.parametrize(
    "name",
    [
        "a" * 300,
        "a" * 300 + ".txt",
        "\u00e9" * 200 + ".jpeg",
        "\U0001f600" * 100,
        "x" * 254 + "\u00e9",
        "b" * 250 + "." + "c" * 40,
        "a" * 252 + " .txt" + "d" * 10,
    ],
)
def test_long_names_are_cut(name: str) -> None:
    safe = safe_file_name(name)
    data = safe.encode("utf-8")
    assert len(data) <= MAX_NAME_BYTES
    assert len(data) > MAX_NAME_BYTES - 8  # cut, not emptied
    assert safe_file_name(safe) == safe
    if name.endswith((".txt", ".jpeg")):
        assert safe.endswith(name[name.rindex(".") :])


_SEPARATORS_AND_CONTROLS = frozenset("/\\")


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.characters(),
            st.sampled_from(["/", "\\", ".", " ", ":", "\0", "\u202e", "\u0301", "CON", "nul"]),
            st.text(st.characters(codec="utf-8"), min_size=50, max_size=100),
        ),
        max_size=40,
    ).map("".join)
)
def test_safe_name_property(name: str) -> None:
    try:
        safe = safe_file_name(name)
    except UnsafeFileNameError:
        return
    assert safe
    assert len(safe.encode("utf-8")) <= MAX_NAME_BYTES
    assert not any(char in _SEPARATORS_AND_CONTROLS for char in safe)
    assert not any(unicodedata.category(char) == "Cc" for char in safe)
    assert safe not in (".", "..") and not safe.startswith(".")
    assert safe == safe.strip() and not safe.endswith(".")
    assert safe_file_name(safe) == safe
