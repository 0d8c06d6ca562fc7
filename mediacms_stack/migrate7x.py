"""Move a monolithic MediaCMS 7.x deployment into this stack without writing to it.

The 7.x layout: one folder holding the MediaCMS tree (bind-mounted into one container
run by supervisord) with its ``docker-compose.yaml``, the media in ``media_files/``,
overrides in ``cms/local_settings.py``, maybe a ``.secret_key``, and the PostgreSQL
data bind-mounted from ``../postgres_data`` (any major version).

What :func:`migrate` does, in order, each step printed with the command it runs:

1. reads the old folder and prints the plan (``--dry-run`` stops here);
2. stops the old deployment's application containers, so nothing changes under it;
3. dumps the old database through the old ``db`` service (started for the dump if it
   was stopped, stopped again afterwards), or takes a dump the operator gives;
4. copies ``media_files/`` into the new media volume, dotfiles included, owned by 33;
5. writes ``custom/local_settings.py`` from the old overrides (without what the new
   layout owns) and carries SECRET_KEY (and literal FRONTEND_HOST/PORTAL_NAME) into
   ``.env``;
6. restores the dump into the new PostgreSQL 17, checks the row count of every table
   against the old database, copies the logged-in sessions (7.x keeps them in Redis)
   into the new Redis with their expiry, then starts the stack (migrations run, all
   healthy);
7. checks every media file's sha256 and owner in the volume against the old folder.

The old folder and its database files are only read, so rolling back is starting the
old deployment again (``docker compose up -d`` in its folder).
"""

from __future__ import annotations

import ast
import json
import secrets
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from invoke.context import Context

from . import artifacts, backup, config, database, files
from .compose import Compose
from .config import Settings
from .model import APP_SERVICES, BACKUPS_DIR, DB_VOLUME, MEDIA_DIR, volume_name
from .shell import StackError, quote, run, wait_until

#: Settings the new layout sets from .env in the image's settings bridge.
OWNED = {
    "DATABASES": "the database comes from POSTGRES_* in .env",
    "CACHES": "the cache is REDIS_LOCATION from the stack",
    "REDIS_LOCATION": "Redis is the stack's redis service",
    "BROKER_URL": "the Celery broker is the stack's Redis",
    "CELERY_BROKER_URL": "the Celery broker is the stack's Redis",
    "CELERY_RESULT_BACKEND": "the Celery results go to the stack's Redis",
    "POSTGRES_HOST": "the database host is the stack's db service",
    "POSTGRES_PORT": "the database port is the stack's db service",
    "POSTGRES_NAME": "POSTGRES_DB in .env",
    "POSTGRES_USER": "POSTGRES_USER in .env",
    "POSTGRES_PASSWORD": "POSTGRES_PASSWORD in .env",
    "MP4HLS_COMMAND": "the image installs Bento4 at the contract path",
}
#: Settings that move into .env (when their value can be known without running Django).
TO_ENV = ("SECRET_KEY", "FRONTEND_HOST", "PORTAL_NAME")
LOCAL_SETTINGS = Path("cms/local_settings.py")
SECRET_KEY_FILE = ".secret_key"  # noqa: S105 - a file name
#: Every media file's digest, computed the same way on the host and in the volume.
CHECKSUMS = "find . -type f -print0 | xargs -0 -r sha256sum"
FOREIGN_OWNERS = "find . \\( ! -user 33 -o ! -group 33 \\) -print | head -n 5"
LEFT_RUNNING = ("redis",)  # old services not stopped before the copy (besides db)
#: Django's cached sessions as django-redis names them: ":1:django.contrib.sessions.cache<id>"
SESSION_KEYS = "*django.contrib.sessions.cache*"
#: Lua run in the old Redis: every session key of every database as "key value ttl-ms"
#: lines, key and value hex-encoded (values are pickles: binary)
EXPORT_SESSIONS = (
    'local out, hex = {}, function(s) return (s:gsub(".", function(ch) '
    'return string.format("%02x", ch:byte()) end)) end '
    'for db = 0, 255 do if redis.pcall("SELECT", db).err then break end '
    'for _, k in ipairs(redis.call("KEYS", ARGV[1])) do local ttl = redis.call("PTTL", k) '
    'if ttl ~= -2 and redis.call("TYPE", k).ok == "string" then '
    'out[#out + 1] = hex(k) .. " " .. hex(redis.call("GET", k)) .. " " .. ttl end end end '
    'return table.concat(out, "\\n")'
)
#: Lua run in the new Redis: those lines written back, each with its remaining time
IMPORT_SESSIONS = (
    'local n, unhex = 0, function(h) return (h:gsub("..", function(cc) '
    "return string.char(tonumber(cc, 16)) end)) end "
    'for k, v, ttl in ARGV[1]:gmatch("(%x+) (%x*) (%-?%d+)") do ttl = tonumber(ttl) '
    'if ttl > 0 then redis.call("SET", unhex(k), unhex(v), "PX", ttl) '
    'else redis.call("SET", unhex(k), unhex(v)) end n = n + 1 end return n'
)


