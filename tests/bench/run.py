"""Benchmarks measured side by side in one run; prints ratios (the machines are noisy).

    python tests/bench/run.py [--skip-cold]

Uses the images built from tests/app (MEDIACMS_ENV_FILE, as `nox -s bench` sets it) and a
throwaway stack on 127.0.0.1 that is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dotenv import dotenv_values
from invoke import Context

from mediacms_stack.engines import engine
from mediacms_stack.engines.compose import Compose
from mediacms_stack.images import mediacms
from mediacms_stack.stack import config, model
from tests.timing import _cpu_times

REPO = config.ROOT
SEED_MB = {"web": 800, "worker": 800, "worker-full": 1200, "nginx": 50}


def sh(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def report(name: str, value: str) -> None:
    print(f"{name:<58} {value}", flush=True)


def image_sizes(settings: config.Settings) -> None:
    import docker

    client = docker.from_env()
    names = model.ImageNames.from_settings(settings)
    layers = {}
    for target in ("web", "worker", "worker-full", "nginx", "dev"):
        image = client.images.get(names.ref(target))
        mb = image.attrs["Size"] / 1e6
        layers[target] = image.attrs["RootFS"]["Layers"]
        seed = SEED_MB.get(target)
        ratio = f"  ratio to seed {seed} MB: {mb / seed:.2f}" if seed else ""
        report(f"size {target}", f"{mb:7.1f} MB{ratio}")
    shared = len(set(layers["web"]) & set(layers["worker"]))
    report(
        "layers shared by web and worker",
        f"{shared} of {len(layers['web'])}/{len(layers['worker'])}",
    )
    history = client.images.get(names.ref("web")).history()
    for layer in sorted(history, key=lambda h: h["Size"], reverse=True)[:5]:
        report("  largest web layer", f"{layer['Size'] / 1e6:7.1f} MB {layer['CreatedBy'][:70]}")
    client.close()


def rebuild_ratio(settings: config.Settings, skip_cold: bool) -> None:
    tree = Path(tempfile.mkdtemp(prefix="bench-tree-"))
    shutil.copytree(REPO / "tests/app", tree, dirs_exist_ok=True)
    env = {**os.environ}
    invoke = [
        sys.executable,
        "-m",
        "invoke",
        "--search-root",
        str(REPO),
        "build",
        "--target",
        "web",
    ]
    sh(*invoke, "--source", str(tree), env=env)  # warm: same content as the last build
    with (tree / "files" / "views.py").open("a") as handle:
        handle.write(f"\n# bench edit {time.time()}\n")
    rebuild = timed(sh, *invoke, "--source", str(tree), env=env)
    report("rebuild web after changing one source file", f"{rebuild:6.1f} s")
    if skip_cold:
        return
    builder_env = {**env, "DOCKER_BUILDKIT": "1"}
    argv = mediacms.build_argv("web", settings, ca_bundle=settings.get("BUILD_CA_BUNDLE"),
                               builder=engine.builder(Context()))  # fmt: skip
    argv = [*argv[:-1], "--no-cache", "--tag", "bench/cold:web", "."]
    cold = timed(sh, *argv, cwd=REPO, env=builder_env)
    report("cold build of web (--no-cache, pip cache mount kept)", f"{cold:6.1f} s")
    report("ratio rebuild / cold (goal <= 0.10)", f"{rebuild / cold:.3f}")


def invoke_list() -> None:
    runs = [timed(sh, sys.executable, "-m", "invoke", "--search-root", str(REPO), "--list")
            for _ in range(5)]  # fmt: skip
    report(
        "invoke --list wall time, median of 5 (goal < 0.3 s)", f"{statistics.median(runs):.3f} s"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stack_benchmarks(built: dict, *, only_backups: bool = False, db_rows: int = 600_000) -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    shutil.copy(REPO / "docker-compose.yaml", home)
    (home / "custom").mkdir()
    keys = ("MEDIACMS_VERSION", "IMAGE_REGISTRY", "POSTGRES_IMAGE", "REDIS_IMAGE")
    overrides = {k: built[k] for k in keys if built.get(k) is not None}
    overrides |= {"COMPOSE_PROJECT_NAME": "mediacms-bench", "HTTP_BIND": "127.0.0.1",
                  "HTTP_PORT": str(free_port()), "ADMIN_PASSWORD": "bench-pw-1"}  # fmt: skip
    config.init(home, overrides, example=REPO / config.EXAMPLE_FILE)
    compose = Compose.for_settings(config.load(home))
    env = {**os.environ, "MEDIACMS_HOME": str(home)}
    env.pop("MEDIACMS_ENV_FILE", None)

    def dc(*args: str, **kwargs):
        return sh(*compose.argv(*args), **kwargs)

    def up():
        dc("up", "--detach", "--wait", "--wait-timeout", "300")

    try:
        if only_backups:
            up()
            backup_benchmarks(compose, env, home, rows=db_rows)
            return
        alone = busy_cores(IDLE_SECONDS / 3)
        first = timed(up)
        report("up to all healthy, fresh volumes (incl. migrations)", f"{first:6.1f} s")
        idle_cost(alone, "mediacms-bench")
        dc("down")
        empty = timed(up)
        report("up to all healthy, images present, empty media", f"{empty:6.1f} s")
        fill = (
            "import os; r='/home/mediacms.io/mediacms/media_files/bench';"
            "[os.makedirs(f'{r}/{d}', exist_ok=True) for d in range(100)];"
            "[open(f'{r}/{i % 100}/{i}.bin', 'wb').write(b'x') for i in range(100000)]"
        )
        dc("exec", "-T", "web", "python", "-c", fill)
        dc("down")
        full = timed(up)
        report("up to all healthy, 100,000 files in media_files", f"{full:6.1f} s")
        report("ratio 100k files / empty (goal <= 1.1)", f"{full / empty:.2f}")
        dc("exec", "-T", "web", "rm", "-rf", "/home/mediacms.io/mediacms/media_files/bench")

        scale = timed(dc, "up", "--detach", "--no-recreate", "--wait", "--scale", "celery_short=3",
                      "celery_short")  # fmt: skip
        report("scale celery_short 1 -> 3 healthy", f"{scale:6.1f} s")
        dc("up", "--detach", "--no-recreate", "--scale", "celery_short=1", "celery_short")

        backup_benchmarks(compose, env, home, rows=db_rows)
    finally:
        subprocess.run(compose.argv("down", "--volumes"), capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


#: how long the stack idles while its cost is measured (after SETTLE_SECONDS)
IDLE_SECONDS, SETTLE_SECONDS = 60, 15


def busy_cores(seconds: float) -> float:
    """Processors busy on this machine over ``seconds``, in cores (from /proc/stat)."""

    busy, total = _cpu_times()
    time.sleep(seconds)
    busy2, total2 = _cpu_times()
    return (busy2 - busy) / (total2 - total) * (os.cpu_count() or 1)


def idle_cost(alone: float, project: str) -> None:
    """What the healthy stack costs while nobody uses it: the processors it keeps busy
    and the health checks the engine runs for it (each one an exec: the engine's own
    work for it, measured here at about 65 ms of CPU, outweighs most checks)."""
    time.sleep(SETTLE_SECONDS)
    since = time.time()
    cores = busy_cores(IDLE_SECONDS)
    events = sh("docker", "events", "--since", f"{since:.0f}", "--until", f"{time.time():.0f}",
                "--filter", "type=container", "--filter", "event=exec_start",
                "--filter", f"label=com.docker.compose.project={project}",
                "--format", "{{.Actor.Attributes.name}}").stdout.split()  # fmt: skip
    report("idle stack: processors busy beyond the machine's own", f"{cores - alone:6.3f} cores")
    report("idle stack: health checks (execs) per second", f"{len(events) / IDLE_SECONDS:6.2f}")


#: A MediaCMS-shaped database in the test application's own tables: media rows with
#: file paths, one category link each, and login sessions. With the default 600,000 rows
#: per table: 570 MB, a 133 MB dump, 8 s of pg_dump here, so that the ratio measures
#: throughput; the fixed cost per run (~0.3 s: interpreter, invoke, checks) is printed
#: on its own line (at 300,000 rows, a 3.8 s dump, it alone takes the ratio to ~0.9).
FILL_SQL = """
INSERT INTO files_media (title, media_file, encoded_file, thumbnail, duration,
                         encoding_status, add_date, user_id)
