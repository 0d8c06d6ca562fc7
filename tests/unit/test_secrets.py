"""No secret in a printed command or in the argv of any process the tasks start."""

import json
import re

from invoke import MockContext, Result

from mediacms_stack.engines.compose import Compose
from mediacms_stack.procedures import ops

SECRET = "s3cret-$(id)-'x\" y"


def test_set_admin_password_hands_the_password_over_on_stdin(tmp_path, capsys):
    c = MockContext(run={re.compile(r".*manage\.py shell.*", re.S): Result("password set")})
    ops.set_admin_password(c, Compose(tmp_path), "admin", SECRET)
    [call] = c.run.call_args_list
    command, kwargs = call.args[0], call.kwargs
    assert SECRET not in command and "s3cret" not in command
    assert "exec -T web python manage.py shell -c" in command
    assert json.loads(kwargs["in_stream"].read()) == {"user": "admin", "password": SECRET}
    printed = capsys.readouterr()
    assert "s3cret" not in printed.out + printed.err
    assert "manage.py shell" in printed.err  # the command itself is still shown


def test_a_generated_password_is_returned_and_never_in_the_command(tmp_path, capsys):
    c = MockContext(run={re.compile(r".*", re.S): Result("password set")})
    password = ops.set_admin_password(c, Compose(tmp_path), "admin", None)
    assert len(password) >= 20
    assert password not in c.run.call_args.args[0]
    assert password not in capsys.readouterr().err
