"""The media gate's cost, side by side in one run: 1 KiB ranges of gated files (private,
as its owner; public, anonymous) against the same ranges of the same files with the gate
off (nginx with media-gate-off.conf, as for a tree without media-auth), and of an
ungated logo for reference; with nginx keeping the gate's decisions
(MEDIA_GATE_CACHE_SECONDS as in .env) and with the cache off (0). nginx is recreated
between the modes, rounds alternated.

    python tests/bench/gate.py        (the test app's images: MEDIACMS_ENV_FILE)

The goal is judged against the same file without the gate: an original lies two folders
deeper than a logo, and nginx checks each folder for links (disable_symlinks), so the logo
makes a gated file look slower by what its path costs with or without a gate.
tests/bench/real.py measures the same on a real MediaCMS tree. Exits non-zero when a
ratio with the cache is below GOAL. The stack is throwaway and removed at the end.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mediacms_stack.stack import config
from tests.bench.load import nginx_url, wrk
from tests.e2e.conftest import ADMIN_PASSWORD, new_deployment

GOAL = 0.8  # gated (decisions kept) / ungated, issue 21
ROUNDS = 3
RANGE = "Range: bytes=0-1023"


def report(name: str, value: str) -> None:
    print(f"{name:<62} {value}", flush=True)


def start_nginx(stack, seconds: str | None) -> None:
    """nginx keeping the gate's decisions ``seconds`` (0: not at all), or, with None,
    without the gate: the tree-without-media-auth snippet over the image's own."""
    config.update(stack.settings, {"MEDIA_GATE_CACHE_SECONDS": seconds or "0"})
    compose = stack.compose
    if seconds is None:
        override = stack.home / "bench-no-gate.yaml"
        override.write_text(
            "services:\n  nginx:\n    volumes:\n"
            f"      - {config.ROOT / 'config/nginx/media-gate-off.conf'}"
            ":/etc/nginx/snippets/media-gate.conf:ro\n"
        )
        compose = dataclasses.replace(compose, files=(*compose.files, str(override)))
    subprocess.run(compose.argv("up", "--detach", "--wait", "nginx"), check=True,
                   capture_output=True)  # fmt: skip


def media_gate(stack, gated: dict[str, tuple[str, tuple[str, ...]]], logo: str) -> bool:
    """req/s of each gated path (with its headers), decisions kept and not, against the
    same path without the gate and an ungated ``logo``; prints the ratios and returns
    whether every kept one reached GOAL against its own file without the gate."""
    kept = stack.settings.get("MEDIA_GATE_CACHE_SECONDS", "10")
    modes = {f"kept {kept} s": kept, "cache off": "0", "no gate": None}
    runs = {"logo": (logo, ()), **gated}
    rates: dict[tuple[str, str], list[float]] = {}
    try:
        for index in range(ROUNDS):
            order = list(modes) if index % 2 == 0 else list(reversed(modes))
            for mode in order:
                start_nginx(stack, modes[mode])
                nginx = nginx_url(stack)
                for kind, (path, headers) in runs.items():
                    rate = wrk(stack, nginx + path, headers=(RANGE, *headers))
                    rates.setdefault((mode, kind), []).append(rate)
    finally:
        start_nginx(stack, kept)
    rate = {key: statistics.median(values) for key, values in rates.items()}
    first = next(iter(modes))
    reached = True
    for kind in gated:
        base, logo_rate = rate["no gate", kind], rate[first, "logo"]
        said = [f"{mode} {rate[mode, kind]:.0f} vs {base:.0f}: ratio {rate[mode, kind] / base:.2f}"
                for mode in modes if mode != "no gate"]  # fmt: skip
        said.append(f"(vs the ungated logo {logo_rate:.0f}: {rate[first, kind] / logo_rate:.2f}; "
                    f"the logo without the gate {rate['no gate', 'logo']:.0f})")  # fmt: skip
        reached &= rate[first, kind] / base >= GOAL
        report(f"media gate: {kind} vs the same file without the gate "
               f"(1 KiB ranges, req/s, goal {GOAL})", "; ".join(said))  # fmt: skip
    return reached


def main() -> None:
    if not shutil.which("wrk"):
        sys.exit("wrk is missing (apt-get install wrk)")
    home = Path(tempfile.mkdtemp(prefix="bench-gate-"))
    stack = new_deployment(home, f"mediacms-bench-gate-{os.getpid()}")
    try:
        up = stack.invoke("up", check=False)
        if up.returncode != 0:
            sys.exit(f"invoke up failed:\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}")
        admin = ("admin", ADMIN_PASSWORD)
        paths = {}
        for state in ("private", "public"):
            made = requests.post(stack.url("/api/v1/media"), auth=admin, timeout=60,
                                 data={"title": state, "state": state},
                                 files={"media_file": (f"{state}.mp4", os.urandom(64 << 10))})  # fmt: skip
            made.raise_for_status()
            paths[state] = made.json()["original_url"]
        stack.dc("exec", "-T", "web", "sh", "-c", "mkdir -p media_files/userlogos && "
                 "head -c 65536 /dev/urandom > media_files/userlogos/user.jpg")  # fmt: skip
        login = requests.post(stack.url("/api/v1/login"), auth=admin, timeout=10)
        cookie = f"Cookie: sessionid={login.cookies['sessionid']}"
        reached = media_gate(stack, {
            "private original, its owner": (paths["private"], (cookie,)),
            "public original, anonymous": (paths["public"], ()),
        }, "/media/userlogos/user.jpg")  # fmt: skip
    finally:
        stack.dc("down", "--volumes", "--remove-orphans", check=False)
        shutil.rmtree(home, ignore_errors=True)
    if not reached:
        sys.exit(f"media gate: a ratio with the cache is below {GOAL}")


if __name__ == "__main__":
    main()
