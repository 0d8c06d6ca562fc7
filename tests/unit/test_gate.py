"""The migration gate's classification: each operation the plan script describes, and the
path a plan takes. The script itself runs in a real image in tests/e2e/test_upgrade_gate.py."""

import pytest

from mediacms_stack.procedures import gate


@pytest.mark.parametrize(
    ("operation", "path", "why"),
    [
        ({"type": "CreateModel", "model": "Note"}, gate.ADDITIVE, "a new table"),
        ({"type": "AddField", "field": "n", "null": True}, gate.ADDITIVE, "nullable"),
        ({"type": "AddField", "field": "n", "db_default": True}, gate.ADDITIVE, "database default"),
        ({"type": "AddField", "field": "n", "many_to_many": True}, gate.ADDITIVE, "join table"),
        # Django drops a Python default once the rows are filled: the old version's INSERTs,
        # which do not name the column, would fail
        ({"type": "AddField", "field": "n", "null": False}, gate.MAINTENANCE, "NOT NULL"),
        ({"type": "AddIndex", "model": "media"}, gate.ADDITIVE, "an index"),
        ({"type": "AddConstraint", "model": "media"}, gate.ADDITIVE, "a constraint"),
        ({"type": "AlterModelOptions", "model": "media"}, gate.ADDITIVE, "no schema change"),
        ({"type": "AlterField", "field": "n", "null": True, "was_null": False}, gate.ADDITIVE,
         "same column type"),
        ({"type": "AlterField", "field": "n", "null": False, "was_null": True}, gate.MAINTENANCE,
         "NOT NULL"),
        ({"type": "AlterField", "field": "n", "null": False, "was_null": True, "db_default": True},
         gate.ADDITIVE, "same column type"),
        ({"type": "AlterField", "field": "n", "type_changed": True}, gate.MAINTENANCE, "type"),
        ({"type": "AlterField", "field": "n", "null": True, "unreadable": "LookupError: x"},
         gate.MAINTENANCE, "could not be compared (LookupError: x)"),
        ({"type": "RemoveField", "field": "n"}, gate.MAINTENANCE, "drops a column"),
        ({"type": "DeleteModel", "model": "Note"}, gate.MAINTENANCE, "drops a table"),
        ({"type": "RenameField", "old_name": "a", "new_name": "b"}, gate.MAINTENANCE, "renames"),
        ({"type": "RenameModel", "old_name": "A", "new_name": "B"}, gate.MAINTENANCE, "renames"),
        ({"type": "RunPython"}, gate.MAINTENANCE, "opaque"),
        ({"type": "RunSQL"}, gate.MAINTENANCE, "opaque"),
        ({"type": "SeparateDatabaseAndState"}, gate.MAINTENANCE, "unknown operation"),
    ],
    ids=lambda v: v["type"] if isinstance(v, dict) else None,
)  # fmt: skip
def test_each_operation_has_a_class_and_a_reason(operation, path, why):
    found, reason = gate.classify(operation)
    assert found == path and why in reason


def additive_then(*operations: dict) -> list[dict]:
    return [
        {"migration": "files.0009_a", "operations": [{"type": "CreateModel", "model": "Note"}]},
        {"migration": "files.0010_b", "operations": list(operations)},
    ]


def test_one_maintenance_operation_decides_the_path_and_the_report_names_it():
    plan = gate.steps(additive_then({"type": "AddField", "model": "media", "field": "n",
                                     "null": True},
                                    {"type": "RenameField", "model": "media", "old_name": "a",
                                     "new_name": "b"}))  # fmt: skip
    assert gate.path_of(plan) == gate.MAINTENANCE
    text = gate.report(plan)
    assert text.startswith("2 migration(s) to apply:")
    assert "files.0010_b  RenameField media.a->b  maintenance  renames a column" in text
    assert text.endswith("the maintenance path (files.0010_b: RenameField media.a->b, renames a "
                         "column the running version reads)")  # fmt: skip


def test_a_renamed_model_is_named_old_to_new():
    (step,) = gate.steps([{"migration": "files.0012_d", "operations": [
        {"type": "RenameModel", "old_name": "Clip", "new_name": "Video"}]}])  # fmt: skip
    assert step.operation == "RenameModel Clip->Video" and step.verdict == gate.MAINTENANCE


def test_an_additive_or_empty_plan_takes_the_zero_downtime_path():
    plan = gate.steps(additive_then({"type": "AddIndex", "model": "media"}))
    assert gate.path_of(plan) == gate.ZERO_DOWNTIME
    assert gate.report(plan).endswith("every operation is additive: the zero-downtime path")
    assert gate.path_of([]) == gate.ZERO_DOWNTIME and "zero-downtime" in gate.report([])
    empty = gate.steps([{"migration": "files.0011_c", "operations": []}])
    assert gate.path_of(empty) == gate.ZERO_DOWNTIME


def test_nginx_reads_the_file_the_upgrade_writes_and_the_image_has_the_command():
    from mediacms_stack.stack import config, model

    site = (config.ROOT / "config" / "nginx" / "site.conf").read_text()
    script = (config.ROOT / "scripts" / "nginx-maintenance.sh").read_text()
    dockerfile = (config.ROOT / "Dockerfile.nginx").read_text()
    assert "include /tmp/nginx/maintenance.conf;" in site
    assert "conf=/tmp/nginx/maintenance.conf" in script
    assert f"/usr/local/bin/{model.MAINTENANCE_COMMAND}\n" in dockerfile
