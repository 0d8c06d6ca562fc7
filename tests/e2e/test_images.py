"""Properties of the built images, checked inside the running containers."""

from __future__ import annotations

import json
import os

import pytest
from invoke import Context

from mediacms_stack.stack import config

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


def test_worker_and_beat_checks_ask_redis_and_refuse_a_wrong_password(stack):
    for service, check in (("celery_short", "celery short"),
                           ("celery_beat", "beat /tmp/celerybeat-schedule 120")):  # fmt: skip
        assert sh(stack, service, f"python /usr/local/bin/healthcheck.py {check}").stdout == "ok\n"
        # the URL comes from a secret file (REDIS_LOCATION_FILE): one with a wrong password
        wrong = sh(stack, service, "echo redis://:wrong@redis:6379/1 > /tmp/wrong-location && "
                   "REDIS_LOCATION_FILE=/tmp/wrong-location "
                   f"python /usr/local/bin/healthcheck.py {check}", check=False)  # fmt: skip
        assert wrong.returncode == 1, wrong
        assert wrong.stdout.startswith("broker redis:6379 Redis refused: -WRONGPASS"), wrong


def test_nginx_config_is_valid(stack):
    done = stack.dc("exec", "-T", "nginx", "nginx", "-t", check=False)
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr


def test_root_filesystems_are_read_only(stack):
    for service in ("web", "nginx", "celery_long"):
        done = sh(stack, service, "touch /home/probe /etc/probe 2>&1 || true")
        assert "Read-only file system" in done.stdout, service


def test_no_secret_baked_into_images(stack):
    """The secrets of the settings the images were built with (`invoke build` read them,
    as the stack fixture does: MEDIACMS_ENV_FILE or .env) are in no image's
    configuration (ENV, labels, ...) or layer history, where a build argument or an ENV
    would leave them. The deployment's own secrets are made after the build: no image
    could hold them."""
    import docker

    names = (*config.GENERATED, "ADMIN_PASSWORD")
    built = config.load(config.ROOT, os.environ.get("MEDIACMS_ENV_FILE"))
    # values long enough to be told apart from ordinary text (`invoke init` makes 24+)
    secrets = {key: built.get(key) for key in names if len(built.get(key)) >= 16}
    assert "SECRET_KEY" in secrets, f"no SECRET_KEY to look for in {built.env_file}"
    client = docker.from_env()
    for row in stack.compose.ps(Context()):
        image = client.images.get(row["Image"])
        env = image.attrs["Config"].get("Env") or []
        assert not [e for e in env if e.partition("=")[0] in names], (row["Image"], env)
        baked = json.dumps(image.attrs) + json.dumps(image.history())
        leaked = [key for key, value in secrets.items() if value in baked]
        assert leaked == [], (row["Image"], leaked)
    client.close()
    assert (
        sh(stack, "web", "test -e .secret_key && echo present || echo absent").stdout.strip()
        == "absent"
    )
