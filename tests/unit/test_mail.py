"""`invoke doctor --email`: each failure named by its step, against real SMTP servers.

The servers are aiosmtpd on 127.0.0.1, started in this process: plain, STARTTLS with a
certificate made here, implicit TLS, AUTH required, and ones refusing a sender or a
recipient. :func:`mail.probe` is the very code the web container runs.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mediacms_stack.procedures import mail
from mediacms_stack.stack.errors import StackError

# aiosmtpd warns about AUTH without TLS: the plain-text login is what these tests need
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

SENDER = "site@example.test"
USER, PASSWORD = "mailer", "right-password"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mailbox:
    """aiosmtpd handler: keeps what it accepts; refuses ``refuse*`` recipients and the
    sender ``blocked@...``."""

    def __init__(self) -> None:
        self.received: list = []

    async def handle_MAIL(self, server, session, envelope, address, options):
        if address.startswith("blocked@"):
            return "553 5.7.1 sender not allowed here"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address.startswith("refuse"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append(envelope)
        return "250 queued"


def check_login(server, session, envelope, mechanism, auth_data):
    good = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
    return AuthResult(success=good, handled=False)  # not handled: aiosmtpd answers 535


@pytest.fixture
def smtp():
    """Start aiosmtpd servers on 127.0.0.1 (``smtp(**controller options)`` -> (port,
    mailbox)); all stopped at the end."""
    started = []

    def start(**options):
        box = Mailbox()
        controller = Controller(box, hostname="127.0.0.1", port=free_port(), **options)
        controller.start()
        started.append(controller)
        return controller.port, box

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (certificate file, key file, PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))  # fmt: skip
    folder = tmp_path_factory.mktemp("tls")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "cert.pem").write_bytes(pem)
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    return str(folder / "cert.pem"), str(folder / "key.pem"), pem.decode()


def server_context(certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate[0], certificate[1])
    return context


def message(to: str) -> bytes:
    built = EmailMessage()
    built["From"], built["To"], built["Subject"] = SENDER, to, "test"
    built.set_content("hello\n")
    return built.as_bytes()


def send(port, to="someone@example.test", host="127.0.0.1", **options):
    options = {"timeout": 5, "local_hostname": "doctor.test", "sender": SENDER, **options}
    return mail.probe(host, port, recipients=[to], data=message(to), **options)


def line(result, address="someone@example.test") -> str:
    """The one line the task prints for a failed ``result``."""
    report = {"host": "127.0.0.1", "port": 25, "username": USER, "sender": SENDER,
              "timeout": 5, **result}  # fmt: skip
    text = mail.explain(report, address)
    assert "\n" not in text
    return text


def test_a_message_the_server_accepts_arrives(smtp):
    port, box = smtp()
    assert send(port)["stage"] == "sent"
    (envelope,) = box.received
    assert envelope.mail_from == SENDER and envelope.rcpt_tos == ["someone@example.test"]
    assert b"hello" in envelope.content


def test_a_name_that_does_not_resolve_is_dns():
    result = send(25, host="no-such-host.invalid")
    assert (result["stage"], result["kind"]) == ("dns", "unresolved")
    assert line(result).startswith("e-mail DNS: EMAIL_HOST '127.0.0.1' does not resolve")


def test_a_port_nobody_listens_on_is_a_refused_connection():
    result = send(free_port())
    assert (result["stage"], result["kind"]) == ("connect", "refused")
    assert "refused the connection" in line(result)


def test_a_silent_server_is_a_missing_greeting_after_the_timeout():
    with socket.socket() as silent:  # accepts (the kernel's backlog) and never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        result = send(silent.getsockname()[1], timeout=1)
    assert (result["stage"], result["kind"]) == ("greeting", "timeout")
    assert "sent no SMTP greeting within 5s" in line(result)


def test_starttls_asked_of_a_server_without_it_is_tls(smtp):
    port, box = smtp()
    result = send(port, use_tls=True)
    assert (result["stage"], result["kind"]) == ("tls", "no-starttls")
    assert line(result).startswith("e-mail TLS:") and box.received == []


def test_an_untrusted_certificate_is_tls_and_a_trusted_one_sends(smtp, certificate):
    port, box = smtp(tls_context=server_context(certificate))
    result = send(port, use_tls=True)
    assert (result["stage"], result["kind"]) == ("tls", "certificate")
    assert "not trusted" in line(result) and box.received == []
    trusted = ssl.create_default_context(cadata=certificate[2])
    assert send(port, use_tls=True, ssl_context=trusted)["stage"] == "sent"
    assert len(box.received) == 1


def test_implicit_tls_against_a_plain_server_is_tls(smtp):
    port, _ = smtp()
    result = send(port, use_ssl=True)
    assert result["stage"] == "tls"
    assert line(result).startswith("e-mail TLS: the handshake")


def test_implicit_tls_to_an_implicit_tls_server_sends(smtp, certificate):
    port, box = smtp(ssl_context=server_context(certificate))
    trusted = ssl.create_default_context(cadata=certificate[2])
    assert send(port, use_ssl=True, ssl_context=trusted)["stage"] == "sent"
    assert len(box.received) == 1


def test_a_wrong_password_is_authentication(smtp):
    port, box = smtp(authenticator=check_login, auth_required=True, auth_require_tls=False)
    result = send(port, username=USER, password="wrong")
    assert (result["stage"], result["code"]) == ("auth", 535)
    assert line(result).startswith("e-mail authentication: 127.0.0.1 refused the login")
    assert send(port, username=USER, password=PASSWORD)["stage"] == "sent"
    assert len(box.received) == 1


def test_no_login_where_one_is_required_is_authentication(smtp):
    port, _ = smtp(authenticator=check_login, auth_required=True, auth_require_tls=False)
    result = send(port)
    assert (result["stage"], result["kind"], result["code"]) == ("sender", "auth-required", 530)
    assert line(result).startswith("e-mail authentication: 127.0.0.1 requires a login")


def test_a_login_the_server_only_offers_over_tls_is_authentication(smtp):
    port, _ = smtp(authenticator=check_login, auth_required=True)  # AUTH after STARTTLS only
    result = send(port, username=USER, password=PASSWORD)
    assert (result["stage"], result["kind"]) == ("auth", "no-auth")
    assert "offers no login on this connection" in line(result)


def test_a_refused_sender_and_a_refused_recipient_are_named(smtp):
    port, box = smtp()
    sender = send(port, sender="blocked@example.test")
    assert (sender["stage"], sender["code"]) == ("sender", 553)
    assert "refused the sender site@example.test (553 5.7.1" in line(sender)
    recipient = send(port, to="refused@example.test")
    assert (recipient["stage"], recipient["code"]) == ("recipient", 550)
    assert line(recipient, "refused@example.test") == (
        "e-mail refused: 127.0.0.1 refused the recipient refused@example.test "
        "(550 5.1.1 no such mailbox)"
    )
    assert box.received == []


SENT = {"stage": "sent", "host": "smtp", "port": 25, "username": "", "password_set": False,
        "use_tls": False, "use_ssl": False, "sender": SENDER, "message_id": "<1@x>",
        "backend": "djcelery_email.backends.CeleryEmailBackend", "celery_backend": ""}  # fmt: skip


def test_a_success_says_the_route_and_how_the_site_sends():
    lines = mail.outcome(SENT, "someone@example.test")
    assert lines[0] == f"e-mail: sent through smtp:25 (no TLS, no login) from {SENDER}"
    assert "Message-ID <1@x>" in lines[1]
    assert "celery_short workers" in lines[2]


@pytest.mark.parametrize("setting", [
    {"backend": "django.core.mail.backends.console.EmailBackend"},
    {"celery_backend": "django.core.mail.backends.locmem.EmailBackend"},
])  # fmt: skip
def test_a_backend_that_delivers_nothing_fails_even_when_smtp_works(setting):
    with pytest.raises(StackError, match="delivers nothing"):
        mail.outcome({**SENT, **setting}, "someone@example.test")


def test_the_container_script_compiles_and_bad_addresses_are_refused():
    compile(mail.script(), "<doctor --email>", "exec")
    for bad in ("", "someone", "a@b, c@d", "<a@b>"):
        with pytest.raises(StackError, match="not one e-mail address"):
            mail.check_address(bad)
