"""A deployment behind the HTTPS overlay whose certificate comes from Pebble over ACME.

Used by tests/e2e/test_https.py and tests/bench/https.py. The deployment folder holds
what an operator's holds (docker-compose.yaml, docker-compose-cert.yaml, the Caddyfile,
custom/ and a .env) plus one test-only compose file: Pebble on the `frontend` network,
the site's name as a network alias of the listeners service (so Pebble's HTTP-01
requests reach nginx through the held port 80, as a CA's do from outside), and a Caddy
option file trusting Pebble's own HTTPS certificate.

Clients reach the held ports on 127.0.0.1 ports published for the test (curl
--connect-to keeps the name in the URL, the SNI and the Host header) and trust Pebble's
issuing root, fetched from Pebble's management port: no certificate check is ever
switched off.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO, Stack, free_port, new_deployment
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from invoke import Config, Context

from mediacms_stack.engines import engine
from mediacms_stack.engines.compose import HTTPS, PRODUCTION, Compose
from mediacms_stack.images import bootstrap

NAME = "media.example.org"
#: In ALLOWED_HOSTS, without a certificate: not answered behind the overlay.
OTHER_NAME = "other.example.org"
PEBBLE_IMAGE = "mediacms-local/pebble:test"
#: Lifetime of Pebble's certificates: Caddy renews when a third is left, so a renewal
#: is seen 2/3 of this after the issuance. 75 s once left too little: under CI's load
#: Caddy renewed 9 s after the first certificate had expired (2026-12-05).
VALIDITY = 120
ISSUED = re.compile(r"Issued certificate serial ([0-9a-f]+)")

PEBBLE_OVERLAY = f"""\
# Test only: Pebble as the ACME CA, the site's name resolving to the held ports.
services:
  listeners:
    networks:
      frontend:
        aliases: [{NAME}]

  acme:
    volumes:
      - ./pebble/caddy-options.caddy:/etc/caddy/options.d/pebble.caddy:ro
      - ./pebble/tls-ca.pem:/etc/caddy/pebble-tls-ca.pem:ro
    depends_on:
      pebble:
        condition: service_started

  pebble:
    image: {PEBBLE_IMAGE}
    networks: [frontend]
    read_only: true
    cap_drop: [ALL]
    security_opt: [no-new-privileges:true]
    mem_limit: 128m
    pids_limit: 64
    environment:
      PEBBLE_VA_NOSLEEP: "1"        # validate at once (challenges are still checked)
      PEBBLE_WFE_NONCEREJECT: "0"   # no deliberately rejected nonces
      PEBBLE_AUTHZREUSE: "0"        # every order, renewals too, is validated anew
    volumes:
      - ./pebble:/etc/pebble:ro
    ports:
      - 127.0.0.1::15000            # management: /roots/0 is the issuing root
"""
# renew_interval: how often Caddy looks for certificates to renew (default 10 min).
CADDY_OPTIONS = "acme_ca_root /etc/caddy/pebble-tls-ca.pem\nrenew_interval 3s\n"


def _tls_files(folder: Path) -> None:
    """A CA and the certificate Pebble serves its ACME API with (names pebble, 127.0.0.1)."""
    now = datetime.datetime.now(datetime.UTC)

    def cert(subject, issuer_name, key, signer, sans=None, ca=False):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_name = "mediacms test: the CA of Pebble's own HTTPS"
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert(ca_name, ca_name, ca_key, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("pebble"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    leaf = cert("pebble", ca_name, key, ca_key, sans)
    pem = serialization.Encoding.PEM
    (folder / "tls-ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "cert.pem").write_bytes(leaf.public_bytes(pem))
    (folder / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def front_image() -> str:
    """The overlay's image, as `invoke up --https` builds it (on the local base) when
    missing; pytest's captured stdin is not passed to the build."""
    quiet = Context(Config(overrides={"run": {"in_stream": False}}))
    return bootstrap.tool_image(quiet, REPO, "front", base=bootstrap.LOCAL_IMAGES["BASE_IMAGE"])


