"""mediacms_stack.engines.swarm with MockContext: refusals change nothing, commands are right."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import stat
from pathlib import Path

import pytest
from invoke import Context, MockContext, Result

from mediacms_stack.data import backup, restore
from mediacms_stack.data.artifacts import write_checksum
from mediacms_stack.data.database import Database
from mediacms_stack.engines import swarm
from mediacms_stack.stack import config, model
from mediacms_stack.stack.errors import StackError

SHARED = {
    "IMAGE_REGISTRY": "registry.example.org/",
    "MEDIA_VOLUME_TYPE": "nfs",
    "MEDIA_VOLUME_OPTIONS": "addr=10.0.0.5,rw,nfsvers=4.1",
    "MEDIA_VOLUME_DEVICE": ":/export/mediacms",
}


def settings_with(home: Path, **values: str) -> config.Settings:
    return config.update(config.load(home), values)


@pytest.fixture
def ready(home) -> config.Settings:
    return settings_with(home, **SHARED)


def nodes_ctx(labels: dict[str, str]) -> MockContext:
    """A manager whose nodes carry these mediacms.data label values."""
    rows = "".join(f"{name} {value}\n" for name, value in labels.items())
    return MockContext(run={
        re.compile(r"docker node ls .*"): Result("".join(f"id{i}\n" for i in range(len(labels)))),
        re.compile(r"docker node inspect .*"): Result(rows),
    })  # fmt: skip


@pytest.mark.parametrize("key", swarm.MEDIA_KEYS)
def test_storage_settings_are_required(home, key):
    settings = settings_with(home, **{**SHARED, key: ""})
    with pytest.raises(StackError, match=f"{key}.*not set.*nothing was deployed"):
        swarm.check_storage(settings)


def test_nfs_without_server_and_bind_without_path_are_refused(home):
    with pytest.raises(StackError, match="names no NFS server"):
        swarm.check_storage(settings_with(home, **{**SHARED, "MEDIA_VOLUME_OPTIONS": "rw"}))
    bind = {**SHARED, "MEDIA_VOLUME_TYPE": "none", "MEDIA_VOLUME_OPTIONS": "bind",
            "MEDIA_VOLUME_DEVICE": "relative/path"}  # fmt: skip
    with pytest.raises(StackError, match="absolute MEDIA_VOLUME_DEVICE"):
        swarm.check_storage(settings_with(home, **bind))
    swarm.check_storage(settings_with(home, **{**bind, "MEDIA_VOLUME_DEVICE": "/srv/media"}))


@pytest.mark.parametrize("registry", ["", "127.0.0.1:5000/", "localhost:5000/team/"])
def test_registry_the_nodes_cannot_share_is_refused(home, registry):
    settings = settings_with(home, **{**SHARED, "IMAGE_REGISTRY": registry})
    with pytest.raises(StackError, match=r"IMAGE_REGISTRY.*nothing was deployed"):
        swarm.check_registry(settings)


def test_data_node_label_must_be_on_exactly_one_node(ready):
    with pytest.raises(StackError, match="no node carries it"):
        swarm.check_data_node(nodes_ctx({"n1": "", "n2": "<no value>"}), ready)
    with pytest.raises(StackError, match="nodes n1, n2 carry it"):
        swarm.check_data_node(nodes_ctx({"n1": "true", "n2": "true"}), ready)
    assert swarm.check_data_node(nodes_ctx({"n1": "", "n2": "true"}), ready) == "n2"


def test_deploy_refused_without_label_runs_no_stack_deploy(ready, monkeypatch):
    c = nodes_ctx({"n1": ""})
    monkeypatch.setattr(swarm.checks, "check_images", lambda *a: pytest.fail("checked images"))
    with pytest.raises(StackError, match="nothing was deployed"):
        swarm.deploy(c, ready)
    assert not any("stack deploy" in str(call) for call in c.run.call_args_list)


def test_unreachable_image_is_refused_before_deploying(ready, monkeypatch):
    import docker.errors

    class Api:
        def inspect_distribution(self, ref):
            raise docker.errors.APIError("no such manifest", explanation="manifest unknown")

    class Client:
        api = Api()

        def close(self):
            pass

    monkeypatch.setattr("docker.from_env", Client)
    with pytest.raises(StackError, match=r"cannot resolve registry\.example\.org/mediacms/"
                                         r"mediacms:9\.9\.9 \(manifest unknown\)"):  # fmt: skip
        swarm.check_images(ready)


def test_scale_command(ready):
    c = MockContext(run={re.compile(r".*"): Result()})
    swarm.scale(c, ready, model.parse_scale(["web=3", "celery_long=2", "celery_beat=1"]))
    command = c.run.call_args_list[0].args[0]
    assert command == ("docker service scale mediacms_web=3 mediacms_celery_long=2 "
                       "mediacms_celery_beat=1")  # fmt: skip


def test_secrets_are_files_and_never_in_the_deploy_environment(ready, tmp_path):
    ready = settings_with(ready.root, ADMIN_PASSWORD="admin-Pw-1")
    folder = tmp_path / "secrets"
    folder.mkdir()
    revisions = swarm.write_secrets(ready, folder)
    written = [*swarm.SECRETS, "db_app_role.sql"]
    assert set(revisions) == {f"{name.removesuffix('.sql').upper()}_REV" for name in written}
    for name in written:
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    password = ready.require("REDIS_PASSWORD")
    assert (folder / "redis_location").read_text() == f"redis://:{password}@redis:6379/1"
    superuser = ready.require("POSTGRES_SUPERUSER_PASSWORD")
    assert (folder / "postgres_superuser_password").read_text() == superuser
    assert "CREATE ROLE" in (folder / "db_app_role.sql").read_text()
    env = swarm.deploy_env(ready, {"SWARM_SECRETS_DIR": str(folder), **revisions})
    for key in (*config.GENERATED, "ADMIN_PASSWORD"):
        assert key not in env
        assert all(ready.require(key) not in value for value in env.values()), key
    assert env["POSTGRES_SUPERUSER"] == "postgres" and env["POSTGRES_USER"] == "mediacms"
    assert env["SWARM_NGINX_UPDATE_ORDER"] == "start-first"


def test_a_stack_of_one_database_role_keeps_it_as_the_superuser(home, tmp_path):
    """Made before the split: no POSTGRES_SUPERUSER in .env, its one role is both."""
    one = settings_with(home, **SHARED, POSTGRES_SUPERUSER="", POSTGRES_SUPERUSER_PASSWORD="")
    swarm.write_secrets(one, tmp_path)
    postgres_password = one.require("POSTGRES_PASSWORD")
    assert (tmp_path / "postgres_superuser_password").read_text() == postgres_password
    assert swarm.deploy_env(one, {})["POSTGRES_SUPERUSER"] == one.get("POSTGRES_USER")


def test_changed_secret_gets_a_new_name(ready, home, tmp_path):
    first = swarm.write_secrets(ready, tmp_path)
    changed = settings_with(home, POSTGRES_PASSWORD="another-password")
    second = swarm.write_secrets(changed, tmp_path)
    assert first["POSTGRES_PASSWORD_REV"] != second["POSTGRES_PASSWORD_REV"]
    assert first["SECRET_KEY_REV"] == second["SECRET_KEY_REV"]


def test_host_mode_ports_make_nginx_stop_first(home):
    settings = settings_with(home, **SHARED, SWARM_PUBLISH_MODE="host")
    assert swarm.deploy_env(settings, {})["SWARM_NGINX_UPDATE_ORDER"] == "stop-first"


class Deployer(Context):
    """A context that keeps what `docker stack deploy` is given while it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict = {}

    def run(self, command: str, **kwargs) -> Result:
        env = kwargs["env"]
        folder = Path(env["SWARM_SECRETS_DIR"])
        self.seen.update(argv=shlex.split(command), env=env,
                         files=sorted(p.name for p in folder.iterdir()),
                         tmpfs=json.loads((folder / "tmpfs.yaml").read_text()))  # fmt: skip
        return Result()


