"""upgrade-postgres: the old image's name, the roles, the commands a one-off cluster gets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from invoke import Context, MockContext, Result

from mediacms_stack.data import pgmajor
from mediacms_stack.data.database import Database
from mediacms_stack.engines.compose import Compose
from mediacms_stack.procedures import pgupgrade
from mediacms_stack.stack.config import Settings
from mediacms_stack.stack.errors import StackError
from mediacms_stack.stack.model import SERVICES, db_volume


@pytest.mark.parametrize(("image", "major", "old"), [
    ("postgres:17", "15", "postgres:15"),
    ("postgres:17-alpine", "13", "postgres:13-alpine"),
    ("mediacms-local/postgres:17", "15", "mediacms-local/postgres:15"),
    ("registry.example.org:5000/pg:17.6", "15", "registry.example.org:5000/pg:15.6"),
])  # fmt: skip
def test_the_old_image_is_the_new_ones_with_the_old_major(image, major, old):
    assert pgupgrade.old_image_for(image, major) == old


@pytest.mark.parametrize("image", ["postgres", "postgres:latest", "localhost:5000/postgres"])
def test_an_image_without_a_major_tag_asks_for_old_image(image):
    with pytest.raises(StackError, match="--old-image"):
        pgupgrade.old_image_for(image, "15")


def test_a_reference_that_would_be_an_option_is_refused_before_docker_runs():
    c = MockContext()  # any command would fail: it has no result set
    for bad in ("--privileged", "-v/:/host", "postgres:17 --rm", ""):
        with pytest.raises(StackError, match="is not an image reference"):
            pgmajor.image_major(c, bad)


def test_the_superuser_is_the_split_one_or_the_only_role(tmp_path: Path):
    split = Settings(tmp_path, {"POSTGRES_SUPERUSER": "postgres", "POSTGRES_SUPERUSER_PASSWORD": "s",
                                "POSTGRES_USER": "mediacms", "POSTGRES_PASSWORD": "a"},
                     tmp_path / ".env")  # fmt: skip
    one = Settings(tmp_path, {"POSTGRES_USER": "mediacms", "POSTGRES_PASSWORD": "a"},
                   tmp_path / ".env")  # fmt: skip
    assert pgupgrade.superuser(split) == ("postgres", "s")
    assert pgupgrade.superuser(one) == ("mediacms", "a")


def test_the_live_volume_is_postgres_volume_or_the_default(tmp_path: Path):
    assert db_volume(Settings(tmp_path, {}, tmp_path / ".env")) == "postgres_data"
    moved = Settings(tmp_path, {"POSTGRES_VOLUME": "postgres_data_17"}, tmp_path / ".env")
    assert db_volume(moved) == "postgres_data_17"


def test_a_one_off_cluster_is_reached_with_docker_exec_the_stack_with_compose(tmp_path: Path):
    compose = Compose(tmp_path, project="p")
    stack = Database(compose, "u", "d")
    one_off = Database(compose, "u", "d", container="p-pg15-old")
    assert one_off.psql_argv("SELECT 1")[:4] == ["docker", "exec", "-i", "p-pg15-old"]
    assert stack.psql_argv("SELECT 1")[-15:-11] == ["exec", "-T", "db", "psql"]
    assert one_off.exec_argv("id", as_postgres=True) == ["docker", "exec", "-i", "--user",
                                                         "postgres", "p-pg15-old", "id"]  # fmt: skip


class Recorder(Context):
    """A context whose pg_dumpall prints ``roles``; what psql is given is kept."""

    def __init__(self, roles: str) -> None:
        super().__init__()
        self.roles, self.loaded = roles, []

    def run(self, command: str, **kwargs) -> Result:
        if "pg_dumpall" in command:
            return Result(self.roles)
        self.loaded.append(kwargs["in_stream"].getvalue())
        return Result("")


def test_the_roles_are_loaded_without_the_superuser_and_never_with_a_meta_command(tmp_path):
    compose = Compose(tmp_path, project="p")
    old = pgmajor.Cluster(compose, "pg:15", "postgres_data", "old", "postgres")
    new = pgmajor.Cluster(compose, "pg:17", "postgres_data_17", "new", "postgres")
    c = Recorder("\\restrict abc\nCREATE ROLE mediacms;\nALTER ROLE mediacms WITH LOGIN "
                 "PASSWORD 'SCRAM-SHA-256$4096:x';\nCREATE ROLE postgres;\nALTER ROLE postgres "
                 "WITH SUPERUSER;\n\\unrestrict abc\n")  # fmt: skip
    pgmajor.copy_roles(c, old, new)
    assert "CREATE ROLE mediacms;" in c.loaded[0] and "CREATE ROLE postgres;" not in c.loaded[0]
    assert "ALTER ROLE postgres WITH SUPERUSER;" in c.loaded[0]

    evil = Recorder('CREATE ROLE "x";\n\\! touch /tmp/pwned\n')
    with pytest.raises(StackError, match="meta-command, line 2"):
        pgmajor.copy_roles(evil, old, new)
    assert evil.loaded == []


@pytest.mark.usefixtures("untagged")
def test_a_failure_before_the_switch_undoes_the_steps_last_first_and_says_so(tmp_path, capsys):
    """.env names a superuser the old cluster lacks: the copy step fails, the new volume
    goes, then the stack starts again on the old one; .env is not written."""
    healthy = "".join(json.dumps({"Service": s, "State": "running", "Health": "healthy"}) + "\n"
                      for s in SERVICES)  # fmt: skip
    c = MockContext(run={
        re.compile(r"docker volume inspect p_postgres_data$"): Result(""),
        re.compile(r"docker volume inspect p_postgres_data_17$"): Result(exited=1),
        re.compile(r".*--entrypoint postgres postgres:17 --version$"): Result("(PostgreSQL) 17.6"),
        re.compile(r".*--entrypoint postgres postgres:15 --version$"): Result("(PostgreSQL) 15.14"),
        re.compile(r".*/cluster/PG_VERSION$"): Result("15\n"),
        re.compile(r".*pg_roles WHERE oid = 10.*"): Result("postgres\n"),
        re.compile(r".* ps --format json --all$"): Result(healthy),
        re.compile(r".*"): Result(""),  # stops, one-off starts, pg_isready, compose up
    }, repeat=True)  # fmt: skip
    env = tmp_path / ".env"
    env.write_text("POSTGRES_IMAGE=postgres:15\n")
    values = {"COMPOSE_PROJECT_NAME": "p", "POSTGRES_IMAGE": "postgres:15",
              "POSTGRES_SUPERUSER": "someone_else", "POSTGRES_SUPERUSER_PASSWORD": "s",
              "POSTGRES_USER": "mediacms", "POSTGRES_PASSWORD": "a"}  # fmt: skip
    settings = Settings(tmp_path, values, env)
    with pytest.raises(StackError) as raised:
        pgupgrade.upgrade_postgres(c, Compose(tmp_path, project="p"), settings,
                                   image="postgres:17", timeout=5)  # fmt: skip
    assert str(raised.value) == (
        "the upgrade stopped before the switch: the old cluster's superuser is not "
        "'someone_else', the one .env names: postgres\n"
        "the new volume p_postgres_data_17 is gone; .env is unchanged; the stack runs on it again"
    )
    commands = [call.args[0] for call in c.run.call_args_list]
    stopped = next(i for i, cmd in enumerate(commands) if cmd.endswith(" stop db"))
    checked = next(i for i, cmd in enumerate(commands)
                   if i > stopped and cmd.endswith("volume inspect p_postgres_data_17"))  # fmt: skip
    started = next(i for i, cmd in enumerate(commands) if " up --detach --wait" in cmd)
    assert stopped < checked < started  # the volume goes first, then the stack starts
    assert env.read_text() == "POSTGRES_IMAGE=postgres:15\n"
    said = capsys.readouterr()
    assert "[mediacms] step 3/4 failed after" in said.err
    assert said.err.index("undoing: the new volume") < said.err.index("undoing: the stack")
