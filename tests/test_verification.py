"""SAS verification: the machines driven with bytes, then two real nodes on 127.0.0.1, each with
its own SQLCipher store holding the other as an unverified contact."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
import trio
import vodozemac
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pid.crypto.identity import IdentityKeys
from p2pid.crypto.olm import OlmAccount
from p2pid.crypto.sas import (
    EMOJI,
    SasError,
    SasExchange,
    SasParty,
    key_commitment,
    sas_info,
)
from p2pid.home import Home
from p2pid.net.host import NetHost
from p2pid.protocols.framed import FramedStream
from p2pid.protocols.verification import (
    Finished,
    Initiator,
    KeysReady,
    PeerConfirmed,
    Requested,
    Responder,
    VerificationProtocolError,
    VerificationResult,
    VerificationStateError,
    new_verification_id,
)
from p2pid.provision import create_home, unlock_vault_key
from p2pid.store import contacts as contact_queries
from p2pid.store import queries
from p2pid.store.contacts import ContactDevice, ContactRecord
from p2pid.store.trio_store import TrioStore
from p2pid.verification import VerificationError, Verifications
from p2pid.wire.events import Event
from p2pid.wire.verification import (
    MAX_FRAME_BYTES,
    PROTOCOL_ID,
    CancelReason,
    SasAccept,
    SasCancel,
    SasKey,
    SasMac,
    SasStart,
    VerificationDone,
    VerificationKeysReady,
    VerificationRequested,
    VerificationState,
    decode_message,
    encode_message,
)

VID = bytes(range(16))

# -- sans-IO ------------------------------------------------------------------------------------


def party(keys: IdentityKeys) -> SasParty:
    return SasParty(identity_key=keys.identity_public_key, peer_id=keys.peer_id)


@dataclass
class Pair:
    alice: Initiator
    bob: Responder
    alice_keys: IdentityKeys
    bob_keys: IdentityKeys


def new_pair(bob_sees_alice_as: bytes | None = None) -> Pair:
    alice_keys, bob_keys = IdentityKeys.generate(), IdentityKeys.generate()
    alice_as_bob_holds_her = SasParty(
        identity_key=bob_sees_alice_as or alice_keys.identity_public_key,
        peer_id=alice_keys.peer_id,
    )
    return Pair(
        alice=Initiator(we=party(alice_keys), they=party(bob_keys), verification_id=VID),
        bob=Responder(we=party(bob_keys), they=alice_as_bob_holds_her),
        alice_keys=alice_keys,
        bob_keys=bob_keys,
    )


def one(frames: list[bytes]) -> bytes:
    assert len(frames) == 1, frames
    return frames[0]


def exchange_keys(pair: Pair) -> tuple[KeysReady, KeysReady]:
    """start -> accept -> key, as the stream would carry them."""
    pair.alice.start()
    assert pair.bob.receive_start(one(pair.alice.data_to_send())) == Requested(VID)
    pair.bob.accept()
    alice_ready = pair.alice.receive(one(pair.bob.data_to_send()))
    bob_ready = pair.bob.receive(one(pair.alice.data_to_send()))
    assert isinstance(alice_ready, KeysReady) and isinstance(bob_ready, KeysReady)
    return alice_ready, bob_ready


def test_both_sides_show_the_same_code_and_both_confirming_verifies() -> None:
    pair = new_pair()
    alice_ready, bob_ready = exchange_keys(pair)
    assert alice_ready.code == bob_ready.code
    code = alice_ready.code
    assert len(code.emoji) == 7 and all(entry in EMOJI for entry in code.emoji)
    assert all(1000 <= number <= 9191 for number in code.decimals)

    assert pair.alice.confirm(True) is None  # Alice first: her MAC goes out, she waits
    mac = one(pair.alice.data_to_send())
    assert isinstance(decode_message(mac), SasMac)
    assert pair.bob.receive(mac) == PeerConfirmed()
    assert pair.bob.peer_confirmed and not pair.bob.finished
    assert pair.bob.confirm(True) == Finished(VerificationResult(verified=True))
    assert pair.alice.receive(one(pair.bob.data_to_send())) == Finished(
        VerificationResult(verified=True)
    )
    assert pair.alice.data_to_send() == [] and pair.bob.data_to_send() == []


def test_confirming_in_the_other_order_verifies_too() -> None:
    pair = new_pair()
    exchange_keys(pair)
    assert pair.bob.confirm(True) is None
    assert pair.alice.receive(one(pair.bob.data_to_send())) == PeerConfirmed()
    assert pair.alice.confirm(True) == Finished(VerificationResult(verified=True))
    assert pair.bob.receive(one(pair.alice.data_to_send())) == Finished(
        VerificationResult(verified=True)
    )


def test_a_mismatch_cancels_both_and_verifies_nobody() -> None:
    pair = new_pair()
    exchange_keys(pair)
    pair.alice.confirm(True)
    alices_mac = one(pair.alice.data_to_send())
    assert pair.bob.confirm(False) == Finished(VerificationResult(False, CancelReason.MISMATCH))
    cancel = one(pair.bob.data_to_send())
    assert decode_message(cancel) == SasCancel(verification_id=VID, reason=CancelReason.MISMATCH)
    assert pair.alice.receive(cancel) == Finished(
        VerificationResult(False, CancelReason.MISMATCH, by_peer=True)
    )
    with pytest.raises(VerificationProtocolError):  # over: Alice's MAC changes nothing for Bob
        pair.bob.receive(alices_mac)
    assert pair.bob.result == VerificationResult(False, CancelReason.MISMATCH)


def tampered_accept(frame: bytes) -> tuple[bytes, vodozemac.Sas]:
    accept = decode_message(frame)
    assert isinstance(accept, SasAccept)
    mallory = vodozemac.Sas()
    forged = SasAccept(
        verification_id=accept.verification_id, public_key=mallory.public_key.to_bytes()
    )
    return encode_message(forged), mallory


def test_a_substituted_key_gives_different_codes_and_the_mismatch_path() -> None:
    pair = new_pair()
    pair.alice.start()
    pair.bob.receive_start(one(pair.alice.data_to_send()))
    pair.bob.accept()
    forged, _ = tampered_accept(one(pair.bob.data_to_send()))
    alice_ready = pair.alice.receive(forged)
    bob_ready = pair.bob.receive(one(pair.alice.data_to_send()))
    assert isinstance(alice_ready, KeysReady) and isinstance(bob_ready, KeysReady)
    assert alice_ready.code.emoji != bob_ready.code.emoji
    assert alice_ready.code.decimals != bob_ready.code.decimals
    # The people see different codes and say so.
    assert pair.bob.confirm(False) == Finished(VerificationResult(False, CancelReason.MISMATCH))
    result = pair.alice.receive(one(pair.bob.data_to_send()))
    assert result == Finished(VerificationResult(False, CancelReason.MISMATCH, by_peer=True))


def test_people_who_wrongly_confirm_different_codes_are_stopped_by_the_macs() -> None:
    pair = new_pair()
    pair.alice.start()
    pair.bob.receive_start(one(pair.alice.data_to_send()))
    pair.bob.accept()
    forged, _ = tampered_accept(one(pair.bob.data_to_send()))
    pair.alice.receive(forged)
    pair.bob.receive(one(pair.alice.data_to_send()))
    pair.alice.confirm(True)
    bob_result = pair.bob.receive(one(pair.alice.data_to_send()))
    assert bob_result == PeerConfirmed()
    assert pair.bob.confirm(True) == Finished(VerificationResult(False, CancelReason.BAD_MAC))
    cancel = one(pair.bob.data_to_send())  # Bob's MAC never left: only the cancel
    assert decode_message(cancel) == SasCancel(verification_id=VID, reason=CancelReason.BAD_MAC)
    assert pair.alice.receive(cancel) == Finished(
        VerificationResult(False, CancelReason.BAD_MAC, by_peer=True)
    )


def test_a_wrong_identity_key_on_one_side_changes_the_code() -> None:
    pair = new_pair(bob_sees_alice_as=IdentityKeys.generate().identity_public_key)
    alice_ready, bob_ready = exchange_keys(pair)
    assert alice_ready.code != bob_ready.code


def test_a_mac_over_other_identity_keys_is_rejected() -> None:
    alice_keys, bob_keys, mallory_keys = (IdentityKeys.generate() for _ in range(3))
    alice = SasExchange(VID, we=party(alice_keys), they=party(bob_keys), we_initiate=True)
    bob = SasExchange(VID, we=party(bob_keys), they=party(alice_keys), we_initiate=False)
    assert alice.establish(bob.public_key) == bob.establish(alice.public_key)
    bob.verify_mac(alice.mac())
    alice.verify_mac(bob.mac())

    # Same shared secret, but Bob holds another identity key for Alice: her MAC fails.
    bob.they = SasParty(mallory_keys.identity_public_key, alice_keys.peer_id)
    with pytest.raises(SasError):
        bob.verify_mac(alice.mac())
    bob.they = party(alice_keys)
    # Or another key for himself, or another device for Alice.
    bob.we = SasParty(mallory_keys.identity_public_key, bob_keys.peer_id)
    with pytest.raises(SasError):
        bob.verify_mac(alice.mac())
    bob.we = party(bob_keys)
    bob.they = SasParty(alice_keys.identity_public_key, mallory_keys.peer_id)
    with pytest.raises(SasError):
        bob.verify_mac(alice.mac())
    bob.they = party(alice_keys)
    # A MAC is bound to its direction: Alice's own MAC reflected back to her fails.
    with pytest.raises(SasError):
        alice.verify_mac(alice.mac())
    with pytest.raises(SasError):
        alice.verify_mac("not base64!")


def test_the_info_string_is_the_same_on_both_sides_and_binds_everything() -> None:
    alice_keys, bob_keys = IdentityKeys.generate(), IdentityKeys.generate()
    a_key, b_key = vodozemac.Sas().public_key.to_bytes(), vodozemac.Sas().public_key.to_bytes()
    info = sas_info(
        VID,
        initiator=party(alice_keys),
        initiator_key=a_key,
        responder=party(bob_keys),
        responder_key=b_key,
    )
    parts = info.split("|")
    assert parts == [
        "P2PID_SAS_V1",
        VID.hex(),
        alice_keys.identity_id,
        alice_keys.peer_id,
        vodozemac.Curve25519PublicKey.from_bytes(a_key).to_base64(),
        bob_keys.identity_id,
        bob_keys.peer_id,
        vodozemac.Curve25519PublicKey.from_bytes(b_key).to_base64(),
    ]
    with pytest.raises(ValueError):
        SasParty(alice_keys.identity_public_key, "12D3|evil")


def test_a_key_that_does_not_match_the_commitment_is_refused() -> None:
    pair = new_pair()
    pair.alice.start()
    pair.bob.receive_start(one(pair.alice.data_to_send()))
    pair.bob.accept()
    pair.alice.receive(one(pair.bob.data_to_send()))
    pair.alice.data_to_send()
    other_key = vodozemac.Sas().public_key.to_bytes()
    forged = encode_message(SasKey(verification_id=VID, public_key=other_key))
    assert pair.bob.receive(forged) == Finished(
        VerificationResult(False, CancelReason.BAD_COMMITMENT)
    )
    assert decode_message(one(pair.bob.data_to_send())) == SasCancel(
        verification_id=VID, reason=CancelReason.BAD_COMMITMENT
    )
    assert key_commitment(VID, other_key) != key_commitment(bytes(16), other_key)


def test_out_of_order_messages_are_protocol_errors() -> None:
    start = encode_message(SasStart(verification_id=VID, commitment=bytes(32)))
    accept = encode_message(SasAccept(verification_id=VID, public_key=bytes(range(32))))
    mac = encode_message(SasMac(verification_id=VID, mac="AAAA"))

    for frame in (accept, mac):
        with pytest.raises(VerificationProtocolError):
            new_pair().bob.receive_start(frame)  # anything but a start first

    def started_bob() -> Responder:
        bob = new_pair().bob
        bob.receive_start(start)
        return bob

    for frame in (start, mac):  # a second start; a MAC before any key
        with pytest.raises(VerificationProtocolError):
            started_bob().receive(frame)
    bob = started_bob()
    with pytest.raises(VerificationProtocolError):
        bob.receive(accept)  # an accept is the responder's to send
    assert bob.result == VerificationResult(False, CancelReason.PROTOCOL_ERROR)
    assert decode_message(one(bob.data_to_send())) == SasCancel(
        verification_id=VID, reason=CancelReason.PROTOCOL_ERROR
    )
    with pytest.raises(VerificationProtocolError, match="over"):
        bob.receive(mac)  # nothing after the end

    alice = new_pair().alice
    alice.start()
    alice.data_to_send()
    with pytest.raises(VerificationProtocolError):
        alice.receive(mac)  # a MAC before the keys
    alice = new_pair().alice
    alice.start()
    with pytest.raises(VerificationProtocolError):
        alice.receive(start)


def test_people_cannot_act_out_of_turn() -> None:
    pair = new_pair()
    with pytest.raises(VerificationStateError):
        pair.bob.accept()  # nothing to accept yet
    pair.alice.start()
    with pytest.raises(VerificationStateError):
        pair.alice.confirm(True)  # no code yet
    pair.bob.receive_start(one(pair.alice.data_to_send()))
    pair.bob.accept()
    with pytest.raises(VerificationStateError):
        pair.bob.accept()
    pair.alice.receive(one(pair.bob.data_to_send()))
    pair.alice.confirm(True)
    with pytest.raises(VerificationStateError):
        pair.alice.confirm(True)  # once
    pair.alice.cancel(CancelReason.USER_CANCELLED)
    with pytest.raises(VerificationStateError):
        pair.alice.cancel(CancelReason.USER_CANCELLED)


def test_messages_for_another_verification_and_malformed_ones_are_rejected() -> None:
    pair = new_pair()
    pair.alice.start()
    pair.bob.receive_start(one(pair.alice.data_to_send()))
    pair.bob.accept()
    foreign = encode_message(SasAccept(verification_id=bytes(16), public_key=bytes(range(32))))
    with pytest.raises(VerificationProtocolError, match="another verification"):
        pair.alice.receive(foreign)

    too_short = msgspec.msgpack.encode(
        {"type": "start", "verification_id": b"x", "commitment": b""}
    )
    unknown_type = msgspec.msgpack.encode({"type": "hello", "verification_id": VID})
    unknown_reason = msgspec.msgpack.encode(
        {"type": "cancel", "verification_id": VID, "reason": "because"}
    )
    for frame in (b"", b"\xc1", too_short, unknown_type, unknown_reason):
        with pytest.raises(VerificationProtocolError, match="malformed"):
            new_pair().bob.receive_start(frame)


def test_a_low_order_key_is_a_protocol_error() -> None:
    pair = new_pair()
    pair.alice.start()
    pair.alice.data_to_send()
    zero_key = encode_message(SasAccept(verification_id=VID, public_key=bytes(32)))
    with pytest.raises(VerificationProtocolError, match="SAS key"):
        pair.alice.receive(zero_key)
    assert pair.alice.result == VerificationResult(False, CancelReason.PROTOCOL_ERROR)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_get_past_the_decoder_silently(data: bytes) -> None:
    bob = new_pair().bob
    try:
        requested = bob.receive_start(data)
    except VerificationProtocolError:
        assert bob.result == VerificationResult(False, CancelReason.PROTOCOL_ERROR)
        return
    assert requested.verification_id == decode_message(data).verification_id


def test_the_emoji_table_is_matrix_s() -> None:
    assert len(EMOJI) == 64
    assert len({symbol for symbol, _ in EMOJI}) == 64
    assert EMOJI[0] == ("\U0001f436", "Dog")
    assert EMOJI[21] == ("\u2601\ufe0f", "Cloud")
    assert EMOJI[36] == ("\U0001f44d", "Thumbs Up")
    assert EMOJI[63] == ("\U0001f4cc", "Pin")


def test_events_are_typed_records_with_their_tags() -> None:
    event = VerificationKeysReady(
        at_ms=1,
        verification_id=VID.hex(),
        identity_id="abc",
        name="Bob",
        incoming=True,
        emoji=[EMOJI[0]],
        decimals=[1000, 2000, 3000],
    )
    as_json = msgspec.json.decode(msgspec.json.encode(event))
    assert as_json["type"] == "verification.keys_ready"
    assert as_json["emoji"] == [["\U0001f436", "Dog"]]
    assert isinstance(event, Event)
    assert msgspec.convert(as_json, VerificationKeysReady) == event


# -- two real nodes ------------------------------------------------------------------------------

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
STEP = 30.0
E = TypeVar("E")
T1 = TypeVar("T1")
T2 = TypeVar("T2")


class EventLog:
    """What a Verifications published, to wait on without sleeping."""

    def __init__(self) -> None:
        self.all: list[Any] = []
        self._send, self._receive = trio.open_memory_channel[Any](1000)

    def publish(self, event: Any) -> None:
        self.all.append(event)
        self._send.send_nowait(event)

    async def next(self, kind: type[E]) -> E:
        async for event in self._receive:
            if isinstance(event, kind):
                return event
        raise AssertionError("the event log closed")


@dataclass
class Node:
    name: str
    keys: IdentityKeys
    olm: OlmAccount
    store: TrioStore
    net: NetHost
    verifications: Verifications
    events: EventLog

    @property
    def identity_key(self) -> bytes:
        return self.keys.identity_public_key

    async def contact(self, other: Node) -> contact_queries.ContactRow:
        row = await self.store.read(
            lambda conn: contact_queries.get_contact(conn, other.identity_key)
        )
        assert row is not None
        return row


@contextlib.asynccontextmanager
async def open_node(
    tmp_path: Path, name: str, nursery: trio.Nursery, timeout_seconds: float
) -> AsyncIterator[Node]:
    home = Home(tmp_path / name)
    create_home(home, name, passphrase=None)
    vault_key = unlock_vault_key(home)
    async with TrioStore.open(home.database, vault_key) as store:
        identity = await store.read(queries.load_local_identity)
        assert identity is not None
        keys = IdentityKeys(identity.identity_seed, identity.device_seed)
        async with NetHost.open(keys.device_seed, LOOPBACK) as net:
            events = EventLog()
            verifications = Verifications(
                store=store,
                net=net,
                keys=keys,
                publish=events.publish,
                timeout_seconds=timeout_seconds,
            )
            net.set_stream_handler(PROTOCOL_ID, verifications.serve)
            scope = trio.CancelScope()

            async def run_verifications(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                with scope:
                    await verifications.run(task_status=task_status)

            await nursery.start(run_verifications)
            try:
                yield Node(
                    name=name,
                    keys=keys,
                    olm=OlmAccount.from_pickle(identity.olm_account, vault_key),
                    store=store,
                    net=net,
                    verifications=verifications,
                    events=events,
                )
            finally:
                scope.cancel()


async def add_unverified_contact(holder: Node, other: Node) -> None:
    """As a contact request would: the other's card, not verified."""
    record = ContactRecord(
        identity_key=other.identity_key,
        display_name=other.name,
        device_list=None,
        device_list_version=1,
        devices=(
            ContactDevice(
                peer_id=other.net.peer_id,
                device_key=other.keys.device_public_key,
                olm_curve25519=other.olm.curve25519,
                olm_ed25519=other.olm.ed25519,
                name=f"{other.name}'s laptop",
                created_at=1,
            ),
        ),
    )
    await holder.store.write(lambda conn: contact_queries.upsert_contact(conn, record, 1))
    holder.net.add_addrs(other.net.peer_id, other.net.listen_addrs())