def test_stack_deploy_command_and_removed_secret_folder(ready):
    shutil.copy(config.ROOT / swarm.STACK_FILE, ready.root / swarm.STACK_FILE)
    c = Deployer()
    swarm.stack_deploy(c, ready, version="10.0")
    seen = c.seen
    assert seen["argv"][:3] == ["docker", "stack", "deploy"]
    assert seen["argv"][-1] == "mediacms" and "--prune" in seen["argv"]
    assert seen["env"]["MEDIACMS_VERSION"] == "10.0"
    assert seen["files"] == sorted([*swarm.SECRETS, "db_app_role.sql", "tmpfs.yaml"])
    assert seen["argv"].count("--compose-file") == 2
    assert not Path(seen["env"]["SWARM_SECRETS_DIR"]).exists()
    tmp = {"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": 64 * 2**20}}
    assert seen["tmpfs"]["services"] == {
        name: {"volumes": [tmp]}
        for name in ("migrations", "web", "celery_beat", "celery_short", "celery_long", "nginx")
    }


@pytest.mark.parametrize("text, size", [("64m", 64 * 2**20), ("1g", 2**30), ("512K", 2**19),
                                        ("1048576", 2**20), (" 8mb ", 8 * 2**20)])  # fmt: skip
def test_tmpfs_size_in_bytes_as_compose_reads_it(text, size):
    assert swarm.inputs.tmpfs_bytes(text) == size


