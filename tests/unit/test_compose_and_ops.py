import json
import re

import pytest
from invoke import MockContext, Result

from mediacms_stack.engines.compose import HTTPS, PRODUCTION, Compose
from mediacms_stack.procedures import ops
from mediacms_stack.stack import config, model
from mediacms_stack.stack.errors import StackError


def test_compose_argv_names_project_env_and_files(tmp_path):
    compose = Compose(tmp_path, ("a.yaml", "b.yaml"), "proj", tmp_path / ".env")
    argv = compose.argv("ps")
    assert argv[:4] == ["docker", "compose", "--project-directory", str(tmp_path)]
    assert argv[argv.index("--project-name") + 1] == "proj"
    assert argv[argv.index("--env-file") + 1] == str(tmp_path / ".env")
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--file"] == [
        str(tmp_path / "a.yaml"),
        str(tmp_path / "b.yaml"),
    ]
    assert argv[-1] == "ps"


def test_dry_run_prints_and_runs_nothing(tmp_path, capsys, dry):
    c = dry(MockContext())  # any real run would raise: no result is configured
    Compose(tmp_path, writes=False).run(c, "down")
    assert "docker compose" in capsys.readouterr().err


def test_scale_command(tmp_path):
    c = MockContext(run={re.compile(r".*"): Result()})
    Compose(tmp_path).scale(c, {"celery_short": 3})
    command = c.run.call_args[0][0]
    assert (
        "--scale=celery_short=3" in command and "--no-recreate" in command and "--wait" in command
    )


@pytest.mark.parametrize("pairs, message", [
    (["celery_beat=2"], "cannot be scaled above 1: it runs exactly once"),
    (["db=2"], "cannot be scaled"),
    (["redis=1"], "cannot be scaled"),
    (["celery_short=x"], "whole number"),
    (["web=-1"], "whole number"),
    ([], "nothing to scale"),
])  # fmt: skip
def test_parse_scale_refuses(pairs, message):
    """One rule for compose and Swarm: beat at most once, the scalable services any count."""
    with pytest.raises(StackError, match=message):
        model.parse_scale(pairs)


def test_parse_scale():
    pairs = ["celery_short=3", "celery_long=0", "web=2", "celery_beat=0"]
    assert model.parse_scale(pairs) == {
        "celery_short": 3,
        "celery_long": 0,
        "web": 2,
        "celery_beat": 0,
    }
    assert model.parse_scale(["celery_beat=1"]) == {"celery_beat": 1}


def test_status_rows_from_compose_json(tmp_path):
    line = (
        '{"Service":"web","State":"running","Health":"healthy","Image":"mediacms/mediacms:8.3.2"}'
    )
    c = MockContext(run={re.compile(r".*ps --format json.*"): Result(line + "\n")})
    assert ops.status_rows(c, Compose(tmp_path)) == [
        ("web", "running", "healthy", "mediacms/mediacms:8.3.2", "8.3.2")
    ]


def test_manage_and_exec_are_non_interactive_by_default(tmp_path):
    c = MockContext(run={re.compile(r".*"): Result()})
    Compose(tmp_path).manage(c, "migrate", "--plan")
    command = c.run.call_args[0][0]
    assert " exec -T web python manage.py migrate --plan" in command


# --- restart web: one container at a time, a spare beside a lone one ---------------------
def _web(*names: str, health: str = "healthy") -> Result:
    rows = [{"Name": n, "Service": "web", "State": "running", "Health": health, "Image": "m:1"}
            for n in names]  # fmt: skip
    return Result("\n".join(json.dumps(row) for row in rows) + "\n")


def _commands(c) -> list[str]:
    """Each command run, compose's project options left out; PS for every ``ps`` query."""
    commands = [re.sub(r"^docker compose .*--file \S+ ", "docker compose ", call.args[0])
                for call in c.run.call_args_list]  # fmt: skip
    return [PS if " ps --format json" in command else command for command in commands]


PS = "docker compose ps"
ANY = [Result()] * 9


def test_restart_lone_web_starts_a_spare_restarts_it_and_removes_the_spare(tmp_path):
    compose = Compose(tmp_path, project="site")
    ps = [_web("site-web-1"), _web("site-web-1", "site-web-2"), _web("site-web-1", "site-web-2")]
    c = MockContext(run={re.compile(r".* ps --format json"): ps, re.compile(r".*"): ANY},
                    repeat=False)  # fmt: skip
    ops.restart_web(c, compose, replicas=1, timeout=60)
    assert _commands(c) == [
        PS,
        "docker compose up --detach --no-recreate --no-deps --wait --wait-timeout 60 "
        "--scale=web=2 web",
        PS,  # which one is the spare
        "docker restart site-web-1",
        PS,  # healthy again, both
        "docker stop site-web-2",
        "docker rm site-web-2",
    ]


def test_restart_two_webs_one_after_the_other_each_healthy_first(tmp_path):
    compose = Compose(tmp_path, project="site")
    both = _web("site-web-1", "site-web-2")
    c = MockContext(run={re.compile(r".* ps --format json"): [both, both, both],
                         re.compile(r".*"): ANY}, repeat=False)  # fmt: skip
    ops.restart_web(c, compose, replicas=2)
    assert _commands(c) == [PS, "docker restart site-web-1", PS, "docker restart site-web-2", PS]


