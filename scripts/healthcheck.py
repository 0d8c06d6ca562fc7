#!/usr/bin/env python3
"""Container health checks of the MediaCMS images; standard library only, no Django.

    healthcheck.py uwsgi            uWSGI on 127.0.0.1:9000 answers GET / (uwsgi protocol)
    healthcheck.py celery NODE      the Celery worker NODE@<hostname> answers a ping
    healthcheck.py beat FILE SECS   celery beat rewrote its schedule FILE in the last SECS

Exit 0 when healthy, 1 with a one-line reason otherwise (docker inspect shows it).
"""

import os
import socket
import struct
import sys
import time
from urllib.parse import urlsplit


def uwsgi(host="127.0.0.1", port=9000, path="/"):
    path = os.environ.get("HEALTHCHECK_PATH", path)
    # The public name: Django answers 400 to any host it does not serve.
    name = urlsplit(os.environ.get("FRONTEND_HOST", "http://localhost")).netloc or "localhost"
    env = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "REQUEST_URI": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "HTTP_HOST": name,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
    }
    body = b"".join(
        struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
        for k, v in ((k.encode(), v.encode()) for k, v in env.items())
    )
    packet = struct.pack("<BHB", 0, len(body), 0) + body
    with socket.create_connection((host, port), timeout=8) as conn:
        conn.sendall(packet)
        reply = conn.recv(64).decode("latin-1")
    parts = reply.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return f"uWSGI gave no HTTP status line: {reply[:40]!r}"
    if int(parts[1]) >= 400:
        return f"uWSGI answered {parts[1]} for {path}"
    return None


def celery(node):
    from celery import Celery  # the worker image's venv has it

    broker = os.environ.get("REDIS_LOCATION", "redis://redis:6379/1")
    target = f"{node}@{socket.gethostname()}"
    app = Celery(broker=broker)
    replies = app.control.ping(destination=[target], timeout=5)
    if not any(target in reply for reply in replies):
        return f"no ping reply from {target}"
    return None


def beat(path, max_age):
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return f"{path} does not exist yet"
    if age > float(max_age):
        return f"{path} last written {age:.0f}s ago (limit {max_age}s)"
    return None


def main(argv):
    checks = {"uwsgi": uwsgi, "celery": celery, "beat": beat}
    if len(argv) < 2 or argv[1] not in checks:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        problem = checks[argv[1]](*argv[2:])
    except Exception as exc:  # a health check reports, it never crashes
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        print(problem)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