# --- reading the old deployment (pure functions, unit-tested) ---------------------------
@dataclass
class SettingsPlan:
    """What becomes of the old ``cms/local_settings.py``."""

    text: str | None = None
    kept: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    to_env: dict[str, str] = field(default_factory=dict)
    #: names whose value is the fallback written in the file (no environment value)
    fallbacks: set[str] = field(default_factory=set)


def _getenv_call(node: ast.expr) -> tuple[str, ast.expr | None] | None:
    """``os.getenv("K", d)`` / ``os.environ.get("K", d)`` -> ("K", d)."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    name = ast.unparse(node.func)
    if name not in ("os.getenv", "os.environ.get", "getenv", "environ.get"):
        return None
    key = node.args[0]
    if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
        return None
    return key.value, (node.args[1] if len(node.args) > 1 else None)


def resolve_value(node: ast.expr, environment: Mapping[str, str]) -> str | None:
    """The value a settings expression had in the old container, when knowable statically."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    call = _getenv_call(node)
    if call is not None:
        key, default = call
        if environment.get(key):
            return environment[key]
        return resolve_value(default, environment) if default is not None else None
    return None


def split_settings(source: str, environment: Mapping[str, str], *, origin: str) -> SettingsPlan:
    """Keep the operator's overrides, comment out what the new layout owns.

    Lines are kept as written (comments and layout too); a dropped statement stays in
    the file, commented out with the reason, so nothing disappears silently.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise StackError(f"{origin} does not parse ({error}); fix it before migrating") from None
    plan = SettingsPlan()
    lines = source.splitlines()
    notes: dict[int, str] = {}
    for statement in tree.body:
        targets: list[ast.expr] = []
        if isinstance(statement, ast.Assign):
            targets = list(statement.targets)
        elif isinstance(statement, ast.AnnAssign):
            targets = [statement.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if not names:
            continue
        reasons = []
        for name in names:
            if name in TO_ENV:
                value = resolve_value(statement.value, environment)  # type: ignore[arg-type]
                if value is not None:
                    plan.to_env[name] = value
                    call = _getenv_call(statement.value)  # type: ignore[arg-type]
                    if call is not None and not environment.get(call[0]):
                        plan.fallbacks.add(name)
                    reason = f"moved to .env as {name}"
                else:
                    reason = f"not a literal: set {name} in .env"
                plan.dropped[name] = reason
                reasons.append(reason)
            elif name in OWNED:
                plan.dropped[name] = OWNED[name]
                reasons.append(OWNED[name])
            else:
                plan.kept.append(name)
        if reasons:
            first, last = statement.lineno - 1, (statement.end_lineno or statement.lineno) - 1
            notes[first] = "; ".join(dict.fromkeys(reasons))
            for index in range(first, last + 1):
                lines[index] = "# " + lines[index]
            lines[first] = f"# [migrate-from-7x: {notes[first]}]\n{lines[first]}"
    header = (
        f'"""Operator settings carried over from {origin} by `invoke migrate-from-7x`.\n\n'
        "Statements that the new layout owns (database, Redis, secrets, host names) are\n"
        'commented out below with the reason; everything else is as it was."""\n'
    )
    plan.text = header + "\n".join(lines) + "\n"
    return plan


def secret_key(plan: SettingsPlan, tree: Path, environment: Mapping[str, str]) -> tuple[str, str]:
    """(key, where it came from), in the order the old container read it; ('', why) if none."""
    if plan.to_env.get("SECRET_KEY"):
        return plan.to_env["SECRET_KEY"], str(LOCAL_SETTINGS)
    if environment.get("SECRET_KEY"):
        return environment["SECRET_KEY"], "the old compose environment"
    key_file = tree / SECRET_KEY_FILE
    if key_file.is_file() and key_file.read_text().strip():
        return key_file.read_text().strip(), SECRET_KEY_FILE
    return "", "none found"


