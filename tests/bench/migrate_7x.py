"""Benchmark of `invoke migrate-from-7x` on a sizeable 7.x deployment; prints ratios.

    MEDIACMS_ENV_FILE=.build/ci.env python tests/bench/migrate_7x.py [--files N] [--rows N]

Builds the legacy monolith of tests/e2e/legacy (PostgreSQL 15), adds N rows to a table
and N media files of 100 kB (default: 100,000 rows, 10,000 files = 1 GB), times the
whole migration once, then its media copy step against a plain `tar | tar` copy of the
same folder, alternated --rounds times (page cache dropped and sync included in both).
Everything it creates is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from invoke import Context

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests/e2e")]

from conftest import free_port, new_deployment  # noqa: E402
from legacy import create_legacy  # noqa: E402

from mediacms_stack.procedures import migrate7x  # noqa: E402

FILE_BYTES = 100_000


def report(name: str, value: str) -> None:
    print(f"{name:<58} {value}", flush=True)


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        print("(could not drop the page cache; copies may be served from memory)")


def plain_tar_copy(source: Path, scratch: Path) -> float:
    target = scratch / "tar-copy"
    target.mkdir()
    drop_caches()
    started = time.perf_counter()
    subprocess.run(f"tar -C '{source}' -cf - . | tar -C '{target}' -xf -", shell=True,  # noqa: S602
                   check=True)  # fmt: skip
    subprocess.run(["sync"], check=True)
    seconds = time.perf_counter() - started
    shutil.rmtree(target)
    return seconds


def timed_copy(compose, media: Path) -> float:
    """migrate7x.copy_media into a fresh volume of a scratch project, removed afterwards."""
    drop_caches()
    started = time.perf_counter()
    migrate7x.copy_media(Context(), compose, media)
    subprocess.run(["sync"], check=True)
    seconds = time.perf_counter() - started
    subprocess.run(compose.argv("down", "--volumes"), check=True, capture_output=True)
    return seconds


def fill_media(media: Path, files: int) -> None:
    for index in range(files):
        folder = media / "original" / "bench" / f"{index // 500:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"clip-{index:05d}.bin").write_bytes(os.urandom(FILE_BYTES))
    (media / ".operator").mkdir(exist_ok=True)
    (media / ".operator" / ".keep").write_text("dotfile\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-migrate-", dir="/var/tmp"))
    old = create_legacy(root / "old", free_port(), f"bench-legacy-{os.getpid()}")
    (root / "new").mkdir()
    new = new_deployment(root / "new", f"bench-migrate-{os.getpid()}")
    try:
        old.dc("up", "--detach")
        old.wait_healthy()
        rows = f"generate_series(1, {args.rows:d}) g"
        sql = f"INSERT INTO files_category (title, description) SELECT 'bench-' || g, repeat(md5(g::text), 4) FROM {rows}"  # noqa: S608
        old.dc("exec", "-T", "db", "psql", "-U", "mediacms", "-d", "mediacms", "-c", sql)
        old.dc("stop")
        media = old.tree / "media_files"
        fill_media(media, args.files)
        size = sum(p.stat().st_size for p in media.rglob("*") if p.is_file())
        report("media", f"{args.files} files, {size / 1e9:.2f} GB; {args.rows} extra rows")

        drop_caches()
        started = time.perf_counter()
        done = new.invoke("migrate-from-7x", "--from", str(old.tree))
        total = time.perf_counter() - started
        result = json.loads(max((new.home / "backups").glob("migrate-7x-*.json")).read_text())
        for step, seconds in result["seconds"].items():
            report(f"migrate-from-7x step: {step}", f"{seconds:7.1f} s")
        report("migrate-from-7x wall time (invoke, incl. start-up)", f"{total:7.1f} s")
        report("rows restored and checked", str(result["rows"]))
        report("share of the migration spent copying media",
               f"{result['seconds']['copy media'] / total:.2f}")  # fmt: skip

        # The copy step alone against plain tar, alternated, cold cache, sync included.
        scratch = replace(new.compose, project=f"bench-copy-{os.getpid()}")
        tars, ours = [], []
        for _ in range(args.rounds):
            tars.append(plain_tar_copy(media, root))
            ours.append(timed_copy(scratch, media))
        tar, our = statistics.median(tars), statistics.median(ours)
        report(f"plain tar | tar copy, median of {args.rounds}",
               f"{tar:7.1f} s  {' / '.join(f'{t:.1f}' for t in tars)}")  # fmt: skip
        report(f"migrate-from-7x media copy, median of {args.rounds}",
               f"{our:7.1f} s  {' / '.join(f'{t:.1f}' for t in ours)}  ({size / 1e6 / our:.0f} MB/s)")  # fmt: skip
        report("media copy throughput / tar throughput (goal >= 0.9)", f"{tar / our:.2f}")
        if "verified" not in done.stdout:
            raise SystemExit("migration output lacks the verification line")
    finally:
        new.dc("down", "--volumes", "--remove-orphans", check=False)
        old.dc("down", "--volumes", "--remove-orphans", check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
