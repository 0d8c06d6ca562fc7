"""The media gate's cost, side by side in one run: 1 KiB ranges of gated files (private,
as its owner; public, anonymous) against the same ranges of the same files with the gate
off (nginx with media-gate-off.conf, as for a tree without media-auth), and of an
ungated logo for reference; with nginx keeping the gate's decisions
(MEDIA_GATE_CACHE_SECONDS as in .env) and with the cache off (0): three nginx of the
stack side by side, measured in turn (media_gate).

    python tests/bench/gate.py        (the test app's images: MEDIACMS_ENV_FILE)

The goal is judged against the same file without the gate: an original lies two folders
deeper than a logo, and nginx checks each folder for links (disable_symlinks), so the logo
makes a gated file look slower by what its path costs with or without a gate.
tests/bench/real.py measures the same on a real MediaCMS tree. Exits non-zero when a
ratio with the cache is below GOAL. The stack is throwaway and removed at the end.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mediacms_stack.stack import config
from tests.bench.load import nginx_url, site_name, wrk
from tests.e2e.conftest import ADMIN_PASSWORD, new_deployment

GOAL = 0.8  # gated (decisions kept) / ungated, issue 21
ROUNDS = 8  # each mode measured once a round; ratios taken within a round
SECONDS = 3  # of wrk per measure
RANGE = "Range: bytes=0-1023"


def report(name: str, value: str) -> None:
    print(f"{name:<62} {value}", flush=True)


def extra_nginx(stack, name: str, seconds: str | None) -> str:
    """One more nginx of the stack beside its own (`compose run`, no published port),
    keeping the gate's decisions ``seconds`` (0: not at all) or, with None, without the
    gate: the tree-without-media-auth snippet over the image's own. Its container id."""
    options = ["-e", f"MEDIA_GATE_CACHE_SECONDS={seconds or '0'}"]
    if seconds is None:
        snippet = config.ROOT / "config/nginx/media-gate-off.conf"
        options += ["-v", f"{snippet}:/etc/nginx/snippets/media-gate.conf:ro"]
    stack.dc("run", "--detach", "--no-deps", "--name", name, *options, "nginx")
    for _ in range(120):  # its health check, at most a minute
        state = subprocess.run(["docker", "inspect", "--format", "{{.State.Health.Status}}",
                                name], capture_output=True, text=True, check=True).stdout  # fmt: skip
        if state.strip() == "healthy":
            return name
        time.sleep(0.5)
    raise AssertionError(f"{name} was not healthy within a minute")


def media_gate(stack, gated: dict[str, tuple[str, tuple[str, ...]]], logo: str) -> bool:
    """req/s of each gated path (with its headers), decisions kept and not, against the
    same path without the gate and an ungated ``logo``; prints the ratios and returns
    whether every kept one reached GOAL against its own file without the gate.

    The three modes are three nginx of the stack running at once (its own, and two
    beside it), measured in turn for a few seconds each, ROUNDS times in alternating
    order: a ratio is taken within a round, seconds apart, and the median of the rounds'
    ratios is the figure (the machine's drift between rounds cancels out)."""
    kept = stack.settings.get("MEDIA_GATE_CACHE_SECONDS", "10")
    first = f"kept {kept} s"
    prefix = f"{stack.compose.project}-bench"
    extra = {"cache off": (f"{prefix}-nocache", "0"), "no gate": (f"{prefix}-nogate", None)}
    runs = {"logo": (logo, ()), **gated}
    rates: dict[tuple[str, str], list[float]] = {}
    try:
        urls = {first: nginx_url(stack)}
        for mode, (name, seconds) in extra.items():
            urls[mode] = nginx_url(stack, extra_nginx(stack, name, seconds))
        for index in range(ROUNDS):
            order = list(urls) if index % 2 == 0 else list(reversed(urls))
            for mode in order:
                for kind, (path, headers) in runs.items():
                    rate = wrk(site_name(stack), urls[mode] + path, seconds=SECONDS,
                               headers=(RANGE, *headers))  # fmt: skip
                    rates.setdefault((mode, kind), []).append(rate)
    finally:
        subprocess.run(["docker", "rm", "--force", *(name for name, _ in extra.values())],
                       capture_output=True, check=False)  # fmt: skip
    median = {key: statistics.median(values) for key, values in rates.items()}

    def ratio(mode: str, kind: str, base: tuple[str, str]) -> tuple[float, float, float]:
        """Median, lowest and highest of the rounds' ratios of (mode, kind) to base."""
        each = [a / b for a, b in zip(rates[mode, kind], rates[base], strict=True)]
        return statistics.median(each), min(each), max(each)

    reached = True
    for kind in gated:
        said = []
        for mode in urls:
            if mode != "no gate":
                mid, low, high = ratio(mode, kind, ("no gate", kind))
                said.append(f"{mode} {median[mode, kind]:.0f} vs {median['no gate', kind]:.0f}:"
                            f" ratio {mid:.2f} ({low:.2f}-{high:.2f})")  # fmt: skip
        logo_ratio = ratio(first, kind, (first, "logo"))[0]
        said.append(f"(vs the ungated logo {median[first, 'logo']:.0f}: {logo_ratio:.2f}; "
                    f"the logo without the gate {median['no gate', 'logo']:.0f})")  # fmt: skip
        reached &= ratio(first, kind, ("no gate", kind))[0] >= GOAL
        report(f"media gate: {kind} vs the same file without the gate "
               f"(1 KiB ranges, req/s, median of {ROUNDS} rounds, goal {GOAL})",
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