@pytest.mark.parametrize("text", ["0", "64x", "-1m", "lots", ""])
def test_a_tmpfs_size_that_is_none_is_refused_before_deploying(text):
    with pytest.raises(StackError, match=r"TMPFS_SIZE=.*nothing was deployed"):
        swarm.inputs.tmpfs_bytes(text)


@pytest.mark.parametrize("replicas, running, done", [
    ("2/2", 2, True), ("1/2", 1, False), ("2/2", 1, False), ("3/2", 2, True),
    ("0/0", 0, True), ("0/1 (1/1 completed)", 0, True), ("1/1 (0/1 completed)", 1, False),
])  # fmt: skip
def test_converged(replicas, running, done):
    assert swarm.converged(replicas, running) is done


def test_tasks_of_a_dead_node_do_not_count(ready):
    """service ls says 3/2 (a dead node's task still "Running"); only tasks meant to run count."""
    c = MockContext(run={
        re.compile(r"docker stack services .*"): Result("mediacms_web\treplicated\t3/2\timg\n"
                                                        "mediacms_nginx\tglobal\t2/2\timg\n"),
        re.compile(r"docker stack ps .*desired-state=running.*"): Result(
            "mediacms_web.1\tRunning 5 minutes ago\nmediacms_web.2\tStarting 3 seconds ago\n"
            "mediacms_nginx.abc\tRunning 1 minute ago\nmediacms_nginx.def\tRunning 2 minutes ago\n"),
    })  # fmt: skip
    assert swarm.behind(c, ready) == ["mediacms_web 1 of 3/2"]