def test_restart_web_waits_while_the_restarted_one_is_starting(tmp_path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda _: None)
    compose = Compose(tmp_path, project="site")
    both = _web("site-web-1", "site-web-2")
    starting = _web("site-web-1", "site-web-2", health="starting")
    ps = [both, starting, starting, both, both]
    c = MockContext(run={re.compile(r".* ps --format json"): ps, re.compile(r".*"): ANY},
                    repeat=False)  # fmt: skip
    ops.restart_web(c, compose, replicas=2, timeout=60)
    restarts = [PS, "docker restart site-web-1", PS, PS, PS, "docker restart site-web-2", PS]
    assert _commands(c) == restarts


def test_restart_web_dry_run_plans_for_web_replicas_and_asks_nothing(tmp_path, capsys, dry):
    c = dry(MockContext())  # any command run would raise: nothing is configured
    ops.restart_web(c, Compose(tmp_path, project="site", writes=False), replicas=1)
    shown = capsys.readouterr()
    assert "--scale=web=2 web" in shown.err and "docker restart site-web-1" in shown.err
    assert "docker stop site-web-2" in shown.err and "docker rm site-web-2" in shown.err
    assert "a spare answers meanwhile" in shown.out and "web restarted" not in shown.out


def test_restart_without_web_running_refuses_and_changes_nothing(tmp_path):
    c = MockContext(run={re.compile(r".* ps --format json"): Result("")}, repeat=False)
    with pytest.raises(StackError, match="no web container runs"):
        ops.restart_web(c, Compose(tmp_path, project="site"), replicas=1)
    assert _commands(c) == [PS]


def test_behind_the_https_overlay_nginx_restarts_beside_and_the_old_one_drains(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(ops, "wait_healthy", lambda *a, **k: None)
    nginx = '{"Name": "site-nginx-1", "Service": "nginx", "State": "running"}\n'
    c = MockContext(run={re.compile(r".* ps --format json"): Result(nginx),
                         re.compile(r".*StopTimeout.*"): Result("<nil>\n"),
                         re.compile(r".*State\.Running.*"): Result("false\n"),
                         re.compile(r".*"): Result()}, repeat=True)  # fmt: skip
    compose = Compose(tmp_path, (PRODUCTION, HTTPS), project="site")
    ops.restart(c, compose, config.Settings(tmp_path, {}, tmp_path / ".env"), ["nginx", "redis"])
    assert _commands(c) == [
        "docker compose restart redis",
        PS,
        "docker compose up --detach --no-recreate --no-deps --wait --wait-timeout 300 "
        "--scale=nginx=2 nginx",
        "docker update --restart no site-nginx-1",
        "docker kill --signal QUIT site-nginx-1",
        "docker inspect --format '{{.Config.StopTimeout}}' site-nginx-1",
        "docker inspect --format '{{.State.Running}}' site-nginx-1",
        "docker rm --force site-nginx-1",
    ]


def test_an_old_nginx_still_sending_past_its_grace_is_cut_and_said(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("time.sleep", lambda _: None)
    c = MockContext(run={re.compile(r".*StopTimeout.*"): Result("1\n"),
                         re.compile(r".*State\.Running.*"): Result("true\n"),
                         re.compile(r".*"): Result()}, repeat=True)  # fmt: skip
    Compose(tmp_path, project="site").drain_container(c, "site-nginx-1", "QUIT")
    assert _commands(c)[-1] == "docker rm --force site-nginx-1"
    assert "site-nginx-1 ending what it serves within 1s: what it still serves is cut" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize("services, first, web", [
    ([], "docker compose restart", False),
    (["nginx", "web"], "docker compose restart nginx", True),
    (["web"], None, True),
])  # fmt: skip
def test_restart_sends_web_its_own_way(tmp_path, monkeypatch, services, first, web):
    planned = []
    monkeypatch.setattr(ops, "restart_web", lambda c, compose, n, **_: planned.append(n))
    c = MockContext(run={re.compile(r".*"): Result()})
    settings = config.Settings(tmp_path, {"WEB_REPLICAS": "2"}, tmp_path / ".env")
    ops.restart(c, Compose(tmp_path, project="site"), settings, services)
    assert _commands(c) == ([first] if first else [])
    assert planned == ([2] if web else [])


def test_a_dockerd_we_start_cuts_its_networks_small_unless_daemon_json_chose(tmp_path):
    from mediacms_stack.engines import engine

    absent = tmp_path / "absent.json"
    assert engine.dockerd_argv(absent) == ["dockerd", "--default-address-pool", engine.ADDRESS_POOL]
    assert "size=24" in engine.ADDRESS_POOL
    own = tmp_path / "daemon.json"
    own.write_text('{"default-address-pools": [{"base": "10.10.0.0/16", "size": 24}]}')
    assert engine.dockerd_argv(own) == ["dockerd"]
    other = tmp_path / "other.json"
    other.write_text('{"log-level": "warn"}')
    assert engine.dockerd_argv(other)[1:] == ["--default-address-pool", engine.ADDRESS_POOL]


def test_only_projects_of_ended_test_runs_count_as_left_over():
    import os
    import subprocess

    from tests import leftovers

    gone = subprocess.Popen(["true"])
    gone.wait()
    mine = os.getpid()
    names = {
        f"mediacms-smoke-{gone.pid}",
        f"mediacms-host-{mine}",
        "mediacms",
        "mediacms-prod",
        f"other-smoke-{gone.pid}",
        f"mediacms-smoke-{gone.pid}x",
    }
    assert leftovers.orphaned(names) == [f"mediacms-smoke-{gone.pid}"]


def test_every_module_named_slowest_first_exists():
    from tests.e2e import conftest

    names = {path.name for path in (config.ROOT / "tests" / "e2e").glob("test_*.py")}
    assert set(conftest.SLOWEST_FIRST) <= names
    assert len(set(conftest.SLOWEST_FIRST)) == len(conftest.SLOWEST_FIRST)
