"""Pre-flight checks: a pass/fail table, and the subset each task needs before it runs."""

from __future__ import annotations

import py_compile
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import engine
from .config import SECRET_KEYS, Settings, missing_keys
from .images import ImageNames
from .ops import missing_images
from .shell import StackError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    #: a fine state worth knowing (shown as INFO, with the next step in ``fix``)
    info: bool = False


def _engine(settings: Settings) -> Check:
    import docker  # deferred: keeps `invoke --list` fast
    import docker.errors

    problem = engine.engine_problem()
    if problem is not None:
        return Check("engine", False, problem, "invoke engine (or start Docker)")
    client = docker.from_env()
    version = client.version().get("Version", "?")
    client.close()
    return Check("engine", True, f"Docker {version}")


def _compose(settings: Settings) -> Check:
    out = subprocess.run(["docker", "compose", "version", "--short"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    if out.returncode != 0 or not out.stdout.strip().lstrip("v").startswith("2"):
        return Check("compose", False, "docker compose v2 missing", "invoke engine")
    return Check("compose", True, f"compose {out.stdout.strip()}")


def _env(settings: Settings) -> Check:
    if settings.env_file is None or not settings.env_file.is_file():
        return Check("env", False, f"{settings.env_file} missing", "invoke init")
    missing = missing_keys(settings)
    empty = [k for k in SECRET_KEYS if not settings.get(k)]
    if missing or empty:
        return Check("env", False, f"missing {missing}, empty secrets {empty}",
                     "invoke init --force (or add the keys from .env.example)")  # fmt: skip
    mode = settings.env_file.stat().st_mode & 0o777
    if mode & 0o077:
        return Check("env", False, f"{settings.env_file} is mode {mode:o}, readable by others",
                     f"chmod 600 {settings.env_file}")  # fmt: skip
    return Check("env", True, f"{settings.env_file} complete, mode 600")


def _custom(settings: Settings) -> Check:
    path = settings.root / "custom" / "local_settings.py"
    if not path.is_file():
        return Check("custom", True, "no custom/local_settings.py (defaults)")
    try:
        py_compile.compile(str(path), doraise=True)
    except py_compile.PyCompileError as exc:
        return Check("custom", False, f"custom/local_settings.py: {exc.msg.strip()}",
                     "fix the syntax error in custom/local_settings.py")  # fmt: skip
    return Check("custom", True, "custom/local_settings.py compiles")


def _port(settings: Settings) -> Check:
    import docker  # deferred: keeps `invoke --list` fast
    import docker.errors

    bind = settings.get("HTTP_BIND", "0.0.0.0")  # noqa: S104 - the address compose publishes on
    port = int(settings.get("HTTP_PORT", "80"))
    # A port our own running nginx holds is fine; anything else is a conflict.
    if engine.engine_answers():
        client = docker.from_env()
        for container in client.containers.list(filters={"publish": str(port)}):
            project = container.labels.get("com.docker.compose.project")
            if project == settings.project:
                client.close()
                return Check("port", True, f"{bind}:{port} held by this stack's nginx")
        client.close()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bind, port))
        except OSError as exc:
            return Check("port", False, f"{bind}:{port} is taken ({exc.strerror})",
                         "free the port or set HTTP_PORT in .env")  # fmt: skip
    return Check("port", True, f"{bind}:{port} free")


def _disk(settings: Settings) -> Check:
    free = shutil.disk_usage(settings.root).free / 2**30
    if free < 5:
        return Check("disk", False, f"{free:.1f} GiB free", "free disk space (5 GiB minimum)")
    return Check("disk", True, f"{free:.1f} GiB free")


def _images(settings: Settings) -> Check:
    names = ImageNames.from_settings(settings)
    wanted = [names.ref(t) for t in ("web", "worker", "nginx")]
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


def _volumes(settings: Settings) -> Check:
    import docker  # deferred: keeps `invoke --list` fast
    import docker.errors

    if not engine.engine_answers():
        return Check("volumes", False, "engine down", "invoke engine")
    client = docker.from_env()
    names = {v.name for v in client.volumes.list()}
    client.close()
    wanted = [f"{settings.project}_{v}" for v in ("media_files", "logs", "postgres_data")]
    missing = [v for v in wanted if v not in names]
    if len(missing) == len(wanted):
        return Check("volumes", True, "none yet: this stack is not deployed",
                     "next: `invoke up` for a new site, or `invoke migrate-from-7x --from PATH` "
                     "to move a 7.x one (before any `invoke up`)", info=True)  # fmt: skip
    if missing:
        return Check("volumes", False, f"only some exist, missing {', '.join(missing)}",
                     "`invoke up` creates them empty; if they held data, `invoke restore "
                     "FOLDER` from your last backup")  # fmt: skip
    return Check("volumes", True, "media_files, logs, postgres_data present")


CHECKS: dict[str, Callable[[Settings], Check]] = {
    "engine": _engine,
    "compose": _compose,
    "env": _env,
    "custom": _custom,
    "port": _port,
    "disk": _disk,
    "images": _images,
    "volumes": _volumes,
}


def run_checks(settings: Settings, names: Iterable[str] = CHECKS) -> list[Check]:
    return [CHECKS[name](settings) for name in names]


def table(checks: list[Check]) -> str:
    from .ops import format_table

    rows = []
    for check in checks:
        mark = "FAIL" if not check.ok else "INFO" if check.info else "PASS"
        fix = f"  -> {check.fix}" if (not check.ok or check.info) and check.fix else ""
        rows.append((mark, check.name, f"{check.detail}{fix}"))
    return format_table(rows)


def require(settings: Settings, *names: str) -> None:
    """Run the named checks; the first failure stops the task with one line and its fix."""
    for check in run_checks(settings, names):
        if not check.ok:
            raise StackError(f"{check.name}: {check.detail}. Fix: {check.fix}")
