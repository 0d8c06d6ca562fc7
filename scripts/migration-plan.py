"""The migrations a MediaCMS image would apply to the live database, as JSON on stdout.

Run by `invoke upgrade` with the NEW image's python, in its tree, against the running
database (`docker compose run migrations python -c <this file>`), before anything
changes. It reads; it cannot write: the session is read-only in PostgreSQL itself.
It asks Django's own machinery (the loader and executor `manage.py migrate` uses) for
the plan to the leaf migrations, and describes each operation: its class name and what
the gate on the host needs to classify it (mediacms_stack/procedures/gate.py).
"""

import json
import os

os.environ["PGOPTIONS"] = "-c default_transaction_read_only=on"  # libpq: read-only session
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cms.settings")  # run in the tree

import django

django.setup()

from django.db import connection, migrations  # noqa: E402
from django.db.migrations.executor import MigrationExecutor  # noqa: E402
from django.db.models import NOT_PROVIDED  # noqa: E402


def column(state, app, model, name):
    """(database type, null) of a field in a migration state, the model rendered."""
    field = state.apps.get_model(app, model)._meta.get_field(name)
    return field.db_parameters(connection)["type"], field.null


def describe(operation, app, state):
    """What the gate needs of one operation; ``state`` is the state just before it."""
    found = {"type": type(operation).__name__}
    if hasattr(operation, "model_name"):  # on a model's field, index or constraint
        found["model"] = operation.model_name
        if hasattr(operation, "name"):
            found["field"] = operation.name
    elif hasattr(operation, "name"):  # on a model
        found["model"] = operation.name
    for renamed in ("old_name", "new_name"):
        if hasattr(operation, renamed):
            found[renamed] = getattr(operation, renamed)
    field = getattr(operation, "field", None)
    if field is not None:
        found |= {
            "null": field.null,
            "db_default": getattr(field, "db_default", NOT_PROVIDED) is not NOT_PROVIDED,
            "many_to_many": bool(field.many_to_many),
        }
    if isinstance(operation, migrations.AlterField):
        try:
            old_type, found["was_null"] = column(state, app, operation.model_name, operation.name)
            after = state.clone()
            operation.state_forwards(app, after)
            new_type, _ = column(after, app, operation.model_name, operation.name)
            found["type_changed"] = old_type != new_type
        except Exception as error:  # any: the gate then plans for the worst
            found["unreadable"] = f"{type(error).__name__}: {error}"
    return found


executor = MigrationExecutor(connection)
plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
described = []
for migration, _backwards in plan:
    key = (migration.app_label, migration.name)
    state = executor.loader.project_state(key, at_end=False)
    operations = []
    for operation in migration.operations:
        operations.append(describe(operation, migration.app_label, state))
        operation.state_forwards(migration.app_label, state)
    described.append({"migration": f"{key[0]}.{key[1]}", "operations": operations})
print(json.dumps(described))
