#!/usr/bin/env python
"""Start uWSGI (the web container's command) on the addresses nginx uses, and no other.

uWSGI listens on this container's address on the network nginx shares with web, plus
127.0.0.1 (its health check): the workers, beat and migrations share another network
with web and cannot open its uwsgi socket. That address is found
- by name, WEB_LISTEN_NAME (compose: an alias only that network has). The name may
  resolve to several web containers: this container's address is the one a socket can
  bind to;
- or by the network's subnet, WEB_LISTEN_SUBNET (Swarm, whose DNS names a task only
  once it is healthy, after uWSGI must have bound): the address of this container's
  interface in that subnet.
With neither set, it listens on every address (the image used on its own).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
import sys
import time

PORT = 9000
INI = "/etc/uwsgi/mediacms.ini"


def own_address(name: str, attempts: int = 10) -> str:
    """The address among `name`'s that belongs to this container (DNS may lag a start)."""
    for attempt in range(attempts):
        try:
            found = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
        except socket.gaierror:
            found = []
        for *_, (address, _port) in found:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((address, 0))
                except OSError:
                    continue  # another web container's address
                return address
        time.sleep(min(2**attempt, 5) * 0.2)
    sys.exit(f"start-uwsgi: {name!r} resolves to no address of this container")


#: ioctl that reads an interface's IPv4 address (linux/sockios.h)
SIOCGIFADDR = 0x8915


def interface_addresses() -> list[str]:
    """The IPv4 address of each of this container's interfaces that has one."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _index, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
            except OSError:
                continue  # no IPv4 address
            found.append(socket.inet_ntoa(answer[20:24]))
    return found


def address_in(subnet: str, addresses: list[str]) -> str:
    """The one of ``addresses`` inside ``subnet`` (CIDR)."""
    try:
        network = ipaddress.ip_network(subnet)
    except ValueError:
        sys.exit(f"start-uwsgi: WEB_LISTEN_SUBNET {subnet!r} is not a network (CIDR)")
    inside = [a for a in addresses if ipaddress.ip_address(a) in network]
    if not inside:
        sys.exit(f"start-uwsgi: no address of this container is in {subnet} "
                 f"(it has {', '.join(addresses) or 'none'})")  # fmt: skip
    return inside[0]


def main() -> None:
    name = os.environ.get("WEB_LISTEN_NAME", "")
    subnet = os.environ.get("WEB_LISTEN_SUBNET", "")
    own = address_in(subnet, interface_addresses()) if subnet else own_address(name) if name else ""
    sockets = [f"{own}:{PORT}", f"127.0.0.1:{PORT}"] if own else [f"0.0.0.0:{PORT}"]
    argv = ["uwsgi", "--ini", INI]
    for address in sockets:
        argv += ["--socket", address]
    print(f"start-uwsgi: listening on {', '.join(sockets)}", flush=True)
    os.execvp(argv[0], argv)  # noqa: S606 - uWSGI replaces this process, no shell


if __name__ == "__main__":
    main()
