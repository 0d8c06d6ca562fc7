"""The stack on Docker Swarm: docker-stack.yaml deployed, scaled, updated, rolled back.

``docker stack deploy`` reads no ``.env``: :func:`deploy` hands it the ``.env`` values
as its environment, without the secrets, which it writes as files (mode 600, in a
private folder removed afterwards) for Swarm to turn into secrets named after a hash
of their value. Everything that can be checked before the cluster changes is checked
first, and a refusal changes nothing: the images must resolve in IMAGE_REGISTRY from
the manager, the media volume must be shared storage, exactly one node must carry the
data label, beat never scales above one. custom/ travels as configs named after a hash
of their content; after a deploy, the secrets and configs no service uses are removed.

:class:`SwarmStack` lets the backup, restore and manage code, written for compose, act
on the deployed stack through the engine DOCKER_HOST reaches.

The modules, each one thing: :mod:`.stack` (names, .env keys), :mod:`.query` (read-only
engine questions), :mod:`.checks` (refusals before anything changes), :mod:`.inputs`
(what `docker stack deploy` is given), :mod:`.poll` (waiting), :mod:`.operations` (the
swarm.* tasks), :mod:`.adapter` (:class:`SwarmStack`). This module re-exports what
tasks.py and the tests use; patch a name in the module that looks it up.
"""

from ...stack.secrets import SECRETS
from .adapter import SwarmStack
from .checks import check_data_node, check_images, check_registry, check_storage
from .inputs import (
    CONFIG_LIMIT,
    CUSTOM_SETTINGS,
    CUSTOM_STATIC,
    SETTINGS_READERS,
    custom_files,
    custom_overlay,
    deploy_env,
    stack_deploy,
    write_secrets,
)
from .operations import deploy, init, prune_unused, rollback, scale, status, update
from .poll import behind, converged
from .stack import MEDIA_KEYS, ORCHESTRATOR, STACK_FILE, deployed_on_swarm

__all__ = [
    "CONFIG_LIMIT",
    "CUSTOM_SETTINGS",
    "CUSTOM_STATIC",
    "MEDIA_KEYS",
    "ORCHESTRATOR",
    "SECRETS",
    "SETTINGS_READERS",
    "STACK_FILE",
    "SwarmStack",
    "behind",
    "check_data_node",
    "check_images",
    "check_registry",
    "check_storage",
    "converged",
    "custom_files",
    "custom_overlay",
    "deploy",
    "deploy_env",
    "deployed_on_swarm",
    "init",
    "prune_unused",
    "rollback",
    "scale",
    "stack_deploy",
    "status",
    "update",
    "write_secrets",
]
