"""A Docker Swarm of several nodes on this one machine, for the multi-node test.

Each node is a Docker engine in a container (bootstrap/swarm-node: Debian's docker.io)
on a bridge network of its own; /var/lib/docker is a volume, so the inner engines run
overlay2. Beside them: a registry (bootstrap/registry: Debian's docker-registry) that
hands the images to every node, and a volume mounted into every node at SHARED, which
the stack's media volume binds (MEDIA_VOLUME_TYPE=none): the shared storage. Each
node's socket is bind-mounted to a folder on this machine, so the invoke tasks and
the test drive the cluster as an operator's client does (DOCKER_HOST), without TCP.

Every object is named PREFIX...; :meth:`Cluster.destroy` removes each of them.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "mcms-swarm-"
NODE_IMAGE = "mcms-swarm/node:test"
REGISTRY_IMAGE = "mcms-swarm/registry:test"
REGISTRY = f"{PREFIX}registry:5000"
SHARED = "/srv/mediacms-shared"
# What a Docker-in-Docker node needs here (no --privileged: CAP_SYS_RESOURCE is not in
# this machine's bounding set; see environment.md).
NODE_FLAGS = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined", "--cgroupns", "host",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
]  # fmt: skip


def docker(*args: str, check: bool = True, host: str | None = None, **kwargs):
    argv = ["docker", *(["--host", host] if host else []), *args]
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kwargs)


@dataclass
class Cluster:
    size: int = 3
    network: str = f"{PREFIX}net"
    sockets: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=PREFIX)))
    nodes: list[str] = field(default_factory=list)
    addresses: dict[str, str] = field(default_factory=dict, repr=False)  # node: its IP

    @property
    def manager(self) -> str:
        return self.nodes[0]

    @property
    def host(self) -> str:
        """DOCKER_HOST of the manager's engine."""
        return self.host_of(self.manager)

    def host_of(self, node: str) -> str:
        """DOCKER_HOST of a node's engine (its socket, bind-mounted to this machine)."""
        return f"unix://{self.sockets}/{node}/docker.sock"

    def on(self, node: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """A docker command run by the node's own client against its own engine."""
        return docker("exec", node, "docker", *args, check=check)

    def ip(self, node: str) -> str:
        """The node's address on the cluster's network, asked of the engine once per node
        (a node keeps it while it lives): the request loops ask it for every request, and a
        `docker inspect` each time was most of the Swarm tier's docker calls (19,000)."""
        if node not in self.addresses:
            template = f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}'
            self.addresses[node] = docker("inspect", "--format", template, node).stdout.strip()
        return self.addresses[node]

    def create(self) -> None:
        self.destroy()  # what an interrupted run left behind
        self.sockets.mkdir(exist_ok=True)
        docker("network", "create", self.network)
        docker("run", "-d", "--name", f"{PREFIX}registry", "--network", self.network,
               "-v", f"{PREFIX}registry:/var/lib/docker-registry", REGISTRY_IMAGE)  # fmt: skip
        for number in range(1, self.size + 1):
            name = f"{PREFIX}node{number}"
            (self.sockets / name).mkdir(exist_ok=True)
            mounts = ["-v", f"{name}-docker:/var/lib/docker", "-v", f"{PREFIX}shared:{SHARED}",
                      "-v", f"{self.sockets / name}:/run/outside"]  # fmt: skip
            hosts = ["--host", "unix:///var/run/docker.sock",
                     "--host", "unix:///run/outside/docker.sock"]  # fmt: skip
            docker("run", "-d", "--name", name, "--hostname", f"node{number}",
                   "--network", self.network, *NODE_FLAGS, *mounts, NODE_IMAGE,
                   *hosts, "--storage-driver", "overlay2",
                   "--insecure-registry", REGISTRY)  # fmt: skip
            self.nodes.append(name)
        for node in self.nodes:
            self._wait_engine(node)
        # the media folder is written by the MediaCMS user (33) from every node
        docker(
            "exec",
            self.manager,
            "sh",
            "-c",
            f"mkdir -p {SHARED}/media && chown 33:33 {SHARED}/media",
        )

    def _wait_engine(self, node: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.on(node, "info", "--format", "{{.ServerVersion}}", check=False).returncode:
            if time.monotonic() > deadline:
                logs = docker("logs", "--tail", "30", node, check=False)
                raise AssertionError(f"{node}: engine did not start\n{logs.stderr}")
            time.sleep(1)

    def form_swarm(self) -> None:
        self.on(self.manager, "swarm", "init", "--advertise-addr", self.ip(self.manager))
        token = self.on(self.manager, "swarm", "join-token", "-q", "worker").stdout.strip()
        for node in self.nodes[1:]:
            self.on(node, "swarm", "join", "--token", token, f"{self.ip(self.manager)}:2377")

    def load_images(self, images: list[str]) -> None:
        """Our images into the manager's engine (as `invoke build` would have left them)."""
        save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
        subprocess.run(["docker", "--host", self.host, "load", "-q"], stdin=save.stdout,
                       check=True, capture_output=True)  # fmt: skip
        assert save.wait() == 0

    def kill(self, node: str) -> None:
        """The node's engine and every container on it gone at once, like a dead machine."""
        docker("rm", "-f", node)
        self.nodes.remove(node)
        self.addresses.pop(node, None)

    def destroy(self) -> None:
        self.addresses.clear()
        names = [f"{PREFIX}node{n}" for n in range(1, self.size + 1)] + [f"{PREFIX}registry"]
        docker("rm", "-f", "-v", *names, check=False)
        volumes = [f"{PREFIX}node{n}-docker" for n in range(1, self.size + 1)]
        docker("volume", "rm", "-f", *volumes, f"{PREFIX}registry", f"{PREFIX}shared", check=False)
        docker("network", "rm", self.network, check=False)
