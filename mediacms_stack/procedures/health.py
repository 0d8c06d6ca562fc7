"""`invoke status`: is the site healthy and keeping up?

One report, read in parallel from the running stack: every service's state and health,
the Celery queues' depth (from Redis), the encodings (from Django, see
:mod:`.encodings`), the size of each volume and the free space of the filesystem under
it, the last backups in the deployment's backups folder (and whether and when
`invoke backup-verify` proved the last full one, and the last off-site snapshot that
`invoke backup --offsite` recorded there), the version. Each part that
cannot be read is a problem of the report, not the end of it; a report with problems
makes `invoke status` exit 1, so monitoring can run it as it is.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from invoke.context import Context

from ..data.artifacts import latest, offsite_record, read_json, verification
from ..engines.compose import Compose
from ..engines.shell import run
from ..stack.config import Settings
from ..stack.errors import StackError
from ..stack.model import BROKER_DB, QUEUES, SERVICES, VOLUME_PATHS
from . import encodings
from .ops import format_age, format_table, status_rows

#: Celery's Redis transport keeps a queue as lists: priority 0 under the queue's own
#: name, the other priority steps (kombu's default 3, 6, 9) as ``<queue>\x06\x16<step>``.
#: The script sums them per queue (KEYS: the queues, ARGV: the steps) in one call.
PRIORITY_STEPS = ("3", "6", "9")
QUEUE_DEPTH_LUA = (
    "local depths = {} for i, queue in ipairs(KEYS) do "
    "local n = redis.call('LLEN', queue) "
    "for _, step in ipairs(ARGV) do n = n + redis.call('LLEN', queue .. '\\6\\22' .. step) end "
    "depths[i] = n end return depths"
)
#: redis-cli with the password from the secret file (a container made before the file,
#: by an older release of this stack, has it in its environment).
REDIS_CLI = ('REDISCLI_AUTH="${REDISCLI_AUTH:-$(cat /run/secrets/redis_password 2>/dev/null)}" '
             'exec redis-cli --no-auth-warning "$@"')  # fmt: skip
#: ``df`` of each path's filesystem, then ``du`` of each path, in one exec.
SIZES = 'df -Pk "$@"; du -sk "$@" 2>/dev/null; exit 0'


def queue_argv(compose: Compose) -> list[str]:
    return compose.argv("exec", "-T", "redis", "sh", "-c", REDIS_CLI, "redis-cli", "-n",
                        str(BROKER_DB), "EVAL", QUEUE_DEPTH_LUA, str(len(QUEUES)), *QUEUES,
                        *PRIORITY_STEPS)  # fmt: skip


def parse_queue_depths(stdout: str) -> dict[str, int]:
    """redis-cli's answer (one integer a line, the queues' order) -> {queue: depth}."""
    numbers = [line.strip() for line in stdout.splitlines() if line.strip()]
    if len(numbers) != len(QUEUES) or not all(n.isdigit() for n in numbers):
        raise StackError(f"unexpected answer from Redis: {stdout.strip()[:200]!r}")
    return {queue: int(n) for queue, n in zip(QUEUES, numbers, strict=True)}


def parse_sizes(stdout: str, paths: list[str]) -> dict[str, dict[str, int]]:
    """``df -Pk`` and ``du -sk`` of ``paths`` -> {path: {bytes, free, total}} (KiB -> bytes).

    df names each filesystem by where it is mounted: a volume is mounted at its path."""
    mounts, used = {}, {}
    for line in stdout.splitlines():
        words = line.split()
        if len(words) >= 6 and words[1].isdigit() and words[3].isdigit():
            mounts[words[-1]] = (int(words[1]) * 1024, int(words[3]) * 1024)
        elif len(words) == 2 and words[0].isdigit():
            used[words[1]] = int(words[0]) * 1024
    sizes = {}
    for path in paths:
        total, free = mounts.get(path, (None, None))
        sizes[path] = {"bytes": used.get(path), "free": free, "total": total}
    return sizes


def _queues(c: Context, compose: Compose) -> dict[str, int]:
    result = run(c, queue_argv(compose), query=True, hide=True, warn=True, in_stream=False)
    if not result.ok:
        raise StackError(f"Redis did not answer: {(result.stderr or result.stdout).strip()[-200:]}")
    return parse_queue_depths(result.stdout)


def _volumes(c: Context, compose: Compose, service: str) -> dict[str, dict]:
    wanted = {name: path for name, (where, path) in VOLUME_PATHS.items() if where == service}
    result = run(c, compose.argv("exec", "-T", service, "sh", "-c", SIZES, "sizes",
                                 *wanted.values()), query=True, hide=True, warn=True,
                 in_stream=False)  # fmt: skip
    if not result.ok:
        raise StackError(f"{service} is not running: {result.stderr.strip()[-200:]}")
    sizes = parse_sizes(result.stdout, list(wanted.values()))
    return {name: sizes[path] for name, path in wanted.items()}


def _services(c: Context, compose: Compose) -> list[dict]:
    keys = ("service", "state", "health", "image", "version")
    return [dict(zip(keys, row, strict=True)) for row in status_rows(c, compose)]


def _backups(dest: Path, project: str | None) -> dict[str, dict | None]:
    now = datetime.now(UTC)
    found = {"full": latest(dest, "mediacms-2*", project),
             "database": latest(dest, "mediacms-db-*.dump", project)}  # fmt: skip
    said = {kind: None if hit is None else {
        "path": str(hit[0]), "created_utc": hit[1].isoformat(timespec="seconds"),
        "age_seconds": (now - hit[1]).total_seconds()} for kind, hit in found.items()}  # fmt: skip
    if said["full"] is not None:
        said["full"]["verified"] = _verified(Path(said["full"]["path"]), now)
    said["offsite"] = _offsite(dest, project, now)
    return said


def _age(record: dict | None, key: str, now: datetime) -> float | None:
    """Seconds since the time ``record[key]`` holds; None when there is no record or no
    readable time with a zone in it (a damaged record is no report's end: the TypeError
    of a None record or of a time without a zone is caught with the rest)."""
    try:
        return (now - datetime.fromisoformat(record[key])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def _verified(folder: Path, now: datetime) -> dict | None:
    """When `invoke backup-verify` checked the folder and what it found; None: never."""
    found = verification(folder)
    age = _age(found, "verified_utc", now)
    if found is None or age is None:
        return None
    failed = [f"{kind}: {check.get('detail')}" for kind, check in found.get("checks", {}).items()
              if not check.get("ok")]  # fmt: skip
    return {"verified_utc": found["verified_utc"], "age_seconds": age,
            "outcome": found.get("outcome"), "failed": failed}  # fmt: skip


def _offsite(dest: Path, project: str | None, now: datetime) -> dict | None:
    """The last snapshot `invoke backup --offsite` recorded; None: never, or a record that
    cannot be read. restic is not asked: it needs the key and takes a while."""
    found = read_json(offsite_record(dest, project))
    age = _age(found, "created_utc", now)
    if found is None or age is None or not isinstance(found.get("snapshot"), str):
        return None
    return {"snapshot": found["snapshot"], "created_utc": found["created_utc"],
            "age_seconds": age, "repository": found.get("repository"),
            "folder": found.get("folder")}  # fmt: skip


def problems_of(report: dict) -> list[str]:
    """What an operator must look at: services not running and healthy, stuck
    encodings, parts of the report that could not be read."""
    found = [f"{name}: could not be read: {why}" for name, why in report["unread"].items()]
    seen = {row["service"]: row for row in report["services"] or []}
    for name in SERVICES:
        row = seen.get(name)
        if report["services"] is None:
            break
        if row is None:
            found.append(f"{name}: no container")
        elif (row["state"], row["health"]) != ("running", "healthy"):
            found.append(f"{name}: {row['state']}, {row['health']}")
    verified = (report["backups"]["full"] or {}).get("verified")
    if verified and verified["outcome"] != "passed":
        found.append(f"the last full backup failed its verification: "
                     f"{'; '.join(verified['failed']) or verified['outcome']}")  # fmt: skip
    stuck = (report["encodings"] or {}).get("stuck")
    if stuck:
        found.append(f"{stuck} encoding(s) stuck: `invoke encodings` lists them, "
                     "`invoke encodings --retry` queues them again")  # fmt: skip
    return found


def report(
    c: Context, compose: Compose, settings: Settings, *, backups: Path, stuck_after: float
) -> dict:
    """The whole report as a dict (what `status --json` prints)."""
    started = time.monotonic()
    parts = {
        "services": lambda: _services(c, compose),
        "queues": lambda: _queues(c, compose),
        "encodings": lambda: encodings.ask(c, compose, stuck_after=stuck_after),
        "web volumes": lambda: _volumes(c, compose, "web"),
        "db volumes": lambda: _volumes(c, compose, "db"),
    }
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        futures = {name: pool.submit(read) for name, read in parts.items()}
    read, unread = {}, {}
    for name, future in futures.items():
        try:
            read[name] = future.result()
        except StackError as error:
            read[name], unread[name] = None, str(error)
    found = {**(read["web volumes"] or {}), **(read["db volumes"] or {})}
    if read["encodings"] is not None:
        for key in ("listed", "retried"):
            read["encodings"].pop(key, None)
        read["encodings"]["stuck_after_seconds"] = stuck_after
    result = {
        "project": compose.project,
        "version": settings.version,
        "services": read["services"],
        "queues": read["queues"],
        "encodings": read["encodings"],
        "volumes": found or None,
        "backups": _backups(backups, compose.project),
        "unread": unread,
    }
    result["problems"] = problems_of(result)
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def format_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_report(data: dict) -> str:
    """The report for a terminal: the services' table, then one part a paragraph."""
    lines = []
    if data["services"] is not None:
        rows = [tuple(row.values()) for row in data["services"]]
        lines += [format_table(rows, ("SERVICE", "STATE", "HEALTH", "IMAGE", "VERSION")), ""]
    lines.append(f"version    {data['version']}")
    if data["queues"] is not None:
        lines.append("queues     " + ", ".join(f"{name} {depth} waiting"
                                              for name, depth in data["queues"].items()))  # fmt: skip
    if (e := data["encodings"]) is not None:
        lines.append(
            f"encodings  {e['pending']} pending (oldest {format_age(e['oldest_pending_seconds'])}"
            f"), {e['running']} running, {e['failed']} failed, {e['stuck']} stuck (running, "
            f"not updated for {format_age(e['stuck_after_seconds'])})"
        )
    for kind in ("full", "database"):
        hit = data["backups"][kind]
        said = f"{format_age(hit['age_seconds'])} ago: {hit['path']}" if hit else "none"
        if hit and kind == "full":
            verified = hit["verified"]
            said += (f"; verified {format_age(verified['age_seconds'])} ago: "
                     f"{verified['outcome']}" if verified else "; not verified")  # fmt: skip
        lines.append(f"backup     last {kind}: {said}")
    offsite = data["backups"]["offsite"]
    lines.append("backup     last off-site: " + (
        f"{format_age(offsite['age_seconds'])} ago: snapshot {offsite['snapshot'][:8]} in "
        f"{offsite['repository']}" if offsite else "never"))  # fmt: skip
    if data["volumes"]:
        rows = [(name, format_bytes(v["bytes"]), format_bytes(v["free"]), format_bytes(v["total"]))
                for name, v in data["volumes"].items()]  # fmt: skip
        lines += ["", format_table(rows, ("VOLUME", "SIZE", "FREE ON ITS DISK", "DISK SIZE"))]
    lines.append("")
    lines += [f"problem: {p}" for p in data["problems"]] or ["no problems"]
    return "\n".join(lines)
