"""Free loopback ports for local clusters and tests, never one this process handed out recently.

Binding port 0 and closing the socket only says the port was free at that moment; two such calls can hand
out the same number (CI once saw a manager's HTTP and peer port collide). So the ports handed out are
remembered (the last REMEMBERED of them) and skipped later, and the ones asked for together are held open
together.
"""

from __future__ import annotations

import socket
import threading
from collections import deque

# Monitoring's default listeners (see the default inventory); never hand these out to nodes.
RESERVED_PORTS = frozenset({9190, 9193, 9194, 9195})

# Only recent hand-outs can still collide (their servers may not have bound yet), and the kernel's ephemeral
# range is ~28,000 ports: remembering every port ever handed out would, in a long benchmark campaign, leave
# nothing to offer and spin forever. So the memory is the last REMEMBERED ports, oldest forgotten first.
REMEMBERED = 8192
_handed_out: set[int] = set()
_order: deque[int] = deque()
_lock = threading.Lock()


def _remember(port: int) -> None:
    _handed_out.add(port)
    _order.append(port)
    while len(_order) > REMEMBERED:
        _handed_out.discard(_order.popleft())


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct TCP ports free on `host`, none among the last REMEMBERED this process handed out."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    with _lock:
        try:
            while len(ports) < n:
                s = socket.socket()
                s.bind((host, 0))
                socks.append(s)
                port = s.getsockname()[1]
                if port not in RESERVED_PORTS and port not in _handed_out:
                    ports.append(port)
                    _remember(port)
        finally:
            for s in socks:
                s.close()
    return ports


def free_port(host: str = "127.0.0.1") -> int:
    """One port, as free_ports(1)."""
    return free_ports(1, host)[0]
