"""MediaCMS's database role is not a superuser, on a fresh stack and after `invoke upgrade`.

A fresh stack's app role owns its database and nothing else: the attacks a compromised
web or worker container could make through its connection (run programs with COPY, read
server files, make roles, become superuser) are refused. A stack made before the split
(one role, the superuser) gets a plain role of its own from `invoke upgrade`, with every
row and every login kept, and the superuser's password in no MediaCMS container.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import Stack, new_deployment, report_failure
from dotenv import dotenv_values

from mediacms_stack.stack import config, model

pytestmark = pytest.mark.e2e

#: Printed by the probe below: one line per attempt, "refused" or what went through.
PROBE = """
from django.db import connection
attacks = {
    "program": "COPY (SELECT 1) TO PROGRAM 'id'",
    "server file": "SELECT pg_read_file('/etc/passwd')",
    "new role": "CREATE ROLE intruder LOGIN",
    "superuser": "ALTER ROLE CURRENT_USER SUPERUSER",
    "new database": "CREATE DATABASE intruder",
}
with connection.cursor() as cursor:
    cursor.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                   "WHERE rolname = current_user")
    print("attributes", *cursor.fetchone())
    cursor.execute("SELECT pg_get_userbyid(datdba) = current_user FROM pg_database "
                   "WHERE datname = current_database()")
    print("owns database", cursor.fetchone()[0])
    for name, sql in attacks.items():
        try:  # autocommit: each statement on its own (CREATE DATABASE refuses a transaction)
            cursor.execute(sql)
            print(name, "THROUGH")
        except Exception as error:
            reason = str(error).splitlines()[0]
            print(name, "refused" if "permission denied" in reason else f"failed: {reason}")
"""


def probe(deployment: Stack, service: str = "web") -> dict[str, str]:
    done = deployment.dc("exec", "-T", service, "python", "manage.py", "shell", "-c", PROBE)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    attributes = next(line for line in lines if line.startswith("attributes "))
    owns = next(line for line in lines if line.startswith("owns database "))
    results = {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in lines
               if line.endswith((" refused", " THROUGH"))}  # fmt: skip
    results |= {line.split(" failed: ")[0]: line for line in lines if " failed: " in line}
    return {"attributes": attributes, "owns": owns, **results}


def assert_plain_owner(result: dict[str, str]) -> None:
    assert result["attributes"] == "attributes False False False", result
    assert result["owns"] == "owns database True", result
    for name in ("program", "server file", "new role", "superuser", "new database"):
        assert result.get(name) == "refused", result


def environments(deployment: Stack) -> dict[str, list[str]]:
    rows = deployment.dc("ps", "--format", "json").stdout
    ids = {json.loads(line)["Service"]: json.loads(line)["ID"] for line in rows.splitlines()}
    done = subprocess.run(["docker", "inspect", *ids.values()], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c["Config"]["Env"]
            for c in json.loads(done.stdout)}  # fmt: skip


def test_a_fresh_stack_connects_as_a_plain_role_that_owns_its_database(stack):
    assert_plain_owner(probe(stack))
    assert_plain_owner(probe(stack, "celery_long"))
    values = dotenv_values(stack.settings.env_file)
    assert values["POSTGRES_SUPERUSER"] == "postgres"
    superuser_password = values["POSTGRES_SUPERUSER_PASSWORD"]
    assert len(superuser_password) >= 24 and superuser_password != values["POSTGRES_PASSWORD"]
    for service, env in environments(stack).items():
        if service != "db":
            assert not any(superuser_password in item for item in env), service


def test_upgrade_gives_an_older_stack_a_plain_role_and_keeps_everything(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
):
    home = tmp_path_factory.mktemp("dbrole")
    deployment = new_deployment(home, f"mediacms-dbrole-{os.getpid()}")
    env_file = home / config.ENV_FILE
    # a .env written before the split: one role, which the db image makes the superuser
    lines = env_file.read_text().splitlines()
    env_file.write_text("".join(f"{line}\n" for line in lines
                                if not line.startswith("POSTGRES_SUPERUSER")))  # fmt: skip
    version = f"{deployment.settings.version}-dbrole-{os.getpid()}"
    try:
        deployment.invoke("up")
        before = probe(deployment)
        assert before["attributes"] == "attributes True True True", before  # the old layout
        deployment.invoke("manage", "createsuperuser --no-input --username keeper "
                          "--email keeper@example.org", check=True)  # fmt: skip
        counts = deployment.dc("exec", "-T", "db", "psql", "-U", "mediacms", "-d", "mediacms",
                               "-Atc", "SELECT count(*) FROM users_user").stdout  # fmt: skip

        done = deployment.invoke("upgrade", "--to", version, "--build", "--source",
                                 str(config.ROOT / "tests/app"), check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "own role 'mediacms_app'" in done.stdout
        values = dotenv_values(env_file)
        assert values["POSTGRES_USER"] == "mediacms_app"
        assert values["POSTGRES_SUPERUSER"] == "mediacms"
        assert values["POSTGRES_PASSWORD"] not in (done.stdout + done.stderr)
        assert_plain_owner(probe(Stack(home, deployment.port)))
        after = deployment.dc("exec", "-T", "db", "psql", "-U", "mediacms_app", "-d", "mediacms",
                              "-Atc", "SELECT count(*) FROM users_user").stdout  # fmt: skip
        assert after == counts
        assert deployment.wait_http("/").status_code == 200
        # and the next upgrade has nothing to separate
        again = deployment.invoke("upgrade", "--to", version, "--build", "--source",
                                  str(config.ROOT / "tests/app"), check=False)  # fmt: skip
        assert again.returncode == 0 and "own role" not in again.stdout, again.stderr[-2000:]
    finally:
        if request.session.testsfailed:
            report_failure(deployment)
        deployment.dc("down", "--volumes", "--remove-orphans", check=False)
        names = model.ImageNames(deployment.settings.registry, version)
        refs = [names.ref(target) for target in ("web", "worker", "nginx")]
        subprocess.run(["docker", "image", "rm", *refs], capture_output=True, check=False)
