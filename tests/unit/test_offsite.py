"""Off-site backups: what .env must hold, what the restic container is given, what an
exit code means. The real repository, SFTP server and restores: tests/e2e/test_offsite.py."""

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from invoke import MockContext, Result

from mediacms_stack.data import artifacts, offsite, schedule
from mediacms_stack.images import bootstrap
from mediacms_stack.stack import config
from mediacms_stack.stack.errors import StackError


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    for name in ("password", "ssh_key", "known_hosts", "aws"):
        (folder / name).write_text(f"{name}-content\n")
        (folder / name).chmod(0o600)
    return folder


def settings_with(tmp_path, keys, **values):
    home = tmp_path / "deployment"
    home.mkdir(exist_ok=True)
    base = {"COMPOSE_PROJECT_NAME": "shop", "OFFSITE_PASSWORD_FILE": str(keys / "password"),
            "OFFSITE_SSH_KEY": str(keys / "ssh_key"),
            "OFFSITE_SSH_KNOWN_HOSTS": str(keys / "known_hosts"),
            "OFFSITE_S3_CREDENTIALS_FILE": str(keys / "aws"), "OFFSITE_KEEP_DAILY": "7",
            "OFFSITE_KEEP_WEEKLY": "4", "OFFSITE_KEEP_MONTHLY": "6"}  # fmt: skip
    return config.Settings(home, {**base, **values}, home / ".env")


def refused(tmp_path, keys, match, **values):
    settings = settings_with(tmp_path, keys, **values)
    with pytest.raises(StackError, match=match) as caught:
        offsite.configured(settings, settings.root / "backups")
    assert "nothing was changed" in str(caught.value)


def test_every_offsite_key_is_documented_in_the_example():
    documented = config.load(config.ROOT, config.ROOT / config.EXAMPLE_FILE).values
    for key in ("OFFSITE_REPOSITORY", "OFFSITE_PASSWORD_FILE", "OFFSITE_SSH_KEY",
                "OFFSITE_SSH_KNOWN_HOSTS", "OFFSITE_S3_CREDENTIALS_FILE", *offsite.KEEP_KEYS):  # fmt: skip
        assert key in documented


def test_unset_unsafe_or_misplaced_settings_are_refused(tmp_path, keys):
    refused(tmp_path, keys, "no off-site repository", OFFSITE_REPOSITORY="")
    refused(tmp_path, keys, "expected an absolute path", OFFSITE_REPOSITORY="relative/repo")
    refused(tmp_path, keys, "expected an absolute path", OFFSITE_REPOSITORY="rest:http://x/")
    refused(tmp_path, keys, "not a file", OFFSITE_REPOSITORY="/srv/r",
            OFFSITE_PASSWORD_FILE=str(keys / "missing"))  # fmt: skip
    (keys / "password").chmod(0o640)
    refused(tmp_path, keys, "readable by others", OFFSITE_REPOSITORY="/srv/r")
    (keys / "password").chmod(0o600)
    inside = tmp_path / "deployment" / "backups" / "key"
    inside.parent.mkdir(parents=True)
    inside.write_text("pw")
    inside.chmod(0o600)
    refused(tmp_path, keys, "inside the deployment folder", OFFSITE_REPOSITORY="/srv/r",
            OFFSITE_PASSWORD_FILE=str(inside))  # fmt: skip
    refused(tmp_path, keys, "may not be inside the backups",
            OFFSITE_REPOSITORY=str(tmp_path / "deployment" / "backups" / "repo"))  # fmt: skip
    refused(tmp_path, keys, "whole number", OFFSITE_REPOSITORY="/srv/r", OFFSITE_KEEP_DAILY="-1")
    refused(tmp_path, keys, "at least one", OFFSITE_REPOSITORY="/srv/r", OFFSITE_KEEP_DAILY="0",
            OFFSITE_KEEP_WEEKLY="0", OFFSITE_KEEP_MONTHLY="0")  # fmt: skip
    (keys / "ssh_key").chmod(0o644)
    refused(tmp_path, keys, "OFFSITE_SSH_KEY.*readable by others",
            OFFSITE_REPOSITORY="sftp:u@host:/srv/r")  # fmt: skip


def test_a_remote_engine_is_refused(tmp_path, keys, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "ssh://db-host")
    refused(tmp_path, keys, "unset DOCKER_HOST", OFFSITE_REPOSITORY="/srv/r")


