"""`invoke doctor --email` and MediaCMS's own mail, through a real SMTP server.

The server (tests/e2e/smtp: aiosmtpd from Debian's archive) is a container of this test,
attached to the stack's `egress` network as `smtp-test`, the name EMAIL_HOST gives in
custom/local_settings.py: port 2525 takes any mail but refuses "refuse*" recipients,
2526 requires a login. It prints each message it accepts as one JSON line, which is how
the test reads what arrived. The doctor's failures are made by changing
custom/local_settings.py (read anew by each `manage.py shell`): each must be one line,
exit 1, and deliver nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest
import requests
from conftest import Stack, new_deployment, report_failure

from mediacms_stack.engines import engine
from mediacms_stack.images import bootstrap
from mediacms_stack.stack import config
from tests.fresh import require_built_from_this_commit

pytestmark = pytest.mark.e2e

IMAGE = "mediacms-local/smtp:test"
SMTP_NAME = "smtp-test"
SMTP_USER, SMTP_PASSWORD = "mailer", "mailer-Password-1"
ADMIN_EMAIL = "admin@example.test"
GOOD = {"EMAIL_HOST": SMTP_NAME, "EMAIL_PORT": 2525, "EMAIL_HOST_USER": "",
        "EMAIL_HOST_PASSWORD": "", "EMAIL_USE_TLS": False, "EMAIL_TIMEOUT": 10,
        "DEFAULT_FROM_EMAIL": "site@example.test"}  # fmt: skip


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check,
                          timeout=timeout)  # fmt: skip


def build_server() -> None:
    builder = engine.builder()
    argv = builder.command("--tag", IMAGE, "--build-arg",
                           f"BASE_IMAGE={bootstrap.LOCAL_IMAGES['BASE_IMAGE']}",
                           str(config.ROOT / "tests" / "e2e" / "smtp"))  # fmt: skip
    subprocess.run(argv, env={**os.environ, **dict(builder.env)}, check=True,
                   capture_output=True, timeout=600)  # fmt: skip


class Mail:
    """The stack, its SMTP server container and the settings the test switches."""

    def __init__(self, stack: Stack, server: str) -> None:
        self.stack, self.server = stack, server

    def settings(self, **changes) -> None:
        lines = [f"{key} = {value!r}" for key, value in {**GOOD, **changes}.items()]
        (self.stack.home / "custom" / "local_settings.py").write_text("\n".join(lines) + "\n")

    def received(self) -> list[dict]:
        out = docker("logs", self.server).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def wait_for(self, match, timeout: float = 90) -> dict:
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


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    build_server()
    home = tmp_path_factory.mktemp("mail")
    stack = new_deployment(home, f"mediacms-mail-{os.getpid()}", ADMIN_EMAIL=ADMIN_EMAIL)
    require_built_from_this_commit(stack.settings.version)
    server = f"{stack.settings.project}-smtp"
    site = Mail(stack, server)
    site.settings()  # before `up`: the workers read it when they start
    up = stack.invoke("up", check=False)
    try:
        assert up.returncode == 0, f"invoke up failed:\n{up.stdout[-3000:]}\n{up.stderr[-5000:]}"
        network = docker("network", "ls", "--format", "{{.Name}}", "--filter",
                         f"label=com.docker.compose.project={stack.settings.project}",
                         "--filter", "label=com.docker.compose.network=egress").stdout.split()  # fmt: skip
        assert len(network) == 1, network
        docker("run", "--detach", "--name", server, "--network", network[0],
               "--network-alias", SMTP_NAME, "--read-only", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges:true", "--memory", "128m",
               "--env", f"SMTP_USER={SMTP_USER}", "--env", f"SMTP_PASSWORD={SMTP_PASSWORD}",
               IMAGE)  # fmt: skip
        deadline = time.monotonic() + 30
        while "listening" not in docker("logs", server).stdout:
            assert time.monotonic() < deadline, docker("logs", server).stderr
            time.sleep(0.5)
        yield site
    finally:
        if request.session.testsfailed or up.returncode != 0:
            report_failure(stack)
            print(docker("logs", server, check=False).stdout[-3000:])
        docker("rm", "--force", server, check=False)
        stack.dc("down", "--volumes", "--remove-orphans", check=False)


def test_the_doctors_message_arrives(mail):
    done = mail.doctor("operator@example.test")
    assert done.returncode == 0, done.stderr
    assert f"sent through {SMTP_NAME}:2525 (no TLS, no login) from site@example.test" in done.stdout
    message_id = re.search(r"Message-ID (<[^>]+>)", done.stdout).group(1)
    assert "celery_short workers" in done.stdout  # the stand-in queues mail as MediaCMS does
    got = mail.wait_for(lambda m: m["to"] == ["operator@example.test"], timeout=10)
    assert got["from"] == "site@example.test"
    assert f"Message-ID: {message_id}" in got["data"]
    assert "Subject: MediaCMS e-mail test" in got["data"]


def test_mediacms_password_reset_mail_arrives(mail):
    session = requests.Session()
    form = session.get(mail.stack.url("/accounts/password/reset/"), timeout=30)
    assert form.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    sent = session.post(mail.stack.url("/accounts/password/reset/"), timeout=30,
                        data={"email": ADMIN_EMAIL, "csrfmiddlewaretoken": token},
                        allow_redirects=False)  # fmt: skip
    assert sent.status_code == 302, sent.text[:500]
    assert sent.headers["Location"].endswith("/accounts/password/reset/done/")
    got = mail.wait_for(lambda m: m["to"] == [ADMIN_EMAIL])
    assert got["from"] == "site@example.test"
    # the link to follow (nginx hands Django the host without the port)
    assert re.search(r"http://127\.0\.0\.1(:\d+)?/accounts/password/reset/key/[^/\s]+/[^/\s]+/",
                     got["data"]), got["data"]  # fmt: skip
    # sent by a celery_short worker, not by web (MediaCMS's djcelery_email path)
    assert "sent 1 of 1 e-mail messages" in mail.stack.dc("logs", "celery_short").stdout


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a failed doctor; nothing printed as a success."""
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr and "sent through" not in done.stdout
    return errors[0]


