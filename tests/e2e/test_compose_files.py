"""The compose files as compose itself resolves them (needs only the compose plugin)."""

from __future__ import annotations

import json
import subprocess

import pytest

from mediacms_stack.stack import config

pytestmark = pytest.mark.e2e


def resolved(stack, *files: str) -> dict:
    flags = [a for f in files for a in ("--file", str(config.ROOT / f))]
    env = ["--env-file", str(stack.home / ".env")]
    extra = {"ACME_EMAIL": "ops@example.org", "FRONT_IMAGE": "mediacms-local/front:test"}
    done = subprocess.run(
        ["docker", "compose", *env, "--project-directory", str(config.ROOT), *flags,
         "config", "--format", "json"],
        capture_output=True, text=True, check=True, env={**stack.env(), **extra},
    )  # fmt: skip
    return json.loads(done.stdout)


def test_https_overlay_really_removes_nginx_port(stack):
    merged = resolved(stack, "docker-compose.yaml", "docker-compose-cert.yaml")
    assert not merged["services"]["nginx"].get("ports")
    listeners = merged["services"]["listeners"]
    ports = {(p["published"], p["target"]) for p in listeners["ports"]}
    assert ports == {(str(stack.port), 80), ("443", 443)}  # HTTP_PORT, HTTPS_PORT
    assert {p["host_ip"] for p in listeners["ports"]} == {"127.0.0.1"}  # HTTP_BIND
    assert [s for s, service in merged["services"].items() if service.get("ports")] == ["listeners"]
    for name in ("listeners", "acme"):  # built by `up --https`: an upgrade's pull skips them
        assert merged["services"][name]["pull_policy"] == "never", name
    acme = merged["services"]["acme"]
    assert acme["environment"]["ACME_CA"] == "https://acme-v02.api.letsencrypt.org/directory"
    assert acme["environment"]["ACME_EMAIL"] == "ops@example.org"


def test_an_upgrades_pull_skips_the_images_built_here(stack):
    """`invoke upgrade` pulls the new release (`compose pull`): the overlays' images are
    built on this host by `up --https` / `up --metrics` and are in no registry, so the
    pull skips them instead of failing (a name no registry has proves it)."""
    flags = [a for f in ("docker-compose.yaml", "docker-compose-cert.yaml",
                         "docker-compose-metrics.yaml") for a in ("--file", str(config.ROOT / f))]  # fmt: skip
    extra = {"ACME_EMAIL": "ops@example.org", "FRONT_IMAGE": "mediacms-local/front:nowhere",
             "METRICS_IMAGE": "mediacms-local/metrics:nowhere"}  # fmt: skip
    done = subprocess.run(
        ["docker", "compose", "--env-file", str(stack.home / ".env"), "--project-directory",
         str(config.ROOT), *flags, "pull", "listeners", "acme", "prometheus"],
        capture_output=True, text=True, check=False, timeout=120, env={**stack.env(), **extra},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def test_production_file_stands_alone(stack):
    prod = resolved(stack, "docker-compose.yaml")
    for name, service in prod["services"].items():
        assert "build" not in service, name
        assert "container_name" not in service, name
        if name != "migrations":
            assert "healthcheck" in service or name == "migrations", name
            assert service.get("restart") == "unless-stopped", name
    for name in ("celery_short", "celery_long", "web"):
        assert not prod["services"][name].get("ports"), name
    for name in ("web", "nginx", "celery_short", "celery_long", "celery_beat", "migrations"):
        service = prod["services"][name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
    assert set(prod["volumes"]) == {"media_files", "logs", "postgres_data", "scratch"}


def test_missing_secret_stops_compose_naming_the_key(stack, tmp_path):
    env = tmp_path / ".env"
    env.write_text("\n".join(line for line in (stack.home / ".env").read_text().splitlines()
                             if not line.startswith("POSTGRES_PASSWORD=")))  # fmt: skip
    done = subprocess.run(
        ["docker", "compose", "--env-file", str(env), "--file",
         str(config.ROOT / "docker-compose.yaml"), "config", "--quiet"],
        capture_output=True, text=True, check=False, env=stack.env(),
    )  # fmt: skip
    assert done.returncode != 0 and "POSTGRES_PASSWORD is not set in .env" in done.stderr
