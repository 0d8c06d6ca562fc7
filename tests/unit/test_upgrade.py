import re
import shlex
from pathlib import Path

import pytest
from invoke import MockContext, Result

from mediacms_stack.data import backup
from mediacms_stack.engines import shell, stackstate
from mediacms_stack.engines.compose import HTTPS, PRODUCTION, Compose
from mediacms_stack.procedures import gate, rollback, transition, upgrade
from mediacms_stack.stack import config
from mediacms_stack.stack.errors import StackError

IMAGES = {
    "web": ("mediacms/mediacms:8.3.2", "sha256:" + "a" * 64),
    "db": ("postgres:17", "sha256:" + "d" * 64),
}


def split(command: str) -> list[str]:
    """A printed one-line command as argv ([] for the first line of a multi-line one)."""
    try:
        return shlex.split(command)
    except ValueError:
        return []


def test_a_new_version_replaces_one_line_and_keeps_mode_600(tmp_path):
    env = tmp_path / ".env"
    env.write_text("# comment\nMEDIACMS_VERSION=8.3.2\nSECRET_KEY=abc\n")
    env.chmod(0o600)
    after = config.update(config.load(tmp_path), {"MEDIACMS_VERSION": "8.4.0"})
    assert env.read_text() == "# comment\nMEDIACMS_VERSION=8.4.0\nSECRET_KEY=abc\n"
    assert env.stat().st_mode & 0o777 == 0o600
    config.update(after, {"NEW_KEY": "x"})
    assert env.read_text().endswith("SECRET_KEY=abc\nNEW_KEY=x\n")
    assert config.load(tmp_path).version == after.version == "8.4.0"


def test_summary_names_versions_images_migrations_backup_and_rollback(tmp_path):
    before = transition.State("8.3.2", IMAGES, ("files.0001_initial",))
    after_images = {**IMAGES, "web": ("mediacms/mediacms:8.4.0", "sha256:" + "b" * 64)}
    after = transition.State("8.4.0", after_images, ("files.0001_initial", "files.0002_new"))
    text = transition.summary("upgraded", before, after, tmp_path / "bk")
    assert text.startswith("upgraded: MediaCMS 8.3.2 -> 8.4.0; every service is healthy\n")
    web = next(line for line in text.splitlines() if line.startswith("web"))
    assert "mediacms/mediacms:8.3.2 (aaaaaaaaaaaa)" in web
    assert "mediacms/mediacms:8.4.0 (bbbbbbbbbbbb)" in web
    assert re.search(r"^db\s+postgres:17 \(dddddddddddd\)\s+unchanged$", text, re.M)
    assert "migrations applied (1): files.0002_new" in text
    assert f"roll back with: invoke upgrade --rollback {tmp_path / 'bk'}" in text
    back = transition.summary("rolled back", after, before, tmp_path / "bk")
    assert back.startswith("rolled back: MediaCMS 8.4.0 -> 8.3.2")
    assert "migrations rolled back (1): files.0002_new" in back and "roll back with" not in back


def test_upgrade_refuses_a_bad_tag_before_doing_anything(tmp_path):
    settings = config.Settings(tmp_path, {"MEDIACMS_VERSION": "8.3.2"}, tmp_path / ".env")
    with pytest.raises(StackError, match="not a valid image tag"):
        upgrade.upgrade(MockContext(), Compose(tmp_path), settings, backups=tmp_path, to="8.4 rc")


def test_upgrade_refuses_a_stopped_stack(tmp_path):
    (tmp_path / ".env").write_text("MEDIACMS_VERSION=8.3.2\n")
    settings = config.load(tmp_path)
    c = MockContext(run={re.compile(r".* ps --format json$"): Result("")})
    with pytest.raises(StackError, match="not running"):
        upgrade.upgrade(c, Compose(tmp_path), settings, backups=tmp_path / "b", to="8.4.0")
    assert not (tmp_path / "b").exists()


