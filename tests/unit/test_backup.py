import hashlib
import io
import json
import os
import re
import shlex
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from invoke import Context, MockContext, Result

from mediacms_stack.data import artifacts, backup, database, restore
from mediacms_stack.engines import stackstate
from mediacms_stack.engines.compose import Compose
from mediacms_stack.stack import config, files
from mediacms_stack.stack.errors import StackError

MANIFEST_STDERR = (
    "@manifest\trows\tusers_user\t2\n"
    "@manifest\trows\tfiles_media\t5\n"
    "@manifest\tmigration\tusers.0001_initial\n"
    "@manifest\tmigration\tfiles.0001_initial\n"
)


def bare(root, **values) -> config.Settings:
    """Settings of a deployment folder, its .env holding ``values`` (not written to disk)."""
    return config.Settings(root, values, root / config.ENV_FILE)


@pytest.fixture(autouse=True)
def no_engine(monkeypatch):
    """Unit tests never ask a Docker engine which images the stack runs."""
    monkeypatch.setattr(
        stackstate, "stack_images", lambda c, compose: {"web": ("img:1", "sha256:ab")}
    )


def _tar_gz(*entries: tuple[str, bytes]) -> bytes:
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as tar:
        for name, data in entries:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return packed.getvalue()


class Streams(Context):
    """A context whose commands write where their stdout was redirected: ``payloads`` in
    turn, then a fake dump (or for the media archive an empty .tar.gz); each command is
    kept in ``calls`` as (argv, stdout_to, the keywords c.run was given)."""

    def __init__(self, *payloads: bytes, stderr: str = MANIFEST_STDERR, exited: int = 0):
        super().__init__()
        self.payloads, self.stderr, self.exited = list(payloads), stderr, exited
        self.calls: list[tuple[list[str], str, dict]] = []

    def run(self, command: str, **kwargs) -> Result:
        *argv, redirect, stdout_to = shlex.split(command)
        assert redirect == ">"
        self.calls.append((argv, stdout_to, kwargs))
        if self.exited == 0:
            media = "backup-media" in argv
            with open(stdout_to, "ab") as handle:
                handle.write(self.payloads.pop(0) if self.payloads else
                             _tar_gz() if media else b"PGDMP-fake")  # fmt: skip
        return Result(stderr=self.stderr, exited=self.exited)


def test_snapshot_dump_is_one_exec_in_the_db_container(tmp_path):
    db = database.Database(Compose(tmp_path, project="p"), "u", "d")
    argv = db.snapshot_dump_argv()
    tail = argv[argv.index("exec") :]
    assert tail == ["exec", "-T", "db", "sh", "-c", database.DUMP_SCRIPT, "pg-dump", "u", "d",
                    database.MANIFEST_SQL]  # fmt: skip
    assert (
        "pg_dump --snapshot=" in database.DUMP_SCRIPT and "--format=custom" in database.DUMP_SCRIPT
    )
    assert (
        "REPEATABLE READ" in database.DUMP_SCRIPT and "pg_export_snapshot()" in database.DUMP_SCRIPT
    )
    assert "django_migrations" in database.MANIFEST_SQL and "count(*)" in database.MANIFEST_SQL


def test_replace_loads_the_dump_without_root_or_psql_and_keeps_the_old_schema_until_it_ends(
    tmp_path,
):
    db = database.Database(Compose(tmp_path), "u", "d")
    argv = db.replace_argv()
    assert argv[argv.index("exec") :] == ["exec", "-T", "--user", "postgres", "db", "sh", "-c",
                                          database.RESTORE_SCRIPT, "pg-restore", "u", "d",
                                          "custom"]  # fmt: skip
    assert db.replace_argv("plain")[-1] == "plain"
    script = database.RESTORE_SCRIPT
    custom = next(line for line in script.splitlines() if line.startswith("custom)"))
    assert "pg_restore" in custom and "psql" not in custom  # no psql reads an archive
    assert "--single-transaction" in custom and "-d" in custom.split()
    previous = database.PREVIOUS_SCHEMA
    aside, load, drop = (script.index(f"RENAME TO {previous}"), script.index("case $3"),
                         script.index(f"DROP SCHEMA IF EXISTS {previous}"))  # fmt: skip
    assert aside < load < drop and f"ALTER SCHEMA {previous} RENAME TO public" in script