@pytest.mark.parametrize(("settings", "address", "expected"), [
    ({"EMAIL_HOST": "no-such-smtp.invalid"}, "operator@example.test",
     "error: e-mail DNS: EMAIL_HOST 'no-such-smtp.invalid' does not resolve from the web "
     "container"),
    ({"EMAIL_PORT": 2599}, "operator@example.test",
     f"error: e-mail connection: {SMTP_NAME}:2599 refused the connection"),
    ({}, "refuse-me@example.test",
     f"error: e-mail refused: {SMTP_NAME} refused the recipient refuse-me@example.test (550 "),
    ({"EMAIL_PORT": 2526, "EMAIL_HOST_USER": SMTP_USER, "EMAIL_HOST_PASSWORD": "wrong"},
     "operator@example.test",
     f"error: e-mail authentication: {SMTP_NAME} refused the login of 'mailer' (535 "),
    ({"EMAIL_PORT": 2526}, "operator@example.test",
     f"error: e-mail authentication: {SMTP_NAME} requires a login (530 "),
], ids=["dns", "connection-refused", "recipient-refused", "wrong-password", "no-login"])  # fmt: skip
def test_each_failure_is_one_line_naming_its_step(mail, settings, address, expected):
    before = len(mail.received())
    mail.settings(**settings)
    try:
        started = time.monotonic()
        line = error_line(mail.doctor(address))
        assert line.startswith(expected), line
        assert time.monotonic() - started < 120
    finally:
        mail.settings()
    assert len(mail.received()) == before  # nothing was delivered


def test_the_right_password_sends(mail):
    mail.settings(EMAIL_PORT=2526, EMAIL_HOST_USER=SMTP_USER, EMAIL_HOST_PASSWORD=SMTP_PASSWORD)
    try:
        done = mail.doctor("login@example.test")
    finally:
        mail.settings()
    assert done.returncode == 0, done.stderr
    assert f"{SMTP_NAME}:2526 (no TLS, login as {SMTP_USER})" in done.stdout
    got = mail.wait_for(lambda m: m["to"] == ["login@example.test"], timeout=10)
    assert (got["port"], got["login"]) == (2526, SMTP_USER)