@contextlib.asynccontextmanager
async def nodes(
    tmp_path: Path, *names: str, timeout_seconds: float = 300.0
) -> AsyncIterator[list[Node]]:
    async with trio.open_nursery() as nursery, contextlib.AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(open_node(tmp_path, name, nursery, timeout_seconds))
            for name in names
        ]
        yield opened


async def both(
    first: Callable[[], Awaitable[T1]], second: Callable[[], Awaitable[T2]]
) -> tuple[T1, T2]:
    results: dict[int, Any] = {}

    async def run(index: int, fn: Callable[[], Awaitable[Any]]) -> None:
        results[index] = await fn()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, 0, first)
        nursery.start_soon(run, 1, second)
    return results[0], results[1]


async def accept_next(node: Node) -> Any:
    request = await node.events.next(VerificationRequested)
    [pending] = node.verifications.pending()
    assert pending.state is VerificationState.REQUESTED and pending.emoji == []
    assert pending.verification_id == request.verification_id
    return await node.verifications.accept(request.verification_id)


async def test_both_confirm_and_both_are_verified_by_sas(tmp_path: Path) -> None:
    async with nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await add_unverified_contact(alice, bob)
        await add_unverified_contact(bob, alice)
        assert not (await alice.contact(bob)).verified
        with trio.fail_after(STEP):
            alices_view, bobs_view = await both(
                lambda: alice.verifications.start(bob.identity_key), lambda: accept_next(bob)
            )
            assert alices_view.verification_id == bobs_view.verification_id
            assert alices_view.emoji == bobs_view.emoji and len(alices_view.emoji) == 7
            assert alices_view.decimals == bobs_view.decimals
            assert not alices_view.incoming and bobs_view.incoming
            assert bobs_view.state is VerificationState.KEYS_READY
            vid = alices_view.verification_id

            alices_outcome, bobs_outcome = await both(
                lambda: alice.verifications.confirm(vid, True),
                lambda: bob.verifications.confirm(vid, True),
            )
        assert alices_outcome.verified and bobs_outcome.verified
        assert alices_outcome.reason is None and bobs_outcome.identity_id == alice.keys.identity_id
        alices_bob, bobs_alice = await alice.contact(bob), await bob.contact(alice)
        assert alices_bob.verified_by == "sas" and bobs_alice.verified_by == "sas"

        for node in (alice, bob):
            kinds = [type(event) for event in node.events.all]
            assert kinds[-2:] == [VerificationKeysReady, VerificationDone]
            assert node.events.all[-1].verified
            assert node.verifications.pending() == []
        assert alice.verifications.view(vid).state is VerificationState.VERIFIED
        # A late, retried confirmation gets the same outcome.
        assert (await alice.verifications.confirm(vid, True)).verified


