"""migrate-from-7x: reading old settings and keys, and the commands it builds."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from invoke import Context, MockContext, Result

from mediacms_stack.engines.compose import Compose
from mediacms_stack.procedures import migrate7x
from mediacms_stack.procedures.migrate7x import carry
from mediacms_stack.procedures.migrate7x.media import CHECKSUMS, read_media_argv, verify_media
from mediacms_stack.stack.config import Settings
from mediacms_stack.stack.errors import StackError

OLD_SETTINGS = """\
import os

# the public address
FRONTEND_HOST = os.getenv("FRONTEND_HOST", "https://video.example.org")
PORTAL_NAME = "Our Videos"
SECRET_KEY = os.environ.get("SECRET_KEY", "k3y$from#settings")
DATABASES = {
    "default": {"HOST": os.getenv("POSTGRES_HOST", "db")},
}
BROKER_URL = CELERY_RESULT_BACKEND = "redis://redis:6379/1"
ALLOWED_UPLOAD = ["mp4"]  # operator's own
TIME_ZONE: str = "Europe/Athens"
"""


def test_split_keeps_operator_settings_and_comments_out_owned_ones():
    plan = migrate7x.split_settings(OLD_SETTINGS, {}, origin="old")
    assert plan.kept == ["ALLOWED_UPLOAD", "TIME_ZONE"]
    assert set(plan.dropped) == {
        "FRONTEND_HOST", "PORTAL_NAME", "SECRET_KEY", "DATABASES", "BROKER_URL",
        "CELERY_RESULT_BACKEND",
    }  # fmt: skip
    assert plan.to_env == {
        "FRONTEND_HOST": "https://video.example.org",
        "PORTAL_NAME": "Our Videos",
        "SECRET_KEY": "k3y$from#settings",
    }
    text = plan.text or ""
    compile(text, "custom", "exec")
    namespace: dict = {}
    exec(compile(text, "custom", "exec"), namespace)  # noqa: S102 - our own test input
    assert namespace["ALLOWED_UPLOAD"] == ["mp4"] and namespace["TIME_ZONE"] == "Europe/Athens"
    assert "DATABASES" not in namespace and "SECRET_KEY" not in namespace
    assert "# the public address" in text  # comments survive
    assert re.search(r"# \[migrate-from-7x: .*\]\n# DATABASES = \{\n#     \"default\"", text)


def test_environment_of_the_old_compose_file_wins_over_defaults():
    plan = migrate7x.split_settings(OLD_SETTINGS, {"SECRET_KEY": "from-env"}, origin="old")
    assert plan.to_env["SECRET_KEY"] == "from-env"


def test_non_literal_values_are_reported_not_guessed():
    plan = migrate7x.split_settings('FRONTEND_HOST = "http://" + HOST\n', {}, origin="old")
    assert plan.to_env == {}
    assert plan.dropped["FRONTEND_HOST"] == "not a literal: set FRONTEND_HOST in .env"


def test_unparsable_settings_are_refused():
    with pytest.raises(StackError, match="does not parse"):
        migrate7x.split_settings("DEBUG = (\n", {}, origin="old settings")


def test_secret_key_sources_in_order(tmp_path: Path):
    empty = migrate7x.SettingsPlan()
    assert migrate7x.secret_key(empty, tmp_path, {}) == ("", "none found")
    (tmp_path / ".secret_key").write_text("from-file\n")
    assert migrate7x.secret_key(empty, tmp_path, {}) == ("from-file", ".secret_key")
    env = {"SECRET_KEY": "from-env"}
    assert migrate7x.secret_key(empty, tmp_path, env)[0] == "from-env"
    settings = migrate7x.SettingsPlan(to_env={"SECRET_KEY": "from-settings"})
    assert migrate7x.secret_key(settings, tmp_path, env)[0] == "from-settings"


def test_given_dumps_are_recognised_or_refused(tmp_path: Path):
    custom = tmp_path / "a.dump"
    custom.write_bytes(b"PGDMP\x01\x0e")
    plain = tmp_path / "a.sql"
    plain.write_text("--\n-- PostgreSQL database dump\n--\n")
    other = tmp_path / "a.tar"
    other.write_bytes(b"\x1f\x8b junk")
    assert migrate7x.check_given_dump(custom) == "custom"
    assert migrate7x.check_given_dump(plain) == "plain"
    with pytest.raises(StackError, match="neither a pg_dump"):
        migrate7x.check_given_dump(other)
    with pytest.raises(StackError, match="does not exist"):
        migrate7x.check_given_dump(tmp_path / "missing.dump")


def test_checksums_parse_and_media_counted(tmp_path: Path):
    (tmp_path / ".hidden").write_bytes(b"12345")
    (tmp_path / "a/b").mkdir(parents=True)
    (tmp_path / "a/b/c.mp4").write_bytes(b"x" * 10)
    found = migrate7x.MediaFolder.of(tmp_path)
    assert (found.files, found.bytes, found.problems) == (2, 15, [])
    sums = migrate7x.parse_checksums("abc  ./a/b/c.mp4\ndef  ./.hidden\n")
    assert sums == {"a/b/c.mp4": "abc", ".hidden": "def"}


def _linked_media(tmp_path: Path) -> Path:
    """A 7.x media folder whose original/ is a link to another disk, plus a relative link."""
    disk2 = tmp_path / "disk2" / "original"
    (disk2 / "user" / "alice").mkdir(parents=True)
    (disk2 / "user" / "alice" / "clip.mp4").write_bytes(b"video" * 100)
    media = tmp_path / "media_files"
    (media / "thumbnails").mkdir(parents=True)
    (media / "thumbnails" / "t.jpg").write_bytes(b"jpeg")
    (media / "original").symlink_to(disk2)  # absolute, to another disk
    (media / "thumbnails" / "again.jpg").symlink_to("t.jpg")  # relative, a file
    return media


def test_media_links_are_followed_and_counted(tmp_path: Path):
    found = migrate7x.MediaFolder.of(_linked_media(tmp_path))
    assert (found.files, found.bytes, found.problems) == (3, 508, [])


def test_media_links_that_cannot_be_followed_are_named(tmp_path: Path):
    media = _linked_media(tmp_path)
    (media / "gone").symlink_to(tmp_path / "nowhere")
    (media / "thumbnails" / "loop").symlink_to("..")
    os.mkfifo(media / "pipe")
    problems = migrate7x.MediaFolder.of(media).problems
    assert problems == [
        f"gone -> {tmp_path / 'nowhere'}: no such file or directory",
        "pipe: neither a file nor a folder",
        "thumbnails/loop -> ..: leads back into a folder above it",
    ]


def test_media_copy_reads_here_with_links_followed_and_extracts_in_one_container():
    compose = Compose(Path("/srv/new"), project="new")
    c = MockContext(run={re.compile(r".*"): Result("")})
    migrate7x.copy_media(c, compose, Path("/srv/old/media_files"))
    command = c.run.call_args[0][0]
    sender, _, receiver = command.partition(" | ")
    assert sender.startswith("set -o pipefail; tar -C /srv/old/media_files --create --dereference")
    assert "--owner=33 --group=33" in sender and "--hard-dereference" in sender
    assert "--cap-add CHOWN --cap-add DAC_OVERRIDE --cap-add FOWNER" in receiver
    assert "--entrypoint tar web -C /home/mediacms.io/mediacms/media_files --extract" in receiver
    assert "--same-owner" in receiver


def test_media_stream_carries_linked_content_and_no_links(tmp_path: Path):
    """The sending tar itself, on this machine: what arrives is files, never links."""
    sent = subprocess.run(read_media_argv(_linked_media(tmp_path)), capture_output=True,
                          check=True).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(sent)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert all(m.isreg() or m.isdir() for m in members.values())
    assert members["./original/user/alice/clip.mp4"].size == 500
    assert members["./thumbnails/again.jpg"].size == 4
    assert {(m.uid, m.gid) for m in members.values()} == {(33, 33)}


def test_media_verification_fails_on_a_file_missing_or_changed_in_the_volume(tmp_path: Path):
    """verify_media against what the volume would answer: the old folder's content copied
    with its links followed and hashed as the container hashes it (the real sha256sum);
    a faithful copy passes, one file missing and one changed are each named."""
    source = _linked_media(tmp_path)
    volume = tmp_path / "volume"
    shutil.copytree(source, volume)  # links followed, as the copy does

    def verify(owners: str = "") -> int:
        class Volume(Context):
            """Runs the commands of this machine; the container's answer is the volume's."""

            def run(self, command, **kwargs):
                if " web -c 'cd " in command:
                    sums = subprocess.run(["sh", "-c", CHECKSUMS.format(follow="")], cwd=volume,
                                          text=True, capture_output=True, check=True).stdout  # fmt: skip
                    return Result(f"{sums}--owners--\n{owners}")
                return super().run(command, **kwargs)

        c = Volume()
        return verify_media(c, Compose(tmp_path, project=None), source)

    assert verify() == 3
    (volume / "thumbnails" / "again.jpg").unlink()
    (volume / "original" / "user" / "alice" / "clip.mp4").write_bytes(b"video" * 99 + b"vidEo")
    with pytest.raises(StackError, match=r"missing \['thumbnails/again.jpg'\], changed "
                                         r"\['original/user/alice/clip.mp4'\]"):  # fmt: skip
        verify()
    shutil.rmtree(volume)
    shutil.copytree(source, volume)
    with pytest.raises(StackError, match=r"not owned by 33:33 in the volume: \['./x'\]"):
        verify(owners="./x\n")


def test_old_compose_uses_its_own_project_name(tmp_path: Path):
    old = Compose(tmp_path, ("docker-compose.yaml",), project=None)
    argv = old.argv("ps")
    assert "--project-name" not in argv and argv[-1] == "ps"


def test_plan_names_target_volumes_and_rollback(tmp_path: Path):
    old = migrate7x.OldDeployment(
        tmp_path, Compose(tmp_path, project=None),
        {"name": "legacy", "services": {"db": {"volumes": [
            {"type": "bind", "source": str(tmp_path / "pg"), "target": "/var/lib/postgresql/data/"}
        ]}}},
    )  # fmt: skip
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg/PG_VERSION").write_text("13\n")
    plan = migrate7x.Plan(old, None, ("k", ".secret_key"), 3, 2_500_000, "mediacms", None)
    text = "\n".join(plan.lines(Settings(Path("/srv/new"), {}, Path("/srv/new/.env"))))
    assert "3 files, 2.50 MB -> volume mediacms_media_files" in text
    assert "PostgreSQL 13" in text and "mediacms_postgres_data" in text
    assert f"rollback: cd {tmp_path} && docker compose up -d" in text


def old_tree(tmp_path: Path, settings: str) -> tuple[Path, MockContext]:
    tree = tmp_path / "mediacms"
    (tree / "cms").mkdir(parents=True)
    (tree / "manage.py").write_text("")
    (tree / "docker-compose.yaml").write_text("services: {}\n")
    (tree / "cms/local_settings.py").write_text(settings)
    config = {"name": "mediacms", "services": {"db": {}, "web": {"environment": {}}}}
    import json

    c = MockContext(run={re.compile(r".* config --format json$"): Result(json.dumps(config))})
    return tree, c


def test_same_project_name_as_the_old_deployment_is_refused(tmp_path: Path):
    tree, c = old_tree(tmp_path, "")
    with pytest.raises(StackError, match="would share containers"):
        migrate7x.make_plan(c, tree, project="mediacms", dump=None)


def test_a_fallback_key_written_in_the_file_is_flagged_and_can_be_replaced(tmp_path: Path):
    tree, c = old_tree(tmp_path, 'SECRET_KEY = os.getenv("SECRET_KEY", "shipped-default")\n')
    plan = migrate7x.make_plan(c, tree, project="mediacms8", dump=None)
    assert plan.secret == ("shipped-default", "cms/local_settings.py")
    assert any("public" in w and "--new-secret-key" in w for w in plan.warnings)
    tree2, c2 = old_tree(
        tmp_path / "b", 'SECRET_KEY = os.getenv("SECRET_KEY", "shipped-default")\n'
    )
    fresh = migrate7x.make_plan(c2, tree2, project="mediacms8", dump=None, new_secret_key=True)
    assert fresh.secret[0] not in ("", "shipped-default") and len(fresh.secret[0]) > 40


def test_an_unreadable_key_is_refused_before_anything_runs(tmp_path: Path):
    tree, c = old_tree(tmp_path, 'SECRET_KEY = "a${HOME}b"\n')
    with pytest.raises(StackError, match="--new-secret-key"):
        migrate7x.make_plan(c, tree, project="mediacms8", dump=None)


def test_the_dump_and_its_side_files_are_private(tmp_path: Path, monkeypatch):
    """They hold password hashes: 600 in a 700 folder, whatever the umask."""
    monkeypatch.setenv("MEDIACMS_HOME", str(tmp_path))  # backups/ of this deployment
    import json
    import os
    import stat

    old = migrate7x.OldDeployment(tmp_path, Compose(tmp_path, project=None),
                                  {"name": "legacy", "services": {"db": {}}})  # fmt: skip
    c = MockContext(run={
        re.compile(r".* ps --format json$"): Result(json.dumps([{"Service": "db", "State": "running"}])),
        re.compile(r".*pg_isready.*"): Result(""),
        re.compile(r".* psql .*"): Result("users_user\t3\n"),
        re.compile(r".* pg_dump .*"): Result(""),
    })  # fmt: skip
    dest = tmp_path / "backups"
    previous = os.umask(0o022)
    try:
        dest.mkdir(mode=0o755)  # an existing, readable backups/ is tightened too
        dump, counts = migrate7x.dump_old_database(c, old, dest)
    finally:
        os.umask(previous)
    assert counts == {"users_user": 3}
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    made = sorted(p.name for p in dest.iterdir())
    assert made == [dump.name, f"{dump.name}.manifest.json", f"{dump.name}.sha256"]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in dest.iterdir()} == dict.fromkeys(
        made, 0o600
    )
    assert json.loads((dest / f"{dump.name}.manifest.json").read_text())["row_counts"] == counts


def _old_with_redis(tmp_path: Path) -> migrate7x.OldDeployment:
    config = {"name": "legacy", "services": {"db": {}, "redis": {"image": "redis:alpine"}}}
    return migrate7x.OldDeployment(tmp_path, Compose(tmp_path, project=None), config)


def test_sessions_are_piped_from_the_old_redis_into_the_new_one_with_its_password(tmp_path):
    c = MockContext(run={
        re.compile(r".* ps --format json$"): Result("[]"),  # the old redis is stopped
        re.compile(r".* start redis$"): Result(""),
        re.compile(r".* redis-cli ping$"): Result("PONG\n"),
        re.compile(r".*set -o pipefail; .* EVAL .*"): Result("3\n"),
        re.compile(r".* stop redis$"): Result(""),
    })  # fmt: skip
    new = Compose(Path("/srv/new"), project="new")
    count = migrate7x.carry_sessions(
        c,
        _old_with_redis(tmp_path),
        new,
        Settings(tmp_path, {"REDIS_PASSWORD": "s3cret"}, tmp_path / ".env"),
    )
    assert count == 3
    commands = [call.args[0] for call in c.run.call_args_list]
    pipe = next(cmd for cmd in commands if "pipefail" in cmd)
    export, _, load = pipe.partition(" | ")
    assert f"--project-directory {tmp_path} --file" in export
    assert "exec -T redis redis-cli --raw EVAL" in export
    assert export.endswith(f" 0 '{migrate7x.SESSION_KEYS}'")
    assert "--project-name new --file" in load
    assert "exec -T -e REDISCLI_AUTH redis redis-cli" in load
    assert " -n 1 -x EVAL " in load and "s3cret" not in pipe  # the broker's database
    call = next(call for call in c.run.call_args_list if "pipefail" in call.args[0])
    assert call.kwargs["env"] == {"REDISCLI_AUTH": "s3cret"}
    assert commands[-1].endswith("stop redis")  # started for the copy, stopped again


def test_sessions_not_carried_is_a_warning_not_a_failure(tmp_path, capsys):
    c = MockContext(run={
        re.compile(r".* ps --format json$"): Result("[]"),
        re.compile(r".* start redis$"): Result("", exited=1),  # the container was removed
    })  # fmt: skip
    new = Compose(Path("/srv/new"), project="new")
    assert (
        migrate7x.carry_sessions(
            c, _old_with_redis(tmp_path), new, Settings(tmp_path, {}, tmp_path / ".env")
        )
        == 0
    )
    assert "container is gone, none carried" in capsys.readouterr().out


def test_a_missing_from_path_is_said_to_not_exist(tmp_path: Path):
    with pytest.raises(StackError, match=r"no-such does not exist; --from is"):
        migrate7x.make_plan(MockContext(), tmp_path / "no-such", project="new", dump=None)
    (tmp_path / "file").write_text("")
    with pytest.raises(StackError, match="is not a folder"):
        migrate7x.make_plan(MockContext(), tmp_path / "file", project="new", dump=None)


def test_dry_run_reports_what_the_real_run_would_refuse(tmp_path: Path, monkeypatch, capsys,
                                                      dry):  # fmt: skip
    import json

    monkeypatch.setattr("mediacms_stack.engines.engine.engine_answers", lambda: True)
    tree, _ = old_tree(tmp_path, "")
    running = json.dumps([{"Service": "db", "State": "running"}])
    c = MockContext(  # no `up`, no `stop`: any command that would change something fails
        run={
            re.compile(r".* config --format json$"): Result(
                json.dumps({"name": "mediacms", "services": {"db": {}}})
            ),
            re.compile(r".* ps --format json$"): Result(running),
            re.compile(r".*entrypoint find web .*"): Result("/home/x/original\n"),
            re.compile(r".*information_schema.*"): Result("users_user\t3\n"),
        },
        repeat=True,
    )
    new = tmp_path / "new"
    new.mkdir()
    settings = Settings(new, {"COMPOSE_PROJECT_NAME": "mediacms8"}, new / ".env")
    compose = Compose(new, project="mediacms8")
    migrate7x.migrate(dry(c), compose, settings, tree)
    out = capsys.readouterr().out
    assert "would refuse: the new media volume is not empty; pass --yes" in out
    assert "would refuse: the new database already holds 3 rows; pass --yes" in out
    migrate7x.migrate(c, compose, settings, tree, yes=True)
    assert "nothing found that the real run would refuse" in capsys.readouterr().out


def _carry(tmp_path: Path, text: str) -> list[str]:
    old = migrate7x.OldDeployment(tmp_path, Compose(tmp_path, project=None), {})
    plan = migrate7x.Plan(old, migrate7x.SettingsPlan(text=text), ("", "none found"), 0, 0,
                          "new", None)  # fmt: skip
    return carry.carry_settings(plan, Settings(tmp_path, {}, tmp_path / ".env"), yes=True)


def test_custom_settings_are_replaced_in_one_rename_as_readable_as_a_plain_write(tmp_path):
    """The containers read custom/local_settings.py as another user: a new one gets 666
    less the umask, a replaced one keeps its mode; the file is swapped by a rename (a new
    inode), never rewritten in place, the previous one kept as .bak, no temp file left."""
    import os
    import stat

    target = tmp_path / "custom/local_settings.py"
    previous = os.umask(0o022)
    try:
        assert _carry(tmp_path, "A = 1\n") == [f"wrote {target}"]
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        target.chmod(0o640)
        inode = target.stat().st_ino
        assert _carry(tmp_path, "A = 2\n") == [
            "kept the previous local_settings.py as local_settings.py.bak", f"wrote {target}"]  # fmt: skip
    finally:
        os.umask(previous)
    assert target.read_text() == "A = 2\n" and target.stat().st_ino != inode
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert (tmp_path / "custom/local_settings.py.bak").read_text() == "A = 1\n"
    assert sorted(p.name for p in target.parent.iterdir()) == [
        "local_settings.py", "local_settings.py.bak"]  # fmt: skip


def test_a_linked_custom_settings_file_stays_a_link_to_the_new_text(tmp_path):
    real = tmp_path / "elsewhere.py"
    real.write_text("A = 1\n")
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom/local_settings.py").symlink_to(real)
    _carry(tmp_path, "A = 2\n")
    assert (tmp_path / "custom/local_settings.py").is_symlink()
    assert real.read_text() == "A = 2\n"
