"""Refuse to test images older than the commit under test.

Every image records the commit of this repository it was built from (the label
io.mediacms.stack-revision, see images.build_argv); the end-to-end tiers check it before
deploying, so an image left by an earlier run can never stand in for this one.
"""

from __future__ import annotations

import subprocess

import pytest
from invoke import Context

from mediacms_stack.images.mediacms import stack_revision
from mediacms_stack.stack.model import ImageNames

LABEL = "io.mediacms.stack-revision"


def require_built_from_this_commit(version: str, targets=("web", "worker", "nginx")) -> None:
    head = stack_revision(Context())
    names = ImageNames("", version)
    for target in targets:
        ref = names.ref(target)
        probe = subprocess.run(["docker", "image", "inspect", "--format",
                                f'{{{{ index .Config.Labels "{LABEL}" }}}}', ref],
                               capture_output=True, text=True, check=False)  # fmt: skip
        if probe.returncode != 0:
            pytest.fail(
                f"{ref} is not built: its session builds it (`nox -s smoke|swarm|acceptance`)"
            )
        built = probe.stdout.strip()
        if built != head:
            pytest.fail(f"{ref} was built from commit {built or '(none recorded)'}, not {head} "
                        "(the commit under test): rebuild it with `invoke build`")  # fmt: skip