def test_parse_manifest_lines_splits_counts_migrations_and_messages():
    counts, migrations, other = database.parse_manifest_lines(
        "pg_dump: warning: something\n" + MANIFEST_STDERR
    )
    assert counts == {"users_user": 2, "files_media": 5}
    assert migrations == ["users.0001_initial", "files.0001_initial"]
    assert other == ["pg_dump: warning: something"]


def test_hash_follows_a_real_writer_and_the_file_is_private(tmp_path):
    target = tmp_path / "out.bin"
    writer = "for i in $(seq 1 40); do head -c 30000 /dev/urandom; sleep 0.005; done"
    with artifacts.hashed_while_written(target) as hasher:
        Context().run(f"sh -c '{writer}' > {target}", hide=True, in_stream=False)
    data = target.read_bytes()
    assert len(data) == 1_200_000 and hasher.size == len(data)
    assert artifacts.checksum_of(target, hasher) == hashlib.sha256(data).hexdigest()
    assert target.stat().st_mode & 0o777 == 0o600


def test_checksum_is_computed_again_when_the_hasher_missed_bytes(tmp_path):
    target = tmp_path / "x"
    with artifacts.hashed_while_written(target) as hasher:
        pass
    target.write_bytes(b"written after the hasher stopped")
    assert artifacts.checksum_of(target, hasher) == hashlib.sha256(target.read_bytes()).hexdigest()


def test_backup_db_streams_to_temp_name_then_renames(tmp_path):
    settings = bare(tmp_path, MEDIACMS_VERSION="8.3.2")
    c = Streams()
    dump = backup.backup_db(c, Compose(tmp_path), settings, tmp_path / "b")
    [(argv, target, _)] = c.calls  # one command: counts, migrations and the dump together
    assert target.endswith(".partial") and "pg-dump" in argv
    assert dump.read_bytes() == b"PGDMP-fake" and not list((tmp_path / "b").glob(".*"))
    artifacts.verify_checksum(dump)
    manifest = json.loads((dump.parent / (dump.name + ".manifest.json")).read_text())
    assert manifest["row_counts"] == {"users_user": 2, "files_media": 5}
    assert manifest["migrations"] == ["users.0001_initial", "files.0001_initial"]
    assert manifest["images"] == {"web": "sha256:ab"}
    assert manifest["mediacms_version"] == "8.3.2"


def test_failed_dump_leaves_nothing_and_reports_pg_dump(tmp_path):
    settings = bare(tmp_path)
    c = MockContext(
        run={
            re.compile(r".*pg-dump.*", re.S): Result(
                exited=1, stderr="pg_dump: error: connection refused"
            )
        }
    )
    with pytest.raises(StackError, match="connection refused"):
        backup.backup_db(c, Compose(tmp_path), settings, tmp_path / "b")
    assert list((tmp_path / "b").iterdir()) == []


def test_backup_db_dry_run_prints_the_command_only(tmp_path, capsys, dry):
    settings = bare(tmp_path)
    backup.backup_db(dry(MockContext()), Compose(tmp_path, writes=False), settings, tmp_path / "b")
    err = capsys.readouterr().err
    assert "pg-dump" in err and ".partial" in err
    assert not (tmp_path / "b").exists()  # a dry run writes nothing, not even the folder