def folder_stats(folder: Path) -> tuple[int, int]:
    """(files, bytes) under ``folder``, dotfiles included."""
    files = size = 0
    if folder.is_dir():
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                files += 1
                size += path.stat().st_size
    return files, size


def parse_checksums(text: str) -> dict[str, str]:
    """``sha256sum`` output -> {relative path: digest}."""
    sums = {}
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if sep:
            sums[name.removeprefix("./")] = digest
    return sums


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    return f"{size:.2f} GB"


# --- the old deployment ------------------------------------------------------------------
@dataclass
class OldDeployment:
    """A 7.x folder, read through its own compose file; never written to."""

    tree: Path
    compose: Compose
    config: dict
    db_service: str = "db"

    @classmethod
    def open(cls, c: Context, path: Path, *, db_service: str = "db") -> OldDeployment:
        tree = path.resolve()
        if not tree.exists():
            raise StackError(
                f"{path} does not exist; --from is the 7.x deployment's MediaCMS folder"
            )
        if not tree.is_dir():
            raise StackError(
                f"{path} is not a folder; --from is the 7.x deployment's MediaCMS folder"
            )
        if not (tree / "manage.py").is_file() or not (tree / "cms").is_dir():
            raise StackError(f"{tree} is not a MediaCMS tree (no manage.py and cms/ there)")
        compose_file = next(
            (n for n in ("docker-compose.yaml", "docker-compose.yml") if (tree / n).is_file()),
            None,
        )
        if compose_file is None:
            raise StackError(f"{tree} has no docker-compose.yaml: not a 7.x Docker deployment")
        compose = Compose(tree, (compose_file,), project=None)
        config = json.loads(compose.query(c, "config", "--format", "json") or "{}")
        if db_service not in config.get("services", {}):
            raise StackError(f"{tree}/{compose_file} has no '{db_service}' service")
        return cls(tree, compose, config, db_service)

    @property
    def project(self) -> str:
        return self.config.get("name", "")

    @property
    def media(self) -> Path:
        return self.tree / "media_files"

    def environment(self) -> dict[str, str]:
        """The app's environment in the old compose file (web first, then the others)."""
        services = self.config.get("services", {})
        merged: dict[str, str] = {}
        for name in sorted(services, key=lambda n: (n != "web", n)):
            if name == self.db_service:
                continue
            for key, value in (services[name].get("environment") or {}).items():
                merged.setdefault(key, value or "")
        return merged

    def db_env(self, key: str, default: str) -> str:
        env = self.config["services"][self.db_service].get("environment") or {}
        return env.get(key) or default

    def pgdata(self) -> Path | None:
        for mount in self.config["services"][self.db_service].get("volumes") or []:
            if mount.get("type") == "bind" and mount.get("target", "").rstrip("/") in (
                "/var/lib/postgresql/data",
                "/var/lib/postgresql",
            ):
                return Path(mount["source"])
        return None

    def pg_major(self) -> str:
        data = self.pgdata()
        version = data / "PG_VERSION" if data else None
        return version.read_text().strip() if version and version.is_file() else "unknown"

    def database(self) -> database.Database:
        return database.Database(self.compose, self.db_env("POSTGRES_USER", "mediacms"),
                               self.db_env("POSTGRES_DB", "mediacms"))  # fmt: skip

    def running(self, c: Context) -> list[str]:
        return [r["Service"] for r in self.compose.ps(c, all_=False) if r.get("State") == "running"]

    def redis_service(self) -> str | None:
        """The service running Redis (7.x: ``redis``), where the sessions are."""
        services = self.config.get("services", {})
        if "redis" in services:
            return "redis"
        return next((n for n, s in services.items() if "redis" in s.get("image", "")), None)


