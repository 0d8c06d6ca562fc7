"""`invoke push` against a real registry: Debian's docker-registry on 127.0.0.1.

The registry binary runs directly (not the packaged service) with its own configuration
and storage in a temporary folder, on a free port, and is stopped at the end. The images
are the ones the smoke session built without IMAGE_REGISTRY; the push is run with a copy
of that .env whose IMAGE_REGISTRY names the test registry, so it also proves that push
tags such images for the registry. What arrived is then read back through the registry's
HTTP API (catalog, tags, manifests, blobs) and compared with the local images, and one
image is pulled back after its registry tag is removed locally.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from dotenv import dotenv_values

from mediacms_stack.images import mediacms
from mediacms_stack.stack import config, model

pytestmark = pytest.mark.e2e

REPO = config.ROOT
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
])  # fmt: skip
REGISTRY_CONFIG = """\
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def image_attrs(ref: str) -> dict | None:
    import json

    done = docker("image", "inspect", ref, check=False)
    return json.loads(done.stdout)[0] if done.returncode == 0 else None


def registry_binary() -> str:
    """Debian's docker-registry, installed with apt-get when it is missing."""
    found = shutil.which("docker-registry")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("docker-registry is not installed and installing it needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker-registry"]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(install, env=env, check=True)
    return shutil.which("docker-registry") or "/usr/bin/docker-registry"


class Registry:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.prefix = f"127.0.0.1:{self.port}/"
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "registry.log"
        self.config = folder / "config.yml"
        (folder / "storage").mkdir()
        self.config.write_text(REGISTRY_CONFIG.format(
            root=folder / "storage", port=self.port, secret=secrets.token_hex(16)))  # fmt: skip
        self.process: subprocess.Popen | None = None

    def start(self, binary: str, timeout: float = 30) -> None:
        # REGISTRY_* variables would override the file: the registry gets none of them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen([binary, "serve", str(self.config)], env=env,
                                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"docker-registry exited:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/v2/", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"docker-registry did not answer:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)

    def get(self, path: str, **headers: str) -> requests.Response:
        response = requests.get(f"{self.url}{path}", headers=headers, timeout=30)
        assert response.status_code == 200, (path, response.status_code, response.text[:500])
        return response


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    binary = registry_binary()
    server = Registry(tmp_path_factory.mktemp("registry"))
    server.start(binary)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def built() -> model.ImageNames:
    """The locally built images (the smoke session builds them) and their .env values."""
    values = dotenv_values(REPO / os.environ.get("MEDIACMS_ENV_FILE", config.ENV_FILE))
    names = model.ImageNames(
        values.get("IMAGE_REGISTRY") or "", values.get("MEDIACMS_VERSION") or "latest"
    )
    assert names.registry == "", "this test pushes images built with an empty IMAGE_REGISTRY"
    missing = [names.ref(t) for t in mediacms.TARGETS if image_attrs(names.ref(t)) is None]
    assert not missing, f"build the images first (invoke build): missing {missing}"
    return names


@pytest.fixture(scope="module")
def pushed(registry: Registry, built: model.ImageNames, tmp_path_factory):
    """Run `invoke push` with IMAGE_REGISTRY pointing at the test registry (twice)."""
    source = REPO / os.environ.get("MEDIACMS_ENV_FILE", config.ENV_FILE)
    text = re.sub(r"(?m)^IMAGE_REGISTRY=.*\n?", "", source.read_text())
    env_file = tmp_path_factory.mktemp("push-env") / "push.env"
    env_file.write_text(text + f"\nIMAGE_REGISTRY={registry.prefix}\n")
    env_file.chmod(0o600)
    env = {**os.environ, "MEDIACMS_ENV_FILE": str(env_file)}
    env.pop("MEDIACMS_HOME", None)
    target = model.ImageNames(registry.prefix, built.version)
    ids = {t: image_attrs(built.ref(t))["Id"] for t in mediacms.TARGETS}
    argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "push"]
    runs = []
    try:
        for _ in range(2):
            started = time.monotonic()
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            assert done.returncode == 0, f"invoke push failed:\n{done.stdout}\n{done.stderr}"
            runs.append((done, time.monotonic() - started))
        print(f"\ninvoke push: {runs[0][1]:.1f} s, again (all layers present): {runs[1][1]:.1f} s")
        yield {"runs": runs, "ids": ids, "target": target, "source": built}
    finally:
        for t in mediacms.TARGETS:  # untag ours; the images keep their build names
            attrs = image_attrs(target.ref(t))
            if attrs and len(attrs["RepoTags"]) > 1:
                docker("rmi", target.ref(t), check=False)


