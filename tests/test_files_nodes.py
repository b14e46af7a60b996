"""File sharing between real in-process nodes (real NetHosts on 127.0.0.1, real SQLCipher stores,
real files): offer, accept, fetch over the direct path, resume after a restart, cancel from
either side, a group member fetching from another member, and bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio

import p2pid.files.storage as storage
from p2pid.crypto.file_chunks import hash_file, new_offer
from p2pid.files.errors import FilesError
from p2pid.wire.events import Event
from p2pid.wire.file_views import FileOffered, FileProgress, FileStateChanged, FileTransferView
from p2pid.wire.files import FileOffer
from p2pid.wire.messages import FileShare, MessagesDropped
from tests import nodes
from tests.nodes import WAIT_SECONDS, Running, befriend, group_of

CHUNK = 64 * 1024


# Contacts added by invite are verified, and small files from them are taken at once by
# default: these tests accept by hand (the auto-accept test sets its own rules).
running_node = partial(nodes.running_node, auto_accept="none")
running_nodes = partial(nodes.running_nodes, auto_accept="none")


async def next_event(who: Running, wanted: Callable[[Event], bool]) -> Event:
    with trio.fail_after(WAIT_SECONDS):
        async for event in who.events:
            if wanted(event):
                return event
    raise AssertionError("the event stream ended")


async def offered(who: Running) -> FileTransferView:
    event = await next_event(who, lambda e: isinstance(e, FileOffered))
    assert isinstance(event, FileOffered)
    return event.transfer


async def state_of(who: Running, transfer_id: str, *states: str) -> FileTransferView:
    event = await next_event(
        who,
        lambda e: (
            isinstance(e, FileStateChanged)
            and e.transfer.transfer_id == transfer_id
            and e.transfer.state in states
        ),
    )
    assert isinstance(event, FileStateChanged)
    return event.transfer


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def contents(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def run(*argv: str, check: bool = True) -> int:
    return subprocess.run(argv, check=check).returncode


def slow_sender(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every chunk served takes `seconds` longer, so that a receiver can be stopped part way."""
    real = storage.FileSource.read_sealed

    def slow(self: storage.FileSource, index: int) -> bytes:
        time.sleep(seconds)
        return real(self, index)

    monkeypatch.setattr(storage.FileSource, "read_sealed", slow)


def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """64 KiB chunks instead of 1 MiB, so a few-MiB file has many chunks to resume from."""
    import p2pid.files.service as service

    monkeypatch.setattr(service, "CHUNK_SIZE", CHUNK)


async def test_a_file_goes_to_a_contact_and_arrives_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_chunks(monkeypatch)
    source = random_file(tmp_path / "out" / "holiday photos.tar.gz", 3 * 1024 * 1024 + 12345)
    async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await befriend(alice, bob)
        sent = await alice.node.files.send("Bob", str(source))
        assert (sent.direction, sent.state, sent.recipients) == ("out", "sending", 1)
        assert sent.content_hash == hash_file(source, CHUNK)[0].hex()

        offer = await offered(bob)
        assert (offer.name, offer.size, offer.peer_name, offer.state) == (
            "holiday photos.tar.gz",
            source.stat().st_size,
            "Alice",
            "offered",
        )
        assert offer.media_type == "application/x-tar"
        folder = tmp_path / "bob-files"
        folder.mkdir()
        accepted = await bob.node.files.accept(offer.transfer_id[:8], str(folder))
        assert accepted.state == "downloading" and accepted.folder == str(folder)
        done = await state_of(bob, offer.transfer_id, "complete", "failed", "waiting")
        assert done.state == "complete", done.error
        assert Path(done.path) == folder / "holiday photos.tar.gz"
        assert contents(done.path) == source.read_bytes()
        assert [p.name for p in folder.iterdir()] == ["holiday photos.tar.gz"]  # no part left

        delivered = await state_of(alice, sent.transfer_id, "complete")
        assert delivered.delivered == 1
        with pytest.raises(FilesError, match="already complete"):
            await bob.node.files.accept(offer.transfer_id, str(folder))