def test_backup_media_streams_tar_gz_into_a_checksummed_file(tmp_path):
    payload = _tar_gz(("./original/a.mp4", b"video"), ("./.dot", b""))
    c = Streams(payload)
    archive = backup.backup_media(c, Compose(tmp_path), tmp_path / "m")
    [(argv, target, kwargs)] = c.calls
    assert argv[argv.index("run") :][:10] == ["run", "--rm", "--no-deps", "-T", "--entrypoint",
                                              "sh", "web", "-c", backup.ARCHIVE_SCRIPT,
                                              "backup-media"]  # fmt: skip
    assert "--create" in argv and "--gzip" in argv and "--numeric-owner" in argv
    assert target.endswith(".partial") and not kwargs["hide"]  # tar's progress stays visible
    assert archive.name.endswith(".tar.gz") and archive.read_bytes() == payload
    artifacts.verify_checksum(archive)
    manifest = json.loads(archive.with_name(archive.name + ".manifest.json").read_text())
    assert manifest["files"] == {"original/a.mp4": hashlib.sha256(b"video").hexdigest(),
                                 ".dot": hashlib.sha256(b"").hexdigest()}  # fmt: skip


def _archive(folder: Path) -> subprocess.CompletedProcess:
    """ARCHIVE_SCRIPT itself, run by this machine's sh, GNU find and tar on ``folder``."""
    return subprocess.run(["sh", "-c", backup.ARCHIVE_SCRIPT, "backup-media", str(folder),
                           backup.STAGE_PREFIX, "--create", "--file=-", "."],
                          capture_output=True, check=False)  # fmt: skip


def test_media_archive_refuses_what_a_restore_would_refuse(tmp_path):
    media = tmp_path / "media"
    (media / "original").mkdir(parents=True)
    (media / "original" / "a.mp4").write_bytes(b"video")
    (media / f"{backup.STAGE_PREFIX}x").mkdir()  # a restore's own staging: left out
    (media / f"{backup.STAGE_PREFIX}x" / "l").symlink_to("/etc/passwd")
    done = _archive(media)
    assert done.returncode == 0, done.stderr
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        names = tar.getnames()
    assert "./original/a.mp4" in names and not any(backup.STAGE_PREFIX in n for n in names)

    (media / "original" / "passwd.mp4").symlink_to("/etc/passwd")
    os.link(media / "original" / "a.mp4", media / "twin.mp4")
    os.mkfifo(media / "pipe")
    (media / "setuid").write_bytes(b"x")
    (media / "setuid").chmod(0o4755)
    done = _archive(media)
    assert done.returncode == 65 and done.stdout == b""  # nothing archived
    refused = sorted(line.split(" ")[1] for line in done.stderr.decode().splitlines())
    assert refused == ["./original/a.mp4", "./original/passwd.mp4", "./pipe", "./setuid",
                       "./twin.mp4"], done.stderr  # fmt: skip
    assert "/etc/passwd" in done.stderr.decode()  # a link's target is named


def test_backup_media_refusal_names_each_entry_and_writes_nothing(tmp_path):
    said = "refused: ./original/x.mp4 (l, mode 777, 1 links) /etc/passwd\nrefused: ./p (p, mode 644, 1 links) \n"
    with pytest.raises(
        StackError, match=r"(?s)refused, no file written.*\./original/x\.mp4 .*/etc/passwd.*\./p "
    ):
        backup.backup_media(Streams(stderr=said, exited=65), Compose(tmp_path), tmp_path / "m")
    assert list((tmp_path / "m").iterdir()) == []


def test_backup_media_failure_leaves_nothing(tmp_path):
    with pytest.raises(StackError, match="no file written"):
        backup.backup_media(Streams(exited=2), Compose(tmp_path), tmp_path / "m")
    assert list((tmp_path / "m").iterdir()) == []


