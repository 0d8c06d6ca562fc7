"""The refusals that come before the cluster changes (each ends "nothing was deployed"):
a registry every node reaches and that has the images, the media volume on shared
storage, exactly one node carrying the data label. :func:`preflight` makes them all."""

from __future__ import annotations

import re

from invoke.context import Context

from ...stack.config import Settings
from ...stack.errors import StackError
from ...stack.model import PRODUCTION_TARGETS, ImageNames
from .query import data_nodes
from .stack import MEDIA_KEYS, label

_LOOPBACK = re.compile(r"^(localhost|127\.[0-9.]+|\[::1\])(:[0-9]+)?/")


def check_storage(settings: Settings) -> None:
    """The media volume is storage every node sees: NFS, or a folder bound on each node."""
    missing = [key for key in MEDIA_KEYS if not settings.get(key)]
    if missing:
        raise StackError(
            f"{', '.join(missing)} not set in .env: Swarm needs media on storage every node "
            "mounts, e.g. MEDIA_VOLUME_TYPE=nfs MEDIA_VOLUME_OPTIONS=addr=10.0.0.5,rw,nfsvers=4.1 "
            "MEDIA_VOLUME_DEVICE=:/export/mediacms; nothing was deployed"
        )
    kind, options, device = (settings.get(key) for key in MEDIA_KEYS)
    if kind.startswith("nfs") and "addr=" not in options:
        raise StackError(f"MEDIA_VOLUME_OPTIONS={options!r} names no NFS server (addr=HOST); "
                         "nothing was deployed")  # fmt: skip
    if kind == "none" and ("bind" not in options.split(",") or not device.startswith("/")):
        raise StackError("MEDIA_VOLUME_TYPE=none binds a folder: it needs MEDIA_VOLUME_OPTIONS=bind "
                         "and an absolute MEDIA_VOLUME_DEVICE mounted from shared storage on every "
                         "node; nothing was deployed")  # fmt: skip


def check_registry(settings: Settings) -> None:
    """IMAGE_REGISTRY is one every node can reach: set, and not a node's own loopback."""
    registry = settings.registry
    if not registry:
        raise StackError(
            "IMAGE_REGISTRY is not set in .env: every node pulls the images, so they must be "
            "in a registry the nodes reach (e.g. registry.example.org/); push them with "
            "`invoke push`; nothing was deployed"
        )
    if _LOOPBACK.match(registry):
        raise StackError(f"IMAGE_REGISTRY={registry} is each node's own loopback, not one "
                         "registry for all nodes; nothing was deployed")  # fmt: skip


def check_images(settings: Settings, version: str | None = None) -> list[str]:
    """Every image resolves in the registry, asked through the manager's engine (its
    registry settings, its network): the references, or one error naming the missing."""
    import docker  # deferred: keeps `invoke --list` fast
    import docker.errors

    names = ImageNames(settings.registry, version or settings.version)
    refs = [names.ref(target) for target in PRODUCTION_TARGETS]
    client = docker.from_env()
    missing = []
    try:
        for ref in refs:
            try:
                client.api.inspect_distribution(ref)
            except docker.errors.APIError as error:
                missing.append(f"{ref} ({error.explanation or error})")
    finally:
        client.close()
    if missing:
        raise StackError("the swarm manager cannot resolve " + "; ".join(missing) +
                         ": push them with `invoke push` (IMAGE_REGISTRY must be reachable from "
                         "every node); nothing was deployed")  # fmt: skip
    return refs


def check_data_node(c: Context, settings: Settings) -> str:
    nodes = data_nodes(c, settings)
    if len(nodes) != 1:
        found = f"nodes {', '.join(nodes)} carry it" if nodes else "no node carries it"
        raise StackError(
            f"db and redis keep their volumes on the one node labelled {label(settings)}=true, "
            f"but {found}; label one with `invoke swarm.init --data-node NODE` (or `docker node "
            f"update --label-add {label(settings)}=true NODE`); nothing was deployed"
        )
    return nodes[0]


def preflight(c: Context, settings: Settings, version: str | None = None) -> str:
    """Every refusal that must come before the cluster changes; the data node's name."""
    check_registry(settings)
    check_storage(settings)
    node = check_data_node(c, settings)
    check_images(settings, version)
    return node