def test_a_local_repository_runs_without_network_and_the_secrets_read_only(tmp_path, keys):
    settings = settings_with(tmp_path, keys, OFFSITE_REPOSITORY="/srv/repo")
    argv = offsite.configured(settings, settings.root / "backups").argv("snapshots", image="img")
    joined = " ".join(argv)
    assert argv[argv.index("--network") + 1] == "none"
    assert f"{keys / 'password'}:/run/offsite/password:ro" in joined
    assert "/srv/repo:/repository:rw" in joined and "RESTIC_REPOSITORY=/repository" in joined
    assert "password-content" not in joined  # the password is a file, never an argument
    for hardening in ("--read-only", "no-new-privileges:true"):
        assert hardening in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[-2:] == ["img", "snapshots"]


def test_sftp_checks_the_host_key_and_s3_reads_a_credentials_file(tmp_path, keys):
    settings = settings_with(tmp_path, keys, OFFSITE_REPOSITORY="sftp://u@host:2222//srv/r")
    argv = offsite.configured(settings, tmp_path / "b").argv("init", image="img")
    assert argv[argv.index("--network") + 1] == "host"
    [args] = [a for a in argv if a.startswith("sftp.args=")]
    assert "StrictHostKeyChecking=yes" in args
    assert "UserKnownHostsFile=/run/offsite/known_hosts" in args
    assert "RESTIC_REPOSITORY=sftp://u@host:2222//srv/r" in argv
    settings = settings_with(tmp_path, keys, OFFSITE_REPOSITORY="s3:https://s3.example/bucket/m")
    argv = offsite.configured(settings, tmp_path / "b").argv("init", image="img")
    assert "AWS_SHARED_CREDENTIALS_FILE=/run/offsite/aws_credentials" in argv
    assert f"{keys / 'aws'}:/run/offsite/aws_credentials:ro" in " ".join(argv)


def restic(tmp_path, keys, *results, **values):
    settings = settings_with(tmp_path, keys, **{"OFFSITE_REPOSITORY": "sftp:u@h:/r", **values})
    c = MockContext(run={re.compile(r"docker run .*"): list(results)})
    runner = offsite.Restic.__new__(offsite.Restic)
    runner.c, runner.offsite, runner.image = c, offsite.configured(settings, tmp_path / "b"), "img"
    return runner, c


def test_exit_codes_become_one_clear_error(tmp_path, keys, monkeypatch):
    monkeypatch.setattr(offsite, "CACHE_DIR", tmp_path / "cache")
    runner, _ = restic(tmp_path, keys, Result(exited=12, stderr="Fatal: wrong password"))
    with pytest.raises(StackError, match="wrong password; nothing was changed"):
        runner.open(create=True)
    runner, _ = restic(tmp_path, keys, Result(exited=10))
    with pytest.raises(StackError, match="no off-site repository at sftp:u@h:/r"):
        runner.open()  # a restore or a listing never makes a repository
    runner, c = restic(tmp_path, keys, Result(exited=10), Result())
    runner.open(create=True)  # the first backup does
    assert c.run.call_args_list[-1].args[0].endswith(" init")
    runner, _ = restic(tmp_path, keys, Result(exited=1, stderr="ssh: connect: Connection refused"))
    with pytest.raises(StackError, match="did not answer: ssh: connect: Connection refused"):
        runner.open(create=True)


def test_a_snapshot_name_is_checked_before_anything_runs(tmp_path, keys):
    runner, c = restic(tmp_path, keys)
    for bad in ("../etc", "LATEST", "abc", "deadbeef; rm -rf /"):
        with pytest.raises(StackError, match="is not a snapshot"):
            runner.fetch(bad, tmp_path / "backups")
    assert c.run.call_args_list == [] and not (tmp_path / "backups").exists()


def test_a_snapshot_not_made_by_backup_offsite_is_refused(tmp_path, keys, monkeypatch):
    monkeypatch.setattr(offsite, "CACHE_DIR", tmp_path / "cache")
    other = '[{"id": "ab12cd34ef", "short_id": "ab12cd34", "time": "x", "paths": ["/etc"]}]'
    runner, _ = restic(tmp_path, keys, Result(), Result(other))
    with pytest.raises(StackError, match="not one folder of `invoke backup --offsite`"):
        runner.fetch("ab12cd34", tmp_path / "backups")
    assert not (tmp_path / "backups").exists()


