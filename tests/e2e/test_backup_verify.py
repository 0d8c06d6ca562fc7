"""backup-verify: a backup restored into a throwaway stack and checked, the live one untouched.

One live stack for the module. Its backup passes (row counts, media checksums, home
page, admin login) and nothing of the live stack changes: same containers, started at
the same time, same rows and media. A backup with a row fewer than its manifest
records, or with a media file changed (archive and .sha256 rewritten to match), fails
with a message naming it and exit 1. Bad input and a name collision change nothing;
Ctrl-C removes the throwaway stack too. Every run leaves no container, volume or
network of the throwaway project behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from conftest import REPO, Stack, new_deployment, running

from mediacms_stack.data.database import COUNT_ROWS_SQL

pytestmark = pytest.mark.e2e

MEDIA = "/home/mediacms.io/mediacms/media_files"
PROBE = "original/verify-probe.txt"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    home = tmp_path_factory.mktemp("verify")
    deployment = new_deployment(home, f"mediacms-verify-{os.getpid()}")
    try:
        with running(deployment, request):
            deployment.dc("exec", "-T", "web", "sh", "-c",
                          f"mkdir -p {MEDIA}/original && echo probe > {MEDIA}/{PROBE}")  # fmt: skip
            yield deployment
    finally:
        subprocess.run(["docker", "compose", "-p", throwaway(deployment), "down", "--volumes"],
                       capture_output=True, check=False)  # fmt: skip


def throwaway(stack: Stack) -> str:
    return f"{stack.compose.project}-verify"


def resources(project: str) -> list[str]:
    """Every container, volume and network of ``project`` the engine holds."""
    found = []
    for kind in ("container", "volume", "network"):
        argv = ["docker", kind, "ls", "--quiet", "--filter",
                f"label=com.docker.compose.project={project}"]  # fmt: skip
        if kind == "container":
            argv.insert(3, "--all")
        found += subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    return found


def fingerprint(stack: Stack) -> dict:
    """The live stack: its containers (id, start time, restarts), rows, media."""
    ids = stack.dc("ps", "--all", "--quiet").stdout.split()
    inspect = subprocess.run(["docker", "inspect", "--format",
                              "{{.Id}} {{.State.StartedAt}} {{.RestartCount}}", *ids],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    user = stack.settings.get("POSTGRES_USER", "mediacms")
    rows = stack.dc("exec", "-T", "db", "psql", "-U", user, "-d", "mediacms", "-At",
                    "-c", COUNT_ROWS_SQL).stdout  # fmt: skip
    media = stack.dc("exec", "-T", "web", "sh", "-c",
                     f"cd {MEDIA} && find . -type f -exec sha256sum {{}} + | sort").stdout  # fmt: skip
    return {"containers": sorted(inspect.splitlines()), "rows": rows, "media": media}


@pytest.fixture(scope="module")
def verified(site: Stack) -> tuple[Path, dict, subprocess.CompletedProcess, float]:
    """The live site backed up, then that backup verified: its folder, the live stack's
    fingerprint from before, the verify's run, its wall time."""
    site.invoke("backup")
    before = fingerprint(site)
    started = time.monotonic()
    done = site.invoke("backup-verify", check=False)
    seconds = time.monotonic() - started
    print(f"\n[measured] backup-verify on the stand-in: {seconds:.1f} s (wall)")
    [folder] = (site.home / "backups").glob("mediacms-2*")
    return folder, before, done, seconds


def test_a_good_backup_passes_and_the_live_stack_is_untouched(site, verified):
    folder, before, done, _ = verified
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASSED" in done.stdout, done.stdout
    result = json.loads((folder / "verified.json").read_text())
    assert result["outcome"] == "passed" and result["stack"] == throwaway(site)
    assert {name for name, check in result["checks"].items() if check["ok"]} == {
        "database", "media", "site", "admin"}  # fmt: skip
    [dump] = folder.glob("mediacms-db-*.dump")
    recorded = json.loads(dump.with_name(dump.name + ".manifest.json").read_text())["row_counts"]
    assert result["rows"] == sum(recorded.values()) and result["tables"] == len(recorded)
    [media] = folder.glob("mediacms-media-*.tar.gz")
    files = json.loads(media.with_name(media.name + ".manifest.json").read_text())["files"]
    assert files[PROBE] == hashlib.sha256(b"probe\n").hexdigest()
    assert result["media_files"] == len(files)
    assert oct((folder / "verified.json").stat().st_mode & 0o777) == "0o600"
    assert resources(throwaway(site)) == []
    assert fingerprint(site) == before


