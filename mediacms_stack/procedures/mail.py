"""`invoke doctor --email ADDRESS`: one real message through the site's own SMTP settings.

The message leaves from inside the web container (its DNS, its network, its settings:
the image's bridge plus custom/local_settings.py), sent by a short script run with
``manage.py shell``. Django decides what the settings are: the script takes host, port,
login, TLS and timeout from Django's SMTP backend built from EMAIL_*, exactly as the
site's mail uses them. It then talks SMTP itself with smtplib, one step at a time, so
that a failure names its step: DNS, connection (refused, timed out, no greeting), TLS,
authentication, or the server refusing the sender, the recipient or the message.

MediaCMS does not send from the web process: its EMAIL_BACKEND (djcelery_email's)
queues each message for the celery_short workers, which send through
CELERY_EMAIL_BACKEND with the same EMAIL_* settings and the same network (``egress``).
The report says which backend the site uses, and refuses to call e-mail working when
that backend delivers nothing (console, file, memory, dummy).

:func:`probe` is plain standard library: it is the code sent into the container (its
source, see :func:`script`) and the code the unit tests run against a real SMTP server.
"""

from __future__ import annotations

import inspect
import io
import json
import re

from invoke.context import Context
from invoke.exceptions import CommandTimedOut

from ..engines.compose import Compose
from ..engines.shell import dry
from ..stack.errors import StackError

#: The one line of the script's output the task reads (``manage.py shell`` may print more).
MARKER = "MEDIACMS-EMAIL-DOCTOR "
#: Seconds for each network step when the site sets no EMAIL_TIMEOUT (Django waits forever).
DEFAULT_TIMEOUT = 20
#: Seconds the whole exec may take: a few steps of DEFAULT_TIMEOUT, plus Django's start.
EXEC_TIMEOUT = 180
#: Backends that deliver nothing: a site using one sends no mail, whatever SMTP does.
NOT_DELIVERING = ("console", "dummy", "filebased", "locmem")
SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
#: Where the settings are set (the hint of every failure).
WHERE = "EMAIL_* in custom/local_settings.py"

ADDRESS = re.compile(r"[^@\s<>,;\"']+@[^@\s<>,;\"']+")


