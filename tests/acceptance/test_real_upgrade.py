"""`invoke upgrade` between two real MediaCMS trees, with data, and its rollback.

Run by `nox -s acceptance` after both trees' images are built: the deployment starts on
the first tree's version (MEDIACMS_ENV_FILE) and is upgraded to the tree named by
ACCEPTANCE_UPGRADE_TO (built by the upgrade itself, from that tree: cached layers).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.acceptance.client import (
    assert_served,
    make_clip,
    media_digest,
    media_state,
    wait_ready,
    whoami,
)
from tests.traffic import outside_the_swap, report, under_answers
from tests.uploads import post_patiently

pytestmark = pytest.mark.e2e

TARGET = os.environ.get("ACCEPTANCE_UPGRADE_TO", "")


@pytest.fixture(scope="module")
def target() -> tuple[Path, str]:
    if not TARGET:
        pytest.skip("ACCEPTANCE_UPGRADE_TO (a second real tree) is not set")
    tree = Path(TARGET)
    return tree, tree.name.removeprefix("mediacms-")


def snapshot(stack, admin, token: str) -> tuple[str, str, dict]:
    counts = stack.dc(
        "exec", "-T", "db", "sh", "-c",
        'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -At -c '
        "\"select 'users', count(*) from users_user union all "
        "select 'media', count(*) from files_media union all "
        "select 'encodings', count(*) from files_encoding order by 1\"",
    ).stdout  # fmt: skip
    state = media_state(stack, token)
    return media_digest(stack), counts, {k: state[k] for k in ("title", "encoding_status")}


def test_upgrade_with_data_then_rollback(stack, admin, target):
    tree, version = target
    before_version = stack.settings.version
    response = post_patiently(
        stack.url("/api/v1/media"),
        auth=admin,
        data={"title": "made before the upgrade"},
        files={"media_file": ("before.mp4", make_clip(stack, seconds=6), "video/mp4")},
        timeout=300,
    )
    assert response.status_code == 201, response.text[:300]
    token = response.json()["friendly_token"]
    assert wait_ready(stack, token)["encoding_status"] == "success"
    before = snapshot(stack, admin, token)

    # the upgrade under a loop of GET requests, as visitors see it (issue 19's figures)
    up, loop, start, end = under_answers(stack.base, lambda: stack.invoke(
        "upgrade", "--to", version, "--build", "--source", str(tree), check=False))  # fmt: skip
    assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-3000:]
    path = "maintenance" if "maintenance: every request" in up.stdout else "zero-downtime"
    print(
        f"\n[measured] {before_version} -> {version} upgrade ({path} path) under a GET loop: "
        f"{report(loop, start, end)}"
    )
    assert not outside_the_swap(loop, start, end), report(loop, start, end)
    assert f"{before_version} -> {version}" in up.stdout, up.stdout[-3000:]
    assert snapshot(stack, admin, token) == before
    assert whoami(admin, stack)["username"] == "admin"
    assert assert_served(stack, media_state(stack, token)["original_media_url"])

    folder = re.search(r"invoke upgrade --rollback (\S+)", up.stdout)
    assert folder, up.stdout[-3000:]
    back = stack.invoke("upgrade", "--rollback", folder[1], check=False)
    assert back.returncode == 0, back.stdout[-4000:] + back.stderr[-3000:]
    web = stack.dc("images", "web", "--format", "json").stdout
    assert f'"{before_version}"' in web, web
    assert snapshot(stack, admin, token) == before
    assert whoami(admin, stack)["username"] == "admin"