def dry_run(tmp_path, monkeypatch, capsys, missing, plan=None) -> tuple[list[list[str]], str]:
    """An upgrade to 8.4.0 --build, dry; the engine lacks ``missing``; the new images'
    plan is ``plan``. Returns the commands printed and the rest of the output."""
    monkeypatch.setattr(stackstate, "stack_images", lambda c, compose: IMAGES)
    monkeypatch.setattr("mediacms_stack.procedures.ops.missing_images",
                        lambda refs: [r for r in refs if r in missing])  # fmt: skip
    monkeypatch.setattr(gate, "ask", lambda c, compose, version: gate.steps(plan or []))
    (tmp_path / ".env").write_text("MEDIACMS_VERSION=8.3.2\n")
    settings = config.load(tmp_path)
    c = MockContext(run={re.compile(r".*psql.*django_migrations.*"): Result("files.0001\n"),
                         re.compile(r"git -C .* rev-parse .*"): Result("0123abcd\n")})  # fmt: skip
    shell.set_dry(c, True)
    compose = Compose(tmp_path, writes=False)
    upgrade.upgrade(c, compose, settings, backups=tmp_path / "b", to="8.4.0", build=True,
                    source=str(config.ROOT / "tests" / "app"))  # fmt: skip
    out = capsys.readouterr()
    commands = [split(line[2:]) for line in out.err.splitlines()
                if line.startswith("$ ") and split(line[2:])]  # fmt: skip
    assert (tmp_path / ".env").read_text() == "MEDIACMS_VERSION=8.3.2\n"  # dry run: untouched
    assert not (tmp_path / "b").exists()
    return commands, out.out


def test_upgrade_dry_run_prints_backup_and_build_and_stops_at_the_gate(tmp_path, monkeypatch,
                                                                      capsys, builder):  # fmt: skip
    new = ["mediacms/mediacms:8.4.0", "mediacms/mediacms-worker:8.4.0",
           "mediacms/mediacms-nginx:8.4.0"]  # fmt: skip
    commands, out = dry_run(tmp_path, monkeypatch, capsys, missing=new)
    builds = [argv for argv in commands if "build" in argv[:2]]
    assert [argv[argv.index("--tag") + 1] for argv in builds] == new
    assert commands[-1] == builds[-1]  # nothing after the build: no .env, no compose up
    assert "step 3/5" in out and "cannot ask the images of 8.4.0 yet" in out


def test_upgrade_dry_run_shows_the_plan_and_its_path_and_changes_nothing(tmp_path, monkeypatch,
                                                                        capsys, builder):  # fmt: skip
    plan = [{"migration": "files.0009_x", "operations": [
        {"type": "AddField", "model": "media", "field": "note", "null": True},
        {"type": "RemoveField", "model": "media", "field": "title"}]}]  # fmt: skip
    commands, out = dry_run(tmp_path, monkeypatch, capsys, missing=[], plan=plan)
    assert re.search(r"files\.0009_x\s+AddField media\.note\s+additive\s+a nullable column", out)
    assert re.search(r"RemoveField media\.title\s+maintenance\s+drops a column", out)
    assert "would take the maintenance path; nothing was changed" in out
    assert "step 4/5" not in out and not [a for a in commands if "up" in a or "stop" in a]


def test_upgrade_without_build_pulls_the_target_version(tmp_path, monkeypatch):
    monkeypatch.setattr(stackstate, "stack_images", lambda c, compose: IMAGES)
    monkeypatch.setattr(backup, "backup_all", lambda c, compose, settings, dest: dest / "bk")
    (tmp_path / ".env").write_text("MEDIACMS_VERSION=8.3.2\n")
    c = MockContext(
        run={
            re.compile(r".* ps --format json$"): Result('{"Service":"db","State":"running"}\n'),
            re.compile(r".*psql.*django_migrations.*"): Result("files.0001\n"),
            re.compile(r".* pull .*"): Result(exited=1, stderr="manifest unknown"),
        }
    )
    with pytest.raises(StackError, match=r"before changing anything(.|\n)*still runs 8\.3\.2"):
        upgrade.upgrade(c, Compose(tmp_path), config.load(tmp_path), backups=tmp_path, to="8.4.0")
    pull = next(call for call in c.run.call_args_list if " pull " in call.args[0])
    assert "--ignore-buildable" in pull.args[0]
    assert pull.kwargs["env"]["MEDIACMS_VERSION"] == "8.4.0"
    assert config.load(tmp_path).version == "8.3.2"  # a failed pull changes nothing


OLD_ROLE = "MEDIACMS_VERSION=8.3.2\nPOSTGRES_USER=mediacms\nPOSTGRES_PASSWORD=old-pw\n"


