"""The real MediaCMS, built from an unmodified upstream tree with our files, deployed and
checked end to end through nginx on 127.0.0.1.

`nox -s acceptance` builds the images of each tree and runs this folder once per tree with
MEDIACMS_ENV_FILE naming that tree's settings (.build/acceptance-<tree>.env). The stack
is deployed and removed by the smoke tier's own fixtures (tests/e2e/conftest.py).
"""

from tests.e2e.conftest import admin, stack  # noqa: F401 - the smoke tier's fixtures
