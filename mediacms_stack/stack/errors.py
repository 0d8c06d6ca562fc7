"""The one error the package raises for what an operator can act on; tasks.py ends the
task with its message as one ``error:`` line, status 1."""


class StackError(RuntimeError):
    """A failure an operator can act on: the message says what went wrong and the fix."""