# --- the plan ----------------------------------------------------------------------------
@dataclass
class Plan:
    old: OldDeployment
    settings_plan: SettingsPlan | None
    secret: tuple[str, str]
    media_files: int
    media_bytes: int
    project: str
    dump: Path | None
    warnings: list[str] = field(default_factory=list)

    def lines(self, settings: Settings) -> list[str]:
        old, sp = self.old, self.settings_plan
        key, key_from = self.secret
        db_volume = volume_name(self.project, DB_VOLUME)
        rows = [
            f"from         {old.tree} (compose project '{old.project}')",
            f"media        {old.media}: {self.media_files} files, {human(self.media_bytes)}"
            f" -> volume {volume_name(self.project)}, owner 33:33",
        ]
        if self.dump is not None:
            rows.append(f"database     given dump {self.dump} -> volume {db_volume}")
        else:
            rows.append(
                f"database     {old.pgdata() or '?'} (PostgreSQL {old.pg_major()}), dumped through"
                f" the old '{old.db_service}' service -> PostgreSQL 17 in volume "
                f"{db_volume}"
            )
        redis = old.redis_service()
        rows.append(
            f"sessions     Django's cached sessions in the old '{redis}' service -> the new "
            "redis, each with its remaining lifetime"
            if redis
            else "sessions     the old compose file has no Redis service: none to carry"
        )
        if sp is None:
            rows.append(f"settings     no {LOCAL_SETTINGS}: custom/local_settings.py not written")
        else:
            rows.append(
                f"settings     {LOCAL_SETTINGS} -> custom/local_settings.py "
                f"(kept: {', '.join(sp.kept) or 'nothing'})"
            )
            rows += [f"  dropped    {name}: {why}" for name, why in sp.dropped.items()]
        rows.append(
            f"secret key   from {key_from} -> .env SECRET_KEY"
            if key
            else "secret key   none found: a new one is generated (sessions and reset links "
            "end; passwords keep working)"
        )
        rows.append(f"new stack    {settings.root} (.env {settings.env_file})")
        rows += [f"WARNING      {warning}" for warning in self.warnings]
        rows.append(f"old folder   read only; rollback: cd {old.tree} && docker compose up -d")
        return rows


def make_plan(
    c: Context, path: Path, *, project: str, dump: Path | None, new_secret_key: bool = False
) -> Plan:
    """Read the old folder and decide everything; refuses early what would fail later."""
    old = OldDeployment.open(c, path)
    if old.project == project:
        raise StackError(
            f"the new stack's COMPOSE_PROJECT_NAME '{project}' is also the old deployment's "
            "project name, so the two would share containers; set another name in .env "
            "(for example COMPOSE_PROJECT_NAME=mediacms8)"
        )
    environment = old.environment()
    local = old.tree / LOCAL_SETTINGS
    settings_plan = (
        split_settings(local.read_text(), environment, origin=f"the 7.x {LOCAL_SETTINGS}")
        if local.is_file()
        else None
    )
    warnings = []
    if new_secret_key:
        secret = (secrets.token_urlsafe(50), "a new random key (--new-secret-key)")
        warnings.append("a new SECRET_KEY ends sessions and password-reset links")
    else:
        secret = secret_key(settings_plan or SettingsPlan(), old.tree, environment)
        if settings_plan is not None and "SECRET_KEY" in settings_plan.fallbacks:
            warnings.append(
                "SECRET_KEY is the fallback written in cms/local_settings.py; if that file came "
                "from upstream the key is public: consider --new-secret-key"
            )
    carried = {"SECRET_KEY": secret[0], **(settings_plan.to_env if settings_plan else {})}
    for name, value in carried.items():
        try:
            config.encode(name, value or "")  # refused here, before anything is touched
        except StackError as exc:
            fix = "pass --new-secret-key" if name == "SECRET_KEY" else f"set {name} in .env by hand"
            raise StackError(f"{exc}: {fix}") from None
    files, size = folder_stats(old.media)
    if dump is not None:
        check_given_dump(dump)
    return Plan(old, settings_plan, secret, files, size, project, dump, warnings)


def check_given_dump(dump: Path) -> str:
    """'custom' or 'plain' for a pg_dump file; anything else is refused."""
    if not dump.is_file():
        raise StackError(f"{dump} does not exist")
    with dump.open("rb") as handle:
        head = handle.read(4096)
    if head.startswith(artifacts.PGDUMP_MAGIC):
        return "custom"
    if b"PostgreSQL database dump" in head:
        return "plain"
    raise StackError(f"{dump} is neither a pg_dump archive nor a plain pg_dump SQL file")