def test_retention_keeps_this_projects_snapshots_by_the_policy(tmp_path, keys):
    runner, c = restic(tmp_path, keys, Result(), OFFSITE_KEEP_MONTHLY="0")
    runner.forget()
    command = c.run.call_args_list[-1].args[0]
    assert command.endswith("forget --prune --tag project=shop --group-by tags "
                            "--keep-daily 7 --keep-weekly 4")  # fmt: skip


def test_the_schedule_runs_backup_offsite_once_the_settings_hold(tmp_path, keys):
    settings = settings_with(tmp_path, keys, OFFSITE_REPOSITORY="")
    plain = schedule.make(settings, at="03:15", keep=7, dest=tmp_path / "b")
    assert "--offsite" not in plain.argv()
    with pytest.raises(StackError, match="no off-site repository"):
        schedule.make(settings, at="03:15", keep=7, dest=tmp_path / "b", offsite=True)
    settings = settings_with(tmp_path, keys, OFFSITE_REPOSITORY="/srv/r")
    plan = schedule.make(settings, at="03:15", keep=7, dest=tmp_path / "b", offsite=True)
    assert plan.argv()[-1] == "--offsite"


def test_the_restic_image_is_named_by_its_recipe_and_built_only_when_missing(
    tmp_path, monkeypatch, builder, dry
):
    (tmp_path / "bootstrap" / "restic").mkdir(parents=True)
    (tmp_path / "bootstrap" / "restic" / "Dockerfile").write_text("FROM x\n")
    monkeypatch.setattr(bootstrap.engine, "image", lambda ref: None)
    c = MockContext(run={re.compile(r".*build.*"): Result()})
    ref = bootstrap.tool_image(c, tmp_path, "restic", base="debian:trixie-slim")
    assert re.fullmatch(r"mediacms-local/restic:[0-9a-f]{12}", ref)
    assert f"--tag {ref}" in c.run.call_args.args[0]
    other = bootstrap.tool_image(dry(MockContext()), tmp_path, "restic", base="other")
    assert other != ref  # another base, another image
    monkeypatch.setattr(bootstrap.engine, "image", lambda ref: object())
    assert bootstrap.tool_image(MockContext(), tmp_path, "restic", base="debian:trixie-slim") == ref


def test_bootstrap_images_builds_the_tool_images_on_the_local_base(monkeypatch, builder, dry):
    """What `invoke backup --offsite` and `up --metrics` of a --local-images deployment run,
    ready before their first use; built again when the base was made again (changed
    recipe, --force); `up`'s own bootstrap (tools off) leaves them alone."""
    base = bootstrap.LOCAL_IMAGES["BASE_IMAGE"]
    ref = bootstrap.tool_image(dry(MockContext()), config.ROOT, "restic", base=base)
    monkeypatch.setattr(bootstrap.engine, "ensure", lambda c: None)
    for imported, present, built in ((False, None, True), (False, object(), False),
                                     (True, object(), True)):  # fmt: skip
        monkeypatch.setattr(bootstrap, "base_image", lambda c, force, imported=imported: imported)
        monkeypatch.setattr(bootstrap.engine, "image", lambda name, present=present: present)
        c = MockContext(run={re.compile(r".*build.*"): Result()}, repeat=True)
        bootstrap.all_images(c, config.ROOT, tools=True)
        commands = [call.args[0] for call in c.run.call_args_list]
        restic = f"/usr/bin/docker build --build-arg BASE_IMAGE={base} --tag {ref} {config.ROOT}"
        assert (f"{restic}/bootstrap/restic" in commands) is built, commands
        assert len(commands) == len(bootstrap.STAND_INS) + built * len(bootstrap.TOOLS)
        c = MockContext(run={re.compile(r".*build.*"): Result()}, repeat=True)
        bootstrap.all_images(c, config.ROOT)
        assert len(c.run.call_args_list) == len(bootstrap.STAND_INS)


def test_backup_offsite_dry_run_prints_the_restic_commands_and_writes_nothing(
    home, tmp_path_factory, capsys
):
    import tasks

    key = tmp_path_factory.mktemp("key") / "password"  # outside the deployment folder
    key.write_text("pw")
    key.chmod(0o600)
    config.update(config.load(home), {"OFFSITE_REPOSITORY": str(home.parent / "repo"),
                                      "OFFSITE_PASSWORD_FILE": str(key)})  # fmt: skip
    tasks.backup.body(MockContext(), dest=str(home / "backups"), offsite=True, dry_run=True)
    said = capsys.readouterr()
    for step in ("cat config", "backup --json --host", "forget --prune --tag project=mediacms"):
        assert step in said.err
    assert not (home / "backups").exists() and not Path(home.parent / "repo").exists()


