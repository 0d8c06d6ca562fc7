"""The command line: every command the docs name exists, short flags mean one thing."""

import importlib.util
import re
import shlex
import sys

import pytest
from invoke import Program
from invoke.exceptions import ParseError
from invoke.parser import Parser, ParserContext

from mediacms_stack.stack import config

REPO = config.ROOT
DOCS = ["README.md", "UPGRADE_TO_7.3.md", ".env.example", "custom/README.md"]
#: Words of the docs that stand for a value: FOLDER, VERSION, "CMD", N, /path/...
PLACEHOLDER = re.compile(r"[A-Z][A-Z_.]*|N|\"[^\"]*\"|'[^']*'")


def tasks_module():
    spec = importlib.util.spec_from_file_location("ops_tasks_cli", REPO / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def parser():
    core = ParserContext(args=Program().core_args())
    return Parser(initial=core, contexts=tasks_module().ns.to_contexts())


def commands_in(text: str) -> list[str]:
    """Each `invoke ...` command of a text: inline code, code blocks, `&&` chains."""
    found = []
    for span in re.findall(r"`([^`\n]*invoke [^`\n]*)`|^\s*(invoke .*)$", text, re.M):
        for part in re.split(r"&&|;", span[0] or span[1]):
            part = part.split("#", 1)[0].strip()
            if part.startswith("invoke "):
                found.append(part)
    return found


def help_texts() -> list[str]:
    module = tasks_module()
    texts = []
    for name in module.ns.task_names:
        task = module.ns[name]
        texts.append(task.__doc__ or "")
        texts += [str(arg.help or "") for arg in task.get_arguments()]
    return texts


def documented_commands() -> list[tuple[str, str]]:
    found = [(doc, cmd) for doc in DOCS if (REPO / doc).is_file()
             for cmd in commands_in((REPO / doc).read_text())]  # fmt: skip
    found += [("help", cmd) for text in help_texts() for cmd in commands_in(text)]
    return found


def argv_of(command: str) -> list[str]:
    words = []
    for word in shlex.split(command.replace("[", " ").replace("]", " ").replace("|", " ")):
        stand_in = {"N": "1", "TASK": "up"}.get(word, "x")  # TASK: any task
        words.append(stand_in if PLACEHOLDER.fullmatch(word) else word)
    return words[1:]


def test_the_docs_name_commands_at_all():
    docs = {doc for doc, _ in documented_commands()}
    assert {"README.md", "UPGRADE_TO_7.3.md", ".env.example", "help"} <= docs


@pytest.mark.parametrize("where,command", documented_commands(), ids=lambda v: str(v)[:60])
def test_every_documented_command_parses(where, command):
    try:
        result = parser().parse_argv(argv_of(command))
    except ParseError as error:
        pytest.fail(f"{where}: `{command}`: {error}")
    names = [ctx.name for ctx in result[1:]]
    assert all(names), f"{where}: `{command}` names no task"


def test_unknown_commands_and_options_are_caught():
    for bad in ("invoke images.bootstrap", "invoke logs migrations", "invoke up --nope"):
        with pytest.raises(ParseError):
            parser().parse_argv(argv_of(bad))


def test_short_flags_mean_one_thing_and_never_hide_help():
    meaning: dict[str, set[str]] = {}
    module = tasks_module()
    for name in module.ns.task_names:
        for arg in module.ns[name].get_arguments():
            for flag in arg.names:
                if len(flag) == 1:
                    meaning.setdefault(flag, set()).add(arg.name)
    assert "h" not in meaning
    assert {flag: names for flag, names in meaning.items() if len(names) > 1} == {}
    assert meaning["n"] == {"dry_run"} and meaning["y"] == {"yes"}


def test_down_dash_h_shows_help_instead_of_stopping_anything():
    result = parser().parse_argv(["down", "-h"])
    assert result[0].args["help"].value == "down"


def test_manage_splits_like_a_shell():
    from mediacms_stack.procedures import ops

    assert ops.split_command("shell -c 'print(1)'") == ["shell", "-c", "print(1)"]
    with pytest.raises(Exception, match="like a shell"):
        ops.split_command("shell -c 'unclosed")
