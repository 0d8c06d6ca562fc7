import ast
import re
import stat
from pathlib import Path

import pytest

from mediacms_stack.stack import config
from mediacms_stack.stack.errors import StackError


def test_init_generates_distinct_secrets_with_private_mode(home):
    settings = config.load(home)
    assert len(settings.require("SECRET_KEY")) >= 50
    assert len(settings.require("POSTGRES_PASSWORD")) >= 24
    assert settings.get("ADMIN_PASSWORD") == ""  # generated and printed by the migrations job
    assert stat.S_IMODE((home / ".env").stat().st_mode) == 0o600
    other = config.render((config.ROOT / ".env.example").read_text(), {})
    assert settings.get("SECRET_KEY") not in other


def test_init_refuses_to_overwrite(home):
    with pytest.raises(StackError, match="exists"):
        config.init(home, example=config.ROOT / ".env.example")


def test_init_into_a_missing_folder_says_so_and_writes_nothing(tmp_path):
    with pytest.raises(StackError, match="is not a folder: create it first"):
        config.init(tmp_path, env_file="nowhere/ci.env", example=config.ROOT / ".env.example")
    assert list(tmp_path.iterdir()) == []


def test_overrides_and_unknown_keys_are_kept(tmp_path):
    text = config.render("A=1\nSECRET_KEY=\n# c\n", {"A": "2", "EXTRA": "x"})
    assert text.splitlines()[0] == "A=2"
    assert "# c" in text and "EXTRA=x" in text


def test_every_example_key_is_documented_once():
    keys = [
        line.split("=", 1)[0]
        for line in (config.ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert len(keys) == len(set(keys))


def test_require_names_the_key(tmp_path):
    settings = config.load(tmp_path)
    with pytest.raises(StackError, match="SECRET_KEY is not set"):
        settings.require("SECRET_KEY")


# --- the .env writer ------------------------------------------------------------------
#: Values compose would mangle unquoted ($ expands, " #" starts a comment, spaces trim)
#: or python-dotenv would decode (\\, \', quotes): each must come back exactly.
TRICKY = ['ab$CDef#1 "x', "plain-1.2_3", " lead", "trail ", "a #b", "a'b", "'", "a\\b", "a\\",
          "a\\\\b", 'a\\"b', "a\\'b", "x\\n", "$", "$$", "a$b'c", "tab\there", "é ü 漢",
          "a=b", "`cmd`", '"', "", "*?[]{}()<>|&;!~^"]  # fmt: skip


@pytest.mark.parametrize("value", TRICKY)
def test_values_read_back_literally_by_python_dotenv(tmp_path, value):
    path = tmp_path / ".env"
    assert config.update(config.load(tmp_path), {"V": value}).values["V"] == value
    assert config.load(tmp_path).values["V"] == value
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("1A", "x", "not a valid .env key"),
        ("a", "x", "not a valid .env key"),
        ("A-B", "x", "not a valid .env key"),
        ("", "x", "not a valid .env key"),
        ("A", "one\nEVIL=1", "a newline"),
        ("A", "one\rtwo", "a carriage return"),
        ("A", "nul\0", "a NUL byte"),
        ("A", "x${HOME}", r"holds \$\{"),
        ("A", "a\\b$c", "both a backslash and"),
    ],
)
def test_bad_keys_and_values_are_refused_and_nothing_changes(home, key, value, message):
    path = home / ".env"
    before = path.read_bytes()
    with pytest.raises(StackError, match=message):
        config.update(config.load(home), {"PORTAL_NAME": "fine", key: value})
    with pytest.raises(StackError, match=message):
        config.init(home, {key: value}, force=True, example=config.ROOT / ".env.example")
    assert path.read_bytes() == before
    assert sorted(p.name for p in home.iterdir()) == [".env"]  # no temp file left


def test_invoke_init_set_refuses_a_newline_and_writes_nothing(home):
    from invoke import Context, Exit

    import tasks

    before = (home / ".env").read_bytes()
    with pytest.raises(Exit, match="newline"):
        tasks.init(Context(), force=True, set=["ADMIN_PASSWORD=one\nSECRET_KEY=evil"])
    assert (home / ".env").read_bytes() == before
    tasks.init(Context(), force=True, set=['ADMIN_PASSWORD=ab$CDef#1 "x'])
    assert config.load(home).values["ADMIN_PASSWORD"] == 'ab$CDef#1 "x'


def test_update_keeps_other_lines_and_sets_a_repeated_key_once(tmp_path):
    path = tmp_path / ".env"
    path.write_text("# comment\nA=1\nexport B=2\nA=3\n\nC='x y'\n")
    path.chmod(0o644)
    config.update(config.load(tmp_path), {"A": "new value", "D": "4"})
    assert path.read_text() == "# comment\nA='new value'\nexport B=2\n\nC='x y'\nD=4\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / ".env"
    path.write_text("A=1\n")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        config.update(config.load(tmp_path), {"A": "2"})
    assert path.read_text() == "A=1\n" and [p.name for p in tmp_path.iterdir()] == [".env"]


# --- the one owner of .env --------------------------------------------------------------
def counting_writes(monkeypatch) -> list[Path]:
    """The paths config writes from now on, one entry a write."""
    written, real = [], config.write_private

    def write(path, text):
        written.append(path)
        real(path, text)

    monkeypatch.setattr(config, "write_private", write)
    return written


