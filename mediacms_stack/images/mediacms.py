"""Our images: built from a MediaCMS tree, pushed (their names: :class:`model.ImageNames`).

Targets and tags (``<r>`` is IMAGE_REGISTRY, ``<v>`` MEDIACMS_VERSION):

=============  ===============================  ==================
target         image                            Dockerfile
=============  ===============================  ==================
web            <r>mediacms/mediacms:<v>         Dockerfile
worker         <r>mediacms/mediacms-worker:<v>  Dockerfile
worker-full    <r>mediacms/mediacms-worker:<v>-full
dev            <r>mediacms/mediacms-dev:<v>     Dockerfile
nginx          <r>mediacms/mediacms-nginx:<v>   Dockerfile.nginx (needs web)
=============  ===============================  ==================

``<r>`` ends with "/" (``registry.example.org/``, ``127.0.0.1:5000/team/``) or is empty
(Docker Hub). :func:`push` tags images built without a registry prefix for the
registry, so building once and pushing later needs no rebuild.
"""

from __future__ import annotations

import fcntl
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from invoke.context import Context

from ..engines import engine
from ..engines.shell import dry, run, say
from ..stack.config import ROOT, Settings
from ..stack.errors import StackError
from ..stack.model import ImageNames
from . import locks

TARGETS = ("web", "worker", "worker-full", "dev", "nginx")
BENTO4_DIR = Path(".build") / "bento4"
# What never belongs in the staged tree (runtime data, local secrets, VCS, caches).
_IGNORED = shutil.ignore_patterns(
    ".git", "node_modules", "__pycache__", "logs", ".secret_key",
    "local_settings.py", "db.sqlite3", ".env",
)  # fmt: skip
# media_files/ is staged for the default media a tree ships (userlogos/user.jpg, ...);
# the folders MediaCMS fills at run time are not.
MEDIA_RUNTIME = {"original", "encoded", "hls", "chunks", "uploads", "tinymce_media"}


def source_ignore(folder: str, names: list[str]) -> set[str]:
    """copytree hook: what not to stage from a MediaCMS tree."""
    ignored = set(_IGNORED(folder, names))
    if Path(folder).name == "media_files":
        ignored |= MEDIA_RUNTIME.intersection(names)
    return ignored


