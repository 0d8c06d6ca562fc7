"""The test's SMTP server: every message it accepts is one JSON line on stdout.

Port 2525 takes mail from anyone, but refuses recipients whose mailbox starts with
"refuse" (550). Port 2526 requires a login (AUTH PLAIN/LOGIN, without TLS: a test
network) as SMTP_USER with SMTP_PASSWORD.
"""

import asyncio
import json
import os

from aiosmtpd.smtp import SMTP, AuthResult


class Mailbox:
    def __init__(self, port):
        self.port = port

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address.split("@")[0].startswith("refuse"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        print(
            json.dumps(
                {
                    "port": self.port,
                    "from": envelope.mail_from,
                    "to": envelope.rcpt_tos,
                    "login": session.authenticated and session.auth_data.login.decode(),
                    "data": envelope.content.decode("utf-8", "replace"),
                }
            ),
            flush=True,
        )
        return "250 2.0.0 queued"


def check_login(server, session, envelope, mechanism, auth_data):
    good = (auth_data.login.decode(), auth_data.password.decode()) == (
        os.environ["SMTP_USER"],
        os.environ["SMTP_PASSWORD"],
    )
    # not handled: aiosmtpd answers 535 itself; auth_data: the session keeps the login
    return AuthResult(success=good, handled=False, auth_data=auth_data)


async def main():
    # every interface of the container: the test network is all it is attached to
    anywhere = "0.0.0.0"  # noqa: S104
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: SMTP(Mailbox(2525)), host=anywhere, port=2525)
    await loop.create_server(
        lambda: SMTP(
            Mailbox(2526), authenticator=check_login, auth_required=True, auth_require_tls=False
        ),
        host=anywhere,
        port=2526,
    )
    print("listening on 2525 (open) and 2526 (login required)", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
