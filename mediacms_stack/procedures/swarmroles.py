"""A Swarm stack made before the database role split (MediaCMS's role is the database's
superuser) gets its own plain role at its next ``swarm.deploy`` or ``swarm.update``, as
``invoke upgrade`` gives one on compose (:mod:`..data.dbrole`).

The split runs in the db task, which must run on the engine DOCKER_HOST reaches (else one
error naming its node, nothing changed), after the deploy's own refusals. .env then names
both roles, and the deploy that follows hands web, the workers and the migrations job the
new role's password: they roll, one task at a time. db keeps its superuser's password (the
same secret) and runs on. Until that deploy, the old role is still a superuser and works.
"""

from __future__ import annotations

from invoke.context import Context

from ..data import dbrole
from ..engines.shell import dry
from ..engines.swarm import SwarmStack
from ..engines.swarm.checks import preflight
from ..engines.swarm.query import services
from ..stack import config
from ..stack.config import Settings


def separate_roles(c: Context, settings: Settings, version: str | None = None) -> Settings:
    """The settings to deploy ``version`` (Default: .env's) with: as they are, or, for a
    deployed stack of one role, with the plain role split off. A stack not deployed now
    is left as it is: its database may not exist yet (its next deploy splits it)."""
    if dbrole.is_separate(settings) or not services(c, settings):
        return settings
    if not dry(c):
        preflight(c, settings, version)  # a deploy it refuses still changes nothing
    changes = dbrole.separate(c, SwarmStack.connect(c, settings), settings)
    return config.update(settings, changes)
