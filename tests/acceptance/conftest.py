"""The real MediaCMS, built from an unmodified upstream tree with our files, deployed and
checked end to end through nginx on 127.0.0.1.

`nox -s acceptance` builds the images of each tree and runs this folder once per tree with
MEDIACMS_ENV_FILE naming that tree's settings (.build/acceptance-<tree>.env). The stack
is deployed the way the smoke tier deploys it (tests/e2e/conftest.py), and removed at
the end.
"""

from __future__ import annotations

import os
import sys
import time

import pytest
import requests

from tests.e2e.conftest import ADMIN_PASSWORD, new_deployment, report_failure


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    home = tmp_path_factory.mktemp("real")
    deployment = new_deployment(home, f"mediacms-acceptance-{os.getpid()}")
    started = time.monotonic()
    up = deployment.invoke("up", check=False)
    deployment.startup_seconds = time.monotonic() - started
    try:
        if up.returncode != 0:
            raise AssertionError(f"invoke up failed:\n{up.stdout[-3000:]}\n{up.stderr[-5000:]}")
        yield deployment
    finally:
        if request.session.testsfailed or up.returncode != 0:
            report_failure(deployment)
        if os.environ.get("SMOKE_KEEP_STACK") == "1":
            print(f"\nstack kept: MEDIACMS_HOME={home} ({deployment.base})", file=sys.stderr)
        else:
            deployment.dc("down", "--volumes", "--remove-orphans", check=False)


@pytest.fixture(scope="session")
def admin(stack) -> requests.auth.HTTPBasicAuth:
    return requests.auth.HTTPBasicAuth("admin", ADMIN_PASSWORD)
