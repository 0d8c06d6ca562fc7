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
