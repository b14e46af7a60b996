import pytest

from p2pid.node import NodeError, expand_unspecified, interface_ipv4_addresses, split_peer_multiaddr

PEER = "12D3KooWDWPLAN4gwfddrWd96WAD8HVDJeLhJQ2txCdgvQP1VmA3"


def test_unspecified_listen_address_becomes_one_per_interface_address() -> None:
    addrs = ["/ip4/0.0.0.0/tcp/4001", "/ip4/127.0.0.1/tcp/5000"]
    assert expand_unspecified(addrs, ["192.0.2.7", "198.51.100.1"]) == [
        "/ip4/192.0.2.7/tcp/4001",
        "/ip4/198.51.100.1/tcp/4001",
        "/ip4/127.0.0.1/tcp/5000",
    ]


def test_named_interfaces_resolve_and_unknown_ones_are_a_clear_error() -> None:
    assert interface_ipv4_addresses(["lo"]) == ["127.0.0.1"]
    with pytest.raises(NodeError, match="nosuch0"):
        interface_ipv4_addresses(["nosuch0"])


def test_default_interfaces_leave_out_loopback_when_there_is_anything_else() -> None:
    addresses = interface_ipv4_addresses(None)
    assert addresses
    assert all(not ip.startswith("127.") for ip in addresses) or addresses == ["127.0.0.1"]


def test_peer_multiaddr_splits_and_bad_ones_are_refused() -> None:
    assert split_peer_multiaddr(f"/ip4/127.0.0.1/tcp/1/p2p/{PEER}") == (
        "/ip4/127.0.0.1/tcp/1",
        PEER,
    )
    for bad in ("/ip4/127.0.0.1/tcp/1", f"/p2p/{PEER}", "/ip4/127.0.0.1/tcp/1/p2p/"):
        with pytest.raises(NodeError):
            split_peer_multiaddr(bad)
