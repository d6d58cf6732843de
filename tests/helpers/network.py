"""What listens where: a server bound to loopback must not answer on this machine's other addresses."""
from __future__ import annotations

import socket


def other_addresses() -> list[str]:
    """This machine's IPv4 addresses that are not loopback (to prove nothing listens there)."""
    found = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent; this only picks the outgoing address
            found.add(s.getsockname()[0])
        except OSError:
            pass
    try:
        found.update(i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET))
    except OSError:
        pass
    return sorted(a for a in found if not a.startswith("127."))


def refused_on(addresses: list[str], port: int) -> None:
    """Nothing accepts a connection to port on any of the addresses."""
    for address in addresses:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            assert sock.connect_ex((address, port)) != 0, f"something answers on {address}:{port}"
