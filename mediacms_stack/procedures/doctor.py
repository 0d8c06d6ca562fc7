"""Pre-flight checks: a pass/fail table, and the subset each task needs before it runs."""

from __future__ import annotations

import ipaddress
import py_compile
import re
import shutil
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from invoke.context import Context

from ..engines import engine
from ..stack.config import SECRET_KEYS, Settings, missing_keys
from ..stack.errors import StackError
from ..stack.model import (
    DATA_VOLUMES,
    DB_VOLUME,
    PRODUCTION_TARGETS,
    ImageNames,
    db_volume,
    volume_name,
)
from .ops import missing_images

ACME_CA_DEFAULT = "https://acme-v02.api.letsencrypt.org/directory"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    #: a fine state worth knowing (shown as INFO, with the next step in ``fix``)
    info: bool = False


def _engine(c: Context, settings: Settings) -> Check:
    problem = engine.engine_problem()
    if problem is not None:
        return Check("engine", False, problem, "invoke engine (or start Docker)")
    with engine.client() as handle:
        version = handle.version().get("Version", "?")
    return Check("engine", True, f"Docker {version}")


def _compose(c: Context, settings: Settings) -> Check:
    version = engine.compose_version(c)
    if version is None:
        return Check("compose", False, "docker compose v2 missing", "invoke engine")
    return Check("compose", True, f"compose {version}")


def _env(c: Context, settings: Settings) -> Check:
    if not settings.env_file.is_file():
        return Check("env", False, f"{settings.env_file} missing", "invoke init")
    empty = [k for k in SECRET_KEYS if not settings.get(k)]
    if empty:
        # the database and sessions depend on these: never advise regenerating them
        return Check("env", False, f"{settings.env_file} lacks {', '.join(empty)}",
                     "set it (a new stack: invoke init; an older .env: invoke upgrade)")  # fmt: skip
    mode = settings.env_file.stat().st_mode & 0o777
    if mode & 0o077:
        return Check("env", False, f"{settings.env_file} is mode {mode:o}, readable by others",
                     f"chmod 600 {settings.env_file}")  # fmt: skip
    missing = missing_keys(settings)
    if missing:  # optional settings of a newer .env.example: compose's defaults apply
        return Check("env", True, f"{settings.env_file} lacks newer optional keys "
                     f"({', '.join(missing)}): defaults apply", "invoke upgrade adds them",
                     info=True)  # fmt: skip
    return Check("env", True, f"{settings.env_file} complete, mode 600")


def _custom(c: Context, settings: Settings) -> Check:
    path = settings.root / "custom" / "local_settings.py"
    if not path.is_file():
        return Check("custom", True, "no custom/local_settings.py (defaults)")
    try:
        py_compile.compile(str(path), doraise=True)
    except py_compile.PyCompileError as exc:
        return Check("custom", False, f"custom/local_settings.py: {exc.msg.strip()}",
                     "fix the syntax error in custom/local_settings.py")  # fmt: skip
    return Check("custom", True, "custom/local_settings.py compiles")


def _proxies(c: Context, settings: Settings) -> Check:
    """TRUSTED_PROXIES: addresses or networks nginx can load (it refuses to start on any
    other), each a host or a network with no host bits set."""
    given = [p for p in re.split(r"[,\s]+", settings.get("TRUSTED_PROXIES", "")) if p]
    wrong = []
    for entry in given:
        try:
            ipaddress.ip_network(entry)
        except ValueError:
            wrong.append(entry)
    if wrong:
        return Check("proxies", False, f"TRUSTED_PROXIES: {', '.join(wrong)} not an address "
                     "or a network", "name load balancers as 10.0.0.5 or 10.0.0.0/24 in .env")  # fmt: skip
    return Check("proxies", True, f"X-Forwarded-For believed from {', '.join(given)}"
                 if given else "no trusted proxies: clients' forwarding headers ignored")  # fmt: skip


#: The whole numbers of .env, with the smallest and largest value each may take; an
#: empty value means the default (compose's, the image's or the task's).
PORT = (1, 65535)
NUMBERS: dict[str, tuple[int, int]] = {
    "HTTP_PORT": PORT, "HTTPS_PORT": PORT, "METRICS_PORT": PORT, "DEV_PORT": PORT,
    "FRONTEND_DEV_PORT": PORT,
    "UPLOAD_DISK_RESERVE_MB": (0, 2**20), "MEDIA_GATE_CACHE_SECONDS": (0, 300),
    "UWSGI_PROCESSES": (1, 256), "UWSGI_THREADS": (1, 256),
    "UWSGI_MAX_WORKER_LIFETIME": (11, 31_536_000),
    "CELERY_SHORT_CONCURRENCY": (1, 256), "CELERY_LONG_CONCURRENCY": (1, 256),
    "WEB_REPLICAS": (1, 64), "CELERY_SHORT_REPLICAS": (1, 64), "CELERY_LONG_REPLICAS": (1, 64),
    "OFFSITE_KEEP_DAILY": (0, 10000), "OFFSITE_KEEP_WEEKLY": (0, 10000),
    "OFFSITE_KEEP_MONTHLY": (0, 10000),
}  # fmt: skip


