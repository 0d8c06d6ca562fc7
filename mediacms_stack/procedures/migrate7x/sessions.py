"""The logged-in sessions: 7.x keeps them only in its Redis; they are copied into the
new Redis with their remaining lifetime, by Lua run on each side."""

from __future__ import annotations

from invoke.context import Context

from ...engines.compose import Compose
from ...engines.shell import poll, run, say
from ...stack.config import Settings
from ...stack.errors import StackError
from ...stack.model import BROKER_DB
from .legacy import OldDeployment

#: Django's cached sessions as django-redis names them: ":1:django.contrib.sessions.cache<id>"
SESSION_KEYS = "*django.contrib.sessions.cache*"
#: Lua run in the old Redis: every session key of every database as "key value ttl-ms"
#: lines, key and value hex-encoded (values are pickles: binary)
EXPORT_SESSIONS = (
    'local out, hex = {}, function(s) return (s:gsub(".", function(ch) '
    'return string.format("%02x", ch:byte()) end)) end '
    'for db = 0, 255 do if redis.pcall("SELECT", db).err then break end '
    'for _, k in ipairs(redis.call("KEYS", ARGV[1])) do local ttl = redis.call("PTTL", k) '
    'if ttl ~= -2 and redis.call("TYPE", k).ok == "string" then '
    'out[#out + 1] = hex(k) .. " " .. hex(redis.call("GET", k)) .. " " .. ttl end end end '
    'return table.concat(out, "\\n")'
)
#: Lua run in the new Redis: those lines written back, each with its remaining time
IMPORT_SESSIONS = (
    'local n, unhex = 0, function(h) return (h:gsub("..", function(cc) '
    "return string.char(tonumber(cc, 16)) end)) end "
    'for k, v, ttl in ARGV[1]:gmatch("(%x+) (%x*) (%-?%d+)") do ttl = tonumber(ttl) '
    'if ttl > 0 then redis.call("SET", unhex(k), unhex(v), "PX", ttl) '
    'else redis.call("SET", unhex(k), unhex(v)) end n = n + 1 end return n'
)


def carry_sessions(c: Context, old: OldDeployment, compose: Compose, settings: Settings) -> int:
    """Copy the logged-in sessions from the old Redis into the new one (running).

    7.x keeps sessions only in its cache; without them everyone is logged out. Keys and
    values are copied as they are, each with its remaining lifetime; the old Redis is
    started for the copy when it was stopped (its data survives a stop) and stopped again.
    Returns the number of sessions; a failure is reported, not fatal (users log in again).
    """
    service = old.redis_service()
    if service is None:
        say("sessions: the old deployment has no Redis service, none carried")
        return 0
    was_running = service in old.running(c)
    if not was_running and not old.compose.run(c, "start", service, warn=True, hide="err").ok:
        say(f"sessions: the old '{service}' container is gone, none carried "
            "(users log in again)")  # fmt: skip
        return 0
    db, password = str(BROKER_DB), settings.get("REDIS_PASSWORD")
    try:
        if not _redis_answers(c, old.compose, service):
            say(f"WARNING sessions not carried: the old '{service}' did not answer")
            return 0
        export = old.compose.argv("exec", "-T", service, "redis-cli", "--raw", "EVAL",
                                  EXPORT_SESSIONS, "0", SESSION_KEYS)  # fmt: skip
        # the password travels in the environment, never on a command line
        load = compose.argv("exec", "-T", *(["-e", "REDISCLI_AUTH"] if password else []),
                            "redis", "redis-cli", "--no-auth-warning", "-n", db, "-x", "EVAL",
                            IMPORT_SESSIONS, "0")  # fmt: skip
        result = run(c, load, pipe_from=export, warn=True, hide="both",
                     env={"REDISCLI_AUTH": password} if password else None)  # fmt: skip
    finally:
        if not was_running:
            old.compose.run(c, "stop", service)
    count = (result.stdout if result is not None else "").strip()
    if result is None or not result.ok or not count.isdigit():
        reason = (result.stdout + result.stderr).strip()[-300:] if result is not None else ""
        say(f"WARNING sessions not carried ({reason}); users log in again")
        return 0
    say(f"{count} sessions carried over from the old '{service}' into the new redis")
    return int(count)


def _redis_answers(c: Context, compose: Compose, service: str, timeout: float = 60) -> bool:
    """Whether Redis answers PONG in time (not LOADING: a started Redis reads its dump first)."""
    ping = compose.argv("exec", "-T", service, "redis-cli", "ping")
    try:
        poll(c, ping, lambda result: result.stdout.strip() == "PONG", timeout=timeout,
             interval=0.5, what="redis answered PONG", hide=True, warn=True)  # fmt: skip
    except StackError:
        return False
    return True
