"""What the running stack is made of, as the engine reports it (for manifests and the
upgrade summary)."""

from __future__ import annotations

from invoke.context import Context

from . import engine
from .compose import Compose


def stack_images(c: Context, compose: Compose) -> dict[str, tuple[str, str]]:
    """Service -> (image reference, image id) that the stack's containers run.

    One Engine API call (the container list carries the image id); one-off containers
    (``compose run``) are left out. Empty when the engine cannot be asked.
    """
    import docker.errors  # deferred: keeps `invoke --list` fast
    import requests.exceptions

    project = compose.project or next((r.get("Project") for r in compose.ps(c)), None)
    if not project:
        return {}
    # on Swarm: the stack's task containers on the engine DOCKER_HOST reaches
    project_label, service_label = compose.LABELS
    filters = {"label": [f"{project_label}={project}"]}
    try:
        with engine.client() as handle:
            rows = handle.api.containers(all=True, filters=filters)
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        return {}
    images = {}
    for row in sorted(rows, key=lambda r: r.get("Created", 0)):
        labels = row.get("Labels") or {}
        if labels.get("com.docker.compose.oneoff") == "True":
            continue
        service = compose.service_of(labels.get(service_label, row.get("Image", "?")))
        images[service] = (row.get("Image", ""), row.get("ImageID", ""))
    return dict(sorted(images.items()))


def image_ids(c: Context, compose: Compose) -> dict[str, str]:
    """Service -> image id of the running stack (what exactly produced this backup)."""
    return {service: image_id for service, (_, image_id) in stack_images(c, compose).items()}