def test_update_sets_several_keys_in_one_atomic_write(home, monkeypatch):
    path = home / ".env"
    before = config.load(home)
    inode = path.stat().st_ino
    written = counting_writes(monkeypatch)
    changes = {"MEDIACMS_VERSION": "9.9.10", "PORTAL_NAME": "a b", "NEW": "1"}
    after = config.update(before, changes)
    assert written == [path]
    assert path.stat().st_ino != inode  # a new file renamed over the old one, not rewritten
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in home.iterdir()) == [".env"]  # no temp file left
    assert after == config.load(home) and after.env_file == path
    assert after.values == {**before.values, **changes}


def test_update_creates_a_missing_file_with_mode_600(tmp_path):
    settings = config.load(tmp_path)
    assert settings.env_file == tmp_path / ".env" and not settings.env_file.exists()
    assert config.update(settings, {"A": "1"}).values == {"A": "1"}
    assert stat.S_IMODE(settings.env_file.stat().st_mode) == 0o600


def test_a_dry_run_or_no_change_writes_nothing(home, monkeypatch):
    before = config.load(home)
    text = (home / ".env").read_bytes()
    written = counting_writes(monkeypatch)
    assert config.update(before, {}) is before
    planned = config.update(before, {"MEDIACMS_VERSION": "10.0"}, dry_run=True)
    assert planned.version == "10.0" and planned.env_file == before.env_file
    with pytest.raises(StackError, match="a newline"):
        config.update(before, {"A": "x\ny"}, dry_run=True)  # refused in a dry run too
    assert written == [] and (home / ".env").read_bytes() == text


#: Calls that write the path they are given (the index of that argument; -1: the last).
TARGET_ARG = {"write_private": 0, "private_writer": 0, "write_shared": 0, "copy_private": 1,
              "replace": -1, "rename": -1, "copy": -1, "copyfile": -1, "copy2": -1,
              "move": -1}  # fmt: skip
_NAMES_ENV = re.compile(r"env_file|ENV_FILE|['\"]([^'\"]*/)?\.env['\"]")


def env_writers(source: str) -> list[int]:
    """Lines of ``source`` that write a path named like the .env (``env_file``, ``ENV_FILE``,
    ``".env"``): write_text/write_bytes, open for writing, the project's private writers,
    a rename or copy onto it; and any use of python-dotenv's set_key/unset_key."""

    def names_env(node: ast.AST | None) -> bool:
        return node is not None and bool(_NAMES_ENV.search(ast.unparse(node)))

    def writes_mode(mode: ast.AST | None) -> bool:
        """open's mode or os.open's flags; one computed elsewhere counts as writing."""
        if isinstance(mode, ast.Constant):
            return bool(re.search("[wax+]", str(mode.value)))
        return mode is not None and not re.fullmatch(r"os\.O_RDONLY", ast.unparse(mode))

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dotenv"):
            found += (
                [node.lineno] if {a.name for a in node.names} & {"set_key", "unset_key"} else []
            )
        if not isinstance(node, ast.Call):
            continue
        func, args = node.func, list(node.args)
        on = func.value if isinstance(func, ast.Attribute) else None
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("set_key", "unset_key"):
            found.append(node.lineno)
        elif name in ("write_text", "write_bytes"):
            found += [node.lineno] if names_env(on) else []
        elif name == "open":
            if on is not None and ast.unparse(on) != "os":
                args.insert(0, on)  # path.open(mode): the path is the target
            mode = next((k.value for k in node.keywords if k.arg in ("mode", "flags")), None)
            mode = mode or (args[1] if len(args) > 1 else None)  # none: opened for reading
            found += [node.lineno] if writes_mode(mode) and names_env(args[0]) else []
        elif name in TARGET_ARG and args:
            index = TARGET_ARG[name]
            found += [node.lineno] if names_env(args[index] if index < len(args) else None) else []
    return sorted(found)


@pytest.mark.parametrize("code", [
    "settings.env_file.write_text('A=1')",
    "open(settings.env_file, 'a')",
    "with (root / '.env').open(mode='w') as f: pass",
    "os.open(env_file, os.O_WRONLY | os.O_TRUNC)",
    "files.write_private(root / ENV_FILE, text)",
    "files.write_shared(settings.env_file, text)",
    "files.copy_private(saved, settings.env_file)",
    "os.replace(temp, env_file)",
    "from dotenv import set_key",
    "dotenv.unset_key(path, 'A')",
])  # fmt: skip
def test_the_env_writer_check_sees_a_writer(code):
    assert env_writers(code) == [1]


@pytest.mark.parametrize("code", [
    "settings.env_file.read_text()",
    "open(settings.env_file)",
    "settings.env_file.open('rb')",
    "files.copy_private(settings.env_file, folder / 'env')",
    "config.update(settings, {'A': '1'})",
    "(folder / 'manifest.json').write_text('{}')",
])  # fmt: skip
def test_the_env_writer_check_leaves_readers_alone(code):
    assert env_writers(code) == []


def test_config_is_the_only_writer_of_env():
    """Every change of .env goes through config.update (a new one: config.init)."""
    sources = [*sorted((config.ROOT / "mediacms_stack").rglob("*.py")), config.ROOT / "tasks.py"]
    owner = Path(config.__file__).resolve()
    assert owner in sources
    found = [f"{path.relative_to(config.ROOT)}:{line}" for path in sources if path != owner
             for line in env_writers(path.read_text())]  # fmt: skip
    assert found == [], "write .env through config.update, not here"
