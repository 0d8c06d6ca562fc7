"""Where a test run's time went: a pytest plugin every tier loads (`-p tests.timing`).

At the end of a run it prints each module's time (setup, call and teardown of its tests
added up: with `--dist loadfile` a module runs whole on one worker), each worker's total,
and how busy the machine's processors were meanwhile (from /proc/stat). A tier whose
workers wait while the processors idle can take more workers; one whose processors are
busy throughout only gets faster with less work. The lines a passing test prints that
start with ``[measured]`` (a time or size the notes report) are repeated at the end too:
pytest shows a passing test's output nowhere else.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

STAT = Path("/proc/stat")
TOP = 30  # modules shown, longest first
MEASURED = "[measured]"


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all processors since boot, or None where there is no /proc."""
    try:
        fields = [int(n) for n in STAT.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class Timing:
    def __init__(self) -> None:
        self.modules: dict[str, float] = defaultdict(float)
        self.workers: dict[str, float] = defaultdict(float)
        self.first = _cpu_times()
        self.measured: list[str] = []

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.modules[report.nodeid.split("::", 1)[0]] += report.duration
        node = getattr(report, "node", None)  # set on reports an xdist worker sent
        self.workers[node.gateway.id if node is not None else "main"] += report.duration
        if report.when == "call" and report.passed:  # each line once, of tests that passed
            printed = f"{report.capstdout}\n{report.capstderr}".splitlines()
            self.measured += [line.strip() for line in printed if line.strip().startswith(MEASURED)]

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.modules:
            return
        write = terminalreporter.write_line
        terminalreporter.section("time per module (setup + call + teardown)")
        for name, seconds in sorted(self.modules.items(), key=lambda kv: -kv[1])[:TOP]:
            write(f"{seconds:8.1f}s  {name}")
        write("  ".join(f"{w}: {s:.0f}s" for w, s in sorted(self.workers.items())))
        last = _cpu_times()
        if self.first and last and last[1] > self.first[1]:
            busy = (last[0] - self.first[0]) / (last[1] - self.first[1])
            write(f"processors busy {busy:.0%} of the run")
        if self.measured:
            terminalreporter.section("measured")
            for line in self.measured:
                write(line)


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and not config.option.collectonly:
        config.pluginmanager.register(Timing(), "mediacms-timing")
