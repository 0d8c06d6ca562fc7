"""The media gate's cost, side by side in one run: 1 KiB ranges of gated files (private,
as its owner; public, anonymous) against the same ranges of an ungated media file, with
nginx keeping the gate's decisions (MEDIA_GATE_CACHE_SECONDS as in .env) and with the
cache off (0), nginx recreated between the two, rounds alternated.

    python tests/bench/gate.py        (the test app's images: MEDIACMS_ENV_FILE)

tests/bench/real.py measures the same on a real MediaCMS tree. Exits non-zero when a
ratio with the cache is below GOAL. The stack is throwaway and removed at the end.
"""

from __future__ import annotations

import os
import shutil
import statistics
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


def set_lifetime(stack, seconds: str) -> None:
    config.update(stack.settings, {"MEDIA_GATE_CACHE_SECONDS": seconds})
    stack.dc("up", "--detach", "--wait", "nginx")


def media_gate(stack, ungated: str, gated: dict[str, tuple[str, tuple[str, ...]]]) -> bool:
    """req/s of each gated path (with its headers) and of the ungated one, decisions kept
    and not; prints the ratios and returns whether every kept one reached GOAL."""
    kept = stack.settings.get("MEDIA_GATE_CACHE_SECONDS", "10")
    modes = {f"kept {kept} s": kept, "cache off": "0"}
    rates: dict[tuple[str, str], list[float]] = {}
    try:
        for _ in range(ROUNDS):
            for mode, seconds in modes.items():
                set_lifetime(stack, seconds)
                nginx = nginx_url(stack)
                runs = {"ungated": (ungated, ()), **gated}
                for kind, (path, headers) in runs.items():
                    rate = wrk(stack, nginx + path, headers=(RANGE, *headers))
                    rates.setdefault((mode, kind), []).append(rate)
    finally:
        set_lifetime(stack, kept)
    reached = True
    for kind in gated:
        said = []
        for mode in modes:
            rate, base = (statistics.median(rates[mode, k]) for k in (kind, "ungated"))
            said.append(f"{mode} {rate:.0f} vs {base:.0f}: ratio {rate / base:.2f}")
        first = next(iter(modes))
        ratio = statistics.median(rates[first, kind]) / statistics.median(rates[first, "ungated"])
        reached &= ratio >= GOAL
        report(f"media gate: {kind} vs ungated (1 KiB ranges, req/s, goal {GOAL})",
               "; ".join(said))  # fmt: skip
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
        reached = media_gate(stack, "/media/userlogos/user.jpg", {
            "private original, its owner": (paths["private"], (cookie,)),
            "public original, anonymous": (paths["public"], ()),
        })  # fmt: skip
    finally:
        stack.dc("down", "--volumes", "--remove-orphans", check=False)
        shutil.rmtree(home, ignore_errors=True)
    if not reached:
        sys.exit(f"media gate: a ratio with the cache is below {GOAL}")


if __name__ == "__main__":
    main()
