"""The HTTPS overlay's pre-flight: .env refused before anything starts, the ports, the name."""

import re
import socket
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from invoke import Context, Exit, MockContext, Result

import tasks
from mediacms_stack.engines import engine
from mediacms_stack.engines.compose import Compose
from mediacms_stack.images import bootstrap
from mediacms_stack.procedures import doctor, ops
from mediacms_stack.stack import config

GOOD = {"FRONTEND_HOST": "https://media.example.org", "ACME_EMAIL": "ops@example.org",
        "ACME_CA": "https://acme-staging-v02.api.letsencrypt.org/directory"}  # fmt: skip


def settings_with(home, **values):
    return config.update(config.load(home), values)


def test_a_complete_https_env_has_no_problem_and_the_default_ca_is_lets_encrypt(home):
    assert config.load(home).get("ACME_CA") == doctor.ACME_CA_DEFAULT  # from .env.example
    assert doctor.https_problems(settings_with(home, **GOOD)) == []


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("FRONTEND_HOST", "http://media.example.org", "is not https://NAME"),
        ("FRONTEND_HOST", "", "is not https://NAME"),
        ("FRONTEND_HOST", "https://media.example.org/", "no port, path or trailing slash"),
        ("FRONTEND_HOST", "https://media.example.org:8443", "no port, path"),
        ("FRONTEND_HOST", "https://media.example.org/mediacms", "no port, path"),
        ("FRONTEND_HOST", "https://192.0.2.10", "not an IP address"),
        ("ACME_EMAIL", "", "ACME_EMAIL is not set"),
        ("ACME_EMAIL", "ops at example.org", "is not an e-mail address"),
        ("ACME_CA", "http://acme.example.org/directory", "is not an https:// URL"),
        ("ACME_CA", "letsencrypt", "is not an https:// URL"),
    ],
)
def test_each_bad_https_value_is_named(home, key, value, said):
    problems = doctor.https_problems(settings_with(home, **{**GOOD, key: value}))
    assert len(problems) == 1 and said in problems[0] and key in problems[0], problems


def test_up_https_with_a_bad_env_stops_with_one_error_before_anything_runs(home, monkeypatch):
    settings_with(home, FRONTEND_HOST="http://media.example.org", ACME_EMAIL="")
    monkeypatch.setattr(tasks.engines, "ensure", lambda c: None)
    monkeypatch.setattr(doctor.engine, "engine_answers", lambda: False)
    with pytest.raises(Exit) as stopped:
        tasks.up(MockContext(), https=True)  # MockContext: any command run would raise
    message = str(stopped.value.message)
    assert message.startswith("error: https-env:") and message.count("\n") == 0
    assert "FRONTEND_HOST" in message and "ACME_EMAIL" in message


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_up_https_runs_the_overlay_when_env_and_ports_are_fine(home, monkeypatch, capsys):
    settings_with(home, **GOOD, HTTP_BIND="127.0.0.1", HTTP_PORT=str(free_port()),
                  HTTPS_PORT=str(free_port()))  # fmt: skip
    monkeypatch.setattr(doctor.engine, "engine_answers", lambda: False)
    monkeypatch.setattr(tasks.ops, "ensure_images", lambda c, s: None)
    tasks.up(MockContext(), https=True, dry_run=True)
    printed = capsys.readouterr().err
    assert "docker-compose.yaml --file" in printed and "docker-compose-cert.yaml up" in printed


def test_https_ports_name_the_taken_one(home, monkeypatch):
    monkeypatch.setattr(doctor.engine, "engine_answers", lambda: False)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        settings = settings_with(home, **GOOD, HTTP_BIND="127.0.0.1", HTTP_PORT=str(free_port()),
                                 HTTPS_PORT=str(taken))  # fmt: skip
        check = doctor.CHECKS["https-ports"](Context(), settings)
    assert not check.ok and f"127.0.0.1:{taken} taken" in check.detail
    assert "HTTPS_PORT" in check.fix and "HTTP_PORT" not in check.fix.replace("HTTPS_PORT", "")
    assert doctor.CHECKS["https-ports"](Context(), settings).ok  # released: free again


