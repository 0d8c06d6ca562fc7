"""`invoke doctor --email` and MediaCMS's own mail, through a real SMTP server.

The server and its helpers are tests/mailserver.py's. The doctor's failures are made by
changing custom/local_settings.py (read anew by each `manage.py shell`): each must be one
line, exit 1, and deliver nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
from conftest import new_deployment, running

from tests.mailserver import SMTP_NAME, SMTP_PASSWORD, SMTP_USER, Mail, docker, server_beside

pytestmark = pytest.mark.e2e

ADMIN_EMAIL = "admin@example.test"


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    home = tmp_path_factory.mktemp("mail")
    stack = new_deployment(home, f"mediacms-mail-{os.getpid()}", ADMIN_EMAIL=ADMIN_EMAIL)
    Mail(stack, "").settings()  # before `up`: the workers read it when they start
    with running(stack, request), server_beside(stack) as server:
        failures = request.session.testsfailed
        yield Mail(stack, server)
        if request.session.testsfailed > failures:
            print(docker("logs", server, check=False).stdout[-3000:])


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
    mail.reset_password(ADMIN_EMAIL)
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
