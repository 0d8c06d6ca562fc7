"""What the package says, tagged with the task the operator ran (engines.shell.say)."""

import sys

import pytest

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