async def test_progress_events_count_up_to_the_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_chunks(monkeypatch)
    source = random_file(tmp_path / "out" / "big.bin", 8 * 1024 * 1024)
    async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await befriend(alice, bob)
        await alice.node.files.send("Bob", str(source))
        offer = await offered(bob)
        await bob.node.files.accept(offer.transfer_id, None)
        seen: list[FileProgress] = []
        while True:
            event = await next_event(bob, lambda e: isinstance(e, FileProgress | FileStateChanged))
            if isinstance(event, FileProgress):
                seen.append(event)
            elif isinstance(event, FileStateChanged) and event.transfer.state in (
                "complete",
                "failed",
            ):
                assert event.transfer.state == "complete", event.transfer.error
                break
        assert seen and seen[-1].bytes_done == seen[-1].size == source.stat().st_size
        assert [p.bytes_done for p in seen] == sorted(p.bytes_done for p in seen)
        # The default folder of this home.
        assert (bob.home / "downloads" / "big.bin").read_bytes() == source.read_bytes()


async def test_without_a_direct_path_the_file_comes_over_the_libp2p_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_chunks(monkeypatch)
    source = random_file(tmp_path / "out" / "relayed.bin", 1024 * 1024 + 3)
    import p2pid.files.serving as serving
    from p2pid.wire.file_transfer import Endpoint

    closed = trio.socket.socket()
    await closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    unreachable = [Endpoint("127.0.0.1", closed.getsockname()[1])]
    monkeypatch.setattr(serving.FileServer, "_endpoints", lambda self: unreachable)
    async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await befriend(alice, bob)
        await alice.node.files.send("Bob", str(source))
        offer = await offered(bob)
        await bob.node.files.accept(offer.transfer_id, None)
        done = await state_of(bob, offer.transfer_id, "complete", "waiting", "failed")
        assert done.state == "complete", done.error
        assert contents(done.path) == source.read_bytes()
    closed.close()