def probe(host, port, *, sender, recipients, data, username="", password="", use_tls=False,
          use_ssl=False, timeout=None, ssl_context=None, local_hostname=None):  # fmt: skip
    """Send ``data`` over SMTP one step at a time; return what happened as a dict.

    ``{"stage": "sent"}`` on success; otherwise ``stage`` is the step that failed (dns,
    connect, tls, greeting, ehlo, auth, sender, recipient, data) and ``kind``, ``code``
    and ``error`` say how. Nothing outside the standard library: this function's source
    runs inside the web container.
    """
    import smtplib
    import socket
    import ssl

    step = "dns"
    context = ssl_context or ssl.create_default_context()

    def failed(kind, error, code=None):
        if isinstance(error, bytes):
            error = error.decode("utf-8", "replace")
        text = str(error).strip() or ("timed out" if kind == "timeout" else kind)
        return {"stage": step, "kind": kind, "code": code, "error": text}

    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return failed("unresolved", exc)

    class Stepwise(smtplib.SMTP_SSL if use_ssl else smtplib.SMTP):
        """smtplib's client, telling the TCP connection apart from the TLS handshake."""

        def _get_socket(self, host, port, timeout):
            nonlocal step
            step = "connect"
            sock = socket.create_connection((host, port), timeout, self.source_address)
            if use_ssl:
                step = "tls"
                sock = self.context.wrap_socket(sock, server_hostname=self._host)
            step = "greeting"
            return sock

    options = {"context": context} if use_ssl else {}
    client = Stepwise(timeout=timeout, local_hostname=local_hostname, **options)
    client._host = host  # the name TLS checks the certificate against (set by SMTP(host))
    try:
        code, reply = client.connect(host, port)
        if code != 220:
            return failed("rejected", reply, code)
        step = "ehlo"
        client.ehlo_or_helo_if_needed()
        if use_tls:
            step = "tls"
            if not client.has_extn("starttls"):
                return failed("no-starttls", "the server does not offer STARTTLS")
            client.starttls(context=context)
            step = "ehlo"
            client.ehlo()
        if username and password:  # as Django's backend: a login only with both
            step = "auth"
            if not client.has_extn("auth"):
                return failed("no-auth", "the server offers no AUTH on this connection")
            client.login(username, password)
        step = "sender"
        code, reply = client.mail(sender)
        if code != 250:
            return failed("auth-required" if code == 530 else "refused", reply, code)
        step = "recipient"
        for recipient in recipients:
            code, reply = client.rcpt(recipient)
            if code not in (250, 251):
                return failed("auth-required" if code == 530 else "refused", reply, code)
        step = "data"
        code, reply = client.data(data)
        if code != 250:
            return failed("refused", reply, code)
        return {"stage": "sent", "kind": "", "code": code, "error": ""}
    except smtplib.SMTPAuthenticationError as exc:
        return failed("refused", exc.smtp_error, exc.smtp_code)
    except smtplib.SMTPServerDisconnected as exc:  # smtplib's name for a read that failed
        if isinstance(exc.__context__, TimeoutError):
            return failed("timeout", exc.__context__)
        return failed("closed", exc)
    except smtplib.SMTPResponseException as exc:
        return failed("refused", exc.smtp_error, exc.smtp_code)
    except ConnectionRefusedError as exc:
        return failed("refused", exc)
    except TimeoutError as exc:
        client.close()
        return failed("timeout", exc)
    except ssl.SSLCertVerificationError as exc:
        client.close()
        return failed("certificate", exc.verify_message or exc)
    except ssl.SSLError as exc:
        client.close()
        return failed("tls", exc.reason or exc)
    except smtplib.SMTPException as exc:  # e.g. no AUTH mechanism both sides know
        return failed("unsupported", exc)
    except OSError as exc:  # no route to host, network unreachable, ...
        client.close()
        return failed("network", exc.strerror or exc)
    finally:
        if client.sock is not None:  # still talking: say goodbye
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()


#: Run by ``manage.py shell -c`` in the web container; reads {"to": ADDRESS} on stdin.
DRIVER = """
import json, sys
from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.core.mail.message import sanitize_address
from django.core.mail.utils import DNS_NAME

wanted = json.load(sys.stdin)
smtp = get_connection("django.core.mail.backends.smtp.EmailBackend")
site = getattr(settings, "FRONTEND_HOST", "") or "MediaCMS"
message = EmailMessage(
    f"MediaCMS e-mail test ({site})",
    f"This message was sent by `invoke doctor --email` on {site} to prove that the\\n"
    "site's SMTP settings deliver mail. No reply is needed.\\n",
    settings.DEFAULT_FROM_EMAIL, [wanted["to"]],
)
built = message.message()
encoding = message.encoding or settings.DEFAULT_CHARSET
sender = sanitize_address(message.from_email, encoding)
report = {
    "host": smtp.host, "port": smtp.port, "username": smtp.username or "",
    "password_set": bool(smtp.password), "use_tls": bool(smtp.use_tls),
    "use_ssl": bool(smtp.use_ssl), "timeout": smtp.timeout or TIMEOUT, "sender": sender,
    "backend": settings.EMAIL_BACKEND,
    "celery_backend": getattr(settings, "CELERY_EMAIL_BACKEND", ""),
    "message_id": built["Message-ID"],
}
context = getattr(smtp, "ssl_context", None)  # Django 4.1+: its certfile/keyfile
report.update(probe(
    smtp.host, smtp.port, sender=sender,
    recipients=[sanitize_address(a, encoding) for a in message.recipients()],
    data=built.as_bytes(linesep="\\r\\n"), username=smtp.username, password=smtp.password,
    use_tls=smtp.use_tls, use_ssl=smtp.use_ssl, timeout=smtp.timeout or TIMEOUT,
    ssl_context=context, local_hostname=DNS_NAME.get_fqdn(),
))
print(MARKER + json.dumps(report), flush=True)
"""