async def test_one_mismatch_verifies_neither(tmp_path: Path) -> None:
    async with nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await add_unverified_contact(alice, bob)
        await add_unverified_contact(bob, alice)
        with trio.fail_after(STEP):
            view, _ = await both(
                lambda: alice.verifications.start(bob.identity_key), lambda: accept_next(bob)
            )
            alices_outcome, bobs_outcome = await both(
                lambda: alice.verifications.confirm(view.verification_id, True),
                lambda: bob.verifications.confirm(view.verification_id, False),
            )
        assert not alices_outcome.verified and not bobs_outcome.verified
        assert alices_outcome.reason is CancelReason.MISMATCH and alices_outcome.by_peer
        assert bobs_outcome.reason is CancelReason.MISMATCH and not bobs_outcome.by_peer
        assert (await alice.contact(bob)).verified_by is None
        assert (await bob.contact(alice)).verified_by is None
        done = await alice.events.next(VerificationDone)
        assert not done.verified and done.reason is CancelReason.MISMATCH


async def test_a_declined_request_fails_the_start(tmp_path: Path) -> None:
    async with nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await add_unverified_contact(alice, bob)
        await add_unverified_contact(bob, alice)

        async def decline() -> Any:
            request = await bob.events.next(VerificationRequested)
            # One at a time per contact, whichever side asked.
            with pytest.raises(VerificationError, match="already running"):
                await bob.verifications.start(alice.identity_key)
            return await bob.verifications.cancel(request.verification_id)

        async def start() -> VerificationError:
            with pytest.raises(VerificationError) as refused:
                await alice.verifications.start(bob.identity_key)
            return refused.value

        with trio.fail_after(STEP):
            refused, declined = await both(start, decline)
        assert refused.kind == "refused" and "declined" in str(refused)
        assert declined.reason is CancelReason.USER_CANCELLED and not declined.by_peer
        assert (await alice.contact(bob)).verified_by is None