async def test_a_direct_endpoint_that_hangs_up_at_once_falls_back_to_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in for a middlebox (or another host at that address) that accepts the TCP
    connection and closes it: the fetcher must not give up on the sender."""
    small_chunks(monkeypatch)
    source = random_file(tmp_path / "out" / "middlebox.bin", 512 * 1024)
    import p2pid.files.serving as serving
    from p2pid.wire.file_transfer import Endpoint

    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        monkeypatch.setattr(
            serving.FileServer, "_endpoints", lambda self: [Endpoint("127.0.0.1", port)]
        )
        async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
            await befriend(alice, bob)
            await alice.node.files.send("Bob", str(source))
            offer = await offered(bob)
            await bob.node.files.accept(offer.transfer_id, None)
            done = await state_of(bob, offer.transfer_id, "complete", "waiting", "failed")
            assert done.state == "complete", done.error
            assert contents(done.path) == source.read_bytes()
        nursery.cancel_scope.cancel()


async def test_a_partial_file_cut_short_meanwhile_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_chunks(monkeypatch)
    source = random_file(tmp_path / "out" / "cut.bin", 2 * 1024 * 1024)
    folder = tmp_path / "got"
    folder.mkdir()
    async with running_node(tmp_path / "alice", "Alice") as alice:
        async with running_node(tmp_path / "bob", "Bob") as bob:
            await befriend(alice, bob)
            await alice.node.files.send("Bob", str(source))
            offer = await offered(bob)
            slow_sender(monkeypatch, 0.02)
            await bob.node.files.accept(offer.transfer_id, str(folder))
            await next_event(
                bob, lambda e: isinstance(e, FileProgress) and e.bytes_done >= 1024 * 1024
            )
        monkeypatch.undo()  # the sender at full speed again
        small_chunks(monkeypatch)
        (part,) = folder.iterdir()
        os.truncate(part, 1000)  # someone cut the partial file short while Bob was stopped
        async with running_node(tmp_path / "bob", "Bob") as bob:
            view = await bob.node.files.show(offer.transfer_id)
            if view.state != "complete":
                view = await state_of(bob, offer.transfer_id, "complete", "failed")
            assert view.state == "complete", view.error
            assert contents(view.path) == source.read_bytes()


async def test_auto_accept_takes_small_files_from_contacts_only_as_configured(
    tmp_path: Path,
) -> None:
    small = random_file(tmp_path / "out" / "note.txt", 1000)
    large = random_file(tmp_path / "out" / "large.bin", 300_000)
    async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await befriend(alice, bob)
        await alice.node.files.send("Bob", str(small))
        first = await offered(bob)
        assert (await bob.node.files.show(first.transfer_id)).state == "offered"

        await bob.node.files.set_settings(None, "verified", 100_000)  # Alice came by invite
        await alice.node.files.send("Bob", str(small))
        second = await offered(bob)
        done = await state_of(bob, second.transfer_id, "complete")
        assert contents(done.path) == small.read_bytes()
        assert Path(done.path).name == "note (2).txt" or Path(done.path).name == "note.txt"

        await alice.node.files.send("Bob", str(large))  # over the limit
        third = await offered(bob)
        with trio.move_on_after(1.0):
            await state_of(bob, third.transfer_id, "downloading")
            raise AssertionError("an offer over the size limit was accepted")
        assert (await bob.node.files.show(third.transfer_id)).state == "offered"


async def test_auto_accept_leaves_room_on_the_disk(tmp_path: Path) -> None:
    """An offer that would leave the folder's disk nearly full (under a tenth of it, or 1 GiB)
    waits for the person, saying why; a smaller one is taken. A 4 MiB tmpfs stands in for a
    nearly full disk (root only, as CI runs)."""
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if run("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk), check=False):
        pytest.skip("cannot mount a tmpfs here")
    try:
        big = random_file(tmp_path / "out" / "big.bin", 3_900_000)
        small = random_file(tmp_path / "out" / "small.bin", 100_000)
        async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
            await befriend(alice, bob)
            await bob.node.files.set_settings(str(disk), "verified", 25 * 1024 * 1024)
            await alice.node.files.send("Bob", str(big))
            first = await offered(bob)
            waiting = await next_event(
                bob,
                lambda e: (
                    isinstance(e, FileStateChanged) and e.transfer.transfer_id == first.transfer_id
                ),
            )
            assert isinstance(waiting, FileStateChanged)
            assert waiting.transfer.state == "offered"
            assert waiting.transfer.error.startswith("not accepted automatically: it would leave")
            assert str(disk) in waiting.transfer.error
            assert list(disk.iterdir()) == []

            await alice.node.files.send("Bob", str(small))
            second = await offered(bob)
            done = await state_of(bob, second.transfer_id, "complete", "failed")
            assert done.state == "complete", done.error
            assert (disk / "small.bin").read_bytes() == small.read_bytes()
            assert (await bob.node.files.show(first.transfer_id)).state == "offered"
    finally:
        run("umount", "-l", str(disk), check=False)


async def test_a_transfer_resumes_after_the_receiver_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_chunks(monkeypatch)
    source = random_file(tmp_path / "out" / "resume.bin", 6 * 1024 * 1024)
    folder = tmp_path / "got"
    folder.mkdir()
    async with running_node(tmp_path / "alice", "Alice") as alice:
        async with running_node(tmp_path / "bob", "Bob") as bob:
            await befriend(alice, bob)
            sent = await alice.node.files.send("Bob", str(source))
            offer = await offered(bob)
            # Slow the sender down so the receiver stops part way.
            slow_sender(monkeypatch, 0.01)
            await bob.node.files.accept(offer.transfer_id, str(folder))
            await next_event(
                bob, lambda e: isinstance(e, FileProgress) and e.bytes_done >= 2 * 1024 * 1024
            )
        # Bob stopped part way; his store says which chunks are on disk.
        monkeypatch.undo()  # the sender at full speed again
        small_chunks(monkeypatch)
        async with running_node(tmp_path / "bob", "Bob") as bob:
            # It resumed as the node started (before this subscription could see it finish).
            again = await bob.node.files.show(offer.transfer_id)
            assert again.state in ("downloading", "complete")
            assert again.bytes_done > 0
            done = again
            if again.state != "complete":
                done = await state_of(bob, offer.transfer_id, "complete")
            assert contents(done.path) == source.read_bytes()
            await state_of(alice, sent.transfer_id, "complete")


async def test_a_file_moved_into_place_just_before_a_crash_is_found_on_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_chunks(monkeypatch)
    source = random_file(tmp_path / "out" / "crash.bin", 1024 * 1024)
    folder = tmp_path / "got"
    folder.mkdir()
    import p2pid.files.service as service

    async with running_node(tmp_path / "alice", "Alice") as alice:
        async with running_node(tmp_path / "bob", "Bob") as bob:
            await befriend(alice, bob)
            await alice.node.files.send("Bob", str(source))
            offer = await offered(bob)
            moved = trio.Event()

            async def crash_before_recording(*_args: object) -> None:
                moved.set()  # the process "dies" here: the state is never recorded
                await trio.sleep_forever()

            monkeypatch.setattr(service.Files, "complete", crash_before_recording)
            await bob.node.files.accept(offer.transfer_id, str(folder))
            with trio.fail_after(WAIT_SECONDS):
                await moved.wait()
        monkeypatch.undo()
        small_chunks(monkeypatch)
        assert contents(folder / "crash.bin") == source.read_bytes()
        async with running_node(tmp_path / "bob", "Bob") as bob:
            view = await bob.node.files.show(offer.transfer_id)
            if view.state != "complete":
                view = await state_of(bob, offer.transfer_id, "complete")
            assert view.path == str(folder / "crash.bin")
            assert sorted(p.name for p in folder.iterdir()) == ["crash.bin"]  # not fetched again


async def test_the_sender_cancels_and_the_receiver_stops_and_discards(
    tmp_path: Path,
) -> None:
    source = random_file(tmp_path / "out" / "secret.bin", 200_000)
    async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await befriend(alice, bob)
        sent = await alice.node.files.send("Bob", str(source))
        offer = await offered(bob)
        cancelled = await alice.node.files.cancel(sent.transfer_id)
        assert cancelled.state == "cancelled"
        theirs = await state_of(bob, offer.transfer_id, "cancelled")
        assert theirs.error == "cancelled by the sender"
        with pytest.raises(FilesError, match="cancelled"):
            await bob.node.files.accept(offer.transfer_id, None)
        with pytest.raises(FilesError, match="already cancelled"):
            await alice.node.files.cancel(sent.transfer_id)


async def test_the_receiver_cancels_and_the_sender_hears_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_chunks(monkeypatch)
    source = random_file(tmp_path / "out" / "movie.bin", 4 * 1024 * 1024)
    folder = tmp_path / "got"
    folder.mkdir()
    async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await befriend(alice, bob)
        sent = await alice.node.files.send("Bob", str(source))
        offer = await offered(bob)
        await bob.node.files.accept(offer.transfer_id, str(folder))
        await bob.node.files.cancel(offer.transfer_id)
        assert list(folder.iterdir()) == []  # the partial file is gone
        view = await state_of(alice, sent.transfer_id, "cancelled")
        assert (view.delivered, view.error) == (0, "cancelled by the recipient")


async def test_a_group_member_fetches_from_another_member_when_the_sender_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_chunks(monkeypatch)
    source = random_file(tmp_path / "out" / "slides.pdf", 2 * 1024 * 1024 + 7)
    async with (
        running_node(tmp_path / "bob", "Bob") as bob,
        running_node(tmp_path / "carol", "Carol") as carol,
    ):
        async with running_node(tmp_path / "alice", "Alice") as alice:
            group = await group_of(alice, "Team", bob, carol)
            sent = await alice.node.files.send("Team", str(source))
            assert sent.group_id == group and sent.recipients == 2
            for_bob = await offered(bob)
            for_carol = await offered(carol)
            assert for_bob.group_name == "Team" and for_bob.peer_name == "Alice"
            await bob.node.files.accept(for_bob.transfer_id, None)
            await state_of(bob, for_bob.transfer_id, "complete")
        # Alice is gone. Carol (not Bob's contact) fetches the file from Bob.
        assert "Bob" not in {c.name for c in await carol.node.contact_list()}
        await carol.node.files.accept(for_carol.transfer_id, None)
        done = await state_of(carol, for_carol.transfer_id, "complete", "waiting")
        assert done.state == "complete", done.error
        assert contents(done.path) == source.read_bytes()


async def test_a_member_serving_forged_chunks_is_refused_and_the_sender_serves_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every member holds the file key, so a member can seal other content that decrypts: the
    chunk digests (the manifest the offer's hash names) refuse it."""
    small_chunks(monkeypatch)
    source = random_file(tmp_path / "out" / "minutes.odt", 1024 * 1024 + 99)
    async with (
        running_node(tmp_path / "bob", "Bob") as bob,
        running_node(tmp_path / "carol", "Carol") as carol,
    ):
        async with running_node(tmp_path / "alice", "Alice") as alice:
            await group_of(alice, "Board", bob, carol)
            await alice.node.files.send("Board", str(source))
            for_bob = await offered(bob)
            for_carol = await offered(carol)
            await bob.node.files.accept(for_bob.transfer_id, None)
            await state_of(bob, for_bob.transfer_id, "complete")
        real = storage.FileSource.read_sealed
        bobs = str(bob.home)

        def forged(self: storage.FileSource, index: int) -> bytes:
            if not self.path.startswith(bobs):
                return real(self, index)
            length = storage.chunk_length(self.offer, index)
            return storage.seal_chunk(self.offer, index, os.urandom(length))

        monkeypatch.setattr(storage.FileSource, "read_sealed", forged)
        await carol.node.files.accept(for_carol.transfer_id, None)
        waiting = await state_of(carol, for_carol.transfer_id, "waiting", "complete")
        assert waiting.state == "waiting"
        assert "a member's device" in waiting.error and "does not verify" in waiting.error
        assert (await carol.node.files.show(for_carol.transfer_id)).bytes_done == 0
        async with running_node(tmp_path / "alice", "Alice"):
            done = await state_of(carol, for_carol.transfer_id, "complete")
            assert contents(done.path) == source.read_bytes()


