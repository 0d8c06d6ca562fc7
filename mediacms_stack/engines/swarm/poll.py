"""Waiting for the cluster, in one polling loop (:func:`until`): until every service runs
its tasks healthy (jobs completed), or until a rolling update has ended."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TypeVar

from invoke.context import Context

from ...stack.config import Settings
from ...stack.errors import StackError
from .query import running_tasks, services, update_state

T = TypeVar("T")

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


def until(
    ask: Callable[[], T],
    done: Callable[[T], bool],
    late: Callable[[T], str],
    timeout: float,
    poll: float,
) -> tuple[T, float]:
    """Ask every ``poll`` seconds until ``done`` says so of the answer: that answer and the
    seconds it took. Past ``timeout`` seconds, a StackError saying ``late(answer)``."""
    start = time.monotonic()
    while True:
        answer = ask()
        if done(answer):
            return answer, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise StackError(late(answer))
        time.sleep(poll)


def wait(c: Context, settings: Settings, timeout: float = 600, poll: float = 2) -> float:
    """Until every service runs its tasks healthy (jobs completed); seconds it took."""

    def late(behind_now: list[str]) -> str:
        return (
            f"not all healthy after {timeout:.0f}s: {', '.join(behind_now)}; "
            f"see `docker service ps {settings.project}_<service>`"
        )

    _, took = until(lambda: behind(c, settings), lambda behind_now: not behind_now, late,
                    timeout, poll)  # fmt: skip
    return took


def wait_update(c: Context, settings: Settings, name: str, before: tuple[str, str],
                timeout: float = 600, poll: float = 3) -> str:  # fmt: skip
    """Until the rolling update that began after ``before`` ends: ``completed``, or a
    rollback's state."""

    def ended(now: tuple[str, str]) -> bool:
        return now != before and now[0] in TERMINAL

    def late(now: tuple[str, str]) -> str:
        return f"{name}: update still {now[0]} after {timeout:.0f}s"

    (state, _), _ = until(lambda: update_state(c, settings, name), ended, late, timeout, poll)
    return state
