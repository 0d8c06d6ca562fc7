"""The package's folders are layers (README, Where does my change go): each imports only
the folders below it, so a model change never needs an engine and an engine no procedure."""

import ast
from pathlib import Path

from mediacms_stack.stack import config

PACKAGE = config.ROOT / "mediacms_stack"
#: From the ground up; a folder may import its own and the ones before it.
LAYERS = ["stack", "engines", "images", "data", "procedures"]


def imported_folders(path: Path) -> set[str]:
    """The top folders of mediacms_stack that ``path`` imports from (relative or absolute)."""
    here = path.relative_to(PACKAGE).parent.parts
    folders = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = here[: len(here) - node.level + 1]
            target = [*base, *(node.module.split(".") if node.module else [])]
        elif (node.module or "").startswith("mediacms_stack."):
            target = node.module.split(".")[1:]
        else:
            continue
        folders.update(target[:1] or [alias.name for alias in node.names])
    return folders


def test_every_module_lives_in_a_layer():
    folders = [p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert sorted(folders) == sorted(LAYERS)
    assert [p.name for p in PACKAGE.glob("*.py")] == []


def test_folders_import_only_the_layers_below():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        folder = path.relative_to(PACKAGE).parts[0]
        allowed = set(LAYERS[: LAYERS.index(folder) + 1])
        upward += [f"{path.relative_to(config.ROOT)} imports {other}/"
                   for other in sorted(imported_folders(path) - allowed)]  # fmt: skip
    assert upward == []
