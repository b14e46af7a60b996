"""The files behind a transfer, on a real disk: the partial file (out of order, resumed from its
durable chunks, the content hash checked before the move, no overwrite) and the source (a file
that changed since its offer is not served)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import blake3
import pytest

from p2pid.crypto.file_chunks import (
    ChunkError,
    ContentHashError,
    IncompleteFileError,
    manifest_hash,
    new_offer,
    seal_chunk,
)
from p2pid.files.storage import FileSource, PartFile, SourceChangedError, part_path_for
from p2pid.wire.files import FileOffer

CHUNK = 64 * 1024


def manifest_of(data: bytes) -> bytes:
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    return b"".join(blake3.blake3(chunk).digest() for chunk in chunks)


def offer_for(data: bytes, name: str = "report.final.pdf") -> FileOffer:
    content_hash = manifest_hash(manifest_of(data))
    return new_offer(name, len(data), "application/pdf", content_hash, chunk_size=CHUNK)


def part_for(offer: FileOffer, path: str, data: bytes, durable: bytes | None = None) -> PartFile:
    return PartFile(offer, path, manifest_of(data), durable)


def feed(part: PartFile, offer: FileOffer, data: bytes, indexes: list[int]) -> None:
    for index in indexes:
        plain = data[index * CHUNK : (index + 1) * CHUNK]
        opened = part.open_chunk(index, seal_chunk(offer, index, plain))
        assert opened == plain
        part.write_chunk(index, opened)


def test_chunks_in_any_order_make_the_file_and_it_moves_into_place(tmp_path: Path) -> None:
    data = os.urandom(5 * CHUNK + 999)
    offer = offer_for(data)
    part = part_for(offer, part_path_for(str(tmp_path), offer.name, offer.file_id), data)
    order = list(range(offer.chunk_count))
    random.Random(7).shuffle(order)
    feed(part, offer, data, order)
    final = part.finish(str(tmp_path), offer.name)
    part.close()
    assert Path(final) == tmp_path / "report.final.pdf"
    assert Path(final).read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["report.final.pdf"]


def test_a_duplicate_chunk_is_not_written_twice_and_a_tampered_one_is_refused(
    tmp_path: Path,
) -> None:
    data = os.urandom(3 * CHUNK)
    offer = offer_for(data)
    part = part_for(offer, str(tmp_path / "p.part"), data)
    feed(part, offer, data, [0])
    assert part.open_chunk(0, seal_chunk(offer, 0, data[:CHUNK])) is None
    sealed = bytearray(seal_chunk(offer, 1, data[CHUNK : 2 * CHUNK]))
    sealed[100] ^= 1
    with pytest.raises(ChunkError):
        part.open_chunk(1, sealed)
    with pytest.raises(ChunkError):  # chunk 2's bytes presented as chunk 1 (reordered)
        part.open_chunk(1, seal_chunk(offer, 2, data[2 * CHUNK :]))
    assert part.missing() == [range(1, 3)]
    with pytest.raises(IncompleteFileError):  # a missing chunk: never complete
        part.finish(str(tmp_path), offer.name)
    part.close()


def test_a_resumed_part_keeps_its_durable_chunks_and_rehashes_them_from_disk(
    tmp_path: Path,
) -> None:
    data = os.urandom(6 * CHUNK + 1)
    offer = offer_for(data)
    path = str(tmp_path / "p.part")
    first = part_for(offer, path, data)
    feed(first, offer, data, [0, 1, 4])
    bitmap, done = first.checkpoint()
    first.close()
    assert done == 3 * CHUNK

    second = part_for(offer, path, data, bitmap)
    assert second.written_bytes == 3 * CHUNK
    assert second.missing() == [range(2, 4), range(5, 7)]
    assert second.check_durable() == 0
    feed(second, offer, data, [2, 3, 5, 6])
    final = second.finish(str(tmp_path), offer.name)
    second.close()
    assert Path(final).read_bytes() == data


def test_a_chunk_that_is_not_the_senders_is_refused(tmp_path: Path) -> None:
    """A group member holds the file key too: a chunk it seals with other content opens, but
    its digest is not the one in the manifest."""
    data = os.urandom(2 * CHUNK)
    offer = offer_for(data)
    part = part_for(offer, str(tmp_path / "p.part"), data)
    forged = seal_chunk(offer, 0, os.urandom(CHUNK))
    with pytest.raises(ChunkError, match="not the sender's"):
        part.open_chunk(0, forged)
    assert part.missing() == [range(0, 2)]
    part.close()


def test_a_wrong_manifest_is_refused(tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK)
    offer = offer_for(data)
    wrong = bytearray(manifest_of(data))
    wrong[0] ^= 1
    with pytest.raises(ContentHashError):
        PartFile(offer, str(tmp_path / "p.part"), bytes(wrong))


def test_durable_chunks_altered_on_disk_are_fetched_again(tmp_path: Path) -> None:
    data = os.urandom(4 * CHUNK)
    offer = offer_for(data)
    path = str(tmp_path / "p.part")
    first = part_for(offer, path, data)
    feed(first, offer, data, [0, 1, 2, 3])
    bitmap, _ = first.checkpoint()
    first.close()
    with open(path, "r+b") as damaged:
        damaged.seek(CHUNK + 10)
        damaged.write(b"rot")
    os.truncate(path, 3 * CHUNK + 5)
    second = part_for(offer, path, data, bitmap)
    assert second.check_durable() == 2
    assert second.missing() == [range(1, 2), range(3, 4)]
    assert second.written_bytes == 2 * CHUNK
    feed(second, offer, data, [1, 3])
    assert Path(second.finish(str(tmp_path), offer.name)).read_bytes() == data
    second.close()


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    for existing in ("report.final.pdf", "report (2).final.pdf"):
        (tmp_path / existing).write_bytes(b"mine")
    data = os.urandom(100)
    offer = offer_for(data)
    part = part_for(offer, str(tmp_path / ".p.part"), data)
    feed(part, offer, data, [0])
    final = part.finish(str(tmp_path), offer.name)
    part.close()
    assert Path(final).name == "report (3).final.pdf"
    assert (tmp_path / "report.final.pdf").read_bytes() == b"mine"


def test_an_empty_file_arrives_as_one_empty_chunk(tmp_path: Path) -> None:
    data = b""
    offer = offer_for(data, name="empty")
    part = part_for(offer, str(tmp_path / ".e.part"), data)
    with pytest.raises(IncompleteFileError):
        part.finish(str(tmp_path), offer.name)
    feed(part, offer, b"", [0])
    assert Path(part.finish(str(tmp_path), offer.name)).read_bytes() == b""
    part.close()


def test_a_source_serves_the_offered_file_and_refuses_a_changed_one(tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK + 5)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    offer = offer_for(data)
    mtime = path.stat().st_mtime_ns
    source = FileSource(offer, str(path), manifest_of(data), mtime_ns=mtime)
    assert source.read_sealed(2) == seal_chunk(offer, 2, data[2 * CHUNK :])
    source.close()
    with path.open("ab") as grown:
        grown.write(b"x")
    with pytest.raises(SourceChangedError):
        FileSource(offer, str(path), manifest_of(data), mtime_ns=mtime)
    path.write_bytes(data[:CHUNK])  # shrunk under the same size check's nose
    os.utime(path, ns=(mtime, mtime))
    with pytest.raises(SourceChangedError):
        FileSource(offer, str(path), manifest_of(data), mtime_ns=mtime)


def test_a_partial_file_serves_only_its_durable_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK)
    offer = offer_for(data)
    path = str(tmp_path / "p.part")
    part = part_for(offer, path, data)
    feed(part, offer, data, [1])
    bitmap, _ = part.checkpoint()
    part.close()
    source = FileSource(offer, path, manifest_of(data), have=bitmap)
    assert source.have() == bitmap == b"\x02"
    assert source.read_sealed(1) == seal_chunk(offer, 1, data[CHUNK : 2 * CHUNK])
    source.close()
