#!/usr/bin/env python3
"""Container health checks of the MediaCMS images; standard library only, no Django.

    healthcheck.py uwsgi            uWSGI on 127.0.0.1:9000 answers GET / (uwsgi protocol)
    healthcheck.py celery NODE      the worker (PID 1) runs, Redis answers, and the worker
                                    NODE@<hostname> answers a Celery ping
    healthcheck.py beat FILE SECS   celery beat (PID 1) runs, Redis answers, and no entry
                                    of its schedule FILE is overdue by more than SECS

Exit 0 when healthy, 1 with a one-line reason otherwise (docker inspect shows it).

The process and Redis checks run every time and cost a few milliseconds. The deeper
checks run at most once per DEEP_EVERY seconds while they pass, and at every check while
they fail: the schedule check imports Celery (0.6 CPU-seconds), and the Celery ping asks
the worker over Redis itself, as Celery's own client would (importing Celery for it
cost the same 0.6 CPU-seconds, in three containers per stack). A stopped, dead or
cut-off worker turns unhealthy at once; one whose process runs but no longer answers,
within DEEP_EVERY seconds more.
"""

import base64
import dbm
import importlib
import json
import os
import shelve
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit


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


#: the expensive checks run at most this often while they pass (seconds)
DEEP_EVERY = 60
#: when each passed last: the container's own /tmp (a tmpfs only www-data writes)
PASSED = "/tmp/healthcheck-{}.passed"  # noqa: S108


def now_and_then(check, stamp, every=DEEP_EVERY):
    """``check()``, unless it passed less than ``every`` seconds ago (``stamp``'s time)."""
    stamp = Path(stamp)
    try:
        if time.time() - stamp.stat().st_mtime < every:
            return None
    except FileNotFoundError:
        pass
    problem = check()
    if problem:
        stamp.unlink(missing_ok=True)
    else:
        stamp.touch()
    return problem


def _broker():
    # compose and Swarm hand the URL (it holds the password) in as a secret file
    path = os.environ.get("REDIS_LOCATION_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get("REDIS_LOCATION", "redis://redis:6379/1")


def _redis_command(*words):
    """One command in Redis's wire protocol (RESP)."""
    encoded = [word.encode() for word in words]
    return f"*{len(encoded)}\r\n".encode() + b"".join(
        b"$%d\r\n%s\r\n" % (len(word), word) for word in encoded
    )


class RedisRefused(Exception):
    """Redis answered an error (its text, "-" first), or closed the connection."""


def _reply(replies):
    """One reply read from the file ``replies``: str, int, bytes, list or None."""
    line = replies.readline()
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"-" or not line:
        raise RedisRefused(line.decode(errors="replace").strip() or "connection closed")
    if kind == b"+":
        return rest.decode(errors="replace")
    if kind == b":":
        return int(rest)
    if kind in (b"$", b"*") and int(rest) < 0:
        return None
    if kind == b"$":
        return replies.read(int(rest) + 2)[:-2]
    if kind == b"*":
        return [_reply(replies) for _ in range(int(rest))]
    raise RedisRefused(f"not Redis's protocol: {line[:40]!r}")


def _redis(url, seconds, *commands):
    """Send ``commands`` (lists of words) in one write, after AUTH when the URL holds a
    password; their replies, in order. Redis runs them in order: a blocking one waits."""
    where = urlsplit(url)
    if where.scheme not in ("redis", "rediss"):
        raise ValueError(f"cannot probe a {where.scheme}:// broker (redis:// or rediss:// only)")
    if where.password:
        login = [unquote(where.username)] if where.username else []
        commands = (["AUTH", *login, unquote(where.password)], *commands)
    host = where.hostname or "localhost"
    with socket.create_connection((host, where.port or 6379), timeout=seconds) as conn:
        if where.scheme == "rediss":
            conn = ssl.create_default_context().wrap_socket(conn, server_hostname=host)
        conn.sendall(b"".join(_redis_command(*command) for command in commands))
        replies = conn.makefile("rb")
        answers = [_reply(replies) for _ in commands]
    return answers[1:] if where.password else answers


def _redis_ping(url, seconds):
    """AUTH (when the URL holds a password) and PING; None when Redis answers PONG."""
    try:
        [reply] = _redis(url, seconds, ["PING"])
    except (RedisRefused, ValueError) as refused:
        return f"Redis refused: {refused}" if isinstance(refused, RedisRefused) else str(refused)
    return None if reply == "PONG" else f"Redis answered {str(reply)[:40]!r} to PING"


def broker_reachable(seconds=4.0):
    """Redis answers PING; bounded, since a cut network makes name lookups hang."""
    outcome = []

    def probe():
        try:
            outcome.append(_redis_ping(_broker(), seconds))
        except Exception as exc:  # reported below
            outcome.append(f"unreachable: {type(exc).__name__}: {exc}")

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(seconds)
    where = urlsplit(_broker())
    if not outcome:
        return f"broker {where.hostname}:{where.port} did not answer within {seconds:.0f}s"
    return outcome[0] and f"broker {where.hostname}:{where.port} {outcome[0]}"


#: /proc states of a process that will not run again by itself
HALTED = {"T": "stopped", "t": "stopped by a tracer", "Z": "a zombie", "X": "dead"}


def main_process(role, proc="/proc/1"):
    """The container's main process is celery ``role`` (worker, beat) and is not stopped."""
    proc = Path(proc)
    try:
        words = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, IndexError):
        return f"no process {proc.name}"
    if role not in words.split() or "celery" not in map(os.path.basename, words.split()):
        return f"process {proc.name} is not celery {role}: {words[:80]!r}"
    if state in HALTED:
        return f"celery {role} (process {proc.name}) is {HALTED[state]} (state {state})"
    return None