def test_backups_lists_this_projects_folders_and_snapshots(tmp_path):
    for name, project in (("mediacms-20260101T031500Z", "shop"), ("mediacms-20260102T031500Z",
                                                                  "other")):  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(
            f'{{"project": "{project}", "created_utc": "2026-01-01T03:15:00+00:00", '
            '"mediacms_version": "8.3.2"}'
        )
    listed = offsite.local_table(tmp_path, "shop")
    assert "mediacms-20260101T031500Z" in listed and "2026-01-01 03:15:00" in listed
    assert "mediacms-20260102T031500Z" not in listed  # another project's
    assert "no full backup of nobody" in offsite.local_table(tmp_path, "nobody")
    snap = {"short_id": "ab12cd34", "time": "2026-01-01T03:16:00.1Z",
            "paths": ["/backups/mediacms-20260101T031500Z"],
            "summary": {"total_bytes_processed": 8_448_611, "data_added_packed": 12_316}}  # fmt: skip
    row = offsite.table([snap]).splitlines()[1].split()
    assert row == ["ab12cd34", "2026-01-01", "03:16:00", "mediacms-20260101T031500Z", "8.4",
                   "MB", "12.3", "kB"]  # fmt: skip
    assert "no off-site snapshot" in offsite.table([])


@pytest.mark.parametrize("repository, shown", [
    ("/srv/repo", "/srv/repo"), ("sftp:u@h:/r", "sftp:u@h:/r"), ("sftp:u:pw@h:/r", "sftp:h:/r"),
    ("sftp://u:p@ss@host:2222//srv/r", "sftp://host:2222//srv/r"),
    ("s3:https://KEYID:SECRET@s3.example/bucket/m", "s3:https://s3.example/bucket/m"),
    ("s3:https://s3.example:9000/bucket/m", "s3:https://s3.example:9000/bucket/m"),
])  # fmt: skip
def test_the_repository_is_shown_without_credentials(tmp_path, keys, repository, shown):
    settings = settings_with(tmp_path, keys, OFFSITE_REPOSITORY=repository)
    assert offsite.configured(settings, tmp_path / "b").location == shown


def test_a_snapshot_sent_is_recorded_beside_the_backups_for_status(tmp_path, keys):
    settings = settings_with(tmp_path, keys, OFFSITE_REPOSITORY="sftp://u:s3cret@h:2222//r")
    repository = offsite.configured(settings, tmp_path / "b")
    dest, folder = tmp_path / "b", tmp_path / "b" / "mediacms-20260101T031500Z"
    dest.mkdir()
    offsite.record(dest, repository, folder, {})  # a dry run: restic named no snapshot
    assert list(dest.iterdir()) == []
    offsite.record(dest, repository, folder, {"snapshot_id": "ab12cd34" * 8, "seconds": 1.5})
    [written] = list(dest.iterdir())  # no temporary file left
    assert written == artifacts.offsite_record(dest, "shop")
    assert written.stat().st_mode & 0o777 == 0o600
    said = json.loads(written.read_text())
    assert said == {"project": "shop", "snapshot": "ab12cd34" * 8,
                    "created_utc": said["created_utc"], "repository": "sftp://h:2222//r",
                    "folder": str(folder)}  # fmt: skip
    age = datetime.now(UTC) - datetime.fromisoformat(said["created_utc"])
    assert timedelta(0) <= age < timedelta(minutes=1)
    assert "s3cret" not in written.read_text() and "password-content" not in written.read_text()


def test_a_dry_run_of_the_base_image_prints_debootstrap_and_the_import(monkeypatch, dry, capsys):
    monkeypatch.setattr(bootstrap, "_image_label", lambda name, label: None)  # not there yet
    c = dry(MockContext())  # any command run would fail: a dry run runs none of these
    assert bootstrap.base_image(c, "mediacms-local/debian:test", suite="trixie")
    out = capsys.readouterr()
    assert "debootstrap --variant=minbase trixie" in out.err
    assert "| docker import" in out.err and out.err.rstrip().endswith("mediacms-local/debian:test")
    assert "would be imported" in out.out
