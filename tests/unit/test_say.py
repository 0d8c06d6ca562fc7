"""What the package says, tagged with the task the operator ran (engines.shell.say)."""

import sys

import pytest
from invoke import MockContext

from mediacms_stack.engines import shell

pytestmark = pytest.mark.usefixtures("untagged")


def test_say_tags_with_the_task_set_and_puts_the_previous_one_back(capsys):
    shell.say("no task")
    assert shell.set_task("upgrade") is None
    shell.say("step 1/5: full backup")
    shell.say("waiting", file=sys.stderr)
    assert shell.set_task(None) == "upgrade"
    shell.say("back to none")
    said = capsys.readouterr()
    assert said.out == ("[mediacms] no task\n[upgrade] step 1/5: full backup\n"
                        "[mediacms] back to none\n")  # fmt: skip
    assert said.err == "[upgrade] waiting\n"


def test_details_are_said_only_when_verbose(capsys):
    shell.say("seconds: ...", detail=True)
    assert capsys.readouterr().out == ""
    shell.set_verbose(True)
    shell.say("seconds: ...", detail=True)
    assert capsys.readouterr().out == "[mediacms] seconds: ...\n"


def test_tasks_are_named_as_the_operator_types_them():
    import tasks

    bodies = [t.body.__wrapped__ for t in (tasks.upgrade, tasks.backup_db, tasks.dev_stack,
                                           tasks.relock, tasks.swarm_deploy,
                                           tasks.bootstrap_images)]  # fmt: skip
    assert [tasks.typed_name(body) for body in bodies] == [
        "upgrade", "backup-db", "dev", "lock", "swarm.deploy", "images.bootstrap-images"]  # fmt: skip


def test_a_task_tags_what_it_says_with_its_name_until_it_ends(capsys):
    import tasks

    @tasks.task
    def show_tag(c):
        shell.say("inside")

    show_tag(MockContext())
    shell.say("after")
    assert capsys.readouterr().out == "[show-tag] inside\n[mediacms] after\n"


def test_a_poll_is_printed_once_runs_in_a_dry_run_and_ends_at_the_awaited_answer(capsys):
    from invoke import Result

    answers = [Result("LOADING"), Result("LOADING"), Result("PONG")]
    c = MockContext(run={"redis-cli ping": answers})
    shell.set_dry(c, True)  # a query: it runs in a dry run too
    done = shell.poll(c, ["redis-cli", "ping"], lambda r: r.stdout == "PONG", timeout=5,
                      interval=0.01, what="redis answered PONG")  # fmt: skip
    assert done.stdout == "PONG"
    assert capsys.readouterr().err == "$ redis-cli ping  (every 0.01s, 5s at most)\n"


def test_a_poll_that_never_gets_its_answer_says_what_did_not_happen():
    from invoke import Result

    c = MockContext(run={"redis-cli ping": [Result("LOADING")] * 50})
    with pytest.raises(shell.StackError, match=r"redis answered PONG within 0\.05s"):
        shell.poll(c, ["redis-cli", "ping"], lambda r: r.stdout == "PONG", timeout=0.05,
                   interval=0.01, what="redis answered PONG")  # fmt: skip
