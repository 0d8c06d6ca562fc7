"""A plain-SQL dump is read before psql runs it: a meta-command anywhere outside COPY
data is refused, naming its line; COPY data with backslashes passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediacms_stack.data import plainsql
from mediacms_stack.procedures import migrate7x
from mediacms_stack.stack.errors import StackError

#: The shape of pg_dump 17's plain output: its \restrict lines, rows in COPY blocks whose
#: data holds backslashes (escaped ones, \N for NULL, even a line that looks like \!).
DUMP = r"""--
-- PostgreSQL database dump
--

\restrict k3Y9abc

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);

CREATE TABLE public.files_media (id integer NOT NULL, title text, "semi;colon" text);
CREATE FUNCTION public.f() RETURNS integer LANGUAGE sql AS $body$ SELECT 1; $body$;
/* a comment /* nested */ with ; inside */
COMMENT ON TABLE public.files_media IS 'it''s; a table';

COPY public.files_media (id, title, "semi;colon") FROM stdin;
1	C:\\videos\\a.mp4	\N
2	line\nbreak	tab\there
\! this is a title, not a command
\.

COPY public.users_user (id) FROM stdin;
\.

SELECT pg_catalog.setval('public.files_media_id_seq', 2, true);

\unrestrict k3Y9abc
"""


def scan(text: str) -> tuple[int, str] | None:
    return plainsql.meta_command(text.encode("utf-8").splitlines(keepends=True))


def test_a_pg_dump_with_backslashes_in_its_copy_data_passes():
    assert scan(DUMP) is None
    assert scan(DUMP.replace("\n", "\r\n")) is None


@pytest.mark.parametrize("line", [
    r"\! touch /tmp/pwned",
    r"\o | sh",
    r"\i /etc/passwd",
    r"\copy public.files_media FROM PROGRAM 'id'",
    r"\setenv PAGER 'sh -c id'",
    r"SELECT 1; \! touch /tmp/pwned",
    r"SELECT 'x' \g | sh",
    r"/* comment */ \! id",
    r"SELECT a$b$ \! id $b$;",
    r"\restrict k3Y9abc; \! id",
])  # fmt: skip
def test_a_meta_command_outside_copy_data_is_refused_with_its_line(line):
    text = DUMP.replace("\nSELECT pg_catalog.setval", f"\n{line}\nSELECT pg_catalog.setval")
    number = text.splitlines().index(line) + 1
    assert scan(text) == (number, line)


@pytest.mark.parametrize("text", [
    # psql would run what follows the COPY on its own line, after the data
    "COPY public.t (id) FROM stdin; \\! id\n1\n\\.\n",
    # after the data's end, psql reads commands again
    "COPY public.t (id) FROM stdin;\n1\n\\.\n\\! id\n",
    # a COPY in a string or a dollar quote starts no data: the next line is a command
    "SELECT 'COPY t FROM stdin;';\n\\! id\n",
    "SELECT $q$;COPY t FROM stdin$q$;\n\\! id\n",
    "-- COPY t FROM stdin;\n\\! id\n",
    # a backslash in a string: whether it ends the string depends on a setting the
    # dump can change, so it is refused wherever it is
    "SET standard_conforming_strings = off;\nSELECT 'a\\' \\! id --';\n",
    # not ASCII: psql's reading depends on the client encoding, which the dump can set
    "SET client_encoding = 'SJIS';\nSELECT '\u30bd';\n",
])  # fmt: skip
def test_what_psql_would_read_as_commands_is_refused(text):
    assert scan(text) is not None


def test_two_copies_on_one_line_take_two_data_blocks():
    two = "COPY a (i) FROM stdin; COPY b (i) FROM stdin;\n1\n\\.\n\\! data of b\n\\.\n"
    assert scan(two) is None
    assert scan(two + "\\! id\n") == (6, "\\! id")


def test_the_check_names_the_line_and_the_migration_refuses_before_anything_runs(tmp_path: Path):
    dump = tmp_path / "old.sql"
    dump.write_text(DUMP.replace("SELECT pg_catalog.setval", "\\! touch /tmp/pwned\nSELECT 1"))
    number = dump.read_text().splitlines().index("\\! touch /tmp/pwned") + 1
    with pytest.raises(StackError, match=rf'line {number}: "\\! touch /tmp/pwned".*nothing'):
        plainsql.check(dump)
    with pytest.raises(StackError, match=rf"old.sql, line {number}"):
        migrate7x.check_given_dump(dump)
    (tmp_path / "good.sql").write_text(DUMP)
    assert migrate7x.check_given_dump(tmp_path / "good.sql") == "plain"
