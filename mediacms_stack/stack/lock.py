"""One operation at a time per stack: backups, restores, upgrades, up/down, scale.

The lock is ``flock`` on a file beside the stack's .env, named after its compose
project; the kernel drops it when the holder exits, however it exits, so a crash never
leaves a stale lock. The holder writes who it is (pid, operation, since when) into the
file, and a second operation waits for it (bounded) and then refuses, naming it.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from .config import Settings
from .errors import StackError

#: Seconds a second operation waits for the first before it refuses.
WAIT_SECONDS = 120

_held: set[Path] = set()  # locks this process holds (a task may call another task)


def lock_path(settings: Settings) -> Path:
    return settings.env_file.parent / f".{settings.project}.lock"


def holder(path: Path) -> str:
    """Who holds the lock, as its holder wrote it."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another operation (it has not said which yet)"
    return f"`invoke {info.get('operation')}` (pid {info.get('pid')}, since {info.get('since')})"


@contextmanager
def exclusive(settings: Settings, operation: str, *, wait: float = WAIT_SECONDS) -> Iterator[Path]:
    """Hold the stack's lock for the block; wait at most ``wait`` seconds for it."""
    path = lock_path(settings)
    if path in _held:
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                who = holder(path)
                if time.monotonic() >= deadline:
                    raise StackError(
                        f"stack {settings.project} is busy: {who} holds {path}; nothing was "
                        f"done. Run `invoke {operation}` again when it has finished"
                    ) from None
                if not announced:
                    # tagged as engines.shell.say tags: the operation is the task's name
                    print(f"[{operation}] waiting up to {wait:.0f}s for the stack's lock, held by "
                          f"{who}", file=sys.stderr, flush=True)  # fmt: skip
                    announced = True
                time.sleep(0.5)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "operation": operation,
                                  "since": since}).encode(), 0)  # fmt: skip
        _held.add(path)
        try:
            yield path
        finally:
            _held.discard(path)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
