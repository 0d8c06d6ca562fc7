"""Command construction of the development tasks: invoke dev, build-frontend, test."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest
from invoke import MockContext, Result

from mediacms_stack.engines.compose import Compose
from mediacms_stack.procedures import dev, ops
from mediacms_stack.stack import config
from mediacms_stack.stack.errors import StackError


@pytest.fixture
def checkout(tmp_path):
    tree = tmp_path / "mediacms"
    (tree / "frontend").mkdir(parents=True)
    (tree / "manage.py").write_text("")
    (tree / "requirements.txt").write_text("")
    return tree


@pytest.fixture
def settings(tmp_path, checkout):
    return config.Settings(
        tmp_path,
        {"COMPOSE_PROJECT_NAME": "proj", "MEDIACMS_VERSION": "9.9.9", "MEDIACMS_TREE": "mediacms",
         "MEDIACMS_SOURCE": "mediacms", "NODE_IMAGE": "mediacms-local/node:20"},
        tmp_path / ".env",
    )  # fmt: skip


@pytest.fixture
def no_missing_images(monkeypatch):
    monkeypatch.setattr(ops, "missing_images", lambda refs: [])


def commands(c: MockContext) -> list[str]:
    return [call.args[0] for call in c.run.call_args_list]


def devcompose(settings, writes=True) -> Compose:
    return Compose.for_settings(settings, dev=True, writes=writes)


def test_up_starts_dev_compose_waits_and_prints_published_urls(
    settings, checkout, no_missing_images, capsys
):
    c = MockContext(run={
        re.compile(r".* port web 8000$"): Result("127.0.0.1:18000\n"),
        re.compile(r".* port frontend 8088$"): Result("0.0.0.0:18088\n"),
        re.compile(r".* up .*"): Result(),
    })  # fmt: skip
    found = dev.up(c, settings, devcompose(settings), timeout=600)
    up = commands(c)[0]
    assert "--project-name proj-dev" in up
    assert f"--file {settings.root}/docker-compose-dev.yaml" in up
    assert "docker-compose.yaml" not in up.replace("docker-compose-dev.yaml", "")
    assert up.endswith(" up --detach --wait --wait-timeout 600")
    owner = checkout.stat()
    assert c.run.call_args_list[0].kwargs["env"] == {
        "DEV_UID": str(owner.st_uid),
        "DEV_GID": str(owner.st_gid),
    }
    assert found == {"runserver": "http://127.0.0.1:18000/", "frontend": "http://127.0.0.1:18088/"}
    out = capsys.readouterr().out
    assert "http://127.0.0.1:18000/" in out and "http://127.0.0.1:18088/" in out


def test_dev_uid_from_env_file_wins_over_the_tree_owner(settings, checkout):
    values = {**settings.values, "DEV_UID": "1234", "DEV_GID": "5678"}
    pinned = config.Settings(settings.root, values, settings.env_file)
    assert dev.owner_env(pinned, checkout) == {"DEV_UID": "1234", "DEV_GID": "5678"}


def test_missing_dev_image_is_built_from_the_checkout(
    settings, checkout, builder, monkeypatch, capsys, dry
):
    monkeypatch.setattr(ops, "missing_images", lambda refs: [r for r in refs if "-dev:" in r])
    c = MockContext(run={re.compile(r"git -C .* rev-parse .*"): Result("0123abcd\n")})
    dev.up(dry(c), settings, devcompose(settings, writes=False))
    err = capsys.readouterr().err
    assert "--target dev" in err and "--tag mediacms/mediacms-dev:9.9.9" in err
    assert "--target web" not in err
    assert err.index("--target dev") < err.index(" up --detach --wait")


def test_tree_must_be_a_checkout(settings, checkout):
    (checkout / "manage.py").unlink()
    with pytest.raises(StackError, match="not a MediaCMS checkout"):
        dev.tree(settings)
    with pytest.raises(StackError, match="MEDIACMS_TREE is not set"):
        dev.tree(config.Settings(settings.root, {}, settings.env_file))


def _ps(*rows: tuple[str, str, str]) -> Result:
    return Result("\n".join(json.dumps({"Service": s, "State": st, "Health": h})
                            for s, st, h in rows) + "\n")  # fmt: skip


def test_build_frontend_runs_dist_in_a_one_off_frontend_then_restarts_running_web(
    settings, no_missing_images, capsys
):
    c = MockContext(run={
        re.compile(r".* ps --format json.*"): _ps(("web", "running", "healthy")),
        re.compile(r".* run --rm .*"): Result(),
        re.compile(r".* restart web$"): Result(),
    })  # fmt: skip
    dev.build_frontend(c, settings, devcompose(settings))
    run, *rest = commands(c)
    assert " run --rm --no-deps -T frontend sh -c " in run
    assert set(c.run.call_args_list[0].kwargs["env"]) == {"DEV_UID", "DEV_GID"}
    assert "npm run dist && cp -R dist/static/. ../static/" in run
    assert any(cmd.endswith(" restart web") for cmd in rest)
    assert rest[-1].endswith("ps --format json --all")  # waited for web to be healthy again
    assert "invoke build` and `invoke up`" in capsys.readouterr().out


def test_build_frontend_leaves_a_stopped_stack_alone_and_names_the_build_source(
    settings, no_missing_images, capsys
):
    other = config.Settings(settings.root, {**settings.values, "MEDIACMS_SOURCE": "x@y"},
                            settings.env_file)  # fmt: skip
    c = MockContext(run={
        re.compile(r".* ps --format json.*"): Result(""),
        re.compile(r".* run --rm .*"): Result(),
    })  # fmt: skip
    dev.build_frontend(c, other, devcompose(other))
    assert not any("restart" in cmd for cmd in commands(c))
    assert "invoke build --source" in capsys.readouterr().out


def test_test_runs_pytest_in_the_dev_image_with_testing_true(settings, checkout, no_missing_images):
    c = MockContext(run={re.compile(r".*"): Result()})
    dev.test(c, settings, devcompose(settings), "-k 'upload and not slow' -x")
    up, run = commands(c)
    assert up.endswith(" up --detach --wait --wait-timeout 300 db redis")
    owner = {"DEV_UID": str(checkout.stat().st_uid), "DEV_GID": str(checkout.stat().st_gid)}
    assert c.run.call_args_list[1].kwargs["env"] == owner  # pytest runs as the checkout's owner
    assert run.endswith(
        " run --rm --no-deps -T -e TESTING=True web pytest -k 'upload and not slow' -x"
    )
    assert "--project-name proj-dev" in run


def _tasks_module():
    spec = importlib.util.spec_from_file_location("stack_tasks", config.ROOT / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_up_dev_is_an_alias_of_invoke_dev(home, no_missing_images, capsys):
    tree = home / "tree"
    tree.mkdir()
    (tree / "manage.py").write_text("")
    env = home / ".env"
    env.write_text(env.read_text().replace("MEDIACMS_TREE=../mediacms", f"MEDIACMS_TREE={tree}"))
    tasks = _tasks_module()
    tasks.dev_stack(MockContext(), dry_run=True)
    via_dev = capsys.readouterr()
    tasks.up(MockContext(), dev=True, dry_run=True)
    via_up = capsys.readouterr()
    assert via_dev == via_up
    assert "docker-compose-dev.yaml up --detach --wait --wait-timeout 900" in via_dev.err
    assert tasks.ns.task_names["dev"] == []  # listed as `invoke dev`


def _dev_bridge_source() -> str:
    """The sitecustomize.py the dev compose hands its Python containers (configs.dev_bridge)."""
    lines = (config.ROOT / "docker-compose-dev.yaml").read_text().splitlines()
    start = lines.index("  dev_bridge:") + 2
    assert lines[start - 1] == "    content: |"
    body = []
    for line in lines[start:]:
        if line and not line.startswith("      "):
            break
        body.append(line[6:])
    return "\n".join(body)


def test_dev_bridge_serves_the_settings_bridge_beside_the_checkout(tmp_path):
    """cms.local_settings/container_settings come from the bridge folder, even when the
    checkout has its own, and the settings load while cms/__init__.py is still running."""
    bridge, tree = tmp_path / "bridge", tmp_path / "tree"
    (tree / "cms").mkdir(parents=True)
    bridge.mkdir()
    source = _dev_bridge_source()
    assert "/home/mediacms.io/settings-bridge" in source
    (bridge / "sitecustomize.py").write_text(
        source.replace("/home/mediacms.io/settings-bridge", str(bridge))
    )
    (bridge / "local_settings.py").write_text("ORIGIN = 'bridge'\n")
    (bridge / "container_settings.py").write_text(
        "from cms.settings import *\nfrom cms.local_settings import ORIGIN\n"
    )
    # like MediaCMS: the package reads the settings while it is being imported
    (tree / "cms/__init__.py").write_text(
        "import importlib\nSEEN = importlib.import_module('cms.container_settings').ORIGIN\n"
    )
    (tree / "cms/settings.py").write_text("TREE = True\n")
    (tree / "cms/local_settings.py").write_text("ORIGIN = 'checkout'\n")
    probe = "import cms, cms.settings; print(cms.SEEN, cms.settings.__file__)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=tree, capture_output=True,
                          text=True, env={"PYTHONPATH": str(bridge)}, check=True)  # fmt: skip
    assert done.stdout.split() == ["bridge", str(tree / "cms/settings.py")]