def test_restore_db_replaces_schema_between_stop_and_start(tmp_path):
    dump = tmp_path / "x.dump"
    dump.write_bytes(b"PGDMP\x01rest")
    artifacts.write_checksum(dump)
    (tmp_path / "x.dump.manifest.json").write_text(json.dumps({"row_counts": {"users_user": 2}}))
    counts = iter([Result(""), Result("users_user\t2\n")])  # empty, then restored
    c = MockContext(
        run={
            re.compile(r".*psql.*information_schema.*"): counts,
            re.compile(r".* stop .*"): Result(),
            re.compile(r".*pg-restore.*", re.S): Result(),
            re.compile(r".* up .*"): Result(),
        },
        repeat=False,
    )
    restored = restore.restore_db(c, Compose(tmp_path), bare(tmp_path), dump,
                                 safety_dir=tmp_path / "safety")  # fmt: skip
    assert restored == {"users_user": 2}
    commands = [call.args[0] for call in c.run.call_args_list]
    kinds = [next(k for k in ("psql", "stop", "pg-restore", "up") if k in shlex.split(cmd))
             for cmd in commands]  # fmt: skip
    assert kinds == ["psql", "stop", "pg-restore", "psql", "up"]  # counts checked before start
    assert commands[2].endswith(f"< {dump}")
    assert not (tmp_path / "safety").exists()  # no tables yet: nothing to protect


def test_retention_keeps_the_newest_of_this_project_and_never_touches_another(tmp_path):
    for project, day in (("a", 1), ("b", 2), ("a", 3), ("b", 4), ("a", 5), (None, 6)):
        name = f"mediacms-db-2026010{day}T000000Z.dump"
        (tmp_path / name).write_bytes(b"PGDMP")
        (tmp_path / f"{name}.sha256").write_text("x")
        if project:
            artifacts.write_json(tmp_path / f"{name}.manifest.json", {"project": project})
    removed = artifacts.prune(tmp_path, "mediacms-db-*.dump", 2, "a")
    assert [p.name for p in removed] == ["mediacms-db-20260101T000000Z.dump"]
    assert sorted(p.name for p in tmp_path.glob("*.dump")) == [
        f"mediacms-db-2026010{day}T000000Z.dump" for day in (2, 3, 4, 5, 6)
    ]  # b's backups and the one without a manifest are not a's to delete
    assert not list(tmp_path.glob("mediacms-db-20260101T000000Z.dump.*"))


def test_concurrent_backups_get_their_own_temporary_and_final_names(tmp_path):
    first = artifacts.temp_name(tmp_path, "mediacms-db", ".dump")
    assert str(os.getpid()) in first.name and first.name.startswith(".")
    first.write_bytes(b"one")
    second = tmp_path / "other.partial"
    second.write_bytes(b"two")
    a = artifacts.publish(first, tmp_path, "mediacms-db", ".dump")
    b = artifacts.publish(
        second, tmp_path, "mediacms-db", ".dump"
    )  # same second: waits for the next
    assert a != b and a.read_bytes() == b"one" and b.read_bytes() == b"two"
    assert sorted(tmp_path.iterdir()) == sorted([a, b])


def test_check_dump_file_refuses_foreign_and_corrupt(tmp_path):
    foreign = tmp_path / "x.dump"
    foreign.write_text("hello")
    with pytest.raises(StackError, match="not a pg_dump"):
        artifacts.check_dump_file(foreign)
    good = tmp_path / "g.dump"
    good.write_bytes(b"PGDMP\x01\x02")
    with pytest.raises(StackError, match=r"no g\.dump\.sha256"):
        artifacts.check_dump_file(good)
    (tmp_path / "g.dump.sha256").write_text(hashlib.sha256(b"other").hexdigest() + "  g.dump\n")
    with pytest.raises(StackError, match="fails its checksum"):
        artifacts.check_dump_file(good)
    artifacts.write_checksum(good)
    artifacts.check_dump_file(good)


def test_restore_refuses_before_touching_anything(tmp_path):
    bad = tmp_path / "bad.dump"
    bad.write_text("not a dump")
    c = MockContext()  # any command would fail the test
    with pytest.raises(StackError):
        restore.restore_db(c, Compose(tmp_path), bare(tmp_path), bad, yes=True, safety_dir=tmp_path)


