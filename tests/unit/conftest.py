import sys

import pytest

from mediacms_stack.engines import engine, shell
from mediacms_stack.stack import config

# `import tasks` works under `python -m pytest` (cwd on sys.path) but not under nox's
# `pytest`: put the repository root, where tasks.py lives, on the path for both.
if str(config.ROOT) not in sys.path:
    sys.path.insert(0, str(config.ROOT))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A deployment folder with a freshly initialised .env."""
    monkeypatch.setenv("MEDIACMS_HOME", str(tmp_path))
    monkeypatch.delenv("MEDIACMS_ENV_FILE", raising=False)
    config.init(tmp_path, {"MEDIACMS_VERSION": "9.9.9"}, example=config.ROOT / config.EXAMPLE_FILE)
    return tmp_path


@pytest.fixture
def builder(monkeypatch):
    fixed = engine.Builder(("/usr/bin/docker", "build"), (("DOCKER_BUILDKIT", "1"),))
    monkeypatch.setattr(engine, "builder", lambda c: fixed)
    return fixed


@pytest.fixture
def dry():
    """Make a context a dry run's (as tasks.py's ``task`` does for ``--dry-run``)."""

    def make(c):
        shell.set_dry(c, True)
        return c

    return make


@pytest.fixture
def untagged():
    """No task set and not verbose, before and after the test: what is said is tagged
    [mediacms], details are left out."""
    shell.set_task(None)
    shell.set_verbose(False)
    yield
    shell.set_task(None)
    shell.set_verbose(False)
