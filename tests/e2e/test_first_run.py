"""The README's first command on a stock Debian: no pip, PEP 668, nothing prepared.

The checkout (as git sees it) is copied into a fresh container made from our Debian
base, which has no python3 at all; the README's install step runs there as written,
through `invoke --list` and `invoke init`. apt and PyPI are reached through the
network; behind this machine's TLS-intercepting proxy pip is given the host's CA
bundle (PIP_CERT), as a site behind such a proxy would.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from dotenv import dotenv_values

from mediacms_stack.stack import config

pytestmark = pytest.mark.e2e

REPO = config.ROOT
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def readme_first_command() -> str:
    block = re.search(r"```sh\n(.*?)\n", (REPO / "README.md").read_text()).group(1)
    return block.split("#", 1)[0].strip()


def test_readme_install_step_works_on_a_stock_debian(tmp_path):
    first = readme_first_command()
    assert first.endswith("&& invoke init && invoke up"), first
    step = first.removesuffix(" && invoke up").replace(
        "invoke init", "invoke --list && invoke init"
    )
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout  # fmt: skip
    archive = tmp_path / "checkout.tar"
    subprocess.run(["tar", "-c", "-f", str(archive), "--null", "-T", "-"], cwd=REPO,
                   input=files, check=True)  # fmt: skip
    base = dotenv_values(REPO / os.environ.get("MEDIACMS_ENV_FILE", config.ENV_FILE))
    image = base.get("BASE_IMAGE") or "mediacms-local/debian:trixie"
    ca = ["-v", f"{HOST_CA}:/etc/ssl/host-ca.crt:ro", "-e", "PIP_CERT=/etc/ssl/host-ca.crt"]
    script = (f"mkdir /src && tar -x -C /src && cd /src && ! command -v pip && {step} "
              "&& ls -l .env && stat -c %a .env && cat .env")  # fmt: skip
    name = f"mediacms-first-run-{os.getpid()}"
    try:
        with archive.open("rb") as stdin:
            done = subprocess.run(["docker", "run", "--rm", "-i", "--name", name,
                                   *(ca if HOST_CA.is_file() else []), image, "sh", "-c", script],
                                  stdin=stdin, capture_output=True, text=True, timeout=900,
                                  check=False)  # fmt: skip
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    out = done.stdout
    assert "[install] apt-get install python3 python3-venv" in out
    assert re.search(r"^\s+backup-db\b", out, re.M) and re.search(r"^\s+upgrade\b", out, re.M)
    assert "wrote /src/.env (mode 600)" in out and "next: `invoke up`" in out
    assert "\n600\n" in out and re.search(r"^SECRET_KEY=\S{40,}$", out, re.M)
