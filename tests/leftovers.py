"""Take down the test stacks an interrupted run left behind.

End-to-end tests name their compose projects ``mediacms-<what>-<pid of pytest>``. A run
that was killed never took its stacks down; their networks stay in the engine's data
root and hold address pools the next run needs. At the start of a run, every project
named that way whose process is gone is taken down with its volumes. Projects of a
process that still runs (another run beside this one) and every other project are
left alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

PROJECT = re.compile(r"^mediacms-[a-z0-9-]+-(\d+)$")
LABEL = "com.docker.compose.project"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphaned(projects: set[str]) -> list[str]:
    """The names among `projects` a test run made whose process has ended."""
    return sorted(name for name in projects
                  if (match := PROJECT.match(name)) and not _alive(int(match.group(1))))  # fmt: skip


def _projects() -> set[str]:
    names: set[str] = set()
    for kind in ("container", "network", "volume"):
        listing = ["docker", kind, "ls", "--format", f'{{{{.Label "{LABEL}"}}}}']
        if kind == "container":
            listing.insert(3, "--all")
        out = subprocess.run(listing, capture_output=True, text=True, check=False).stdout
        names |= {line.strip() for line in out.splitlines() if line.strip()}
    return names


def sweep() -> None:
    if shutil.which("docker") is None:
        return
    for name in orphaned(_projects()):
        print(f"[leftovers] taking down {name}: a killed run left it", flush=True)
        subprocess.run(["docker", "compose", "--project-name", name, "down", "--volumes",
                        "--remove-orphans", "--timeout", "0"],
                       capture_output=True, check=False)  # fmt: skip