def test_wait_gives_up_after_its_timeout_naming_what_is_behind(ready, monkeypatch):
    clock = itertools.count(0, 5)
    monkeypatch.setattr(swarm.poll, "behind", lambda *a: ["mediacms_web 1 of 2/2"])
    monkeypatch.setattr(swarm.poll.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(swarm.poll.time, "sleep", lambda s: None)
    with pytest.raises(StackError, match=r"not all healthy after 12s: mediacms_web 1 of 2/2; "
                                         r"see `docker service ps mediacms_<service>`"):  # fmt: skip
        swarm.poll.wait(MockContext(), ready, timeout=12)


def test_update_reports_rollback_and_keeps_env(ready, monkeypatch):
    states = iter([("completed", "t0"), ("rollback_started", "t1"),
                   ("rollback_completed", "t1")])  # fmt: skip
    monkeypatch.setattr(swarm.operations, "preflight", lambda *a: "n1")
    for module in (swarm.operations, swarm.poll):  # update reads it before, wait_update after
        monkeypatch.setattr(module, "update_state", lambda *a: next(states))
    monkeypatch.setattr(
        swarm.operations,
        "running_image",
        lambda *a: "registry.example.org/mediacms/mediacms:9.9.9@sha256:x",
    )
    monkeypatch.setattr(swarm.operations, "stack_deploy", lambda *a, **k: None)
    monkeypatch.setattr(swarm.poll.time, "sleep", lambda s: None)
    with pytest.raises(StackError, match=r"rolled it back.*still says 9\.9\.9"):
        swarm.update(MockContext(), ready, "10.0")
    assert config.load(ready.root).version == "9.9.9"


def test_init_joins_nothing_and_labels_the_data_node(ready):
    c = MockContext(run={re.compile(r"docker info .*"): Result("inactive\n"),
                         re.compile(r".*"): Result()})  # fmt: skip
    swarm.init(c, ready, advertise_addr="10.0.0.1", data_node="db-host")
    commands = [call.args[0] for call in c.run.call_args_list]
    assert "docker swarm init --advertise-addr 10.0.0.1" in commands
    assert "docker node update --label-add mediacms.data=true db-host" in commands


def test_stack_file_keeps_secrets_out_and_pins_data(tmp_path):
    text = (config.ROOT / swarm.STACK_FILE).read_text()
    for key in ("SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "ADMIN_PASSWORD"):
        assert not re.search(rf"\${{{key}[:}}]", text), key
    assert text.count("node.labels.${SWARM_DATA_LABEL:-mediacms.data} == true") == 2
    assert "mode: replicated-job" in text and "failure_action: rollback" in text


def test_rollback_names_the_services_it_could_not_roll_back(ready):
    c = MockContext(run={
        re.compile(r".*mediacms_nginx$"): Result(exited=1, stderr="no previous spec\n"),
        re.compile(r".*"): Result(),
    })  # fmt: skip
    with pytest.raises(StackError, match="not rolled back: nginx: no previous spec"):
        swarm.rollback(c, ready)
    commands = [call.args[0] for call in c.run.call_args_list]
    assert len(commands) == len(model.APP_SERVICES)  # the others were still rolled back


# --- operations on a Swarm deployment ------------------------------------------------------
@pytest.fixture
def on_swarm(home) -> config.Settings:
    return settings_with(home, **SHARED, ORCHESTRATOR="swarm")


def calls(c: MockContext) -> list[str]:
    return [call.args[0] for call in c.run.call_args_list]


def test_orchestrator_setting_alone_decides(home, on_swarm):
    assert swarm.deployed_on_swarm(on_swarm)
    assert not swarm.deployed_on_swarm(settings_with(home, ORCHESTRATOR="compose"))
    assert not swarm.deployed_on_swarm(settings_with(home, ORCHESTRATOR=""))


def test_tasks_pick_the_swarm_stack_or_refuse(on_swarm):
    from invoke import Exit

    import tasks

    settings, stack = tasks._stack(MockContext(), swarm=True)
    assert isinstance(stack, swarm.SwarmStack) and stack.project == settings.project
    with pytest.raises(StackError, match=r"runs on Swarm \(ORCHESTRATOR=swarm.*swarm\.\* tasks"):
        tasks._stack(MockContext())
    c = exec_ctx(**{".*": ""})
    with pytest.raises(Exit, match="runs on Swarm"):
        tasks.down(c, dry_run=True)
    assert c.run.call_args_list == []


def exec_ctx(**answers: str) -> MockContext:
    return MockContext(run={re.compile(pattern): Result(out) for pattern, out in answers.items()},
                       repeat=True)  # fmt: skip


def test_status_reads_the_services_of_the_swarm_stack(on_swarm):
    """`invoke status` on Swarm: one row a service, healthy only when its tasks all run."""
    from mediacms_stack.procedures import health, ops

    c = exec_ctx(**{
        r"docker info .*": "node1 true\n",
        r"docker stack services .*": "mediacms_web\treplicated\t2/2\tr/web:9\n"
                                     "mediacms_db\treplicated\t0/1\tr/pg:17\n"
                                     "mediacms_migrations\treplicated-job\t0/1 (1/1 completed)\tr/web:9\n",
        r"docker stack ps .*desired-state=running.*": "mediacms_web.1\tRunning 5 minutes ago\n"
                                                      "mediacms_web.2\tRunning 1 minute ago\n"
                                                      "mediacms_db.1\tStarting 3 seconds ago\n",
    })  # fmt: skip
    stack = swarm.SwarmStack.connect(c, on_swarm)
    assert ops.status_rows(c, stack) == [
        ("db", "0 of 0/1", "not healthy", "r/pg:17", "17"),
        ("migrations", "completed", "-", "r/web:9", "9"),
        ("web", "running", "healthy", "r/web:9", "9"),
    ]
    report = {"unread": {}, "services": [dict(zip(("service", "state", "health", "image",
                                                   "version"), row, strict=True))
                                          for row in ops.status_rows(c, stack)],
              "backups": {"full": None}, "encodings": None}  # fmt: skip
    found = health.problems_of(report)
    assert "db: 0 of 0/1, not healthy" in found and not [p for p in found if p.startswith("web")]


def test_status_on_a_worker_is_one_error_saying_a_manager_knows_the_services(on_swarm):
    c = exec_ctx(**{r"docker info .*": "node2 false\n"})
    with pytest.raises(StackError, match=r"^node2 is not a swarm manager, which alone knows"):
        swarm.SwarmStack.connect(c, on_swarm).ps(c)
    assert not [x for x in calls(c) if x.startswith("docker stack")]  # nothing else asked


def test_exec_goes_to_the_task_container_on_the_reached_engine(on_swarm):
    c = exec_ctx(**{r"docker ps .*service\.name=mediacms_db .*": "c0ffee\n",
                    r"docker ps .*service\.name=mediacms_web .*": "beef\n"})  # fmt: skip
    stack = swarm.SwarmStack.connect(c, on_swarm)
    db = Database.of(stack, on_swarm)
    assert db.psql_argv("SELECT 1")[:4] == ["docker", "exec", "-i", "c0ffee"]
    assert stack.argv("exec", "web", "bash") == ["docker", "exec", "-it", "beef", "bash"]
    dump = db.snapshot_dump_argv()
    assert dump[:6] == ["docker", "exec", "-i", "c0ffee", "sh", "-c"]
    restore = db.replace_argv()  # as the container's postgres user, as on compose
    assert restore[:8] == ["docker", "exec", "-i", "--user", "postgres", "c0ffee", "sh", "-c"]
    assert len([x for x in calls(c) if x.startswith("docker ps")]) == 2  # db once, web once


@pytest.mark.parametrize("info, service_ps, where", [
    ("node2 false\n", "", "labelled mediacms.data=true"),
    ("node1 true\n", "node3\n", "it runs on node3.*DOCKER_HOST=ssh://node3"),
])  # fmt: skip
def test_task_elsewhere_is_one_refusal_naming_the_node(on_swarm, tmp_path, info, service_ps,
                                                       where):  # fmt: skip
    c = exec_ctx(**{r"docker ps .*": "", r"docker info .*": info,
                    r"docker service ps .*": service_ps})  # fmt: skip
    stack = swarm.SwarmStack.connect(c, on_swarm)
    for make in (backup.backup_all, backup.backup_db):
        with pytest.raises(StackError, match=rf"no running db task on node\d.*{where}.*nothing"):
            make(c, stack, on_swarm, tmp_path / "out")
        assert list((tmp_path / "out").iterdir()) == []  # no folder, no partial file
    assert not any("pg_dump" in x or "docker exec" in x for x in calls(c))


def test_throwaway_media_container_uses_the_stack_volume(on_swarm):
    c = exec_ctx(**{r"docker volume inspect .*": ""})
    c.set_result_for("run", re.compile(r"docker volume create .*"), Result("x\n"))
    stack = swarm.SwarmStack.connect(c, on_swarm)
    argv = backup.archive_argv(stack, "--create", "--file=-", ".")
    assert argv[:3] == ["docker", "run", "--rm"] and "--network" in argv
    assert f"mediacms_media_files:{model.MEDIA_DIR}" in argv
    assert argv[argv.index("--entrypoint") + 1] == "sh"
    assert "registry.example.org/mediacms/mediacms:9.9.9" in argv
    create = next(x for x in calls(c) if x.startswith("docker volume create"))
    assert "--opt type=nfs" in create and "--opt device=:/export/mediacms" in create
    assert "'o=addr=10.0.0.5,rw,nfsvers=4.1'" in create or "o=addr=10.0.0.5,rw" in create


@pytest.fixture
def on_manager(on_swarm, monkeypatch) -> tuple[MockContext, swarm.SwarmStack]:
    """The stack reached on a manager where web runs 3 tasks, the other writers 1."""
    c = exec_ctx(**{r"docker service inspect mediacms_web .*": "3\n",
                    r"docker info .*": "node1 true\n",
                    r"docker service inspect .*": "1\n", r"docker service scale .*": ""})  # fmt: skip
    monkeypatch.setattr(swarm.adapter, "wait", lambda *a, **k: 0.0)
    return c, swarm.SwarmStack.connect(c, on_swarm)


def scales(c: MockContext) -> list[str]:
    return [x for x in calls(c) if x.startswith("docker service scale")]


def test_restore_stops_writers_and_scales_them_back(on_swarm, on_manager):
    c, stack = on_manager
    stack.run(c, "stop", *model.APP_SERVICES)
    stack.up(c, *model.APP_SERVICES)
    assert scales(c) == [
        "docker service scale mediacms_web=0 mediacms_celery_beat=0 mediacms_celery_short=0 "
        "mediacms_celery_long=0",
        "docker service scale mediacms_web=3 mediacms_celery_beat=1 mediacms_celery_short=1 "
        "mediacms_celery_long=1",
    ]
    with pytest.raises(StackError, match="does not apply to the Swarm stack"):
        stack.argv("down")
    worker = exec_ctx(**{r"docker info .*": "node2 false\n"})
    with pytest.raises(StackError, match=r"node2 is not a swarm manager.*nothing was changed"):
        swarm.SwarmStack.connect(worker, on_swarm).run(worker, "stop", "web")
    assert not any("scale" in x for x in calls(worker))


def test_up_scales_back_only_the_services_it_names(on_manager):
    c, stack = on_manager
    stack.run(c, "stop", "web", "celery_beat")
    stack.up(c, "web")
    stack.up(c)  # none named: every one still stopped
    stack.up(c)  # nothing stopped any more: no scale
    assert scales(c) == [
        "docker service scale mediacms_web=0 mediacms_celery_beat=0",
        "docker service scale mediacms_web=3",
        "docker service scale mediacms_celery_beat=1",
    ]


def test_restore_on_a_worker_refuses_before_its_safety_dump(on_swarm, tmp_path):
    dump = tmp_path / "mediacms.dump"
    dump.write_bytes(b"PGDMP\x01rest")
    write_checksum(dump)
    worker = exec_ctx(**{r"docker info .*": "node2 false\n"})
    stack = swarm.SwarmStack.connect(worker, on_swarm)
    with pytest.raises(StackError, match=r"node2 is not a swarm manager.*nothing was changed"):
        restore.restore_db(worker, stack, on_swarm, dump, yes=True, safety_dir=tmp_path / "safe")
    assert calls(worker) == ["docker info --format '{{.Name}} {{.Swarm.ControlAvailable}}'"]
    assert not (tmp_path / "safe").exists()


def test_unused_secrets_and_configs_are_removed_kept_ones_stay(ready):
    c = exec_ctx(**{
        r"docker service ls .*": "mediacms_web\nmediacms_db\n",
        r"docker secret ls .*": "s_key_new\ns_key_old\ns_pw_prev\ns_pw_gone\n",
        r"docker config ls .*": "",
        r"docker service inspect .*": "s_key_new s_pw_new s_pw_prev \ns_pw_new \n",
        r"docker secret rm .*": "",
    })  # fmt: skip
    assert swarm.prune_unused(c, ready) == ["s_key_old", "s_pw_gone"]
    assert "docker secret rm s_key_old s_pw_gone" in calls(c)
    inspect = next(x for x in calls(c) if x.startswith("docker service inspect"))
    assert "PreviousSpec" in inspect and inspect.endswith("mediacms_web mediacms_db")


def test_custom_folder_becomes_configs_named_by_content(ready, home):
    custom = home / "custom"
    (custom / "static" / "css").mkdir(parents=True, exist_ok=True)
    (custom / "local_settings.py").write_text('PORTAL_NAME = "X"\n')
    (custom / "static" / "css" / "site.css").write_text("body {}\n")
    (custom / "static" / "css" / ".gitkeep").write_text("")
    found = swarm.custom_files(ready)
    assert [target for _, target in found] == [swarm.CUSTOM_SETTINGS,
                                               f"{swarm.CUSTOM_STATIC}/css/site.css"]  # fmt: skip
    overlay = swarm.custom_overlay(ready, found)
    assert set(overlay["services"]) == {*swarm.SETTINGS_READERS, "nginx"}
    (nginx,) = overlay["services"]["nginx"]["configs"]
    assert nginx["target"].endswith("/css/site.css") and nginx["mode"] == 0o444
    before = overlay["configs"][nginx["source"]]["name"]
    assert before.startswith("mediacms_custom_")
    (custom / "static" / "css" / "site.css").write_text("body { color: red; }\n")
    again = swarm.custom_overlay(ready, swarm.custom_files(ready))
    assert before not in {entry["name"] for entry in again["configs"].values()}
    (custom / "static" / "big.png").write_bytes(b"x" * (swarm.CONFIG_LIMIT + 1))
    with pytest.raises(StackError, match=r"larger than a Swarm config.*nothing was deployed"):
        swarm.custom_files(ready)
