import pytest

from mediacms_stack.images import locks, mediacms
from mediacms_stack.stack import config, model
from mediacms_stack.stack.errors import StackError


def settings(**values):
    return config.Settings(
        config.ROOT, {"MEDIACMS_VERSION": "8.3.2", **values}, config.ROOT / config.ENV_FILE
    )


def test_immutable_tags_with_registry_prefix():
    names = model.ImageNames("registry.example.org/", "8.3.2")
    assert names.ref("web") == "registry.example.org/mediacms/mediacms:8.3.2"
    assert names.ref("worker-full") == "registry.example.org/mediacms/mediacms-worker:8.3.2-full"
    assert names.ref("nginx") == "registry.example.org/mediacms/mediacms-nginx:8.3.2"


def test_compose_files_use_the_same_names():
    prod = (config.ROOT / "docker-compose.yaml").read_text()
    dev = (config.ROOT / "docker-compose-dev.yaml").read_text()
    names = model.ImageNames("${IMAGE_REGISTRY:-}", "${MEDIACMS_VERSION:?")
    for target in ("web", "worker", "nginx"):
        assert names.ref(target) in prod
    assert names.ref("dev") in dev


def test_nginx_is_built_after_web():
    assert mediacms.order(["nginx"]) == ["web", "nginx"]
    with pytest.raises(StackError, match="unknown target"):
        mediacms.order(["webb"])


def test_build_argv_for_web_passes_ca_bundle_as_secret(builder):
    argv = mediacms.build_argv(
        "web", settings(BASE_IMAGE="b:1"), ca_bundle="/ca.pem", revision="abc", builder=builder
    )
    assert argv[:2] == ["/usr/bin/docker", "build"]
    assert argv[argv.index("--target") + 1] == "web"
    assert "BASE_IMAGE=b:1" in argv and "VCS_REF=abc" in argv
    assert argv[argv.index("--secret") + 1] == "id=ca_bundle,src=/ca.pem"
    assert argv[-1] == "."


def test_each_version_builds_from_its_own_stage(builder):
    """Two versions' builds never share staged inputs, so they can run side by side."""
    staged = {}
    for version in ("8.3.2", "7.3"):
        argv = mediacms.build_argv("web", settings(MEDIACMS_VERSION=version), builder=builder)
        args = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--build-arg")
        staged[version] = (args["MEDIACMS_SRC"], args["MEDIACMS_LOCK"])
        stage = locks.Stage.of(settings(MEDIACMS_VERSION=version))
        assert staged[version] == (stage.tree.as_posix(), stage.lock.as_posix())
        assert stage.folder.parent == locks.STAGE_ROOT
    assert not set(staged["8.3.2"]) & set(staged["7.3"])
    odd = locks.Stage.of(settings(MEDIACMS_VERSION="../x"))
    assert odd.folder.parent == locks.STAGE_ROOT and ".." not in odd.folder.parts


def test_build_argv_for_nginx_copies_static_from_web(builder):
    argv = mediacms.build_argv("nginx", settings(IMAGE_REGISTRY="r/"), builder=builder)
    assert argv[argv.index("--file") + 1] == "Dockerfile.nginx"
    assert "MEDIACMS_IMAGE=r/mediacms/mediacms:8.3.2" in argv
    assert "--target" not in argv and "--secret" not in argv
    assert "MEDIA_AUTH=off" in argv
    assert "MEDIA_AUTH=on" in mediacms.build_argv(
        "nginx", settings(), gate_media=True, builder=builder
    )


def test_media_gate_decided_from_the_tree(tmp_path):
    assert mediacms.media_auth(config.ROOT / "tests/app")  # the stand-in has the endpoint
    assert not mediacms.media_auth(tmp_path)  # no files/urls.py
    (tmp_path / "files").mkdir()
    (tmp_path / "files/urls.py").write_text('re_path(r"^api/v1/media$", views.MediaList)\n')
    assert not mediacms.media_auth(tmp_path)  # a 7.x tree
    (tmp_path / "files/urls.py").write_text('re_path(r"^api/v1/media-auth$", views.media_auth)\n')
    assert mediacms.media_auth(tmp_path)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("tests/app", ("tests/app", None)),
        (
            "https://github.com/mediacms-io/mediacms.git@v8.3.2",
            ("https://github.com/mediacms-io/mediacms.git", "v8.3.2"),
        ),
        (
            "git@github.com:mediacms-io/mediacms.git@main",
            ("git@github.com:mediacms-io/mediacms.git", "main"),
        ),
    ],
)
def test_parse_source(source, expected):
    assert mediacms.parse_source(source) == expected


def test_stage_source_refuses_a_folder_that_is_not_mediacms(tmp_path):
    from invoke import MockContext

    with pytest.raises(StackError, match="not a MediaCMS tree"):
        mediacms.stage_source(MockContext(), config.ROOT, str(tmp_path), locks.Stage.of(settings()))
