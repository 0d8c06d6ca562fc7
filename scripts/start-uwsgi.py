#!/usr/bin/env python
"""Start uWSGI (the web container's command) on the addresses nginx uses, and no other.

With WEB_LISTEN_NAME set (compose sets a name that resolves only on the network nginx
shares with web), uWSGI listens on this container's address under that name plus
127.0.0.1 (its health check): the workers, beat and migrations share another network
with web and cannot open its uwsgi socket. Unset, it listens on every address (the
image used on its own). The name may resolve to several web containers: this
container's address is the one a socket can bind to.
"""

from __future__ import annotations

import os
import socket
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


def main() -> None:
    name = os.environ.get("WEB_LISTEN_NAME", "")
    sockets = [f"{own_address(name)}:{PORT}", f"127.0.0.1:{PORT}"] if name else [f"0.0.0.0:{PORT}"]
    argv = ["uwsgi", "--ini", INI]
    for address in sockets:
        argv += ["--socket", address]
    print(f"start-uwsgi: listening on {', '.join(sockets)}", flush=True)
    os.execvp(argv[0], argv)  # noqa: S606 - uWSGI replaces this process, no shell


if __name__ == "__main__":
    main()
