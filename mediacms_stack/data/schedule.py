"""``invoke backup-schedule``: a daily full backup with retention, run by the host.

Where systemd runs (``/run/systemd/system`` exists) a service and a timer are written
(system units as root, user units otherwise; ``Persistent=true`` catches up a run missed
while the machine was off). Elsewhere one line in the user's crontab, marked with the
project's name so that it is replaced, never doubled. Either runs
``python -m invoke backup --keep N [--offsite]`` from this checkout against this
deployment, and with ``verify`` then ``backup-verify`` (systemd: a second
``ExecStart``, run only when the backup succeeded; cron: ``&&``).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from invoke.context import Context

from ..engines.shell import dry, run, say
from ..stack import files
from ..stack.config import ROOT, Settings
from ..stack.errors import StackError
from .offsite import configured

SYSTEMD_RUNNING = Path("/run/systemd/system")
_TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


@dataclass(frozen=True)
class Schedule:
    """What runs when: the backup command line and the time of day (HH:MM, local)."""

    settings: Settings
    at: str
    keep: int
    dest: Path
    verify: bool = False
    offsite: bool = False

    @property
    def name(self) -> str:
        return f"mediacms-backup-{self.settings.project}"

    def invoke(self, *task: str) -> list[str]:
        """``invoke TASK...`` from this checkout against this deployment."""
        env = [f"MEDIACMS_HOME={self.settings.root}", f"MEDIACMS_ENV_FILE={self.settings.env_file}"]
        return ["env", *env, sys.executable, "-m", "invoke", "--search-root", str(ROOT), *task]

    def argv(self) -> list[str]:
        return self.invoke("backup", "--dest", str(self.dest), "--keep", str(self.keep),
                           *(["--offsite"] if self.offsite else []))  # fmt: skip

    def commands(self) -> list[list[str]]:
        """The backup, then (``verify``) backup-verify of the newest backup it made."""
        verify = [self.invoke("backup-verify", "--backups", str(self.dest))] if self.verify else []
        return [self.argv(), *verify]

    def units(self) -> dict[str, str]:
        starts = "".join(f"ExecStart={shlex.join(argv).replace('%', '%%')}\n"
                         for argv in self.commands())  # fmt: skip
        return {
            f"{self.name}.service": (
                "[Unit]\n"
                f"Description=MediaCMS full backup of {self.settings.project}\n\n"
                "[Service]\nType=oneshot\n"
                f"{starts}"
            ),
            f"{self.name}.timer": (
                "[Unit]\n"
                f"Description=Daily MediaCMS backup of {self.settings.project}\n\n"
                f"[Timer]\nOnCalendar=*-*-* {self.at}:00\nPersistent=true\n\n"
                "[Install]\nWantedBy=timers.target\n"
            ),
        }

    def cron_line(self) -> str:
        hour, minute = self.at.split(":")
        command = " && ".join(shlex.join(argv) for argv in self.commands()).replace("%", "\\%")
        return f"{int(minute)} {int(hour)} * * * {command} >/dev/null 2>&1  # {self.name}"


def make(settings: Settings, *, at: str, keep: int, dest: Path, verify: bool = False,
         offsite: bool = False) -> Schedule:  # fmt: skip
    """The schedule, checked; with ``offsite`` the .env's repository settings too, so that
    a mistake shows now rather than in the first night's log."""
    if not _TIME.fullmatch(at):
        raise StackError(f"--at {at!r}: expected HH:MM (24 h, local time), e.g. 03:15")
    if keep < 1:
        raise StackError("--keep must be at least 1 (how many full backups to keep)")
    if offsite:
        configured(settings, dest)
    return Schedule(settings, at, keep, dest.resolve(), verify, offsite)


def unit_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/etc/systemd/system")
    return Path.home() / ".config" / "systemd" / "user"


def _systemctl(*args: str) -> list[str]:
    return ["systemctl", *([] if os.geteuid() == 0 else ["--user"]), *args]


def install(c: Context, schedule: Schedule, *, systemd: bool | None = None,
            folder: Path | None = None) -> str:  # fmt: skip
    """Install (or replace) the schedule; returns how it is run."""
    dry_run = dry(c)
    if systemd if systemd is not None else SYSTEMD_RUNNING.is_dir():
        folder = folder or unit_dir()
        for name, text in schedule.units().items():
            say(f"{'would write' if dry_run else 'writing'} {folder / name}")
            if not dry_run:
                folder.mkdir(parents=True, exist_ok=True)
                files.write_private(folder / name, text)
                (folder / name).chmod(0o644)
        run(c, _systemctl("daemon-reload"))
        run(c, _systemctl("enable", "--now", f"{schedule.name}.timer"))
        return f"systemd timer {schedule.name}.timer (see: {shlex.join(_systemctl('list-timers'))})"
    lines = [line for line in _crontab(c) if not line.endswith(f"# {schedule.name}")]
    _write_crontab(c, [*lines, schedule.cron_line()])
    return f"cron, daily at {schedule.at} (see: crontab -l)"


def remove(c: Context, schedule: Schedule, *, systemd: bool | None = None,
           folder: Path | None = None) -> None:  # fmt: skip
    dry_run = dry(c)
    if systemd if systemd is not None else SYSTEMD_RUNNING.is_dir():
        folder = folder or unit_dir()
        run(c, _systemctl("disable", "--now", f"{schedule.name}.timer"), warn=True)
        for name in schedule.units():
            say(f"{'would remove' if dry_run else 'removing'} {folder / name}")
            if not dry_run:
                (folder / name).unlink(missing_ok=True)
        run(c, _systemctl("daemon-reload"))
        return
    lines = _crontab(c)
    kept = [line for line in lines if not line.endswith(f"# {schedule.name}")]
    if kept != lines:
        _write_crontab(c, kept)


def _crontab(c: Context) -> list[str]:
    result = run(c, ["crontab", "-l"], query=True, hide=True, warn=True, in_stream=False)
    if result is None:
        return []
    if not result.ok and "no crontab" not in result.stderr:
        raise StackError("no systemd and no usable cron here: install cron (apt-get install "
                         f"cron) or run `invoke backup --keep N` from your own scheduler "
                         f"({result.stderr.strip()})")  # fmt: skip
    return result.stdout.splitlines() if result.ok else []


def _write_crontab(c: Context, lines: list[str]) -> None:
    import io

    text = "".join(f"{line}\n" for line in lines)
    if dry(c):
        say(f"would set the crontab to:\n{text.rstrip()}")
        return
    result = run(c, ["crontab", "-"], in_stream=io.StringIO(text), warn=True, hide=True)
    if result is not None and not result.ok:
        raise StackError(f"crontab refused the new table: {result.stderr.strip()}")
