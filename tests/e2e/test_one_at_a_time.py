"""Operations on one stack do not interleave, and retention prunes only its own backups."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.e2e


def test_two_backups_started_together_both_succeed(stack, tmp_path):
    argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "backup-db", "--dest",
            str(tmp_path)]  # fmt: skip
    runs = [subprocess.Popen(argv, env=stack.env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    dumps = sorted(tmp_path.glob("mediacms-db-*.dump"))
    assert len(dumps) == 2 and all(d.read_bytes()[:5] == b"PGDMP" for d in dumps)
    assert any("[backup-db] waiting up to" in err and "`invoke backup-db`" in err
               for _, err in outputs)  # fmt: skip
    assert not list(tmp_path.glob(".*partial"))


def test_keep_prunes_only_this_projects_backups(stack, tmp_path):
    foreign = tmp_path / "mediacms-db-20200101T000000Z.dump"  # another stack's, older
    foreign.write_bytes(b"PGDMP-other")
    (tmp_path / f"{foreign.name}.manifest.json").write_text(json.dumps({"project": "other"}))
    for _ in range(2):
        stack.invoke("backup-db", "--dest", str(tmp_path), "--keep", "1")
    ours = [p for p in tmp_path.glob("mediacms-db-*.dump") if p != foreign]
    assert len(ours) == 1 and foreign.read_bytes() == b"PGDMP-other"
    manifest = json.loads((tmp_path / f"{ours[0].name}.manifest.json").read_text())
    assert manifest["project"] == stack.settings.project


def test_dry_runs_need_no_lock_and_write_nothing(stack, tmp_path):
    before = sorted(p.name for p in stack.home.iterdir())
    done = stack.invoke("backup-db", "--dest", str(tmp_path / "b"), "-n")
    assert "(dry run)" in done.stdout and not (tmp_path / "b").exists()
    assert sorted(p.name for p in stack.home.iterdir()) == before  # not even a lock file