def script() -> str:
    """The program ``manage.py shell -c`` runs in the web container."""
    return (f"MARKER = {MARKER!r}\nTIMEOUT = {DEFAULT_TIMEOUT}\n"
            f"{inspect.getsource(probe)}{DRIVER}")  # fmt: skip


# --- on the host: run it, say what happened ---------------------------------------------
def check_address(address: str) -> str:
    address = address.strip()
    if not ADDRESS.fullmatch(address):
        raise StackError(f"--email {address!r} is not one e-mail address (name@domain); "
                         "nothing was sent")  # fmt: skip
    return address


def send_test(c: Context, compose: Compose, address: str) -> list[str]:
    """Send the test message from the web container; the lines to print on success.

    Raises StackError with one line naming the failed step (nothing was changed: the
    only effect of a success is the message itself).
    """
    address = check_address(address)
    if dry(c):
        compose.manage(c, "shell", "-c", script())
        return [f"dry run: would send one test message to {address} from inside the web "
                f"container, through Django's EMAIL_* settings, and name the step that "
                "fails (DNS, connection, TLS, authentication, refusal)"]  # fmt: skip
    stdin = io.StringIO(json.dumps({"to": address}))
    try:
        done = compose.manage(c, "shell", "-c", script(), in_stream=stdin, hide=True,
                              warn=True, timeout=EXEC_TIMEOUT)  # fmt: skip
    except CommandTimedOut:
        raise StackError(f"e-mail: no answer from the web container within {EXEC_TIMEOUT}s; "
                         "nothing was sent") from None  # fmt: skip
    report = parse(done.stdout if done is not None else "")
    if report is None:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1] if done else "no output"
        raise StackError(f"e-mail: the check could not run in the web container ({last}); "
                         "is the stack up (`invoke status`)? nothing was sent")  # fmt: skip
    return outcome(report, address)


