"""The monolithic 7.x-style "before" of `invoke migrate-from-7x`, built from the test app.

Used by tests/e2e/test_migrate_from_7x.py and tests/bench/migrate_7x.py. The folder's
docker-compose.yaml, local_settings.py and start.sh are installed into a copy of
tests/app the way a 7.x operator's folder looked (see docker-compose.yaml's header).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import requests
from dotenv import dotenv_values

from mediacms_stack.images import bootstrap, mediacms
from mediacms_stack.stack import config, model

HERE = Path(__file__).parent
OLD_PG_MAJOR = "15"
OLD_ADMIN_PASSWORD = "legacy-Admin-pw-7"
# Characters that .env files and compose interpolation treat specially.
OLD_SECRET_KEY = "legacy$key#with%odd(chars)&more*" + "x" * 20


class Legacy:
    """The old deployment: its tree folder, driven through its own compose file."""

    def __init__(self, tree: Path, port: int) -> None:
        self.tree = tree
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def dc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "compose", "--project-directory", str(self.tree), *args],
                              capture_output=True, text=True, check=check)  # fmt: skip

    def shell(self, code: str) -> str:
        done = self.dc("exec", "-T", "web", "python", "manage.py", "shell", "-c", code)
        return done.stdout.strip().splitlines()[-1]

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(self.base + "/api/v1/health", timeout=5).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or still starting
                pass
            if time.monotonic() > deadline:
                print(self.dc("logs", "--tail", "60", check=False).stdout, file=sys.stderr)
                raise AssertionError("the legacy deployment did not answer")
            time.sleep(1)


def create_legacy(
    root: Path, port: int, project: str, frontend_host: str = "http://legacy.example.org"
) -> Legacy:
    """Lay out <root>/mediacms (the tree) beside <root>/postgres_data, not started.

    ``frontend_host`` is the site's public address in the old compose environment; the
    migration carries it, so a test passes the new stack's address (the site keeps its
    name when it moves).
    """
    subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(config.ROOT),
                    "images.bootstrap-images", "--old-postgres", OLD_PG_MAJOR],
                   check=True, capture_output=True)  # fmt: skip
    tree = root / "mediacms"
    shutil.copytree(config.ROOT / "tests/app", tree, ignore=mediacms.source_ignore)
    shutil.copy(HERE / "local_settings.py", tree / "cms/local_settings.py")
    (tree / "deploy/docker").mkdir(parents=True)
    shutil.copy(HERE / "start.sh", tree / "deploy/docker/start.sh")
    shutil.copy(HERE / "docker-compose.yaml", tree / "docker-compose.yaml")
    (tree / ".secret_key").write_text(OLD_SECRET_KEY + "\n")
    built = dotenv_values(config.ROOT / os.environ.get("MEDIACMS_ENV_FILE", config.ENV_FILE))
    names = model.ImageNames(built.get("IMAGE_REGISTRY") or "", built["MEDIACMS_VERSION"] or "")
    (tree / ".env").write_text(
        f"COMPOSE_PROJECT_NAME={project}\n"
        f"MONOLITH_IMAGE={names.ref('web')}\n"
        f"OLD_POSTGRES_IMAGE={bootstrap.old_postgres_image(OLD_PG_MAJOR)}\n"
        f"REDIS_IMAGE={built['REDIS_IMAGE']}\n"
        f"LEGACY_PORT={port}\n"
        f"ADMIN_PASSWORD={OLD_ADMIN_PASSWORD}\n"
        f"FRONTEND_HOST={frontend_host}\n"
    )
    return Legacy(tree, port)