def _number(settings: Settings, key: str) -> int | None:
    """``key``'s whole number in .env; None when it is not one within NUMBERS' bounds."""
    value = settings.get(key).strip()
    low, high = NUMBERS[key]
    return int(value) if value.isascii() and value.isdigit() and low <= int(value) <= high else None


def _numbers(c: Context, settings: Settings) -> Check:
    """Every whole number of .env is one, within its bounds: a stray unit or letter
    ("2G", "80a") would otherwise stop a container, or the app, with a traceback."""
    wrong = [f"{key}={settings.get(key)!r} (a whole number from {low} to {high})"
             for key, (low, high) in NUMBERS.items()
             if settings.get(key).strip() and _number(settings, key) is None]  # fmt: skip
    if wrong:
        return Check("numbers", False, "; ".join(wrong), f"correct it in {settings.env_file}")
    return Check("numbers", True, f"{len(NUMBERS)} whole numbers in range or unset")


def _port(c: Context, settings: Settings) -> Check:
    bind = settings.get("HTTP_BIND", "0.0.0.0")  # noqa: S104 - the address compose publishes on
    port = _number(settings, "HTTP_PORT") if settings.get("HTTP_PORT") else 80
    if port is None:
        return Check("port", False, f"HTTP_PORT={settings.get('HTTP_PORT')!r} is not a port",
                     f"set HTTP_PORT in {settings.env_file} (1-65535)")  # fmt: skip
    state = _port_state(settings, bind, port)
    if state.startswith("taken"):
        return Check("port", False, f"{bind}:{port} is {state}",
                     "free the port or set HTTP_PORT in .env")  # fmt: skip
    return Check("port", True, f"{bind}:{port} {state}")


def _port_state(settings: Settings, bind: str, port: int) -> str:
    """``bind:port`` is "free", "held by this stack" (its nginx or the HTTPS overlay's
    listeners publish it: fine) or "taken (why)" by anything else."""
    if engine.engine_answers():
        with engine.client() as handle:
            held = handle.containers.list(filters={"publish": str(port)})
        if any(c.labels.get("com.docker.compose.project") == settings.project for c in held):
            return "held by this stack"
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bind, port))
        except OSError as exc:
            return f"taken ({exc.strerror})"
    return "free"


# --- the HTTPS overlay (docker-compose-cert.yaml) ---------------------------------------
def https_problems(settings: Settings) -> list[str]:
    """What in .env keeps the HTTPS overlay from working; empty when nothing does."""
    problems = []
    frontend = settings.get("FRONTEND_HOST")
    url = urlsplit(frontend)
    if url.scheme != "https" or not url.hostname:
        problems.append(f"FRONTEND_HOST={frontend!r} is not https://NAME")
    elif url.port is not None or url.path or url.query or url.fragment or url.username:
        problems.append(f"FRONTEND_HOST={frontend!r}: only https://NAME, with no port, path "
                        "or trailing slash (the name is what the certificate is for)")  # fmt: skip
    elif _is_ip(url.hostname):
        problems.append(f"FRONTEND_HOST={frontend!r}: a host name is needed, not an IP address")
    email = settings.get("ACME_EMAIL")
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        problems.append(f"ACME_EMAIL={email!r} is not an e-mail address" if email else
                        "ACME_EMAIL is not set (the ACME account's e-mail)")  # fmt: skip
    ca = urlsplit(settings.get("ACME_CA", ACME_CA_DEFAULT))
    if ca.scheme != "https" or not ca.hostname:
        problems.append(f"ACME_CA={settings.get('ACME_CA')!r} is not an https:// URL of an "
                        f"ACME directory (Let's Encrypt: {ACME_CA_DEFAULT})")  # fmt: skip
    return problems


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _https_env(c: Context, settings: Settings) -> Check:
    problems = https_problems(settings)
    if problems:
        return Check("https-env", False, "; ".join(problems),
                     f"set them in {settings.env_file} (see .env.example)")  # fmt: skip
    return Check("https-env", True, f"{settings.get('FRONTEND_HOST')}, ACME CA "
                 f"{settings.get('ACME_CA', ACME_CA_DEFAULT)}")  # fmt: skip


def _https_ports(c: Context, settings: Settings) -> Check:
    bind = settings.get("HTTP_BIND", "0.0.0.0")  # noqa: S104 - the address compose publishes on
    given = {"HTTP_PORT": 80, "HTTPS_PORT": 443}
    ports = {key: _number(settings, key) if settings.get(key) else port
             for key, port in given.items()}  # fmt: skip
    wrong = [key for key, port in ports.items() if port is None]
    if wrong:
        return Check("https-ports", False, f"{' and '.join(wrong)} not a port (1-65535)",
                     f"set it in {settings.env_file}")  # fmt: skip
    states = {key: f"{bind}:{port} {_port_state(settings, bind, port)}"
              for key, port in ports.items()}  # fmt: skip
    taken = [key for key, state in states.items() if " taken " in state]
    if taken:
        return Check("https-ports", False, "; ".join(states.values()),
                     f"free the port or set {' and '.join(taken)} in .env (the CA checks "
                     "port 80 from outside, visitors use both: forward them here)")  # fmt: skip
    return Check("https-ports", True, "; ".join(states.values()))


