"""The Swarm stack's names and the .env settings every part of it reads: the stack file,
its services (``<stack>_<service>``), the data node's label, the media volume, and where
the deployment runs (ORCHESTRATOR)."""

from __future__ import annotations

from ...stack.config import Settings

STACK_FILE = "docker-stack.yaml"
DEFAULT_LABEL = "mediacms.data"
MEDIA_KEYS = ("MEDIA_VOLUME_TYPE", "MEDIA_VOLUME_OPTIONS", "MEDIA_VOLUME_DEVICE")
#: The .env key saying where the deployment runs; `swarm.deploy` records ``swarm`` there.
ORCHESTRATOR = "ORCHESTRATOR"


def label(settings: Settings) -> str:
    return settings.get("SWARM_DATA_LABEL", DEFAULT_LABEL)


def service(settings: Settings, name: str) -> str:
    return f"{settings.project}_{name}"


def deployed_on_swarm(settings: Settings) -> bool:
    """Whether the operations tasks drive the Swarm stack (.env ORCHESTRATOR=swarm,
    written by `swarm.deploy`) rather than the compose one: decided here only."""
    return settings.get(ORCHESTRATOR, "compose") == "swarm"
