"""Secrets and restores on the host (issue 11), attacked on a real stack of its own.

The stack's .env is written by `invoke init --set` with an admin password that compose
would mangle if it were written naively; the same stack then has its admin password
changed while every process's argv is sampled, is backed up and its modes walked, and
is fed crafted media archives that must be refused without touching the volume.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
import tarfile
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import REPO, Stack, new_deployment, report_failure
from dotenv import dotenv_values

from mediacms_stack.data import artifacts
from mediacms_stack.stack import config, model

pytestmark = pytest.mark.e2e

#: `$` (compose interpolation), ` #` (a comment when unquoted) and `"`.
TRICKY_PASSWORD = 'ab$CDef#1 "x'
MEDIA = model.MEDIA_DIR


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory):
    """A deployment whose .env comes from `invoke init --set ...` on the command line."""
    home = tmp_path_factory.mktemp("host-security")
    first = new_deployment(home, f"mediacms-host-{os.getpid()}")
    example = dotenv_values(REPO / config.EXAMPLE_FILE)
    sets = [f"{key}={value}" for key, value in first.settings.values.items()
            if key not in config.GENERATED and value != (example.get(key) or "")]  # fmt: skip
    sets = [s for s in sets if not s.startswith("ADMIN_PASSWORD=")]
    (home / ".env").unlink()
    first.invoke("init", *(a for s in sets for a in ("--set", s)), "--set",
                 f"ADMIN_PASSWORD={TRICKY_PASSWORD}")  # fmt: skip
    deployment = Stack(home, first.port)
    up = deployment.invoke("up", check=False)
    failed = up.returncode != 0
    try:
        if failed:
            raise AssertionError(f"invoke up failed:\n{up.stdout[-3000:]}\n{up.stderr[-5000:]}")
        yield deployment
    except BaseException:
        failed = True
        raise
    finally:
        if failed:
            report_failure(deployment)
        deployment.dc("down", "--volumes", "--remove-orphans", check=False)


#: Django admin's refusal (AdminAuthenticationForm's invalid_login), on its login page
LOGIN_REFUSED = "Please enter the correct username and password for a staff account."


def admin_login(stack: Stack, password: str) -> bool:
    """True when the admin is let in, False when Django's login page refuses the password;
    anything else (a server error, a page that is neither) fails the test."""
    session = requests.Session()
    page = session.get(stack.url("/admin/login/"), timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    done = session.post(
        stack.url("/admin/login/?next=/admin/"),
        data={"csrfmiddlewaretoken": token, "username": "admin", "password": password},
        headers={"Referer": stack.url("/admin/login/")},
        timeout=10,
    )
    assert done.status_code == 200, (done.status_code, done.text[:500])
    let_in = "Site administration" in done.text
    refused = LOGIN_REFUSED in done.text and done.url.endswith("/admin/login/?next=/admin/")
    assert let_in != refused, done.text[:2000]
    return let_in


# --- 1. the .env writer -----------------------------------------------------------------
def test_init_set_value_reaches_compose_literally_and_the_admin_logs_in(host):
    env = (host.home / ".env").read_text()
    assert stat.S_IMODE((host.home / ".env").stat().st_mode) == 0o600
    assert "ADMIN_PASSWORD='ab$CDef#1 \"x'" in env.splitlines()
    assert config.load(host.home).values["ADMIN_PASSWORD"] == TRICKY_PASSWORD
    interpolation = host.dc("config", "--environment").stdout.splitlines()
    assert f"ADMIN_PASSWORD={TRICKY_PASSWORD}" in interpolation
    # the migrations job reads it from its secret file, written from .env as it is
    merged = json.loads(host.dc("config", "--format", "json").stdout)
    job = merged["services"]["migrations"]["environment"]
    assert (
        "ADMIN_PASSWORD" not in job and job["ADMIN_PASSWORD_FILE"] == "/run/secrets/admin_password"
    )
    assert (host.home / ".secrets" / "admin_password").read_text() == TRICKY_PASSWORD
    assert admin_login(host, TRICKY_PASSWORD)
    assert not admin_login(host, "ab")  # what `$CDef...` used to become


@pytest.mark.parametrize("value", ["one\nSECRET_KEY=evil", "one\rtwo"])
def test_init_set_refuses_a_line_break_and_changes_nothing(host, value):
    before = (host.home / ".env").read_bytes()
    done = host.invoke("init", "--force", "--set", f"ADMIN_PASSWORD={value}", check=False)
    assert done.returncode == 1 and "nothing was written" in done.stderr
    assert (host.home / ".env").read_bytes() == before


# --- 2. no secret in argv or in a printed command ----------------------------------------
class ArgvSampler(threading.Thread):
    """Every distinct /proc/*/cmdline of the host while it runs (bounded in time)."""

    def __init__(self, seconds: float = 180) -> None:
        super().__init__(daemon=True)
        self.seen: set[bytes] = set()
        self.stop = threading.Event()
        self.deadline = time.monotonic() + seconds

    def run(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    with contextlib.suppress(OSError):  # the process ended meanwhile
                        self.seen.add(Path(entry.path, "cmdline").read_bytes())
            time.sleep(0.005)


def test_set_admin_password_never_shows_the_password(host):
    new = "N3w-$ecret 'pw' #" + os.urandom(6).hex()
    sampler = ArgvSampler()
    sampler.start()
    try:
        done = host.invoke("set-admin-password", "--password-stdin", input_=new + "\n")
    finally:
        sampler.stop.set()
        sampler.join()
    assert "password set for admin" in done.stdout
    assert new not in done.stdout + done.stderr
    assert "manage.py shell" in done.stderr  # the command trace is printed, without it
    secret = new.encode()
    assert [cmd for cmd in sampler.seen if secret in cmd] == []
    # the sampler did see the processes that handled it: docker compose and the shell
    assert any(b"compose" in cmd and b"exec" in cmd for cmd in sampler.seen)
    assert any(cmd.startswith(b"python\0manage.py\0shell") for cmd in sampler.seen)
    assert admin_login(host, new)
    assert not admin_login(host, TRICKY_PASSWORD)


# --- 3. backups are private -----------------------------------------------------------
def test_backup_folders_are_700_and_every_file_600(host):
    backups = host.home / "backups"
    backups.mkdir()
    backups.chmod(0o755)  # as an older version left it
    host.invoke("backup")
    host.invoke("backup-db")
    host.invoke("backup-media")
    found = [backups, *backups.rglob("*")]
    names = {p.name for p in found}
    assert {"manifest.json", "custom.tar.gz", "custom.tar.gz.sha256", "env"} <= names
    assert any(n.endswith(".dump.manifest.json") for n in names)
    assert sum(n.endswith(".tar.gz") for n in names) >= 3  # media twice, custom once
    wrong = {str(p.relative_to(host.home)): oct(stat.S_IMODE(p.lstat().st_mode)) for p in found
             if stat.S_IMODE(p.lstat().st_mode) != (0o700 if p.is_dir() else 0o600)}  # fmt: skip
    assert wrong == {}
    assert all(p.is_dir() or p.is_file() for p in found)  # no links, no FIFOs


# --- 4. restores trust nothing in the archive -----------------------------------------
def media_listing(stack: Stack) -> str:
    """Every entry of the media volume: path, type, mode, owner, link target, and the
    sha256 of every file, from a throwaway container."""
    script = (f"cd {MEDIA} && find . -printf '%p %y %m %U %l\\n' | sort && "
              "find . -type f -exec sha256sum {} + | sort")  # fmt: skip
    done = stack.dc("run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", "web", "-c", script)
    return done.stdout


def crafted(path: Path, name: str, kind: bytes, *, mode: int = 0o644, link: str = "") -> Path:
    """A media archive with one plain file and the hostile entry, with its .sha256."""
    with tarfile.open(path, "w:gz") as tar:
        for entry, entry_kind, entry_mode, entry_link, data in (
            ("./original/", tarfile.DIRTYPE, 0o755, "", b""),
            ("./original/fine.txt", tarfile.REGTYPE, 0o644, "", b"fine"),
            (name, kind, mode, link, b"#!/bin/sh\nid\n" if kind == tarfile.REGTYPE else b""),
        ):
            info = tarfile.TarInfo(entry)
            info.type, info.mode, info.linkname = entry_kind, entry_mode, entry_link
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    artifacts.write_checksum(path)
    return path


HOSTILE = {
    "symlink": ("./original/passwd", tarfile.SYMTYPE, 0o777, "/etc/passwd", "symbolic link"),
    "dotdot": ("./original/../../escape.sh", tarfile.REGTYPE, 0o644, "", r"\.\. component"),
    "absolute": ("/tmp/escape.sh", tarfile.REGTYPE, 0o644, "", "absolute path"),
    "hard link": ("./original/shadow", tarfile.LNKTYPE, 0o644, "../../etc/shadow", "hard link"),
    "setuid": ("./original/run.sh", tarfile.REGTYPE, 0o4755, "", "setuid"),
    "fifo": ("./original/pipe", tarfile.FIFOTYPE, 0o644, "", "FIFO"),
}


def test_restore_media_refuses_hostile_archives_and_leaves_the_volume_alone(host, tmp_path):
    host.dc("exec", "-T", "web", "sh", "-c", f"mkdir -p {MEDIA}/original && "
            f"head -c 100000 /dev/urandom > {MEDIA}/original/seed.mp4")  # fmt: skip
    before = media_listing(host)
    assert "./original/seed.mp4 f " in before and before.count("./original/seed.mp4") == 2
    for label, (name, kind, mode, link, why) in HOSTILE.items():
        archive = crafted(tmp_path / f"{label.replace(' ', '-')}.tar.gz", name, kind, mode=mode,
                          link=link)  # fmt: skip
        done = host.invoke("restore-media", str(archive), check=False)
        shown = name.rstrip("/")
        assert done.returncode == 1, (label, done.stdout, done.stderr)
        assert re.search(rf"entry '{re.escape(shown)}' .*{why}", done.stderr), (label, done.stderr)
        assert "media-swap" not in done.stderr  # refused before any container ran
    assert media_listing(host) == before
    # the same path restores a clean archive: the listing would have shown a change
    clean = crafted(tmp_path / "clean.tar.gz", "./original/clean.txt", tarfile.REGTYPE)
    host.invoke("restore-media", str(clean), "--yes")
    after = media_listing(host)
    assert "./original/clean.txt f 644 33" in after and "./original/fine.txt f 644 33" in after
    assert "seed.mp4" not in after  # a restore replaces the media, it does not merge
