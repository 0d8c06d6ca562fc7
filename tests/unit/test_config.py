import stat

import pytest

from mediacms_stack import config
from mediacms_stack.shell import StackError


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
    config.set_values(path, {"V": value})
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
        config.set_values(path, {"PORTAL_NAME": "fine", key: value})
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


def test_set_values_keeps_other_lines_and_sets_a_repeated_key_once(tmp_path):
    path = tmp_path / ".env"
    path.write_text("# comment\nA=1\nexport B=2\nA=3\n\nC='x y'\n")
    path.chmod(0o644)
    config.set_values(path, {"A": "new value", "D": "4"})
    assert path.read_text() == "# comment\nA='new value'\nexport B=2\n\nC='x y'\nD=4\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / ".env"
    path.write_text("A=1\n")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        config.set_values(path, {"A": "2"})
    assert path.read_text() == "A=1\n" and [p.name for p in tmp_path.iterdir()] == [".env"]