def order(targets: Iterable[str]) -> list[str]:
    """Targets in build order; nginx copies static files from web, so web comes first."""
    wanted = set(targets)
    unknown = wanted - set(TARGETS)
    if unknown:
        raise StackError(f"unknown target(s) {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    if "nginx" in wanted:
        wanted.add("web")
    return [t for t in TARGETS if t in wanted]


def parse_source(source: str) -> tuple[str, str | None]:
    """``PATH`` -> (PATH, None); ``URL@REF`` -> (URL, REF) for git URLs."""
    match = re.fullmatch(r"(?P<url>(?:https?|ssh|git|file)://.+?|git@.+?)@(?P<ref>[^@/]+)", source)
    if match:
        return match["url"], match["ref"]
    return source, None


def stage_source(c: Context, root: Path, source: str, stage: locks.Stage) -> Path:
    """Copy (or clone) the MediaCMS tree into the build context, in ``stage``."""
    dry_run = dry(c)
    target = root / stage.tree
    location, ref = parse_source(source)
    if ref is None:
        tree = (root / location).resolve()
        if not (tree / "manage.py").is_file() or not (tree / "requirements.txt").is_file():
            raise StackError(f"{tree} is not a MediaCMS tree (no manage.py / requirements.txt)")
        say(f"staging MediaCMS tree {tree} -> {target}")
        if not dry_run:
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(tree, target, ignore=source_ignore, symlinks=True)
    else:
        if not dry_run:
            shutil.rmtree(target, ignore_errors=True)
        run(c, ["git", "clone", "--depth", "1", "--branch", ref, location, str(target)])
    if not dry_run:
        (root / BENTO4_DIR).mkdir(parents=True, exist_ok=True)
    return target


def source_revision(c: Context, root: Path, source: str, stage: locks.Stage) -> str:
    """The git commit of the source tree when it has one (OCI revision label)."""
    location, ref = parse_source(source)
    return _git_commit(c, root / stage.tree if ref else root / location, "--short=12")


def stack_revision(c: Context, root: Path = ROOT) -> str:
    """The commit of this repository (label io.mediacms.stack-revision of every image)."""
    return _git_commit(c, root)


def _git_commit(c: Context, where: Path, *flags: str) -> str:
    probe = run(c, ["git", "-C", str(where), "rev-parse", *flags, "HEAD"], query=True,
                hide=True, warn=True, in_stream=False)  # fmt: skip
    return probe.stdout.strip() if probe is not None and probe.ok else "unknown"


def media_auth(tree: Path) -> bool:
    """Whether the tree has MediaCMS's media-auth endpoint (8.3+), which nginx gates
    private media through; older trees serve /media/ as their own nginx does."""
    urls = tree / "files" / "urls.py"
    return urls.is_file() and "api/v1/media-auth" in urls.read_text(errors="replace")


def build_argv(
    target: str,
    settings: Settings,
    *,
    ca_bundle: str = "",
    revision: str = "unknown",
    stack_rev: str = "unknown",
    builder: engine.Builder,
    gate_media: bool = False,
    cold: bool = False,
) -> list[str]:
    """The BuildKit command for one target; pure, so it is unit-tested as is."""
    names = ImageNames.from_settings(settings)
    args = {
        "BASE_IMAGE": settings.get("BASE_IMAGE", "debian:trixie-slim"),
        "MEDIACMS_VERSION": names.version,
        "VCS_REF": revision,
        "STACK_REVISION": stack_rev,
    }
    if target == "nginx":
        args["MEDIACMS_IMAGE"] = names.ref("web")
        args["MEDIA_AUTH"] = "on" if gate_media else "off"
        dockerfile, stage = "Dockerfile.nginx", None
    else:
        dockerfile, stage = "Dockerfile", target
        staged = locks.Stage.of(settings)
        args |= {
            "MEDIACMS_SRC": staged.tree.as_posix(),
            "MEDIACMS_LOCK": staged.lock.as_posix(),
            "FFMPEG_SOURCE": settings.get("FFMPEG_SOURCE", "static"),
            "BENTO4_URL": settings.get("BENTO4_URL"),
            "BENTO4_SHA256": settings.get("BENTO4_SHA256"),
            "BAKE_CA_BUNDLE": settings.get("BAKE_CA_BUNDLE", "0"),
        }
    argv = ["--file", dockerfile, "--tag", names.ref(target)]
    if cold:  # no layer cache (build() empties the pip cache mounts first)
        argv.append("--no-cache")
    if stage:
        argv += ["--target", stage]
    for key, value in args.items():
        argv += ["--build-arg", f"{key}={value}"]
    if ca_bundle:
        argv += ["--secret", f"id=ca_bundle,src={ca_bundle}"]
    return builder.command(*argv, ".")


def build(
    c: Context,
    settings: Settings,
    targets: Iterable[str],
    *,
    source: str,
    ca_bundle: str = "",
    cold: bool = False,
) -> list[str]:
    """Stage the tree and its lock and build ``targets``; returns the image references
    built. ``cold`` builds without any cache, as on a fresh machine."""
    root = ROOT  # the build context is always this repository
    check_registry(settings.registry)
    if ca_bundle and not Path(ca_bundle).is_file():
        raise StackError(f"CA bundle {ca_bundle} does not exist (BUILD_CA_BUNDLE / --ca-bundle)")
    wanted = order(targets)
    built = []
    # Each version is staged in a folder of its own: builds of one version take turns.
    stage = locks.Stage.of(settings)
    with _staging_lock(c, root, stage):
        tree = stage_source(c, root, source, stage)
        revision, stack_rev = source_revision(c, root, source, stage), stack_revision(c, root)
        gate_media = media_auth(tree)
        if set(wanted) - {"nginx"}:
            location, ref = parse_source(source)  # a dry run stages nothing: key on the source
            origin = tree if ref or not dry(c) else (root / location).resolve()
            locks.stage(c, settings, origin, ca_bundle=ca_bundle)
        if "nginx" in wanted:
            say("nginx: private media (/media/encoded|hls|original/) "
                + ("gated through the tree's /api/v1/media-auth" if gate_media else
                   "served without a gate: the tree has no /api/v1/media-auth"))  # fmt: skip
        builder = engine.builder(c)
        if cold:  # as a fresh machine builds: the pip cache mounts emptied, no layer cache
            run(c, builder.prune_cache_mounts(), env=dict(builder.env))
        for target in wanted:
            argv = build_argv(target, settings, ca_bundle=ca_bundle, revision=revision,
                              stack_rev=stack_rev, builder=builder, gate_media=gate_media, cold=cold)  # fmt: skip
            with c.cd(str(root)):
                run(c, argv, env=dict(builder.env))
            built.append(ImageNames.from_settings(settings).ref(target))
    return built


def relock(c: Context, settings: Settings, *, source: str, ca_bundle: str = "") -> Path:
    """Stage the tree and resolve its requirements anew (`invoke lock`)."""
    stage = locks.Stage.of(settings)
    with _staging_lock(c, ROOT, stage):
        tree = stage_source(c, ROOT, source, stage)
        return locks.resolve(c, settings, tree, ca_bundle=ca_bundle)


@contextmanager
def _staging_lock(c: Context, root: Path, stage: locks.Stage) -> Iterator[None]:
    if dry(c):
        yield
        return
    (root / stage.folder).mkdir(parents=True, exist_ok=True)
    with (root / stage.folder / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another build of this version is running; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class Pushed:
    """One image pushed: its reference and the manifest digest the registry answered."""

    ref: str
    digest: str | None  # None in a dry run, or when the client printed no digest

    def __str__(self) -> str:
        return f"{self.ref}@{self.digest}" if self.digest else self.ref


_PUSH_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")


def check_registry(registry: str) -> None:
    """IMAGE_REGISTRY is a name prefix: ``host[:port]/[path/]`` or empty (Docker Hub)."""
    if not registry:
        return
    if "://" in registry:
        raise StackError(
            f"IMAGE_REGISTRY={registry!r}: write the registry without a scheme, "
            f"e.g. {registry.split('://', 1)[1].rstrip('/')}/"
        )
    if not registry.endswith("/"):
        raise StackError(
            f"IMAGE_REGISTRY={registry!r} must end with '/' (it is prefixed to "
            f"mediacms/...): set IMAGE_REGISTRY={registry}/"
        )


def select(targets: Iterable[str]) -> list[str]:
    """Targets in TARGETS order, exactly those asked for (pushing adds none)."""
    wanted = set(targets)
    unknown = wanted - set(TARGETS)
    if unknown:
        raise StackError(f"unknown target(s) {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    return [t for t in TARGETS if t in wanted]


def image_id(c: Context, ref: str) -> str | None:
    """The local image's id, or None when ``ref`` is not here (a read-only probe)."""
    result = run(c, ["docker", "image", "inspect", "--format", "{{.Id}}", ref],
                 query=True, hide=True, warn=True)  # fmt: skip
    if result is None or not result.ok:
        return None
    return result.stdout.strip() or None


def push(c: Context, settings: Settings, targets: Iterable[str]) -> list[Pushed]:
    """Push ``targets`` under their IMAGE_REGISTRY names; returns what was pushed.

    An image built while IMAGE_REGISTRY was empty (``mediacms/mediacms:<v>``) is tagged
    with the registry's name first, so the usual order works: build, test, set
    IMAGE_REGISTRY, push. Every image is looked up before the first push, so a missing
    one stops the push before anything is half-published. The local look-ups
    (``docker image inspect``) also run in a dry run; tags and pushes do not.
    """
    names = ImageNames.from_settings(settings)
    check_registry(names.registry)
    wanted = select(targets)
    local = ImageNames("", names.version)
    if not names.registry:
        say("IMAGE_REGISTRY is empty: pushing to Docker Hub's mediacms/ namespace")
    plan: list[tuple[str, str | None]] = []
    missing = []
    for target in wanted:
        ref, unprefixed = names.ref(target), local.ref(target)
        found = image_id(c, ref)
        other = image_id(c, unprefixed) if names.registry else None
        if found is None and other is None:
            missing.append(target)
        elif found is None:
            plan.append((ref, unprefixed))
        else:
            if other is not None and other != found:
                say(f"note: {unprefixed} ({other[:19]}) differs from {ref} "
                    f"({found[:19]}); pushing {ref}, the image built for this registry")  # fmt: skip
            plan.append((ref, None))
    if missing:
        refs = ", ".join(names.ref(t) for t in missing)
        also = f" (nor without the {names.registry} prefix)" if names.registry else ""
        flags = "" if set(missing) == set(TARGETS) else "".join(f" --target {t}" for t in missing)
        raise StackError(
            f"not built here: {refs}{also}; run `invoke build{flags}` first (nothing was pushed)"
        )
    pushed = []
    for ref, source in plan:
        if source is not None:
            say(f"{source} was built without IMAGE_REGISTRY: tagging it {ref}")
            run(c, ["docker", "tag", source, ref])
        result = run(c, ["docker", "push", ref])
        found = _PUSH_DIGEST.search(result.stdout) if result is not None else None
        pushed.append(Pushed(ref, found[1] if found else None))
    if pushed and not dry(c):
        say("pushed:\n  " + "\n  ".join(map(str, pushed)))
    return pushed