#: kombu's Redis transport: where Celery's control exchange keeps its bindings, and
#: the separator of a binding's routing key, pattern and queue
PIDBOX_BINDINGS = "_kombu.binding.reply.celery.pidbox"
KOMBU_SEP = "\x06\x16"


def answers_ping(node, seconds=5):
    """The worker ``node``@<hostname> answers a Celery ping, asked as `celery inspect ping`
    asks it over Redis (kombu's pidbox: a broadcast on the control channel, the answer
    pushed to a reply queue bound for this one question), without importing Celery."""
    target = f"{node}@{socket.gethostname()}"
    url = _broker()
    db = urlsplit(url).path.strip("/") or "0"
    oid, ticket = uuid.uuid4().hex, str(uuid.uuid4())
    queue = f"{oid}.reply.celery.pidbox"
    binding = KOMBU_SEP.join([oid, "", queue])
    question = {"method": "ping", "arguments": {}, "destination": [target], "pattern": None,
                "matcher": None, "ticket": ticket,
                "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": oid}}  # fmt: skip
    message = {
        "body": base64.b64encode(json.dumps(question).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"clock": 1, "expires": time.time() + seconds},
        "properties": {
            "delivery_mode": 1,
            "priority": 0,
            "body_encoding": "base64",
            "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""},
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    replies = _redis(
        url, seconds + 3,
        ["SELECT", db],
        ["SADD", PIDBOX_BINDINGS, binding],
        ["PUBLISH", f"/{db}.celery.pidbox", json.dumps(message)],
        ["BRPOP", queue, str(seconds)],
        ["DEL", queue],
        ["SREM", PIDBOX_BINDINGS, binding],
    )  # fmt: skip
    if replies[3] is None:
        return f"no ping reply from {target} within {seconds}s"
    answer = json.loads(replies[3][1])
    body = answer["body"]
    if answer.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    if answer.get("headers", {}).get("ticket") != ticket or target not in json.loads(body):
        return f"no ping reply from {target}: {str(body)[:80]!r}"
    return None


def celery(node):
    """Running (PID 1), reaching Redis, and answering a ping (at most once a minute)."""
    return (
        main_process("worker")
        or broker_reachable()
        or now_and_then(lambda: answers_ping(node), PASSED.format("celery"))
    )


def overdue(path, margin):
    """No entry of beat's schedule store is overdue by more than ``margin`` seconds.

    Beat writes each entry's last run time to the store (a shelve) when it sends the
    task, then flushes it to the file every 3 minutes at most: ``margin`` must exceed
    180 s plus beat's --max-interval. A schedule with nothing due for hours is healthy.
    """
    from celery import Celery  # the worker image's venv has it

    kind = dbm.whichdb(path)
    if kind is None:
        return f"{path} does not exist yet"
    if not kind:
        return f"{path} is not a schedule database"
    # "u": gdbm without its lock, which the running beat holds; sqlite readers need none
    store = shelve.Shelf(
        importlib.import_module(kind).open(path, "ru" if kind == "dbm.gnu" else "r")
    )
    with store:
        if "entries" not in store:
            return f"{path} holds no schedule yet"
        # naive time stamps (older stores) are in beat's time zone, stored beside them
        app = Celery(set_as_current=True)
        app.conf.timezone = store.get("tz")
        app.conf.enable_utc = store.get("utc_enabled", True)
        late = {
            name: -entry.schedule.remaining_estimate(entry.last_run_at).total_seconds()
            for name, entry in store["entries"].items()
        }
    name = max(late, key=late.get, default=None)
    if name is not None and late[name] > float(margin):
        return f"{name!r} was due {late[name]:.0f}s ago (margin {margin}s): beat is not sending it"
    return None


def beat(path, margin):
    """Alive (PID 1 running), able to send (Redis), scheduling (nothing overdue)."""
    return (
        main_process("beat")
        or broker_reachable()
        or now_and_then(lambda: overdue(path, margin), PASSED.format("beat"))
    )


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
