"""One operation at a time per stack, proven with two real processes."""

import subprocess
import sys
import time

import pytest

from mediacms_stack.stack import config, lock
from mediacms_stack.stack.errors import StackError

HOLDER = """
import sys, time
from mediacms_stack.stack import config, lock
settings = config.load(config.Path(sys.argv[1]))
with lock.exclusive(settings, "backup-db"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold(tmp_path, seconds):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), str(seconds)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.fixture
def settings(tmp_path):
    (tmp_path / ".env").write_text("COMPOSE_PROJECT_NAME=shop\n")
    return config.load(tmp_path)


def test_a_second_operation_refuses_naming_the_first(tmp_path, settings):
    holder = hold(tmp_path, 30)
    try:
        started = time.monotonic()
        with pytest.raises(StackError) as refused, lock.exclusive(settings, "up", wait=1):
            pytest.fail("the lock was taken twice")
        assert 1 <= time.monotonic() - started < 10
        message = str(refused.value)
        assert "stack shop is busy" in message and "`invoke backup-db`" in message
        assert f"pid {holder.pid}" in message and "since 20" in message
    finally:
        holder.kill()
        holder.wait()
    with lock.exclusive(settings, "up", wait=1) as path:  # the kernel dropped the dead holder's
        assert path == tmp_path / ".shop.lock" and '"operation": "up"' in path.read_text()
    assert path.read_text() == ""  # released: no holder named


def test_a_second_operation_waits_for_the_first_to_finish(tmp_path, settings, capsys):
    holder = hold(tmp_path, 1.5)
    started = time.monotonic()
    with lock.exclusive(settings, "backup", wait=20):
        assert time.monotonic() - started >= 1.0  # only once the holder had finished
    holder.wait()
    said = capsys.readouterr().err
    assert "[backup] waiting up to 20s for the stack's lock, held by `invoke backup-db`" in said


def test_a_task_calling_another_does_not_wait_for_itself(settings):
    with lock.exclusive(settings, "up", wait=0), lock.exclusive(settings, "dev", wait=0):
        pass


def test_other_projects_are_not_blocked(tmp_path, settings):
    holder = hold(tmp_path, 30)
    try:
        other = config.Settings(tmp_path, {"COMPOSE_PROJECT_NAME": "other"}, tmp_path / ".env")
        with lock.exclusive(other, "up", wait=0):
            pass
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("name, args", [("swarm_deploy", {}), ("swarm_scale", {"counts": "web=2"}),
                                        ("swarm_update", {"to": "9.9.10"}),
                                        ("swarm_rollback", {})])  # fmt: skip
def test_the_swarm_tasks_that_change_the_stack_wait_for_its_lock_first(
    home, name, args, monkeypatch
):
    """A swarm.deploy during a restore must not restart the writers the restore stopped:
    each task that changes the Swarm stack is refused while another operation holds the
    lock, before it does anything (a MockContext with no commands would fail on any)."""
    import functools

    from invoke import Exit, MockContext

    import tasks

    monkeypatch.setattr(tasks.lock, "exclusive", functools.partial(lock.exclusive, wait=0.5))
    holder = hold(home, 30)
    try:
        with pytest.raises(Exit, match="is busy: `invoke backup-db`"):
            getattr(tasks, name)(MockContext(), **args)
    finally:
        holder.kill()
        holder.wait()