def _https_name(c: Context, settings: Settings) -> Check:
    name = urlsplit(settings.get("FRONTEND_HOST")).hostname or ""
    if not name:
        return Check("https-name", False, "FRONTEND_HOST has no host name", "set FRONTEND_HOST")
    try:
        found = {info[4][0] for info in socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)}
    except OSError as exc:
        return Check("https-name", False, f"{name} does not resolve ({exc})",
                     f"add an A/AAAA record for {name} pointing at this host")  # fmt: skip
    foreign = sorted(a for a in found if not _local_address(a))
    if foreign:
        return Check("https-name", False,
                     f"{name} resolves to {', '.join(foreign)}, not an address of this host",
                     f"point {name}'s DNS records here (behind NAT: make sure ports 80 and 443 "
                     "of those addresses are forwarded to this host)")  # fmt: skip
    return Check("https-name", True, f"{name} resolves to this host ({', '.join(sorted(found))})")


def _local_address(address: str) -> bool:
    """Whether ``address`` belongs to this host: only then can a socket be bound to it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def _disk(c: Context, settings: Settings) -> Check:
    free = shutil.disk_usage(settings.root).free / 2**30
    if free < 5:
        return Check("disk", False, f"{free:.1f} GiB free", "free disk space (5 GiB minimum)")
    return Check("disk", True, f"{free:.1f} GiB free")


def _images(c: Context, settings: Settings) -> Check:
    names = ImageNames.from_settings(settings)
    wanted = [names.ref(t) for t in PRODUCTION_TARGETS]
    wanted += [
        settings.get("POSTGRES_IMAGE", "postgres:17"),
        settings.get("REDIS_IMAGE", "redis:8"),
    ]
    if not engine.engine_answers():
        return Check("images", False, "engine down", "invoke engine")
    missing = missing_images(wanted)
    if missing:
        return Check(
            "images", False, f"missing {', '.join(missing)}", "invoke pull, or invoke build"
        )
    return Check("images", True, f"{len(wanted)} images present")


def _volumes(c: Context, settings: Settings) -> Check:
    if not engine.engine_answers():
        return Check("volumes", False, "engine down", "invoke engine")
    with engine.client() as handle:
        names = {v.name for v in handle.volumes.list()}
    live = {DB_VOLUME: db_volume(settings)}  # the one upgrade-postgres moved the cluster to
    wanted = [volume_name(settings.project, live.get(v, v)) for v in DATA_VOLUMES]
    missing = [v for v in wanted if v not in names]
    if len(missing) == len(wanted):
        return Check("volumes", True, "none yet: this stack is not deployed",
                     "next: `invoke up` for a new site, or `invoke migrate-from-7x --from PATH` "
                     "to move a 7.x one (before any `invoke up`)", info=True)  # fmt: skip
    if missing:
        return Check("volumes", False, f"only some exist, missing {', '.join(missing)}",
                     "`invoke up` creates them empty; if they held data, `invoke restore "
                     "FOLDER` from your last backup")  # fmt: skip
    return Check("volumes", True, f"{', '.join(DATA_VOLUMES)} present")


CHECKS: dict[str, Callable[[Context, Settings], Check]] = {
    "engine": _engine,
    "compose": _compose,
    "env": _env,
    "custom": _custom,
    "proxies": _proxies,
    "numbers": _numbers,
    "port": _port,
    "disk": _disk,
    "images": _images,
    "volumes": _volumes,
    "https-env": _https_env,
    "https-ports": _https_ports,
    "https-name": _https_name,
}
#: What `invoke doctor` runs; with --https, the overlay's checks, whose port check
#: covers both of the overlay's ports (80, 443) instead of nginx's.
PLAIN = tuple(name for name in CHECKS if not name.startswith("https-"))
HTTPS = tuple(name for name in CHECKS if name != "port")


def run_checks(c: Context, settings: Settings, names: Iterable[str] = PLAIN) -> list[Check]:
    return [CHECKS[name](c, settings) for name in names]


def table(checks: list[Check]) -> str:
    from .ops import format_table

    rows = []
    for check in checks:
        mark = "FAIL" if not check.ok else "INFO" if check.info else "PASS"
        fix = f"  -> {check.fix}" if (not check.ok or check.info) and check.fix else ""
        rows.append((mark, check.name, f"{check.detail}{fix}"))
    return format_table(rows)


def require(c: Context, settings: Settings, *names: str) -> None:
    """Run the named checks; the first failure stops the task with one line and its fix."""
    for check in run_checks(c, settings, names):
        if not check.ok:
            raise StackError(f"{check.name}: {check.detail}. Fix: {check.fix}")
