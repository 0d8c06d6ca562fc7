"""No secret in a printed command or in the argv of any process the tasks start."""

import json
import re

import pytest
from invoke import MockContext, Result

from mediacms_stack.engines.compose import Compose
from mediacms_stack.procedures import ops
from mediacms_stack.stack import config

SECRET = "s3cret-$(id)-'x\" y"


def test_set_admin_password_hands_the_password_over_on_stdin(tmp_path, capsys):
    c = MockContext(run={re.compile(r".*manage\.py shell.*", re.S): Result("password set")})
    ops.set_admin_password(c, Compose(tmp_path), "admin", SECRET)
    [call] = c.run.call_args_list
    command, kwargs = call.args[0], call.kwargs
    assert SECRET not in command and "s3cret" not in command
    assert "exec -T web python manage.py shell -c" in command
    assert json.loads(kwargs["in_stream"].read()) == {"user": "admin", "password": SECRET}
    printed = capsys.readouterr()
    assert "s3cret" not in printed.out + printed.err
    assert "manage.py shell" in printed.err  # the command itself is still shown


def test_a_generated_password_is_returned_and_never_in_the_command(tmp_path, capsys):
    c = MockContext(run={re.compile(r".*", re.S): Result("password set")})
    password = ops.set_admin_password(c, Compose(tmp_path), "admin", None)
    assert len(password) >= 20
    assert password not in c.run.call_args.args[0]
    assert password not in capsys.readouterr().err


ENV = "SECRET_KEY=k\nPOSTGRES_PASSWORD=app-pw\nREDIS_PASSWORD=r\nADMIN_PASSWORD=\n"


def test_compose_writes_the_secret_files_from_env_before_each_command(tmp_path):
    from mediacms_stack.stack import secrets

    (tmp_path / ".env").write_text(ENV)
    c = MockContext(run={re.compile(r".*"): Result("")}, repeat=True)
    Compose(tmp_path, writes=False).run(c, "up")
    assert not (tmp_path / ".secrets").exists()  # a dry run writes nothing
    Compose(tmp_path, files=("docker-compose-dev.yaml",)).run(c, "up")
    assert not (tmp_path / ".secrets").exists()  # the development file reads none
    Compose(tmp_path).run(c, "up")
    folder = tmp_path / ".secrets"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    found = {p.name: (p.read_text(), oct(p.stat().st_mode & 0o777)) for p in folder.iterdir()}
    assert found == {"admin_password": ("\n", "0o644"), "postgres_password": ("app-pw", "0o644"),
                     "postgres_superuser_password": ("app-pw", "0o644"),
                     "secret_key": ("k", "0o644"),
                     "redis_location": ("redis://:r@redis:6379/1", "0o644"),
                     "redis_password": ("r", "0o644"),
                     "metrics_db_password": (secrets.overlay_values(config.load(tmp_path))[
                         "metrics_db_password"], "0o644")}  # fmt: skip
    assert len(found["metrics_db_password"][0]) == 64  # derived from SECRET_KEY, not it
    before = (folder / "postgres_password").stat().st_ino
    (tmp_path / ".env").write_text(ENV + "POSTGRES_SUPERUSER_PASSWORD=su-pw\n")
    Compose(tmp_path).job(c, "migrations")
    assert (folder / "postgres_superuser_password").read_text() == "su-pw"
    assert (folder / "postgres_password").stat().st_ino == before  # unchanged: left alone
    (tmp_path / ".env").write_text("SECRET_KEY=k\n")  # compose names what is missing
    assert secrets.write_for_compose(config.load(tmp_path)) is None


@pytest.mark.parametrize("name, own, others", [
    ("docker-compose.yaml", "SECRETS", ()),
    # the overlay declares its own and uses the production file's (redis_password, ...)
    ("docker-compose-metrics.yaml", "OVERLAY_SECRETS", ("SECRETS",)),
])  # fmt: skip
def test_each_compose_file_mounts_the_files_written_and_uses_every_one_it_declares(
    name, own, others
):
    from invoke.util import yaml

    from mediacms_stack.stack import secrets

    spec = yaml.safe_load((config.ROOT / name).read_text())
    declared = set(getattr(secrets, own))
    assert set(spec["secrets"]) == declared
    for secret, source in spec["secrets"].items():
        assert source == {"file": f"./{secrets.FOLDER}/{secret}"}
    used = {s for service in spec["services"].values() for s in service.get("secrets", [])}
    assert declared <= used <= declared.union(*(getattr(secrets, o) for o in others))


def test_every_command_line_built_writes_them_but_not_beside_another_project(tmp_path):
    """A command line built to be run elsewhere (piped, run by a backup) finds the files
    too; a 7.x deployment being migrated (writes=False) gets nothing written beside it."""
    (tmp_path / ".env").write_text(ENV)
    Compose(tmp_path, writes=False).argv("run", "--rm", "web", "true")
    assert not (tmp_path / ".secrets").exists()
    Compose(tmp_path).argv("run", "--rm", "web", "true")
    assert (tmp_path / ".secrets" / "secret_key").read_text() == "k"
