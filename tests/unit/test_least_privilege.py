"""Redis's password in .env (fresh and older files) and images without setuid bits."""

import stat

from dotenv import dotenv_values
from invoke import MockContext

from mediacms_stack.images import bootstrap
from mediacms_stack.procedures import upgrade
from mediacms_stack.stack import config

OLD_ENV = "# an older .env\nMEDIACMS_VERSION=8.3.2\nSECRET_KEY=old-key\nPOSTGRES_PASSWORD=old-pw\n"


def test_init_generates_a_url_safe_redis_password(home):
    settings = config.load(home)
    password = settings.require("REDIS_PASSWORD")
    assert len(password) >= 24 and password != settings.get("POSTGRES_PASSWORD")
    assert password.replace("-", "").replace("_", "").isalnum()  # fits in redis://:PW@host


def test_an_older_env_gains_the_redis_password_and_new_keys(tmp_path, capsys):
    env = tmp_path / ".env"
    env.write_text(OLD_ENV)
    env.chmod(0o600)
    settings = upgrade.add_missing_keys(config.load(tmp_path))
    values = dotenv_values(env)
    assert values["REDIS_PASSWORD"] == settings.get("REDIS_PASSWORD")
    assert len(values["REDIS_PASSWORD"]) >= 24
    assert values["TMPFS_SIZE"] == dotenv_values(config.ROOT / ".env.example")["TMPFS_SIZE"]
    assert values["SECRET_KEY"] == "old-key" and values["POSTGRES_PASSWORD"] == "old-pw"
    assert not config.missing_keys(config.load(tmp_path))
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    printed = capsys.readouterr().out
    assert "REDIS_PASSWORD" in printed and values["REDIS_PASSWORD"] not in printed
    again = upgrade.add_missing_keys(config.load(tmp_path))  # nothing left to add
    assert again.get("REDIS_PASSWORD") == values["REDIS_PASSWORD"]
    assert dotenv_values(env) == values


def test_an_empty_redis_password_is_generated_too(tmp_path):
    (tmp_path / ".env").write_text(OLD_ENV + "REDIS_PASSWORD=\n")
    settings = upgrade.add_missing_keys(config.load(tmp_path))
    assert len(dotenv_values(tmp_path / ".env")["REDIS_PASSWORD"]) >= 24
    assert settings.get("REDIS_PASSWORD") == dotenv_values(tmp_path / ".env")["REDIS_PASSWORD"]


def test_dry_run_adds_the_keys_in_memory_only(tmp_path, capsys):
    env = tmp_path / ".env"
    env.write_text(OLD_ENV)
    settings = upgrade.add_missing_keys(config.load(tmp_path), dry_run=True)
    assert settings.get("REDIS_PASSWORD") and env.read_text() == OLD_ENV
    assert "would add" in capsys.readouterr().out


def test_upgrade_task_completes_an_older_env_before_checking_it(tmp_path, monkeypatch):
    import tasks

    (tmp_path / ".env").write_text(OLD_ENV)
    (tmp_path / ".env").chmod(0o600)
    monkeypatch.setenv("MEDIACMS_HOME", str(tmp_path))
    monkeypatch.delenv("MEDIACMS_ENV_FILE", raising=False)
    checked, started = [], []

    def require(c, settings, *names):
        checked.append((names, settings.get("REDIS_PASSWORD")))

    monkeypatch.setattr(tasks.checks, "require", require)
    monkeypatch.setattr(
        upgrade, "upgrade", lambda c, compose, settings, **kw: started.append(settings)
    )
    tasks.upgrade(MockContext(), to="8.4.0")
    password = dotenv_values(tmp_path / ".env")["REDIS_PASSWORD"]
    assert checked == [(("engine", "compose"), ""), (("env",), password)]
    assert started[0].get("REDIS_PASSWORD") == password


def test_bootstrap_rootfs_keeps_no_setuid_or_setgid_file(tmp_path):
    root = tmp_path / "rootfs"
    for folder in ("usr/bin", "etc/dpkg/dpkg.cfg.d", "etc/apt/apt.conf.d", "var/mail"):
        (root / folder).mkdir(parents=True)
    su, wall, plain = root / "usr/bin/su", root / "usr/bin/wall", root / "usr/bin/ls"
    for path, mode in ((su, 0o4755), (wall, 0o2755), (plain, 0o755)):
        path.write_text("#!/bin/sh\n")
        path.chmod(mode)
    (root / "var/mail").chmod(0o2775)  # a setgid folder is no program: left alone
    bootstrap.slim_rootfs(root, bootstrap.DEFAULT_MIRROR)
    assert [stat.S_IMODE(p.stat().st_mode) for p in (su, wall, plain)] == [0o755] * 3
    assert stat.S_IMODE((root / "var/mail").stat().st_mode) == 0o2775