# --- backups are private; restores trust nothing in an archive ------------------------
def _tar(path, *entries):
    """A .tar.gz with a .sha256 beside it; entries: (name, type, mode, linkname)."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, kind, mode, link in entries:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname = kind, mode, link
            data = b"data" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    artifacts.write_checksum(path)
    return path


def _plain(*extra):
    import tarfile

    return (("./", tarfile.DIRTYPE, 0o755, ""), ("./original/", tarfile.DIRTYPE, 0o755, ""),
            ("./original/a.mp4", tarfile.REGTYPE, 0o644, ""), *extra)  # fmt: skip


def _bad_entries():
    import tarfile

    return {
        "symlink": (("./original/p", tarfile.SYMTYPE, 0o777, "/etc/passwd"), "symbolic link"),
        "hard link": (("./original/h", tarfile.LNKTYPE, 0o644, "etc/passwd"), "hard link"),
        "dotdot": (("./original/../../escape", tarfile.REGTYPE, 0o644, ""), r"\.\. component"),
        "absolute": (("/etc/cron.d/x", tarfile.REGTYPE, 0o644, ""), "absolute path"),
        "setuid": (("./original/s", tarfile.REGTYPE, 0o4755, ""), "setuid"),
        "setgid dir": (("./original/g/", tarfile.DIRTYPE, 0o2755, ""), "setgid"),
        "sticky": (("./original/t/", tarfile.DIRTYPE, 0o1777, ""), "sticky"),
        "fifo": (("./original/f", tarfile.FIFOTYPE, 0o644, ""), "FIFO"),
        "device": (("./original/d", tarfile.CHRTYPE, 0o644, ""), "character device"),
    }


def test_check_tar_accepts_plain_files_and_folders(tmp_path):
    assert files.check_tar(_tar(tmp_path / "ok.tar.gz", *_plain())) == 3


@pytest.mark.parametrize("kind", sorted(_bad_entries()))
def test_restore_media_refuses_naming_the_entry_before_running_anything(tmp_path, kind):
    entry, why = _bad_entries()[kind]
    archive = _tar(tmp_path / "bad.tar.gz", *_plain(entry))
    c = MockContext()  # any command would fail the test
    with pytest.raises(StackError, match=rf"entry '{re.escape(entry[0].rstrip('/'))}' .*{why}"):
        restore.restore_media(c, Compose(tmp_path), archive)


def test_truncated_archive_is_refused(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", *_plain())
    archive.write_bytes(archive.read_bytes()[:-30])
    artifacts.write_checksum(archive)
    with pytest.raises(StackError, match=r"not a readable \.tar\.gz"):
        restore.restore_media(MockContext(), Compose(tmp_path), archive)


def _media_context(swap=None, held="./original\n"):
    return MockContext(
        run={
            re.compile(r".*entrypoint find .*"): Result(held),
            re.compile(r".* stop .*"): Result(),
            re.compile(r".*media-swap \S+ swap.*", re.S): Result(".mediacms-restore-ab12\n")
            if swap is None
            else swap,
            re.compile(r".*media-swap \S+ (commit|undo) .*", re.S): Result(),
            re.compile(r".* up .*"): Result(),
        },
        repeat=False,
    )


def _kinds(c):
    words = ("find", "stop", "swap", "commit", "undo", "up", "pg-restore")
    kinds = []
    for call in c.run.call_args_list:
        tokens = shlex.split(call.args[0].rsplit(" < ", 1)[0])
        counts = any("information_schema" in t for t in tokens)
        kinds.append("counts" if counts else next(w for w in words if w in tokens))
    return kinds


def test_restore_media_swaps_with_app_services_stopped(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", *_plain())
    c = _media_context()
    restore.restore_media(c, Compose(tmp_path), archive, yes=True)
    assert _kinds(c) == ["find", "stop", "swap", "commit", "up"]
    swap = c.run.call_args_list[2].args[0]
    assert swap.endswith(f"< {archive}")
    assert {"--no-same-owner", "--no-same-permissions", "--no-overwrite-dir"} <= set(
        restore.EXTRACT_FLAGS
    ) and " ".join(restore.EXTRACT_FLAGS) in restore.SWAP_SCRIPT
    assert "--numeric-owner" not in restore.SWAP_SCRIPT


def test_restore_media_needs_yes_over_existing_media(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", *_plain())
    c = _media_context()
    with pytest.raises(StackError, match=r"holds 1 entries; pass --yes"):
        restore.restore_media(c, Compose(tmp_path), archive)
    assert _kinds(c) == ["find"]  # nothing stopped, nothing changed


def test_restore_media_that_fails_restarts_the_services_and_says_nothing_changed(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", *_plain())
    c = _media_context(swap=Result(exited=1, stderr="tar: disk full"))
    with pytest.raises(StackError, match="media volume is as it was"):
        restore.restore_media(c, Compose(tmp_path), archive, yes=True)
    assert _kinds(c) == ["find", "stop", "swap", "up"]


def _swap(volume, mode, *args, archive=None):
    """Run the real swap script with the host's sh, GNU tar, find and mv."""
    import subprocess

    stdin = archive.open("rb") if archive else subprocess.DEVNULL
    done = subprocess.run(["sh", "-c", restore.SWAP_SCRIPT, "media-swap", str(volume), mode, *args],
                          stdin=stdin, capture_output=True, check=False)  # fmt: skip
    return done.returncode, done.stdout.decode().strip()


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _media_volume(tmp_path, count):
    volume = tmp_path / "volume"
    for n in range(count):
        (volume / "original" / f"f{n}.mp4").parent.mkdir(parents=True, exist_ok=True)
        (volume / "original" / f"f{n}.mp4").write_text(f"old {n}")
    (volume / ".hidden").write_text("old dotfile")
    return volume