# --- the steps ---------------------------------------------------------------------------
def dump_old_database(c: Context, old: OldDeployment, dest: Path) -> tuple[Path, dict[str, int]]:
    """pg_dump through the old db service; returns the file and the old row counts."""
    was_running = old.db_service in old.running(c)
    if not was_running:
        old.compose.run(c, "up", "--detach", "--wait", old.db_service)
    db = old.database()
    try:
        _wait_ready(c, old.compose, old.db_service, db.user)
        counts = db.row_counts(c)
        artifacts.backup_dir(dest)  # 700; dumps and manifests hold password hashes
        final = dest / f"migrate-7x-{artifacts.utc_stamp()}.dump"
        partial = dest / f".{final.name}.partial"
        with artifacts.hashed_while_written(partial) as hasher:  # created mode 600
            result = run(c, db.dump_argv(), stdout_to=str(partial), warn=True, hide="err",
                         in_stream=False)  # fmt: skip
        if result is None or not result.ok:
            partial.unlink(missing_ok=True)
            message = result.stderr.strip() if result is not None else ""
            raise StackError(f"pg_dump of the old database failed: {message or 'no output'}")
        partial.rename(final)
        artifacts.write_checksum(final, artifacts.checksum_of(final, hasher))  # 600
        manifest = {
            "kind": "postgresql-custom-dump",
            "file": final.name,
            "source": f"7.x deployment {old.tree}, PostgreSQL {old.pg_major()}",
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "row_counts": counts,
            "migrations": db.migrations(c),
        }
        artifacts.write_json(final.with_name(final.name + ".manifest.json"), manifest)
    finally:
        if not was_running:
            old.compose.run(c, "stop", old.db_service)
    print(f"[migrate] old database: {sum(counts.values())} rows in {len(counts)} tables -> {final}")
    return final, counts


def _wait_ready(c: Context, compose: Compose, service: str, user: str, timeout: float = 60) -> None:
    argv = compose.argv("exec", "-T", service, "pg_isready", "-U", user)
    wait_until(lambda: c.run(quote(argv), hide=True, warn=True).ok, timeout=timeout, interval=1,
               what=f"the old '{service}' service did not accept connections")  # fmt: skip


def media_volume_empty(c: Context, compose: Compose) -> bool:
    listing = compose.argv("run", "--rm", "--no-deps", "-T", "--entrypoint", "find", "web",
                           MEDIA_DIR, "-mindepth", "1", "-print", "-quit")  # fmt: skip
    result = run(c, listing, hide=True, warn=True)
    if result is None or not result.ok:
        raise StackError(f"could not look into the media volume: {result.stderr if result else ''}")
    return result.stdout.strip() == ""


OLD_MEDIA_MOUNT = "/mnt/old-media"
#: Root in the throwaway container may only chown, write into 33's folders and set times.
COPY_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER")


def copy_media_argv(compose: Compose, source: Path) -> list[str]:
    """tar | tar inside one throwaway web container: the old folder mounted read-only,
    the archive stamped 33:33 on the way, so no second pass over the files is needed."""
    pipeline = (
        f"tar -C {OLD_MEDIA_MOUNT} --create --owner=33 --group=33 --numeric-owner --file=- . "
        f"| tar -C {MEDIA_DIR} --extract --same-owner --preserve-permissions --file=-"
    )
    caps = [arg for cap in COPY_CAPS for arg in ("--cap-add", cap)]
    return compose.argv("run", "--rm", "--no-deps", "-T", "--user", "0:0", *caps,
                        "--volume", f"{source}:{OLD_MEDIA_MOUNT}:ro", "--entrypoint", "bash",
                        "web", "-o", "pipefail", "-c", pipeline)  # fmt: skip


def copy_media(c: Context, compose: Compose, source: Path) -> float:
    """Copy ``source`` into the media volume, dotfiles included, owned by 33. Returns seconds."""
    started = time.monotonic()
    result = run(c, copy_media_argv(compose, source), warn=True, hide="err")
    if result is None or not result.ok:
        raise StackError(f"copying media failed: {(result.stderr if result else '').strip()}")
    return time.monotonic() - started


