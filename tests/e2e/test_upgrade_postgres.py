"""`invoke upgrade-postgres` on a stack created on PostgreSQL 15 (the stand-in built from
Debian bookworm's archive, what 7.x deployments ran), with users, an uploaded video and
an extension: the dry run and bad input change nothing; the upgrade moves the cluster
to 17 in a new volume and every check holds; a second run says so and changes nothing;
`--rollback` returns to 15 with the data, and the 17 volume stays until removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests
from conftest import REPO, Stack, new_deployment, nginx_problems, running
from dotenv import dotenv_values
from test_checklist import make_video

from mediacms_stack.images import bootstrap
from mediacms_stack.stack import config, model
from tests.uploads import post_patiently

pytestmark = pytest.mark.e2e

OLD_MAJOR = "15"
OLD_IMAGE = bootstrap.old_postgres_image(OLD_MAJOR)
NEW_IMAGE = bootstrap.LOCAL_IMAGES["POSTGRES_IMAGE"]
ALICE_PASSWORD = "alice-Pg-pw-15"
USERS = ("from users.models import User; "
         "print(';'.join(f'{u.username}={u.password}' for u in User.objects.order_by('id')))")  # fmt: skip


ROWS = "SELECT (SELECT count(*) FROM users_user) || '/' || (SELECT count(*) FROM files_media)"
TABLES = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"


def sql(stack: Stack, query: str, database: str = "mediacms") -> str:
    """One value, as the superuser over the db container's socket."""
    done = stack.dc("exec", "-T", "db", "psql", "-X", "-At", "-U", "postgres", "-d", database,
                    "-v", "ON_ERROR_STOP=1", "-c", query)  # fmt: skip
    return done.stdout.strip()


def shell(stack: Stack, code: str) -> str:
    done = stack.dc("exec", "-T", "web", "python", "manage.py", "shell", "-c", code)
    return done.stdout.strip().splitlines()[-1]


def network_login(
    stack: Stack, role: str, password: str, database: str
) -> subprocess.CompletedProcess:
    """A login over db's own network address (so the password is asked), the password on
    stdin."""
    script = ('IFS= read -r PGPASSWORD && export PGPASSWORD && exec psql -X -At '
              '-h "$(hostname -i)" -U "$1" -d "$2" -c "SELECT current_user"')  # fmt: skip
    return stack.dc("exec", "-T", "db", "sh", "-c", script, "login", role, database,
                    input=password + "\n", check=False)  # fmt: skip


def volumes(stack: Stack) -> set[str]:
    listing = subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                              f"label=com.docker.compose.project={stack.settings.project}"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    return set(listing.stdout.split())


def env_bytes(stack: Stack) -> bytes:
    return stack.settings.env_file.read_bytes()


@pytest.fixture(scope="module")
def pg15(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO),
                    "images.bootstrap-images", "--old-postgres", OLD_MAJOR],
                   check=True, capture_output=True)  # fmt: skip
    home = tmp_path_factory.mktemp("pg15")
    deployment = new_deployment(home, f"mediacms-pgup-{os.getpid()}", POSTGRES_IMAGE=OLD_IMAGE)
    try:
        with running(deployment, request):
            yield deployment
    finally:
        left = volumes(deployment)
        if left:  # the volume the stack no longer names
            subprocess.run(["docker", "volume", "rm", *left], capture_output=True, check=False)


@pytest.fixture(scope="module")
def before(pg15: Stack) -> dict:
    """Users, an uploaded video and an extension, made on PostgreSQL 15."""
    assert sql(pg15, "SHOW server_version_num").startswith(OLD_MAJOR)
    shell(pg15, "from users.models import User; "
                f"User.objects.create_user('alice', 'alice@example.org', '{ALICE_PASSWORD}'); "
                "print(1)")  # fmt: skip
    video = make_video(pg15, seconds=2)
    # the first upload of a stack started while the machine is busiest (this module
    # bootstraps PostgreSQL 15 first): a 503 page is tried again, as an uploader would
    made = post_patiently(pg15.url("/api/v1/media"), auth=("admin", pg15.admin_password),
                          data={"title": "made on 15"},
                          files={"media_file": ("on15.mp4", video, "video/mp4")}, timeout=60)  # fmt: skip
    assert made.status_code == 201, (made.text, nginx_problems(pg15, 20))
    sql(pg15, "CREATE EXTENSION citext")
    # what the workers write about the upload (encodings, thumbnails) settles first
    pg15.dc("stop", "celery_beat", "celery_short", "celery_long")
    return {"users": shell(pg15, USERS), "media": made.json(), "video": video,
            "rows": sql(pg15, ROWS), "tables": sql(pg15, TABLES)}  # fmt: skip


