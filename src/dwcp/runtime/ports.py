"""Free loopback ports for local clusters and tests, never the same one twice in a process.

Binding port 0 and closing the socket only says the port was free at that moment; two such calls can hand
out the same number (CI once saw a manager's HTTP and peer port collide). So every port handed out is
remembered and skipped later, and the ones asked for together are held open together.
"""

from __future__ import annotations

import socket
import threading

# Monitoring's default listeners (see the default inventory); never hand these out to nodes.
RESERVED_PORTS = frozenset({9190, 9193, 9194, 9195})

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct TCP ports free on `host`, none handed out before by this process."""
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
                    _handed_out.add(port)
        finally:
            for s in socks:
                s.close()
    return ports


def free_port(host: str = "127.0.0.1") -> int:
    """One port, as free_ports(1)."""
    return free_ports(1, host)[0]
