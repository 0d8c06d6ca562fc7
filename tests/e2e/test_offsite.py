"""Off-site backups: restic to a real SFTP server and to a local repository.

The SFTP server (tests/e2e/sftp: OpenSSH from Debian's archive) is a container of this
test on a network of its own, published on 127.0.0.1, with key-based login only; the
test's known_hosts holds its host key. One stack for the module, holding one media item
of 8 MB of random bytes (made without post_save, so no task changes it between two
backups), which gives the media archive something to deduplicate. What a test changes
in .env it puts back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from conftest import Stack, new_deployment, report_failure
from invoke import Context

from mediacms_stack.engines import engine
from mediacms_stack.images import bootstrap
from mediacms_stack.stack import config
from tests.fresh import require_built_from_this_commit

pytestmark = pytest.mark.e2e

IMAGE = "mediacms-local/sftp:test"
MEDIA = "/home/mediacms.io/mediacms/media_files"
REPO_PATH = "/srv/offsite/repo"
SNAPSHOT_LINE = re.compile(r"\[backup\] snapshot (\w+) of (\S+): (\d+) bytes read, (\d+) bytes "
                           r"added \(deduplicated, compressed\) in ([\d.]+) s")  # fmt: skip


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check,
                          timeout=timeout)  # fmt: skip


def private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


class Site:
    """The stack, the SFTP server and the files .env points at."""

    def __init__(self, stack: Stack, server: str, keys: Path, port: int) -> None:
        self.stack, self.server, self.keys, self.port = stack, server, keys, port
        self.sftp = f"sftp://offsite@127.0.0.1:{port}/{REPO_PATH}"
        self.backups = stack.home / "backups"
        self.measured: dict[str, dict] = {}

    def env(self, **changes: str) -> None:
        config.update(config.load(self.stack.home), changes)

    def backup(self) -> tuple[subprocess.CompletedProcess, float]:
        started = time.monotonic()
        done = self.stack.invoke("backup", "--offsite", check=False)
        return done, time.monotonic() - started

    def refused(self, *args: str) -> str:
        """An invoke task that must fail with one error line; returns that line."""
        done = self.stack.invoke(*args, check=False)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 1 and len(errors) == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        return errors[0]

    def data(self) -> tuple[list[dict], list[str], list[str]]:
        """Media rows, files of the media volume (with checksums) and backup folders."""
        media = requests.get(self.stack.url("/api/v1/media"), timeout=30).json()["results"]
        script = f"cd {MEDIA} && find . -type f -exec sha256sum {{}} + | sort"
        files = self.stack.dc("exec", "-T", "web", "sh", "-c", script).stdout.splitlines()
        folders = sorted(p.name for p in self.backups.glob("*")) if self.backups.is_dir() else []
        return media, files, folders


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    builder = engine.builder(Context())
    subprocess.run(builder.command("--tag", IMAGE, "--build-arg",
                                   f"BASE_IMAGE={bootstrap.LOCAL_IMAGES['BASE_IMAGE']}",
                                   str(config.ROOT / "tests" / "e2e" / "sftp")),
                   env={**os.environ, **dict(builder.env)}, check=True, capture_output=True,
                   timeout=600)  # fmt: skip
    keys = tmp_path_factory.mktemp("offsite-keys")  # outside the deployment folder
    keys.chmod(0o700)
    docker("run", "--rm", "--user", f"{os.getuid()}:{os.getgid()}", "-v", f"{keys}:/k",
           "--entrypoint", "ssh-keygen", IMAGE, "-q", "-t", "ed25519", "-N", "", "-C",
           "offsite-test", "-f", "/k/client_key")  # fmt: skip
    (keys / "client_key.pub").chmod(0o644)
    private(keys / "password", "offsite-Test-password-1\n")
    project = f"mediacms-offsite-{os.getpid()}"
    server = f"{project}-sftp"
    docker("network", "create", server)
    stack = None
    try:
        docker("run", "--detach", "--name", server, "--network", server,
               "--publish", "127.0.0.1::2222", "--cap-drop", "ALL", "--memory", "128m",
               "--security-opt", "no-new-privileges:true",
               "-v", f"{keys / 'client_key.pub'}:/keys/authorized_keys:ro", IMAGE)  # fmt: skip
        deadline = time.monotonic() + 30
        while "Server listening" not in docker("logs", server).stderr:
            assert time.monotonic() < deadline, docker("logs", server).stderr
            time.sleep(0.5)
        port = int(docker("port", server, "2222").stdout.split(":")[-1])
        host_key = docker("exec", server, "cat", "/tmp/host_key.pub").stdout.strip()
        (keys / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
        home = tmp_path_factory.mktemp("offsite")
        stack = new_deployment(home, project, OFFSITE_PASSWORD_FILE=str(keys / "password"),
                               OFFSITE_SSH_KEY=str(keys / "client_key"),
                               OFFSITE_SSH_KNOWN_HOSTS=str(keys / "known_hosts"))  # fmt: skip
        require_built_from_this_commit(stack.settings.version)
        site = Site(stack, server, keys, port)
        site.env(OFFSITE_REPOSITORY=site.sftp)
        up = stack.invoke("up", check=False)
        assert up.returncode == 0, f"invoke up failed:\n{up.stdout[-3000:]}\n{up.stderr[-5000:]}"
        yield site
    finally:
        if stack is not None and request.session.testsfailed:
            report_failure(stack)
            print(docker("logs", server, check=False).stderr[-3000:])
        docker("rm", "--force", server, check=False)
        docker("network", "rm", server, check=False)
        if stack is not None:
            stack.dc("down", "--volumes", "--remove-orphans", check=False)


#: A media item whose file is already in the volume; bulk_create sends no post_save, so
#: no encoding or thumbnail task is queued for it.
MAKE_MEDIA = """
import uuid
from files.models import Media
from users.models import User
Media.objects.bulk_create([Media(uid=uuid.UUID("{uid}"), title="kept off-site",
    user=User.objects.get(username="admin"), media_file="{path}", encoding_status="success")])