async def test_a_stranger_cannot_fetch_a_file_offered_to_someone_else(
    tmp_path: Path,
) -> None:
    from p2pid.protocols.file_transfer import SourceRefused, open_source
    from p2pid.wire.file_transfer import PROTOCOL_ID

    source = random_file(tmp_path / "out" / "private.txt", 5000)
    async with running_nodes(tmp_path, "Alice", "Bob", "Eve") as (alice, bob, eve):
        await befriend(alice, bob)
        await befriend(alice, eve)  # Eve is a contact, but the file went to Bob
        await alice.node.files.send("Bob", str(source))
        offer = await offered(bob)
        stream = await eve.node.net.new_stream(alice.node.net.peer_id, [PROTOCOL_ID])
        with pytest.raises(SourceRefused) as refused:
            await open_source(stream, bytes.fromhex(offer.transfer_id))
        assert refused.value.reason == "not_allowed"
        stream = await eve.node.net.new_stream(alice.node.net.peer_id, [PROTOCOL_ID])
        with pytest.raises(SourceRefused) as unknown:
            await open_source(stream, os.urandom(16))
        assert unknown.value.reason == "unknown"


async def test_an_offer_with_an_unsafe_name_is_refused_and_nothing_is_stored(
    tmp_path: Path,
) -> None:
    async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await befriend(alice, bob)
        good = new_offer("ok.txt", 10, "text/plain", bytes(32))
        bob_contact = await alice.node.contacts.find("Bob")
        for bad_name in ("../../.bashrc", "/etc/passwd", "CON", "a/b", "..\\x"):
            import msgspec

            bad = msgspec.structs.replace(good, name=bad_name)
            assert isinstance(bad, FileOffer)
            await alice.node.store.write(
                lambda conn, offer=bad: alice.node.messaging.compose_for_groups(
                    conn, bob_contact.identity_key, FileShare(offer=offer), 1, None
                )
            )
            alice.node.messaging.kick_device(bob.node.net.peer_id)
            dropped = await next_event(bob, lambda e: isinstance(e, MessagesDropped))
            assert isinstance(dropped, MessagesDropped) and dropped.reason == "bad_payload"
        assert await bob.node.files.list_transfers() == []