def upgrade_up_to_step_5(tmp_path, monkeypatch, split: Result) -> tuple[list[str], list[str]]:
    """An upgrade of a single-role stack whose role split answers ``split``; returns the
    texts config wrote to .env and the .env text that step 5 started with."""
    monkeypatch.setattr(stackstate, "stack_images", lambda c, compose: IMAGES)
    monkeypatch.setattr(backup, "backup_all", lambda c, compose, settings, dest: dest / "bk")
    monkeypatch.setattr("mediacms_stack.procedures.ops.missing_images", lambda refs: [])
    env = tmp_path / ".env"
    env.write_text(OLD_ROLE)
    written, started, write = [], [], config.write_private
    monkeypatch.setattr(config, "write_private",
                        lambda path, text: written.append(text) or write(path, text))  # fmt: skip
    monkeypatch.setattr(gate, "ask", lambda c, compose, version: [])
    monkeypatch.setattr(upgrade, "_go_in",
                        lambda c, compose, path, timeout: started.append(env.read_text()) or "")  # fmt: skip
    c = MockContext(run={
        re.compile(r".* ps --format json$"): Result('{"Service":"db","State":"running"}\n'),
        re.compile(r".*psql.*django_migrations.*"): Result("files.0001\n"),
        re.compile(r".* pull .*"): Result(""),
        re.compile(r".*psql .*--single-transaction.*"): split,
    }, repeat=True)  # fmt: skip
    upgrade.upgrade(c, Compose(tmp_path), config.load(tmp_path), backups=tmp_path, to="8.4.0")
    return written, started


def test_upgrade_writes_version_and_role_split_at_once_before_step_5(tmp_path, monkeypatch):
    written, started = upgrade_up_to_step_5(tmp_path, monkeypatch, Result(""))
    assert len(written) == 1 and started == written  # one write, read by step 5
    values = config.load(tmp_path).values
    assert values["MEDIACMS_VERSION"] == "8.4.0" and values["POSTGRES_USER"] == "mediacms_app"
    assert values["POSTGRES_SUPERUSER"] == "mediacms"


def test_a_failed_role_split_leaves_env_as_it_was(tmp_path, monkeypatch):
    with pytest.raises(StackError, match="nothing changed: ERROR: boom"):
        upgrade_up_to_step_5(tmp_path, monkeypatch, Result(stderr="ERROR: boom", exited=1))
    assert (tmp_path / ".env").read_text() == OLD_ROLE  # the version is not recorded either


def failed_upgrade(tmp_path, monkeypatch, *, plan, keep_failed=False):
    """An upgrade whose new version never gets healthy (plan: the gate's migrations);
    returns its error, what was rolled back and how, and the commands run."""
    monkeypatch.setattr(stackstate, "stack_images", lambda c, compose: IMAGES)
    monkeypatch.setattr(backup, "backup_all", lambda c, compose, settings, dest: dest / "bk")
    monkeypatch.setattr("mediacms_stack.procedures.ops.missing_images", lambda refs: [])
    monkeypatch.setattr(gate, "ask", lambda c, compose, version: gate.steps(plan))
    monkeypatch.setattr(upgrade, "_go_in", lambda *a: "web: unhealthy")
    monkeypatch.setattr(upgrade, "_failure_report", lambda c, compose, why: f"REPORT {why}")
    rolled = []
    monkeypatch.setattr(rollback, "rollback", lambda c, compose, settings, folder, **kw:
                        rolled.append(("all", settings.version, folder)))  # fmt: skip
    monkeypatch.setattr(rollback, "restore_images",
                        lambda c, recorded: rolled.append(("images", recorded)))  # fmt: skip
    monkeypatch.setattr(rollback, "start_healthy_nginx_last", lambda *a, **k: "")
    monkeypatch.setattr(rollback.artifacts, "check_backup_folder", lambda folder: type(
        "Parts", (), {"manifest": {"mediacms_version": "8.3.2", "images": IMAGES}}))  # fmt: skip
    (tmp_path / ".env").write_text("MEDIACMS_VERSION=8.3.2\nPOSTGRES_USER=app\n"
                                   "POSTGRES_SUPERUSER=mediacms\n")  # fmt: skip
    running = ('{"Service":"db","State":"running"}\n'
               '{"Service":"nginx","State":"running","Name":"app-nginx-1"}\n')  # fmt: skip
    c = MockContext(run={re.compile(r".* ps --format json$"): Result(running),
                         re.compile(r".*"): Result("")}, repeat=True)  # fmt: skip
    with pytest.raises(StackError) as error:
        upgrade.upgrade(c, Compose(tmp_path), config.load(tmp_path), backups=tmp_path,
                        to="8.4.0", keep_failed=keep_failed)  # fmt: skip
    return str(error.value), rolled, [call.args[0] for call in c.run.call_args_list]


