"""`invoke --help TASK` is the manual: every option of every task says what it does."""

import copy
import inspect
import re

import tasks


def every_task(collection, prefix=""):
    """(dotted name, task) of a collection and its sub-collections (images, swarm)."""
    for name, task in collection.tasks.items():
        yield prefix + name, task
    for name, sub in collection.collections.items():
        yield from every_task(sub, f"{prefix}{name}.")


def arguments(task):
    """The task's arguments as `invoke --help` shows them; on a copy, as get_arguments()
    consumes the task's ``help`` dict (it pops each text it hands to an argument)."""
    probe = copy.copy(task)
    probe.help = dict(task.help)
    return probe.get_arguments()


def test_the_walk_reaches_the_sub_collections():
    names = {name for name, _ in every_task(tasks.ns)}
    assert {"backup-db", "images.bootstrap-images", "swarm.rollback"} <= names
    assert names == set(tasks.ns.task_names)


def test_every_option_of_every_task_has_help():
    missing = [f"{name} --{arg.names[0]}" for name, task in every_task(tasks.ns)
               for arg in arguments(task) if not str(arg.help or "").strip()]  # fmt: skip
    assert missing == []


def test_options_with_a_default_say_it_at_the_end():
    """A flag, number or text with a default ends its help with "(Default: ...)"."""
    unsaid = []
    for name, task in every_task(tasks.ns):
        signature = inspect.signature(task.body).parameters
        for arg in arguments(task):
            default = signature[arg.name].default
            if default in (None, inspect.Parameter.empty):
                continue  # required, or its help says what happens without it
            if not re.search(r" \(Default: [^()]+\)$", str(arg.help)):
                unsaid.append(f"{name} --{arg.names[0]}: {arg.help}")
    assert unsaid == []


def test_the_wrapper_supplies_the_common_options_help_and_a_task_may_differ():
    def help_of(task_name, option):
        (arg,) = [a for a in arguments(tasks.ns[task_name]) if a.name == option]
        return arg.help

    assert help_of("pull", "dry_run") == tasks.COMMON_HELP["dry_run"]
    assert help_of("swarm.rollback", "dry_run") == tasks.COMMON_HELP["dry_run"]
    assert help_of("backup", "dest") == tasks.COMMON_HELP["dest"]
    assert help_of("migrate-from-7x", "dry_run").startswith("print the plan (sizes")