"""


@pytest.fixture(scope="module")
def noise(site: Site) -> bytes:
    """8 MB of random bytes, a public media item's original file."""
    body, uid = os.urandom(8 << 20), uuid.uuid4().hex
    path = f"original/user/admin/{uid}.noise.mp4"
    site.stack.dc("exec", "-T", "web", "sh", "-c",
                  f"cd {MEDIA} && mkdir -p original/user/admin && cat > {path}",
                  input=body, text=False)  # fmt: skip
    site.stack.dc("exec", "-T", "web", "python", "manage.py", "shell", "-c",
                  MAKE_MEDIA.format(uid=uid, path=path))  # fmt: skip
    return body


def test_a_second_unchanged_backup_adds_almost_nothing(site, noise):
    first, first_seconds = site.backup()
    assert first.returncode == 0, first.stderr
    assert "made the repository" in first.stdout  # initialised on first use
    second, second_seconds = site.backup()
    assert second.returncode == 0, second.stderr
    snaps = [SNAPSHOT_LINE.search(done.stdout) for done in (first, second)]
    assert all(snaps), first.stdout + second.stdout
    (_, _, read1, added1, restic1), (_, _, read2, added2, restic2) = (s.groups() for s in snaps)
    site.measured = {"first": {"read": int(read1), "added": int(added1), "restic_s": restic1,
                               "invoke_s": round(first_seconds, 1)},
                     "second": {"read": int(read2), "added": int(added2), "restic_s": restic2,
                                "invoke_s": round(second_seconds, 1)}}  # fmt: skip
    print(f"\n[measured] off-site over SFTP: {site.measured}")
    assert int(read2) > 8 << 20 and int(added1) > 8 << 20  # the noise is incompressible
    assert int(added2) < int(added1) / 10, site.measured
    listed = site.stack.invoke("backups", "--offsite").stdout
    assert len(re.findall(r"^[0-9a-f]{8} ", listed, re.M)) == 2, listed
    last = json.loads(site.stack.invoke("status", "--json", check=False).stdout)["backups"]
    assert last["offsite"]["snapshot"].startswith(snaps[1].group(1)), last
    assert last["offsite"]["repository"] == site.sftp, last
    # what the server holds is encrypted: the deployment's SECRET_KEY (in each backup's
    # env file) appears nowhere in the repository
    secret = config.load(site.stack.home).require("SECRET_KEY")
    found = docker("exec", site.server, "grep", "-rlF", "-e", secret, REPO_PATH, check=False)
    assert found.returncode == 1 and not found.stdout, found


def test_restore_from_offsite_brings_back_what_was_deleted(site, noise):
    media, files, _ = site.data()
    assert [m["title"] for m in media] == ["kept off-site"]
    site.stack.dc("exec", "-T", "web", "python", "manage.py", "shell", "-c",
                  "from files.models import Media; Media.objects.all().delete()")  # fmt: skip
    site.stack.dc("exec", "-T", "web", "sh", "-c", f"rm -rf {MEDIA}/original")
    subprocess.run(["rm", "-rf", str(site.backups)], check=True)  # the off-site copy only
    assert site.data()[0] == []
    done = site.stack.invoke("restore", "--from-offsite", "latest", "--yes")
    assert "[restore] snapshot" in done.stdout and "restored (the saved .env" in done.stdout
    restored_media, restored_files, folders = site.data()
    assert [m["title"] for m in restored_media] == ["kept off-site"]
    assert restored_files == files
    original = requests.get(site.stack.url(restored_media[0]["original_url"]), timeout=30)
    assert hashlib.sha256(original.content).digest() == hashlib.sha256(noise).digest()
    fetched = [name for name in folders if name.startswith("mediacms-2")]
    assert len(fetched) == 1 and (site.backups / fetched[0] / "manifest.json").is_file(), folders


