"""free_ports never hands out one port twice in a process, even when the kernel offers it again."""

from __future__ import annotations

import itertools

from dwcp.runtime import ports


class FakeSocket:
    """bind(0) yields the ports of a scripted sequence, as a kernel may reuse a just-closed port."""

    offers = iter(())

    def bind(self, _addr) -> None:
        self.port = next(FakeSocket.offers)

    def getsockname(self):
        return ("127.0.0.1", self.port)

    def close(self) -> None:
        pass


def test_a_port_offered_again_by_the_kernel_is_skipped(monkeypatch):
    monkeypatch.setattr(ports, "_handed_out", set())
    monkeypatch.setattr(ports, "_order", ports.deque())
    monkeypatch.setattr(ports.socket, "socket", FakeSocket)
    FakeSocket.offers = iter([41000, 41000, 41001, 41001, 41000, 41002])
    assert ports.free_port() == 41000
    assert ports.free_ports(2) == [41001, 41002]


def test_the_monitoring_listeners_are_never_handed_out(monkeypatch):
    monkeypatch.setattr(ports, "_handed_out", set())
    monkeypatch.setattr(ports, "_order", ports.deque())
    monkeypatch.setattr(ports.socket, "socket", FakeSocket)
    FakeSocket.offers = iter([9190, 9193, 41003])
    assert ports.free_ports(1) == [41003]


def test_real_ports_are_distinct_across_calls():
    got = list(itertools.chain.from_iterable(ports.free_ports(20) for _ in range(5)))
    assert len(set(got)) == len(got) == 100


def test_only_the_most_recent_ports_are_remembered_so_a_long_campaign_never_runs_dry(monkeypatch):
    monkeypatch.setattr(ports, "_handed_out", set())
    monkeypatch.setattr(ports, "_order", ports.deque())
    monkeypatch.setattr(ports, "REMEMBERED", 2)
    monkeypatch.setattr(ports.socket, "socket", FakeSocket)
    FakeSocket.offers = iter([41000, 41001, 41002, 41000, 41001])
    assert ports.free_ports(3) == [41000, 41001, 41002]
    assert ports.free_port() == 41000  # forgotten (oldest), so offered again; 41001 is still remembered
    assert sorted(ports._handed_out) == [41000, 41002]
