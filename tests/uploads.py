"""Uploads sent the way an attacker sends them: a body streamed from a generator over a
raw socket until the server answers, so a refusal before the body is seen and timed
(the e2e and acceptance tiers both attack the upload locations with it)."""

from __future__ import annotations

import base64
import contextlib
import select
import socket
import time
import warnings

import requests

MIB = 1024 * 1024


def body(total: int):
    """A body of `total` bytes, made 1 MiB at a time and never held whole."""
    chunk = b"\0" * MIB
    for _ in range(total // MIB):
        yield chunk


def stream_until_answered(stack, path: str, headers: dict[str, str], total: int):
    """Send the head, then the body from a generator until nginx answers (or the body
    ends); returns (status line, seconds to the answer, bytes of body sent)."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sent, answer = 0, b""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=30) as conn:
        conn.sendall(head.encode())
        try:
            for chunk in body(total):
                if select.select([conn], [], [], 0)[0]:
                    break
                conn.sendall(chunk)
                sent += len(chunk)
                if time.monotonic() - started > 60:
                    break
        except OSError:  # nginx answered and closed while we were sending
            pass
        conn.settimeout(30)
        with contextlib.suppress(OSError):
            answer = conn.recv(4096)
    return answer.split(b"\r\n", 1)[0].decode(errors="replace"), time.monotonic() - started, sent


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def post_patiently(url: str, *, timeout: float, attempts: int = 3,
                   using: requests.Session | None = None, **kwargs) -> requests.Response:  # fmt: skip
    """POST (through ``using``, a logged-in session, when given) as a patient uploader does:
    the 503 page (web busy, starting or being replaced says "come back": Retry-After) is
    tried again after it, at most 30 s, ``attempts`` times in all; any other answer is
    returned as it is. Each 503 is a warning in the run's summary: a flaky site stays
    visible in a run that passes."""
    post = (using or requests).post
    for attempt in range(1, attempts):
        answer = post(url, timeout=timeout, **kwargs)
        if answer.status_code != 503 or "Retry-After" not in answer.headers:
            return answer
        warnings.warn(f"POST {url}: the 503 page at attempt {attempt} of {attempts}", stacklevel=2)
        time.sleep(min(int(answer.headers["Retry-After"]), 30))
    return post(url, timeout=timeout, **kwargs)