def test_backup_verify_proves_an_offsite_snapshot(site, noise):
    """`backup-verify --snapshot`: the off-site copy itself restored into a throwaway stack
    and checked; what was fetched stays beside the local backups with its result."""
    both = site.refused("backup-verify", "--snapshot", "latest", "--folder", str(site.backups))
    assert "not both" in both, both
    assert "is not a snapshot" in site.refused("backup-verify", "--snapshot", "zz")
    before = set(site.data()[2])
    done = site.stack.invoke("backup-verify", "--snapshot", "latest", check=False)
    assert done.returncode == 0 and "PASSED" in done.stdout, done.stdout + done.stderr
    assert "[backup-verify] snapshot" in done.stdout, done.stdout
    [fetched] = set(site.data()[2]) - before
    result = json.loads((site.backups / fetched / "verified.json").read_text())
    assert result["outcome"] == "passed", result
    assert all(check["ok"] for check in result["checks"].values()) and result["media_files"] > 0


def test_a_local_repository_backs_up_lists_restores_by_id_and_prunes(site, noise, tmp_path):
    repository = tmp_path / "disk" / "repo"
    (tmp_path / "disk").mkdir()
    site.env(OFFSITE_REPOSITORY=str(repository))
    try:
        done = site.stack.invoke("backup", "--offsite")
        assert "made the repository" in done.stdout
        snapshot = SNAPSHOT_LINE.search(done.stdout).group(1)
        assert (repository / "config").is_file() and (repository.stat().st_mode & 0o077) == 0
        listed = site.stack.invoke("backups", "--offsite").stdout
        assert re.search(rf"^{snapshot} ", listed, re.M), listed
        before = site.data()[:2]
        site.stack.invoke("restore", "--from-offsite", snapshot, "--yes")
        assert site.data()[:2] == before
        # retention: one a day kept, so the next backup's snapshot replaces this one
        site.env(OFFSITE_KEEP_DAILY="1", OFFSITE_KEEP_WEEKLY="0", OFFSITE_KEEP_MONTHLY="0")
        newer = SNAPSHOT_LINE.search(site.stack.invoke("backup", "--offsite").stdout).group(1)
        listed = site.stack.invoke("backups", "--offsite").stdout
        assert re.findall(r"^[0-9a-f]{8}(?= )", listed, re.M) == [newer], listed
    finally:
        site.env(OFFSITE_REPOSITORY=site.sftp, OFFSITE_KEEP_DAILY="7", OFFSITE_KEEP_WEEKLY="4",
                 OFFSITE_KEEP_MONTHLY="6")  # fmt: skip


def test_bad_input_is_one_error_and_changes_nothing(site, noise, tmp_path):
    before = site.data()
    wrong = private(tmp_path / "wrong", "not-the-password\n")
    site.env(OFFSITE_PASSWORD_FILE=str(wrong))
    try:
        for args in (("backup", "--offsite"), ("restore", "--from-offsite", "latest", "--yes"),
                     ("backups", "--offsite")):  # fmt: skip
            assert "wrong password" in site.refused(*args)
    finally:
        site.env(OFFSITE_PASSWORD_FILE=str(site.keys / "password"))
    assert "no snapshot deadbeef" in site.refused("restore", "--from-offsite", "deadbeef", "--yes")
    assert "is not a snapshot" in site.refused("restore", "--from-offsite", "../etc", "--yes")

    site.env(OFFSITE_REPOSITORY=f"sftp://offsite@127.0.0.1:{site.port}//srv/offsite/elsewhere")
    try:
        assert "no off-site repository at" in site.refused("restore", "--from-offsite", "latest")
    finally:
        site.env(OFFSITE_REPOSITORY=site.sftp)

    impostor = site.keys / "impostor_hosts"  # a host key that is not the server's
    keygen = "ssh-keygen -q -t ed25519 -N '' -f /tmp/k && cat /tmp/k.pub"
    other = docker("run", "--rm", "--entrypoint", "sh", IMAGE, "-c", keygen).stdout.strip()
    impostor.write_text(f"[127.0.0.1]:{site.port} {other}\n")
    saved = config.load(site.stack.home)
    for changes, said in (
        ({"OFFSITE_SSH_KNOWN_HOSTS": str(impostor)}, "did not answer"),
        ({"OFFSITE_PASSWORD_FILE": str(site.stack.home / "custom" / "key")}, "inside"),
        ({"OFFSITE_REPOSITORY": "rest:http://127.0.0.1:1/"}, "expected an absolute path"),
        ({"OFFSITE_KEEP_DAILY": "0", "OFFSITE_KEEP_WEEKLY": "0", "OFFSITE_KEEP_MONTHLY": "0"},
         "at least one"),
    ):  # fmt: skip
        private(site.stack.home / "custom" / "key", "offsite-Test-password-1\n")
        site.env(**changes)
        try:
            assert said in site.refused("backup", "--offsite")
        finally:
            site.env(**{key: saved.values.get(key, "") for key in changes})
    (site.stack.home / "custom" / "key").unlink()
    (site.keys / "password").chmod(0o644)
    try:
        assert "readable by others" in site.refused("backup", "--offsite")
    finally:
        (site.keys / "password").chmod(0o600)
    docker("stop", site.server)  # unreachable (the module's last use of the server)
    assert "did not answer" in site.refused("backup", "--offsite")
    assert site.data() == before
