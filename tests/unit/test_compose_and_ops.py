import re

import pytest
from invoke import MockContext, Result

from mediacms_stack.engines.compose import Compose
from mediacms_stack.procedures import ops
from mediacms_stack.stack import model
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


def test_dry_run_prints_and_runs_nothing(tmp_path, capsys):
    c = MockContext()  # any real run would raise: no result is configured
    Compose(tmp_path, dry_run=True).run(c, "down")
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