def parse(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    return None


def route(report: dict) -> str:
    """How the message went: ``HOST:PORT (STARTTLS, login as USER) from SENDER``."""
    security = "SSL" if report["use_ssl"] else "STARTTLS" if report["use_tls"] else "no TLS"
    login = f"login as {report['username']}" if report["username"] else "no login"
    if report["username"] and not report["password_set"]:
        login = f"no login: EMAIL_HOST_USER {report['username']} has no EMAIL_HOST_PASSWORD"
    return f"{report['host']}:{report['port']} ({security}, {login}) from {report['sender']}"


def outcome(report: dict, address: str) -> list[str]:
    """The lines of a success; StackError with the one line of a failure."""
    if report["stage"] != "sent":
        raise StackError(explain(report, address))
    lines = [
        f"e-mail: sent through {route(report)}",
        f"e-mail: the server accepted it for {address} (Message-ID {report['message_id']}): "
        "look in that mailbox, spam folder included",
    ]
    delivering, note = backend_note(report)
    if not delivering:
        raise StackError(note)
    return [*lines, note]


def backend_note(report: dict) -> tuple[bool, str]:
    """Whether the site's own mail goes out, and the line that says how."""
    backend = report["backend"]
    if "celery" in backend.lower():
        final = report["celery_backend"] or SMTP_BACKEND
        if any(f".{name}." in final for name in NOT_DELIVERING):
            return False, (f"e-mail: SMTP works, but MediaCMS's mail goes through "
                           f"CELERY_EMAIL_BACKEND {final}, which delivers nothing; set it to "
                           f"{SMTP_BACKEND} (or remove it)")  # fmt: skip
        return True, (f"e-mail: MediaCMS queues its own mail ({backend}) for the celery_short "
                      "workers, which send it through these same settings: they must be "
                      "running (`invoke status`)")  # fmt: skip
    if any(f".{name}." in backend for name in NOT_DELIVERING):
        return False, (f"e-mail: SMTP works, but EMAIL_BACKEND is {backend}, which delivers "
                       f"nothing; set it to {SMTP_BACKEND} (or remove it)")  # fmt: skip
    return True, f"e-mail: MediaCMS sends its own mail through {backend}"


def explain(report: dict, address: str) -> str:
    """One line: which step failed, how, and what to check."""
    host, port = report["host"], report["port"]
    stage, kind, error = report["stage"], report["kind"], report["error"]
    reply = f"{report['code']} {error}" if report.get("code") else error
    timeout = report.get("timeout")
    if stage == "dns":
        return (f"e-mail DNS: EMAIL_HOST {host!r} does not resolve from the web container "
                f"({error}); check the name in {WHERE}")  # fmt: skip
    if stage == "connect":
        if kind == "refused":
            return (f"e-mail connection: {host}:{port} refused the connection (nothing listens "
                    f"there); check EMAIL_PORT (587 STARTTLS, 465 SSL) in {WHERE}")  # fmt: skip
        if kind == "timeout":
            return (f"e-mail connection: {host}:{port} did not answer within {timeout}s (a "
                    "firewall, or a provider blocking the port, drops it); check EMAIL_HOST "
                    "and EMAIL_PORT")  # fmt: skip
        return f"e-mail connection: cannot reach {host}:{port} ({error})"
    if stage == "tls":
        if kind == "no-starttls":
            return (f"e-mail TLS: {host}:{port} does not offer STARTTLS (EMAIL_USE_TLS); "
                    "implicit TLS (port 465) is EMAIL_USE_SSL, a server without TLS needs "
                    "both off")  # fmt: skip
        if kind == "certificate":
            return (f"e-mail TLS: the certificate of {host}:{port} is not trusted ({error}); "
                    "EMAIL_HOST must be the name the certificate is for")  # fmt: skip
        return (f"e-mail TLS: the handshake with {host}:{port} failed ({error or kind}); "
                "EMAIL_USE_SSL is for port 465, EMAIL_USE_TLS (STARTTLS) for 587")  # fmt: skip
    if stage == "greeting":
        if kind == "timeout":
            return (f"e-mail connection: {host}:{port} accepted the connection but sent no "
                    f"SMTP greeting within {timeout}s (a port for implicit TLS, 465, needs "
                    "EMAIL_USE_SSL)")  # fmt: skip
        return f"e-mail connection: {host}:{port} refused the session at its greeting ({reply})"
    if stage == "auth" or kind == "auth-required":
        if kind == "no-auth":
            return (f"e-mail authentication: {host}:{port} offers no login on this connection "
                    "(most servers offer it only after STARTTLS: EMAIL_USE_TLS)")  # fmt: skip
        if kind == "unsupported":
            return (f"e-mail authentication: {host} offers no login method Python's smtplib "
                    f"knows ({error})")  # fmt: skip
        if kind == "auth-required":
            return (f"e-mail authentication: {host} requires a login ({reply}); set "
                    f"EMAIL_HOST_USER and EMAIL_HOST_PASSWORD in {WHERE}")  # fmt: skip
        return (f"e-mail authentication: {host} refused the login of "
                f"{report.get('username')!r} ({reply}); check EMAIL_HOST_USER and "
                f"EMAIL_HOST_PASSWORD")  # fmt: skip
    if stage == "sender":
        return (f"e-mail refused: {host} refused the sender {report['sender']} ({reply}); "
                "DEFAULT_FROM_EMAIL must be an address this account may send as")  # fmt: skip
    if stage == "recipient":
        return f"e-mail refused: {host} refused the recipient {address} ({reply})"
    if stage == "data":
        return f"e-mail refused: {host} refused the message itself ({reply})"
    return f"e-mail: the SMTP session with {host}:{port} failed during {stage} ({kind}: {reply})"