def test_swap_script_replaces_the_tree_and_keeps_the_old_one_until_commit(tmp_path):
    import tarfile

    volume = _media_volume(tmp_path, 20)
    source = tmp_path / "backup"
    (source / "original").mkdir(parents=True)
    for n in range(13):
        (source / "original" / f"b{n}.mp4").write_text(f"new {n}")
    archive = tmp_path / "m.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=".")
    before = _tree(volume)
    code, stage = _swap(volume, "swap", archive=archive)
    assert code == 0 and stage.startswith(backup.STAGE_PREFIX)
    assert _tree(volume / stage / "old") == before  # the previous media, whole
    assert code == 0 and _swap(volume, "undo", stage)[0] == 0
    assert _tree(volume) == before
    code, stage = _swap(volume, "swap", archive=archive)
    assert _swap(volume, "commit", stage)[0] == 0
    assert _tree(volume) == ["original", *sorted(f"original/b{n}.mp4" for n in range(13))]


def test_swap_script_leaves_the_media_alone_when_the_archive_is_corrupt(tmp_path):
    volume = _media_volume(tmp_path, 3)
    before = _tree(volume)
    archive = _tar(tmp_path / "ok.tar.gz", *_plain())
    archive.write_bytes(archive.read_bytes()[:40])
    code, _ = _swap(volume, "swap", archive=archive)
    assert code != 0 and _tree(volume) == before


def _backup_folder(tmp_path, *custom_entries):
    """A folder as `invoke backup` writes it: dump, media and custom/ archives, manifest."""
    folder = tmp_path / "mediacms-x"
    folder.mkdir()
    dump = folder / "db.dump"
    dump.write_bytes(b"PGDMP\x01")
    artifacts.write_checksum(dump)
    _tar(folder / "media.tar.gz", *_plain())
    _tar(folder / "custom.tar.gz", *custom_entries)
    manifest = {"database": "db.dump", "media": "media.tar.gz", "custom": "custom.tar.gz"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder, manifest


def test_restore_all_undoes_database_and_media_when_custom_fails(tmp_path, monkeypatch):
    folder, _ = _backup_folder(tmp_path, *_plain())
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "mine.css").write_text("kept")
    safety = tmp_path / "pre.dump"
    monkeypatch.setattr(backup, "backup_db", lambda *a, **k: safety)

    def broken(archive, target):
        raise OSError("no space left")

    monkeypatch.setattr(restore, "swap_custom", broken)
    c = MockContext(
        run={
            re.compile(r".*information_schema.*"): Result("users_user\t2\n"),
            re.compile(r".* stop .*"): Result(),
            re.compile(r".*pg-restore.*", re.S): Result(),
            re.compile(r".*media-swap \S+ swap.*", re.S): Result(".mediacms-restore-ab12\n"),
            re.compile(r".*media-swap \S+ undo .*", re.S): Result(),
            re.compile(r".* up .*"): Result(),
        },
        repeat=True,
    )
    with pytest.raises(OSError, match="no space left"):
        restore.restore_all(c, Compose(tmp_path), bare(tmp_path), folder, yes=True,
                           safety_dir=tmp_path / "safety")  # fmt: skip
    kinds = _kinds(c)
    assert kinds == ["counts", "stop", "pg-restore", "counts", "swap", "undo", "pg-restore", "up"]
    assert c.run.call_args_list[6].args[0].endswith(f"< {safety}")  # the safety dump went back
    assert (tmp_path / "custom" / "mine.css").read_text() == "kept"


