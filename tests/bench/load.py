"""wrk against a stack's nginx, the way every throughput figure of the bench is taken.

Throughput goes to each nginx container's own address on its bridge network, not to a
port published on 127.0.0.1: on loopback Docker's userland proxy carries every byte
and it, not nginx, was what the figures measured (and they moved by a third from round
to round). On two or more cores, wrk runs on CPU 0 and every nginx measured on CPU 1,
so the server measured never competes with its client.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from urllib.parse import urlsplit

PINNED = (os.cpu_count() or 1) >= 2  # wrk on CPU 0, the nginx measured on CPU 1


def nginx_url(stack, container: str | None = None) -> str:
    """The stack's nginx (or another ``container`` of it) at its own address (its
    published network), pinned to CPU 1."""
    container = container or stack.dc("ps", "--quiet", "nginx").stdout.split()[0]
    if PINNED:
        subprocess.run(["docker", "update", "--cpuset-cpus", "1", container],
                       check=True, capture_output=True)  # fmt: skip
    return f"http://{address(container)}:8080"


def address(container: str) -> str:
    """The container's address on its one network that is not internal."""
    nets = json.loads(subprocess.run(["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}",
                                      container], capture_output=True, text=True,
                                     check=True).stdout)  # fmt: skip
    for name, net in nets.items():
        internal = subprocess.run(["docker", "network", "inspect", "--format", "{{.Internal}}",
                                   name], capture_output=True, text=True,
                                  check=True).stdout.strip()  # fmt: skip
        if internal == "false":
            return net["IPAddress"]
    raise RuntimeError(f"{container} is on no network the host reaches")


def site_name(stack) -> str:
    """The name a stack answers to (the Host header of its requests)."""
    return urlsplit(stack.url("/")).hostname


def wrk(
    host: str,
    url: str,
    seconds: int = 8,
    headers: tuple[str, ...] = (),
    resolve: tuple[str, str] | None = None,
) -> float:
    """Requests per second; fails when any answer was not 2xx/3xx (a refused gate). The
    Host header is ``host``, whatever address the URL names. ``resolve``
    (name, address): wrk finds the URL's name at that address (HTTPS needs the name, for
    its SNI), through a hosts file of its own: a mount namespace of wrk's alone, in a
    user namespace, so it needs no root and the machine's /etc/hosts is not touched."""
    flags = [arg for header in (f"Host: {host}", *headers) for arg in ("-H", header)]
    pin = ["taskset", "-c", "0"] if PINNED else []
    argv = ["wrk", "-t1", "-c32", f"-d{seconds}s", *flags, url]
    with tempfile.NamedTemporaryFile("w", suffix=".hosts") as hosts:
        if resolve:
            name, at = resolve
            hosts.write(f"127.0.0.1 localhost\n{at} {name}\n")
            hosts.flush()
            argv = ["unshare", "--map-root-user", "--mount", "sh", "-c",
                    f'mount --bind {hosts.name} /etc/hosts && exec "$@"', "wrk", *argv]  # fmt: skip
        out = subprocess.run([*pin, *argv], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    if "Non-2xx or 3xx responses" in out:
        raise AssertionError(f"{url}: some answers were errors\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