ADD_INDEX = [{"migration": "files.0002_note", "operations": [{"type": "AddField"}]}]


def test_a_failed_version_without_migrations_gets_its_images_back_only(tmp_path, monkeypatch):
    said, rolled, ran = failed_upgrade(tmp_path, monkeypatch, plan=[])
    assert rolled == [("images", IMAGES)]  # the data stayed: the old version served them
    assert config.load(tmp_path).version == "8.3.2"
    assert said.startswith("REPORT web: unhealthy")
    assert "Rolled back to 8.3.2 automatically (its images (no migration" in said
    assert any("exec -T nginx nginx-maintenance off" in cmd for cmd in ran), ran


def test_a_failed_version_that_migrated_is_rolled_back_whole(tmp_path, monkeypatch):
    said, rolled, _ = failed_upgrade(tmp_path, monkeypatch, plan=ADD_INDEX)
    assert rolled == [("all", "8.4.0", tmp_path / "bk")]
    assert "Rolled back to 8.3.2 automatically (its images, and its database" in said


def test_keep_failed_leaves_the_failed_version_and_names_the_rollback(tmp_path, monkeypatch):
    said, rolled, _ = failed_upgrade(tmp_path, monkeypatch, plan=ADD_INDEX, keep_failed=True)
    assert rolled == [] and config.load(tmp_path).version == "8.4.0"
    assert f"roll back: invoke upgrade --rollback {tmp_path / 'bk'}" in said


def test_rollback_refuses_a_folder_without_manifest(tmp_path):
    with pytest.raises(StackError, match=r"no manifest\.json"):
        rollback.rollback(MockContext(), Compose(tmp_path), config.load(tmp_path), Path(tmp_path),
                         backups=tmp_path)  # fmt: skip


def test_a_rollback_keeps_nginx_with_its_page_and_replaces_it_last_alone(tmp_path, monkeypatch):
    """Visitors get the 503 page during a rollback, never a closed port: nginx shows the
    page and is not stopped for the restore; every other service starts first, then
    nginx alone; the page goes at the end (an nginx that was not replaced keeps it)."""
    monkeypatch.setattr(rollback.artifacts, "check_backup_folder", lambda folder: type(
        "Parts", (), {"manifest": {"mediacms_version": "8.3.2", "images": IMAGES}}))  # fmt: skip
    monkeypatch.setattr(rollback, "restore_images", lambda c, recorded: None)
    monkeypatch.setattr(rollback, "current_state", lambda *a: None)
    monkeypatch.setattr(rollback, "summary", lambda *a: "summary")
    monkeypatch.setattr("mediacms_stack.procedures.ops.wait_healthy", lambda *a, **k: None)
    restored = {}
    monkeypatch.setattr(rollback.restore, "restore_all", lambda *a, **kw: restored.update(kw))
    (tmp_path / ".env").write_text("MEDIACMS_VERSION=8.4.0\n")
    ps = '{"Name":"p-nginx-1","Service":"nginx","State":"running"}\n'
    c = MockContext(run={re.compile(r".* ps --format json$"): Result(ps),
                         re.compile(".*"): Result("")}, repeat=True)  # fmt: skip
    rollback.rollback(c, Compose(tmp_path, project="p"), config.load(tmp_path), tmp_path,
                      backups=tmp_path)  # fmt: skip
    ran = [call.args[0].split(" --file ")[-1] for call in c.run.call_args_list
           if " ps " not in call.args[0] and " up --detach --wait --wait-timeout 300 db redis" not in call.args[0]]  # fmt: skip
    assert restored["stop"] == ("web", "celery_beat", "celery_short", "celery_long")
    assert restored["start"] is False
    assert ran[0].endswith("exec -T nginx nginx-maintenance on"), ran
    assert ran[1].endswith("--wait-timeout 300 web celery_beat celery_short celery_long db redis "
                           "redis_cache"), ran  # fmt: skip
    assert ran[2].endswith("--wait-timeout 300"), ran  # the rest: nginx, alone
    assert ran[3].endswith("exec -T nginx nginx-maintenance off") and len(ran) == 4, ran
    assert config.load(tmp_path).version == "8.3.2"