def test_status_shows_the_verification(site, verified):
    folder = verified[0]
    done = site.invoke("status", "--json", check=False)
    full = json.loads(done.stdout)["backups"]["full"]
    assert full["path"] == str(folder) and full["verified"]["outcome"] == "passed"
    assert 0 <= full["verified"]["age_seconds"] < 3600
    text = site.invoke("status", check=False).stdout
    assert "; verified " in text and "ago: passed" in text, text


def copy_backup(folder: Path, into: Path) -> Path:
    copy = into / folder.name
    shutil.copytree(folder, copy)
    return copy


def rewrite_sha256(path: Path) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


def test_a_dump_with_a_row_fewer_than_recorded_fails(site, verified, tmp_path):
    tampered = copy_backup(verified[0], tmp_path)
    [dump] = tampered.glob("mediacms-db-*.dump")
    side = dump.with_name(dump.name + ".manifest.json")
    manifest = json.loads(side.read_text())
    users = manifest["row_counts"]["users_user"]
    manifest["row_counts"]["users_user"] = users + 1  # the dump holds one row fewer
    side.write_text(json.dumps(manifest))
    before = fingerprint(site)
    done = site.invoke("backup-verify", "--folder", str(tampered), check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED its verification" in done.stderr
    assert f"users_user {users + 1} in the manifest, {users} restored" in done.stderr
    result = json.loads((tampered / "verified.json").read_text())
    assert result["outcome"] == "failed" and not result["checks"]["restore"]["ok"]
    assert resources(throwaway(site)) == [] and fingerprint(site) == before


def test_a_changed_media_file_fails_and_status_says_so(site, verified):
    folder = verified[0]
    tampered = folder.with_name("mediacms-29991231T000000Z")  # the newest: status reads it
    shutil.copytree(folder, tampered)
    try:
        [archive] = tampered.glob("mediacms-media-*.tar.gz")
        packed = io.BytesIO()
        with tarfile.open(archive) as old, tarfile.open(fileobj=packed, mode="w:gz") as new:
            for member in old.getmembers():
                data = old.extractfile(member).read() if member.isreg() else None
                if member.name.endswith(PROBE):
                    data, member.size = b"changed\n", len(b"changed\n")
                new.addfile(member, io.BytesIO(data) if data is not None else None)
        archive.write_bytes(packed.getvalue())
        rewrite_sha256(archive)  # the archive is whole: only its content differs
        done = site.invoke("backup-verify", "--folder", str(tampered), check=False)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"1 file(s) with another checksum: {PROBE}" in done.stderr, done.stderr
        result = json.loads((tampered / "verified.json").read_text())
        assert result["checks"]["media"]["ok"] is False
        assert result["checks"]["site"]["ok"] and result["checks"]["admin"]["ok"]
        assert resources(throwaway(site)) == []
        status = json.loads(site.invoke("status", "--json", check=False).stdout)
        assert status["backups"]["full"]["verified"]["outcome"] == "failed"
        assert any("failed its verification: media" in p for p in status["problems"])
    finally:
        shutil.rmtree(tampered)


def test_bad_input_is_refused_and_changes_nothing(site, verified, tmp_path):
    before = fingerprint(site)
    missing = site.invoke("backup-verify", "--folder", str(tmp_path / "nowhere"), check=False)
    assert missing.returncode == 1 and "is not a folder" in missing.stderr
    (tmp_path / "notes.txt").write_text("not a backup")
    foreign = site.invoke("backup-verify", "--folder", str(tmp_path), check=False)
    assert foreign.returncode == 1 and "not a backup made by `invoke backup`" in foreign.stderr
    collide = site.invoke("backup-verify", "--project", site.compose.project, check=False)
    assert collide.returncode == 1, collide.stdout
    assert f"already has a stack named {site.compose.project}" in collide.stderr
    bad_name = site.invoke("backup-verify", "--project", "Bad Name", check=False)
    assert bad_name.returncode == 1 and "compose project name" in bad_name.stderr
    for done in (missing, foreign, collide, bad_name):
        assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "notes.txt"]
    assert json.loads((verified[0] / "verified.json").read_text())["outcome"] == "passed"
    assert resources(throwaway(site)) == [] and fingerprint(site) == before


def test_ctrl_c_removes_the_throwaway_stack(site, verified):
    recorded = (verified[0] / "verified.json").read_text()
    run = subprocess.Popen([sys.executable, "-m", "invoke", "--search-root", str(REPO),
                            "backup-verify", "--folder", str(verified[0])], env=site.env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not resources(throwaway(site)):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.5)
        os.killpg(run.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, out + err
    assert "stopped by SIGINT" in err and "removed with its volumes" in err, err
    assert resources(throwaway(site)) == []
    assert (verified[0] / "verified.json").read_text() == recorded
