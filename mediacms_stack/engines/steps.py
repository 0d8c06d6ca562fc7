"""A procedure as numbered steps: each said when it starts, timed, and undone when it or a
later one fails.

    steps = Steps(3)
    with steps.step("the database from the dump"):
        steps.on_failure("the database", lambda: put_back(safety))
        replace_database(dump)
    with steps.step("the media from the archive"):
        ...

prints ``[TASK] step 1/3: the database from the dump``, then ``[TASK] step 1/3 done in
4.2s``. When a step raises, the undos registered so far (by it or by an earlier step) run,
the last first, and the step's error goes on; an undo that fails too is named in a
:class:`UndoFailed` that carries the step's error in its message. A step run inside
another's block (a restore inside an upgrade's rollback) is indented under it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..stack.errors import StackError
from .shell import say

#: What undoes a step; it may return a sentence saying what it did (kept in Steps.undone).
Undo = Callable[[], str | None]

_depth = 0  # steps running now, one inside the other


class UndoFailed(StackError):
    """A step failed, and undoing what the steps had done failed too."""


@dataclass
class Steps:
    """``total`` steps, run one at a time with :meth:`step`."""

    total: int
    #: Seconds each step that ended took (to the hundredth), by its name, in order.
    seconds: dict[str, float] = field(default_factory=dict)
    #: What the undos that ran said they did, by what they undid, in the order they ran.
    undone: dict[str, str] = field(default_factory=dict)
    _undos: list[tuple[str, Undo]] = field(default_factory=list)
    _count: int = 0

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """The block is the next step, ``name``."""
        global _depth
        self._count += 1
        number, indent = f"step {self._count}/{self.total}", "  " * _depth
        say(f"{indent}{number}: {name}")
        started = time.monotonic()
        _depth += 1
        try:
            yield
        except BaseException as error:
            took = time.monotonic() - started
            say(f"{indent}{number} failed after {took:.1f}s", file=sys.stderr)
            self._undo(error, indent)
            raise
        finally:
            _depth -= 1
        took = time.monotonic() - started
        self.seconds[name] = round(took, 2)
        say(f"{indent}{number} done in {took:.1f}s")

    def on_failure(self, what: str, undo: Undo) -> None:
        """Run ``undo`` if the running step or a later one fails. Register it as soon as
        there is something to undo: before an action that may stop half-way."""
        self._undos.append((what, undo))

    def commit(self) -> None:
        """What the steps so far did stays, whatever fails later: their undos are dropped."""
        self._undos.clear()

    def _undo(self, error: BaseException, indent: str) -> None:
        failed = []
        while self._undos:
            what, undo = self._undos.pop()
            say(f"{indent}undoing: {what}", file=sys.stderr)
            try:
                said = undo()
            except Exception as problem:  # the next undos still run
                failed.append(f"{what}: {problem}")
                continue
            if said:
                self.undone[what] = said
        if failed:
            raise UndoFailed(f"{error}\nthen not everything could be undone:\n  "
                             + "\n  ".join(failed)) from error  # fmt: skip
