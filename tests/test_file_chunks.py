"""File offers, encrypted chunks, the assembler and safe file names (issue 8)."""

from __future__ import annotations

import os
import struct
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
    TAG_BYTES,
    ChunkCipher,
    ChunkError,
    ContentHashError,
    FileAssembler,
    IncompleteFileError,
    chunk_length,
    chunk_offset,
    hash_file,
    new_offer,
    open_chunk,
    openssl_available,
    seal_chunk,
)
from p2pid.wire.files import (
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


def blake(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def offer_for(data: bytes, name: str = "report.pdf") -> FileOffer:
    return new_offer(name, len(data), "application/pdf", blake(data), chunk_size=CHUNK)


def seal_all(offer: FileOffer, data: bytes) -> list[bytes]:
    return [
        seal_chunk(offer, i, data[chunk_offset(offer, i) :][: chunk_length(offer, i)])
        for i in range(offer.chunk_count)
    ]


def receive(offer: FileOffer, sealed: dict[int, bytes], order: list[int]) -> bytes:
    """Drives an assembler like the daemon would: writes into a buffer standing for the partial
    file and feeds the hasher from it as the verified prefix grows."""
    assembler = FileAssembler(offer)
    partial = bytearray(offer.size)
    for index in order:
        plaintext = assembler.accept(index, sealed[index])
        if plaintext is not None:
            start = chunk_offset(offer, index)
            partial[start : start + len(plaintext)] = plaintext
        while (need := assembler.hash_next()) is not None:
            start = chunk_offset(offer, need)
            assembler.feed_hash(need, bytes(partial[start : start + chunk_length(offer, need)]))
    assembler.finish()
    return bytes(partial)


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17, 4 * CHUNK])
def test_round_trip(size: int) -> None:
    data = os.urandom(size)
    offer = offer_for(data)
    assert offer.chunk_count == max(1, -(-size // CHUNK))
    sealed = seal_all(offer, data)
    assert all(len(c) == chunk_length(offer, i) + TAG_BYTES for i, c in enumerate(sealed))
    assert receive(offer, dict(enumerate(sealed)), list(range(offer.chunk_count))) == data


def test_empty_file_is_one_empty_chunk() -> None:
    offer = offer_for(b"")
    assert (offer.chunk_count, chunk_length(offer, 0)) == (1, 0)
    assembler = FileAssembler(offer)
    with pytest.raises(IncompleteFileError):
        assembler.finish()
    assert assembler.missing() == [range(0, 1)]


def test_out_of_order_and_duplicates() -> None:
    data = os.urandom(5 * CHUNK + 3)
    offer = offer_for(data)
    sealed = dict(enumerate(seal_all(offer, data)))
    order = [4, 2, 2, 5, 0, 4, 3, 1, 0, 5]
    assert receive(offer, sealed, order) == data


def test_duplicate_returns_none_and_missing_ranges() -> None:
    data = os.urandom(10 * CHUNK)
    offer = offer_for(data)
    sealed = seal_all(offer, data)
    assembler = FileAssembler(offer)
    assert assembler.missing() == [range(0, 10)]
    for index in (1, 2, 5, 9):
        assert assembler.accept(index, sealed[index]) is not None
    assert assembler.accept(2, sealed[2]) is None
    assert assembler.verified == 4
    assert assembler.missing() == [range(0, 1), range(3, 5), range(6, 9)]
    assert assembler.hash_next() is None  # chunk 0 is not in yet
    assembler.accept(0, sealed[0])
    assert assembler.hash_next() == 0


def test_resume_from_bitmap() -> None:
    data = os.urandom(11 * CHUNK + 5)
    offer = offer_for(data)
    sealed = seal_all(offer, data)
    first = FileAssembler(offer)
    for index in (0, 3, 8, 11):
        first.accept(index, sealed[index])
    resumed = FileAssembler(offer, first.bitmap())
    assert resumed.missing() == first.missing() == [range(1, 3), range(4, 8), range(9, 11)]
    assert resumed.verified == 4
    assert resumed.accept(3, sealed[3]) is None
    with pytest.raises(ValueError, match="bitmap"):
        FileAssembler(offer, b"\xff\xff")  # bits past the last chunk
    with pytest.raises(ValueError, match="bitmap"):
        FileAssembler(offer, b"\x00")


def test_hash_file_is_blake3(tmp_path: Path) -> None:
    known = {
        b"": "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        b"abc": "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
    }
    for index, (data, digest) in enumerate(known.items()):
        path = tmp_path / f"known{index}"
        path.write_bytes(data)
        assert hash_file(path).hex() == digest
        assert file_chunks.content_hasher().update(data).hexdigest() == digest
    data = os.urandom(3 * 1024 * 1024 + 11)  # more than one BLAKE3 subtree per thread
    (tmp_path / "big").write_bytes(data)
    assert hash_file(tmp_path / "big") == blake3.blake3(data).digest()
    assert hash_file(str(tmp_path / "big")) == blake(data)
    with pytest.raises(FileNotFoundError):
        hash_file(tmp_path / "absent")


# -- bad chunks --------------------------------------------------------------------------------


@pytest.fixture
def three() -> tuple[FileOffer, list[bytes], bytes]:
    data = os.urandom(2 * CHUNK + 100)
    offer = offer_for(data)
    return offer, seal_all(offer, data), data


def test_tampered_chunk(three: tuple[FileOffer, list[bytes], bytes]) -> None:
    offer, sealed, _ = three
    for position in (0, len(sealed[1]) // 2, len(sealed[1]) - 1):
        bad = bytearray(sealed[1])
        bad[position] ^= 1
        with pytest.raises(ChunkError, match="does not authenticate"):
            open_chunk(offer, 1, bytes(bad))
    assembler = FileAssembler(offer)
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
    assembler = FileAssembler(offer)
    partial = bytearray()
    for index in (0, 1):
        plaintext = assembler.accept(index, sealed[index])
        assert plaintext is not None
        partial += plaintext
        assembler.feed_hash(index, plaintext)
    assert bytes(partial) == data[: 2 * CHUNK]
    assert assembler.missing() == [range(2, 3)]
    assert not assembler.complete
    with pytest.raises(IncompleteFileError, match="1 of 3 chunks are missing"):
        assembler.finish()


def test_extra_chunk(three: tuple[FileOffer, list[bytes], bytes]) -> None:
    offer, sealed, _ = three
    assembler = FileAssembler(offer)
    with pytest.raises(ChunkError, match="no chunk 3"):
        assembler.accept(3, sealed[2])
    with pytest.raises(ChunkError, match="no chunk -1"):
        open_chunk(offer, -1, sealed[0])
    with pytest.raises(ChunkError, match="no chunk 3"):
        seal_chunk(offer, 3, b"x")


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


def test_wrong_content_hash() -> None:
    data = os.urandom(2 * CHUNK)
    offer = new_offer("a.bin", len(data), "application/octet-stream", blake(b"other"), CHUNK)
    with pytest.raises(ContentHashError):
        receive(offer, dict(enumerate(seal_all(offer, data))), [1, 0])


def test_hash_fed_out_of_turn(three: tuple[FileOffer, list[bytes], bytes]) -> None:
    offer, sealed, _ = three
    assembler = FileAssembler(offer)
    plaintexts = [assembler.accept(i, sealed[i]) for i in range(3)]
    with pytest.raises(ValueError, match="needs chunk 0"):
        assembler.feed_hash(1, plaintexts[1] or b"")
    with pytest.raises(ChunkError, match="wrong length"):
        assembler.feed_hash(0, b"short")
    with pytest.raises(IncompleteFileError, match="hashed"):
        assembler.finish()


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
    )
    cipher = ChunkCipher(check_offer(offer), openssl=openssl)
    assert cipher.uses_openssl is openssl
    for index in {0, offer.chunk_count // 2, offer.chunk_count - 1}:
        plaintext = data[chunk_offset(offer, index) :][: chunk_length(offer, index)]
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
    assembler = FileAssembler(offer, openssl=False)
    assert not assembler.cipher.uses_openssl
    for index in range(offer.chunk_count):
        sealer = openssl if index % 2 else sodium
        plaintext = data[chunk_offset(offer, index) :][: chunk_length(offer, index)]
        sealed = sealer.seal(index, plaintext)
        assert sealed == (sodium if index % 2 else openssl).seal(index, plaintext)
        assert assembler.accept(index, memoryview(sealed)) == plaintext
        assembler.feed_hash(index, memoryview(plaintext))
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
    assert not FileAssembler(offer).cipher.uses_openssl
    assert seal_chunk(offer, 1, data[CHUNK:]) == expected
    assert open_chunk(offer, 1, expected) == data[CHUNK:]


def test_fallback_when_hchacha20_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    offer = offer_for(b"abc")
    monkeypatch.setattr(file_chunks, "_hchacha20", lambda: None)
    file_chunks.openssl_available.cache_clear()
    try:
        assert not openssl_available()
        cipher = ChunkCipher(offer)
        assert not cipher.uses_openssl
        nonce, aad = sodium_nonce_and_aad(offer, 0)
        assert cipher.seal(0, b"abc") == (
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(b"abc", aad, nonce, offer.key)
        )
        with pytest.raises(RuntimeError, match="missing"):
            ChunkCipher(offer, openssl=True)
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


def test_resumed_assembler_rehashes_the_prefix_from_disk(tmp_path: Path) -> None:
    """A part file on disk, a restart after some chunks (the hasher state is lost), then the rest:
    the resumed assembler hashes chunks 0..k-1 again from the file and finishes."""
    data = os.urandom(7 * CHUNK + 1234)
    offer = offer_for(data)
    sealed = seal_all(offer, data)
    part = tmp_path / "report.pdf.part"
    fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        first = FileAssembler(offer)
        for index in (0, 1, 2, 5):
            plaintext = first.accept(index, sealed[index])
            assert plaintext is not None
            os.pwrite(fd, plaintext, chunk_offset(offer, index))
            while (need := first.hash_next()) is not None:
                first.feed_hash(need, data[chunk_offset(offer, need) :][:CHUNK])
        saved = first.bitmap()

        resumed = FileAssembler(offer, saved)
        assert resumed.hash_next() == 0  # the prefix 0..2 must be hashed again
        for index in (7, 3, 6, 4):
            assert resumed.accept(index, bytearray(sealed[index])) is not None
            plaintext = open_chunk(offer, index, sealed[index])
            os.pwrite(fd, plaintext, chunk_offset(offer, index))
        with pytest.raises(IncompleteFileError, match="hashed"):
            resumed.finish()
        while (need := resumed.hash_next()) is not None:
            length = chunk_length(offer, need)
            resumed.feed_hash(need, os.pread(fd, length, chunk_offset(offer, need)))
        resumed.finish()
    finally:
        os.close(fd)
    assert part.read_bytes() == data
    assert hash_file(part) == offer.content_hash


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