async def test_a_wrong_content_hash_fails_and_leaves_nothing_behind(tmp_path: Path) -> None:
    source = random_file(tmp_path / "out" / "doc.bin", 150_000)
    folder = tmp_path / "got"
    folder.mkdir()
    async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await befriend(alice, bob)
        import p2pid.files.service as service

        real = service.hash_file
        service.hash_file = lambda path, size: (bytes(32), real(path, size)[1])  # type: ignore[assignment]
        try:
            await alice.node.files.send("Bob", str(source))
        finally:
            service.hash_file = real
        offer = await offered(bob)
        await bob.node.files.accept(offer.transfer_id, str(folder))
        failed = await state_of(bob, offer.transfer_id, "failed", "complete")
        assert failed.state == "failed"
        assert "does not match its own offer" in failed.error
        assert list(folder.iterdir()) == []


async def test_a_file_changed_after_the_offer_is_not_served(tmp_path: Path) -> None:
    source = random_file(tmp_path / "out" / "draft.txt", 100_000)
    async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await befriend(alice, bob)
        await alice.node.files.send("Bob", str(source))
        offer = await offered(bob)
        with source.open("ab") as grown:  # bigger than declared
            grown.write(b"more")
        await bob.node.files.accept(offer.transfer_id, None)
        waiting = await state_of(bob, offer.transfer_id, "waiting", "complete")
        assert waiting.state == "waiting" and "changed" in waiting.error


