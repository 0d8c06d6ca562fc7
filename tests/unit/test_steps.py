"""The procedures' step runner: numbered, said, timed, undone the last first."""

import time

import pytest

from mediacms_stack.engines.steps import Steps, UndoFailed
from mediacms_stack.stack.errors import StackError

pytestmark = pytest.mark.usefixtures("untagged")  # the default tag, [mediacms]


def lines(text: str) -> list[str]:
    """The lines said, with the seconds left out."""
    return [line.rsplit(" in ", 1)[0] if " done in " in line else line
            for line in text.splitlines()]  # fmt: skip


def test_steps_are_numbered_said_and_timed_in_order(capsys):
    steps = Steps(2)
    with steps.step("the images of 8.4.0"):
        time.sleep(0.05)
    with steps.step("the gate"):
        pass
    out = capsys.readouterr().out
    assert lines(out) == [
        "[mediacms] step 1/2: the images of 8.4.0",
        "[mediacms] step 1/2 done",
        "[mediacms] step 2/2: the gate",
        "[mediacms] step 2/2 done",
    ]
    assert list(steps.seconds) == ["the images of 8.4.0", "the gate"]
    assert 0.05 <= steps.seconds["the images of 8.4.0"] < 5
    assert f"done in {steps.seconds['the images of 8.4.0']:.1f}s" in out


def test_a_failing_step_undoes_what_came_before_last_first_and_its_error_goes_on(capsys):
    done = []
    steps = Steps(3)
    error = StackError("the custom/ archive is damaged")
    with pytest.raises(StackError) as raised:
        with steps.step("the database"):
            steps.on_failure("the database", lambda: done.append("database") or "db put back")
        with steps.step("the media"):
            steps.on_failure("the media", lambda: done.append("media"))
        with steps.step("custom/"):
            raise error
    assert raised.value is error
    assert done == ["media", "database"]
    assert steps.undone == {"the database": "db put back"}
    assert list(steps.seconds) == ["the database", "the media"]  # the failed one is not timed
    err = capsys.readouterr().err
    assert "[mediacms] step 3/3 failed after" in err
    assert err.index("undoing: the media") < err.index("undoing: the database")


def test_a_step_that_registered_its_undo_before_failing_is_undone_too():
    done = []
    steps = Steps(1)
    with pytest.raises(KeyboardInterrupt), steps.step("the database"):
        steps.on_failure("the database", lambda: done.append("database"))
        raise KeyboardInterrupt
    assert done == ["database"]


def test_what_was_committed_is_not_undone():
    done = []
    steps = Steps(2)
    with steps.step("copy"):
        steps.on_failure("the new volume", lambda: done.append("volume"))
    steps.commit()
    with pytest.raises(StackError, match="not healthy"), steps.step("switch"):
        raise StackError("the stack is not healthy")
    assert done == []


def test_an_undo_that_fails_is_named_with_the_original_error_and_the_others_still_run(capsys):
    done = []

    def broken() -> None:
        raise StackError("restore the safety backup x.dump with invoke restore-db")

    steps = Steps(3)
    original = OSError("no space left")
    with pytest.raises(UndoFailed) as raised:
        with steps.step("the database"):
            steps.on_failure("the database", broken)
        with steps.step("the media"):
            steps.on_failure("the media", lambda: done.append("media"))
        with steps.step("custom/"):
            raise original
    assert done == ["media"]  # the undo after the broken one ran as well
    assert raised.value.__cause__ is original
    assert str(raised.value) == ("no space left\nthen not everything could be undone:\n"
                                 "  the database: restore the safety backup x.dump with "
                                 "invoke restore-db")  # fmt: skip
    assert isinstance(raised.value, StackError)  # a task ends with its `error:` line


def test_steps_inside_a_step_are_indented_under_it(capsys):
    outer = Steps(2)
    with outer.step("database, media and custom/ from the backup"):
        inner = Steps(1)
        with inner.step("the database"):
            pass
    said = lines(capsys.readouterr().out)
    assert said == [
        "[mediacms] step 1/2: database, media and custom/ from the backup",
        "[mediacms]   step 1/1: the database",
        "[mediacms]   step 1/1 done",
        "[mediacms] step 1/2 done",
    ]
