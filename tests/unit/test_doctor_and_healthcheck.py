import importlib.util
import os
import time

from mediacms_stack import config, doctor

spec = importlib.util.spec_from_file_location("healthcheck", config.ROOT / "scripts/healthcheck.py")
healthcheck = importlib.util.module_from_spec(spec)
spec.loader.exec_module(healthcheck)


def test_env_check_passes_on_fresh_init_and_fails_when_readable(home):
    settings = config.load(home)
    assert doctor.CHECKS["env"](settings).ok
    (home / ".env").chmod(0o644)
    check = doctor.CHECKS["env"](settings)
    assert not check.ok and "chmod 600" in check.fix


def test_custom_settings_syntax_error_is_reported(home):
    (home / "custom").mkdir()
    (home / "custom" / "local_settings.py").write_text("PORTAL_NAME = 'x\n")
    check = doctor.CHECKS["custom"](config.load(home))
    assert not check.ok and "local_settings.py" in check.detail


def test_table_marks_failures_with_fix():
    text = doctor.table([doctor.Check("a", True, "fine"), doctor.Check("b", False, "bad", "do x")])
    assert "PASS  a  fine" in text and "FAIL  b  bad  -> do x" in text


def test_beat_health_follows_schedule_file_age(tmp_path):
    schedule = tmp_path / "celerybeat-schedule"
    assert "does not exist" in healthcheck.beat(str(schedule), "300")
    schedule.write_text("x")
    assert healthcheck.beat(str(schedule), "300") is None
    old = time.time() - 600
    os.utime(schedule, (old, old))
    assert "last written" in healthcheck.beat(str(schedule), "300")
