"""A real SMTP server for the e-mail tests of the smoke and acceptance tiers.

The server (tests/e2e/smtp: aiosmtpd from Debian's archive) is a container of the test,
attached to the stack's `egress` network as `smtp-test`, the name EMAIL_HOST gives in
custom/local_settings.py: port 2525 takes any mail but refuses "refuse*" recipients,
2526 requires a login. It prints each message it accepts as one JSON line, which is how
a test reads what arrived.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import requests
from invoke import Context

from mediacms_stack.engines import engine
from mediacms_stack.images import bootstrap
from mediacms_stack.stack import config

IMAGE = "mediacms-local/smtp:test"
SMTP_NAME = "smtp-test"
SMTP_USER, SMTP_PASSWORD = "mailer", "mailer-Password-1"
GOOD = {"EMAIL_HOST": SMTP_NAME, "EMAIL_PORT": 2525, "EMAIL_HOST_USER": "",
        "EMAIL_HOST_PASSWORD": "", "EMAIL_USE_TLS": False, "EMAIL_TIMEOUT": 10,
        "DEFAULT_FROM_EMAIL": "site@example.test"}  # fmt: skip


class Deployment(Protocol):
    """What the tiers' stack helpers (tests/e2e/conftest.py's Stack) offer."""

    home: Any
    settings: config.Settings

    def invoke(self, *args: str, check: bool = True) -> subprocess.CompletedProcess: ...

    def url(self, path: str) -> str: ...


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check,
                          timeout=timeout)  # fmt: skip


def build_server() -> None:
    builder = engine.builder(Context())
    argv = builder.command("--tag", IMAGE, "--build-arg",
                           f"BASE_IMAGE={bootstrap.LOCAL_IMAGES['BASE_IMAGE']}",
                           str(config.ROOT / "tests" / "e2e" / "smtp"))  # fmt: skip
    subprocess.run(argv, env={**os.environ, **dict(builder.env)}, check=True,
                   capture_output=True, timeout=600)  # fmt: skip


class Mail:
    """The stack, its SMTP server container and the e-mail settings the test switches
    (written after ``keep``, the rest of custom/local_settings.py)."""

    def __init__(self, stack: Deployment, server: str, keep: str = "") -> None:
        self.stack, self.server, self.keep = stack, server, keep

    def settings(self, **changes: object) -> None:
        lines = [f"{key} = {value!r}" for key, value in {**GOOD, **changes}.items()]
        path = self.stack.home / "custom" / "local_settings.py"
        path.write_text(self.keep + "\n".join(lines) + "\n")

    def received(self) -> list[dict]:
        out = docker("logs", self.server).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def wait_for(self, match: Callable[[dict], bool], timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.received() if match(m)]
            if found:
                return found[-1]
            assert time.monotonic() < deadline, (
                f"no such message within {timeout}s: {self.received()}"
            )
            time.sleep(1)

    def doctor(self, address: str) -> subprocess.CompletedProcess:
        return self.stack.invoke("doctor", "--email", address, check=False)

    def reset_password(self, address: str) -> None:
        """Ask MediaCMS's password-reset form (allauth) for a mail to ``address``."""
        session = requests.Session()
        form = session.get(self.stack.url("/accounts/password/reset/"), timeout=30)
        assert form.status_code == 200, form.status_code
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        sent = session.post(self.stack.url("/accounts/password/reset/"), timeout=30,
                            data={"email": address, "csrfmiddlewaretoken": token},
                            allow_redirects=False)  # fmt: skip
        assert sent.status_code == 302, sent.text[:500]
        assert sent.headers["Location"].endswith("/accounts/password/reset/done/")


@contextmanager
def server_beside(stack: Deployment) -> Iterator[str]:
    """The SMTP server running on the stack's `egress` network as SMTP_NAME (built
    first); yields its container's name, removes it at the end."""
    build_server()
    project = stack.settings.project
    server = f"{project}-smtp"
    network = docker("network", "ls", "--format", "{{.Name}}", "--filter",
                     f"label=com.docker.compose.project={project}",
                     "--filter", "label=com.docker.compose.network=egress").stdout.split()  # fmt: skip
    assert len(network) == 1, network
    try:
        docker("run", "--detach", "--name", server, "--network", network[0],
               "--network-alias", SMTP_NAME, "--read-only", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges:true", "--memory", "128m",
               "--env", f"SMTP_USER={SMTP_USER}", "--env", f"SMTP_PASSWORD={SMTP_PASSWORD}",
               IMAGE)  # fmt: skip
        deadline = time.monotonic() + 30
        while "listening" not in docker("logs", server).stdout:
            assert time.monotonic() < deadline, docker("logs", server).stderr
            time.sleep(0.5)
        yield server
    finally:
        docker("rm", "--force", server, check=False)
