"""invoke backup-schedule: a systemd timer or one crontab line, replaced never doubled."""

import re
import shlex

import pytest
from invoke import MockContext, Result

from mediacms_stack.data import schedule
from mediacms_stack.stack import config
from mediacms_stack.stack.errors import StackError


@pytest.fixture
def plan(tmp_path):
    settings = config.Settings(tmp_path, {"COMPOSE_PROJECT_NAME": "shop"}, tmp_path / ".env")
    return schedule.make(settings, at="03:15", keep=7, dest=tmp_path / "backups")


def test_bad_time_or_keep_is_refused(tmp_path):
    settings = config.Settings(tmp_path, {}, tmp_path / ".env")
    for at in ("3:15", "24:00", "03:15; rm -rf /"):
        with pytest.raises(StackError, match="HH:MM"):
            schedule.make(settings, at=at, keep=1, dest=tmp_path)
    with pytest.raises(StackError, match="at least 1"):
        schedule.make(settings, at="01:00", keep=0, dest=tmp_path)


def test_the_command_backs_up_this_deployment_with_retention(plan, tmp_path):
    argv = plan.argv()
    assert f"MEDIACMS_HOME={tmp_path}" in argv and f"MEDIACMS_ENV_FILE={tmp_path / '.env'}" in argv
    assert argv[argv.index("backup") :] == ["backup", "--dest", str(tmp_path / "backups"),
                                            "--keep", "7"]  # fmt: skip


def test_systemd_writes_a_daily_persistent_timer_and_enables_it(plan, tmp_path):
    units = tmp_path / "units"
    c = MockContext(run={re.compile(r"systemctl .*"): Result()}, repeat=True)
    how = schedule.install(c, plan, systemd=True, folder=units)
    timer = (units / "mediacms-backup-shop.timer").read_text()
    service = (units / "mediacms-backup-shop.service").read_text()
    assert "OnCalendar=*-*-* 03:15:00" in timer and "Persistent=true" in timer
    exec_line = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert shlex.split(exec_line.removeprefix("ExecStart=")) == plan.argv()
    commands = [call.args[0] for call in c.run.call_args_list]
    assert commands[-1].endswith("enable --now mediacms-backup-shop.timer")
    assert "mediacms-backup-shop.timer" in how
    schedule.remove(c, plan, systemd=True, folder=units)
    assert list(units.iterdir()) == []


def test_cron_line_is_added_once_and_replaced_keeping_other_lines(plan):
    mine = plan.cron_line()
    assert mine.startswith("15 3 * * * env MEDIACMS_HOME=") and mine.endswith(
        "# mediacms-backup-shop"
    )
    existing = "0 1 * * * /usr/local/bin/other\n" + mine.replace("15 3", "0 4") + "\n"
    c = MockContext(run={re.compile(r"crontab -l"): Result(existing),
                         re.compile(r"crontab -"): Result()}, repeat=True)  # fmt: skip
    schedule.install(c, plan, systemd=False)
    written = c.run.call_args_list[-1].kwargs["in_stream"].getvalue()
    assert written == f"0 1 * * * /usr/local/bin/other\n{mine}\n"
    c = MockContext(run={re.compile(r"crontab -l"): Result(written),
                         re.compile(r"crontab -"): Result()}, repeat=True)  # fmt: skip
    schedule.remove(c, plan, systemd=False)
    assert (
        c.run.call_args_list[-1].kwargs["in_stream"].getvalue()
        == "0 1 * * * /usr/local/bin/other\n"
    )


def test_dry_run_writes_nothing(plan, tmp_path, capsys, dry):
    units = tmp_path / "units"
    schedule.install(dry(MockContext()), plan, systemd=True, folder=units)
    assert not units.exists() and "would write" in capsys.readouterr().out
    c = dry(
        MockContext(
            run={re.compile(r"crontab -l"): Result("", exited=1, stderr="no crontab for u")}
        )
    )
    schedule.install(c, plan, systemd=False)
    assert len(c.run.call_args_list) == 1  # only read


def test_without_cron_it_says_what_to_do(plan):
    c = MockContext(
        run={re.compile(r"crontab -l"): Result(exited=127, stderr="crontab: not found")}
    )
    with pytest.raises(StackError, match="install cron"):
        schedule.install(c, plan, systemd=False)


def test_full_backups_are_pruned_per_project(tmp_path):
    import json

    from mediacms_stack.data import artifacts

    for project, day in (("shop", 1), ("other", 2), ("shop", 3), ("shop", 4)):
        folder = tmp_path / f"mediacms-2026010{day}T000000Z"
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"project": project}))
    (tmp_path / "mediacms-db-20260105T000000Z.dump").write_bytes(b"PGDMP")
    artifacts.prune(tmp_path, "mediacms-2*", 2, "shop")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mediacms-20260102T000000Z", "mediacms-20260103T000000Z", "mediacms-20260104T000000Z",
        "mediacms-db-20260105T000000Z.dump",
    ]  # fmt: skip


def test_verify_runs_backup_verify_only_after_a_backup_that_succeeded(tmp_path):
    settings = config.Settings(tmp_path, {"COMPOSE_PROJECT_NAME": "shop"}, tmp_path / ".env")
    plan = schedule.make(settings, at="03:15", keep=7, dest=tmp_path / "b", verify=True)
    backup, verify = plan.commands()
    assert backup == plan.argv()
    assert verify[verify.index("backup-verify") :] == ["backup-verify", "--backups",
                                                      str(tmp_path / "b")]  # fmt: skip
    service = plan.units()["mediacms-backup-shop.service"]
    starts = [shlex.split(line.removeprefix("ExecStart="))
              for line in service.splitlines() if line.startswith("ExecStart=")]  # fmt: skip
    assert starts == [backup, verify]  # oneshot: the second runs only when the first succeeded
    line = plan.cron_line()
    assert f"{shlex.join(backup)} && {shlex.join(verify)}" in line
