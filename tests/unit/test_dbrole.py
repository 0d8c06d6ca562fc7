import re

import pytest
from dotenv import dotenv_values
from invoke import MockContext, Result

from mediacms_stack.data import dbrole
from mediacms_stack.engines.compose import Compose
from mediacms_stack.procedures import swarmroles
from mediacms_stack.stack import config
from mediacms_stack.stack.errors import StackError

OLD_ENV = "MEDIACMS_VERSION=8.3.2\nSECRET_KEY=k\nPOSTGRES_USER=mediacms\nPOSTGRES_PASSWORD=old-pw\n"


def old_stack(tmp_path, text: str = OLD_ENV) -> config.Settings:
    env = tmp_path / ".env"
    env.write_text(text)
    env.chmod(0o600)
    return config.load(tmp_path)


def test_a_fresh_env_has_a_superuser_apart_from_mediacms_role(home):
    values = dotenv_values(home / ".env")
    assert values["POSTGRES_SUPERUSER"] == "postgres" and values["POSTGRES_USER"] == "mediacms"
    assert len(values["POSTGRES_SUPERUSER_PASSWORD"]) >= 24
    assert values["POSTGRES_SUPERUSER_PASSWORD"] != values["POSTGRES_PASSWORD"]
    assert dbrole.is_separate(config.load(home))


def test_an_older_env_is_separated_as_its_superuser_with_the_password_on_stdin(tmp_path, capsys):
    settings = old_stack(tmp_path)
    c = MockContext(run={re.compile(r".*psql.*"): Result("")})
    changes = dbrole.separate(c, Compose(tmp_path), settings)
    assert (tmp_path / ".env").read_text() == OLD_ENV  # the caller records the changes
    after = config.update(settings, changes)
    command = c.run.call_args.args[0]
    sql = c.run.call_args.kwargs["in_stream"].getvalue()
    assert "-U mediacms -d mediacms" in command and "--single-transaction" in command
    values = dotenv_values(tmp_path / ".env")
    password = values["POSTGRES_PASSWORD"]
    assert password != "old-pw" and len(password) >= 24
    assert password not in command and f"PASSWORD '{password}'" in sql
    assert 'ALTER DATABASE "mediacms" OWNER TO "mediacms_app"' in sql
    assert values["POSTGRES_USER"] == "mediacms_app"
    assert values["POSTGRES_SUPERUSER"] == "mediacms"
    assert values["POSTGRES_SUPERUSER_PASSWORD"] == "old-pw"
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600
    assert after.get("POSTGRES_USER") == "mediacms_app"
    assert password not in capsys.readouterr().out


def test_a_failed_separation_leaves_env_alone(tmp_path):
    settings = old_stack(tmp_path)
    c = MockContext(run={re.compile(r".*psql.*"): Result(stderr="ERROR: boom", exited=1)})
    with pytest.raises(StackError, match="nothing changed: ERROR: boom"):
        dbrole.separate(c, Compose(tmp_path), settings)
    assert (tmp_path / ".env").read_text() == OLD_ENV


def test_a_separated_stack_is_left_alone(home):
    c = MockContext()  # any command would fail: none is expected
    settings = config.load(home)
    assert dbrole.separate(c, Compose(home), settings) == {}


def test_names_outside_plain_identifiers_are_refused_before_anything_runs(tmp_path):
    settings = old_stack(tmp_path, OLD_ENV.replace("POSTGRES_USER=mediacms", 'POSTGRES_USER=a"b'))
    with pytest.raises(StackError, match="lower-case letters"):
        dbrole.separate(MockContext(), Compose(tmp_path), settings)


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path, capsys, dry):
    settings = old_stack(tmp_path)
    assert dbrole.separate(dry(MockContext()), Compose(tmp_path, writes=False), settings) == {}
    assert (tmp_path / ".env").read_text() == OLD_ENV
    assert "own role 'mediacms_app'" in capsys.readouterr().out


# --- the same split on Swarm, at the next swarm.deploy or swarm.update ---------------------
SERVICES = re.compile(r"docker stack services .*")


def test_a_deployed_swarm_stack_of_one_role_is_split_in_its_db_task(tmp_path, monkeypatch):
    settings = old_stack(tmp_path)
    checked = []
    monkeypatch.setattr(swarmroles, "preflight", lambda c, s, version: checked.append(version))
    c = MockContext(run={
        SERVICES: Result("mediacms_db\treplicated\t1/1\tpostgres\n"),
        re.compile(r"docker ps .*service.name=mediacms_db.*"): Result("c0ffee\n"),
        re.compile(r"docker exec -i c0ffee psql .*"): Result(""),
    })  # fmt: skip
    after = swarmroles.separate_roles(c, settings, "9.0")
    assert checked == ["9.0"]  # the deploy's refusals come first
    exec_ = [call.args[0] for call in c.run.call_args_list if "psql" in call.args[0]]
    assert len(exec_) == 1 and "-U mediacms -d mediacms" in exec_[0], exec_
    assert (after.get("POSTGRES_USER"), after.get("POSTGRES_SUPERUSER")) == ("mediacms_app",
                                                                             "mediacms")  # fmt: skip
    assert dotenv_values(tmp_path / ".env")["POSTGRES_SUPERUSER_PASSWORD"] == "old-pw"


def test_a_swarm_stack_not_deployed_or_already_split_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(swarmroles, "preflight", lambda *a: pytest.fail("nothing to check"))
    settings = old_stack(tmp_path)
    c = MockContext(run={SERVICES: Result("")})  # nothing deployed: the next deploy splits it
    assert swarmroles.separate_roles(c, settings) == settings
    assert (tmp_path / ".env").read_text() == OLD_ENV
    split = config.update(settings, {"POSTGRES_SUPERUSER": "postgres"})
    assert swarmroles.separate_roles(MockContext(), split) == split  # asks nothing at all


def test_a_swarm_stack_whose_db_runs_elsewhere_is_deployed_unsplit_saying_where(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(swarmroles, "preflight", lambda *a: None)
    settings = old_stack(tmp_path)
    c = MockContext(run={
        SERVICES: Result("mediacms_db\treplicated\t1/1\tpostgres\n"),
        re.compile(r"docker ps .*"): Result(""),  # no db task on this engine
        re.compile(r"docker info .*"): Result("node1 true\n"),
        re.compile(r"docker service ps .*"): Result("db-host\n"),
    }, repeat=True)  # fmt: skip
    assert swarmroles.separate_roles(c, settings) == settings
    assert (tmp_path / ".env").read_text() == OLD_ENV
    said = capsys.readouterr().out
    assert "still the superuser" in said and "it runs on db-host" in said, said
    assert not any("psql" in call.args[0] for call in c.run.call_args_list)


def test_a_dry_run_prints_the_swarm_split_and_changes_nothing(tmp_path, monkeypatch, dry, capsys):
    monkeypatch.setattr(swarmroles, "preflight", lambda *a: pytest.fail("a dry run checks nothing"))
    settings = old_stack(tmp_path)
    c = dry(MockContext(run={SERVICES: Result("mediacms_db\treplicated\t1/1\tpostgres\n")}))
    assert swarmroles.separate_roles(c, settings) == settings
    assert (tmp_path / ".env").read_text() == OLD_ENV
    out = capsys.readouterr()
    assert "own role 'mediacms_app'" in out.out and "psql" in out.err