SELECT 'Clip ' || i || ' ' || md5(i::text),
       'original/2026/11/26/' || md5(i::text) || md5((i + 1)::text) || '.mp4',
       'encoded/' || md5(i::text) || '-720.mp4', 'original/thumbnails/' || md5(i::text) || '.jpg',
       (i % 3600) + 0.5, 'success', now() - i * interval '1 minute',
       (SELECT min(id) FROM users_user)
FROM generate_series(1, {rows}) AS i;
INSERT INTO files_media_category (media_id, category_id)
SELECT id, (SELECT min(id) FROM files_category) FROM files_media;
INSERT INTO django_session (session_key, session_data, expire_date)
SELECT substr(md5(i::text) || md5((-i)::text), 1, 40),
       encode(sha512(i::text::bytea), 'base64') || encode(sha512((i * 7)::text::bytea), 'base64'),
       now() + interval '14 days'
FROM generate_series(1, {rows}) AS i;
ANALYZE;
"""


def side_by_side(name: str, plain, ours, rounds: int) -> tuple[float, float, float]:
    """Alternate the plain command and ours (order swapped every round, so drift and the
    neighbours' load hit both alike); medians of the times and of the per-round ratios."""
    pairs = []
    for index in range(rounds):
        if index % 2:
            o = timed(ours)
            p = timed(plain)
        else:
            p = timed(plain)
            o = timed(ours)
        pairs.append((p, o))
        print(f"  {name} round {index + 1}: plain {p:5.2f} s, ours {o:5.2f} s", flush=True)
    plain_median = statistics.median(p for p, _ in pairs)
    ours_median = statistics.median(o for _, o in pairs)
    return plain_median, ours_median, statistics.median(p / o for p, o in pairs)


def backup_benchmarks(compose: Compose, env: dict, home: Path, rows: int = 600_000,
                      rounds: int = 5) -> None:  # fmt: skip
    """backup-db against pg_dump and backup-media against tar, same data, same run."""
    settings = config.load(home)
    user, db = settings.get("POSTGRES_USER", "mediacms"), settings.get("POSTGRES_DB", "mediacms")
    backups = home / "backups"
    invoke = [sys.executable, "-m", "invoke", "--search-root", str(REPO)]

    psql = compose.argv("exec", "-T", "db", "psql", "-U", user, "-d", db, "-v", "ON_ERROR_STOP=1",
                        "-q", "-At")  # fmt: skip
    plain_dump = compose.argv("exec", "-T", "db", "pg_dump", "-U", user, "-d", db,
                              "--format=custom")  # fmt: skip

    def plain_db():
        subprocess.run(plain_dump, stdout=subprocess.DEVNULL, check=True)

    def ours_db():
        sh(*invoke, "backup-db", "--dest", str(backups), "--keep", "1", env=env)

    # What each run costs on top of pg_dump whatever the size: python, invoke, checks,
    # the snapshot session, checksum and manifest (the database is still nearly empty).
    empty_plain, empty_ours, _ = side_by_side("backup-db, empty database", plain_db, ours_db, 3)
    sh(*psql, input=FILL_SQL.format(rows=rows))
    size = sh(*psql, "-c", "SELECT pg_database_size(current_database())").stdout.strip()
    plain, ours, ratio = side_by_side("backup-db", plain_db, ours_db, rounds)
    report("backup-db fixed cost per run (empty database, ours - plain)",
           f"{empty_ours - empty_plain:6.2f} s")  # fmt: skip
    dump = max(backups.glob("mediacms-db-*.dump")).stat().st_size
    label = f"{3 * rows:,} rows, {int(size) / 1e6:.0f} MB database, {dump / 1e6:.0f} MB dump"
    report(f"pg_dump -Fc to /dev/null ({label})", f"{plain:6.2f} s")
    report("invoke backup-db (counts, migrations, image ids, sha256, manifest)", f"{ours:6.2f} s")

    make_media = (
        "import os; r='/home/mediacms.io/mediacms/media_files/original';"
        "os.makedirs(r, exist_ok=True);"
        "[open(f'{r}/clip{i}.mp4', 'wb').write(os.urandom(8 << 20)) for i in range(32)]"
    )
    sh(*compose.argv("exec", "-T", "web", "python", "-c", make_media))
    tar = compose.argv("run", "--rm", "--no-deps", "-T", "--entrypoint", "tar", "web", "-C",
                       "/home/mediacms.io/mediacms/media_files", "-cz", "-f", "-", ".")  # fmt: skip
    plain_media, ours_media, media_ratio = side_by_side(
        "backup-media",
        lambda: subprocess.run(tar, stdout=subprocess.DEVNULL, check=True),
        lambda: sh(*invoke, "backup-media", "--dest", str(backups), "--keep", "1", env=env),
        max(3, rounds - 2),
    )
    report("tar -cz of the media volume to /dev/null (256 MB)", f"{plain_media:6.2f} s")
    report("invoke backup-media (incl. sha256)", f"{ours_media:6.2f} s")
    report("throughput ratio backup-db / pg_dump (goal >= 0.9)", f"{ratio:.2f}")
    report("throughput ratio backup-media / tar (goal >= 0.9)", f"{media_ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-cold", action="store_true", help="skip the --no-cache web build")
    parser.add_argument(
        "--skip-stack", action="store_true", help="skip the running-stack benchmarks"
    )
    parser.add_argument("--only-backups", action="store_true",
                        help="only the backup-db and backup-media ratios")  # fmt: skip
    parser.add_argument("--db-rows", type=int, default=600_000,
                        help="rows per table filled for the backup-db ratio (3 tables)")  # fmt: skip
    args = parser.parse_args()
    env_file = os.environ.get("MEDIACMS_ENV_FILE", config.ENV_FILE)
    settings = config.load(REPO, env_file)
    if args.only_backups:
        stack_benchmarks(dotenv_values(REPO / env_file), only_backups=True, db_rows=args.db_rows)
        return
    image_sizes(settings)
    invoke_list()
    rebuild_ratio(settings, args.skip_cold)
    if not args.skip_stack:
        stack_benchmarks(dotenv_values(REPO / env_file), db_rows=args.db_rows)


if __name__ == "__main__":
    main()