async def test_a_non_contact_is_dropped(tmp_path: Path) -> None:
    async with nodes(tmp_path, "Bob", "Carol") as (bob, carol):
        await add_unverified_contact(carol, bob)  # Carol holds Bob, Bob does not know Carol
        carol.net.add_addrs(bob.net.peer_id, bob.net.listen_addrs())
        with trio.fail_after(STEP), pytest.raises(VerificationError) as dropped:
            await carol.verifications.start(bob.identity_key)
        assert dropped.value.kind == "unreachable"
        assert bob.events.all == [] and bob.verifications.pending() == []
        assert (await carol.contact(bob)).verified_by is None
        done = await carol.events.next(VerificationDone)
        assert not done.verified and done.reason is CancelReason.DISCONNECTED


async def test_only_contacts_can_be_asked(tmp_path: Path) -> None:
    async with nodes(tmp_path, "Alice") as (alice,):
        with pytest.raises(VerificationError) as unknown:
            await alice.verifications.start(IdentityKeys.generate().identity_public_key)
        assert unknown.value.kind == "not_found"
        with pytest.raises(VerificationError) as bad_id:
            await alice.verifications.confirm("not hex", True)
        assert bad_id.value.kind == "invalid"


async def test_nobody_confirming_times_out_and_verifies_nobody(tmp_path: Path) -> None:
    async with nodes(tmp_path, "Alice", "Bob", timeout_seconds=1.5) as (alice, bob):
        await add_unverified_contact(alice, bob)
        await add_unverified_contact(bob, alice)
        with trio.fail_after(STEP):
            view, _ = await both(
                lambda: alice.verifications.start(bob.identity_key), lambda: accept_next(bob)
            )
            # Alice confirms; Bob never answers.
            outcome = await alice.verifications.confirm(view.verification_id, True)
            bobs_done = await bob.events.next(VerificationDone)
        assert not outcome.verified and outcome.reason is CancelReason.TIMEOUT
        assert not bobs_done.verified and bobs_done.reason is CancelReason.TIMEOUT
        assert (await alice.contact(bob)).verified_by is None
        assert (await bob.contact(alice)).verified_by is None


async def test_a_second_start_from_the_same_contact_is_answered_busy(tmp_path: Path) -> None:
    async with nodes(tmp_path, "Alice", "Bob") as (alice, bob):
        await add_unverified_contact(alice, bob)
        await add_unverified_contact(bob, alice)

        async def start() -> None:
            with pytest.raises(VerificationError):
                await alice.verifications.start(bob.identity_key)

        with trio.fail_after(STEP):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(start)
                request = await bob.events.next(VerificationRequested)
                # Alice's device opens a second stream with a start of its own.
                raw = FramedStream(
                    await alice.net.new_stream(bob.net.peer_id, [PROTOCOL_ID]), MAX_FRAME_BYTES
                )
                second = new_verification_id()
                await raw.send(
                    encode_message(SasStart(verification_id=second, commitment=bytes(32)))
                )
                answer = decode_message(await raw.receive())
                assert answer == SasCancel(verification_id=second, reason=CancelReason.BUSY)
                await raw.stream.close()
                [pending] = bob.verifications.pending()
                assert pending.verification_id == request.verification_id
                await bob.verifications.cancel(request.verification_id)
