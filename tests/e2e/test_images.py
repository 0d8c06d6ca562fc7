"""Properties of the built images, checked inside the running containers."""

from __future__ import annotations

import pytest
from invoke import Context

pytestmark = pytest.mark.e2e

APP_SERVICES = ["web", "celery_short", "celery_long", "celery_beat"]


def sh(stack, service: str, script: str, check: bool = True):
    return stack.dc("exec", "-T", service, "sh", "-c", script, check=check)


@pytest.mark.parametrize("service", [*APP_SERVICES, "nginx"])
def test_runs_as_www_data_without_compilers(stack, service):
    assert sh(stack, service, "id -u; id -g").stdout.split() == ["33", "33"]
    found = sh(stack, service, "command -v gcc cc g++ make || true").stdout.strip()
    assert found == "", f"compiler in {service}: {found}"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_venv_on_path_and_media_tools(stack, service):
    tools = "for x in python celery ffmpeg ffprobe; do command -v $x; done"
    out = sh(stack, service, tools).stdout.split()
    assert out[:2] == ["/home/mediacms.io/bin/python", "/home/mediacms.io/bin/celery"]
    assert len(out) == 4
    policy = sh(stack, service, "cat /etc/ImageMagick-7/policy.xml").stdout
    assert 'name="width" value="64KP"' in policy
    assert sh(stack, service, "magick -version || convert -version").stdout.startswith("Version")


def test_django_deploy_checks_pass_with_production_settings(stack):
    done = stack.dc("exec", "-T", "web", "python", "manage.py", "check", "--deploy", check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_static_is_in_web_and_nginx_images(stack):
    assert sh(stack, "web", "test -s static/admin/css/base.css && echo yes").stdout.strip() == "yes"
    assert (
        sh(stack, "nginx", "test -s /var/www/static/admin/css/base.css && echo y").stdout.strip()
        == "y"
    )


def test_uwsgi_answers_on_9000(stack):
    assert sh(stack, "web", "python /usr/local/bin/healthcheck.py uwsgi").stdout.strip() == "ok"


def test_nginx_config_is_valid(stack):
    done = stack.dc("exec", "-T", "nginx", "nginx", "-t", check=False)
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr


def test_root_filesystems_are_read_only(stack):
    for service in ("web", "nginx", "celery_long"):
        done = sh(stack, service, "touch /home/probe /etc/probe 2>&1 || true")
        assert "Read-only file system" in done.stdout, service


def test_no_secret_baked_into_images(stack):
    import docker

    client = docker.from_env()
    secret = stack.settings.require("SECRET_KEY")
    for row in stack.compose.ps(Context()):
        image = client.images.get(row["Image"])
        env = image.attrs["Config"].get("Env") or []
        assert not [e for e in env if e.startswith(("SECRET_KEY=", "POSTGRES_PASSWORD="))]
        history = " ".join(str(layer.get("CreatedBy")) for layer in image.history())
        assert secret not in history
    client.close()
    assert (
        sh(stack, "web", "test -e .secret_key && echo present || echo absent").stdout.strip()
        == "absent"
    )
