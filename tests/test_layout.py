"""The tree's rules, checked from the source: imports run one way, Discord stays behind its door, no cycles.

``model`` is the toolkit and imports neither ``corpora`` nor ``bot``; ``corpora`` imports only
``model``; ``bot`` may import both. Only ``bot/discord_app/`` imports ``discord``: everything else
is plain Python the CLI and the tests call directly. No module imports from a package that
imports that module back (``client.py`` loading the cogs while a cog imports ``client.py``), and
no chain of modules imports its way back to where it started, imports inside functions included,
because such modules can only be understood, tested and changed together.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "corpora", "bot")
DISCORD_DOOR = "bot.discord_app"  # the one package that may import discord
MAY_IMPORT = {"model": {"model"}, "corpora": {"model", "corpora"}, "bot": {"model", "corpora", "bot"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every module name a file imports, at any depth (imports inside functions count too).

    ``from bot.core import answers`` names both ``bot.core`` and ``bot.core.answers``; callers keep
    the names they know.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}: relative import; the project uses absolute imports only")
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports, at any depth."""
    return {name for name in imported_names(path) if name in known}


def a_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One chain of imports that leads back to its start (``[a, b, a]``), or None; depth-first."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished, no cycle through it
    path: list[str] = []

    def visit(mod: str) -> list[str] | None:
        state[mod] = 1
        path.append(mod)
        for dep in sorted(graph.get(mod, ())):
            if dep == mod:
                continue
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[mod] = 2
        return None

    for mod in sorted(graph):
        if mod not in state and (found := visit(mod)):
            return found
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, set(modules)) for name, path in modules.items()}


def test_every_package_is_found(graph):
    assert {"model.train", "corpora.registry", "bot.discord_app.client", "bot.cli"} <= set(graph)


def test_imports_run_one_way(graph):
    wrong = [f"{mod} imports {dep}" for mod, deps in graph.items() for dep in deps
             if dep.split(".")[0] not in MAY_IMPORT[mod.split(".")[0]]]
    assert not wrong, "imports running the wrong way:\n" + "\n".join(sorted(wrong))


def test_no_module_imports_a_package_that_imports_it_back(graph):
    packages = {m for m in graph if project_modules()[m].name == "__init__.py"}

    def inside(mod: str, pkg: str) -> bool:
        return mod == pkg or mod.startswith(pkg + ".")

    loops = []
    for pkg in packages:
        members = [m for m in graph if inside(m, pkg)]
        for outsider in (m for m in graph if not inside(m, pkg)):
            into = sorted(d for d in graph[outsider] if inside(d, pkg))
            back = sorted(m for m in members if outsider in graph[m])
            if into and back:
                loops.append(f"{outsider} imports {into[0]}, and {back[0]} imports {outsider}")
    assert not loops, "modules and packages importing each other:\n" + "\n".join(sorted(set(loops)))


def test_only_the_discord_app_imports_discord():
    """The boundary the package docstring states: the core, the store, the jobs, the CLI and the
    bench run without discord.py, so what the CLI prints is what the bot's core decided."""
    wrong = [f"{name} imports {dep}" for name, path in project_modules().items()
             if not (name == DISCORD_DOOR or name.startswith(DISCORD_DOOR + "."))
             for dep in sorted(imported_names(path)) if dep == "discord" or dep.startswith("discord.")]
    assert not wrong, "discord imported outside bot/discord_app:\n" + "\n".join(wrong)


def test_no_module_imports_its_way_back_to_itself(graph):
    cycle = a_cycle(graph)
    assert cycle is None, "an import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_sees_a_long_cycle_and_ignores_a_diamond():
    assert a_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert a_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None


def test_the_checker_sees_a_wrong_way_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from bot.core.replies import ReplyService\n")
    assert imports_of(bad, {"bot.core.replies", "bot"}) == {"bot.core.replies"}


TOP_LEVEL = {".ci", ".env.example", ".gitignore", "Makefile", "Procfile", "README.md", "bot", "checkpoints", "corpora",
             "model", "pyproject.toml", "tests"}


def test_the_top_level_is_the_design_cards():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    tracked = [line for line in done.stdout.splitlines() if (ROOT / line).exists()]  # deleted but not yet committed
    assert {line.split("/")[0] for line in tracked} == TOP_LEVEL


def test_tests_mirror_the_tree():
    """Every test folder stands for a package of the source (tests/bot/cogs for bot/cogs, and so on)."""
    folders = {p.parent.relative_to(ROOT / "tests").as_posix() for p in (ROOT / "tests").rglob("*/*.py")}
    packages = {module_name(p).replace(".", "/") for p in project_modules().values() if p.name == "__init__.py"}
    assert folders <= packages, f"test folders with no package beside them: {sorted(folders - packages)}"