def test_failure_reason_keeps_the_lines_that_say_what_failed():
    output = (
        " Container p-db-1  Healthy\n Container p-migrations-1  Started\n"
        ' Container p-migrations-1  service "migrations" didn\'t complete successfully: exit 1\n'
        ' Container p-migrations-1  service "migrations" didn\'t complete successfully: exit 1\n'
    )
    assert transition._reason(output) == (
        'Container p-migrations-1  service "migrations" didn\'t complete successfully: exit 1'
    )
    assert transition._reason("a\nb\nc\nd\n") == "b\n  c\n  d"


def go_in(tmp_path, monkeypatch, path: str, files: tuple[str, ...] = (PRODUCTION,)) -> list[str]:
    """The commands step 5 runs on the ``path`` the gate chose, every one succeeding; one
    container of each service runs before (and has ended when asked whether it runs)."""
    monkeypatch.setattr("mediacms_stack.procedures.ops.wait_healthy", lambda *a, **k: None)
    ps = "".join(f'{{"Name":"p-{name}-1","Service":"{name}","State":"running"}}\n'
                 for name in ("nginx", "web", "celery_short", "celery_long", "celery_beat"))  # fmt: skip
    c = MockContext(run={re.compile(r".* ps --format json$"): Result(ps),
                         re.compile(r".*\{\{\.Config\.StopTimeout\}\}.*"): Result("60\n"),
                         re.compile(r".*\{\{\.State\.Running\}\}.*"): Result("false\n"),
                         re.compile(".*"): Result("")}, repeat=True)  # fmt: skip
    assert upgrade._go_in(c, Compose(tmp_path, files, project="p"), path, 300) == ""
    return [call.args[0].split(" --file ")[-1] for call in c.run.call_args_list
            if " ps " not in call.args[0]]  # fmt: skip


def test_the_zero_downtime_path_migrates_beside_then_replaces_web_then_nginx_alone(
    tmp_path, monkeypatch
):
    done = go_in(tmp_path, monkeypatch, gate.ZERO_DOWNTIME)
    assert done[0].endswith("run --rm --no-deps -T migrations")
    # web, then the workers: new containers beside the old, which go once those are healthy
    assert "--scale=web=2 web" in done[1] and "--no-recreate" in done[1]
    assert done[2:4] == ["docker stop p-web-1", "docker rm p-web-1"]
    assert done[4].endswith("--scale=celery_short=2 --scale=celery_long=2 celery_short "
                            "celery_long") and "--no-recreate" in done[4]  # fmt: skip
    assert done[5:9] == ["docker stop p-celery_short-1", "docker rm p-celery_short-1",
                         "docker stop p-celery_long-1", "docker rm p-celery_long-1"]  # fmt: skip
    assert done[9].endswith("--no-deps celery_beat")  # never two: recreated stop-first
    assert done[10].endswith("--no-deps nginx") and len(done) == 11


def test_the_maintenance_path_raises_the_page_first_and_nginx_goes_last_alone(
    tmp_path, monkeypatch
):
    done = go_in(tmp_path, monkeypatch, gate.MAINTENANCE)
    assert done[0].endswith("exec -T nginx nginx-maintenance on")
    assert done[1].endswith("stop web celery_beat celery_short celery_long")
    # the migrations job runs as web's dependency; nginx, with the page, is not recreated
    assert done[2].endswith("up --detach --wait --wait-timeout 300 web celery_beat celery_short "
                            "celery_long")  # fmt: skip
    assert done[3].endswith("--no-deps nginx") and len(done) == 4


@pytest.mark.parametrize("path", [gate.ZERO_DOWNTIME, gate.MAINTENANCE])
def test_behind_the_https_overlay_the_new_nginx_starts_beside_and_the_old_one_drains(
    tmp_path, monkeypatch, path
):
    done = go_in(tmp_path, monkeypatch, path, (PRODUCTION, HTTPS))
    first = next(i for i, command in enumerate(done) if "--scale=nginx=2 nginx" in command)
    nginx = done[first:]
    assert "--no-recreate" in nginx[0] and "--no-deps" in nginx[0]
    # no SIGTERM (nginx's fast shutdown): SIGQUIT, no restart by the engine, its grace
    assert nginx[1:] == [
        "docker update --restart no p-nginx-1",
        "docker kill --signal QUIT p-nginx-1",
        "docker inspect --format '{{.Config.StopTimeout}}' p-nginx-1",
        "docker inspect --format '{{.State.Running}}' p-nginx-1",
        "docker rm --force p-nginx-1",
    ]
    assert not any(d.endswith("--no-deps nginx") for d in done)  # never recreated stop-first
