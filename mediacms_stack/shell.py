"""Run external commands the same way everywhere: printed first, optionally not run at all.

Every docker and compose call of the project goes through :func:`run`, so every task
shows the command it runs and honours ``--dry-run``. Commands are argument lists;
they are turned into one shell-quoted string only here.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from invoke.context import Context
from invoke.runners import Result


class StackError(RuntimeError):
    """A failure an operator can act on: the message says what went wrong and the fix."""


def quote(argv: Sequence[str]) -> str:
    return shlex.join(str(a) for a in argv)


def announce(text: str) -> None:
    print(f"$ {text}", file=sys.stderr, flush=True)


def run(
    c: Context,
    argv: Sequence[str],
    *,
    dry_run: bool = False,
    stdout_to: str | None = None,
    stdin_from: str | None = None,
    pipe_from: Sequence[str] | None = None,
    hide: bool | str = False,
    warn: bool = False,
    env: Mapping[str, str] | None = None,
    pty: bool = False,
    **kwargs: Any,
) -> Result | None:
    """Print and run ``argv``; with ``dry_run`` only print it.

    ``stdout_to``/``stdin_from`` add a shell redirection (quoted) and ``pipe_from`` a
    producer piped into ``argv`` (either failing fails the whole), which keeps large
    streams (database dumps, tarballs) out of Python entirely.
    """
    command = quote(argv)
    if pipe_from is not None:
        command = f"set -o pipefail; {quote(pipe_from)} | {command}"
    if stdin_from is not None:
        command += f" < {shlex.quote(stdin_from)}"
    if stdout_to is not None:
        command += f" > {shlex.quote(stdout_to)}"
    announce(command)
    if dry_run:
        return None
    return c.run(command, hide=hide, warn=warn, env=dict(env or {}), pty=pty, echo=False, **kwargs)