def test_dry_run_says_what_it_would_do_and_changes_nothing(pg15: Stack, before):
    env, vols = env_bytes(pg15), volumes(pg15)
    done = pg15.invoke("upgrade-postgres", "--image", NEW_IMAGE, "--dry-run")
    project = pg15.settings.project
    assert f"PostgreSQL {OLD_MAJOR} -> 17" in done.stdout, done.stdout
    assert (
        f"{project}_postgres_data ({OLD_MAJOR}) -> {project}_postgres_data_17 (new)" in done.stdout
    )
    assert f"{OLD_IMAGE} reads the old cluster" in done.stdout
    assert "(dry run) nothing was changed" in done.stdout
    assert env_bytes(pg15) == env and volumes(pg15) == vols
    assert sql(pg15, "SHOW server_version_num").startswith(OLD_MAJOR)


@pytest.mark.parametrize(("args", "says"), [
    (("--image", "mediacms-local/postgres:99"), "cannot run PostgreSQL from image mediacms-local/postgres:99"),
    (("--image", NEW_IMAGE, "--old-image", NEW_IMAGE), f"does not run PostgreSQL {OLD_MAJOR}"),
    (("--image", "--volume=/:/host"), "'--volume=/:/host' is not an image reference"),
    (("--rollback",), "nothing to roll back"),
])  # fmt: skip
def test_bad_input_is_refused_with_one_clear_error(pg15: Stack, before, args, says):
    env, vols = env_bytes(pg15), volumes(pg15)
    done = pg15.invoke("upgrade-postgres", *args, check=False)
    assert done.returncode != 0, done.stdout
    assert says in done.stderr, done.stderr
    assert env_bytes(pg15) == env and volumes(pg15) == vols
    assert requests.get(pg15.url("/"), timeout=10).status_code == 200


def test_a_failure_before_the_switch_leaves_the_stack_on_15_as_it_was(pg15: Stack, before):
    """.env names a superuser the cluster does not have: refused once the old cluster is
    read, and the stack runs again on the old volume with .env as it was."""
    vols = volumes(pg15)
    config.update(pg15.settings, {"POSTGRES_SUPERUSER": "someone_else"})
    try:
        env = env_bytes(pg15)
        done = pg15.invoke("upgrade-postgres", "--image", NEW_IMAGE, check=False)
        assert done.returncode != 0, done.stdout
        assert "the upgrade stopped before the switch" in done.stderr, done.stderr
        assert "superuser is not 'someone_else', the one .env names" in done.stderr
        assert (
            "_postgres_data_17 is gone; .env is unchanged; the stack runs on it again"
            in done.stderr
        )
        assert env_bytes(pg15) == env and volumes(pg15) == vols
    finally:
        config.update(pg15.settings, {"POSTGRES_SUPERUSER": "postgres"})
    assert sql(pg15, "SHOW server_version_num").startswith(OLD_MAJOR)
    assert requests.get(pg15.url("/"), timeout=10).status_code == 200


