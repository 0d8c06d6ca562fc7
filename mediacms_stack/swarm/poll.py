"""Waiting for the cluster: until every service runs its tasks healthy (jobs completed),
or until a rolling update has ended."""

from __future__ import annotations

import re
import time

from invoke.context import Context

from ..config import Settings
from ..shell import StackError
from .query import running_tasks, services, update_state

#: Ends of a rolling update (UpdateStatus.State).
TERMINAL = ("completed", "rollback_completed", "paused", "rollback_paused")


def converged(replicas: str, running: int) -> bool:
    """``running`` tasks meet the wanted count of ``replicas`` (``2/2``), or a job's
    ``0/1 (1/1 completed)`` has completed every task."""
    done = re.search(r"\((\d+)/(\d+) completed\)", replicas)
    if done:
        return done[1] == done[2]
    wanted = replicas.partition("/")[2].split()[0]
    return wanted.isdigit() and running >= int(wanted)


def behind(c: Context, settings: Settings) -> list[str]:
    """Services not converged yet, as ``name running/wanted``."""
    rows = services(c, settings)
    if not rows:
        return ["(no service yet)"]
    running = running_tasks(c, settings)
    return [f"{name} {running[name]} of {replicas}" for name, _, replicas, _ in rows
            if not converged(replicas, running[name])]  # fmt: skip


def wait(c: Context, settings: Settings, timeout: float = 600, poll: float = 2) -> float:
    """Until every service runs its tasks healthy (jobs completed); seconds it took."""
    start = time.monotonic()
    while True:
        late = behind(c, settings)
        if not late:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise StackError(f"not all healthy after {timeout:.0f}s: {', '.join(late)}; "
                             f"see `docker service ps {settings.project}_<service>`")  # fmt: skip
        time.sleep(poll)


def wait_update(c: Context, settings: Settings, name: str, before: tuple[str, str],
                timeout: float = 600, poll: float = 3) -> str:  # fmt: skip
    """Until the rolling update that began after ``before`` ends: ``completed``, or a
    rollback's state."""
    start = time.monotonic()
    while True:
        state, started = update_state(c, settings, name)
        if (state, started) != before and state in TERMINAL:
            return state
        if time.monotonic() - start > timeout:
            raise StackError(f"{name}: update still {state} after {timeout:.0f}s")
        time.sleep(poll)
