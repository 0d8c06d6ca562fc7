"""Run external commands the same way everywhere: printed first, optionally not run at all.

Every external command of the package (docker, compose, git, apt-get, debootstrap, tar,
psql in a container...) goes through :func:`run`, so every task shows the command it runs
and honours ``--dry-run``. Whether a task is a dry run travels
on its invoke Context, as invoke's own ``run.dry`` setting (:func:`dry`, set once per task
by tasks.py's ``task`` decorator): a dry run prints each command and runs none of them
but the read-only ones its plan needs, which say so (``query=True``). Commands are
argument lists; they are turned into one shell-quoted string only here. By default each
command is shown on one line (compose's project options left out, scripts as ``<N-line script>``);
verbose (``invoke --echo TASK`` or MEDIACMS_VERBOSE=1) shows it whole.

What the package says to the operator goes through :func:`say`, tagged with the task the
operator ran (``[upgrade] ...``, set by tasks.py's ``task`` decorator), whichever module
says it.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePath
from typing import Any, TextIO, TypeVar

from invoke.context import Context
from invoke.runners import Result

from ..stack.errors import StackError

T = TypeVar("T")


_verbose = False
_task: str | None = None

#: The tag of what is said outside a task: the package used as a library, unit tests.
DEFAULT_TAG = "mediacms"

#: Options every compose command of the project carries (see compose.Compose.argv).
_COMPOSE_CONTEXT = ("--project-directory", "--project-name", "--env-file", "--file")


def set_verbose(verbose: bool) -> None:
    global _verbose
    _verbose = verbose


def set_task(name: str | None) -> str | None:
    """Tag what :func:`say` prints with ``name``, the task as the operator typed it
    (``upgrade``, ``backup-db``, ``swarm.deploy``); None: :data:`DEFAULT_TAG`. Returns the
    name it replaces, to be put back when the task ends."""
    global _task
    previous, _task = _task, name
    return previous


def say(message: str, *, file: TextIO | None = None, detail: bool = False) -> None:
    """Print ``message`` as ``[TASK] message`` to ``file`` (default: stdout), TASK the one
    the operator ran; ``detail``: only when verbose, it helps debugging and nothing else."""
    if detail and not _verbose:
        return
    print(f"[{_task or DEFAULT_TAG}] {message}", file=file or sys.stdout, flush=True)


def quote(argv: Sequence[str]) -> str:
    return shlex.join(str(a) for a in argv)


def brief(argv: Sequence[str]) -> str:
    """``argv`` on one line: of compose's project options only the files' names, scripts
    summarised."""
    words = [str(a) for a in argv]
    if words[:2] == ["docker", "compose"]:
        rest, kept = words[2:], []
        while len(rest) >= 2 and rest[0] in _COMPOSE_CONTEXT:
            if rest[0] == "--file":
                kept += ["--file", PurePath(rest[1]).name]
            rest = rest[2:]
        words = ["docker", "compose", *kept, *rest]
    shown = [f"<{w.count(chr(10)) + 1}-line script>" if "\n" in w.strip() else shlex.quote(w)
             for w in words]  # fmt: skip
    return " ".join(shown)


def announce(text: str) -> None:
    print(f"$ {text}", file=sys.stderr, flush=True)


def dry(c: Context) -> bool:
    """Whether ``c`` belongs to a dry run: commands are printed, only queries run."""
    return bool(c.config.run.dry)


def set_dry(c: Context, dry_run: bool) -> bool:
    """Make ``c`` a dry run's context, or not; returns what it was, to be put back."""
    previous, c.config.run.dry = dry(c), dry_run
    return previous


def run(
    c: Context,
    argv: Sequence[str],
    *,
    query: bool = False,
    stdout_to: str | None = None,
    stdin_from: str | None = None,
    pipe_from: Sequence[str] | None = None,
    hide: bool | str = False,
    warn: bool = False,
    env: Mapping[str, str] | None = None,
    pty: bool = False,
    shown: bool = True,
    **kwargs: Any,
) -> Result | None:
    """Print and run ``argv``; in a dry run (:func:`dry`) only print it, unless it is a
    ``query``: a command that changes nothing, whose answer the dry run's plan needs.
    ``shown=False`` only for :func:`poll`'s tries, which it has printed once.

    ``stdout_to``/``stdin_from`` add a shell redirection (quoted) and ``pipe_from`` a
    producer piped into ``argv`` (either failing fails the whole), which keeps large
    streams (database dumps, tarballs) out of Python entirely.
    """
    command = quote(argv)
    line = _shown(argv)
    if pipe_from is not None:
        command = f"set -o pipefail; {quote(pipe_from)} | {command}"
        line = f"{_shown(pipe_from)} | {line}"
    redirections = ""
    if stdin_from is not None:
        redirections += f" < {shlex.quote(stdin_from)}"
    if stdout_to is not None:
        redirections += f" > {shlex.quote(stdout_to)}"
    command += redirections
    if shown:
        announce(line + redirections)
    if dry(c) and not query:
        return None
    return c.run(command, hide=hide, warn=warn, env=dict(env or {}), pty=pty, echo=False,
                 dry=False, **kwargs)  # fmt: skip


def _shown(argv: Sequence[str]) -> str:
    return quote(argv) if _verbose else brief(argv)


def poll(c: Context, argv: Sequence[str], ok: Callable[[Result], bool], *, timeout: float,
         interval: float, what: str, **kwargs: Any) -> Result:  # fmt: skip
    """Run the read-only ``argv`` until ``ok`` accepts its result, and return that result;
    printed once, not at every try. After ``timeout`` seconds, :func:`wait_until`'s error
    saying ``what`` did not happen."""
    announce(f"{_shown(argv)}  (every {interval:g}s, {timeout:g}s at most)")

    def accepted() -> Result | None:
        result = run(c, argv, query=True, shown=False, **kwargs)
        return result if result is not None and ok(result) else None

    return wait_until(accepted, timeout=timeout, interval=interval, what=what)


def wait_until(check: Callable[[], T], *, timeout: float, interval: float, what: str) -> T:
    """Call ``check`` until it returns something true and return that; after ``timeout``
    seconds, StackError saying ``what`` did not happen. The project's one polling loop."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if outcome:
            return outcome
        if time.monotonic() >= deadline:
            raise StackError(f"{what} within {timeout:g}s")
        time.sleep(interval)
