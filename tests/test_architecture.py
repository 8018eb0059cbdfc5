"""The floors hold: imports run down only (README "Layout", pyproject's ``[tool.importlinter]``).

* the import-linter contracts (the floors, and "surgery cuts, the job recovers");
* zero import cycles among ``src/neurotomy`` modules, imports inside functions included;
* primitives and analyses never train, recover or report; models and checkpoints never know surgery;
* nobody imports another module's ``_private`` name (``src/``, ``tests/``, ``benchmarks/``);
* the CLI stays thin: no file of ``cli/`` over 250 lines, ``main`` at most 60;
* every document a docstring names exists in the repository.

Each failure lists every offending import, file or line, not only the first.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from collections import deque
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "neurotomy"
CLI_FILE_LINES = 250
CLI_MAIN_LINES = 60


# --------------------------------------------------------------------------------------------------
# the import graph (grimp, import-linter's own graph library: it records imports inside functions)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _source_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _missing_inits() -> list[Path]:
    """Folders of ``src/neurotomy`` with Python files but no ``__init__.py``: grimp and import-linter
    skip such a namespace package silently, so its imports would go unchecked."""
    folders = {path.parent for path in PACKAGE.rglob("*.py")}
    return sorted(folder for folder in folders if not (folder / "__init__.py").exists())


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    sys.path.insert(0, str(SRC))  # analyse this working tree, whatever is installed
    try:
        return grimp.build_graph("neurotomy", cache_dir=None)
    finally:
        sys.path.remove(str(SRC))


def _fail_if(problems: list[str], header: str) -> None:
    """Fail with every problem listed, under one header, without a traceback to read past."""
    if problems:
        pytest.fail(header + "\n" + "\n".join(sorted(set(problems))), pytrace=False)


def _line(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    details = graph.get_import_details(importer=importer, imported=imported)
    path = _source_modules().get(importer)
    where = path.relative_to(ROOT) if path else importer
    return "; ".join(f"{where}:{d['line_number']} `{d['line_contents']}`" for d in details) or str(where)


def test_the_graph_sees_every_module(graph):
    unseen = [f"  {m}" for m in set(_source_modules()) - set(graph.modules)]
    folders = ", ".join(str(p.relative_to(ROOT)) for p in _missing_inits())
    _fail_if(unseen, "modules the import graph does not contain, so no contract checks their imports"
             + (f" (grimp and import-linter skip a folder without __init__.py: add one to {folders})" if folders
                else "") + ":")


# --------------------------------------------------------------------------------------------------
# the contracts


def _lint_imports() -> Path:
    for name in ("lint-imports", "lint-imports.exe"):
        candidate = Path(sys.executable).parent / name
        if candidate.exists():
            return candidate
    pytest.fail(f"lint-imports not found next to {sys.executable}: install the dev extra "
                "(pip install -e '.[dev]'), which brings import-linter")


def test_import_contracts():
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))  # this working tree
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": path}
    run = subprocess.run([str(_lint_imports()), str(ROOT / "pyproject.toml"), "--no-cache"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    if run.returncode == 0:
        return
    out = run.stdout
    report = out[out.index("Broken contracts"):] if "Broken contracts" in out else out
    missing = _missing_inits()
    note = ("\n(folders without __init__.py are invisible to import-linter: "
            + ", ".join(str(p.relative_to(ROOT)) for p in missing) + ")") if missing else ""
    pytest.fail("the import contracts in pyproject.toml [tool.importlinter] are broken (imports must run "
                f"down the floors; see README 'Layout'):\n\n{report.strip()}\n{run.stderr.strip()}{note}",
                pytrace=False)


# --------------------------------------------------------------------------------------------------
# cycles


def _floors() -> dict[str, int]:
    """``neurotomy.<child>`` → its floor in the layers contract, 0 at the top."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config.get("tool", {}).get("importlinter", {}).get("contracts", [])
    layers = next((c["layers"] for c in contracts if c.get("type") == "layers"), [])
    return {f"neurotomy.{name.strip().strip('()')}": floor
            for floor, layer in enumerate(layers) for name in re.split(r"[|:]", layer)}