def test_swap_custom_replaces_and_undo_puts_back(tmp_path):
    target = tmp_path / "custom"
    target.mkdir()
    (target / "old.css").write_text("old")
    archive = _tar(tmp_path / "c.tar.gz", *_plain())
    kept = restore.swap_custom(archive, target)
    assert _tree(target) == ["original", "original/a.mp4"] and _tree(kept) == ["old.css"]
    restore.undo_custom(target, kept)
    assert _tree(target) == ["old.css"] and not kept.exists()


def test_restore_all_checks_every_archive_before_anything_changes(tmp_path):
    import tarfile

    folder, manifest = _backup_folder(tmp_path, ("./", tarfile.DIRTYPE, 0o755, ""),
                                      ("./local_settings.py", tarfile.SYMTYPE, 0o777, "/etc/shadow"))  # fmt: skip
    settings = bare(tmp_path)
    with pytest.raises(StackError, match=r"local_settings\.py' is a symbolic link"):
        restore.restore_all(MockContext(), Compose(tmp_path), settings, folder, yes=True,
                           safety_dir=tmp_path / "safety")  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps({**manifest, "media": "../../etc/x"}))
    with pytest.raises(StackError, match="not a file of the folder"):
        restore.restore_all(MockContext(), Compose(tmp_path), settings, folder, yes=True,
                           safety_dir=tmp_path / "safety")  # fmt: skip


def test_full_backup_folder_is_700_and_every_file_600(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIACMS_HOME", str(tmp_path))
    monkeypatch.setattr("os.umask", lambda mask: 0)  # not used by us; the modes are explicit
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "local_settings.py").write_text("X = 1\n")
    env = tmp_path / ".env"
    env.write_text("SECRET_KEY=k\n")
    env.chmod(0o644)
    (tmp_path / "backups").mkdir(mode=0o755)
    (tmp_path / "backups").chmod(0o755)  # made by an older version
    settings = config.Settings(tmp_path, {}, env)
    c = Streams(b"PGDMP-fake", _tar_gz())
    folder = backup.backup_all(c, Compose(tmp_path), settings, tmp_path / "backups")
    assert len(c.calls) == 2
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [tmp_path / "backups", *(tmp_path / "backups").rglob("*")]}  # fmt: skip
    names = {name.rsplit("/", 1)[-1] for name in modes}
    assert {"custom.tar.gz", "custom.tar.gz.sha256", "env", "manifest.json"} <= names
    assert any(n.endswith(".dump.manifest.json") for n in names)
    assert {name: mode for name, mode in modes.items()
            if mode != (0o700 if (tmp_path / name).is_dir() else 0o600)} == {}  # fmt: skip
    assert files.check_tar(folder / "custom.tar.gz") == 2


def test_custom_with_a_symlink_is_refused_at_backup_time(tmp_path):
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "logo.png").symlink_to("/etc/passwd")
    with pytest.raises(StackError, match=r"custom/logo\.png is a symbolic link"):
        backup.backup_all(Streams(), Compose(tmp_path), bare(tmp_path),
                          tmp_path / "backups")  # fmt: skip