def test_upgrade_moves_the_cluster_to_17_in_a_new_volume_and_checks_it(pg15: Stack, before):
    project = pg15.settings.project
    started = time.monotonic()
    done = pg15.invoke("upgrade-postgres", "--image", NEW_IMAGE)
    out = done.stdout
    said = next(line for line in out.splitlines() if "done: PostgreSQL" in line)
    print(f"\nupgrade-postgres took {time.monotonic() - started:.1f} s; {said}", file=sys.stderr)
    assert "the same counts per table; extensions citext, plpgsql" in out, out
    assert "roles: mediacms, postgres" in out
    assert "logins with .env's passwords: postgres, mediacms" in out
    assert "collation versions: every database's matches" in out
    assert "migrate --check passed; the site answers 200 on /" in out

    env = dotenv_values(pg15.settings.env_file)
    assert (env["POSTGRES_VOLUME"], env["POSTGRES_IMAGE"]) == ("postgres_data_17", NEW_IMAGE)
    assert (env["POSTGRES_PREVIOUS_VOLUME"], env["POSTGRES_PREVIOUS_IMAGE"]) == (
        "postgres_data", OLD_IMAGE)  # fmt: skip
    assert {f"{project}_postgres_data", f"{project}_postgres_data_17"} <= volumes(pg15)
    mounted = subprocess.run(["docker", "inspect", "--format", "{{range .Mounts}}{{.Name}} {{end}}",
                              pg15.dc("ps", "-q", "db").stdout.strip()],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert f"{project}_postgres_data_17" in mounted, mounted

    # the server, its statistics, its collation versions, its extensions
    assert sql(pg15, "SHOW server_version_num").startswith("17")
    assert sql(pg15, "SELECT count(*) FROM pg_stat_user_tables WHERE last_analyze IS NULL "
                     "AND last_autoanalyze IS NULL") == "0"  # fmt: skip
    assert sql(pg15, "SELECT count(*) FROM pg_stats WHERE tablename = 'users_user'") != "0"
    assert sql(pg15, "SELECT datcollversion IS NOT DISTINCT FROM "
                     "pg_database_collation_actual_version(oid) FROM pg_database "
                     "WHERE datname = 'mediacms'") == "t"  # fmt: skip
    assert sql(pg15, "SELECT extname FROM pg_extension WHERE extname = 'citext'") == "citext"
    assert sql(pg15, "SELECT pg_get_userbyid(datdba) FROM pg_database "
                     "WHERE datname = 'mediacms'") == "mediacms"  # fmt: skip

    # the data: the same tables and rows, password hashes, the upload
    assert (sql(pg15, TABLES), sql(pg15, ROWS)) == (before["tables"], before["rows"])
    assert shell(pg15, USERS) == before["users"]
    media = before["media"]
    state = requests.get(pg15.url(f"/api/v1/media/{media['id']}"), timeout=10).json()
    assert state["title"] == "made on 15"
    assert requests.get(pg15.url(state["original_url"]), timeout=30).content == before["video"]

    # both roles log in with their .env passwords over the network, and a wrong one does not
    for role, key, database in (("postgres", "POSTGRES_SUPERUSER_PASSWORD", "postgres"),
                                ("mediacms", "POSTGRES_PASSWORD", "mediacms")):  # fmt: skip
        assert network_login(pg15, role, env[key], database).stdout.strip() == role
        assert network_login(pg15, role, env[key] + "x", database).returncode != 0


def test_a_second_run_says_so_and_changes_nothing(pg15: Stack, before):
    env, vols = env_bytes(pg15), volumes(pg15)
    container = pg15.dc("ps", "-q", "db").stdout.strip()
    done = pg15.invoke("upgrade-postgres")
    assert "already on PostgreSQL 17" in done.stdout and "nothing was changed" in done.stdout
    assert env_bytes(pg15) == env and volumes(pg15) == vols
    assert pg15.dc("ps", "-q", "db").stdout.strip() == container


def test_rollback_returns_to_15_with_the_data_and_keeps_the_17_volume(pg15: Stack, before):
    project = pg15.settings.project
    done = pg15.invoke("upgrade-postgres", "--rollback")
    assert "migrate --check passed" in done.stdout, done.stdout
    assert f"{project}_postgres_data_17 is kept" in done.stdout
    env = dotenv_values(pg15.settings.env_file)
    assert (env["POSTGRES_VOLUME"], env["POSTGRES_IMAGE"]) == ("postgres_data", OLD_IMAGE)
    assert env["POSTGRES_PREVIOUS_VOLUME"] == "" and env["POSTGRES_PREVIOUS_IMAGE"] == ""
    assert sql(pg15, "SHOW server_version_num").startswith(OLD_MAJOR)
    assert shell(pg15, USERS) == before["users"]
    assert sql(pg15, ROWS) == before["rows"]
    assert requests.get(pg15.url(f"/api/v1/media/{before['media']['id']}"), timeout=10).ok
    assert f"{project}_postgres_data_17" in volumes(pg15)

    # upgrading again would overwrite nothing: the kept volume must go first
    again = pg15.invoke("upgrade-postgres", "--image", NEW_IMAGE, check=False)
    assert again.returncode != 0 and "exists already" in again.stderr, again.stderr
    assert dotenv_values(pg15.settings.env_file) == env
    assert model.db_volume(pg15.settings) == "postgres_data"