async def test_bad_requests_change_nothing(tmp_path: Path) -> None:
    source = random_file(tmp_path / "out" / "x.bin", 10)
    async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await befriend(alice, bob)
        with pytest.raises(FilesError, match="not an absolute path"):
            await alice.node.files.send("Bob", "x.bin")
        with pytest.raises(FilesError, match="not a regular file"):
            await alice.node.files.send("Bob", str(tmp_path))
        with pytest.raises(FilesError, match="cannot read"):
            await alice.node.files.send("Bob", str(tmp_path / "missing"))
        with pytest.raises(FilesError, match="no contact or group"):
            await alice.node.files.send("Nobody", str(source))
        with pytest.raises(FilesError, match="not a transfer id"):
            await alice.node.files.accept("zz", None)
        with pytest.raises(FilesError, match="no transfer"):
            await alice.node.files.cancel("abcdef")
        sent = await alice.node.files.send("Bob", str(source))
        with pytest.raises(FilesError, match="a file you sent"):
            await alice.node.files.accept(sent.transfer_id, None)
        offer = await offered(bob)
        with pytest.raises(FilesError, match="not a folder"):
            await bob.node.files.accept(offer.transfer_id, str(tmp_path / "nowhere"))
        with pytest.raises(FilesError, match="auto-accept"):
            await bob.node.files.set_settings(None, "everyone", None)
        assert (await bob.node.files.show(offer.transfer_id)).state == "offered"
        assert len(await alice.node.files.list_transfers()) == 1


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount")
async def test_a_full_disk_keeps_the_partial_file_and_resumes_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_chunks(monkeypatch)
    source = random_file(tmp_path / "out" / "fat.bin", 3 * 1024 * 1024)
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk), check=False):
        pytest.skip("cannot mount a tmpfs here")
    try:
        async with running_nodes(tmp_path, "Alice", "Bob") as (alice, bob):
            await befriend(alice, bob)
            await alice.node.files.send("Bob", str(source))
            offer = await offered(bob)
            await bob.node.files.accept(offer.transfer_id, str(disk))
            failed = await state_of(bob, offer.transfer_id, "failed", "complete")
            assert "disk is full" in failed.error
            assert not (disk / "fat.bin").exists()
            kept = await bob.node.files.show(offer.transfer_id)
            assert 0 < kept.bytes_done < source.stat().st_size
            parts = [p for p in disk.iterdir() if p.name.endswith(".p2pid-part")]
            assert len(parts) == 1
            run("mount", "-o", "remount,size=8m", str(disk))
            await bob.node.files.accept(offer.transfer_id, None)
            done = await state_of(bob, offer.transfer_id, "complete", "failed")
            assert done.state == "complete", done.error
            assert (disk / "fat.bin").read_bytes() == source.read_bytes()
    finally:
        run("umount", "-l", str(disk), check=False)
