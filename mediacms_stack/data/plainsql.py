"""A plain-SQL dump read before psql runs it: no psql meta-command may be in it.

psql runs a backslash command (``\\!`` starts a shell, ``\\o |cmd`` and ``\\copy ... program``
run programs, ``\\i`` reads files) wherever a backslash starts outside COPY data, even
in the middle of a line; only a server-side error stops it, and a meta-command is no
server error. So a dump is refused, naming the line, when, outside COPY data, it holds:

* a backslash anywhere, in a string or not (where psql's reading of a quoted string
  depends on ``standard_conforming_strings``, which the dump itself can change, a
  backslash could end a string for psql and not for us), except the two lines pg_dump
  17.6 and later write, ``\\restrict KEY`` and ``\\unrestrict KEY``, which switch
  meta-commands off and on again;
* a byte outside ASCII (psql reads multi-byte text by the client encoding, which the
  dump can change too: in SJIS or BIG5 a quote can be the second byte of a character).

COPY data (``COPY ... FROM stdin;`` up to the line ``\\.``) is passed as it is: psql
sends it to the server without reading it. A dump from pg_dump holds its rows there,
and its schema (a Django application's) needs neither backslashes nor non-ASCII text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from ..stack.errors import StackError

#: pg_dump's own lines around a plain dump (17.6+, 16.10+...): meta-commands off, then on.
RESTRICT = re.compile(r"\\(?:un)?restrict [A-Za-z0-9]+\r?")
#: A COPY whose rows follow in the dump, as pg_dump writes it (the statement's text
#: outside comments and quotes, up to its semicolon).
COPY_FROM_STDIN = re.compile(r"\s*COPY\s.*\sFROM\s+STDIN\s*", re.IGNORECASE | re.DOTALL)
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


class _Lexer:
    """psql's view of the dump, enough to know where COPY data starts and ends: quoted
    strings and identifiers, dollar quotes, comments, statements ended by ``;``."""

    def __init__(self) -> None:
        self.closing = ""  # what ends the quote or comment we are in ("" at top level)
        self.depth = 0  # nesting of /* */ comments
        self.statement: list[str] = []
        self.copies = 0  # COPY statements ended on this line: their data comes next

    def line(self, text: str) -> None:
        """Read one line (without its newline)."""
        i = 0
        while i < len(text):
            if self.closing:
                i = self._inside(text, i)
                continue
            char = text[i]
            if text.startswith("--", i):
                break
            if text.startswith("/*", i):
                self.closing, self.depth, i = "*/", 1, i + 2
            elif char in "'\"":
                self.closing, i = char, i + 1
                self.statement.append(" x ")
            elif dollar := _DOLLAR.match(text, i):
                self.closing, i = dollar[0], dollar.end()
                self.statement.append(" x ")
            elif word := _IDENTIFIER.match(text, i):
                self.statement.append(word[0])
                i = word.end()
            elif char == ";":
                if COPY_FROM_STDIN.fullmatch("".join(self.statement)):
                    self.copies += 1
                self.statement = []
                i += 1
            else:
                self.statement.append(char)
                i += 1
        self.statement.append("\n")

    def _inside(self, text: str, i: int) -> int:
        """Skip within the current quote or comment; the position after what was read."""
        if self.closing == "*/":
            opening, closing = text.find("/*", i), text.find("*/", i)
            if closing < 0 and opening < 0:
                return len(text)
            if opening >= 0 and (closing < 0 or opening < closing):
                self.depth += 1
                return opening + 2
            self.depth -= 1
            if not self.depth:
                self.closing = ""
            return closing + 2
        end = text.find(self.closing, i)
        if end < 0:
            return len(text)
        if self.closing in "'\"" and text.startswith(self.closing, end + 1):
            return end + 2  # '' or "": the quote itself, still inside
        after = end + len(self.closing)
        self.closing = ""
        return after


def meta_command(lines: Iterable[bytes]) -> tuple[int, str] | None:
    """The first line (1-based, its text) psql could run as a meta-command, or where
    non-ASCII text would make psql's reading depend on the encoding."""
    lexer = _Lexer()
    in_copy = 0
    for number, raw in enumerate(lines, 1):
        if in_copy:
            if raw.rstrip(b"\n") in (b"\\.", b"\\.\r"):
                in_copy -= 1
            continue
        try:
            text = raw.decode("ascii").rstrip("\n")
        except UnicodeDecodeError:
            return number, raw.decode("utf-8", "replace").rstrip("\n")
        if "\\" in text and (lexer.closing or not RESTRICT.fullmatch(text)):
            return number, text
        lexer.line(text)
        in_copy, lexer.copies = lexer.copies, 0
    return None


def check(dump: Path) -> None:
    """Refuse a plain-SQL dump psql could run anything but SQL from (see the module)."""
    with dump.open("rb") as handle:
        found = meta_command(handle)
    if found:
        number, text = found
        shown = text if len(text) <= 120 else text[:117] + "..."
        raise StackError(
            f'{dump}, line {number}: "{shown}" is outside COPY data and holds a backslash '
            "(a psql meta-command such as \\! runs programs in the db container) or text "
            "that is not ASCII; psql was not started and nothing was changed. Dump the "
            "old database again with pg_dump (custom format: --format=custom)"
        )
