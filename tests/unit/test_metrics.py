"""The metrics overlay's wiring: which tasks include it, what `up --metrics` records,
and its derived database password."""

from __future__ import annotations

import re

import pytest
from invoke import MockContext, Result

import tasks
from mediacms_stack.engines.compose import Compose
from mediacms_stack.images import bootstrap
from mediacms_stack.procedures import doctor
from mediacms_stack.stack import config, secrets

OVERLAY = "docker-compose-metrics.yaml"


@pytest.mark.parametrize("value, overlay", [("true", True), ("false", False), ("", False)])
def test_every_task_includes_the_overlay_when_env_says_so(home, value, overlay):
    settings = config.update(config.load(home), {"METRICS_OVERLAY": value,
                                                 "HTTPS_OVERLAY": "true"})  # fmt: skip
    files = Compose.for_settings(settings).files
    assert files[:2] == ("docker-compose.yaml", "docker-compose-cert.yaml")
    assert (OVERLAY in files) is overlay
    assert Compose.for_settings(settings, dev=True).files == ("docker-compose-dev.yaml",)


def test_up_metrics_records_the_overlay_and_its_image(home, monkeypatch, capsys):
    monkeypatch.setattr(tasks.engines, "ensure", lambda c: None)
    monkeypatch.setattr(doctor.engine, "engine_answers", lambda: False)
    monkeypatch.setattr(tasks.ops, "ensure_images", lambda c, s: None)
    monkeypatch.setattr(tasks.ops, "welcome", lambda s: "")
    monkeypatch.setattr(bootstrap.engine, "image", lambda ref: object())  # already built
    c = MockContext(run=Result(""), repeat=True)
    tasks.up(c, metrics=True, dry_run=True)
    assert f"--file {OVERLAY} up" in capsys.readouterr().err  # the command it would run
    assert not c.run.called
    assert config.load(home).get("METRICS_OVERLAY") in ("", "false")  # a dry run writes nothing
    tasks.up(c, metrics=True)
    assert OVERLAY in c.run.call_args.args[0]
    recorded = config.load(home)
    assert recorded.get("METRICS_OVERLAY") == "true"
    assert re.fullmatch(r"mediacms-local/metrics:[0-9a-f]{12}", recorded.get("METRICS_IMAGE"))
    tasks.down(c)  # no flag: .env says so
    assert OVERLAY in c.run.call_args.args[0]


def test_the_metrics_role_password_is_derived_and_never_the_key(home):
    settings = config.load(home)
    first = secrets.overlay_values(settings)["metrics_db_password"]
    assert re.fullmatch(r"[0-9a-f]{64}", first) and settings.get("SECRET_KEY") not in first
    assert secrets.overlay_values(settings)["metrics_db_password"] == first  # stable
    other = config.update(settings, {"SECRET_KEY": "another-key"})
    assert secrets.overlay_values(other)["metrics_db_password"] != first
