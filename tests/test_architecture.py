"""The house rules, read from the source with `ast` (no imports run): no import circle in runner/ or
tui/, the TUI reaches the runner only through the service layer and a few light modules, and the
TUI starts no process and sends no signal of its own."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runner", "tui")

# What tui/ may import from the runner, and why:
TUI_MAY_IMPORT = {
    "runner",  # the package itself (its __init__ imports only logging, to quiet library loggers)
    "runner.services",  # runs and estimates: launch, open, list, stop, checkpoint, resume
    "runner.errors",  # the one user-error type, shown in the app
    "runner.recipe",  # the schema the wizard edits (titles, help, validation)
    "runner.recipe_stages",  # the stages, their help and row kinds (the wizard's Stage step)
    "runner.paths",  # where the model cache lives (model picker)
    "runner.progress",  # fmt_duration: formatting only
    "runner.model",  # the embedded model's alias and file; the tokenizer for the data preview
    "runner.model_config",  # the one config.json reader: the model step's facts (parameters, context)
    "runner.data", "runner.data.formats", "runner.data.template",  # the Dataset step's preview of rows
    "runner.chat", "runner.chat_session",  # the chat screen's engine (in-process, reads weights only)
}
# Modules that start processes or touch run files: only the service layer may import them.
SERVICE_ONLY = {"runner.launcher", "runner.control", "runner.watch", "runner.rundir", "runner.train"}


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str, known: set[str]) -> str | None:
    """The known module `name` refers to (a package's name refers to its __init__)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(mod: str, path: Path, known: set[str]) -> set[str]:
    """Every module of runner/ or tui/ that `mod` imports, at the top or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found: set[str] = set()
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import mod` imports pkg.mod; `from mod import name` imports mod
            names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}".removeprefix("tuneforge.") in known else prefix
                     for a in node.names]
        for name in names:
            name = name.removeprefix("tuneforge.")
            target = _resolve(name, known)
            if target and target != mod:
                found.add(target)
    return found


@lru_cache(maxsize=1)
def graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: imports_of(m, p, set(mods)) for m, p in mods.items()}


def circles(g: dict[str, set[str]]) -> list[set[str]]:
    """Groups of modules that import each other, directly or round about (Tarjan's components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(group)

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_is_read_from_the_source():
    g = graph()
    assert "runner.services" in g["runner.cli"] and "runner.launcher" in g["runner.services"]
    assert "runner.cli_errors" in g["runner.cli_data"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert "tui.app" not in g["tui.screens.base"]  # an import under `if TYPE_CHECKING:` runs never


def test_no_import_circle_in_runner_or_tui():
    found = [sorted(c) for c in circles(graph())]
    assert not found, f"import circles: {found}"


def test_tui_imports_only_the_service_layer_and_light_modules():
    bad = {f"{m} imports {t}" for m, targets in graph().items() if m.startswith("tui")
           for t in targets if t.startswith("runner") and t not in TUI_MAY_IMPORT}
    assert not bad, sorted(bad)


def test_only_the_service_layer_reaches_launcher_control_and_run_files_for_faces():
    faces = {m for m in graph() if m.startswith("tui") or m.startswith("runner.cli")}
    bad = {f"{m} imports {t}" for m in faces for t in graph()[m] if t in SERVICE_ONLY}
    assert not bad, sorted(bad)
    spawners = {m for m, p in _modules().items() if re.search(r"subprocess\.(Popen|run)\(\[sys\.executable", p.read_text())}
    assert spawners <= {"runner.launcher"}, f"training processes started outside the launcher: {spawners}"


def _code_without_comments(path: Path) -> str:
    toks = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    return " ".join(t.string for t in toks if t.type != tokenize.COMMENT)


def test_tui_spawns_no_process_and_sends_no_signal():
    hits = [f"{p.relative_to(ROOT)}: {w}" for p in sorted((ROOT / "tui").rglob("*.py"))
            for w in ("subprocess", "os.kill", "tmux") if w in _code_without_comments(p)]
    assert not hits, hits
