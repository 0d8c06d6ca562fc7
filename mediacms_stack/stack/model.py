"""What the stack is made of, said once: its services, our images it runs, where the media
live in the containers, its volumes and the deployment's backups folder.

docker-compose.yaml (one host) and docker-stack.yaml (Swarm) declare the same stack under
these names; tests/unit/test_stack_file_matches_compose.py holds the two files together.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .errors import StackError

#: Long-running services (migrations is a one-shot job), in the compose file's order.
SERVICES = (
    "nginx",
    "web",
    "celery_beat",
    "celery_short",
    "celery_long",
    "db",
    "redis",
    "redis_cache",
)
#: Services that run our images: stopped for a restore, rolled back together on Swarm.
APP_SERVICES = ("nginx", "web", "celery_beat", "celery_short", "celery_long")
#: The app services behind nginx: what a rollback replaces while nginx shows its 503 page.
BEHIND_NGINX = tuple(s for s in APP_SERVICES if s != "nginx")
#: Services that run any number of replicas (0 stops them).
SCALABLE = ("web", "celery_short", "celery_long")
#: The scheduler runs once at most: each beat would send every scheduled task again.
BEAT = "celery_beat"

#: Our images that the production stack runs (targets of :class:`ImageNames`);
#: worker-full and dev are built on request only.
PRODUCTION_TARGETS = ("web", "worker", "nginx")

#: In the nginx container, ``MAINTENANCE_COMMAND on`` makes nginx answer every request
#: but its health check with the 503 page, ``off`` ends it (scripts/nginx-maintenance.sh:
#: a file on its tmpfs and a reload): `upgrade`'s maintenance path. A new or restarted
#: nginx starts without it.
MAINTENANCE_COMMAND = "nginx-maintenance"

#: Where the media volume is mounted in the MediaCMS containers.
MEDIA_DIR = "/home/mediacms.io/mediacms/media_files"
MEDIA_VOLUME = "media_files"
#: The database's volume as the compose file names it; .env's POSTGRES_VOLUME says which
#: engine volume it is (``<project>_<POSTGRES_VOLUME>``): `invoke upgrade-postgres`
#: moves the cluster into a new one and points POSTGRES_VOLUME at it.
DB_VOLUME = "postgres_data"
#: The volumes that hold data (scratch holds temporary files only).
DATA_VOLUMES = (MEDIA_VOLUME, "logs", DB_VOLUME)

#: Where each volume is mounted, in which service: (service, path).
VOLUME_PATHS = {
    MEDIA_VOLUME: ("web", MEDIA_DIR),
    "logs": ("web", "/home/mediacms.io/mediacms/logs"),
    "scratch": ("web", "/home/mediacms.io/scratch"),
    DB_VOLUME: ("db", "/var/lib/postgresql/data"),
}

#: Celery's queues (the tree contract) and the Redis database of the broker: the
#: REDIS_LOCATION the compose and stack files give MediaCMS ends in /1.
QUEUES = ("short_tasks", "long_tasks")
BROKER_DB = 1

#: The deployment's own backups folder, beside its .env (the backup tasks' default --dest).
BACKUPS_DIR = "backups"


def volume_name(project: str, volume: str = MEDIA_VOLUME) -> str:
    """A named volume as the engine lists it: compose and Swarm prefix the project."""
    return f"{project}_{volume}"


def db_volume(settings: Settings) -> str:
    """The live database volume's name without the project prefix (POSTGRES_VOLUME)."""
    return settings.get("POSTGRES_VOLUME", DB_VOLUME)


def parse_scale(pairs: list[str], *, task: str = "scale") -> dict[str, int]:
    """``["web=3", "celery_long=2"]`` -> counts, for compose and Swarm alike: the
    :data:`SCALABLE` services any whole number, :data:`BEAT` 0 or 1, nothing else."""
    counts = {}
    for pair in pairs:
        name, _, count = pair.partition("=")
        if name not in (*SCALABLE, BEAT):
            raise StackError(f"{name!r} cannot be scaled; scalable: {', '.join(SCALABLE)} "
                             f"(and {BEAT}, 0 or 1); nothing was scaled")  # fmt: skip
        if not count.isdigit():
            raise StackError(f"scale {pair!r}: expected SERVICE=COUNT with a whole number; "
                             "nothing was scaled")  # fmt: skip
        if name == BEAT and int(count) > 1:
            raise StackError(f"{BEAT} cannot be scaled above 1: it runs exactly once "
                             "(each beat would send every scheduled task again); "
                             "nothing was scaled")  # fmt: skip
        counts[name] = int(count)
    if not counts:
        raise StackError(f"nothing to scale; e.g. invoke {task} web=3,celery_long=2")
    return counts


@dataclass(frozen=True)
class ImageNames:
    """Our images' references: ``<IMAGE_REGISTRY>mediacms/...:<MEDIACMS_VERSION>``, a
    target each (the table in :mod:`images.mediacms`)."""

    registry: str
    version: str

    def ref(self, target: str) -> str:
        r, v = self.registry, self.version
        return {
            "web": f"{r}mediacms/mediacms:{v}",
            "worker": f"{r}mediacms/mediacms-worker:{v}",
            "worker-full": f"{r}mediacms/mediacms-worker:{v}-full",
            "dev": f"{r}mediacms/mediacms-dev:{v}",
            "nginx": f"{r}mediacms/mediacms-nginx:{v}",
        }[target]

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageNames:
        return cls(settings.registry, settings.version)