def verify_media(c: Context, compose: Compose, source: Path) -> int:
    """Every file of ``source`` is in the volume with the same sha256, all owned by 33."""
    # both sides are hashed at the same time: the old folder here, the volume in a container
    hashing = subprocess.Popen(["sh", "-c", CHECKSUMS], cwd=source, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    script = f"cd {MEDIA_DIR} && {CHECKSUMS} && echo '--owners--' && {FOREIGN_OWNERS}"
    argv = compose.argv("run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", "web", "-c", script)
    result = run(c, argv, hide=True, warn=True)
    local, errors = hashing.communicate()
    if hashing.returncode != 0:
        raise StackError(f"could not checksum {source}: {errors.strip()[-500:]}")
    if result is None or not result.ok:
        raise StackError(f"could not checksum the media volume: {result.stderr if result else ''}")
    sums, _, foreign = result.stdout.partition("--owners--")
    expected, actual = parse_checksums(local), parse_checksums(sums)
    missing = sorted(set(expected) - set(actual))
    differ = sorted(p for p in expected if p in actual and actual[p] != expected[p])
    if missing or differ:
        raise StackError(
            f"media differ after the copy: missing {missing[:5]}, changed {differ[:5]}"
        )
    if foreign.strip():
        raise StackError(f"media files not owned by 33:33 in the volume: {foreign.split()}")
    return len(expected)


def new_database_rows(c: Context, compose: Compose, settings: Settings, *, start: bool) -> int:
    if start:
        compose.up(c, "db", "redis")
    return sum(database.Database.of(compose, settings).row_counts(c).values())


def restore_into_stack(
    c: Context, compose: Compose, settings: Settings, dump: Path, *, replace: bool
) -> dict[str, int]:
    """Load the dump into the stack's database; returns the row counts.

    ``replace``: the database holds data (the operator passed --yes): a safety backup is
    taken first. Either way the public schema is replaced as a whole, in one transaction,
    so no table of a newer schema lingers.
    """
    db = database.Database.of(compose, settings)
    compose.up(c, "db", "redis")
    compose.run(c, "stop", *APP_SERVICES)
    if replace:
        safety = backup.backup_db(c, compose, settings, settings.root / BACKUPS_DIR,
                                  prefix="pre-migrate")  # fmt: skip
        print(f"[migrate] safety backup of the new database: {safety}")
    if check_given_dump(dump) == "custom":
        result = run(c, db.replace_argv(), stdin_from=str(dump), warn=True, hide="err")
    else:
        if replace:
            db.query(c, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        argv = compose.argv("exec", "-T", "db", "psql", "-U", db.user, "-d", db.name, "--quiet",
                            "-v", "ON_ERROR_STOP=1", "--single-transaction")  # fmt: skip
        result = run(c, argv, stdin_from=str(dump), warn=True, hide="both")
    if result is None or not result.ok:
        raise StackError(
            "restoring the old database failed and was rolled back: "
            f"{(result.stderr if result else '').strip()[-1500:]}"
        )
    return db.row_counts(c)


def new_redis(c: Context, compose: Compose, settings: Settings) -> tuple[str, str]:
    """(database number, password) of the new stack's cache, from its REDIS_LOCATION."""
    config = json.loads(compose.query(c, "config", "--format", "json") or "{}")
    env = config.get("services", {}).get("web", {}).get("environment") or {}
    location = urlsplit(env.get("REDIS_LOCATION") or "redis://redis:6379/1")
    return location.path.strip("/") or "0", location.password or settings.get("REDIS_PASSWORD")


def carry_sessions(c: Context, old: OldDeployment, compose: Compose, settings: Settings) -> int:
    """Copy the logged-in sessions from the old Redis into the new one (running).

    7.x keeps sessions only in its cache; without them everyone is logged out. Keys and
    values are copied as they are, each with its remaining lifetime; the old Redis is
    started for the copy when it was stopped (its data survives a stop) and stopped again.
    Returns the number of sessions; a failure is reported, not fatal (users log in again).
    """
    service = old.redis_service()
    if service is None:
        print("[migrate] sessions: the old deployment has no Redis service, none carried")
        return 0
    was_running = service in old.running(c)
    if not was_running and not old.compose.run(c, "start", service, warn=True, hide="err").ok:
        print(f"[migrate] sessions: the old '{service}' container is gone, none carried "
              "(users log in again)")  # fmt: skip
        return 0
    db, password = new_redis(c, compose, settings)
    try:
        if not _redis_answers(c, old.compose, service):
            print(f"[migrate] WARNING sessions not carried: the old '{service}' did not answer")
            return 0
        export = old.compose.argv("exec", "-T", service, "redis-cli", "--raw", "EVAL",
                                  EXPORT_SESSIONS, "0", SESSION_KEYS)  # fmt: skip
        # the password travels in the environment, never on a command line
        load = compose.argv("exec", "-T", *(["-e", "REDISCLI_AUTH"] if password else []),
                            "redis", "redis-cli", "--no-auth-warning", "-n", db, "-x", "EVAL",
                            IMPORT_SESSIONS, "0")  # fmt: skip
        result = run(c, load, pipe_from=export, warn=True, hide="both",
                     env={"REDISCLI_AUTH": password} if password else None)  # fmt: skip
    finally:
        if not was_running:
            old.compose.run(c, "stop", service)
    count = (result.stdout if result is not None else "").strip()
    if result is None or not result.ok or not count.isdigit():
        reason = (result.stdout + result.stderr).strip()[-300:] if result is not None else ""
        print(f"[migrate] WARNING sessions not carried ({reason}); users log in again")
        return 0
    print(f"[migrate] {count} sessions carried over from the old '{service}' into the new redis")
    return int(count)


def _redis_answers(c: Context, compose: Compose, service: str, timeout: float = 60) -> bool:
    """Whether Redis answers PONG in time (not LOADING: a started Redis reads its dump first)."""
    ping = quote(compose.argv("exec", "-T", service, "redis-cli", "ping"))
    try:
        wait_until(lambda: c.run(ping, hide=True, warn=True).stdout.strip() == "PONG",
                   timeout=timeout, interval=0.5, what="redis answered PONG")  # fmt: skip
    except StackError:
        return False
    return True


def carry_settings(plan: Plan, settings: Settings, *, yes: bool) -> list[str]:
    """Write custom/local_settings.py and the .env keys; returns what was done."""
    done = []
    sp = plan.settings_plan
    if sp is not None and sp.text is not None:
        target = settings_conflict(plan, settings, yes=yes)
        if target.is_file() and target.read_text() != sp.text:
            target.with_suffix(".py.bak").write_text(target.read_text())
            done.append(f"kept the previous {target.name} as {target.name}.bak")
        target.parent.mkdir(parents=True, exist_ok=True)
        compile(sp.text, str(target), "exec")
        target.write_text(sp.text)
        done.append(f"wrote {target}")
    env_file = settings.env_file
    values = dict(sp.to_env) if sp is not None else {}
    key, _ = plan.secret
    if key:
        values["SECRET_KEY"] = key
    if values and env_file.is_file():
        saved = (
            artifacts.backup_dir(settings.root / BACKUPS_DIR)
            / f"env-before-migrate-{artifacts.utc_stamp()}"
        )
        files.copy_private(env_file, saved)
        done.append(f"saved the previous .env as {saved}")
    if values:
        config.update(settings, values)
        done += [f"set {name} in {env_file}" for name in values]
    return done


def settings_conflict(plan: Plan, settings: Settings, *, yes: bool) -> Path:
    """custom/local_settings.py, refusing to replace a different one without --yes."""
    target = settings.root / "custom" / "local_settings.py"
    sp = plan.settings_plan
    text = sp.text if sp is not None else None
    if text is not None and target.is_file() and target.read_text() != text and not yes:
        raise StackError(f"{target} exists; pass --yes to replace it (a .bak is kept)")
    return target


def preflight(c: Context, plan: Plan, compose: Compose, settings: Settings, *, yes: bool) -> bool:
    """Everything that could refuse, checked before anything is stopped or written.

    Returns whether the new database already holds data (to be replaced, with --yes).
    """
    settings_conflict(plan, settings, yes=yes)
    refusals, rows = stack_refusals(c, compose, settings, yes=yes, start=True)
    if refusals:
        raise StackError(refusals[0])
    return bool(rows)


def stack_refusals(
    c: Context, compose: Compose, settings: Settings, *, yes: bool, start: bool
) -> tuple[list[str], int]:
    """Why the new stack's data may not be replaced without --yes; and its row count.
    ``start``: start the new db first (a dry run only looks at a running one)."""
    refusals = []
    if not media_volume_empty(c, compose) and not yes:
        refusals.append("the new media volume is not empty; pass --yes to copy over it")
    rows = new_database_rows(c, compose, settings, start=start)
    if rows and not yes:
        refusals.append(f"the new database already holds {rows} rows; pass --yes to replace "
                        "them (a safety backup is taken first)")  # fmt: skip
    return refusals, rows


def dry_run_refusals(
    c: Context, plan: Plan, compose: Compose, settings: Settings, *, yes: bool
) -> list[str]:
    """What :func:`preflight` would refuse, found without writing anything: the new
    stack's volumes are looked into only when it runs (no volume or container is made)."""
    from .engine import engine_answers

    refusals = []
    try:
        settings_conflict(plan, settings, yes=yes)
    except StackError as error:
        refusals.append(str(error))
    if not engine_answers():
        print("(dry run) no Docker engine answers: the new stack's volumes were not checked")
        return refusals
    if "db" not in {r.get("Service") for r in compose.ps(c, all_=False)}:
        print("(dry run) the new stack is not running: its volumes were not checked")
        return refusals
    return refusals + stack_refusals(c, compose, settings, yes=yes, start=False)[0]


def compare_counts(old: Mapping[str, int], new: Mapping[str, int]) -> None:
    diff = {t: (n, new.get(t)) for t, n in old.items() if new.get(t) != n}
    if diff:
        raise StackError(f"row counts differ between the old and the new database: {diff}")


@dataclass
class Report:
    seconds: dict[str, float] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)

    def step(self, name: str, started: float) -> None:
        self.seconds[name] = round(time.monotonic() - started, 2)


def migrate(
    c: Context,
    compose: Compose,
    settings: Settings,
    source: Path,
    *,
    dump: Path | None = None,
    yes: bool = False,
    new_secret_key: bool = False,
    dry_run: bool = False,
) -> Report:
    report = Report()
    plan = make_plan(c, source, project=compose.project or "", dump=dump,
                     new_secret_key=new_secret_key)  # fmt: skip
    print("migrate-from-7x plan:", *plan.lines(settings), sep="\n  ")
    if dry_run:
        refusals = dry_run_refusals(c, plan, compose, settings, yes=yes)
        for line in refusals:
            print(f"(dry run) the real run would refuse: {line}")
        if not refusals:
            print("(dry run) nothing found that the real run would refuse; nothing was changed")
        return report
    replace = preflight(c, plan, compose, settings, yes=yes)
    old, started_all = plan.old, time.monotonic()
    report.facts |= {"media_files": plan.media_files, "media_bytes": plan.media_bytes}

    running_app = [s for s in old.running(c) if s not in (old.db_service, *LEFT_RUNNING)]
    if running_app:
        print(
            f"[migrate] stopping the old application so nothing changes under the copy: {running_app}"
        )
        old.compose.run(c, "stop", *running_app)

    t = time.monotonic()
    old_counts: dict[str, int] | None = None
    if dump is None:
        dump, old_counts = dump_old_database(c, old, settings.root / BACKUPS_DIR)
    report.step("dump old database", t)

    t = time.monotonic()
    copy_seconds = copy_media(c, compose, old.media) if old.media.is_dir() else 0.0
    report.step("copy media", t)
    report.facts["media_copy_mb_per_s"] = round(plan.media_bytes / 1e6 / max(copy_seconds, 1e-3), 1)

    for line in carry_settings(plan, settings, yes=yes):
        print(f"[migrate] {line}")

    t = time.monotonic()
    new_counts = restore_into_stack(c, compose, settings, dump, replace=replace)
    if old_counts is not None:
        compare_counts(old_counts, new_counts)
        print(f"[migrate] row counts match the old database ({len(old_counts)} tables)")
    report.facts["rows"] = sum(new_counts.values())
    report.step("restore database", t)

    t = time.monotonic()
    report.facts["sessions"] = carry_sessions(c, old, compose, settings)
    report.step("carry sessions", t)

    t = time.monotonic()
    compose.up(c)
    report.step("start stack and migrate", t)

    t = time.monotonic()
    checked = verify_media(c, compose, old.media) if old.media.is_dir() else 0
    print(f"[migrate] {checked} media files verified (sha256, owner 33:33)")
    report.step("verify media", t)
    report.seconds["total"] = round(time.monotonic() - started_all, 2)

    out = (
        artifacts.backup_dir(settings.root / BACKUPS_DIR)
        / f"migrate-7x-{artifacts.utc_stamp()}.json"
    )
    artifacts.write_json(out, {"seconds": report.seconds, **report.facts})
    print("[migrate] done:", *(f"{k}: {v} s" for k, v in report.seconds.items()), sep="\n  ")
    print(f"[migrate] report {out}; the old deployment was only read: "
          f"cd {old.tree} && docker compose up -d starts it again")  # fmt: skip
    return report
