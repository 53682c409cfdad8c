"""The peer port: mutual key proof before anything else, probes, and refusal of unknown peers."""

from __future__ import annotations

import socket

import pytest

from dwcp.consensus.core.crypto import public_key_of
from dwcp.manager.links import probe, tier_of
from dwcp.manager.peers import dial, make_auth
from dwcp.manager.wire import Connection, HandshakeAuth, Kind, WireError

pytestmark = pytest.mark.network


def test_probe_measures_rtt_and_bandwidth_and_sets_the_tier(make_sites):
    a, _ = make_sites(2, settings={"probe_bytes": 2 << 20})
    a.site.probe("manager-1")
    link = a.client.get("/v1/links").json()["links"][0]
    assert link["error"] is None and 0 < link["rtt_seconds"] < 0.5
    assert link["bandwidth_bytes_per_second"] > 1e6
    assert link["tier"] == tier_of(link["rtt_seconds"])
    assert a.metric("dwcp_link_rtt_seconds", {"peer": "manager-1"}) == link["rtt_seconds"]


def test_a_peer_outside_the_inventory_is_refused_before_any_request(make_sites):
    _, b = make_sites(2)
    stranger_key = bytes(range(32))
    # Same domain and keys as the real sites, plus a key for id 7 that the sites do not know.
    real = make_auth(b.site.ctx.inventory, 0, b.site.settings)
    keys = {**real._keys, 7: public_key_of(stranger_key)}
    stranger = HandshakeAuth(7, stranger_key, keys, real._domain)
    site = b.site.sites["manager-1"]
    with pytest.raises(WireError):
        conn = dial(site, stranger, timeout=5)
        conn.send(Kind.PING, {})
        conn.expect((Kind.PONG,), 0)
    assert b.metric("dwcp_peer_connections_refused_total", {"reason": "unknown_peer"}) == 1


def test_a_peer_with_the_wrong_key_for_its_name_is_refused(make_sites):
    a, b = make_sites(2)
    real = make_auth(a.site.ctx.inventory, 0, a.site.settings)
    impostor = HandshakeAuth(0, bytes(32), real._keys, real._domain)  # claims manager-0 without its key
    with pytest.raises(WireError):
        conn = dial(b.site.sites["manager-1"], impostor, timeout=5)
        conn.expect((Kind.PONG,), 0)
    assert b.metric("dwcp_peer_connections_refused_total", {"reason": "bad_signature"}) == 1


def test_requests_before_authentication_are_refused_without_reading_their_body(make_sites):
    _, b = make_sites(2)
    site = b.site.sites["manager-1"]
    sock = socket.create_connection((site.host, site.peer_port), timeout=5)
    conn = Connection(sock)
    conn.send(Kind.OFFER, {"tid": "x"}, b"\0" * 10)  # a frame of another kind before AUTH
    with pytest.raises(WireError):
        while True:
            conn.expect((Kind.AUTH,), 1 << 20)
    conn.close()
    assert b.metric("dwcp_peer_connections_refused_total", {"reason": "unauthenticated"}) == 1


def test_probe_on_an_authenticated_connection(make_sites):
    a, _ = make_sites(2)
    conn = dial(a.site.peers["manager-1"], a.site.auth)
    try:
        rtt, bandwidth = probe(conn, 1 << 20)
    finally:
        conn.close()
    assert rtt > 0 and bandwidth > 0