def build_pebble() -> None:
    builder = engine.builder(Context())
    argv = builder.command("--tag", PEBBLE_IMAGE, "--build-arg",
                           f"BASE_IMAGE={bootstrap.LOCAL_IMAGES['BASE_IMAGE']}",
                           str(REPO / "bootstrap" / "pebble"))  # fmt: skip
    subprocess.run(argv, env={**os.environ, **dict(builder.env)},
                   check=True, capture_output=True, timeout=600)  # fmt: skip


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: bytes
    exit: int = 0  # curl's exit code

    def header(self, name: str) -> str:
        return ", ".join(self.headers.get(name.lower(), []))


class HttpsDeployment:
    """The deployment, the ports it publishes and clients that trust Pebble's root."""

    def __init__(self, home: Path, stack: Stack, http_port: int, https_port: int) -> None:
        self.home, self.stack = home, stack
        self.http_port, self.https_port = http_port, https_port
        self.compose = Compose(home, (PRODUCTION, HTTPS, "docker-compose-pebble.yaml"),
                               stack.settings.project, stack.settings.env_file)  # fmt: skip
        self.root = home / "pebble-root.pem"

    def dc(self, *args: str, check: bool = True, timeout: float = 600):
        return subprocess.run(self.compose.argv(*args), capture_output=True, text=True,
                              check=check, timeout=timeout)  # fmt: skip

    def report(self) -> None:
        """ps and the last log lines of every service, for a failed test."""
        print(self.dc("ps", "--all", check=False).stdout, file=sys.stderr)
        print(self.dc("logs", "--tail", "60", check=False).stdout, file=sys.stderr)

    def inspect(self, service: str) -> dict:
        """`docker inspect` of the service's container."""
        container = self.dc("ps", "--quiet", service).stdout.strip()
        done = subprocess.run(["docker", "inspect", container], capture_output=True, text=True,
                              check=True)  # fmt: skip
        return json.loads(done.stdout)[0]

    def memory_anon(self, service: str) -> int:
        """The service's own memory now (anonymous pages: not the page cache of the files
        it reads and writes), in bytes (cgroup v2 or v1)."""
        read = "cat /sys/fs/cgroup/memory.stat 2>/dev/null || cat /sys/fs/cgroup/memory/memory.stat"
        stat = self.dc("exec", "-T", service, "sh", "-c", read).stdout.split("\n")
        fields = dict(line.split()[:2] for line in stat if len(line.split()) >= 2)
        return int(fields["anon"] if "anon" in fields else fields["rss"])

    # --- Pebble -------------------------------------------------------------------
    def pebble_log(self) -> str:
        return self.dc("logs", "--no-log-prefix", "pebble").stdout

    def issued(self) -> list[int]:
        """Serials of the certificates Pebble issued, oldest first. Compared as numbers:
        Pebble writes the serial's bytes in hex, so one in 16 starts with a 0 digit."""
        return [int(serial, 16) for serial in ISSUED.findall(self.pebble_log())]

    def fetch_root(self) -> None:
        port = self.dc("port", "pebble", "15000").stdout.strip().rsplit(":", 1)[1]
        context = ssl.create_default_context(cafile=str(self.home / "pebble" / "tls-ca.pem"))
        url = f"https://127.0.0.1:{port}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:
            self.root.write_bytes(answer.read())

    # --- the site -----------------------------------------------------------------
    def served_certificate(self, timeout: float = 5) -> x509.Certificate:
        """The certificate nginx serves for NAME, verified against Pebble's root."""
        context = ssl.create_default_context(cafile=str(self.root))
        address = ("127.0.0.1", self.https_port)
        with (
            socket.create_connection(address, timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=NAME) as tls,
        ):
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))

    def wait_certificate(self, not_serial: int | None = None, timeout: float = 90):
        """Bounded wait until a certificate (another than ``not_serial``) is served."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                cert = self.served_certificate()
                if cert.serial_number != not_serial:
                    return cert
            except (OSError, ssl.SSLError) as error:
                last = error
            time.sleep(1)
        acme = self.dc("logs", "--no-log-prefix", "--tail", "25", "acme", check=False).stdout
        nginx = self.dc("logs", "--no-log-prefix", "nginx", check=False).stdout
        entrypoint = [line for line in nginx.splitlines() if "nginx-entrypoint" in line]
        raise AssertionError(f"no {'new ' if not_serial else ''}certificate for {NAME} "
                             f"within {timeout}s (last error: {last}); acme's log:\n{acme}\n"
                             f"nginx-entrypoint's lines:\n" + "\n".join(entrypoint[-20:]))  # fmt: skip

    def curl(self, url: str, *args: str, timeout: float = 120, check: bool = True) -> Response:
        """curl with Pebble's root trusted, NAME reaching the published ports. With
        check=False a failed transfer returns what arrived (status 0: no headers)."""
        headers = self.home / "curl-headers"
        body = self.home / "curl-body"
        headers.unlink(missing_ok=True)
        body.unlink(missing_ok=True)
        argv = ["curl", "-sS", "--max-time", str(timeout), "--cacert", str(self.root),
                "--connect-to", f"{NAME}:443:127.0.0.1:{self.https_port}",
                "--connect-to", f"{NAME}:80:127.0.0.1:{self.http_port}",
                "-D", str(headers), "-o", str(body), "-w", "%{http_code}", *args, url]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=False,
                              timeout=timeout + 10)  # fmt: skip
        assert done.returncode == 0 or not check, (argv, done.stderr)
        parsed: dict[str, list[str]] = {}
        raw = headers.read_text(errors="replace") if headers.exists() else ""
        blocks = raw.strip().split("\r\n\r\n")
        for line in blocks[-1].splitlines()[1:]:
            name, _, value = line.partition(":")
            parsed.setdefault(name.strip().lower(), []).append(value.strip())
        got = body.read_bytes() if body.exists() else b""
        return Response(int(done.stdout.strip()), parsed, got, done.returncode)

    def json(self, url: str, *args: str) -> dict:
        answer = self.curl(url, *args)
        assert answer.status < 300, (answer.status, answer.body[:500])
        return json.loads(answer.body)


def start(home: Path, project: str) -> HttpsDeployment:
    """Files, .env and the stack up: the overlay's services and what they need (nginx,
    web, db, redis, the migrations job), and Pebble; the Celery services are not needed
    here."""
    for name in ("docker-compose-cert.yaml",):
        shutil.copy(REPO / name, home / name)
    (home / "config" / "caddy").mkdir(parents=True)
    shutil.copy(REPO / "config/caddy/Caddyfile", home / "config/caddy/Caddyfile")
    http_port, https_port = free_port(), free_port()
    stack = new_deployment(home, project, FRONTEND_HOST=f"https://{NAME}",
                           HTTP_PORT=str(http_port), HTTPS_PORT=str(https_port),
                           ACME_EMAIL="ops@example.org", ACME_CA="https://pebble:14000/dir",
                           HTTPS_OVERLAY="true", FRONT_IMAGE=front_image(),
                           ALLOWED_HOSTS=OTHER_NAME)  # fmt: skip
    pebble = home / "pebble"
    pebble.mkdir()
    _tls_files(pebble)
    (pebble / "config.json").write_text(json.dumps({"pebble": {
        "listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
        "certificate": "/etc/pebble/cert.pem", "privateKey": "/etc/pebble/key.pem",
        "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
        "certificateValidityPeriod": VALIDITY}}))  # fmt: skip
    (pebble / "caddy-options.caddy").write_text(CADDY_OPTIONS)
    for path in pebble.iterdir():  # read by Pebble's and Caddy's unprivileged users
        path.chmod(0o644)
    pebble.chmod(0o755)
    (home / "docker-compose-pebble.yaml").write_text(PEBBLE_OVERLAY)
    build_pebble()
    deployment = HttpsDeployment(home, stack, http_port, https_port)
    up = deployment.dc("up", "--detach", "--wait", "--wait-timeout", "300", "pebble",
                       "listeners", "nginx", "acme", check=False)  # fmt: skip
    if up.returncode != 0:
        deployment.report()
        down(deployment)
        raise AssertionError(f"compose up failed:\n{up.stdout[-2000:]}\n{up.stderr[-4000:]}")
    deployment.fetch_root()
    return deployment


def down(deployment: HttpsDeployment) -> None:
    deployment.dc("down", "--volumes", "--remove-orphans", check=False)
