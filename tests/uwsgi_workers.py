"""uWSGI's workers all replaced at once, as max-requests once replaced them under even
load (the smoke and acceptance tiers both check that a replacement does not load the app
again).

Each replacement must be a fork of the master, which loaded the app once: then no
request waits for Django to be imported again. The master must hold no connection a fork
would share.
"""

from __future__ import annotations

import subprocess
import time

#: Run in web: print each TCP connection of the master (PID 1) that is not a listening
#: socket (state 0A), then send SIGHUP, a worker's graceful end (what it does at
#: max-requests), to every uWSGI worker (the master's children) and print each one.
SCRIPT = """
import os, signal
def inodes(pid):
    links = (os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
    return {link[8:-1] for link in links if link.startswith("socket:[")}
held = inodes(1)
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for row in open(table).read().splitlines()[1:]:
        field = row.split()
        if field[9] in held and field[3] != "0A":
            print("connection", field[1], field[2])
for pid in filter(str.isdigit, os.listdir("/proc")):
    ppid = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]
    if ppid == "1" and b"uwsgi" in open(f"/proc/{pid}/cmdline", "rb").read():
        os.kill(int(pid), signal.SIGHUP)
        print("worker", pid)
"""
LOADED = "WSGI app 0 (mountpoint='') ready"
RESPAWNED = "Respawned uWSGI worker"


def web_log(stack) -> str:
    """The single web container's log since it last started (uWSGI logs to stderr)."""
    (web,) = stack.dc("ps", "--format", "{{.Name}}", "web").stdout.split()
    started = subprocess.run(["docker", "inspect", "--format", "{{.State.StartedAt}}", web],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    done = subprocess.run(["docker", "logs", "--since", started, web],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout + done.stderr


def replace_every_worker(stack, timeout: float = 60) -> int:
    """Replace every worker at once and wait until the master has started new ones;
    asserts that the app was loaded once, by the master, before and after, and that the
    master held no connection. Returns how many workers were replaced."""
    before = web_log(stack)
    assert before.count(LOADED) == 1, "the master loads the app, once"
    out = stack.dc("exec", "-T", "web", "python", "-c", SCRIPT).stdout.splitlines()
    assert not [line for line in out if line.startswith("connection ")], out
    workers = [line for line in out if line.startswith("worker ")]
    assert workers, out
    deadline = time.monotonic() + timeout
    while web_log(stack).count(RESPAWNED) < before.count(RESPAWNED) + len(workers):
        assert time.monotonic() < deadline, f"{workers} not replaced within {timeout} s"
        time.sleep(0.5)
    assert web_log(stack).count(LOADED) == 1, "a replaced worker imported the app again"
    return len(workers)
