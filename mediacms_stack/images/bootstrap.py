"""Produce every third-party image the stack needs from Debian's package archive alone.

For sites (and CI machines) that reach no container registry: a Debian trixie base made
with ``debootstrap`` and ``docker import``, then stand-ins for the official PostgreSQL,
Redis and Node images built on that base from ``bootstrap/*/Dockerfile``. Which images
a stack uses is a ``.env`` switch (:data:`LOCAL_IMAGES`, or .env.example's official ones).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from invoke.context import Context

from ..engines import engine
from ..engines.shell import dry, run, say
from ..stack.errors import StackError

SUITE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

#: .env keys and the images that stand in for the official ones, built here.
LOCAL_IMAGES: dict[str, str] = {
    "BASE_IMAGE": "mediacms-local/debian:trixie",
    "POSTGRES_IMAGE": "mediacms-local/postgres:17",
    "REDIS_IMAGE": "mediacms-local/redis:8",
    "NODE_IMAGE": "mediacms-local/node:20",
}
#: Stand-in images: .env key -> folder under bootstrap/ holding its Dockerfile.
STAND_INS = {"POSTGRES_IMAGE": "postgres", "REDIS_IMAGE": "redis", "NODE_IMAGE": "node"}

# What a slim image leaves out; applied to the rootfs and kept for later apt installs.
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
"""
APT_NO_CACHE = """\
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Binary::apt::APT::Keep-Downloaded-Packages "false";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""
SOURCES = """\
Types: deb
URIs: {mirror}
Suites: {suite} {suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {security}
Suites: {suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
RECIPE_LABEL = "org.mediacms-stack.bootstrap-recipe"


def _recipe(mirror: str, suite: str = SUITE) -> str:
    text = "\n".join([suite, mirror, DPKG_EXCLUDES, APT_NO_CACHE, SOURCES])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _image_label(name: str, label: str) -> str | None:
    found = engine.image(name)
    return None if found is None else (found.labels or {}).get(label, "")


def slim_rootfs(root: Path, mirror: str, suite: str = SUITE) -> None:
    """Strip docs, man pages, locales, apt caches and setuid/setgid bits, and keep the
    docs, man pages and locales out of later installs."""
    for package_docs in (root / "usr/share/doc").glob("*"):
        for item in package_docs.glob("*"):
            if item.name != "copyright":
                _remove(item)
    for folder in ("usr/share/man", "usr/share/info", "usr/share/locale"):
        for item in (root / folder).glob("*"):
            if item.name != "locale.alias":
                _remove(item)
    for cache in ("var/cache/apt", "var/lib/apt/lists", "var/log"):
        for child in (root / cache).glob("*"):
            _remove(child)
    for path in root.rglob("*"):  # no setuid/setgid programs (su, mount, passwd, ...)
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
            path.chmod(stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
    (root / "etc/dpkg/dpkg.cfg.d/slim").write_text(DPKG_EXCLUDES)
    (root / "etc/apt/apt.conf.d/90slim").write_text(APT_NO_CACHE)
    security = (
        mirror.replace("/debian", "/debian-security")
        if mirror.endswith("/debian")
        else ("http://deb.debian.org/debian-security")
    )
    (root / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(
        SOURCES.format(mirror=mirror, security=security, suite=suite)
    )
    sources_list = root / "etc/apt/sources.list"
    if sources_list.exists():
        sources_list.unlink()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def base_image(
    c: Context, name: str = LOCAL_IMAGES["BASE_IMAGE"], *, suite: str = SUITE, force: bool = False
) -> bool:
    """debootstrap a minimal Debian ``suite`` and ``docker import`` it, unless up to date;
    True when it did (an image built on the old one is then out of date)."""
    mirror = os.environ.get("DEBIAN_MIRROR", DEFAULT_MIRROR)
    recipe = _recipe(mirror, suite)
    if not force and _image_label(name, RECIPE_LABEL) == recipe:
        say(f"{name} is up to date (recipe {recipe})")
        return False
    if not shutil.which("debootstrap"):
        if os.geteuid() != 0:
            raise StackError("debootstrap is missing: apt-get install debootstrap (as root)")
        run(c, ["apt-get", "update", "-qq"])
        run(c, ["apt-get", "install", "-y", "-qq", "debootstrap"])
    with tempfile.TemporaryDirectory(prefix="mediacms-rootfs-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        argv = ["debootstrap", "--variant=minbase", suite, str(root), mirror]
        done = run(c, argv, hide=True, warn=True)
        if done is not None and not done.ok:
            raise StackError(f"debootstrap failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        changes = [
            f"LABEL {RECIPE_LABEL}={recipe}",
            f"LABEL org.opencontainers.image.title=debian-{suite}-minbase",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            'CMD ["bash"]',
        ]
        importer = ["docker", "import", *(a for ch in changes for a in ("--change", ch)), "-", name]
        if done is not None:  # not in a dry run: the root filesystem is there
            slim_rootfs(root, mirror, suite)
        imported = run(c, importer, pipe_from=["tar", "-C", str(root), "-c", "."], hide=True,
                       warn=True)  # fmt: skip
        if imported is not None and not imported.ok:
            raise StackError(f"docker import of {name} failed: {imported.stderr[-2000:]}")
    say(f"imported {name}" if not dry(c) else f"{name} would be imported")
    return True


def stand_ins(c: Context, root: Path, *, base: str = LOCAL_IMAGES["BASE_IMAGE"]) -> None:
    """Build the PostgreSQL, Redis and Node stand-ins on the bootstrapped base."""
    builder = engine.builder(c)
    for key, folder in STAND_INS.items():
        argv = builder.command(
            "--build-arg", f"BASE_IMAGE={base}",
            "--tag", LOCAL_IMAGES[key],
            str(root / "bootstrap" / folder),
        )  # fmt: skip
        run(c, argv, env=dict(builder.env))


def all_images(c: Context, root: Path, *, force: bool = False, tools: bool = False) -> None:
    """The base and the stand-ins; ``tools``: the tool images too (`bootstrap-images`), so
    a host prepared with them needs Debian's archive no more, not even at its first
    off-site backup or metrics overlay (`up` leaves them to the task that needs one)."""
    engine.ensure(c)
    imported = base_image(c, force=force)
    stand_ins(c, root)
    for name in TOOLS if tools else ():
        tool_image(c, root, name, base=LOCAL_IMAGES["BASE_IMAGE"], force=imported)


#: Debian releases that carry older PostgreSQL majors (what 7.x deployments may run).
OLD_POSTGRES_SUITES = {"15": "bookworm", "13": "bullseye"}


def old_postgres_image(major: str) -> str:
    return f"mediacms-local/postgres:{major}"


def old_postgres(c: Context, root: Path, major: str, *, force: bool = False) -> str:
    """A stand-in for ``postgres:<major>`` on the Debian release that ships that major.

    Used to reproduce a monolithic 7.x deployment whose database predates PostgreSQL 17.
    """
    suite = OLD_POSTGRES_SUITES.get(major)
    if suite is None:
        known = ", ".join(sorted(OLD_POSTGRES_SUITES))
        raise StackError(f"no Debian release known for PostgreSQL {major} (known: {known})")
    engine.ensure(c)
    base = f"mediacms-local/debian:{suite}"
    base_image(c, base, suite=suite, force=force)
    builder = engine.builder(c)
    argv = builder.command(
        "--build-arg", f"BASE_IMAGE={base}",
        "--build-arg", f"PG_MAJOR={major}",
        "--tag", old_postgres_image(major),
        str(root / "bootstrap" / "postgres"),
    )  # fmt: skip
    run(c, argv, env=dict(builder.env))
    return old_postgres_image(major)


#: Images of ours built from Debian's archive, not stand-ins: name -> folder under
#: bootstrap/ (restic for off-site backups, the metrics and HTTPS overlays' images).
TOOLS = {"restic": "restic", "metrics": "metrics", "front": "front"}


def tool_image(c: Context, root: Path, name: str, *, base: str, force: bool = False) -> str:
    """``mediacms-local/NAME:<recipe>``, built from ``bootstrap/NAME`` on ``base`` when
    missing (``force``: also when present, as the base was made again). The tag is a hash
    of the base's name and the folder's files, so a changed recipe is a new image and
    never a stale one."""
    folder = root / "bootstrap" / TOOLS[name]
    digest = hashlib.sha256(base.encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    ref = f"mediacms-local/{name}:{digest.hexdigest()[:12]}"
    if dry(c) or (not force and engine.image(ref) is not None):
        return ref
    builder = engine.builder(c)
    run(c, builder.command("--build-arg", f"BASE_IMAGE={base}", "--tag", ref, str(folder)),
        env=dict(builder.env))  # fmt: skip
    return ref
