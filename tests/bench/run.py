"""Benchmarks measured side by side in one run; prints ratios (the machines are noisy).

    python tests/bench/run.py [--skip-cold]

Uses the images built from tests/app (MEDIACMS_ENV_FILE, as `nox -s bench` sets it) and a
throwaway stack on 127.0.0.1 that is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dotenv import dotenv_values

from mediacms_stack import config, images
from mediacms_stack.compose import Compose

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
    names = images.ImageNames.from_settings(settings)
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
    argv = images.build_argv("web", settings, ca_bundle=settings.get("BUILD_CA_BUNDLE"))
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


def stack_benchmarks(built: dict) -> None:
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
        first = timed(up)
        report("up to all healthy, fresh volumes (incl. migrations)", f"{first:6.1f} s")
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

        user = "mediacms"
        dc("exec", "-T", "db", "pgbench", "-i", "-s", "20", "-U", user, "mediacms")
        plain_db = timed(subprocess.run, shlex.join(compose.argv(
            "exec", "-T", "db", "pg_dump", "-U", user, "-d", "mediacms", "--format=custom")) + " > /dev/null",
            shell=True, check=True)  # fmt: skip
        backups = home / "backups"
        ours_db = timed(sh, sys.executable, "-m", "invoke", "--search-root", str(REPO),
                        "backup-db", "--dest", str(backups), env=env)  # fmt: skip
        report("pg_dump -Fc to /dev/null (2M pgbench rows)", f"{plain_db:6.1f} s")
        report("invoke backup-db (incl. row counts, sha256, manifest)", f"{ours_db:6.1f} s")
        report("throughput ratio backup-db / pg_dump (goal >= 0.9)", f"{plain_db / ours_db:.2f}")

        make_media = (
            "import os; r='/home/mediacms.io/mediacms/media_files/original';"
            "os.makedirs(r, exist_ok=True);"
            "[open(f'{r}/clip{i}.mp4', 'wb').write(os.urandom(8 << 20)) for i in range(32)]"
        )
        dc("exec", "-T", "web", "python", "-c", make_media)
        tar = compose.argv("run", "--rm", "--no-deps", "-T", "--entrypoint", "tar", "web", "-C",
                           "/home/mediacms.io/mediacms/media_files", "-cz", "-f", "-", ".")  # fmt: skip
        plain_media = timed(
            subprocess.run, shlex.join(tar) + " > /dev/null", shell=True, check=True
        )
        ours_media = timed(sh, sys.executable, "-m", "invoke", "--search-root", str(REPO),
                           "backup-media", "--dest", str(backups), env=env)  # fmt: skip
        report("tar -cz of the media volume to /dev/null (256 MB)", f"{plain_media:6.1f} s")
        report("invoke backup-media (incl. sha256)", f"{ours_media:6.1f} s")
        report(
            "throughput ratio backup-media / tar (goal >= 0.9)", f"{plain_media / ours_media:.2f}"
        )
    finally:
        subprocess.run(compose.argv("down", "--volumes"), capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-cold", action="store_true", help="skip the --no-cache web build")
    parser.add_argument(
        "--skip-stack", action="store_true", help="skip the running-stack benchmarks"
    )
    args = parser.parse_args()
    env_file = os.environ.get("MEDIACMS_ENV_FILE", config.ENV_FILE)
    settings = config.load(REPO, env_file)
    image_sizes(settings)
    invoke_list()
    rebuild_ratio(settings, args.skip_cold)
    if not args.skip_stack:
        stack_benchmarks(dotenv_values(REPO / env_file))


if __name__ == "__main__":
    main()