def resolving(monkeypatch, *addresses):
    def getaddrinfo(name, port, type=0):
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(doctor.socket, "getaddrinfo", getaddrinfo)


def test_the_name_must_resolve_to_this_host(home, monkeypatch):
    settings = settings_with(home, **GOOD)
    resolving(monkeypatch, "127.0.0.1")
    assert doctor.CHECKS["https-name"](Context(), settings).ok
    resolving(monkeypatch, "192.0.2.44")  # TEST-NET-1: never an address of this host
    check = doctor.CHECKS["https-name"](Context(), settings)
    assert not check.ok and "resolves to 192.0.2.44, not an address of this host" in check.detail
    assert "media.example.org" in check.fix
    resolving(monkeypatch)
    check = doctor.CHECKS["https-name"](Context(), settings)
    assert not check.ok and "does not resolve" in check.detail


def test_doctor_https_swaps_the_plain_port_check_for_the_https_ones():
    assert "port" in doctor.PLAIN and not any(n.startswith("https-") for n in doctor.PLAIN)
    assert "port" not in doctor.HTTPS
    assert {"https-env", "https-ports", "https-name", "env", "engine"} <= set(doctor.HTTPS)


@pytest.mark.parametrize("value, overlay", [("true", True), ("on", True), ("false", False),
                                            ("", False)])  # fmt: skip
def test_every_task_includes_the_overlay_when_env_says_so(home, value, overlay):
    """upgrade, restart, logs, down... build their Compose from .env alone: an HTTPS
    deployment must keep its listeners, acme and nginx's unpublished port in all of them."""
    settings = settings_with(home, **GOOD, HTTPS_OVERLAY=value)
    files = Compose.for_settings(settings).files
    assert ("docker-compose-cert.yaml" in files) is overlay
    assert Compose.for_settings(settings, dev=True).files == ("docker-compose-dev.yaml",)


def test_up_https_records_the_overlay_in_env_for_later_tasks(home, monkeypatch):
    settings_with(home, **GOOD, HTTP_BIND="127.0.0.1", HTTP_PORT=str(free_port()),
                  HTTPS_PORT=str(free_port()))  # fmt: skip
    monkeypatch.setattr(tasks.engines, "ensure", lambda c: None)
    monkeypatch.setattr(doctor.engine, "engine_answers", lambda: False)
    monkeypatch.setattr(tasks.ops, "ensure_images", lambda c, s: None)
    monkeypatch.setattr(tasks.ops, "welcome", lambda s: "")
    monkeypatch.setattr(bootstrap.engine, "image", lambda ref: object())  # already built
    c = MockContext(run=Result(""), repeat=True)
    tasks.up(c, https=True)
    assert "docker-compose-cert.yaml" in c.run.call_args.args[0]
    assert config.load(home).get("HTTPS_OVERLAY") == "true"
    # the image compose runs the overlay from, named by its recipe, not by a release
    assert re.fullmatch(r"mediacms-local/front:[0-9a-f]{12}", config.load(home).get("FRONT_IMAGE"))
    tasks.down(c)  # no --https: .env says so
    assert "docker-compose-cert.yaml" in c.run.call_args.args[0]


def test_the_previous_fronts_caddy_goes_before_listeners_takes_its_ports(home, monkeypatch):
    """A deployment of the overlay before (Caddy in front) still runs `caddy`, holding
    ports 80 and 443: `up --https` removes this project's, and nothing else."""

    settings = settings_with(home, **GOOD)
    asked = {}

    class Containers:
        def list(self, all, filters):
            asked.update(filters)
            return [SimpleNamespace(name=f"{settings.project}-caddy-1")]

    @contextmanager
    def client():
        yield SimpleNamespace(containers=Containers())

    monkeypatch.setattr(engine, "engine_answers", lambda: True)
    monkeypatch.setattr(engine, "client", client)
    c = MockContext(run=Result(""))
    ops.remove_previous_front(c, settings)
    assert asked["label"] == [f"com.docker.compose.project={settings.project}",
                              "com.docker.compose.service=caddy"]  # fmt: skip
    assert c.run.call_args.args[0] == f"docker rm --force {settings.project}-caddy-1"
