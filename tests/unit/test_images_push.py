"""`invoke push`: which images are tagged and pushed, checked with MockContext."""

import re

import pytest
from invoke import MockContext, Result

from mediacms_stack.images import mediacms
from mediacms_stack.stack import config, model
from mediacms_stack.stack.errors import StackError

DIGEST = "sha256:" + "ab" * 32


def settings(registry="127.0.0.1:5000/"):
    values = {"MEDIACMS_VERSION": "8.3.2", "IMAGE_REGISTRY": registry}
    return config.Settings(config.ROOT, values, config.ROOT / config.ENV_FILE)


def engine(local: dict[str, str]) -> MockContext:
    """A MockContext answering `docker image inspect` from ``local`` (ref -> image id)."""
    answers = {}
    for target in mediacms.TARGETS:
        for registry in ("", "127.0.0.1:5000/", "registry.example.org/team/"):
            ref = model.ImageNames(registry, "8.3.2").ref(target)
            command = f"docker image inspect --format '{{{{.Id}}}}' {ref}"
            answers[command] = Result(local[ref] + "\n") if ref in local else Result("", exited=1)
    answers[re.compile(r"docker tag .*")] = Result()
    answers[re.compile(r"docker push .*")] = Result(
        f"The push refers to repository [x]\n8.3.2: digest: {DIGEST} size: 1234\n"
    )
    return MockContext(run=answers, repeat=True)


def commands(c: MockContext, verb: str) -> list[str]:
    ran = [call.args[0] for call in c.run.call_args_list]
    return [command for command in ran if command.startswith(f"docker {verb} ")]


def test_images_built_for_the_registry_are_pushed_as_they_are():
    local = {
        model.ImageNames("127.0.0.1:5000/", "8.3.2").ref(t): f"sha256:{t}" for t in mediacms.TARGETS
    }
    c = engine(local)
    pushed = mediacms.push(c, settings(), mediacms.TARGETS)
    assert commands(c, "tag") == []
    assert commands(c, "push") == [
        "docker push 127.0.0.1:5000/mediacms/mediacms:8.3.2",
        "docker push 127.0.0.1:5000/mediacms/mediacms-worker:8.3.2",
        "docker push 127.0.0.1:5000/mediacms/mediacms-worker:8.3.2-full",
        "docker push 127.0.0.1:5000/mediacms/mediacms-dev:8.3.2",
        "docker push 127.0.0.1:5000/mediacms/mediacms-nginx:8.3.2",
    ]
    assert [p.digest for p in pushed] == [DIGEST] * 5
    assert str(pushed[0]) == f"127.0.0.1:5000/mediacms/mediacms:8.3.2@{DIGEST}"


def test_images_built_without_a_registry_are_tagged_for_it_then_pushed(capsys):
    local = {model.ImageNames("", "8.3.2").ref(t): f"sha256:{t}" for t in mediacms.TARGETS}
    c = engine(local)
    mediacms.push(c, settings(), ["nginx", "web"])
    assert commands(c, "tag") == [
        "docker tag mediacms/mediacms:8.3.2 127.0.0.1:5000/mediacms/mediacms:8.3.2",
        "docker tag mediacms/mediacms-nginx:8.3.2 127.0.0.1:5000/mediacms/mediacms-nginx:8.3.2",
    ]
    ran = [call.args[0] for call in c.run.call_args_list]
    # each tag comes right before its push
    tag_web = ran.index(commands(c, "tag")[0])
    assert ran[tag_web + 1] == "docker push 127.0.0.1:5000/mediacms/mediacms:8.3.2"
    assert "built without IMAGE_REGISTRY" in capsys.readouterr().out


def test_pushing_nginx_alone_does_not_push_web():
    local = {model.ImageNames("127.0.0.1:5000/", "8.3.2").ref("nginx"): "sha256:n"}
    c = engine(local)
    mediacms.push(c, settings(), ["nginx"])
    assert commands(c, "push") == ["docker push 127.0.0.1:5000/mediacms/mediacms-nginx:8.3.2"]


def test_a_missing_image_stops_the_push_before_anything_is_pushed():
    local = {model.ImageNames("", "8.3.2").ref("web"): "sha256:w"}
    c = engine(local)
    with pytest.raises(
        StackError, match=r"not built here: .*mediacms-nginx:8\.3\.2.*--target nginx"
    ):
        mediacms.push(c, settings(), ["web", "nginx"])
    assert commands(c, "push") == [] and commands(c, "tag") == []


def test_a_differing_unprefixed_image_is_reported_not_pushed(capsys):
    prefixed = model.ImageNames("127.0.0.1:5000/", "8.3.2").ref("web")
    local = {prefixed: "sha256:" + "1" * 64, "mediacms/mediacms:8.3.2": "sha256:" + "2" * 64}
    c = engine(local)
    mediacms.push(c, settings(), ["web"])
    assert commands(c, "tag") == []
    assert commands(c, "push") == [f"docker push {prefixed}"]
    assert "differs from" in capsys.readouterr().out


def test_registry_with_a_path_prefix():
    local = {model.ImageNames("", "8.3.2").ref("dev"): "sha256:d"}
    c = engine(local)
    mediacms.push(c, settings("registry.example.org/team/"), ["dev"])
    assert commands(c, "push") == [
        "docker push registry.example.org/team/mediacms/mediacms-dev:8.3.2"
    ]


def test_empty_registry_pushes_the_plain_names_and_says_where(capsys):
    local = {model.ImageNames("", "8.3.2").ref("worker"): "sha256:w"}
    c = engine(local)
    mediacms.push(c, settings(""), ["worker"])
    assert commands(c, "tag") == []
    assert commands(c, "push") == ["docker push mediacms/mediacms-worker:8.3.2"]
    assert "Docker Hub" in capsys.readouterr().out


def test_dry_run_looks_images_up_but_neither_tags_nor_pushes(capsys, dry):
    local = {model.ImageNames("", "8.3.2").ref("web"): "sha256:w"}
    c = engine(local)
    pushed = mediacms.push(dry(c), settings(), ["web"])
    assert commands(c, "tag") == [] and commands(c, "push") == []
    assert pushed == [mediacms.Pushed("127.0.0.1:5000/mediacms/mediacms:8.3.2", None)]
    printed = capsys.readouterr().err
    assert "$ docker tag mediacms/mediacms:8.3.2 127.0.0.1:5000/mediacms/mediacms:8.3.2" in printed
    assert "$ docker push 127.0.0.1:5000/mediacms/mediacms:8.3.2" in printed


@pytest.mark.parametrize(
    ("registry", "message"),
    [
        ("127.0.0.1:5000", "must end with '/'"),
        ("https://registry.example.org/", "without a scheme"),
    ],
)
def test_malformed_registry_prefix_is_refused_before_any_command(registry, message):
    c = MockContext()  # any command would raise NotImplementedError
    with pytest.raises(StackError, match=message):
        mediacms.push(c, settings(registry), ["web"])


def test_unknown_target_is_refused():
    with pytest.raises(StackError, match="unknown target"):
        mediacms.push(MockContext(), settings(), ["webb"])


def test_push_task_turns_errors_into_a_message(home, monkeypatch):
    import tasks

    (home / ".env").write_text((home / ".env").read_text() + "IMAGE_REGISTRY=127.0.0.1:5000\n")
    from invoke import Exit

    with pytest.raises(Exit, match="must end with '/'"):
        tasks.push(MockContext(), target=["web"])