def _direction(importer: str, imported: str, floors: dict[str, int]) -> str:
    if imported == "neurotomy":
        return "  [imports the package's __init__, the top of the house]"
    below, above = (floors.get(".".join(m.split(".")[:2])) for m in (importer, imported))
    return "  [UP a floor]" if below is not None and above is not None and below > above else ""


def _strongly_connected(nodes: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def _shortest_cycle(start: str, members: set[str], edges: dict[str, set[str]]) -> list[str]:
    previous = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(edges.get(node, ())):
            if child == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return list(reversed(path)) + [start]
            if child in members and child not in previous:
                previous[child] = node
                queue.append(child)
    return [start]


def test_no_import_cycles(graph):
    """A function-level import hides a circle, it does not remove it. grimp resolves
    ``from neurotomy.x import y`` to the submodule ``neurotomy.x.y`` when ``y`` is one, so a
    submodule that imports a sibling is not counted as importing its package's ``__init__``; one that
    imports a *name* of its package's ``__init__`` is, and that is a real circle."""
    nodes = set(graph.modules)
    edges = {module: set(graph.find_modules_directly_imported_by(module)) & nodes for module in nodes}
    components = _strongly_connected(nodes, edges)
    if not components:
        return
    floors = _floors()
    lines = [(f"{len(components)} import cycle(s) among src/neurotomy modules (imports inside functions "
              "included); every import inside each is listed, those that go up a floor marked — move the "
              "code that needs the upper module up a floor:")]
    for number, members in enumerate(components, 1):
        inside = set(members)
        example = _shortest_cycle(members[0], inside, edges)
        lines.append(f"\ncycle {number}: {len(members)} modules, e.g. {' -> '.join(example)}")
        for importer in members:
            for imported in sorted(edges[importer] & inside):
                lines.append(f"    {importer} -> {imported}{_direction(importer, imported, floors)}    "
                             f"{_line(graph, importer, imported)}")
    pytest.fail("\n".join(lines), pytrace=False)


# --------------------------------------------------------------------------------------------------
# forbidden directions, spelled out


def _imports_from(graph, sources: tuple[str, ...], targets: tuple[str, ...]) -> list[str]:
    def under(module: str, packages: tuple[str, ...]) -> bool:
        return any(module == p or module.startswith(p + ".") for p in packages)

    found = []
    for importer in sorted(m for m in graph.modules if under(m, sources)):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if under(imported, targets):
                found.append(f"  {importer} -> {imported}    {_line(graph, importer, imported)}")
    return found


def test_primitives_and_analyses_never_train_recover_or_report(graph):
    found = _imports_from(graph, ("neurotomy.surgery", "neurotomy.scores", "neurotomy.dynamics", "neurotomy.explain"),
                          ("neurotomy.train", "neurotomy.recover", "neurotomy.report"))
    _fail_if(found, "surgery cuts, the job recovers: surgery/, scores/, dynamics/ and explain/ must not import "
                    "train, recover or report (move the composition to neurotomy.jobs):")


def test_models_and_checkpoints_never_import_surgery(graph):
    found = _imports_from(graph, ("neurotomy.models", "neurotomy.checkpoint"), ("neurotomy.surgery",))
    _fail_if(found, "models/ and checkpoint.py must not import surgery (building a model from a checkpoint "
                    "belongs to neurotomy.loading):")


# --------------------------------------------------------------------------------------------------
# private names


def _python_files() -> list[Path]:
    files = []
    for top in ("src", "tests", "benchmarks"):
        files += [p for p in sorted((ROOT / top).rglob("*.py")) if ".venv" not in p.parts]
    return files


def _first_party_roots(path: Path) -> set[str]:
    """Top-level names that resolve to files of this repository from ``path`` (a script's own
    folder is on ``sys.path`` when it runs)."""
    local = {p.stem for p in path.parent.glob("*.py")} | {p.name for p in path.parent.iterdir() if p.is_dir()}
    return {"neurotomy", "tests", "benchmarks", "tools", "conftest"} | local


# a line that could import a private name: `import a._b`, `... import _x`, `... import (` or a continuation
MAYBE_PRIVATE_IMPORT = re.compile(r"\bimport\b[^\n]*(\(|\\$|[\s.,]_(?!_))", re.MULTILINE)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_private_names_imported_across_modules():
    """``from x import _name`` (or ``import x._module``) reaches into another module's privates: make
    the name public, or keep its use inside its module. Dunder names (``__version__``) are fine;
    third-party privates (``torch.nn.modules.batchnorm._NormBase``) are out of scope here."""
    found = []
    for path in _python_files():
        text = path.read_text(encoding="utf-8")
        if not MAYBE_PRIVATE_IMPORT.search(text):
            continue
        tree = ast.parse(text, filename=str(path))
        roots = _first_party_roots(path)
        where = f"  {path.relative_to(ROOT)}"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").split(".")[0] in roots):
                source = "." * node.level + (node.module or "")
                found += [f"{where}:{node.lineno} from {source} import {alias.name}"
                          for alias in node.names if _is_private(alias.name)]
            elif isinstance(node, ast.Import):
                found += [f"{where}:{node.lineno} import {alias.name}" for alias in node.names
                          if alias.name.split(".")[0] in roots and any(map(_is_private, alias.name.split(".")[1:]))]
    _fail_if(found, "another module's _private name imported (make it public, or keep its use inside its module):")


# --------------------------------------------------------------------------------------------------
# a thin CLI


def test_cli_files_stay_small():
    folder, single = PACKAGE / "cli", PACKAGE / "cli.py"
    if not folder.is_dir():
        lines = len(single.read_text(encoding="utf-8").splitlines()) if single.exists() else 0
        pytest.skip(f"neurotomy.cli is still one module (src/neurotomy/cli.py, {lines} lines); the limits "
                    f"({CLI_FILE_LINES} lines a file, main ≤ {CLI_MAIN_LINES}) apply to the cli/ package")
    problems = []
    if single.exists():
        problems.append("  src/neurotomy/cli.py is shadowed by the cli/ package (a package wins over a module "
                        "of the same name): remove it")
    for path in sorted(folder.rglob("*.py")):
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > CLI_FILE_LINES:
            problems.append(f"  {path.relative_to(ROOT)}: {count} lines (at most {CLI_FILE_LINES})")
    init = folder / "__init__.py"
    mains = [node for node in ast.parse(init.read_text(encoding="utf-8")).body
             if isinstance(node, ast.FunctionDef) and node.name == "main"] if init.exists() else []
    if not mains:
        problems.append("  src/neurotomy/cli/__init__.py defines no main() (the console script's entry point)")
    for main in mains:
        start = min([main.lineno] + [d.lineno for d in main.decorator_list])
        count = main.end_lineno - start + 1
        if count > CLI_MAIN_LINES:
            problems.append(f"  src/neurotomy/cli/__init__.py: main() is {count} lines (at most {CLI_MAIN_LINES}); "
                            "each command group declares its parsers next to its handlers")
    _fail_if(problems, "the CLI is not thin:")


# --------------------------------------------------------------------------------------------------
# documents named in docstrings

DOCUMENT = re.compile(r"(?<![\w/.-])((?:\.{1,2}/)*(?:[\w.-]+/)*[\w.-]+\.(?:md|rst))\b(?:\s*§\s*([A-Z]\d*)\b)?")


def _docstrings(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                yield body[0].lineno, body[0].value.value


def _headings(document: Path) -> list[str]:
    return [line for line in document.read_text(encoding="utf-8").splitlines() if line.startswith("#")]


def test_documents_named_in_docstrings_exist():
    """A reference such as ``docs/methods.md §E4`` must name a file of the repository (paths are from
    the repository root) and, with a section label, a heading of that file carrying the label."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for lineno, text in _docstrings(ast.parse(path.read_text(encoding="utf-8"))):
            for match in DOCUMENT.finditer(text):
                reference, label = match.group(1), match.group(2)
                line = lineno + text[:match.start()].count("\n")
                target = (ROOT / reference).resolve()
                where = f"  {path.relative_to(ROOT)}:{line} names {reference}"
                if ROOT not in target.parents or not target.is_file():
                    problems.append(f"{where}, which is not a file of the repository (paths are from its root)")
                elif label and not any(re.search(rf"(^|[\s§]){re.escape(label)}\b", h.lstrip("#"))
                                       for h in _headings(target)):
                    problems.append(f"{where} §{label}, but no heading of {reference} carries {label}")
    _fail_if(problems, "docstrings point to documents that are not there:")
