"""A Swarm stack made before the database role split (MediaCMS's role is the database's
superuser) gets its own plain role at its next ``swarm.deploy`` or ``swarm.update``, as
``invoke upgrade`` gives one on compose (:mod:`..data.dbrole`).

The split runs in the db task, after the deploy's own refusals, so it needs the engine
DOCKER_HOST reaches to be a manager that runs that task (as ``backup`` and ``restore`` on
Swarm do). Where it is not, or db is not running, the deploy goes on without it and says
why and where to run it. .env then names both roles, and the deploy that follows hands
web, the workers and the migrations job the new role's password: they roll, one task at a
time. db restarts once (stop-first): its first-start inputs (the app role's name and
password secret) changed with them. Until that deploy, the old role is still a superuser
and works.
"""

from __future__ import annotations

from invoke.context import Context

from ..data import dbrole
from ..engines.shell import dry, say
from ..engines.swarm import SwarmStack
from ..engines.swarm.checks import preflight
from ..engines.swarm.query import services
from ..stack import config
from ..stack.config import Settings
from ..stack.errors import StackError


def separate_roles(c: Context, settings: Settings, version: str | None = None) -> Settings:
    """The settings to deploy ``version`` (Default: .env's) with: as they are, or, for a
    deployed stack of one role, with the plain role split off. A stack not deployed now
    is left as it is: its database may not exist yet (its next deploy splits it)."""
    if dbrole.is_separate(settings) or not services(c, settings, may_fail=True):
        return settings
    if not dry(c):
        preflight(c, settings, version)  # a deploy it refuses still changes nothing
    stack = SwarmStack.connect(c, settings)
    try:
        stack.container("db")
    except StackError as error:
        say(f"MediaCMS's database role is still the superuser, left so for this deploy: "
            f"{error.args[0].replace('; nothing was changed', '')}. The split runs in the db "
            "task: deploy from a manager that runs it (`docker node promote` a worker data "
            "node)")  # fmt: skip
        return settings
    return config.update(settings, dbrole.separate(c, stack, settings))