def reported_digests(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"(?m)^\s+(\S+)@(sha256:[0-9a-f]{64})$", stdout))


def test_push_tags_local_builds_for_the_registry_and_reports_digests(pushed):
    (first, _), (second, _) = pushed["runs"]
    target, source = pushed["target"], pushed["source"]
    for t in mediacms.TARGETS:
        assert f"$ docker tag {source.ref(t)} {target.ref(t)}" in first.stderr
        assert image_attrs(target.ref(t))["Id"] == pushed["ids"][t]
    assert "$ docker tag" not in second.stderr, "tagged again although the tags existed"
    digests = reported_digests(first.stdout)
    assert set(digests) == {target.ref(t) for t in mediacms.TARGETS}
    assert reported_digests(second.stdout) == digests, "a second push changed the manifests"


def test_registry_lists_every_immutable_tag(registry, pushed):
    target = pushed["target"]
    catalog = registry.get("/v2/_catalog").json()["repositories"]
    expected: dict[str, set[str]] = {}
    for t in mediacms.TARGETS:
        repo, _, tag = target.ref(t).removeprefix(registry.prefix).rpartition(":")
        expected.setdefault(repo, set()).add(tag)
    assert set(expected) <= set(catalog), catalog
    for repo, tags in expected.items():
        listed = registry.get(f"/v2/{repo}/tags/list").json()
        assert listed["name"] == repo
        assert tags <= set(listed["tags"]), (repo, listed)


def test_manifests_match_what_was_pushed_and_the_local_images(registry, pushed):
    import hashlib
    import json

    target = pushed["target"]
    digests = reported_digests(pushed["runs"][0][0].stdout)
    for t in mediacms.TARGETS:
        ref = target.ref(t)
        repo, _, tag = ref.removeprefix(registry.prefix).rpartition(":")
        response = registry.get(f"/v2/{repo}/manifests/{tag}", Accept=MANIFEST_TYPES)
        digest = response.headers["Docker-Content-Digest"]
        assert digest == "sha256:" + hashlib.sha256(response.content).hexdigest()
        assert digest == digests[ref], t
        local = image_attrs(ref)
        assert f"{registry.prefix}{repo}@{digest}" in local["RepoDigests"], t
        # The manifest's config is the local image itself: its digest is the image id,
        # and its layers' uncompressed digests are the local image's layers.
        manifest = response.json()
        assert manifest["config"]["digest"] == local["Id"] == pushed["ids"][t], t
        image_config = json.loads(registry.get(f"/v2/{repo}/blobs/{local['Id']}").content)
        assert image_config["rootfs"]["diff_ids"] == local["RootFS"]["Layers"], t
        assert len(manifest["layers"]) == len(local["RootFS"]["Layers"]), t
        for layer in manifest["layers"]:
            head = requests.head(f"{registry.url}/v2/{repo}/blobs/{layer['digest']}", timeout=30)
            assert head.status_code == 200, (t, layer["digest"])
            assert int(head.headers["Content-Length"]) == layer["size"], (t, layer["digest"])


def test_an_image_pulls_back_from_the_registry(registry, pushed):
    ref = pushed["target"].ref("nginx")
    original = pushed["ids"]["nginx"]
    assert len(image_attrs(ref)["RepoTags"]) > 1  # untagging leaves the image itself
    docker("rmi", ref)
    assert image_attrs(ref) is None
    docker("pull", ref)
    pulled = image_attrs(ref)
    assert pulled["Id"] == original
    digest = reported_digests(pushed["runs"][0][0].stdout)[ref]
    assert any(d.endswith("@" + digest) for d in pulled["RepoDigests"])
